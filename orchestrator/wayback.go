package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/ring"
	"github.com/reshard/reshard/shard"
)

// The way back. After the flip the origin keeps the moved rows, and each
// destination streams its changes to the moved vnodes back to the origin:
// a publication on the destination filtered to its ranges, a slot, and a
// subscription on the origin. Until the job completes, a revert runs the
// cutover the other way with the same machinery.
//
// Three rules keep the two streams from feeding each other, since
// PostgreSQL 15 cannot tell a replicated change from a client's:
//   - The reverse slot starts where the destination stood before it took
//     writes (BackLSN, read while the origin is frozen and the copy has
//     caught up): the changes the copy applied there are behind it.
//   - The origin's subscription is made only after the copy's slot on the
//     origin is gone, so what it applies is not sent forward again.
//   - Rows are deleted (cleanup) only after the reverse stream is gone, so
//     a delete on the destination is never sent back to the origin.

// Names of the way back's phases that the job's state is read from.
const (
	reverseStreamName = "reverse-stream"
	soakName          = "soak"
)

// Phases the strategies share around the flip.
var (
	reverseSlotsPhase  = PhaseFunc{Name: "reverse-slots", Run: reverseSlots, Points: []Point{PointMid}}
	reverseStreamPhase = PhaseFunc{Name: reverseStreamName, Run: reverseStream, Points: []Point{PointMid}}
	soakPhase          = PhaseFunc{Name: soakName, Run: soak, Points: []Point{PointMid}}
	closeWayBackPhase  = PhaseFunc{Name: "close-way-back", Run: closeWayBack, Points: []Point{PointMid}}
)

// revertPhases run, in this order, once a revert is asked for; the last
// is the strategy's own removal of the destinations' copies.
var revertPhases = []PhaseFunc{
	{Name: "revert-catchup", Run: revertCatchup, Points: []Point{PointMid}},
	{Name: "revert-dump-lock", Run: dumpLock, Points: []Point{PointMid}},
	{Name: "revert-cutover", Run: revertCutover, Points: []Point{PointFrozen, PointCaughtUp, PointSequences,
		PointDisowned, PointWritable, PointFlipped, PointRouted}},
	{Name: "revert-teardown", Run: closeWayBack, Points: []Point{PointMid}},
	{Name: "revert-release-dump-lock", Run: releaseDumpLock, Points: []Point{PointMid}},
	{Name: "revert-cleanup", Run: func(ctx context.Context, r *run) error { return r.strat.RevertCleanup(ctx, r) }, Points: []Point{PointMid}},
}

// RevertFaultPoints lists every "PHASE:POINT" of a revert, in order.
func RevertFaultPoints() []string {
	var out []string
	for _, p := range revertPhases {
		for _, pt := range p.Points {
			out = append(out, FaultPoint(p.Name, pt))
		}
	}
	return out
}

// Complete modes (--complete).
const (
	CompleteAuto   = "auto"
	CompleteManual = "manual"
)

// ParseComplete reads --complete: auto (close the way back at once),
// manual (wait for 'reshard complete'), or after:DURATION (soak that long
// unless reverted first). It returns the soak for after:.
func ParseComplete(s string) (time.Duration, error) {
	switch s {
	case "", CompleteAuto, CompleteManual:
		return 0, nil
	}
	d, ok := strings.CutPrefix(s, "after:")
	if !ok {
		return 0, fmt.Errorf("--complete %q: use auto, manual or after:DURATION (e.g. after:30m)", s)
	}
	dur, err := time.ParseDuration(d)
	if err != nil || dur < 0 {
		return 0, fmt.Errorf("--complete %q: %q is not a duration like 30m or 2h", s, d)
	}
	return dur, nil
}

// backName names a move's way-back publication, slot and subscription.
func backName(j *Job, i int) string { return pubName(j, i) + "_back" }

// errRevertAsked and errAwaitDecision end the soak phase without an
// outcome: the job turns to its revert, or waits for an operator.
var (
	errRevertAsked   = errors.New("revert asked for")
	errAwaitDecision = errors.New("waiting for 'reshard complete' or 'reshard revert'")
)

// decided reports whether err is the soak handing the job to an operator's
// decision rather than a failure.
func decided(err error) bool {
	return errors.Is(err, errRevertAsked) || errors.Is(err, errAwaitDecision)
}

