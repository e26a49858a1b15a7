// Package router is electric-moray's role: a stateless service that routes
// each object operation by the ring to the shard that owns the key's vnode,
// follows ring changes through an etcd watch, and retries on its own when a
// shard fences a vnode that is moving, so clients never see the move.
package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/reshard/reshard"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/ring"
	"github.com/reshard/reshard/shard"
	"github.com/reshard/reshard/trigger"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Config configures a router.
type Config struct {
	Etcd *clientv3.Client
	// Name identifies the router in etcd; URL is where clients reach it.
	Name, URL string
	// Token, when set, must come as "Authorization: Bearer TOKEN".
	Token string
	// MaxBody limits a request body; MaxKey a key's length in bytes.
	MaxBody int64
	MaxKey  int
	// RetryFor bounds how long an operation on a fenced vnode is retried
	// while the router waits for the ring to move on.
	RetryFor time.Duration
	// PoolSize is the number of connections kept to each shard's primary.
	PoolSize int32
	// CrossShardFind is what findObjects does with a find that names
	// neither options.hashkey nor options.token: CrossShardRefuse ("" too)
	// answers as electric-moray does, CrossShardGather runs it on every
	// shard and merges the answers.
	CrossShardFind string
	Log            *slog.Logger
}

func (c *Config) defaults() {
	if c.MaxBody == 0 {
		c.MaxBody = 1 << 20
	}
	if c.MaxKey == 0 {
		c.MaxKey = 1024
	}
	if c.RetryFor == 0 {
		c.RetryFor = 15 * time.Second
	}
	if c.PoolSize == 0 {
		c.PoolSize = 16
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

// view is one ring version; lookups read it without locks.
type view struct {
	ring    *ring.Ring
	version int64
	// bitmaps caches, per pnode, the vnodes this version maps to it as a
	// gathered find filters rows by them (view.ringVnodes).
	bitmaps sync.Map
}

// Router routes object operations by the ring.
type Router struct {
	cfg     Config
	rings   *etcd.RingStore
	reg     *etcd.Registry
	buckets *etcd.Buckets
	lease   *etcd.RouterLease
	metrics *metrics

	cur     atomic.Pointer[view]
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every new ring version
	pools   map[string]shardPool
	opts    sync.Map // bucket name -> cachedOptions
	// listeners holds the running listen RPCs by request id, for unlisten.
	listeners sync.Map // req_id -> *listener
}

// New creates a router; Run starts it following the ring.
func New(cfg Config) *Router {
	cfg.defaults()
	r := &Router{
		cfg:     cfg,
		rings:   etcd.NewRingStore(cfg.Etcd),
		reg:     etcd.NewRegistry(cfg.Etcd),
		buckets: etcd.NewBuckets(cfg.Etcd),
		changed: make(chan struct{}),
		pools:   map[string]shardPool{},
		metrics: newMetrics(),
	}
	r.lease = etcd.NewRouterLease(cfg.Etcd, etcd.RouterInfo{Name: cfg.Name, URL: cfg.URL}, 10*time.Second)
	return r
}

// Run follows the ring and keeps the router registered until ctx ends.
func (r *Router) Run(ctx context.Context) {
	go r.lease.Run(ctx, func(err error) { r.cfg.Log.Warn("router registration", "err", err) })
	go r.followRegistry(ctx)
	for ctx.Err() == nil {
		for u := range r.rings.Watch(ctx) {
			if u.Err != nil {
				if !errors.Is(u.Err, etcd.ErrNoRing) {
					r.cfg.Log.Warn("ring watch", "err", u.Err)
				}
				continue
			}
			if r.apply(ctx, u) {
				r.cfg.Log.Info("ring version applied", "version", u.Version.Version, "vnodes", u.Ring.Vnodes(),
					"pnodes", len(u.Ring.Pnodes()), "stored", u.Version.Stored(), "load_ms", float64(u.Load.Microseconds())/1000)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	r.mu.Lock()
	for _, p := range r.pools {
		p.Close()
	}
	r.pools = map[string]shardPool{}
	r.mu.Unlock()
}

// apply makes a ring version current; older versions never replace newer.
// It reports whether the version was applied. Its metrics are set before
// the router reports the version, so whoever sees the report reads them.
func (r *Router) apply(ctx context.Context, u etcd.RingUpdate) bool {
	version := u.Version.Version
	if cur := r.cur.Load(); cur != nil && cur.version >= version {
		return false
	}
	r.metrics.ringLoad.Set(u.Load.Seconds())
	r.metrics.ringBytes.Set(float64(u.Version.Size))
	r.cur.Store(&view{ring: u.Ring, version: version})
	r.mu.Lock()
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	r.metrics.ringVersion.Set(float64(version))
	if err := r.lease.SetRingVersion(ctx, version); err != nil {
		r.cfg.Log.Warn("record ring version", "version", version, "err", err)
	}
	return true
}

// RingVersion is the version the router serves (0: none yet).
func (r *Router) RingVersion() int64 {
	if v := r.cur.Load(); v != nil {
		return v.version
	}
	return 0
}

// WaitRing waits until the router has a ring, or ctx ends.
func (r *Router) WaitRing(ctx context.Context) error {
	for r.RingVersion() == 0 {
		r.mu.Lock()
		ch := r.changed
		r.mu.Unlock()
		if r.RingVersion() > 0 {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ErrNoRing
		}
	}
	return nil
}

// waitRing waits up to d for a ring version newer than seen.
func (r *Router) waitRing(ctx context.Context, seen int64, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		r.mu.Lock()
		ch := r.changed
		r.mu.Unlock()
		if r.RingVersion() > seen {
			return
		}
		select {
		case <-ch:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// shardPool is a pool to a pnode's primary and the DSN it was made for.
type shardPool struct {
	*pgxpool.Pool
	dsn string
}

// pool returns the connection pool for a pnode's primary.
func (r *Router) pool(ctx context.Context, pnode string) (*pgxpool.Pool, error) {
	r.mu.Lock()
	p := r.pools[pnode]
	r.mu.Unlock()
	if p.Pool != nil {
		return p.Pool, nil
	}
	primary, err := r.reg.Primary(ctx, pnode)
	if err != nil {
		return nil, err
	}
	return r.openPool(ctx, pnode, primary.DSN)
}

// openPool makes pnode's pool to dsn, unless another request made one
// first, and returns the pool in use.
func (r *Router) openPool(ctx context.Context, pnode, dsn string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("pnode %s: invalid DSN %s", pnode, postgres.RedactDSN(dsn))
	}
	// Every connection opens at once, in the background (followRegistry).
	cfg.MaxConns, cfg.MinConns = r.cfg.PoolSize, r.cfg.PoolSize
	np, err := pgxpool.NewWithConfig(context.WithoutCancel(ctx), cfg)
	if err != nil {
		return nil, fmt.Errorf("pnode %s: %s", pnode, postgres.RedactDSN(err.Error()))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if q := r.pools[pnode]; q.Pool != nil {
		np.Close()
		return q.Pool, nil
	}
	r.pools[pnode] = shardPool{Pool: np, dsn: dsn}
	return np, nil
}

// followRegistry keeps a full pool for every registered pnode, opened when
// the pnode is registered. A move's destination is registered before its
// cutover flips the ring to it; without this, the first requests after the
// flip each opened a connection, a new PostgreSQL backend, inside the
// cutover (measured with 'bench compare --only write-block': a first
// split's writes to the moving vnodes waited about 500 ms for 16 backends
// starting at once on 2 cores). A pnode whose registered primary changed
// gets a new pool, and one no longer registered loses its pool.
func (r *Router) followRegistry(ctx context.Context) {
	for ctx.Err() == nil {
		for pnodes := range r.reg.Watch(ctx) {
			r.syncPools(ctx, pnodes)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (r *Router) syncPools(ctx context.Context, pnodes []reshard.Pnode) {
	registered := map[string]string{}
	for _, p := range pnodes {
		if pr, err := p.Primary(); err == nil {
			registered[p.Name] = pr.DSN
		}
	}
	var stale []shardPool
	r.mu.Lock()
	for name, p := range r.pools {
		if dsn, ok := registered[name]; !ok || dsn != p.dsn {
			stale = append(stale, p)
			delete(r.pools, name)
		}
	}
	r.mu.Unlock()
	// A request that took a stale pool gets ErrClosedPool, which is
	// retried (nothing was sent) on the pool made again from the registry.
	for _, p := range stale {
		p.Close()
	}
	for name, dsn := range registered {
		r.mu.Lock()
		open := r.pools[name].Pool != nil
		r.mu.Unlock()
		if open {
			continue
		}
		if _, err := r.openPool(ctx, name, dsn); err != nil && ctx.Err() == nil {
			r.cfg.Log.Warn("open pool", "pnode", name, "err", err)
		}
	}
}

// checkPrimary drops a pnode's pool when the registry names another
// primary than the one it connects to (a takeover, or a pnode removed and
// made again by a revert and a new split), so the next attempt connects
// to the new one. A router that cannot connect asks it.
func (r *Router) checkPrimary(ctx context.Context, pnode string) {
	primary, err := r.reg.Primary(ctx, pnode)
	if err != nil {
		return
	}
	r.mu.Lock()
	p := r.pools[pnode]
	if p.Pool == nil || p.dsn == primary.DSN {
		r.mu.Unlock()
		return
	}
	delete(r.pools, pnode)
	r.mu.Unlock()
	r.cfg.Log.Info("pnode has a new primary; reconnecting", "pnode", pnode)
	p.Close()
}

type cachedOptions struct {
	opts shard.BucketOptions
	at   time.Time
}

// bucketOptions reads a bucket's options. How a bucket hashes never
// changes, so routing may use a cached copy of any age; maxAge bounds it
// for callers that need the current index definitions.
func (r *Router) bucketOptions(ctx context.Context, bucket string, maxAge ...time.Duration) (shard.BucketOptions, error) {
	if c, ok := r.opts.Load(bucket); ok {
		c := c.(cachedOptions)
		if len(maxAge) == 0 || time.Since(c.at) < maxAge[0] {
			return c.opts, nil
		}
	}
	var o shard.BucketOptions
	if err := r.buckets.Get(ctx, bucket, &o); err != nil {
		return o, err
	}
	r.opts.Store(bucket, cachedOptions{opts: o, at: time.Now()})
	return o, nil
}

// mantaRoot is a Manta account's storage root, which electric-moray hashes
// whole rather than by its parent "/UUID".
var mantaRoot = regexp.MustCompile(`^/[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}/stor$`)

// HashKey is the part of a key that is hashed, as electric-moray
// transforms keys. With HashDir (the "manta" bucket) it is the parent
// directory, so a directory's entries share a vnode: "/u/stor/a/b" hashes
// "/u/stor/a", "/x" hashes "/", and an account root "/UUID/stor" hashes
// itself. With HashUpload ("manta_uploads", keys "ID:PATH") it is PATH's
// parent directory.
func HashKey(key string, opts shard.BucketOptions) string {
	switch {
	case opts.HashUpload:
		if _, p, ok := strings.Cut(key, ":"); ok {
			return dirnameOrKey(p)
		}
	case opts.HashDir:
		return dirnameOrKey(key)
	}
	return key
}

func dirnameOrKey(key string) string {
	if mantaRoot.MatchString(key) {
		return key
	}
	if d := nodeDirname(key); d != "." {
		return d
	}
	return key
}

// nodeDirname is Node's path.posix.dirname, which differs from path.Dir:
// it does not clean, so "a//b" gives "a/" and "/a/b/" gives "/a".
func nodeDirname(p string) string {
	if p == "" {
		return "."
	}
	hasRoot := p[0] == '/'
	end := -1
	matchedSlash := true
	for i := len(p) - 1; i >= 1; i-- {
		if p[i] == '/' {
			if !matchedSlash {
				end = i
				break
			}
		} else {
			matchedSlash = false
		}
	}
	switch {
	case end == -1 && hasRoot:
		return "/"
	case end == -1:
		return "."
	case hasRoot && end == 1:
		return "//"
	}
	return p[:end]
}

// Served says where an operation ran.
type Served struct {
	Vnode       uint32
	Pnode       string
	RingVersion int64
	Retries     int
	// Trail says, when a request was retried, why each attempt failed and
	// how long it took, for the slow-request log.
	Trail []string
}

var (
	// ErrNoRing: the router has no ring yet.
	ErrNoRing = errors.New("the router has no ring yet")
	// ErrStillFenced: the vnode stayed fenced past the retry deadline.
	ErrStillFenced = errors.New("the vnode is being moved; retry later")
	// ErrOutcomeUnknown: the connection failed after the write was sent, so
	// it may or may not have committed. Never retried silently.
	ErrOutcomeUnknown = errors.New("the shard connection failed during the write; its outcome is unknown")
)

// route runs op against the shard that owns key, retrying while the vnode
// is fenced (frozen or moved) or read-only in the ring, until the ring
// moves on or RetryFor passes.
func (r *Router) route(ctx context.Context, opName, bucket, key string, write bool,
	op func(ctx context.Context, p *pgxpool.Pool, vnode int32) error) (Served, error) {
	opts, err := r.bucketOptions(ctx, bucket)
	if err != nil {
		return Served{}, err
	}
	return r.routeHash(ctx, opName, HashKey(key, opts), write, op)
}

// routeHash is route for a key already transformed for hashing.
func (r *Router) routeHash(ctx context.Context, opName, hk string, write bool,
	op func(ctx context.Context, p *pgxpool.Pool, vnode int32) error) (Served, error) {
	deadline := time.Now().Add(r.cfg.RetryFor)
	backoff := 5 * time.Millisecond
	var s Served
	for {
		v := r.cur.Load()
		if v == nil {
			return s, ErrNoRing
		}
		loc := v.ring.LocateString(hk)
		s.Vnode, s.Pnode, s.RingVersion = loc.Vnode, loc.Pnode, v.version
		var err error
		sent := false
		attempt := time.Now()
		if write && isReadOnly(loc.Data) {
			err = errReadOnly
		} else if p, perr := r.pool(ctx, loc.Pnode); perr != nil {
			err = perr
		} else {
			sent = true
			err = op(ctx, p, int32(loc.Vnode))
		}
		reason := retryReason(err)
		if reason == "shutdown" && write {
			reason = "" // the server went away mid-write: it may have committed
		}
		if s.Retries > 0 || reason != "" {
			what := reason
			if what == "" {
				what = "answered"
			}
			s.Trail = append(s.Trail, fmt.Sprintf("%s on %s in %d ms", what, loc.Pnode, time.Since(attempt).Milliseconds()))
		}
		if reason == "" {
			if sent && write && err != nil && ctx.Err() == nil && (!isPgError(err) || isShutdown(err)) && !isDomain(err) {
				return s, fmt.Errorf("%w: %s", ErrOutcomeUnknown, postgres.RedactDSN(err.Error()))
			}
			return s, err
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("%w (vnode %d on %s: %s)", ErrStillFenced, loc.Vnode, loc.Pnode, reason)
		}
		if reason == "connect" {
			r.checkPrimary(ctx, loc.Pnode)
		}
		s.Retries++
		r.metrics.retries.WithLabelValues(opName, reason).Inc()
		r.waitRing(ctx, v.version, backoff)
		if ctx.Err() != nil {
			return s, ctx.Err()
		}
		if backoff < 200*time.Millisecond {
			backoff *= 2
		}
	}
}

var errReadOnly = errors.New("vnode is read-only in the ring")

func isReadOnly(data []byte) bool { return string(data) == `"ro"` }

// retryReason says why an attempt may be retried, or "" if it may not.
func retryReason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, errReadOnly):
		return "read_only"
	case shard.IsFrozen(err):
		return "frozen"
	case shard.IsFenced(err):
		return "not_owned"
	case postgres.NotSent(err):
		return "connect" // the request never reached the server
	case isShutdown(err):
		return "shutdown" // a read on a server that is restarting
	}
	return ""
}

// isShutdown: the server is shutting down, restarting, or refusing
// connections for now (SQLSTATE class 57P).
func isShutdown(err error) bool {
	return postgres.IsShutdown(err)
}

func isPgError(err error) bool {
	return postgres.IsServerError(err)
}

// isDomain: answers the shard gave, not failures.
func isDomain(err error) bool {
	var ite *shard.IndexTypeError
	// A trigger's error fails the write before its commit is sent.
	var te *trigger.Error
	// A value the codec refuses is refused before anything is sent.
	return errors.Is(err, shard.ErrObjectNotFound) || errors.Is(err, shard.ErrEtagMismatch) || errors.As(err, &ite) ||
		errors.As(err, &te) || errors.Is(err, shard.ErrBadValue)
}
