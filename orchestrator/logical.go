package orchestrator

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/shard"
)

// Logical copies the moving vnodes' rows into existing pnodes with
// row-filtered logical replication.
const Logical StrategyName = "logical"

// The logical strategy copies the moving vnodes' rows into existing,
// empty pnodes with row-filtered logical replication: one publication per
// destination on the origin, filtered to its ranges, and a subscription on
// the destination. After the cutover the origin deletes what it gave away.
func init() {
	register(&Strategy{
		Name:    Logical,
		Summary: "row-filtered logical replication into existing pnodes",
		Phases: []PhaseFunc{
			validatePhase,
			{Name: "prepare", Run: prepare, Points: []Point{PointMid}},
			{Name: "replicate", Run: replicate, Points: []Point{PointMid}},
			{Name: "copy", Run: copyRows, Points: []Point{PointMid}},
			{Name: "catchup", Run: logicalCatchup, Points: []Point{PointMid}},
			dumpLockPhase,
			{Name: "verify", Run: verify, Points: []Point{PointMid}},
			reverseSlotsPhase,
			{Name: "cutover", Run: logicalCutover, Points: []Point{PointFrozen, PointCaughtUp, PointRechecked, PointSequences,
				PointDisowned, PointWritable, PointFlipped, PointRouted}},
			{Name: "teardown", Run: teardown, Points: []Point{PointMid}},
			reverseStreamPhase,
			releaseDumpLockPhase,
			soakPhase,
			closeWayBackPhase,
			{Name: "cleanup", Run: cleanupOrigin, Points: []Point{PointMid}},
		},
		Undo:          undoLogical,
		RevertCleanup: revertCleanupLogical,
	})
}

// Replication objects (publication, slot, subscription) are named after
// the job and the destination's place in it.
func pubName(j *Job, i int) string { return fmt.Sprintf("reshard_%s_%d", j.ID, i) }

// prepare gives each destination the schema, the buckets and ownership rows
// for its moving vnodes, not yet writable.
func prepare(ctx context.Context, r *run) error {
	j := r.job
	origin, err := r.pool(ctx, j.From)
	if err != nil {
		return err
	}
	if err := r.settleBuckets(ctx); err != nil {
		return err
	}
	opts, err := shard.Buckets(ctx, origin)
	if err != nil {
		return err
	}
	return r.eachMove(ctx, func(i int, m Move, _ *pgxpool.Pool) error {
		vs, err := moving(m)
		if err != nil {
			return err
		}
		if err := r.fenced(ctx, m.To, func(tx pgx.Tx) error {
			if err := shard.Init(ctx, tx); err != nil {
				return err
			}
			for _, b := range j.Buckets {
				if err := shard.EnsureBucket(ctx, tx, b, opts[b]); err != nil {
					return err
				}
			}
			if err := shard.CopyUserTriggers(ctx, origin, tx, j.Buckets); err != nil {
				return err
			}
			return shard.Own(ctx, tx, vs, false, j.RingVersionBefore)
		}); err != nil {
			return err
		}
		if i == 0 {
			r.crash(PointMid)
		}
		return nil
	})
}

// replicate creates on the origin one publication per destination, filtered
// to its ranges, and its slot, then the matching subscription on the
// destination: each in a fenced transaction.
func replicate(ctx context.Context, r *run) error {
	j := r.job
	conninfo, err := r.primaryDSN(ctx, j.From)
	if err != nil {
		return err
	}
	return r.eachMove(ctx, func(i int, m Move, dst *pgxpool.Pool) error {
		name := pubName(j, i)
		if err := r.fenced(ctx, j.From, func(tx pgx.Tx) error {
			return shard.CreatePublication(ctx, tx, name, j.ID, j.Buckets, m.Ranges)
		}); err != nil {
			return err
		}
		r.crash(PointMid)
		// The slot after the publication: decoding reads the publication
		// as of each change. Its own transaction, since PostgreSQL creates
		// a logical slot only in one that has written nothing.
		if err := r.fenced(ctx, j.From, func(tx pgx.Tx) error { return shard.CreateSlot(ctx, tx, name) }); err != nil {
			return err
		}
		if err := r.fenced(ctx, m.To, func(tx pgx.Tx) error {
			return shard.CreateSubscription(ctx, tx, name, conninfo, name, true)
		}); err != nil {
			return err
		}
		oid, err := shard.SubscriptionOID(ctx, dst, name)
		if err != nil {
			return err
		}
		if j.SubscriptionOIDs == nil {
			j.SubscriptionOIDs = map[int]uint32{}
		}
		j.SubscriptionOIDs[i] = oid
		return r.save(ctx)
	})
}

