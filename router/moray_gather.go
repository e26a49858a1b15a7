package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/reshard/reshard/shard"
)

// What findObjects does with a find that names neither options.hashkey
// nor options.token (Config.CrossShardFind).
const (
	// CrossShardRefuse answers as electric-moray does: a plain Error.
	CrossShardRefuse = "refuse"
	// CrossShardGather runs the find on every shard and merges the rows
	// into what one Moray holding every row would answer.
	CrossShardGather = "gather"
)

// refusedFind is electric-moray's answer to a find it cannot route: its
// findObjects fails the RPC with new Error(...), whose Fast error name is
// plain "Error".
var refusedFind = &MorayError{Name: "Error", Message: "Invalid search request, requires either token or hashkey"}

// jsTruthy is JavaScript's truthiness of an option, as electric-moray
// tests `!opts.hashkey && !opts.token`: absent, null, false, 0 and ""
// are false.
func jsTruthy(raw json.RawMessage, ok bool) bool {
	if !ok {
		return false
	}
	switch jsonKind(raw) {
	case "null":
		return false
	case "a boolean":
		return string(raw) == "true"
	case "a number":
		var f float64
		json.Unmarshal(raw, &f)
		return f != 0
	case "a string":
		return string(raw) != `""`
	}
	return true
}

// gatherBatch is how many rows of each shard a sorted merge holds at once.
const gatherBatch = 100

// ringVnodes is the bitmap of the vnodes the view's ring maps to pnode,
// as shard.FindOptions.RingVnodes takes it; made once per ring version.
func (v *view) ringVnodes(pnode string) ([]byte, error) {
	if b, ok := v.bitmaps.Load(pnode); ok {
		return b.([]byte), nil
	}
	vs, err := v.ring.VnodesOf(pnode)
	if err != nil {
		return nil, err
	}
	b := make([]byte, (v.ring.Vnodes()+7)/8)
	for _, vn := range vs {
		b[vn/8] |= 1 << (vn % 8)
	}
	v.bitmaps.Store(pnode, b)
	return b, nil
}

// gatherShard is one shard's part of a gathered find: its stream, the
// rows read and not yet merged, and its count of matching rows.
type gatherShard struct {
	cur   *shard.FindCursor
	buf   []shard.Found
	done  bool
	count int64
}

// read appends the shard's next row to buf; false at its end.
func (g *gatherShard) read() (bool, error) {
	if g.done {
		return false, nil
	}
	row, ok := g.cur.Next()
	if !ok {
		g.done = true
		return false, g.cur.Err()
	}
	g.buf = append(g.buf, row)
	return true, nil
}

// gather is a find running on every shard of one ring version.
type gather struct {
	shards []*gatherShard
	total  int64
}

func (g *gather) close() {
	for _, s := range g.shards {
		if s.cur != nil {
			s.cur.Close()
		}
	}
}

// errRingMoved: the ring changed while a gathered find started.
var errRingMoved = errors.New("the ring changed while the find started")

// startGather starts the find on every pnode of the view's ring, each
// asked for offset+limit rows from the first (the merge skips the
// offset), and reads each shard's first row, which carries its count.
// Once every shard has answered, every shard's statement has its
// snapshot; if the router still serves the same ring version then, no
// reshard has cleaned a moved vnode's rows off its old shard before
// those snapshots (the cleanup waits for every router to serve the new
// ring), so each vnode's rows are read whole, once, from the shard that
// version names.
func (r *Router) startGather(ctx context.Context, v *view, bucket string, bo shard.BucketOptions, f *shard.Filter, fo shard.FindOptions) (*gather, error) {
	sfo := fo
	sfo.Offset = 0
	sfo.Limit = fo.Offset + fo.Limit
	pnodes := v.ring.Pnodes()
	sfo.SortKeys = len(fo.Sort) > 0 && len(pnodes) > 1
	g := &gather{}
	for _, pn := range pnodes {
		p, err := r.pool(ctx, pn)
		if err != nil {
			g.close()
			return nil, err
		}
		if sfo.RingVnodes, err = v.ringVnodes(pn); err != nil {
			g.close()
			return nil, err
		}
		cur, err := shard.FindStream(ctx, p, bucket, bo, f, sfo)
		if err != nil {
			g.close()
			return nil, err
		}
		g.shards = append(g.shards, &gatherShard{cur: cur})
	}
	for _, s := range g.shards {
		ok, err := s.read()
		if err != nil {
			g.close()
			return nil, err
		}
		if ok {
			s.count = s.buf[0].Count
			g.total += s.count
		}
	}
	if cur := r.cur.Load(); cur == nil || cur.version != v.version {
		g.close()
		return nil, errRingMoved
	}
	return g, nil
}

