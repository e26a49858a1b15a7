package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/reshard/reshard"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/shard"
)

// Bucket changes run on every shard, and both front ends share them.
var (
	// ErrBucketExists: a create found the bucket already there.
	ErrBucketExists = errors.New("bucket already exists")
	// ErrBucketsBusy: a reshard is running. A bucket created or changed
	// mid-move would be missing, or differ, on the shard taking vnodes.
	ErrBucketsBusy = errors.New("a reshard is running; bucket changes wait until it ends")
)

// ShardErrors gathers the shards' errors of a bucket change, as
// electric-moray's MultiError does.
type ShardErrors map[string]error

// Unwrap is the shards' errors in pnode order, so errors.Is and
// errors.As see through to them.
func (e ShardErrors) Unwrap() []error {
	pnodes := make([]string, 0, len(e))
	for p := range e {
		pnodes = append(pnodes, p)
	}
	sort.Strings(pnodes)
	out := make([]error, len(pnodes))
	for i, p := range pnodes {
		out[i] = e[p]
	}
	return out
}

func (e ShardErrors) Error() string {
	pnodes := make([]string, 0, len(e))
	for p := range e {
		pnodes = append(pnodes, p)
	}
	sort.Strings(pnodes)
	parts := make([]string, len(pnodes))
	for i, p := range pnodes {
		parts[i] = p + ": " + e[p].Error()
	}
	return fmt.Sprintf("%d of the shards failed: %s", len(e), strings.Join(parts, "; "))
}