// copyRows waits for the initial copy, showing rows copied against the
// rows the plan counted.
func copyRows(ctx context.Context, r *run) error {
	j := r.job
	var total int64
	for _, m := range j.Moves {
		total += m.Rows
	}
	start := time.Now()
	crashed := false
	watch, last := newSubWatch(), map[int]int64{}
	return r.waitFor(ctx, 200*time.Millisecond, 0, "initial copy", func() (bool, error) {
		ready, all, copied := 0, 0, int64(0)
		if err := r.eachMove(ctx, func(i int, m Move, dst *pgxpool.Pool) error {
			rd, n, err := shard.SyncState(ctx, dst, pubName(j, i))
			if err != nil {
				return fmt.Errorf("destination %s: %w", m.To, err)
			}
			if n == 0 {
				return fmt.Errorf("subscription %s has no tables yet", pubName(j, i))
			}
			ready, all = ready+rd, all+n
			c, err := shard.RowCount(ctx, dst, j.Buckets, m.Ranges)
			if err != nil {
				return fmt.Errorf("destination %s: %w", m.To, err)
			}
			copied += c
			if c != last[i] || rd == n {
				watch.progressed(i)
			}
			last[i] = c
			return r.checkSubscription(ctx, watch, i, m, dst)
		}); err != nil {
			return false, err
		}
		p := Progress{Done: copied, Total: max(total, copied), Unit: "rows",
			Note: fmt.Sprintf("%d of %d tables streaming", ready, all)}
		if el := time.Since(start).Seconds(); el > 0.5 && copied > 0 {
			p.Rate = float64(copied) / el
			if p.Total > copied {
				p.ETASeconds = float64(p.Total-copied) / p.Rate
			}
		}
		if err := r.progress(ctx, p); err != nil {
			return false, err
		}
		if !crashed {
			crashed = true
			r.crash(PointMid)
		}
		return ready == all, nil
	})
}

// logicalCatchup waits until every slot's unconfirmed WAL is under the
// threshold.
// The destinations' subscriptions are watched meanwhile: an apply worker
// that cannot write (a full disk) must stop the job, not hold it here.
func logicalCatchup(ctx context.Context, r *run) error {
	watch, least := newSubWatch(), map[int]int64{}
	return r.catchUp(ctx, fmt.Sprintf("waiting for lag under %d bytes", r.job.LagBytes), len(r.job.Moves),
		func(origin *pgxpool.Pool, i int) (int64, error) {
			lag, err := shard.SlotLag(ctx, origin, pubName(r.job, i))
			if err != nil {
				return 0, err
			}
			if l, ok := least[i]; !ok || lag < l || lag <= r.job.LagBytes {
				least[i] = lag
				watch.progressed(i)
			}
			m := r.job.Moves[i]
			dst, err := r.pool(ctx, m.To)
			if err != nil {
				return 0, err
			}
			return lag, r.checkSubscription(ctx, watch, i, m, dst)
		})
}

// catchUp waits until the worst of n replication lags, each measured
// against the origin, is within the job's threshold, showing it as progress.
func (r *run) catchUp(ctx context.Context, note string, n int, lag func(origin *pgxpool.Pool, i int) (int64, error)) error {
	origin, err := r.pool(ctx, r.job.From)
	if err != nil {
		return err
	}
	r.crash(PointMid)
	return r.waitFor(ctx, 100*time.Millisecond, 0, "catch-up", func() (bool, error) {
		var worst int64
		for i := range n {
			l, err := lag(origin, i)
			if err != nil {
				return false, err
			}
			worst = max(worst, l)
		}
		if err := r.progress(ctx, Progress{Done: worst, Total: r.job.LagBytes, Unit: "bytes behind", Note: note}); err != nil {
			return false, err
		}
		return worst <= r.job.LagBytes, nil
	})
}