// reverseSlots creates, on each destination, the way back's publication
// (the move's ranges and the job's markers) and its slot. The logical
// strategy makes them before the cutover, so creating the slot (which
// waits for the destination's running transactions) is outside the write
// block; the physical one right after its new primaries are registered.
func reverseSlots(ctx context.Context, r *run) error {
	j := r.job
	return r.eachMove(ctx, func(i int, m Move, _ *pgxpool.Pool) error {
		name := backName(j, i)
		if err := r.fenced(ctx, m.To, func(tx pgx.Tx) error {
			return shard.CreatePublication(ctx, tx, name, j.ID, j.Buckets, m.Ranges)
		}); err != nil {
			return err
		}
		if i == 0 {
			r.crash(PointMid)
		}
		return r.fenced(ctx, m.To, func(tx pgx.Tx) error { return shard.CreateSlot(ctx, tx, name) })
	})
}

// recordBackLSN notes each destination's WAL position inside the cutover,
// after the copy has caught up and before the destination takes writes.
func (r *run) recordBackLSN(ctx context.Context) error {
	j := r.job
	if j.BackLSN == nil {
		j.BackLSN = map[int]string{}
	}
	return r.eachMove(ctx, func(i int, _ Move, dst *pgxpool.Pool) error {
		lsn, err := postgres.CurrentWAL(ctx, dst)
		if err != nil {
			return err
		}
		j.BackLSN[i] = lsn.String()
		return nil
	})
}

// reverseStream starts the way back: each reverse slot skips to BackLSN,
// then the origin subscribes to it without a copy.
func reverseStream(ctx context.Context, r *run) error {
	j := r.job
	return r.eachMove(ctx, func(i int, m Move, dst *pgxpool.Pool) error {
		name := backName(j, i)
		lsn, ok := j.BackLSN[i]
		if !ok {
			return fatal("no way-back position recorded for %s", m.To)
		}
		if err := r.waitFor(ctx, 20*time.Millisecond, time.Minute, fmt.Sprintf("%s flushing its WAL to %s", m.To, lsn), func() (bool, error) {
			return shard.AdvanceSlot(ctx, dst, name, lsn)
		}); err != nil {
			return err
		}
		if i == 0 {
			r.crash(PointMid)
		}
		conninfo, err := r.primaryDSN(ctx, m.To)
		if err != nil {
			return err
		}
		return r.fenced(ctx, j.From, func(tx pgx.Tx) error {
			return shard.CreateSubscription(ctx, tx, name, conninfo, name, false)
		})
	})
}

// soak holds the job with the way back open until its complete mode or an
// operator decides: it returns nil to complete, errRevertAsked to revert,
// errAwaitDecision when nobody has decided yet (manual).
func soak(ctx context.Context, r *run) error {
	j := r.job
	wait, err := ParseComplete(j.Complete)
	if err != nil {
		return fatal("%v", err)
	}
	r.crash(PointMid)
	for {
		if j.WayBackClosed != "" {
			return closeWayBack(ctx, r) // again, should a kill have cut it short
		}
		if asked, err := r.o.store.jobs.Requested(ctx, etcd.Revert, j.ID); err != nil || asked {
			if err != nil {
				return err
			}
			return errRevertAsked
		}
		if asked, err := r.o.store.jobs.Requested(ctx, etcd.Complete, j.ID); err != nil || asked {
			return err
		}
		if err := r.checkSlots(ctx); err != nil {
			return err
		}
		if r.slots.wayBack != "" {
			// The way back's slot would fill the destination's disk:
			// close it (recorded first: a revert must not start on a
			// way back half gone); without it the job can only complete.
			j.WayBackClosed = r.slots.wayBack
			j.Warnings = append(j.Warnings, r.slots.wayBack)
			if err := r.save(ctx); err != nil {
				return err
			}
			return closeWayBack(ctx, r)
		}
		switch {
		case j.Complete == "" || j.Complete == CompleteAuto:
			return nil
		case j.Complete == CompleteManual:
			return errAwaitDecision
		}
		soaked := time.Since(j.FlippedAt)
		if soaked >= wait {
			return nil
		}
		if err := r.progress(ctx, Progress{Done: int64(soaked.Seconds()), Total: int64(wait.Seconds()), Unit: "s soaked",
			Note: r.backLagNote(ctx) + "; completes on its own unless reverted"}); err != nil {
			return err
		}
		if err := sleep(ctx, min(time.Second, wait-soaked)); err != nil {
			return err
		}
	}
}

