package perf

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/reshard/reshard/shard"
)

// VerifyResult is what MeasureVerify measured on one shard.
type VerifyResult struct {
	Rows          int64
	Vnodes        int
	Seconds       float64 // the checksums, as a job's verify computes them on each side
	CountSeconds  float64 // counting the same rows: reading them once
	RetainedBytes int64   // Go heap the checksums' result holds
}

// MeasureVerify times the checksums a job's verify computes on one side
// (shard.ChecksumsInSnapshot: per bucket and vnode, a count and a sum of
// hashes) over the rows of ranges, against counting the same rows
// (shard.RowCount); and the heap their result keeps, which is per vnode,
// whatever the rows.
func MeasureVerify(ctx context.Context, conn *pgx.Conn, buckets []string, ranges []shard.Range) (VerifyResult, error) {
	var res VerifyResult
	start := time.Now()
	n, err := shard.RowCount(ctx, conn, buckets, ranges)
	if err != nil {
		return res, err
	}
	res.CountSeconds = time.Since(start).Seconds()
	res.Rows = n
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start = time.Now()
	sums, err := shard.ChecksumsInSnapshot(ctx, conn, buckets, ranges)
	if err != nil {
		return res, err
	}
	res.Seconds = time.Since(start).Seconds()
	runtime.GC()
	runtime.ReadMemStats(&after)
	res.RetainedBytes = int64(after.HeapAlloc) - int64(before.HeapAlloc)
	res.Vnodes = len(sums)
	var rows int64
	for _, s := range sums {
		rows += s.Rows
	}
	runtime.KeepAlive(sums)
	if rows != n {
		return res, fmt.Errorf("the checksums cover %d rows, the count %d", rows, n)
	}
	return res, nil
}

// Result is the verify as a comparison; phase is the job's verify phase
// (both sides and the comparison), for the detail.
func (r VerifyResult) Result(phase float64) Result {
	res := Faster("verify", "checksum rows/s, one shard", "count(*) of the same rows", "rows/s",
		float64(r.Rows)/r.Seconds, float64(r.Rows)/r.CountSeconds, 0)
	res.Detail = fmt.Sprintf("%d rows in %d bucket-vnodes; result %.0f KB held (%.0f B per bucket-vnode, none per row); the job's verify phase %.2f s",
		r.Rows, r.Vnodes, float64(r.RetainedBytes)/1024, float64(r.RetainedBytes)/float64(max(r.Vnodes, 1)), phase)
	return res
}
