package quantile

import (
	"testing"
	"time"
)

func TestOf(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	for q, want := range map[float64]time.Duration{0.99: 10, 0.5: 5, 0.9: 9, 1: 10, 0.01: 1} {
		if got := Of(ds, q); got != want {
			t.Errorf("Of(1..10, %v) = %v, want %v", q, got, want)
		}
	}
	if ds[0] != 5 {
		t.Error("Of sorted its argument")
	}
	if Of(nil, 0.99) != 0 {
		t.Error("Of(nil) != 0")
	}
}