// backLagNote says how far behind the way back is, for status.
func (r *run) backLagNote(ctx context.Context) string {
	var worst int64
	err := r.eachMove(ctx, func(i int, _ Move, dst *pgxpool.Pool) error {
		lag, err := shard.SlotLag(ctx, dst, backName(r.job, i))
		worst = max(worst, lag)
		return err
	})
	if err != nil {
		return "way back: " + err.Error()
	}
	return fmt.Sprintf("way back %d bytes behind", worst)
}

// closeWayBack drops the way back: the origin's subscription first (it
// drops its slot on the destination when it can), then the slot and the
// publication on each destination, and the job's markers on every side.
// It is not fenced, like teardown: it only drops the job's own objects.
func closeWayBack(ctx context.Context, r *run) error {
	j := r.job
	origin, err := r.pool(ctx, j.From)
	if err != nil {
		return err
	}
	if err := r.eachMove(ctx, func(i int, _ Move, dst *pgxpool.Pool) error {
		name := backName(j, i)
		if err := shard.DropSubscription(ctx, origin, name); err != nil {
			return err
		}
		if i == 0 {
			r.crash(PointMid)
		}
		if err := shard.DropSlot(ctx, dst, name); err != nil {
			return err
		}
		if err := shard.DropPublication(ctx, dst, name); err != nil {
			return err
		}
		return shard.DropMarkers(ctx, dst, j.ID)
	}); err != nil {
		return err
	}
	return shard.DropMarkers(ctx, origin, j.ID)
}

// revertCatchup waits until each way back streams and is within the
// job's lag threshold, so the revert's write block waits for little.
func revertCatchup(ctx context.Context, r *run) error {
	j := r.job
	// The origin's apply worker for a way back starts when PostgreSQL's
	// launcher gets to it, up to wal_retrieve_retry_interval (5 s) after
	// the subscription is made. A revert soon after the flip found it not
	// yet running and waited for it inside the write block (4.6 s blocks,
	// measured with 'bench compare --only write-block'); the slot's lag in
	// bytes did not show it, since the slot held little.
	origin, err := r.pool(ctx, j.From)
	if err != nil {
		return err
	}
	if err := r.progress(ctx, Progress{Note: "waiting for the way back's apply workers on " + j.From + " to run"}); err != nil {
		return err
	}
	if err := r.waitFor(ctx, 20*time.Millisecond, 0, "the way back's apply workers", func() (bool, error) {
		for i := range j.Moves {
			if on, err := shard.SubscriptionApplying(ctx, origin, backName(j, i)); err != nil || !on {
				return false, err
			}
		}
		return true, nil
	}); err != nil {
		return err
	}
	return r.catchUp(ctx, fmt.Sprintf("waiting for the way back within %d bytes", j.LagBytes), len(j.Moves),
		func(_ *pgxpool.Pool, i int) (int64, error) {
			dst, err := r.pool(ctx, j.Moves[i].To)
			if err != nil {
				return 0, err
			}
			return shard.SlotLag(ctx, dst, backName(j, i))
		})
}

// The revert's cutover steps, recorded in Revert.Cutover.
const (
	revertFreeze = iota + 1
	revertCaughtUp
	revertSequences
	revertDisowned
	revertWritable
	revertRing
	revertRouters
)

var revertStepNames = map[int]string{revertFreeze: "freeze", revertCaughtUp: "caught-up", revertSequences: "sequences",
	revertDisowned: "disown", revertWritable: "writable", revertRing: "ring", revertRouters: "routers"}

