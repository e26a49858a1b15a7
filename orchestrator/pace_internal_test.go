package orchestrator

import (
	"strings"
	"testing"
	"time"
)

// The cleanup's controller: additive increase while the foreground holds,
// multiplicative decrease when it does not, within [minPace, max].
func TestNextPace(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		pace, max   float64
		p90, target time.Duration
		lag, maxLag int64
		want        float64
		why         string
	}{
		{2000, 20000, 2 * ms, 3 * ms, 0, 1 << 20, 4000, "under target"},
		{19500, 20000, 2 * ms, 3 * ms, 0, 1 << 20, 20000, "under target"},
		{20000, 20000, 2 * ms, 3 * ms, 0, 1 << 20, 20000, "under target"},
		{8000, 20000, 4 * ms, 3 * ms, 0, 1 << 20, 4000, "halved: probe p90 4.0 ms over target 3.0 ms"},
		{8000, 20000, 2 * ms, 3 * ms, 2 << 20, 1 << 20, 4000, "halved: standby replay lag"},
		{150, 20000, 9 * ms, 3 * ms, 0, 1 << 20, minPace, "halved"},
		{8000, 20000, 4 * ms, 3 * ms, 0, 1 << 20, 8000, "holding: probe p90 4.0 ms over"}, // the first reading over: hold
		{100, 500, 1 * ms, 3 * ms, 0, 1 << 20, 200, "under target"},                       // the step is at least minPace
	}
	for _, c := range cases {
		overBefore := !strings.HasPrefix(c.why, "holding")
		got, why, over := nextPace(c.pace, c.max, c.p90, c.target, c.lag, c.maxLag, "probe p90", overBefore)
		if got != c.want || !strings.Contains(why, c.why) || over != (c.p90 > c.target || c.lag > c.maxLag) {
			t.Errorf("nextPace(%v, %v, %v, %v, %v, %v) = %v %q, want %v %q", c.pace, c.max, c.p90, c.target, c.lag, c.maxLag, got, why, c.want, c.why)
		}
	}
}
