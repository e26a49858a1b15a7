package load

import (
	"context"
	"fmt"
	"sort"

	"github.com/jackc/pgx/v5"
	"github.com/reshard/reshard"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/ring"
	"github.com/reshard/reshard/router"
	"github.com/reshard/reshard/shard"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Report is what verify found.
type Report struct {
	RingVersion int64 `json:"ring_version"`
	Keys        int   `json:"keys"`
	Checked     int   `json:"checked"`
	// Missing: the last acknowledged write was a put, and the owner has no row.
	Missing int `json:"missing"`
	// Stale: the owner holds another value than the last acknowledged
	// write, or a row for a key whose last acknowledged write deleted it.
	Stale int `json:"stale"`
	// Misplaced: live rows on a shard that the ring does not map their vnode to.
	Misplaced int `json:"misplaced"`
	// Kept: such rows that an unfinished job keeps after its flip (its way
	// back, or its cleanup to come): expected, not misplaced.
	Kept int `json:"kept"`
	// Ambiguous: keys whose last write has an unknown outcome; either
	// outcome is accepted, and the key is not counted as missing or stale.
	Ambiguous int `json:"ambiguous"`
	// Examples of problems, a few of each kind, for the operator.
	Examples []string `json:"examples,omitempty"`
}

// OK reports whether nothing is missing, stale or misplaced.
func (r Report) OK() bool { return r.Missing == 0 && r.Stale == 0 && r.Misplaced == 0 }

type keyState struct {
	bucket, key string
	// The last acknowledged state: present with etag, or absent.
	present bool
	etag    string
	known   bool // some acknowledged write exists
	// An unknown-outcome write after it.
	maybe        bool
	maybePresent bool
}

// Kept reports whether an unfinished job keeps a vnode's rows on a pnode
// although the ring maps the vnode elsewhere. nil keeps none.
type Kept func(pnode string, vnode uint32) bool

// Verify checks every key of the ledger against the shard that owns it by
// the current ring, reading the primaries directly, and counts rows that
// sit on shards the ring does not map their vnode to, apart from those kept.
func Verify(ctx context.Context, cli *clientv3.Client, entries []Entry, kept Kept) (Report, error) {
	rg, rv, err := etcd.NewRingStore(cli).Current(ctx)
	if err != nil {
		return Report{}, err
	}
	rep := Report{RingVersion: rv.Version}
	keys := map[[2]string]*keyState{}
	for _, e := range entries {
		id := [2]string{e.Bucket, e.Key}
		ks := keys[id]
		if ks == nil {
			ks = &keyState{bucket: e.Bucket, key: e.Key}
			keys[id] = ks
		}
		if e.Status == Acked {
			ks.present, ks.etag, ks.known, ks.maybe = e.Op == "put", e.Etag, true, false
		} else {
			ks.maybe, ks.maybePresent = true, e.Op == "put"
		}
	}
	rep.Keys = len(keys)
	reg := etcd.NewRegistry(cli)
	buckets := etcd.NewBuckets(cli)
	conns := map[string]*pgxConn{}
	defer func() {
		for _, c := range conns {
			c.Close(context.Background())
		}
	}()
	conn := func(pnode string) (*pgxConn, error) {
		if c, ok := conns[pnode]; ok {
			return c, nil
		}
		primary, err := reg.Primary(ctx, pnode)
		if err != nil {
			return nil, err
		}
		c, err := postgres.Connect(ctx, primary.DSN)
		if err != nil {
			return nil, err
		}
		conns[pnode] = c
		return c, nil
	}

	// Group keys by bucket and owner, and read each group in one query.
	type group struct {
		bucket, pnode string
		keys          []*keyState
		vnodes        []int32
	}
	groups := map[[2]string]*group{}
	opts := map[string]shard.BucketOptions{}
	for _, ks := range keys {
		o, ok := opts[ks.bucket]
		if !ok {
			if err := buckets.Get(ctx, ks.bucket, &o); err != nil {
				return rep, err
			}
			opts[ks.bucket] = o
		}
		loc := rg.LocateString(router.HashKey(ks.key, o))
		gid := [2]string{ks.bucket, loc.Pnode}
		g := groups[gid]
		if g == nil {
			g = &group{bucket: ks.bucket, pnode: loc.Pnode}
			groups[gid] = g
		}
		g.keys = append(g.keys, ks)
		g.vnodes = append(g.vnodes, int32(loc.Vnode))
	}
	example := func(format string, args ...any) {
		if len(rep.Examples) < 20 {
			rep.Examples = append(rep.Examples, fmt.Sprintf(format, args...))
		}
	}
	for _, g := range groups {
		c, err := conn(g.pnode)
		if err != nil {
			return rep, err
		}
		for start := 0; start < len(g.keys); start += 5000 {
			end := min(start+5000, len(g.keys))
			names := make([]string, 0, end-start)
			for _, ks := range g.keys[start:end] {
				names = append(names, ks.key)
			}
			found, err := shard.Etags(ctx, c, g.bucket, names)
			if err != nil {
				return rep, fmt.Errorf("%s on %s: %w", g.bucket, g.pnode, err)
			}
			for i, ks := range g.keys[start:end] {
				rep.Checked++
				etag, ok := found[ks.key]
				if ks.maybe {
					rep.Ambiguous++
					// The unknown write's outcome is accepted; otherwise the
					// state before it must hold, as checked below.
					if ok == ks.maybePresent {
						continue
					}
				}
				switch {
				case ks.present && !ok:
					rep.Missing++
					example("missing: %s %s (vnode %d on %s)", ks.bucket, ks.key, g.vnodes[start+i], g.pnode)
				case ks.present && etag != ks.etag:
					rep.Stale++
					example("stale: %s %s has etag %s, last acknowledged %s", ks.bucket, ks.key, etag, ks.etag)
				case !ks.present && ok && ks.known:
					rep.Stale++
					example("stale: %s %s is present after an acknowledged delete", ks.bucket, ks.key)
				}
			}
		}
	}
	n, k, ex, err := misplaced(ctx, reg, rg, conn, kept)
	if err != nil {
		return rep, err
	}
	rep.Misplaced, rep.Kept = n, k
	for _, e := range ex {
		example("%s", e)
	}
	return rep, nil
}

// misplaced counts rows on each registered pnode whose vnode the ring maps
// elsewhere, and apart those kept: one grouped scan per bucket per pnode,
// whatever the ring size.
func misplaced(ctx context.Context, reg reshard.Registry, rg *ring.Ring, conn func(string) (*pgxConn, error), kept Kept) (int, int, []string, error) {
	pnodes, err := reg.Pnodes(ctx)
	if err != nil {
		return 0, 0, nil, err
	}
	total, keptRows := 0, 0
	var examples []string
	for _, p := range pnodes {
		c, err := conn(p.Name)
		if err != nil {
			return 0, 0, nil, err
		}
		bs, err := shard.Buckets(ctx, c)
		if err != nil {
			return 0, 0, nil, err
		}
		names := make([]string, 0, len(bs))
		for b := range bs {
			names = append(names, b)
		}
		sort.Strings(names)
		for _, b := range names {
			stats, err := shard.VnodeStats(ctx, c, b)
			if err != nil {
				return 0, 0, nil, err
			}
			for _, s := range stats {
				owner, _, err := rg.Vnode(uint32(s.Vnode))
				if err == nil && owner != p.Name && kept != nil && kept(p.Name, uint32(s.Vnode)) {
					keptRows += int(s.Rows)
					continue
				}
				if err != nil || owner != p.Name {
					total += int(s.Rows)
					if len(examples) < 5 {
						examples = append(examples, fmt.Sprintf("misplaced: %d rows of vnode %d in %s on %s (ring: %s)", s.Rows, s.Vnode, b, p.Name, owner))
					}
				}
			}
		}
	}
	return total, keptRows, examples, nil
}

type pgxConn = pgx.Conn
