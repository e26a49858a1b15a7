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
			hi := lo + int32(rng.IntN(3000))
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
			if got[c] == nil || *got[c] != *m {
				t.Fatalf("%v: chunk %d mask %x, want %x", ranges, c, got[c], *m)
			}
		}
	}
}

// Offset i of a chunk is position i of PostgreSQL's bit string.
func TestMaskText(t *testing.T) {
	m := masksOf([]int32{1024, 1025, 1024 + 64, 2047})
	txt := m[1].text()
	if len(txt) != 1024 || txt[0] != '1' || txt[1] != '1' || txt[2] != '0' || txt[64] != '1' || txt[1023] != '1' || m[0] != nil {
		t.Fatalf("mask text %q...", txt[:70])
	}
}
