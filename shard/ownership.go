package shard

import (
	"context"
	"fmt"
	"sort"
)

// Ownership says which vnodes a shard owns and whether each is writable.
// One row per vnode: a split in half of a 1,000,000-vnode ring writes
// 500,000 rows, which these statements do in one round trip each.

// Own records vnodes as owned, writable or not, at a ring version.
func Own(ctx context.Context, q Querier, vnodes []int32, writable bool, ringVersion int64) error {
	_, err := q.Exec(ctx, `insert into reshard_vnodes (vnode, writable, ring_version)
		select v, $2, $3 from unnest($1::int[]) as v
		on conflict (vnode) do update set writable = excluded.writable, ring_version = excluded.ring_version`,
		vnodes, writable, ringVersion)
	if err != nil {
		return fmt.Errorf("set ownership of %d vnodes: %w", len(vnodes), err)
	}
	return nil
}

// Disown removes vnodes from the shard; later writes and reads to them are fenced.
func Disown(ctx context.Context, q Querier, vnodes []int32) error {
	if _, err := q.Exec(ctx, `delete from reshard_vnodes where vnode = any($1::int[])`, vnodes); err != nil {
		return fmt.Errorf("disown %d vnodes: %w", len(vnodes), err)
	}
	return nil
}

// SetWritable freezes (false) or thaws (true) owned vnodes. Freezing waits
// for writers already inside the fence, so once the caller's transaction
// commits no further write to these vnodes can commit. It returns how many
// of the vnodes the shard owns.
func SetWritable(ctx context.Context, q Querier, vnodes []int32, writable bool, ringVersion int64) (int64, error) {
	tag, err := q.Exec(ctx, `update reshard_vnodes set writable = $2, ring_version = $3
		where vnode = any($1::int[])`, vnodes, writable, ringVersion)
	if err != nil {
		return 0, fmt.Errorf("set writable=%v on %d vnodes: %w", writable, len(vnodes), err)
	}
	return tag.RowsAffected(), nil
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
		rows, err := q.Query(ctx, fmt.Sprintf(`select _vnode, count(*), coalesce(sum(pg_column_size(t.*)), 0)::bigint
			from %s t group by _vnode`, quoteIdent(b)))
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

// KeepOnly drops every ownership row but those of vnodes: a physical copy
// of the origin starts out owning all of the origin's vnodes.
func KeepOnly(ctx context.Context, q Querier, vnodes []int32) error {
	if _, err := q.Exec(ctx, `delete from reshard_vnodes where vnode <> all($1::int[])`, vnodes); err != nil {
		return fmt.Errorf("keep %d vnodes: %w", len(vnodes), err)
	}
	return nil
}

// The range forms below serve the cutover. A split in half of a
// 1,000,000-vnode ring freezes and hands over about 500,000 vnodes inside
// the write block; a few range predicates do that in one index range scan
// each, where a list of every vnode costs one probe per vnode. They select
// exactly the moving vnodes because a shard's ownership table holds only
// the vnodes it owns.

// SetWritableRanges is SetWritable for the owned vnodes in ranges.
func SetWritableRanges(ctx context.Context, q Querier, ranges []Range, writable bool, ringVersion int64) (int64, error) {
	tag, err := q.Exec(ctx, fmt.Sprintf(`update reshard_vnodes set writable = $1, ring_version = $2 where %s`,
		inRanges("vnode", ranges)), writable, ringVersion)
	if err != nil {
		return 0, fmt.Errorf("set writable=%v on %d ranges: %w", writable, len(ranges), err)
	}
	return tag.RowsAffected(), nil
}

// DisownRanges is Disown for the owned vnodes in ranges.
func DisownRanges(ctx context.Context, q Querier, ranges []Range) error {
	if _, err := q.Exec(ctx, fmt.Sprintf(`delete from reshard_vnodes where %s`, inRanges("vnode", ranges))); err != nil {
		return fmt.Errorf("disown %d ranges: %w", len(ranges), err)
	}
	return nil
}