// revertCutover is the cutover the other way: the destinations freeze the
// moved vnodes, the origin applies a marker from each, its _id sequences
// move past theirs, the destinations stop serving the vnodes and the origin
// takes them back writable (the write block ends), the ring flips back and
// the routers follow.
func revertCutover(ctx context.Context, r *run) error {
	j := r.job
	rv := j.Revert
	log := cutoverLog{done: &rv.Cutover, ms: &rv.CutoverMS, names: revertStepNames}
	if err := r.holdDumpLock(ctx); err != nil {
		return err
	}
	if err := r.stepIn(ctx, log, revertFreeze, PointFrozen, func() error {
		if err := r.markFrozen(ctx, &rv.Frozen, &rv.FrozenAt); err != nil {
			return err
		}
		return r.eachMove(ctx, func(_ int, m Move, _ *pgxpool.Pool) error {
			return r.fenced(ctx, m.To, func(tx pgx.Tx) error {
				_, err := shard.SetWritableRanges(ctx, tx, m.Ranges, false, j.RingVersionAfter)
				return err
			})
		})
	}); err != nil {
		return err
	}
	if err := r.stepIn(ctx, log, revertCaughtUp, PointCaughtUp, func() error {
		return r.eachMove(ctx, func(_ int, m Move, _ *pgxpool.Pool) error {
			return r.markerReached(ctx, "revert-"+m.To, m.To, j.From)
		})
	}); err != nil {
		return err
	}
	if err := r.stepIn(ctx, log, revertSequences, PointSequences, func() error {
		return r.eachMove(ctx, func(_ int, _ Move, dst *pgxpool.Pool) error {
			return r.fenced(ctx, j.From, func(tx pgx.Tx) error { return shard.SyncSequences(ctx, dst, tx, j.Buckets) })
		})
	}); err != nil {
		return err
	}
	if err := r.stepIn(ctx, log, revertDisowned, PointDisowned, func() error {
		return r.eachMove(ctx, func(_ int, m Move, _ *pgxpool.Pool) error {
			return r.fenced(ctx, m.To, func(tx pgx.Tx) error { return shard.DisownRanges(ctx, tx, m.Ranges) })
		})
	}); err != nil {
		return err
	}
	if err := r.stepIn(ctx, log, revertWritable, PointWritable, func() error {
		all, err := allMoving(j)
		if err != nil {
			return err
		}
		if err := r.fenced(ctx, j.From, func(tx pgx.Tx) error { return shard.Own(ctx, tx, all, true, j.RingVersionAfter) }); err != nil {
			return err
		}
		rv.WriteBlockMS = float64(time.Since(rv.FrozenAt).Microseconds()) / 1000
		return nil
	}); err != nil {
		return err
	}
	if err := r.stepIn(ctx, log, revertRing, PointFlipped, func() error {
		v, err := r.remapRing(ctx, true)
		rv.RingVersion = v
		return err
	}); err != nil {
		return err
	}
	return r.stepIn(ctx, log, revertRouters, PointRouted, func() error { return r.waitRouters(ctx, rv.RingVersion) })
}

// beginRevert turns a flipped job to its way back: the phases it has not
// done are skipped and the revert's are added, in one save.
func (r *run) beginRevert(ctx context.Context) error {
	j := r.job
	if j.Revert == nil {
		j.Revert = &Revert{Requested: time.Now().UTC()}
		for i := range j.Phases {
			if j.Phases[i].State != Done {
				j.Phases[i].State, j.Phases[i].Error = Skipped, ""
			}
		}
		for _, p := range revertPhases {
			j.Phases = append(j.Phases, Phase{Name: p.Name, State: Pending})
		}
		j.State = Reverting
		if err := r.save(ctx); err != nil {
			return err
		}
	}
	return r.o.store.jobs.ClearRequest(ctx, etcd.Revert, j.ID)
}

// wayBackOpen reports whether a revert can be taken now: the reverse
// stream runs and the job has not begun to complete.
func (j *Job) wayBackOpen() bool {
	rs, sk := j.phase(reverseStreamName), j.phase(soakName)
	return rs != nil && rs.State == Done && sk != nil && sk.State != Done && sk.State != Skipped && j.WayBackClosed == ""
}

// activeState is the state of a job being run: reverting, completing
// (past its soak), or running.
func (j *Job) activeState() State {
	if j.Revert != nil {
		return Reverting
	}
	if p := j.phase(soakName); p != nil && p.State == Done {
		return Completing
	}
	return Running
}

// NeedsRun reports whether a service should run the job: it is under way,
// or flipped with a soak to finish or an operator's request waiting.
func (o *Orchestrator) NeedsRun(ctx context.Context, j *Job) bool {
	switch j.State {
	case Pending, Running, Reverting, Completing:
		return true
	case Flipped:
		if strings.HasPrefix(j.Complete, "after:") {
			return true
		}
		for _, a := range []etcd.Action{etcd.Revert, etcd.Complete} {
			if asked, err := o.store.jobs.Requested(ctx, a, j.ID); err == nil && asked {
				return true
			}
		}
	}
	return false
}

