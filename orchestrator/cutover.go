package orchestrator

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/ring"
	"github.com/reshard/reshard/shard"
)

// The cutover is where the moving vnodes change hands. Each step is
// recorded in job.Cutover as it finishes, so a resumed cutover never
// repeats a step whose effect a later one built on, and every step that
// changes a shard is fenced. Strategies compose it: freeze, their own
// catch-up steps, then handOver.
const (
	stepFreeze = iota + 1
	stepCaughtUp
	stepVerified
	stepSequences
	stepDisowned
	stepWritable
	stepRing
	stepRouters
)

// stepNames name the cutover steps in CutoverMS and status.
var stepNames = map[int]string{stepFreeze: "freeze", stepCaughtUp: "caught-up", stepVerified: "recheck",
	stepSequences: "sequences", stepDisowned: "disown", stepWritable: "writable", stepRing: "ring", stepRouters: "routers"}

// cutoverLog is where one direction's cutover records its steps: the job
// itself for the forward cutover, its Revert for the way back.
type cutoverLog struct {
	done  *int
	ms    *map[string]float64
	names map[int]string
}

func (r *run) forward() cutoverLog {
	return cutoverLog{done: &r.job.Cutover, ms: &r.job.CutoverMS, names: stepNames}
}

// step runs forward cutover step n (see stepIn).
func (r *run) step(ctx context.Context, n int, after Point, fn func() error) error {
	return r.stepIn(ctx, r.forward(), n, after, fn)
}

// stepIn runs cutover step n unless a previous run finished it, records
// it with the time its work took (the save that records it aside), and
// then passes the fault point after it.
func (r *run) stepIn(ctx context.Context, log cutoverLog, n int, after Point, fn func() error) error {
	if *log.done < n {
		start := time.Now()
		if err := fn(); err != nil {
			return err
		}
		*log.done = n
		if *log.ms == nil {
			*log.ms = map[string]float64{}
		}
		(*log.ms)[log.names[n]] = float64(time.Since(start).Microseconds()) / 1000
		if err := r.save(ctx); err != nil {
			return err
		}
	}
	r.crash(after)
	return nil
}

// freeze stops writes to the moving vnodes on the origin. The statement
// waits for writers already inside the fence, so once it commits no write
// to them can commit: the write block starts here.
func (r *run) freeze(ctx context.Context) error {
	return r.step(ctx, stepFreeze, PointFrozen, func() error {
		if err := r.markFrozen(ctx, &r.job.Frozen, &r.job.FrozenAt); err != nil {
			return err
		}
		return r.fenced(ctx, r.job.From, func(tx pgx.Tx) error {
			_, err := shard.SetWritableRanges(ctx, tx, r.job.AllRanges(), false, r.job.RingVersionBefore)
			return err
		})
	})
}

// markFrozen records the start of the write block before the freeze, so
// that a crash during the freeze cannot make the block look shorter than
// it was: the time measured is never less than the time writes waited.
func (r *run) markFrozen(ctx context.Context, frozen *bool, at *time.Time) error {
	if *frozen {
		return nil
	}
	*frozen, *at = true, time.Now().UTC()
	return r.save(ctx)
}

// handOver ends every strategy's cutover. The origin stops serving the
// moving vnodes, reads included, before any destination takes a write, so
// no reader can see the old copy after a new write; then the destinations
// take writes (the write block ends), the ring flips and the routers follow.
func (r *run) handOver(ctx context.Context) error {
	j := r.job
	if err := r.step(ctx, stepDisowned, PointDisowned, func() error {
		if err := r.recordBackLSN(ctx); err != nil {
			return err
		}
		return r.fenced(ctx, j.From, func(tx pgx.Tx) error { return shard.DisownRanges(ctx, tx, j.AllRanges()) })
	}); err != nil {
		return err
	}
	if err := r.step(ctx, stepWritable, PointWritable, func() error {
		if err := r.eachMove(ctx, func(_ int, m Move, _ *pgxpool.Pool) error {
			return r.fenced(ctx, m.To, func(tx pgx.Tx) error {
				_, err := shard.SetWritableRanges(ctx, tx, m.Ranges, true, j.RingVersionBefore)
				return err
			})
		}); err != nil {
			return err
		}
		j.WriteBlockMS = float64(time.Since(j.FrozenAt).Microseconds()) / 1000
		return nil
	}); err != nil {
		return err
	}
	if err := r.step(ctx, stepRing, PointFlipped, func() error {
		v, err := r.remapRing(ctx, false)
		if err != nil {
			return err
		}
		j.RingVersionAfter = v
		if j.FlippedAt.IsZero() {
			j.FlippedAt = time.Now().UTC()
		}
		return nil
	}); err != nil {
		return err
	}
	return r.step(ctx, stepRouters, PointRouted, func() error { return r.waitRouters(ctx, j.RingVersionAfter) })
}

// remapRing publishes the ring with the moving vnodes on their new pnodes,
// or back on the origin, fenced like every etcd write of the job, and
// returns its version. It is idempotent: a ring that already maps them
// there is left alone.
func (r *run) remapRing(ctx context.Context, back bool) (int64, error) {
	j := r.job
	ts := make([]ring.Transfer, 0, len(j.Moves))
	for _, m := range j.Moves {
		t := ring.Transfer{From: j.From, To: m.To, Vnodes: m.Vnodes}
		if back {
			t.From, t.To = m.To, j.From
		}
		ts = append(ts, t)
	}
	rg, rv, err := r.o.rings.Current(ctx)
	if err != nil {
		return 0, err
	}
	// Stored as the moved ranges: the flip of a 1,000,000-vnode ring
	// writes, and each router reads, a few bytes, not the whole ring.
	d, err := rg.TransferDelta(ts)
	if err != nil {
		return 0, fatal("%v (moved outside this job)", err)
	}
	if d == nil {
		return rv.Version, nil
	}
	what := "reshard " + j.ID
	if back {
		what = "revert " + j.ID
	}
	nv, err := r.o.rings.PutDelta(ctx, rg, rv, d, what)
	if err != nil {
		return 0, err
	}
	return nv.Version, nil
}

// waitRouters waits until every registered router serves ring version
// want or later. A router that does not is still safe (the fence refuses
// its writes); after RouterWait the job goes on and records a warning.
func (r *run) waitRouters(ctx context.Context, want int64) error {
	deadline := time.Now().Add(r.o.RouterWait)
	return r.waitFor(ctx, 20*time.Millisecond, 0, "routers", func() (bool, error) {
		rs, err := etcd.Routers(ctx, r.o.cli)
		if err != nil {
			return false, err
		}
		var behind []string
		for _, rt := range rs {
			if rt.RingVersion < want {
				behind = append(behind, rt.Name)
			}
		}
		if len(behind) == 0 {
			return true, nil
		}
		if time.Now().After(deadline) {
			r.job.Warnings = append(r.job.Warnings, fmt.Sprintf("routers %v did not report ring version %d within %s", behind, want, r.o.RouterWait))
			return true, nil
		}
		return false, r.progress(ctx, Progress{Done: int64(len(rs) - len(behind)), Total: int64(len(rs)), Unit: "routers"})
	})
}
