package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/shard"
)

// Abort asks a job to stop and undo itself. Before the ring flips it is
// undone completely; after, abort is refused: the job reverts or completes.
func (o *Orchestrator) Abort(ctx context.Context, id string) error {
	j, err := o.store.Get(ctx, id)
	if err != nil {
		return err
	}
	switch {
	case j.State == Done || j.State == Aborted:
		return fmt.Errorf("job %s is already %s", id, j.State)
	case j.FlipDone():
		return fmt.Errorf("job %s has flipped the ring (version %d): 'reshard revert %s' goes back, 'reshard complete %s' finishes it", id, j.RingVersionAfter, id, id)
	}
	if err := o.store.jobs.Request(ctx, etcd.Abort, id); err != nil {
		return err
	}
	// If no orchestrator runs the job, undo it here; if one does, it sees
	// the request and undoes it, and this waits for it to finish.
	err = o.Run(ctx, id)
	if errors.Is(err, ErrAborted) {
		return nil
	}
	if err == nil {
		return fmt.Errorf("job %s finished before the abort took effect", id)
	}
	return err
}

// checkAbort returns ErrAborted when an abort was asked for before the ring
// flipped; long waits call it so an abort does not wait for them.
func (r *run) checkAbort(ctx context.Context) error {
	if r.job.FlipDone() || time.Since(r.abortChecked) < time.Second {
		return nil
	}
	r.abortChecked = time.Now()
	if asked, err := r.o.store.jobs.Requested(ctx, etcd.Abort, r.job.ID); err == nil && asked {
		return ErrAborted
	}
	return nil
}

// abort undoes a job that has not flipped the ring: the origin owns and
// serves its vnodes again at once, then the strategy removes its work, and
// nothing of the job is left on any side.
func (r *run) abort(ctx context.Context) error {
	j := r.job
	if j.FlipDone() {
		return fmt.Errorf("job %s has flipped the ring; it can only finish", j.ID)
	}
	j.State = Aborting
	if err := r.save(ctx); err != nil {
		return err
	}
	all, err := allMoving(j)
	if err != nil {
		return err
	}
	if err := r.fenced(ctx, j.From, func(tx pgx.Tx) error { return shard.Own(ctx, tx, all, true, j.RingVersionBefore) }); err != nil {
		return err
	}
	j.Frozen = false
	if err := r.strat.Undo(ctx, r); err != nil {
		return err
	}
	return r.finishAbort(ctx)
}

// finishAbort releases the job's locks and records it aborted.
func (r *run) finishAbort(ctx context.Context) error {
	j := r.job
	if err := etcd.ReleaseDumpLock(ctx, r.o.cli, j.holder()); err != nil {
		return err
	}
	if err := r.releaseDumpZnode(ctx); err != nil {
		return err
	}
	j.State, j.Current = Aborted, ""
	for i := range j.Phases {
		if j.Phases[i].State == Running {
			j.Phases[i].State = Aborted
		}
	}
	if err := r.save(ctx); err != nil {
		return err
	}
	if err := r.o.store.ReleasePnodes(ctx, j); err != nil {
		return err
	}
	if err := r.o.store.jobs.ClearRequest(ctx, etcd.Abort, j.ID); err != nil {
		return err
	}
	return ErrAborted
}
