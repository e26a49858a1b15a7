package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/reshard/reshard"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/pgserver"
)

// SpecPrefix begins a job's provisioner spec that runs through agents:
//
//	agents:h1,h2,h3   each new peer on the first of these hosts that runs
//	                  no peer yet, in order (one host per new peer)
//	agents:           each new peer on a free registered host (one running
//	                  no peer), by name
//
// A peer's host is recorded in etcd when it is chosen, so a resumed job
// finds each peer where it was made.
const SpecPrefix = "agents:"

// Spec is the provisioner spec for hosts (none: free registered hosts).
func Spec(hosts []string) string { return SpecPrefix + strings.Join(hosts, ",") }

// ParseSpec returns the hosts a spec names; ok is false when the spec is
// not an agents spec.
func ParseSpec(spec string) (hosts []string, ok bool, err error) {
	rest, ok := strings.CutPrefix(spec, SpecPrefix)
	if !ok {
		return nil, false, nil
	}
	for _, h := range strings.Split(rest, ",") {
		if h = strings.TrimSpace(h); h == "" {
			continue
		}
		if err := ValidateHostName(h); err != nil {
			return nil, true, err
		}
		hosts = append(hosts, h)
	}
	return hosts, true, nil
}

// Provisioner is reshard.Provisioner through host agents: each operation
// is written for the peer's host's agent in etcd, and its status awaited.
// Every operation carries the job's fencing token from ctx
// (reshard.WithFencingToken) and is written under the job's etcd fence.
type Provisioner struct {
	Agents *etcd.Agents
	Hosts  []string // see SpecPrefix; empty: free registered hosts
	// Timeout bounds each operation (default: 2h for CreateStandby, whose
	// base backup copies the whole origin, 5m for the others).
	Timeout time.Duration
	// Gone is how long an agent may stay unregistered while it has an
	// operation before the operation fails (default 30s): a restarted
	// agent takes the operation up again.
	Gone time.Duration
	// MaxRate throttles the base backups (pg_basebackup --max-rate).
	MaxRate string
}

var _ reshard.Provisioner = (*Provisioner)(nil)

// ErrTooFewHosts means there are fewer free agent hosts than new peers.
var ErrTooFewHosts = errors.New("too few free agent hosts")

// Check reports ErrTooFewHosts unless n new peers can each have a host.
func (p *Provisioner) Check(ctx context.Context, n int) error {
	free, err := p.Agents.FreeHosts(ctx)
	if err != nil {
		return err
	}
	if len(p.Hosts) == 0 {
		if len(free) < n {
			return fmt.Errorf("%w: %d new peers need %d, and %d run no peer (%s); start 'reshard agent' on more hosts",
				ErrTooFewHosts, n, n, len(free), strings.Join(free, ", "))
		}
		return nil
	}
	if len(p.Hosts) < n {
		return fmt.Errorf("%w: %d new peers need %d hosts, --peer-hosts names %d", ErrTooFewHosts, n, n, len(p.Hosts))
	}
	// Each new peer takes the first named host that is free (hostFor).
	var named []string
	for _, h := range p.Hosts {
		if slices.Contains(free, h) {
			named = append(named, h)
		}
	}
	if len(named) < n {
		return fmt.Errorf("%w: %d new peers need %d, and %d of the hosts named are registered and run no peer (%s)",
			ErrTooFewHosts, n, n, len(named), strings.Join(named, ", "))
	}
	return nil
}

