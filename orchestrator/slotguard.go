package orchestrator

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/reshard/reshard/shard"
)

// A replication slot keeps every byte of WAL its subscriber has not yet
// confirmed: a destination that stops consuming, or a copy that takes
// days, fills the origin's disk (and with it every write of the shard).
// The job watches the WAL its slots retain against MaxSlotLagBytes, its
// budget. Before the flip, past the budget the job pauses (it starts no
// new phase, so it does not go on to the cutover with a backlog; stopping
// PostgreSQL's copy would only keep the slot where it is), and past twice
// the budget it aborts, dropping its slots, and says why. After the flip
// the way back's slots on the destinations are held to the same limit:
// past twice the budget the way back is closed and the job completes.

// slotCheckEvery bounds how often the job measures its slots.
const slotCheckEvery = 2 * time.Second

// defaultSlotBudget is the budget when the origin's free disk cannot be
// measured.
const defaultSlotBudget = 8 << 30

// slotGuard is a run's view of its slots' WAL.
type slotGuard struct {
	checked time.Time
	paused  string // why the job pauses, "" when it does not
	wayBack string // why the way back must close, "" when it need not
}

// checkSlots measures the job's slots, at most every slotCheckEvery, and
// returns ErrAborted (with the reason in the job) past the hard limit
// before the flip.
func (r *run) checkSlots(ctx context.Context) error {
	j := r.job
	if j.MaxSlotLagBytes <= 0 || time.Since(r.slots.checked) < slotCheckEvery {
		return nil
	}
	r.slots.checked = time.Now()
	budget, hard := j.MaxSlotLagBytes, 2*j.MaxSlotLagBytes
	if !j.FlipDone() {
		worst, err := r.forwardRetention(ctx)
		if err != nil || worst.Slot == "" {
			return r.setPaused(ctx, "") // a server that does not answer is the phases' concern
		}
		switch {
		case worst.Bytes > hard:
			j.Error = fmt.Sprintf("slot %s on %s retained %s of WAL, past twice --max-slot-lag-bytes (%s): the job aborted and dropped its slots",
				worst.Slot, j.From, humanSize(worst.Bytes), humanSize(hard))
			j.Warnings, j.Paused = append(j.Warnings, j.Error), ""
			r.o.log.Warn("slot over its hard limit: aborting", "job", j.ID, "slot", worst.Slot, "bytes", worst.Bytes)
			return fmt.Errorf("%w: %s", ErrAborted, j.Error)
		case worst.Bytes > budget:
			return r.setPaused(ctx, fmt.Sprintf("paused: slot %s on %s retains %s of WAL, over --max-slot-lag-bytes %s; the job goes on when it drains, and aborts at %s",
				worst.Slot, j.From, humanSize(worst.Bytes), humanSize(budget), humanSize(hard)))
		}
		return r.setPaused(ctx, "")
	}
	if !j.wayBackOpen() {
		return nil
	}
	var worst shard.SlotRetention
	var where string
	if err := r.eachMove(ctx, func(i int, m Move, dst *pgxpool.Pool) error {
		rs, err := shard.RetainedWAL(ctx, dst, []string{backName(j, i)}, nil)
		if err == nil && len(rs) > 0 && rs[0].Bytes > worst.Bytes {
			worst, where = rs[0], m.To
		}
		return nil
	}); err != nil {
		return nil
	}
	if worst.Bytes > hard {
		r.slots.wayBack = fmt.Sprintf("the way back's slot %s on %s retained %s of WAL, past twice --max-slot-lag-bytes (%s): the way back was closed and the job completed",
			worst.Slot, where, humanSize(worst.Bytes), humanSize(hard))
	}
	return nil
}

// setPaused records why the job pauses (or that it does not), in the job
// for status when it changes.
func (r *run) setPaused(ctx context.Context, why string) error {
	r.slots.paused = why
	if r.job.Paused == why {
		return nil
	}
	r.job.Paused = why
	if err := r.save(ctx); lostJob(err) {
		return err
	}
	return nil
}

// forwardRetention is the worst of the copy's slots on the origin: each
// move's slot and its table copies' slots.
func (r *run) forwardRetention(ctx context.Context) (shard.SlotRetention, error) {
	j := r.job
	origin, err := r.pool(ctx, j.From)
	if err != nil {
		return shard.SlotRetention{}, err
	}
	var names []string
	var oids []uint32
	for i := range j.Moves {
		names = append(names, pubName(j, i))
		if oid, ok := j.SubscriptionOIDs[i]; ok {
			oids = append(oids, oid)
		}
	}
	rs, err := shard.RetainedWAL(ctx, origin, names, oids)
	if err != nil || len(rs) == 0 {
		return shard.SlotRetention{}, err
	}
	return rs[0], nil
}

// waitSlotsDrain holds the job before a phase while its slots retain more
// WAL than the budget, showing why; an abort or the hard limit ends it.
func (r *run) waitSlotsDrain(ctx context.Context) error {
	if r.job.FlipDone() {
		return nil
	}
	if err := r.checkSlots(ctx); err != nil {
		return err
	}
	for r.slots.paused != "" {
		if err := r.progress(ctx, Progress{Unit: "paused", Note: r.slots.paused}); err != nil {
			return err
		}
		if err := r.pause(ctx, time.Second); err != nil {
			return err
		}
	}
	return nil
}
