// Package perf measures reshard side by side with what it is judged
// against: the same work done by a plain tool (pgx straight to the shard,
// a COPY pipe, pg_basebackup) or by the real Moray, on the same machine in
// the same run. Absolute times are noisy on a shared machine; a ratio of
// two measurements taken in alternating rounds is not.
package perf

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/reshard/reshard/internal/quantile"
)

// Side is one way of doing the work: Op does operation i with worker w.
type Side struct {
	Name string
	Op   func(ctx context.Context, w int, i int64) error
}

// Stats is what a side measured over every round.
type Stats struct {
	Ops        int64   `json:"ops"`
	Seconds    float64 `json:"seconds"`
	OpsPerSec  float64 `json:"ops_per_s"`
	P50MS      float64 `json:"p50_ms"`
	P99MS      float64 `json:"p99_ms"`
	Errors     int64   `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	// CPUPerOp is the CPU time each operation cost, in µs: "machine" (all
	// of it) and each process Alternate was asked to watch.
	CPUPerOp map[string]float64 `json:"cpu_us_per_op,omitempty"`

	cpu CPU

	lat []time.Duration
}

// Alternate runs the sides in turn, each for per with concurrency workers,
// rounds times over: drift on a shared machine (another process, the page
// cache, a checkpoint) falls on every side alike. Ops are numbered on from
// round to round, so a side that writes keys by number keeps writing new
// ones or the same ones as it chooses. The CPU time the machine and each
// of procs (name: pid) spent on each side is counted too.
func Alternate(ctx context.Context, sides []Side, concurrency, rounds int, per time.Duration, procs map[string]int) (map[string]*Stats, error) {
	if concurrency < 1 || rounds < 1 || per <= 0 {
		return nil, fmt.Errorf("perf: concurrency %d, rounds %d and per %v must be positive", concurrency, rounds, per)
	}
	out := map[string]*Stats{}
	next := map[string]*atomic.Int64{}
	for _, s := range sides {
		out[s.Name] = &Stats{cpu: CPU{Procs: map[string]float64{}}}
		next[s.Name] = &atomic.Int64{}
	}
	for range rounds {
		for _, s := range sides {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			before := ReadCPU(procs)
			drive(ctx, s, concurrency, per, next[s.Name], out[s.Name])
			out[s.Name].cpu.add(ReadCPU(procs).Sub(before))
		}
	}
	for _, st := range out {
		st.finish()
	}
	return out, nil
}

// drive runs one side for d and adds what it did to st.
func drive(ctx context.Context, s Side, concurrency int, d time.Duration, next *atomic.Int64, st *Stats) {
	rctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for w := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			var errs int64
			var first error
			for rctx.Err() == nil {
				i := next.Add(1) - 1
				t0 := time.Now()
				err := s.Op(rctx, w, i)
				if err != nil {
					// An operation cut short by the round's end is not an error.
					if rctx.Err() != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
						break
					}
					errs++
					if first == nil {
						first = err
					}
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			st.lat = append(st.lat, lat...)
			st.Errors += errs
			if first != nil && st.FirstError == "" {
				st.FirstError = first.Error()
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	st.Seconds += time.Since(start).Seconds()
}

func (st *Stats) finish() {
	slices.Sort(st.lat)
	st.Ops = int64(len(st.lat))
	if st.Seconds > 0 {
		st.OpsPerSec = float64(st.Ops) / st.Seconds
	}
	st.P50MS = ms(quantile.Sorted(st.lat, 0.50))
	st.P99MS = ms(quantile.Sorted(st.lat, 0.99))
	st.lat = nil
	if st.Ops > 0 {
		st.CPUPerOp = map[string]float64{"machine": st.cpu.Machine / float64(st.Ops) * 1e6}
		for k, v := range st.cpu.Procs {
			st.CPUPerOp[k] = v / float64(st.Ops) * 1e6
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
