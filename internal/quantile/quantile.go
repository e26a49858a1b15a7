// Package quantile gives latency percentiles one definition: the load
// tool's report, the cleanup's pacer and the benchmarks read the same way.
package quantile

import (
	"slices"
	"time"
)

// Of is the q-th quantile (0 < q <= 1) of ds by nearest rank: the smallest
// value with at least q of them at or below it. 0 for none. ds is not
// changed.
func Of(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return Sorted(s, q)
}

// Sorted is Of for ds already sorted.
func Sorted(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := int(q*float64(len(ds))+0.5) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}
