package orchestrator

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/reshard/reshard/shard"
)

// subscriptionFailLimit is how long a subscription's workers may keep
// failing, with the copy or catch-up making no progress, before the job
// stops: PostgreSQL retries them every 5 s for ever, and meanwhile the
// origin's slot holds WAL.
const subscriptionFailLimit = 3 * time.Minute

// subWatch follows the failures of each destination's subscription across
// the polls of a wait (copy, catch-up). PostgreSQL 15 keeps a failed
// worker's message only in the destination's log, so when the count rises
// the watch asks the destination to write a little: a full disk answers
// with the same error (disk_full) and the job fails naming it.
type subWatch struct {
	errs    map[int]int64     // per move, the failures counted at the last poll
	failing map[int]time.Time // per move, since when it fails with no progress
}

func newSubWatch() *subWatch {
	return &subWatch{errs: map[int]int64{}, failing: map[int]time.Time{}}
}

// progressed says move i's copy or catch-up moved forward since the last
// poll: failures before this do not count towards the limit.
func (w *subWatch) progressed(i int) { delete(w.failing, i) }

// check reads the failures of move i's subscription, on its destination
// dst, and fails the job when they come from a full disk, or have gone on
// for subscriptionFailLimit with no progress.
func (r *run) checkSubscription(ctx context.Context, w *subWatch, i int, m Move, dst *pgxpool.Pool) error {
	name := pubName(r.job, i)
	n, err := shard.SubscriptionErrors(ctx, dst, name)
	if err != nil {
		return fmt.Errorf("destination %s: %w", m.To, err)
	}
	// A new subscription has none; failures counted before this run
	// (a resumed job) are probed like new ones.
	prev := w.errs[i]
	w.errs[i] = n
	if n <= prev {
		return nil
	}
	if cause := shard.DiskFullCause(shard.ProbeWrite(ctx, dst)); cause != "" {
		return fatal("destination %s cannot write: disk full (%s); its subscription's workers failed %s", m.To, cause, times(n))
	}
	since, ok := w.failing[i]
	if !ok {
		w.failing[i] = time.Now()
		return nil
	}
	if d := time.Since(since); d > subscriptionFailLimit {
		return fatal("destination %s's subscription %s has failed %s in %s without progress; its log says why",
			m.To, name, times(n), d.Round(time.Second))
	}
	return nil
}

func times(n int64) string {
	if n == 1 {
		return "once"
	}
	return fmt.Sprintf("%d times", n)
}
