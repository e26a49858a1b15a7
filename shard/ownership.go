package shard

import (
	"context"
	"fmt"
	"sort"
)

// Ownership says which vnodes a shard owns and whether each is writable,
// in rows of 1024 vnodes (see schemaSQL). Every change below is one
// statement over the chunks it touches, sent as (chunk, bitmask) pairs.

// chunkShift is log2 of the vnodes per ownership row.
const chunkShift = 10

// mask is one chunk's bits, vnode offset i at bit i.
type mask [1 << chunkShift / 64]uint64

// masks maps a chunk to the bits of its vnodes that a change touches.
type masks map[int32]*mask

func (m masks) set(v int32) {
	c := v >> chunkShift
	if m[c] == nil {
		m[c] = new(mask)
	}
	off := uint32(v) & (1<<chunkShift - 1)
	m[c][off/64] |= 1 << (off % 64)
}

func masksOf(vnodes []int32) masks {
	m := masks{}
	for _, v := range vnodes {
		m.set(v)
	}
	return m
}

// masksOfRanges covers every vnode id in the ranges: owned or not, since
// the statements only ever change bits the shard owns.
func masksOfRanges(ranges []Range) masks {
	m := masks{}
	for _, r := range ranges {
		for v := r.Lo; v <= r.Hi; {
			off := uint32(v) & (1<<chunkShift - 1)
			if off%64 == 0 && v+63 <= r.Hi {
				c := v >> chunkShift
				if m[c] == nil {
					m[c] = new(mask)
				}
				m[c][off/64] = ^uint64(0) // a whole word at once
				v += 64
				continue
			}
			m.set(v)
			v++
		}
	}
	return m
}

// text is the mask as PostgreSQL's bit(1024) input: offset i at position i.
func (k *mask) text() string {
	b := make([]byte, 1<<chunkShift)
	for i := range b {
		b[i] = '0' + byte(k[i/64]>>(i%64)&1)
	}
	return string(b)
}

// arrays returns the chunks and masks as parallel arrays for unnest.
func (m masks) arrays() ([]int32, []string) {
	chunks := make([]int32, 0, len(m))
	for c := range m {
		chunks = append(chunks, c)
	}
	sort.Slice(chunks, func(i, j int) bool { return chunks[i] < chunks[j] })
	bits := make([]string, len(chunks))
	for i, c := range chunks {
		bits[i] = m[c].text()
	}
	return chunks, bits
}

// Own records vnodes as owned, writable or not, at a ring version.
func Own(ctx context.Context, q Querier, vnodes []int32, writable bool, ringVersion int64) error {
	chunks, bits := masksOf(vnodes).arrays()
	_, err := q.Exec(ctx, `insert into reshard_vnode_chunks as c (chunk, owned, writable, ring_version)
		select u.chunk, u.m, case when $3 then u.m else 0::bit(1024) end, $4 from unnest($1::int[], $2::text[]::bit(1024)[]) as u(chunk, m)
		on conflict (chunk) do update set owned = c.owned | excluded.owned,
			writable = case when $3 then c.writable | excluded.owned else c.writable & ~excluded.owned end,
			ring_version = excluded.ring_version`,
		chunks, bits, writable, ringVersion)
	if err != nil {
		return fmt.Errorf("set ownership of %d vnodes: %w", len(vnodes), err)
	}
	return nil
}

// Disown removes vnodes from the shard; later writes and reads to them are fenced.
func Disown(ctx context.Context, q Querier, vnodes []int32) error {
	if err := disown(ctx, q, masksOf(vnodes)); err != nil {
		return fmt.Errorf("disown %d vnodes: %w", len(vnodes), err)
	}
	return nil
}

func disown(ctx context.Context, q Querier, m masks) error {
	chunks, bits := m.arrays()
	_, err := q.Exec(ctx, `update reshard_vnode_chunks c set owned = c.owned & ~u.m, writable = c.writable & ~u.m
		from unnest($1::int[], $2::text[]::bit(1024)[]) as u(chunk, m) where c.chunk = u.chunk and bit_count(c.owned & u.m) > 0`, chunks, bits)
	return err
}

// SetWritable freezes (false) or thaws (true) owned vnodes. Freezing waits
// for writers already inside the fence, so once the caller's transaction
// commits no further write to these vnodes can commit. It returns how many
// of the vnodes the shard owns.
func SetWritable(ctx context.Context, q Querier, vnodes []int32, writable bool, ringVersion int64) (int64, error) {
	n, err := setWritable(ctx, q, masksOf(vnodes), writable, ringVersion)
	if err != nil {
		return 0, fmt.Errorf("set writable=%v on %d vnodes: %w", writable, len(vnodes), err)
	}
	return n, nil
}

func setWritable(ctx context.Context, q Querier, m masks, writable bool, ringVersion int64) (int64, error) {
	chunks, bits := m.arrays()
	var n int64
	err := q.QueryRow(ctx, `with changed as (
		update reshard_vnode_chunks c
		set writable = case when $3 then c.writable | (c.owned & u.m) else c.writable & ~u.m end, ring_version = $4
		from unnest($1::int[], $2::text[]::bit(1024)[]) as u(chunk, m) where c.chunk = u.chunk and bit_count(c.owned & u.m) > 0
		returning bit_count(c.owned & u.m) as n)
		select coalesce(sum(n), 0)::bigint from changed`, chunks, bits, writable, ringVersion).Scan(&n)
	return n, err
}

