package orchestrator

import (
	"context"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/shard"
)

// Cleanup deletes, after the flip, the rows each side no longer owns, in
// batches at a pace that follows the foreground (pace.go), each batch a
// fenced transaction: a stale orchestrator's delete is refused like any
// other step.

// cleanupOrigin deletes the moved rows from the origin.
func cleanupOrigin(ctx context.Context, r *run) error {
	return r.cleanup(ctx, cleanupSide{r.job.From, r.job.AllRanges()})
}

// cleanupSplit deletes the moved rows from the origin and, on each new
// shard (a copy of the whole origin), the rows of every vnode it does not own.
func cleanupSplit(ctx context.Context, r *run) error {
	sides := []cleanupSide{{r.job.From, r.job.AllRanges()}}
	for _, to := range r.job.To {
		sides = append(sides, cleanupSide{to, []shard.Range{{Lo: 0, Hi: math.MaxInt32}}})
	}
	return r.cleanup(ctx, sides...)
}

// cleanupSide is a pnode and the ranges whose unowned rows it deletes.
type cleanupSide struct {
	pnode  string
	ranges []shard.Range
}

func (r *run) cleanup(ctx context.Context, sides ...cleanupSide) error {
	j := r.job
	var total int64
	rows := make([]int64, len(sides))
	for i, s := range sides {
		p, err := r.pool(ctx, s.pnode)
		if err != nil {
			return err
		}
		n, err := shard.UnownedRows(ctx, p, j.Buckets, s.ranges)
		if err != nil {
			return err
		}
		rows[i], total = n, total+n
	}
	d := &deleter{r: r, total: total, start: time.Now()}
	for i, s := range sides {
		if err := d.run(ctx, s.pnode, j.Buckets, s.ranges, rows[i]); err != nil {
			return err
		}
	}
	return nil
}

// deleter deletes rows a shard no longer owns in rate-limited batches and
// reports progress over one or more shards.
type deleter struct {
	r       *run
	total   int64
	deleted int64
	start   time.Time
	crashed bool
}

func (d *deleter) run(ctx context.Context, pnode string, buckets []string, ranges []shard.Range, rows int64) error {
	db, err := d.r.pool(ctx, pnode)
	if err != nil {
		return err
	}
	pace, err := d.r.newPacer(ctx, db, rows)
	if err != nil {
		return err
	}
	defer pace.stop()
	for _, b := range buckets {
		for {
			t0 := time.Now()
			var n int64
			if err := d.r.fenced(ctx, pnode, func(tx pgx.Tx) (err error) {
				n, err = shard.DeleteBatch(ctx, tx, b, ranges, pace.batch())
				return err
			}); err != nil {
				return err
			}
			d.deleted += n
			pace.adjust(ctx)
			p := Progress{Done: d.deleted, Total: max(d.total, d.deleted), Unit: "rows deleted", Note: pace.note()}
			if el := time.Since(d.start).Seconds(); el > 0 {
				p.Rate = float64(d.deleted) / el
				if p.Rate > 0 && p.Total > p.Done {
					p.ETASeconds = float64(p.Total-p.Done) / p.Rate
				}
			}
			if err := d.r.progress(ctx, p); err != nil {
				return err
			}
			if !d.crashed && n > 0 {
				d.crashed = true
				d.r.crash(PointMid)
			}
			if n == 0 {
				break
			}
			// Keep to the pace: a batch of n rows takes at least n/pace.
			wait := time.Duration(float64(n)/pace.pace*float64(time.Second)) - time.Since(t0)
			if err := sleep(ctx, max(wait, 0)); err != nil {
				return err
			}
		}
	}
	return nil
}

// deleteAll deletes every row of a bucket in ranges on a pnode, owned or
// not: an aborted job's copy on a destination that never served them. A
// destination without the bucket's table has nothing to delete.
func (r *run) deleteAll(ctx context.Context, pnode, bucket string, ranges []shard.Range) error {
	for {
		var n int64
		err := r.fenced(ctx, pnode, func(tx pgx.Tx) (err error) {
			n, err = shard.DeleteAll(ctx, tx, bucket, ranges, 5000)
			return err
		})
		if postgres.IsUndefinedTable(err) {
			return nil
		}
		if err != nil || n == 0 {
			return err
		}
	}
}
