package perf

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/reshard/reshard/ring"
	"github.com/reshard/reshard/shard"
	"golang.org/x/sync/errgroup"
)

// catchUpGoal is issue 21's goal: a subscription drains a backlog at least
// this many times as fast as the origin can write.
const catchUpGoal = 2.0

// CatchUpTarget is a logical subscription to set up, as a split's: the
// origin publishes the bucket's rows in half of its vnodes (one range, as
// a split in half moves), the destination subscribes without a copy.
type CatchUpTarget struct {
	Origin, Dest string // the primaries' DSNs; Dest reaches Origin with Origin's
	OriginPnode  string
	Ring         *ring.Ring
	Bucket       string // on both, made by the router
	Changes      int    // writes on the origin while the subscription is stopped
	Concurrency  int
}

// CatchUpResult is what CatchUp measured.
type CatchUpResult struct {
	Changes      int64   // transactions written on the origin, each one put
	Moving       int64   // of them, in the published range
	WriteSeconds float64 // writing them as fast as the origin takes them
	ApplySeconds float64 // the apply worker's start to the marker after them applied
	StartSeconds float64 // enabling the subscription to its apply worker's start
}

// The replication objects CatchUp makes, named apart from any job's.
const (
	catchUpName = "perf_catchup"
	catchUpJob  = "perfcatchup"
)

// CatchUp builds a backlog and times its draining: with the subscription
// stopped, Changes puts of new keys on the origin's vnodes at Concurrency
// writers (the origin's highest write rate here), then a marker; then the
// subscription starts, and the time until the marker is on the destination
// is the catch-up. The origin decodes every change (the whole table is in
// its WAL) and sends those of the published range.
func CatchUp(ctx context.Context, t CatchUpTarget) (CatchUpResult, error) {
	var res CatchUpResult
	origin, err := pgxpool.New(ctx, t.Origin)
	if err != nil {
		return res, err
	}
	defer origin.Close()
	dest, err := pgxpool.New(ctx, t.Dest)
	if err != nil {
		return res, err
	}
	defer dest.Close()
	var owned []uint32
	for v := range uint32(t.Ring.Vnodes()) {
		if p, _, _ := t.Ring.Vnode(v); p == t.OriginPnode {
			owned = append(owned, v)
		}
	}
	if len(owned) < 2 {
		return res, fmt.Errorf("%s owns %d vnodes: too few to publish half", t.OriginPnode, len(owned))
	}
	half := owned[len(owned)/2:]
	published := shard.Range{Lo: int32(half[0]), Hi: int32(half[len(half)-1])}
	cleanup := func() {
		ctx := context.WithoutCancel(ctx)
		shard.DropSubscription(ctx, dest, catchUpName)
		shard.DropSlot(ctx, origin, catchUpName)
		shard.DropPublication(ctx, origin, catchUpName)
		shard.DropMarkers(ctx, origin, catchUpJob)
		shard.DropMarkers(ctx, dest, catchUpJob)
	}
	cleanup()
	defer cleanup()
	if err := shard.CreatePublication(ctx, origin, catchUpName, catchUpJob, []string{t.Bucket}, []shard.Range{published}); err != nil {
		return res, err
	}
	if err := shard.CreateSlot(ctx, origin, catchUpName); err != nil {
		return res, err
	}
	if err := shard.CreateSubscription(ctx, dest, catchUpName, t.Origin, catchUpName, false); err != nil {
		return res, err
	}
	if err := shard.SetSubscriptionEnabled(ctx, dest, catchUpName, false); err != nil {
		return res, err
	}
	if err := waitApplying(ctx, dest, false); err != nil {
		return res, err
	}

	// The keys: new ones, on the origin's vnodes.
	value := []byte(`{"size": 1024, "owner": "5884dd74-949a-40ec-8d13-dd3151897343", "type": "object"}`)
	type put struct {
		key   string
		vnode int32
	}
	puts := make([]put, 0, t.Changes)
	for i := 0; len(puts) < t.Changes; i++ {
		key := "c" + strconv.Itoa(i)
		loc := t.Ring.LocateString(key)
		if loc.Pnode != t.OriginPnode {
			continue
		}
		if int32(loc.Vnode) >= published.Lo && int32(loc.Vnode) <= published.Hi {
			res.Moving++
		}
		puts = append(puts, put{key, int32(loc.Vnode)})
	}
	var next atomic.Int64
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	for range t.Concurrency {
		g.Go(func() error {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(puts)) {
					return nil
				}
				p := puts[i]
				if _, err := shard.PutObject(gctx, origin, t.Bucket, shard.BucketOptions{}, shard.Object{Key: p.key, Value: value, Vnode: p.vnode}, ""); err != nil {
					return err
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return res, fmt.Errorf("write the backlog: %w", err)
	}
	res.WriteSeconds = time.Since(start).Seconds()
	res.Changes = int64(len(puts))
	if err := shard.PutMarker(ctx, origin, catchUpJob, "drained"); err != nil {
		return res, err
	}

	enabled := time.Now()
	if err := shard.SetSubscriptionEnabled(ctx, dest, catchUpName, true); err != nil {
		return res, err
	}
	// PostgreSQL's launcher starts an apply worker for a subscription at
	// most once per wal_retrieve_retry_interval (5 s): the drain is timed
	// from the worker's start, the wait for it is kept apart.
	if err := waitApplying(ctx, dest, true); err != nil {
		return res, err
	}
	start = time.Now()
	res.StartSeconds = start.Sub(enabled).Seconds()
	for {
		ok, err := shard.HasMarker(ctx, dest, catchUpJob, "drained")
		if err != nil {
			return res, err
		}
		if ok {
			break
		}
		if time.Since(start) > 10*time.Minute {
			return res, fmt.Errorf("the backlog did not drain in 10 minutes")
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	res.ApplySeconds = time.Since(start).Seconds()
	// Every published change arrived: the destination has the range's rows.
	n, err := shard.RowCount(ctx, dest, []string{t.Bucket}, []shard.Range{published})
	if err != nil {
		return res, err
	}
	if n < res.Moving {
		return res, fmt.Errorf("the destination has %d rows of the range after the marker, want at least %d", n, res.Moving)
	}
	return res, nil
}

// waitApplying waits until the subscription's apply worker runs, or no
// longer does, for up to a minute.
func waitApplying(ctx context.Context, dest *pgxpool.Pool, want bool) error {
	for start := time.Now(); ; time.Sleep(2 * time.Millisecond) {
		on, err := shard.SubscriptionApplying(ctx, dest, catchUpName)
		if err != nil || on == want {
			return err
		}
		if time.Since(start) > time.Minute {
			return fmt.Errorf("the subscription's apply worker: still running %v after a minute", on)
		}
	}
}

// Result is the catch-up as a comparison: changes drained per second
// against changes written per second.
func (r CatchUpResult) Result(vnodes int) Result {
	res := Faster("catch-up", fmt.Sprintf("backlog drained, %d vnodes", vnodes), "the origin's write rate", "changes/s",
		float64(r.Changes)/r.ApplySeconds, float64(r.Changes)/r.WriteSeconds, catchUpGoal)
	res.Detail = fmt.Sprintf("%d changes (%d published) written in %.2f s, drained in %.2f s once the apply worker ran (%.2f s after the subscription was enabled)",
		r.Changes, r.Moving, r.WriteSeconds, r.ApplySeconds, r.StartSeconds)
	return res
}