// hostFor returns the host that runs (or is to run) the named peer,
// choosing and recording one for a new peer.
func (p *Provisioner) hostFor(ctx context.Context, name string) (string, error) {
	if h, err := p.Agents.HostOf(ctx, name); err != nil || h != "" {
		return h, err
	}
	candidates := p.Hosts
	if len(candidates) == 0 {
		free, err := p.Agents.FreeHosts(ctx)
		if err != nil {
			return "", err
		}
		candidates = free
	}
	busy, err := p.Agents.Busy(ctx)
	if err != nil {
		return "", err
	}
	for _, h := range candidates {
		if busy[h] != "" {
			continue
		}
		if rec, err := p.Agents.Host(ctx, h); err != nil {
			return "", err
		} else if rec == nil {
			return "", fmt.Errorf("agent host %s is not registered (is 'reshard agent --host %s' running?)", h, h)
		}
		ok, host, err := p.Agents.Assign(ctx, name, h)
		if err != nil {
			return "", err
		}
		if ok || host != "" {
			return host, nil
		}
		// Another job took h since: try the next.
	}
	if len(p.Hosts) > 0 {
		return "", fmt.Errorf("%w for peer %s: every host of %s runs a peer", ErrTooFewHosts, name, strings.Join(p.Hosts, ","))
	}
	return "", fmt.Errorf("%w for peer %s: every registered agent host runs a peer", ErrTooFewHosts, name)
}

func (p *Provisioner) CreateStandby(ctx context.Context, pnode, name string, up reshard.Peer) (reshard.Peer, error) {
	if err := reshard.ValidatePnodeName(pnode); err != nil {
		return reshard.Peer{}, err
	}
	host, err := p.hostFor(ctx, name)
	if err != nil {
		return reshard.Peer{}, err
	}
	st, err := p.run(ctx, host, Op{Kind: CreateStandby, Pnode: pnode, Peer: name, Upstream: &up, MaxRate: p.MaxRate})
	if err != nil {
		return reshard.Peer{}, err
	}
	if st.Peer == nil {
		return reshard.Peer{}, fmt.Errorf("agent host %s made %s but reported no peer", host, name)
	}
	return *st.Peer, nil
}

func (p *Provisioner) Promote(ctx context.Context, peer reshard.Peer, token reshard.FencingToken) error {
	host, err := p.hostOf(ctx, peer.Name)
	if err != nil {
		return err
	}
	_, err = p.run(reshard.WithFencingToken(ctx, token), host, Op{Kind: Promote, Peer: peer.Name})
	return err
}

// Follow re-points peer at upstream; for a sync role the upstream's agent
// names it in synchronous_standby_names (and for another role stops doing
// so), so upstream must be a peer of an agent then.
func (p *Provisioner) Follow(ctx context.Context, peer, upstream reshard.Peer, role reshard.Role) error {
	host, err := p.hostOf(ctx, peer.Name)
	if err != nil {
		return err
	}
	upHost, err := p.Agents.HostOf(ctx, upstream.Name)
	if err != nil {
		return err
	}
	if upHost == "" && role == reshard.RoleSync {
		return fmt.Errorf("%s cannot follow %s as sync: %s is not a peer of an agent host", peer.Name, upstream.Name, upstream.Name)
	}
	if _, err := p.run(ctx, host, Op{Kind: Follow, Peer: peer.Name, Upstream: &upstream, Role: role}); err != nil {
		return err
	}
	if upHost != "" {
		if _, err := p.run(ctx, upHost, Op{Kind: SetSync, Peer: upstream.Name, Standby: peer.Name, Sync: role == reshard.RoleSync}); err != nil {
			return err
		}
	}
	return pgserver.WaitStreaming(ctx, upstream.DSN, upstream.Name, peer.Name, role == reshard.RoleSync)
}

func (p *Provisioner) Remove(ctx context.Context, peer reshard.Peer) error {
	host, err := p.Agents.HostOf(ctx, peer.Name)
	if err != nil || host == "" {
		return err // no host: removed already
	}
	if _, err := p.run(ctx, host, Op{Kind: Remove, Peer: peer.Name}); err != nil {
		return err
	}
	return p.Agents.Unassign(ctx, peer.Name, host)
}

func (p *Provisioner) hostOf(ctx context.Context, peer string) (string, error) {
	host, err := p.Agents.HostOf(ctx, peer)
	if err == nil && host == "" {
		err = fmt.Errorf("peer %s runs on no agent host", peer)
	}
	return host, err
}

