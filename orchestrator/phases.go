package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/shard"
)

// Phases every strategy shares: checking the plan still holds, and RFD
// 103's dump lock around the part of the job a dump must not see.

var (
	validatePhase        = PhaseFunc{Name: "validate", Run: validate, Points: []Point{PointMid}}
	dumpLockPhase        = PhaseFunc{Name: "dump-lock", Run: dumpLock, Points: []Point{PointMid}}
	releaseDumpLockPhase = PhaseFunc{Name: "release-dump-lock", Run: releaseDumpLock, Points: []Point{PointMid}}
)

// validate checks, at run time, that the ring still maps the moving vnodes
// to the origin: between plan and run an operator may have changed it.
func validate(ctx context.Context, r *run) error {
	j := r.job
	rg, rv, err := r.o.rings.Current(ctx)
	if err != nil {
		return err
	}
	vs, err := allMoving(j)
	if err != nil {
		return err
	}
	for _, v := range vs {
		p, _, err := rg.Vnode(uint32(v))
		if err != nil {
			return fatal("%v", err)
		}
		if p != j.From {
			return fatal("vnode %d is now on %s, not %s (ring version %d)", v, p, j.From, rv.Version)
		}
	}
	pnodes := j.Pnodes()
	if r.strat.CreatesDestinations {
		pnodes = pnodes[:1] // the destinations do not exist yet
	}
	for _, p := range pnodes {
		if _, err := r.pool(ctx, p); err != nil {
			return err
		}
	}
	r.crash(PointMid)
	return nil
}

// settleBuckets waits for bucket changes that started before the job took
// its pnodes (routers refuse any that start after), then takes the bucket
// list again: one created or deleted between the plan and the locks must
// be in, or out of, what the job copies.
func (r *run) settleBuckets(ctx context.Context) error {
	if err := r.waitFor(ctx, 50*time.Millisecond, 30*time.Second, "bucket changes in flight", func() (bool, error) {
		busy, err := etcd.BucketChanges(ctx, r.o.cli)
		return len(busy) == 0, err
	}); err != nil {
		return err
	}
	names, err := movableBuckets(ctx, r.o.buckets)
	if err != nil {
		return err
	}
	if !slices.Equal(names, r.job.Buckets) {
		r.job.Warnings = append(r.job.Warnings, fmt.Sprintf("buckets changed while the job started: now %v", names))
		r.job.Buckets = names
		return r.save(ctx)
	}
	return nil
}

// dumpLock takes RFD 103's dump lock and waits for running dumps of the
// job's pnodes to end (steps 5 and 6).
func dumpLock(ctx context.Context, r *run) error {
	if err := r.holdDumpLock(ctx); err != nil {
		return err
	}
	r.crash(PointMid)
	return r.waitFor(ctx, 500*time.Millisecond, 0, "running dumps", func() (bool, error) {
		dumps, err := etcd.RunningDumps(ctx, r.o.cli, r.job.Pnodes()...)
		if err != nil || len(dumps) == 0 {
			return err == nil, err
		}
		return false, r.progress(ctx, Progress{Done: 0, Total: int64(len(dumps)), Unit: "dumps", Note: fmt.Sprintf("waiting for %v", dumps)})
	})
}

// holdDumpLock takes the dump lock on this orchestrator's lease, and its
// znode when the job names a ZooKeeper. Phases after dump-lock call it
// again, and a resumed run before its first phase (resumeHold), so a
// resumed job holds it anew.
func (r *run) holdDumpLock(ctx context.Context) error {
	if err := r.holdDumpZnode(ctx); err != nil {
		r.progress(ctx, Progress{Unit: "lock", Note: err.Error()})
		return err
	}
	err := etcd.AcquireDumpLock(ctx, r.o.cli, r.session.Lease(), r.job.holder())
	if errors.Is(err, etcd.ErrLockHeld) {
		r.progress(ctx, Progress{Unit: "lock", Note: err.Error()})
	}
	return err
}

func releaseDumpLock(ctx context.Context, r *run) error {
	r.crash(PointMid)
	if err := etcd.ReleaseDumpLock(ctx, r.o.cli, r.job.holder()); err != nil {
		return err
	}
	return r.releaseDumpZnode(ctx)
}

// markerReached writes a marker on the pnode from, fenced, and waits until
// every pnode in to has applied it: they apply transactions in commit
// order, so then they hold every change from committed before it. The
// copy sends markers from the origin to the destinations, the way back
// from the destinations to the origin.
func (r *run) markerReached(ctx context.Context, token, from string, to ...string) error {
	if err := r.fenced(ctx, from, func(tx pgx.Tx) error { return shard.PutMarker(ctx, tx, r.job.ID, token) }); err != nil {
		return err
	}
	for _, p := range to {
		db, err := r.pool(ctx, p)
		if err != nil {
			return err
		}
		if err := r.waitFor(ctx, 2*time.Millisecond, 2*time.Minute, fmt.Sprintf("%s applying marker %s", p, token), func() (bool, error) {
			return shard.HasMarker(ctx, db, r.job.ID, token)
		}); err != nil {
			return err
		}
	}
	return nil
}
