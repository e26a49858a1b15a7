package orchestrator

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/reshard/reshard"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/shard"
)

// The physical strategy is RFD 103's own method: new peers of the origin
// catch up by streaming replication, the moving vnodes are frozen, the first
// new peer replays past the freeze and is promoted, the others follow it,
// and the new shard owns the moving vnodes. Each side then deletes the rows
// it no longer owns.

// peersPer is how many peers each new pnode gets: one server in single-DC
// mode, three (one per DC) in triple-DC mode, as the RFD's server count says.
func (j *Job) peersPer() int {
	if j.DCMode == "triple" {
		return 3
	}
	return 1
}

func (r *run) provisioner() (reshard.Provisioner, error) {
	p, err := r.o.provisioner(r.job.Provisioner)
	if err != nil {
		return nil, fatal("%v", err)
	}
	return p, nil
}

func (r *run) originPrimary(ctx context.Context) (reshard.Peer, error) {
	return r.o.reg.Primary(ctx, r.job.From)
}

// addPeers creates each new pnode's peers as a chain hanging off the
// origin's primary: the first streams from the primary, each next one from
// the one before, as Manatee chains its peers. When the first is promoted
// the rest follow its new timeline without another backfill.
func addPeers(ctx context.Context, r *run) error {
	j := r.job
	prov, err := r.provisioner()
	if err != nil {
		return err
	}
	primary, err := r.originPrimary(ctx)
	if err != nil {
		return err
	}
	if j.NewPeers == nil {
		j.NewPeers = map[string][]reshard.Peer{}
	}
	for _, to := range j.To {
		upstream := primary
		for k := 0; k < j.peersPer(); k++ {
			name := fmt.Sprintf("%s-%d", to, k+1)
			p, err := prov.CreateStandby(ctx, to, name, upstream)
			if err != nil {
				return err
			}
			peers := j.NewPeers[to]
			if len(peers) <= k {
				peers = append(peers, p)
			} else {
				peers[k] = p
			}
			j.NewPeers[to] = peers
			if err := r.save(ctx); err != nil {
				return err
			}
			r.crash("mid")
			upstream = p
		}
	}
	return nil
}

// replayLag is how many bytes of the origin's WAL a new peer has yet to replay.
func replayLag(ctx context.Context, origin shard.Querier, peer reshard.Peer) (int64, postgres.LSN, error) {
	conn, err := postgres.Connect(ctx, peer.DSN)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close(ctx)
	var replayed string
	if err := conn.QueryRow(ctx, `select coalesce(pg_last_wal_replay_lsn(), '0/0')::text`).Scan(&replayed); err != nil {
		return 0, 0, err
	}
	var lag int64
	if err := origin.QueryRow(ctx, `select greatest(pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn), 0)::bigint`, replayed).Scan(&lag); err != nil {
		return 0, 0, err
	}
	l, err := postgres.ParseLSN(replayed)
	return lag, l, err
}

// physicalCatchup waits until every first new peer's REPLAY is within the
// threshold of the origin's WAL: the RFD's "first 4 digits" rule, exact.
func physicalCatchup(ctx context.Context, r *run) error {
	j := r.job
	origin, err := r.pool(ctx, j.From)
	if err != nil {
		return err
	}
	r.crash("mid")
	return r.waitLag(ctx, fmt.Sprintf("waiting for replay within %d bytes of the origin", j.LagBytes), func() (int64, error) {
		var worst int64
		for _, to := range j.To {
			lag, _, err := replayLag(ctx, origin, j.NewPeers[to][0])
			if err != nil {
				return 0, err
			}
			worst = max(worst, lag)
		}
		return worst, nil
	})
}

// freeze stops writes to the moving vnodes on the origin (waiting for
// writers inside the fence) and records the WAL position after it.
func freeze(ctx context.Context, r *run) error {
	j := r.job
	if err := r.holdDumpLock(ctx); err != nil {
		return err
	}
	origin, err := r.pool(ctx, j.From)
	if err != nil {
		return err
	}
	if err := r.markFrozen(ctx); err != nil {
		return err
	}
	if _, err := shard.SetWritableRanges(ctx, origin, j.AllRanges(), false, j.RingVersionBefore); err != nil {
		return err
	}
	r.crash("mid")
	// Read only after the freeze committed: every acknowledged write to a
	// moving vnode is before this position.
	var lsn string
	if err := origin.QueryRow(ctx, `select pg_current_wal_lsn()::text`).Scan(&lsn); err != nil {
		return err
	}
	j.FreezeLSN = lsn
	return r.save(ctx)
}

