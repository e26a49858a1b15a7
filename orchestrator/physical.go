package orchestrator

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/reshard/reshard"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/shard"
)

// Physical is RFD 103's own method: new peers of the origin, streamed by
// physical replication, are split off as the new pnodes.
const Physical StrategyName = "physical"

// The physical strategy is RFD 103's own method: new peers of the origin
// catch up by streaming replication, the moving vnodes are frozen, the first
// new peer replays past the freeze and is promoted, the others follow it,
// and the new shard owns the moving vnodes. The way back (wayback.go)
// streams the new shard's changes to the moved vnodes to the origin until
// the job completes; then each side deletes the rows it no longer owns.
func init() {
	register(&Strategy{
		Name:    Physical,
		Summary: "RFD 103: new async peers of the origin become the new pnodes",
		Phases: []PhaseFunc{
			validatePhase,
			{Name: "add-peers", Run: addPeers, Points: []Point{PointMid}},
			{Name: "catchup", Run: physicalCatchup, Points: []Point{PointMid}},
			dumpLockPhase,
			{Name: "freeze", Run: physicalFreeze, Points: []Point{PointFrozen}},
			{Name: "wait-replay", Run: waitReplay, Points: []Point{PointMid}},
			{Name: "detach", Run: detach, Points: []Point{PointMid}},
			{Name: "register", Run: registerPnodes, Points: []Point{PointMid}},
			reverseSlotsPhase,
			{Name: "cutover", Run: physicalCutover, Points: []Point{PointDisowned, PointWritable, PointFlipped, PointRouted}},
			{Name: "standbys", Run: settleStandbys},
			reverseStreamPhase,
			releaseDumpLockPhase,
			soakPhase,
			closeWayBackPhase,
			{Name: "cleanup", Run: cleanupSplit, Points: []Point{PointMid}},
		},
		CreatesDestinations: true,
		Check: func(o *Orchestrator, req Request) error {
			if req.Provisioner == "" {
				return fmt.Errorf("the physical strategy needs a provisioner to create peers: give --lab DIR, or run 'reshard agent' on the new peers' hosts")
			}
			_, err := o.provisioner(req.Provisioner)
			return err
		},
		Undo:          undoPhysical,
		RevertCleanup: undoPhysical,
	})
}

