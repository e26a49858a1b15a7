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

// After a halving the pacer waits one window before it judges again, and
// the next reading over the target then holds before it halves: one slow
// request stays in a window's p99 for the window's length and halves the
// pace once, not once a second.
func TestPacerSettles(t *testing.T) {
	ms := time.Millisecond
	p := &pacer{pace: 8000, max: 20000, target: 3 * ms, maxLag: 1 << 20}
	p.next(4*ms, 0, "routers' p99", 5*time.Second)
	if p.pace != 8000 || !p.over || !p.settle.IsZero() {
		t.Fatalf("first reading over: pace %v over %v settle %v", p.pace, p.over, p.settle)
	}
	p.next(4*ms, 0, "routers' p99", 5*time.Second)
	if p.pace != 4000 || p.over || time.Until(p.settle) < 4*time.Second || !strings.Contains(p.why, "next look in 5s") {
		t.Fatalf("second reading over: pace %v over %v settle in %v (%s)", p.pace, p.over, time.Until(p.settle), p.why)
	}
	p.next(4*ms, 0, "routers' p99", 5*time.Second)
	if p.pace != 4000 || !p.over {
		t.Fatalf("the reading after settling: pace %v over %v, want a hold", p.pace, p.over)
	}
	p.next(2*ms, 0, "routers' p99", 5*time.Second)
	if p.pace != 6000 || p.over {
		t.Fatalf("under target: pace %v over %v", p.pace, p.over)
	}
}

// A foreground over its target for a whole window at the least pace is
// slower on its own: that reading becomes the baseline, and the pace can
// grow again. A target the operator gave is kept.
func TestPacerRebaselines(t *testing.T) {
	ms := time.Millisecond
	const window = 20 * time.Millisecond
	for _, given := range []time.Duration{0, 6 * ms} {
		p := &pacer{pace: minPace, max: 20000, maxLag: 1 << 20, fg: &foreground{}, given: given}
		p.baseline(5 * ms)
		p.next(8*ms, 0, "routers' p99", window)
		p.next(8*ms, 0, "routers' p99", window)
		if p.base != 5*ms || p.pace != minPace {
			t.Fatalf("at once: base %v pace %v", p.base, p.pace)
		}
		time.Sleep(window + 5*ms)
		p.next(8*ms, 0, "routers' p99", window)
		if given > 0 {
			if p.base != 5*ms || p.target != given {
				t.Fatalf("--cleanup-target %v: base %v target %v", given, p.base, p.target)
			}
			continue
		}
		if p.base != 8*ms || p.target != 10*ms || !strings.Contains(p.why, "new baseline: routers' p99 8.0 ms") {
			t.Fatalf("after a window at the least pace: base %v target %v (%s)", p.base, p.target, p.why)
		}
		p.next(9*ms, 0, "routers' p99", window)
		if p.pace <= minPace {
			t.Fatalf("under the new target: pace %v (%s)", p.pace, p.why)
		}
	}
}