// waitReplay waits until each first new peer has replayed the freeze.
func waitReplay(ctx context.Context, r *run) error {
	j := r.job
	origin, err := r.pool(ctx, j.From)
	if err != nil {
		return err
	}
	want, err := postgres.ParseLSN(j.FreezeLSN)
	if err != nil {
		return fatal("freeze LSN: %v", err)
	}
	r.crash("mid")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		behind := 0
		for _, to := range j.To {
			_, replayed, err := replayLag(ctx, origin, j.NewPeers[to][0])
			if err != nil {
				return err
			}
			if replayed < want {
				behind++
			}
		}
		if behind == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d new primaries have not replayed %s after 2 minutes", behind, want)
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
}

// detach promotes each first new peer and makes the others its sync and
// async standbys, so the new shard has its whole topology at once.
func detach(ctx context.Context, r *run) error {
	j := r.job
	prov, err := r.provisioner()
	if err != nil {
		return err
	}
	for _, to := range j.To {
		peers := j.NewPeers[to]
		if err := prov.Promote(ctx, peers[0]); err != nil {
			return err
		}
		r.crash("mid")
		peers[0].Role = reshard.RolePrimary
		for k := 1; k < len(peers); k++ {
			role := reshard.RoleAsync
			if k == 1 {
				role = reshard.RoleSync
			}
			if err := prov.Follow(ctx, peers[k], peers[k-1], role); err != nil {
				return err
			}
			peers[k].Role = role
		}
		if err := r.save(ctx); err != nil {
			return err
		}
	}
	return nil
}

// register makes each new shard own only its moving vnodes (still frozen)
// and registers it as a pnode. Nothing routes to it before the ring flips.
func register(ctx context.Context, r *run) error {
	j := r.job
	for _, m := range j.Moves {
		vs, err := moving(m)
		if err != nil {
			return fatal("%v", err)
		}
		peers := j.NewPeers[m.To]
		conn, err := postgres.Connect(ctx, peers[0].DSN)
		if err != nil {
			return err
		}
		err = shard.KeepOnly(ctx, conn, vs)
		conn.Close(ctx)
		if err != nil {
			return err
		}
		r.crash("mid")
		p := reshard.Pnode{Name: m.To, Peers: peers}
		if got, err := r.o.reg.Pnode(ctx, m.To); err == nil {
			if len(got.Peers) != len(peers) || got.Peers[0].DSN != peers[0].DSN {
				return fatal("pnode %s is registered with other peers", m.To)
			}
			continue
		}
		if err := r.o.reg.AddPnode(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// physicalCutover hands the moving vnodes over: the origin stops serving
// them, the new primaries take writes, and the ring flips.
func physicalCutover(ctx context.Context, r *run) error {
	j := r.job
	origin, err := r.pool(ctx, j.From)
	if err != nil {
		return err
	}
	return r.handOver(ctx, origin)
}

// physicalCleanup deletes the moved rows from the origin and, on each new
// shard, the rows of every vnode it does not own, in rate-limited batches.
func physicalCleanup(ctx context.Context, r *run) error {
	j := r.job
	everything := []shard.Range{{Lo: 0, Hi: math.MaxInt32}}
	type side struct {
		pnode  string
		ranges []shard.Range
	}
	sides := []side{{j.From, j.AllRanges()}}
	for _, to := range j.To {
		sides = append(sides, side{to, everything})
	}
	var total int64
	for _, s := range sides {
		p, err := r.pool(ctx, s.pnode)
		if err != nil {
			return err
		}
		n, err := shard.UnownedRows(ctx, p, j.Buckets, s.ranges)
		if err != nil {
			return err
		}
		total += n
	}
	d := &deleter{r: r, total: total, start: time.Now()}
	for _, s := range sides {
		p, err := r.pool(ctx, s.pnode)
		if err != nil {
			return err
		}
		if err := d.run(ctx, p, j.Buckets, s.ranges); err != nil {
			return err
		}
	}
	return nil
}

// undoPhysical undoes a physical job before its flip: the origin owns its
// vnodes again, the new peers are removed and the new pnodes unregistered.
func (r *run) undoPhysical(ctx context.Context) error {
	j := r.job
	origin, err := r.pool(ctx, j.From)
	if err != nil {
		return err
	}
	all, err := allMoving(j)
	if err != nil {
		return err
	}
	if err := shard.Own(ctx, origin, all, true, j.RingVersionBefore); err != nil {
		return err
	}
	j.Frozen = false
	for _, to := range j.To {
		if _, err := r.o.reg.Pnode(ctx, to); err == nil {
			if err := r.o.reg.RemovePnode(ctx, to); err != nil {
				return err
			}
		}
		if len(j.NewPeers[to]) == 0 {
			continue
		}
		prov, err := r.provisioner()
		if err != nil {
			return err
		}
		for k := len(j.NewPeers[to]) - 1; k >= 0; k-- {
			if err := prov.Remove(ctx, j.NewPeers[to][k]); err != nil {
				return err
			}
		}
	}
	return nil
}
