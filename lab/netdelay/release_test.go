package netdelay

import (
	"context"
	"sync"
	"testing"
	"time"
)

type acceptLog struct {
	mu    sync.Mutex
	ids   []uint32
	times []time.Time
}

func (l *acceptLog) accept(id uint32) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ids = append(l.ids, id)
	l.times = append(l.times, time.Now())
	return nil
}

func (l *acceptLog) snapshot() ([]uint32, []time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]uint32(nil), l.ids...), append([]time.Time(nil), l.times...)
}

// A burst is released together after one delay, not one delay per packet,
// and a later packet waits for its own due time.
func TestReleaseBurstWaitsOneDelay(t *testing.T) {
	const delay = 30 * time.Millisecond
	in := make(chan held, 1000)
	var log acceptLog
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- release(ctx, in, log.accept) }()

	start := time.Now()
	for id := uint32(1); id <= 500; id++ {
		in <- held{id: id, due: start.Add(delay)}
	}
	later := start.Add(3 * delay)
	in <- held{id: 501, due: later}

	deadline := time.Now().Add(2 * time.Second)
	for {
		ids, _ := log.snapshot()
		if len(ids) > 0 && ids[len(ids)-1] == 501 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("packet 501 never accepted; accepted %v", ids)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	ids, times := log.snapshot()
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Fatalf("verdicts out of order: %v", ids)
		}
	}
	// The burst was all in the channel before it came due, so few verdicts
	// cover it; one per packet would mean no coalescing.
	if len(ids) > 10 {
		t.Errorf("%d verdicts for 501 packets, want a handful", len(ids))
	}
	burstDone := times[len(times)-2]
	if ids[len(ids)-2] != 500 {
		t.Fatalf("burst ended with verdict up to %d, want 500: %v", ids[len(ids)-2], ids)
	}
	if got := burstDone.Sub(start); got < delay || got > delay+20*time.Millisecond {
		t.Errorf("burst of 500 released after %v, want ~%v", got, delay)
	}
	if got := times[len(times)-1].Sub(start); got < 3*delay {
		t.Errorf("packet 501 released after %v, before its due time %v", got, 3*delay)
	}
}

// A stopping delayer accepts what it still holds at once.
func TestReleaseFlushesOnStop(t *testing.T) {
	in := make(chan held, 10)
	var log acceptLog
	far := time.Now().Add(time.Hour)
	for id := uint32(7); id <= 9; id++ {
		in <- held{id: id, due: far}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- release(ctx, in, log.accept) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Second):
		t.Fatal("release did not stop")
	}
	if ids, _ := log.snapshot(); len(ids) != 1 || ids[0] != 9 {
		t.Fatalf("accepted %v on stop, want [9]", ids)
	}
}