// Revert asks a flipped job to take its way back, and runs it (or waits
// for the orchestrator that runs it) until the job is reverted.
func (o *Orchestrator) Revert(ctx context.Context, id string) error {
	j, err := o.store.Get(ctx, id)
	if err != nil {
		return err
	}
	switch {
	case j.State == Reverted:
		return nil
	case j.State == Aborted || j.State == Aborting:
		return fmt.Errorf("job %s was aborted; there is nothing to revert", id)
	case !j.FlipDone():
		return fmt.Errorf("job %s has not flipped the ring yet: 'reshard abort %s' undoes it", id, id)
	case j.State == Done || j.State == Completing:
		return fmt.Errorf("job %s has completed (its way back is closed): moving the vnodes back takes a new job", id)
	case j.WayBackClosed != "":
		return fmt.Errorf("job %s cannot revert: %s", id, j.WayBackClosed)
	}
	return o.ask(ctx, etcd.Revert, id, Reverted)
}

// Complete asks a flipped job to close its way back and clean up, and runs
// it (or waits for the orchestrator that runs it) until the job is done.
func (o *Orchestrator) Complete(ctx context.Context, id string) error {
	j, err := o.store.Get(ctx, id)
	if err != nil {
		return err
	}
	switch {
	case j.State == Done:
		return nil
	case j.State == Aborted || j.State == Aborting:
		return fmt.Errorf("job %s was aborted; there is nothing to complete", id)
	case j.Revert != nil:
		return fmt.Errorf("job %s is %s: it went back to %s and cannot complete", id, j.State, j.From)
	case !j.FlipDone():
		return fmt.Errorf("job %s has not flipped the ring yet: it can complete only after its cutover", id)
	}
	return o.ask(ctx, etcd.Complete, id, Done)
}

// ask records an operator's request and runs the job until it ends in want.
func (o *Orchestrator) ask(ctx context.Context, a etcd.Action, id string, want State) error {
	if err := o.store.jobs.Request(ctx, a, id); err != nil {
		return err
	}
	runErr := o.Run(ctx, id)
	j, err := o.store.Get(context.WithoutCancel(ctx), id)
	if err != nil {
		return err
	}
	switch {
	case j.State == want:
		return nil
	case runErr != nil:
		return runErr
	}
	o.store.jobs.ClearRequest(context.WithoutCancel(ctx), a, id)
	return fmt.Errorf("job %s is %s: it ended before the %s took effect", id, j.State, a)
}

// revertCleanupLogical deletes, in rate-limited batches, the moved rows
// each destination no longer owns, and its markers of the job.
func revertCleanupLogical(ctx context.Context, r *run) error {
	var sides []cleanupSide
	for _, m := range r.job.Moves {
		sides = append(sides, cleanupSide{m.To, m.Ranges})
	}
	return r.cleanup(ctx, sides...)
}

// Kept reports, for 'reshard verify', whether an unfinished job keeps a
// vnode's rows on a pnode after its flip although the ring maps the vnode
// elsewhere: the moved vnodes on the origin (the way back) and on a
// destination (until a revert's cleanup), and every vnode on a new shard
// that a physical job copied whole (until its cleanup).
func (s *Store) Kept(ctx context.Context) (func(pnode string, vnode uint32) bool, error) {
	jobs, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	moved := map[string]map[uint32]bool{}
	whole := map[string]bool{}
	for _, j := range jobs {
		if !j.FlipDone() || j.State == Done || j.State == Reverted || j.State == Aborted {
			continue
		}
		for _, m := range j.Moves {
			vs, err := ring.ParseVnodeList(m.Vnodes, j.RingVnodes)
			if err != nil {
				return nil, fmt.Errorf("job %s: %w", j.ID, err)
			}
			if CreatesDestinations(j.Strategy) {
				whole[m.To] = true
			}
			for _, p := range []string{j.From, m.To} {
				if moved[p] == nil {
					moved[p] = map[uint32]bool{}
				}
				for _, v := range vs {
					moved[p][v] = true
				}
			}
		}
	}
	return func(pnode string, vnode uint32) bool { return whole[pnode] || moved[pnode][vnode] }, nil
}