// OwnedCount is the number of vnodes the shard owns.
func OwnedCount(ctx context.Context, q Querier) (int64, error) {
	var n int64
	err := q.QueryRow(ctx, `select coalesce(sum(bit_count(owned)), 0)::bigint from reshard_vnode_chunks`).Scan(&n)
	return n, err
}

// VnodeState is one ownership row.
type VnodeState struct {
	Vnode       int32 `json:"vnode"`
	Writable    bool  `json:"writable"`
	RingVersion int64 `json:"ring_version"`
}

// Owned lists the shard's ownership rows in vnode order.
func Owned(ctx context.Context, q Querier) ([]VnodeState, error) {
	rows, err := q.Query(ctx, `select vnode, writable, ring_version from reshard_vnodes order by vnode`)
	if err != nil {
		return nil, fmt.Errorf("read ownership: %w", err)
	}
	defer rows.Close()
	var out []VnodeState
	for rows.Next() {
		var s VnodeState
		if err := rows.Scan(&s.Vnode, &s.Writable, &s.RingVersion); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// VnodeStat is the row count and size of one vnode's rows.
type VnodeStat struct {
	Vnode int32 `json:"vnode"`
	Rows  int64 `json:"rows"`
	Bytes int64 `json:"bytes"`
}

// VnodeStats is the RFD's `select _vnode, count(*) ... group by _vnode`,
// summed over the given buckets (all when none): one scan per bucket, not
// one per vnode. Sorted by rows, most first.
func VnodeStats(ctx context.Context, q Querier, buckets ...string) ([]VnodeStat, error) {
	if len(buckets) == 0 {
		all, err := Buckets(ctx, q)
		if err != nil {
			return nil, err
		}
		for b := range all {
			buckets = append(buckets, b)
		}
		sort.Strings(buckets)
	}
	sum := map[int32]*VnodeStat{}
	for _, b := range buckets {
		if err := ValidateBucket(b); err != nil {
			return nil, err
		}
		// Rows with no vnode (shard-local queues) belong to no vnode.
		rows, err := q.Query(ctx, fmt.Sprintf(`select _vnode, count(*), coalesce(sum(pg_column_size(t.*)), 0)::bigint
			from %s t where _vnode is not null group by _vnode`, quoteIdent(b)))
		if err != nil {
			return nil, fmt.Errorf("vnode stats of %s: %w", b, err)
		}
		for rows.Next() {
			var s VnodeStat
			if err := rows.Scan(&s.Vnode, &s.Rows, &s.Bytes); err != nil {
				rows.Close()
				return nil, err
			}
			if cur, ok := sum[s.Vnode]; ok {
				cur.Rows += s.Rows
				cur.Bytes += s.Bytes
			} else {
				sum[s.Vnode] = &s
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	out := make([]VnodeStat, 0, len(sum))
	for _, s := range sum {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Rows != out[j].Rows {
			return out[i].Rows > out[j].Rows
		}
		return out[i].Vnode < out[j].Vnode
	})
	return out, nil
}

// KeepOnly drops the ownership of every vnode but those listed: a
// physical copy of the origin starts out owning all of the origin's vnodes.
func KeepOnly(ctx context.Context, q Querier, vnodes []int32) error {
	chunks, bits := masksOf(vnodes).arrays()
	if _, err := q.Exec(ctx, `update reshard_vnode_chunks c
		set owned = c.owned & coalesce(u.m, 0::bit(1024)), writable = c.writable & coalesce(u.m, 0::bit(1024))
		from reshard_vnode_chunks k left join unnest($1::int[], $2::text[]::bit(1024)[]) as u(chunk, m) on u.chunk = k.chunk
		where c.chunk = k.chunk and bit_count(c.owned & ~coalesce(u.m, 0::bit(1024))) > 0`, chunks, bits); err != nil {
		return fmt.Errorf("keep %d vnodes: %w", len(vnodes), err)
	}
	return nil
}

// The range forms below serve the cutover. A split in half of a
// 1,000,000-vnode ring freezes and hands over about 500,000 vnodes inside
// the write block: a few ranges of vnode ids, which cover a few thousand
// chunk rows at most. They change exactly the moving vnodes because they
// only clear or set bits the shard owns.

// SetWritableRanges is SetWritable for the owned vnodes in ranges.
func SetWritableRanges(ctx context.Context, q Querier, ranges []Range, writable bool, ringVersion int64) (int64, error) {
	n, err := setWritable(ctx, q, masksOfRanges(ranges), writable, ringVersion)
	if err != nil {
		return 0, fmt.Errorf("set writable=%v on %d ranges: %w", writable, len(ranges), err)
	}
	return n, nil
}

// DisownRanges is Disown for the owned vnodes in ranges.
func DisownRanges(ctx context.Context, q Querier, ranges []Range) error {
	if err := disown(ctx, q, masksOfRanges(ranges)); err != nil {
		return fmt.Errorf("disown %d ranges: %w", len(ranges), err)
	}
	return nil
}