// gatherFind answers a findObjects that names no shard: the find runs on
// every shard and the rows are merged into the answer one Moray holding
// every row would give. Moray applies LIMIT and OFFSET in SQL and then
// drops the rows its JavaScript re-check rejects, so the merge counts a
// rejected row toward the offset and the limit before dropping it; _count
// (Moray's count(1) OVER (), the rows the SQL matched) is the sum of the
// shards' counts. Without a sort, Moray's order is PostgreSQL's and
// undefined, and the shards' rows stream one shard after another. With
// one, the shards' sorted streams are merged k-way, holding at most
// gatherBatch rows of each shard, and compared by PostgreSQL (see
// shard.MergeOrder). _id is each shard's own sequence, so a sort on _id
// interleaves the shards' sequences: no single Moray would number the
// rows that way.
func (r *Router) gatherFind(ctx context.Context, bucket, text string, bo shard.BucketOptions, f *shard.Filter, fo shard.FindOptions, s *stream) error {
	deadline := time.Now().Add(r.cfg.RetryFor)
	var g *gather
	var v *view
	for {
		v = r.cur.Load()
		if v == nil {
			return ErrNoRing
		}
		var err error
		g, err = r.startGather(ctx, v, bucket, bo, f, fo)
		if err == nil {
			break
		}
		reason := retryReason(err)
		if errors.Is(err, errRingMoved) {
			reason = "ring_moved"
		}
		if reason == "" {
			return findError(bucket, text, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w (gathered find: %s)", ErrStillFenced, err)
		}
		r.metrics.retries.WithLabelValues("find", reason).Inc()
		r.waitRing(ctx, v.version, 50*time.Millisecond)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	defer g.close()
	var next func() (shard.Found, bool, error)
	if len(fo.Sort) == 0 || len(g.shards) == 1 {
		next = g.concat()
	} else {
		p, err := r.pool(ctx, v.ring.Pnodes()[0])
		if err != nil {
			return err
		}
		next = g.merge(ctx, func(keys [][]*string) ([]int, error) {
			return shard.MergeOrder(ctx, p, bo, fo.Sort, keys)
		})
	}
	var count *int64
	var countText json.RawMessage
	if !fo.NoCount {
		count = &g.total
		countText = strconv.AppendInt(nil, g.total, 10)
	}
	for pos := 0; fo.NoLimit || pos < fo.Offset+fo.Limit; pos++ {
		row, ok, err := next()
		if err != nil {
			return findError(bucket, text, err)
		}
		if !ok {
			break
		}
		if pos < fo.Offset || !row.Matches(bo, f, count) {
			continue
		}
		if err := s.write(record(bucket, row.Object, countText)); err != nil {
			return err
		}
	}
	return nil
}

// concat streams the shards' rows one shard after another.
func (g *gather) concat() func() (shard.Found, bool, error) {
	i := 0
	return func() (shard.Found, bool, error) {
		for i < len(g.shards) {
			s := g.shards[i]
			if len(s.buf) == 0 {
				if _, err := s.read(); err != nil {
					return shard.Found{}, false, err
				}
			}
			if len(s.buf) > 0 {
				row := s.buf[0]
				s.buf = s.buf[1:]
				return row, true, nil
			}
			i++
		}
		return shard.Found{}, false, nil
	}
}

// merge is a k-way merge of the shards' sorted streams. Each round tops
// every buffer up to gatherBatch rows and orders all buffered rows;
// rows are then safe to send up to and including the first that is the
// last buffered row of a shard with more to come, since every row that
// shard has yet to send sorts after it. That shard's buffer is then
// empty, so each round sends at least a buffer's worth.
func (g *gather) merge(ctx context.Context, order func([][]*string) ([]int, error)) func() (shard.Found, bool, error) {
	var ready []shard.Found
	return func() (shard.Found, bool, error) {
		for len(ready) == 0 {
			type ref struct{ shard, row int }
			var refs []ref
			var keys [][]*string
			live := 0
			for si, s := range g.shards {
				for len(s.buf) < gatherBatch && !s.done {
					if _, err := s.read(); err != nil {
						return shard.Found{}, false, err
					}
				}
				if len(s.buf) > 0 {
					live++
				}
				for ri := range s.buf {
					refs = append(refs, ref{si, ri})
					keys = append(keys, s.buf[ri].SortKeys)
				}
			}
			if len(refs) == 0 {
				return shard.Found{}, false, nil
			}
			var perm []int
			if live == 1 {
				// One shard's rows are already in order.
				perm = make([]int, len(refs))
				for i := range perm {
					perm[i] = i
				}
			} else {
				var err error
				if perm, err = order(keys); err != nil {
					return shard.Found{}, false, err
				}
			}
			taken := make([]int, len(g.shards))
			for _, i := range perm {
				rf := refs[i]
				s := g.shards[rf.shard]
				ready = append(ready, s.buf[rf.row])
				taken[rf.shard]++
				if rf.row == len(s.buf)-1 && !s.done {
					break
				}
			}
			for si, s := range g.shards {
				s.buf = s.buf[taken[si]:]
			}
		}
		row := ready[0]
		ready = ready[1:]
		return row, true, nil
	}
}