// beginChange registers a bucket change and then refuses it if a job holds
// pnodes. The order matters: a job takes its pnodes and then waits for
// registered changes, so one of the two always sees the other.
func (r *Router) beginChange(ctx context.Context) (end func(), err error) {
	id := fmt.Sprintf("%s-%d", r.cfg.Name, time.Now().UnixNano())
	end, err = etcd.BeginBucketChange(ctx, r.cfg.Etcd, id, 10*time.Second)
	if err != nil {
		return nil, err
	}
	locks, err := etcd.PnodeLocks(ctx, r.cfg.Etcd)
	if err != nil {
		end()
		return nil, err
	}
	if len(locks) > 0 {
		end()
		jobs := map[string]bool{}
		for _, j := range locks {
			jobs[j] = true
		}
		names := make([]string, 0, len(jobs))
		for j := range jobs {
			names = append(names, j)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("%w (job %s)", ErrBucketsBusy, strings.Join(names, ", "))
	}
	return end, nil
}

// eachShard runs fn on every registered pnode's primary at once and
// gathers the failures. A shard whose attempt never reached its server is
// tried again for a few seconds; so is one that was restarting (its
// pooled connections end with SQLSTATE 57P01) when fn is idempotent, as
// the bucket changes are.
func (r *Router) eachShard(ctx context.Context, idempotent bool, fn func(ctx context.Context, p *pgxpool.Pool) error) ([]string, error) {
	pnodes, err := r.reg.Pnodes(ctx)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := ShardErrors{}
	names := make([]string, len(pnodes))
	for i, pn := range pnodes {
		names[i] = pn.Name
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := r.onShard(ctx, pn.Name, idempotent, fn)
			if err != nil {
				mu.Lock()
				errs[pn.Name] = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return names, errs
	}
	return names, nil
}

// onShardTries bounds onShard's tries: 40 at 100 ms, about what a
// PostgreSQL restart takes.
const onShardTries = 40

// onShard runs fn on pnode's primary, again while the failure says the
// statement did not run (see eachShard).
func (r *Router) onShard(ctx context.Context, pnode string, idempotent bool, fn func(ctx context.Context, p *pgxpool.Pool) error) error {
	var err error
	for try := 0; try < onShardTries; try++ {
		var p *pgxpool.Pool
		if p, err = r.pool(ctx, pnode); err == nil {
			err = fn(ctx, p)
		}
		reason := retryReason(err)
		if reason != "connect" && !(idempotent && reason == "shutdown") {
			return err
		}
		r.metrics.retries.WithLabelValues("each_shard", reason).Inc()
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
	return err
}

// CreateBucket creates a bucket's table on every shard and then records it
// in etcd, so a bucket is never routable before every shard has its table.
// An existing bucket is an error when exclusive (Moray's createBucket);
// otherwise creating it again with the same hashing is a no-op. Shards
// registered later get the tables from `pnode init` or a reshard.
func (r *Router) CreateBucket(ctx context.Context, name string, opts shard.BucketOptions, exclusive bool) ([]string, error) {
	if err := shard.ValidateBucket(name); err != nil {
		return nil, err
	}
	var old shard.BucketOptions
	err := r.buckets.Get(ctx, name, &old)
	switch {
	case err == nil && (exclusive || !old.SameHashing(opts)):
		return nil, fmt.Errorf("bucket %s: %w", name, ErrBucketExists)
	case err == nil:
		return nil, nil // already there: nothing to change, even mid-reshard
	case !errors.Is(err, reshard.ErrNotFound):
		return nil, err
	}
	end, err := r.beginChange(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	// Every shard gets the same buckets_config row, mtime included.
	opts = opts.WithConfig()
	names, err := r.eachShard(ctx, true, func(ctx context.Context, p *pgxpool.Pool) error {
		err := shard.CreateBucket(ctx, p, name, opts)
		if errors.Is(err, shard.ErrBucketExists) {
			// A shard that has it from an earlier try that stopped
			// half-way; etcd, below, decides whether the bucket is new.
			return nil
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if exclusive {
		err = r.buckets.Create(ctx, name, opts)
		if errors.Is(err, etcd.ErrExists) {
			err = fmt.Errorf("bucket %s: %w", name, ErrBucketExists)
		}
	} else {
		err = r.buckets.Put(ctx, name, opts)
	}
	if err != nil {
		return nil, err
	}
	r.opts.Delete(name)
	return names, nil
}

// UpdateBucket changes a bucket's indexes and metadata on every shard,
// then in etcd. Its hashing cannot change.
func (r *Router) UpdateBucket(ctx context.Context, name string, opts shard.BucketOptions) error {
	var old shard.BucketOptions
	if err := r.buckets.Get(ctx, name, &old); err != nil {
		return err
	}
	if !old.SameHashing(opts) {
		return fmt.Errorf("bucket %s: its hashing cannot change, that would move every key", name)
	}
	opts.ShardLocal = old.ShardLocal // set by pnode init, not by clients
	// Reads must know which fields old rows have not filled yet.
	opts.Config.ReindexActive = shard.NextReindexActive(old, opts)
	end, err := r.beginChange(ctx)
	if err != nil {
		return err
	}
	defer end()
	opts = opts.WithConfig()
	if _, err := r.eachShard(ctx, true, func(ctx context.Context, p *pgxpool.Pool) error {
		return shard.UpdateBucket(ctx, p, name, opts)
	}); err != nil {
		return err
	}
	if err := r.buckets.Put(ctx, name, opts); err != nil {
		return err
	}
	r.opts.Delete(name)
	return nil
}

// DeleteBucket removes the bucket from etcd first, so routers stop routing
// to it, and then drops its tables.
func (r *Router) DeleteBucket(ctx context.Context, name string) error {
	var old shard.BucketOptions
	if err := r.buckets.Get(ctx, name, &old); err != nil {
		return err
	}
	end, err := r.beginChange(ctx)
	if err != nil {
		return err
	}
	defer end()
	if err := r.buckets.Delete(ctx, name); err != nil {
		return err
	}
	r.opts.Delete(name)
	_, err = r.eachShard(ctx, true, func(ctx context.Context, p *pgxpool.Pool) error {
		return shard.DropBucket(ctx, p, name)
	})
	return err
}

// Buckets lists every bucket with its options, read fresh in one request.
func (r *Router) Buckets(ctx context.Context) (map[string]shard.BucketOptions, error) {
	all, err := r.buckets.All(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]shard.BucketOptions, len(all))
	for n, raw := range all {
		var o shard.BucketOptions
		if err := json.Unmarshal(raw, &o); err != nil {
			return nil, fmt.Errorf("bucket %s: %w", n, err)
		}
		r.opts.Store(n, cachedOptions{opts: o, at: time.Now()})
		out[n] = o
	}
	return out, nil
}
