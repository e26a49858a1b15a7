package shard

import (
	"math/rand/v2"
	"testing"
)

// A range's masks are those of its vnodes one by one.
func TestMasksOfRanges(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		var ranges []Range
		var all []int32
		for n := rng.IntN(4); n >= 0; n-- {
			lo := int32(rng.IntN(1_000_000))
			hi := lo + int32(rng.IntN(300))
			if rng.IntN(10) == 0 {
				hi = lo // one vnode
			}
			ranges = append(ranges, Range{lo, hi})
			for v := lo; v <= hi; v++ {
				all = append(all, v)
			}
		}
		want, got := masksOf(all), masksOfRanges(ranges)
		if len(want) != len(got) {
			t.Fatalf("%v: %d chunks, want %d", ranges, len(got), len(want))
		}
		for c, m := range want {
			if got[c] != m {
				t.Fatalf("%v: chunk %d mask %x, want %x", ranges, c, got[c], m)
			}
		}
	}
}
