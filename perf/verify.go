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
	Rows         int64
	Vnodes       int
	Seconds      float64 // the checksums, as a job's verify computes them on each side
	CountSeconds float64 // counting the same rows: reading them once
	AllocBytes   int64   // Go heap allocated while computing them
}

// MeasureVerify times the checksums a job's verify computes on one side
// (shard.ChecksumsInSnapshot: per bucket and vnode, a count and a sum of
// hashes) over the rows of ranges, against counting the same rows
// (shard.RowCount); and the Go heap allocated meanwhile: PostgreSQL sums
// the rows, one answer row comes back per bucket and vnode, so it grows
// with the vnodes, not the rows.
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
	runtime.ReadMemStats(&before)
	start = time.Now()
	sums, err := shard.ChecksumsInSnapshot(ctx, conn, buckets, ranges)
	if err != nil {
		return res, err
	}
	res.Seconds = time.Since(start).Seconds()
	runtime.ReadMemStats(&after)
	// Other goroutines allocate too (few here: the load has stopped).
	res.AllocBytes = int64(after.TotalAlloc - before.TotalAlloc)
	res.Vnodes = len(sums)
	var rows int64
	for _, s := range sums {
		rows += s.Rows
	}
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
	res.Detail = fmt.Sprintf("%d rows in %d bucket-vnodes; %.0f KB allocated: %.0f B per bucket-vnode, %.2f B per row; the job's verify phase %.2f s",
		r.Rows, r.Vnodes, float64(r.AllocBytes)/1024, float64(r.AllocBytes)/float64(max(r.Vnodes, 1)), float64(r.AllocBytes)/float64(max(r.Rows, 1)), phase)
	return res
}
