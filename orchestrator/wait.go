package orchestrator

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/reshard/reshard/ring"
)

// waitFor polls done every interval until it reports true. It fails naming
// what after limit (none when 0), returns ErrAborted when an abort is asked
// for before the flip, and stops at once when ctx ends.
func (r *run) waitFor(ctx context.Context, every, limit time.Duration, what string, done func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	for {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		if limit > 0 && time.Now().After(deadline) {
			return fmt.Errorf("%s: still not done after %s", what, limit)
		}
		if err := r.pause(ctx, every); err != nil {
			return err
		}
	}
}

// pause waits d between polls, returning early on an abort request or
// when the job's slots retain more WAL than its hard limit (slotguard.go).
func (r *run) pause(ctx context.Context, d time.Duration) error {
	if err := r.checkAbort(ctx); err != nil {
		return err
	}
	if err := r.checkSlots(ctx); err != nil {
		return err
	}
	return sleep(ctx, d)
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// eachMove runs fn for each of the job's moves, in order, with a pool to
// the move's destination.
func (r *run) eachMove(ctx context.Context, fn func(i int, m Move, dst *pgxpool.Pool) error) error {
	for i, m := range r.job.Moves {
		dst, err := r.pool(ctx, m.To)
		if err != nil {
			return err
		}
		if err := fn(i, m, dst); err != nil {
			return err
		}
	}
	return nil
}

// moving lists a move's vnodes as int32 for the ownership functions.
func moving(m Move) ([]int32, error) {
	vs, err := ring.ParseVnodeList(m.Vnodes, 0)
	if err != nil {
		return nil, fatal("%v", err)
	}
	out := make([]int32, len(vs))
	for i, v := range vs {
		out[i] = int32(v)
	}
	return out, nil
}

func allMoving(j *Job) ([]int32, error) {
	var out []int32
	for _, m := range j.Moves {
		vs, err := moving(m)
		if err != nil {
			return nil, err
		}
		out = append(out, vs...)
	}
	return out, nil
}
