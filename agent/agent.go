package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/reshard/reshard"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/pgserver"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/shard"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Config is one agent's host.
type Config struct {
	Client *clientv3.Client
	Host   string // the host's name, as --peer-hosts names it
	Addr   string // the address its servers listen on and are reached at
	PGBin  string // PostgreSQL's binaries ("" finds them)
	// DataRoot holds the agent's state and its servers' data:
	//
	//	agent.lock       held while an agent runs on the root
	//	tokens.json      the highest fencing token seen per job
	//	peers/NAME.json  each peer's record (port, role, upstream, sync)
	//	data/NAME        each peer's data directory
	//	basebackup.pid   the pg_basebackup running now, if any
	//	logs/NAME.log    each server's log
	DataRoot string
	TTL      time.Duration // the registration's lease (default 10s)
	Log      *slog.Logger
}

// agent is one running agent.
type agent struct {
	cfg    Config
	store  *etcd.Agents
	bin    *pgserver.Bin
	log    *slog.Logger
	tokens map[string]int64
	// recorded is the free space in the agent's record (see register);
	// only the registration's goroutine reads and writes it.
	recorded int64
}

// Run registers the agent and carries out its host's operations until ctx
// ends. On start it kills a pg_basebackup that a previous agent of the data
// root left running, discards the peer it was making, restarts the servers
// of its finished peers that are down, and then takes up every operation
// that has no final status, in the order they were asked.
func Run(ctx context.Context, cfg Config) error {
	if err := ValidateHostName(cfg.Host); err != nil {
		return err
	}
	if cfg.Addr == "" {
		return errors.New("agent: no address for the host's servers (--addr)")
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	root, err := filepath.Abs(cfg.DataRoot)
	if err != nil {
		return err
	}
	cfg.DataRoot = root
	a := &agent{cfg: cfg, store: etcd.NewAgents(cfg.Client), log: cfg.Log.With("host", cfg.Host)}
	if a.bin, err = pgserver.New(cfg.PGBin, filepath.Join(root, "logs")); err != nil {
		return err
	}
	unlock, err := a.prepareRoot()
	if err != nil {
		return err
	}
	defer unlock()
	if err := a.recover(ctx); err != nil {
		return err
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	registered := make(chan error, 1)
	go func() { registered <- a.stayRegistered(ctx); stop() }()
	err = a.serve(ctx)
	stop()
	if rerr := <-registered; rerr != nil && !errors.Is(rerr, context.Canceled) {
		return rerr
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func (a *agent) path(parts ...string) string {
	return filepath.Join(append([]string{a.cfg.DataRoot}, parts...)...)
}

// prepareRoot makes the data root's directories and locks it: two agents
// on one root would make the same peers.
func (a *agent) prepareRoot() (func(), error) {
	for _, d := range []string{"", "peers", "data", "logs"} {
		if err := os.MkdirAll(a.path(d), 0o700); err != nil {
			return nil, err
		}
	}
	// pg_basebackup, running as the PostgreSQL user, creates the data
	// directories here.
	if err := a.bin.As.Chown(a.path("data")); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(a.path("agent.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another agent runs on %s: %w", a.cfg.DataRoot, err)
	}
	b, err := os.ReadFile(a.path("tokens.json"))
	a.tokens = map[string]int64{}
	if err == nil {
		err = json.Unmarshal(b, &a.tokens)
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		f.Close()
		return nil, fmt.Errorf("%s: %w", a.path("tokens.json"), err)
	}
	return func() { f.Close() }, nil
}

// recover cleans up after an agent process that died: the "no orphaned
// pg_basebackup" rule, and servers of finished peers started again.
func (a *agent) recover(ctx context.Context) error {
	if killed, err := pgserver.KillBackup(a.path("basebackup.pid")); err != nil {
		return err
	} else if killed {
		a.log.Warn("killed the pg_basebackup a previous agent left running")
	}
	recs, err := a.records()
	if err != nil {
		return err
	}
	for _, rec := range recs {
		if !rec.Ready {
			a.log.Warn("removing a half-made peer", "peer", rec.Name)
			if err := a.discard(rec.Name); err != nil {
				return err
			}
			continue
		}
		if !pgserver.Running(a.dataDir(rec.Name)) {
			s := a.server(rec)
			if err := a.bin.Start(ctx, &s); err != nil {
				return fmt.Errorf("restart %s: %w", rec.Name, err)
			}
			if s.Port != rec.Port {
				rec.Port = s.Port
				if err := a.saveRecord(rec); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// stayRegistered keeps the agent's record in etcd on a lease, registering
// again on a new lease if etcd let the old one expire.
func (a *agent) stayRegistered(ctx context.Context) error {
	for {
		s, err := concurrency.NewSession(a.cfg.Client, concurrency.WithTTL(int(max(a.cfg.TTL, 2*time.Second).Seconds())))
		if err != nil {
			return fmt.Errorf("etcd session: %w", err)
		}
		if err := a.register(ctx, s.Lease()); err != nil {
			s.Close()
			return err
		}
		a.log.Info("registered", "addr", a.cfg.Addr, "lease", fmt.Sprintf("%x", s.Lease()))
		refresh := time.NewTicker(RefreshEvery)
	renew:
		for {
			select {
			case <-ctx.Done():
				refresh.Stop()
				// Revoking the lease unregisters at once rather than after the TTL.
				s.Close()
				return ctx.Err()
			case <-s.Done():
				a.log.Warn("lost the registration's lease; registering again")
				break renew
			case <-refresh.C:
				if !a.freeChanged() {
					continue
				}
				if err := a.register(ctx, s.Lease()); err != nil && ctx.Err() == nil {
					a.log.Warn("refresh the registration", "err", err)
				}
			}
		}
		refresh.Stop()
	}
}

// RefreshEvery is how often an agent measures its free space again; it
// rewrites its record when the space changed by more than freeSlack.
const RefreshEvery = 15 * time.Second

// freeSlack is the change in free space worth a new record: 64 MiB or 1%.
func freeSlack(free int64) int64 { return max(64<<20, free/100) }

// freeChanged reports whether the free space moved past the slack since the
// record was written: an idle host's record (and etcd) stays as it is.
func (a *agent) freeChanged() bool {
	free, err := a.free()
	if err != nil {
		return false
	}
	d := free - a.recorded
	return d > freeSlack(a.recorded) || -d > freeSlack(a.recorded)
}

// register writes the agent's record, with its free space now, on lease.
func (a *agent) register(ctx context.Context, lease clientv3.LeaseID) error {
	h := Host{Name: a.cfg.Host, Addr: a.cfg.Addr, DataRoot: a.cfg.DataRoot, PID: os.Getpid(), FreeAt: time.Now().UTC()}
	if free, err := a.free(); err == nil {
		h.Free = free
	}
	a.recorded = h.Free
	if err := a.store.Register(ctx, a.cfg.Host, lease, h); err != nil {
		return fmt.Errorf("register host %s: %w", a.cfg.Host, err)
	}
	return nil
}

// serve carries out the host's operations: those already asked, then each
// new one. Watching again from a fresh listing covers a broken watch.
func (a *agent) serve(ctx context.Context) error {
	for ctx.Err() == nil {
		ops, rev, err := a.store.Ops(ctx, a.cfg.Host)
		if err != nil {
			a.log.Warn("list operations", "err", err)
			time.Sleep(time.Second)
			continue
		}
		ids := make([]string, 0, len(ops))
		for id := range ops {
			ids = append(ids, id)
		}
		sort.Strings(ids) // ids begin with the time they were asked
		for _, id := range ids {
			a.handle(ctx, id, ops[id])
		}
		for resp := range a.store.WatchOps(ctx, a.cfg.Host, rev) {
			if resp.Err() != nil {
				break
			}
			for _, ev := range resp.Events {
				a.handle(ctx, etcd.OpID(a.cfg.Host, ev.Kv.Key), ev.Kv.Value)
			}
		}
	}
	return ctx.Err()
}

// handle carries out one operation unless it already has a final status.
func (a *agent) handle(ctx context.Context, id string, raw []byte) {
	if b, err := a.store.Status(ctx, a.cfg.Host, id); err == nil && b != nil {
		var st Status
		if json.Unmarshal(b, &st) == nil && (st.State == Done || st.State == Failed) {
			return
		}
	}
	var op Op
	err := json.Unmarshal(raw, &op)
	if err == nil {
		err = op.validate()
	}
	log := a.log.With("op", id, "kind", op.Kind, "peer", op.Peer, "job", op.Token.Job, "token", op.Token.Token)
	var peer *reshard.Peer
	if err == nil {
		log.Info("operation")
		a.put(ctx, id, Status{State: Running})
		peer, err = a.do(ctx, op)
	}
	if ctx.Err() != nil {
		return // stopping: the next agent takes the op up again
	}
	st := Status{State: Done, Peer: peer}
	if err != nil {
		st = Status{State: Failed, Error: err.Error(), DiskFull: errors.Is(err, reshard.ErrDiskFull)}
		log.Warn("operation failed", "err", err)
	} else {
		log.Info("operation done")
	}
	a.put(ctx, id, st)
}

// put reports an operation's status, trying again until etcd takes it:
// the orchestrator waits for it, and a report lost to an etcd member cut
// off from the others would leave it waiting for the operation's whole
// timeout (hours for a base backup).
func (a *agent) put(ctx context.Context, id string, st Status) {
	st.Agent = os.Getpid()
	backoff := 100 * time.Millisecond
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := a.store.PutStatus(pctx, a.cfg.Host, id, st)
		cancel()
		if err == nil || ctx.Err() != nil {
			return
		}
		a.log.Warn("report status; trying again", "op", id, "state", st.State, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// ErrStaleToken means an operation carried a job's token lower than one
// the agent has seen: a newer orchestrator holds the job.
var ErrStaleToken = shard.ErrStaleToken

// admit checks op's token against the highest this host has seen for its
// job, and records it. Operations of no job (an operator's own) pass.
func (a *agent) admit(t reshard.FencingToken) error {
	if t.Job == "" {
		return nil
	}
	if seen := a.tokens[t.Job]; t.Token < seen {
		return fmt.Errorf("%w: job %s token %d, this host has seen %d", ErrStaleToken, t.Job, t.Token, seen)
	} else if t.Token == seen {
		return nil
	}
	a.tokens[t.Job] = t.Token
	b, err := json.Marshal(a.tokens)
	if err != nil {
		return err
	}
	return writeFile(a.path("tokens.json"), b)
}

func (a *agent) do(ctx context.Context, op Op) (*reshard.Peer, error) {
	if err := a.admit(op.Token); err != nil {
		return nil, err
	}
	switch op.Kind {
	case CreateStandby:
		return a.createStandby(ctx, op)
	case Promote:
		return a.promote(ctx, op)
	case Follow:
		return a.follow(ctx, op)
	case SetSync:
		return a.setSync(ctx, op)
	case Remove:
		return nil, a.discard(op.Peer)
	}
	return nil, fmt.Errorf("unknown operation %q", op.Kind)
}

// upstream is where a peer streams from.
type upstream struct {
	Name string `json:"name"`
	Host string `json:"host"`
	Port int    `json:"port"`
	DSN  string `json:"dsn"`
}

// record is what the agent keeps of one of its peers.
type record struct {
	Name     string       `json:"name"`
	Pnode    string       `json:"pnode"`
	Port     int          `json:"port"`
	Database string       `json:"database"`
	Role     reshard.Role `json:"role"`
	Upstream *upstream    `json:"upstream,omitempty"`
	Sync     string       `json:"sync,omitempty"` // its synchronous standby
	// Ready is set once the peer streamed: a record without it is a peer
	// half made, which a restarted agent removes.
	Ready bool `json:"ready"`
}

func parseUpstream(p reshard.Peer) (*upstream, string, error) {
	cfg, err := pgconn.ParseConfig(p.DSN)
	if err != nil {
		return nil, "", fmt.Errorf("upstream %s: bad DSN %s", p.Name, postgres.RedactDSN(p.DSN))
	}
	return &upstream{Name: p.Name, Host: cfg.Host, Port: int(cfg.Port), DSN: p.DSN}, cfg.Database, nil
}

func (u *upstream) server() *pgserver.Server {
	if u == nil {
		return nil
	}
	return &pgserver.Server{Name: u.Name, Port: u.Port, Place: pgserver.Place{Addr: u.Host}}
}

func (a *agent) dataDir(name string) string { return a.path("data", name) }

func (a *agent) server(rec *record) pgserver.Server {
	return pgserver.Server{Name: rec.Name, Port: rec.Port, DataDir: a.dataDir(rec.Name), Place: pgserver.Place{Addr: a.cfg.Addr}}
}

func (a *agent) peer(rec *record) *reshard.Peer {
	return &reshard.Peer{Name: rec.Name, Role: rec.Role, DSN: a.server(rec).DSN(rec.Database)}
}

func (a *agent) recordPath(name string) string { return a.path("peers", name+".json") }

func (a *agent) loadRecord(name string) (*record, error) {
	b, err := os.ReadFile(a.recordPath(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", a.recordPath(name), err)
	}
	return &rec, nil
}

func (a *agent) mustRecord(name string) (*record, error) {
	rec, err := a.loadRecord(name)
	if err == nil && (rec == nil || !rec.Ready) {
		err = fmt.Errorf("peer %s is not on host %s", name, a.cfg.Host)
	}
	return rec, err
}

func (a *agent) saveRecord(rec *record) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(a.recordPath(rec.Name), b)
}

func (a *agent) records() ([]*record, error) { return readRecords(a.cfg.DataRoot) }

// readRecords reads every peer record under an agent's data root.
func readRecords(root string) ([]*record, error) {
	files, err := filepath.Glob(filepath.Join(root, "peers", "*.json"))
	if err != nil {
		return nil, err
	}
	var out []*record
	for _, f := range files {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue // removed since the listing
		}
		if err != nil {
			return nil, err
		}
		var rec record
		if err := json.Unmarshal(b, &rec); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, &rec)
	}
	return out, nil
}

// LocalPeer is a peer an agent made, as its data root records it: what a
// lab on the same machine shows and stops.
type LocalPeer struct {
	Name     string
	Pnode    string
	Port     int
	Role     reshard.Role
	Upstream string // the peer it streams from, by name
	DataDir  string
	Ready    bool // made and streaming; not set while half made
}

// LocalPeers lists the peers recorded under an agent's data root.
func LocalPeers(root string) ([]LocalPeer, error) {
	recs, err := readRecords(root)
	if err != nil {
		return nil, err
	}
	out := make([]LocalPeer, 0, len(recs))
	for _, r := range recs {
		p := LocalPeer{Name: r.Name, Pnode: r.Pnode, Port: r.Port, Role: r.Role, DataDir: filepath.Join(root, "data", r.Name), Ready: r.Ready}
		if r.Upstream != nil {
			p.Upstream = r.Upstream.Name
		}
		out = append(out, p)
	}
	return out, nil
}

// writeFile replaces a file atomically: a crash never leaves half of one.
func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// createStandby makes the peer from a base backup of its upstream, unless
// it is already made; a peer half made by an earlier attempt is made again.
func (a *agent) createStandby(ctx context.Context, op Op) (*reshard.Peer, error) {
	rec, err := a.loadRecord(op.Peer)
	if err != nil {
		return nil, err
	}
	if rec != nil && rec.Ready {
		if !pgserver.Running(a.dataDir(rec.Name)) {
			s := a.server(rec)
			if err := a.bin.Start(ctx, &s); err != nil {
				return nil, err
			}
			rec.Port = s.Port
			if err := a.saveRecord(rec); err != nil {
				return nil, err
			}
		}
		return a.peer(rec), nil
	}
	if err := a.discard(op.Peer); err != nil {
		return nil, err
	}
	up, db, err := parseUpstream(*op.Upstream)
	if err != nil {
		return nil, err
	}
	if err := a.checkSpace(ctx, up); err != nil {
		return nil, err
	}
	port, err := pgserver.FreePort(a.cfg.Addr)
	if err != nil {
		return nil, err
	}
	rec = &record{Name: op.Peer, Pnode: op.Pnode, Port: port, Database: db, Role: reshard.RoleAsync, Upstream: up}
	// Recorded before anything is made, so a restarted agent finds and
	// removes what this one leaves half made.
	if err := a.saveRecord(rec); err != nil {
		return nil, err
	}
	s := a.server(rec)
	if err := a.bin.InitStandby(ctx, s, *up.server(), pgserver.Backup{PIDFile: a.path("basebackup.pid"), MaxRate: op.MaxRate}); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", op.Peer, err) // stopping: the next agent discards it
		}
		// The half-made copy goes at once: it holds the space it took.
		if derr := a.discard(op.Peer); derr != nil {
			a.log.Warn("discard the half-made peer", "peer", op.Peer, "err", derr)
		}
		if noSpace(err) {
			return nil, fmt.Errorf("%s: host %s's disk is full (%s free after discarding the copy): %w: %w", op.Peer, a.cfg.Host, a.freeSpace(), reshard.ErrDiskFull, err)
		}
		return nil, fmt.Errorf("%s: %w", op.Peer, err)
	}
	if _, err := a.bin.WriteConf(s, "", up.server()); err != nil {
		return nil, err
	}
	if err := a.bin.Start(ctx, &s); err != nil {
		return nil, err
	}
	rec.Port = s.Port
	if err := pgserver.WaitStreaming(ctx, up.DSN, up.Name, rec.Name, false); err != nil {
		return nil, err
	}
	rec.Ready = true
	if err := a.saveRecord(rec); err != nil {
		return nil, err
	}
	return a.peer(rec), nil
}

// configure rewrites rec's settings and reloads its server.
func (a *agent) configure(ctx context.Context, rec *record, conn postgres.Querier) error {
	changed, err := a.bin.WriteConf(a.server(rec), rec.Sync, rec.Upstream.server())
	if err != nil || !changed {
		return err
	}
	if conn == nil {
		c, err := postgres.Connect(ctx, a.peer(rec).DSN)
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		conn = c
	}
	return postgres.ReloadConf(ctx, conn)
}

// promote ends recovery through shard.PromoteStandby, which checks the
// job's token against those the standby replayed from its primary.
func (a *agent) promote(ctx context.Context, op Op) (*reshard.Peer, error) {
	rec, err := a.mustRecord(op.Peer)
	if err != nil {
		return nil, err
	}
	conn, err := postgres.Connect(ctx, a.peer(rec).DSN)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	standby, err := postgres.InRecovery(ctx, conn)
	if err != nil {
		return nil, err
	}
	if standby {
		done, err := shard.PromoteStandby(ctx, conn, op.Token)
		if err != nil {
			return nil, err
		}
		if !done {
			return nil, fmt.Errorf("%s did not finish promotion in 60s", rec.Name)
		}
	}
	rec.Role, rec.Upstream = reshard.RolePrimary, nil
	if err := a.saveRecord(rec); err != nil {
		return nil, err
	}
	return a.peer(rec), a.configure(ctx, rec, conn)
}

// follow points the peer at a new upstream with a new role.
func (a *agent) follow(ctx context.Context, op Op) (*reshard.Peer, error) {
	rec, err := a.mustRecord(op.Peer)
	if err != nil {
		return nil, err
	}
	up, _, err := parseUpstream(*op.Upstream)
	if err != nil {
		return nil, err
	}
	rec.Upstream, rec.Role = up, op.Role
	if err := a.saveRecord(rec); err != nil {
		return nil, err
	}
	return a.peer(rec), a.configure(ctx, rec, nil)
}

// setSync names or stops naming a synchronous standby of the peer.
func (a *agent) setSync(ctx context.Context, op Op) (*reshard.Peer, error) {
	rec, err := a.mustRecord(op.Peer)
	if err != nil {
		return nil, err
	}
	switch {
	case op.Sync:
		rec.Sync = op.Standby
	case rec.Sync == op.Standby:
		rec.Sync = ""
	}
	if err := a.saveRecord(rec); err != nil {
		return nil, err
	}
	return a.peer(rec), a.configure(ctx, rec, nil)
}

// discard stops a peer and deletes its data and record.
func (a *agent) discard(name string) error {
	rec, err := a.loadRecord(name)
	if err != nil {
		return err
	}
	s := pgserver.Server{Name: name, DataDir: a.dataDir(name)}
	if rec != nil {
		s = a.server(rec)
	}
	a.bin.Stop(s)
	if err := os.RemoveAll(s.DataDir); err != nil {
		return err
	}
	if err := os.Remove(a.recordPath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