func (r *run) provisioner() (reshard.Provisioner, error) {
	p, err := r.o.provisioner(r.job.Provisioner)
	if err != nil {
		return nil, fatal("%v", err)
	}
	return p, nil
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
	primary, err := r.o.reg.Primary(ctx, j.From)
	if err != nil {
		return err
	}
	if j.NewPeers == nil {
		j.NewPeers = map[string][]reshard.Peer{}
	}
	for _, to := range j.To {
		upstream := primary
		for k := 0; k < j.DCMode.ServersPerPnode(); k++ {
			name := fmt.Sprintf("%s-%d", to, k+1)
			p, err := prov.CreateStandby(ctx, to, name, upstream)
			if err != nil {
				return err
			}
			if k > 0 {
				// The roles are set now, outside the write block: the first
				// peer then has its sync standby the moment it is promoted,
				// and detach only waits for the standbys to stream again.
				role := peerRole(k)
				if err := prov.Follow(ctx, p, upstream, role); err != nil {
					return err
				}
				p.Role = role
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
			r.crash(PointMid)
			upstream = p
		}
	}
	return nil
}

// replayLag is how many bytes of the origin's WAL the first new peer of
// pnode to has yet to replay, and the position it has replayed. The peer
// is asked through the run's pool for the new pnode: its connections,
// opened while it catches up, are the ones the write block then uses to
// register it, where a new connection across DCs costs several round
// trips.
func (r *run) replayLag(ctx context.Context, origin shard.Querier, to string) (int64, postgres.LSN, error) {
	db, err := r.peerPool(ctx, to, r.job.NewPeers[to][0])
	if err != nil {
		return 0, 0, err
	}
	replayed, err := postgres.ReplayedWAL(ctx, db)
	if err != nil {
		return 0, 0, err
	}
	lag, err := postgres.WALBytesAfter(ctx, origin, replayed)
	return lag, replayed, err
}

// physicalCatchup waits until every first new peer's REPLAY is within the
// threshold of the origin's WAL: the RFD's "first 4 digits" rule, exact.
func physicalCatchup(ctx context.Context, r *run) error {
	j := r.job
	return r.catchUp(ctx, fmt.Sprintf("waiting for replay within %d bytes of the origin", j.LagBytes), len(j.To),
		func(origin *pgxpool.Pool, i int) (int64, error) {
			lag, _, err := r.replayLag(ctx, origin, j.To[i])
			return lag, err
		})
}

// physicalFreeze freezes the moving vnodes on the origin and records the
// WAL position after the freeze committed: every acknowledged write to a
// moving vnode is before it.
func physicalFreeze(ctx context.Context, r *run) error {
	j := r.job
	if err := r.holdDumpLock(ctx); err != nil {
		return err
	}
	if err := r.freeze(ctx); err != nil {
		return err
	}
	origin, err := r.pool(ctx, j.From)
	if err != nil {
		return err
	}
	lsn, err := postgres.CurrentWAL(ctx, origin)
	if err != nil {
		return err
	}
	j.FreezeLSN = lsn.String()
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
	r.crash(PointMid)
	// Writes are blocked: a new peer that does not answer (cut off, or
	// restarting) is asked again at once, each ask bounded, rather than
	// after the phase's backoff or a TCP retransmission timer that has
	// grown while the peer was away (13 s after an 8 s partition).
	var lastErr error
	err = r.waitFor(ctx, 5*time.Millisecond, 2*time.Minute, fmt.Sprintf("new primaries replaying %s", want), func() (bool, error) {
		for _, to := range j.To {
			actx, cancel := context.WithTimeout(ctx, replayAskTimeout)
			_, replayed, err := r.replayLag(actx, origin, to)
			cancel()
			if err != nil && ctx.Err() == nil {
				lastErr = err
				return false, nil
			}
			if err != nil || replayed < want {
				return false, err
			}
		}
		return true, nil
	})
	if err != nil && lastErr != nil {
		return fmt.Errorf("%w (last error: %v)", err, lastErr)
	}
	return err
}

// replayAskTimeout bounds one look at a new peer's replay in the write
// block: far above a connection and a query across DCs.
const replayAskTimeout = time.Second

// peerRole is the role of a new pnode's k-th peer (from 0), as in Manatee:
// primary, sync, then asyncs.
func peerRole(k int) reshard.Role {
	switch k {
	case 0:
		return reshard.RolePrimary
	case 1:
		return reshard.RoleSync
	}
	return reshard.RoleAsync
}

// detach promotes each first new peer. The promotion carries the job's
// token: a peer that has seen a newer one (its primary's claim,
// replicated) refuses it. The other peers already stream from the one
// before them in their roles (addPeers), and follow the new timeline on
// their own; the new primary names its sync standby, so register's first
// write there, and every client's, commits only once that standby has it.
// Waiting for the standbys to stream again (settleStandbys) is left until
// after the write block.
func detach(ctx context.Context, r *run) error {
	return r.eachNewPnode(func(prov reshard.Provisioner, peers []reshard.Peer) error {
		if peers[0].Role == reshard.RolePrimary {
			return nil
		}
		start := time.Now()
		if err := prov.Promote(ctx, peers[0], r.token); err != nil {
			return err
		}
		r.job.PromoteMS += float64(time.Since(start).Microseconds()) / 1000
		r.crash(PointMid)
		peers[0].Role = reshard.RolePrimary
		return r.save(ctx)
	})
}

// settleStandbys, after the write block, points each new pnode's other
// peers at the one before them in their roles (nothing to change unless a
// peer was made before addPeers set roles) and waits until each streams
// from it again, on the new timeline.
func settleStandbys(ctx context.Context, r *run) error {
	return r.eachNewPnode(func(prov reshard.Provisioner, peers []reshard.Peer) error {
		for k := 1; k < len(peers); k++ {
			role := peerRole(k)
			if err := prov.Follow(ctx, peers[k], peers[k-1], role); err != nil {
				return err
			}
			if peers[k].Role != role {
				peers[k].Role = role
				if err := r.save(ctx); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// eachNewPnode calls fn with the provisioner and each new pnode's peers,
// in order; what fn changes in them is the job's.
func (r *run) eachNewPnode(fn func(prov reshard.Provisioner, peers []reshard.Peer) error) error {
	prov, err := r.provisioner()
	if err != nil {
		return err
	}
	for _, to := range r.job.To {
		if err := fn(prov, r.job.NewPeers[to]); err != nil {
			return err
		}
	}
	return nil
}

// registerPnodes makes each new shard own only its moving vnodes (still frozen)
// and registers it as a pnode. Nothing routes to it before the ring flips.
func registerPnodes(ctx context.Context, r *run) error {
	j := r.job
	for _, m := range j.Moves {
		vs, err := moving(m)
		if err != nil {
			return err
		}
		peers := j.NewPeers[m.To]
		db, err := r.peerPool(ctx, m.To, peers[0])
		if err != nil {
			return err
		}
		if err := shard.Fenced(ctx, db, r.token, func(tx pgx.Tx) error { return shard.KeepOnly(ctx, tx, vs) }); err != nil {
			return err
		}
		r.crash(PointMid)
		if got, err := r.o.reg.Pnode(ctx, m.To); err == nil {
			if len(got.Peers) != len(peers) || got.Peers[0].DSN != peers[0].DSN {
				return fatal("pnode %s is registered with other peers", m.To)
			}
			continue
		}
		if err := r.o.reg.AddPnode(ctx, reshard.Pnode{Name: m.To, Peers: peers}); err != nil {
			return err
		}
	}
	return nil
}

// physicalCutover hands the moving vnodes over: the origin stops serving
// them, the new primaries take writes, and the ring flips.
func physicalCutover(ctx context.Context, r *run) error {
	return r.handOver(ctx)
}

// undoPhysical removes a physical job's work once the origin serves the
// moving vnodes again (an abort before the flip, or a revert): the new
// pnodes are unregistered and their peers removed.
func undoPhysical(ctx context.Context, r *run) error {
	j := r.job
	for _, to := range j.To {
		if _, err := r.o.reg.Pnode(ctx, to); err == nil {
			if err := r.o.reg.RemovePnode(ctx, to); err != nil {
				return err
			}
		}
		r.crash(PointMid)
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