// run asks host's agent for op and waits for its final status.
func (p *Provisioner) run(ctx context.Context, host string, op Op) (*Status, error) {
	op.Token, _ = reshard.FencingTokenOf(ctx)
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
		if op.Kind == CreateStandby {
			timeout = 2 * time.Hour
		}
	}
	gone := p.Gone
	if gone <= 0 {
		gone = 30 * time.Second
	}
	// The operation is asked even while the host's agent is unregistered:
	// one restarting, or cut off for a moment (its lease gone), takes it up
	// when it is back. Only an agent away for longer than gone fails it.
	id := opID()
	rev, err := p.Agents.PutOp(ctx, host, id, op)
	if err != nil {
		return nil, fmt.Errorf("ask agent host %s to %s %s: %w", host, op.Kind, op.Peer, err)
	}
	defer p.Agents.DeleteOp(context.WithoutCancel(ctx), host, id)
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	watch := p.Agents.WatchStatus(wctx, host, id, rev)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var goneSince time.Time
	for {
		b, err := p.Agents.Status(wctx, host, id)
		if err == nil && b != nil {
			var st Status
			if err := json.Unmarshal(b, &st); err != nil {
				return nil, fmt.Errorf("agent host %s: bad status of %s %s: %w", host, op.Kind, op.Peer, err)
			}
			switch st.State {
			case Done:
				return &st, nil
			case Failed:
				var err error = &opFailed{msg: fmt.Sprintf("agent host %s: %s %s: %s", host, op.Kind, op.Peer, st.Error), diskFull: st.DiskFull}
				if strings.Contains(st.Error, ErrStaleToken.Error()) {
					err = fmt.Errorf("%w (agent host %s: %s %s: %s)", ErrStaleToken, host, op.Kind, op.Peer, st.Error)
				}
				return nil, err
			}
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("agent host %s did not finish %s of %s within %s", host, op.Kind, op.Peer, timeout)
		case _, open := <-watch:
			if !open {
				watch = nil // the ticker polls instead
			}
		case <-tick.C:
			rec, err := p.Agents.Host(wctx, host)
			if err != nil || rec != nil {
				goneSince = time.Time{}
				continue
			}
			if goneSince.IsZero() {
				goneSince = time.Now()
			} else if time.Since(goneSince) > gone {
				return nil, fmt.Errorf("agent host %s went away during %s of %s (unregistered for %s)", host, op.Kind, op.Peer, gone)
			}
		}
	}
}

// opID names an operation so that ids sort in the order they were asked.
func opID() string {
	var b [4]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s-%s", time.Now().UTC().Format("20060102T150405.000000000"), hex.EncodeToString(b[:]))
}

// opFailed is an operation an agent reports failed, in its words; it is
// reshard.ErrDiskFull when the agent says the host ran out of space.
type opFailed struct {
	msg      string
	diskFull bool
}

func (e *opFailed) Error() string { return e.msg }

func (e *opFailed) Is(target error) bool { return e.diskFull && target == reshard.ErrDiskFull }

// FreeSpace is reshard.SpaceReporter: the free space the agents of the
// hosts the next n new peers would go to last measured (Check says whether
// there are n of them).
func (p *Provisioner) FreeSpace(ctx context.Context, n int) ([]reshard.HostSpace, error) {
	free, err := p.Agents.FreeHosts(ctx)
	if err != nil {
		return nil, err
	}
	hosts := free
	if len(p.Hosts) > 0 {
		hosts = slices.DeleteFunc(slices.Clone(p.Hosts), func(h string) bool { return !slices.Contains(free, h) })
	}
	var out []reshard.HostSpace
	for _, h := range hosts[:min(n, len(hosts))] {
		raw, err := p.Agents.Host(ctx, h)
		if err != nil {
			return nil, err
		}
		var rec Host
		if raw == nil || json.Unmarshal(raw, &rec) != nil {
			return nil, fmt.Errorf("host %s: no agent record", h)
		}
		out = append(out, reshard.HostSpace{Host: h, Free: rec.Free, Measured: rec.FreeAt})
	}
	return out, nil
}