// verify compares per-vnode row counts and checksums on both sides.
// Writes keep coming, so it compares at a marker: the origin's checksums in
// one snapshot, then a marker, and the destination's once the marker has
// arrived. Vnodes written in between differ; they are compared again, and
// any still different are compared exactly during the cutover, when frozen.
func verify(ctx context.Context, r *run) error {
	j := r.job
	if err := r.holdDumpLock(ctx); err != nil {
		return err
	}
	origin, err := r.pool(ctx, j.From)
	if err != nil {
		return err
	}
	var remaining []int32
	if err := r.eachMove(ctx, func(i int, m Move, dst *pgxpool.Pool) error {
		rgs := m.Ranges
		for round := 1; round <= 3 && len(rgs) > 0; round++ {
			src, err := shard.ChecksumsInSnapshot(ctx, origin, j.Buckets, rgs)
			if err != nil {
				return err
			}
			if err := r.markerReached(ctx, fmt.Sprintf("verify-%d-%d-%d", i, round, time.Now().UnixNano()), j.From, m.To); err != nil {
				return err
			}
			got, err := shard.Checksums(ctx, dst, j.Buckets, rgs)
			if err != nil {
				return err
			}
			bad := shard.Mismatches(src, got)
			if err := r.progress(ctx, Progress{Done: int64(round), Total: 3, Unit: "rounds",
				Note: fmt.Sprintf("%s: %d vnodes differ while writes continue", m.To, len(bad))}); err != nil {
				return err
			}
			rgs = vnodeRanges(bad)
			if round == 3 {
				remaining = append(remaining, bad...)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	r.crash(PointMid)
	j.Mismatched = remaining
	return r.save(ctx)
}

func vnodeRanges(vs []int32) []shard.Range {
	out := make([]shard.Range, len(vs))
	for i, v := range vs {
		out[i] = shard.Range{Lo: v, Hi: v}
	}
	return out
}

// logicalCutover freezes the moving vnodes on the origin, waits until each
// destination has applied a marker written after the freeze, checks the
// vnodes that differed, moves the _id sequences past the origin's, and
// hands ownership over (handOver).
func logicalCutover(ctx context.Context, r *run) error {
	j := r.job
	if err := r.holdDumpLock(ctx); err != nil {
		return err
	}
	if err := r.freeze(ctx); err != nil {
		return err
	}
	if err := r.step(ctx, stepCaughtUp, PointCaughtUp, func() error { return r.markerReached(ctx, "cutover", j.From, j.To...) }); err != nil {
		return err
	}
	if err := r.step(ctx, stepVerified, PointRechecked, func() error { return r.recheck(ctx) }); err != nil {
		return err
	}
	if err := r.step(ctx, stepSequences, PointSequences, func() error {
		origin, err := r.pool(ctx, j.From)
		if err != nil {
			return err
		}
		return r.eachMove(ctx, func(_ int, m Move, _ *pgxpool.Pool) error {
			return r.fenced(ctx, m.To, func(tx pgx.Tx) error { return shard.SyncSequences(ctx, origin, tx, j.Buckets) })
		})
	}); err != nil {
		return err
	}
	return r.handOver(ctx)
}

// recheck compares, exactly, the vnodes that still differed in verify: the
// origin is frozen now, so any difference is a lost or extra row.
func (r *run) recheck(ctx context.Context) error {
	j := r.job
	if len(j.Mismatched) == 0 {
		return nil
	}
	origin, err := r.pool(ctx, j.From)
	if err != nil {
		return err
	}
	rgs := vnodeRanges(j.Mismatched)
	src, err := shard.Checksums(ctx, origin, j.Buckets, rgs)
	if err != nil {
		return err
	}
	got := map[shard.BucketVnode]shard.Checksum{}
	if err := r.eachMove(ctx, func(_ int, _ Move, dst *pgxpool.Pool) error {
		c, err := shard.Checksums(ctx, dst, j.Buckets, rgs)
		for k, v := range c {
			got[k] = v
		}
		return err
	}); err != nil {
		return err
	}
	if bad := shard.Mismatches(src, got); len(bad) > 0 {
		return fatal("vnodes %v differ between %s and the destination after the freeze; abort the job", bad, j.From)
	}
	return nil
}

// teardown drops the subscriptions, their slots and the publications. It
// is not fenced: it only drops the job's own objects, which no step after
// the cutover makes again, so a stale orchestrator can only drop what its
// successor has dropped or is about to.
func teardown(ctx context.Context, r *run) error {
	j := r.job
	origin, err := r.pool(ctx, j.From)
	if err != nil {
		return err
	}
	if err := r.eachMove(ctx, func(i int, _ Move, dst *pgxpool.Pool) error {
		if err := shard.DropSubscription(ctx, dst, pubName(j, i)); err != nil {
			return err
		}
		r.crash(PointMid)
		if err := shard.DropSlot(ctx, origin, pubName(j, i)); err != nil {
			return err
		}
		if err := shard.DropPublication(ctx, origin, pubName(j, i)); err != nil {
			return err
		}
		return shard.DropMarkers(ctx, dst, j.ID)
	}); err != nil {
		return err
	}
	return shard.DropMarkers(ctx, origin, j.ID)
}

// undoLogical drops the job's replication objects and its copy on each
// destination; the origin already owns and serves the vnodes again. The
// origin's slots and publication go even when the destination cannot drop
// its subscription (down, or its disk full): a slot left holds the
// origin's WAL. The error then says what is left on the destination.
func undoLogical(ctx context.Context, r *run) error {
	j := r.job
	origin, err := r.pool(ctx, j.From)
	if err != nil {
		return err
	}
	if err := r.eachMove(ctx, func(i int, m Move, dst *pgxpool.Pool) error {
		name := pubName(j, i)
		oid, subErr := shard.SubscriptionOID(ctx, dst, name)
		if subErr == nil {
			subErr = shard.DropSubscription(ctx, dst, name)
		}
		if oid == 0 {
			oid = j.SubscriptionOIDs[i]
		}
		if err := shard.DropSlot(ctx, origin, name); err != nil {
			return err
		}
		if err := shard.DropSyncSlots(ctx, origin, oid); err != nil {
			return err
		}
		if err := shard.DropPublication(ctx, origin, name); err != nil {
			return err
		}
		if subErr != nil {
			return fmt.Errorf("the origin %s has no slot or publication of the job left, but destination %s keeps subscription %s "+
				"and the rows copied so far (abort again once it answers): %w", j.From, m.To, name, subErr)
		}
		if err := r.undoDestination(ctx, m, dst); err != nil {
			return fmt.Errorf("the origin %s has no slot or publication of the job left, but destination %s keeps "+
				"the rows copied so far (abort again once it answers): %w", j.From, m.To, err)
		}
		return nil
	}); err != nil {
		return err
	}
	return shard.DropMarkers(ctx, origin, j.ID)
}

// undoDestination removes the job's ownership rows, copied rows and
// markers from one destination.
func (r *run) undoDestination(ctx context.Context, m Move, dst *pgxpool.Pool) error {
	vs, err := moving(m)
	if err != nil {
		return err
	}
	if err := r.fenced(ctx, m.To, func(tx pgx.Tx) error { return shard.Disown(ctx, tx, vs) }); err != nil && !postgres.IsUndefinedTable(err) {
		return err
	}
	for _, b := range r.job.Buckets {
		if err := r.deleteAll(ctx, m.To, b, m.Ranges); err != nil {
			return err
		}
	}
	if err := shard.DropMarkers(ctx, dst, r.job.ID); err != nil && !postgres.IsUndefinedTable(err) {
		return err
	}
	return nil
}
