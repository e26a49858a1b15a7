package orchestrator

import (
	"math"
	"testing"
	"time"
)

// The foreground's p99 from a cumulative histogram, as histogram_quantile
// reads it: linear within the bucket where the rank falls.
func TestQuantileOf(t *testing.T) {
	h := histogram{0.001: 50, 0.002: 90, 0.004: 98, 0.008: 100, math.Inf(1): 100}
	cases := map[float64]time.Duration{
		0.5:  time.Millisecond,                             // the rank ends the first bucket
		0.7:  1500 * time.Microsecond,                      // halfway through (1 ms, 2 ms]
		0.99: 6 * time.Millisecond,                         // halfway through (4 ms, 8 ms]
		0.25: time.Duration(0.0005 * float64(time.Second)), // halfway through [0, 1 ms]
	}
	for q, want := range cases {
		got, n := quantileOf(h, q)
		if n != 100 || (got-want).Abs() > time.Microsecond {
			t.Errorf("quantileOf(h, %v) = %v of %d, want %v of 100", q, got, n, want)
		}
	}
	// Past the last finite bound, the bound is the answer.
	if got, _ := quantileOf(histogram{0.001: 1, math.Inf(1): 10}, 0.99); got != time.Millisecond {
		t.Errorf("in the +Inf bucket: %v", got)
	}
	if _, n := quantileOf(histogram{}, 0.99); n != 0 {
		t.Error("an empty histogram has observations")
	}
}
