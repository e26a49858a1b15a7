package main

import (
	"encoding/json"
	"testing"
)

// A production-size ring, end to end: `bench scale` splits 1.moray in half
// on a 1,000,000-vnode ring under load through two routers, verifies every
// acknowledged write, and reports what it measured.
func TestScaleMillionVnodes(t *testing.T) {
	if testing.Short() {
		t.Skip("a 1,000,000-vnode split")
	}
	out, stderr, ok := run(t, nil, "bench", "scale", "--cases", "1000000x200000", "--rate", "500", "--json")
	if !ok {
		t.Fatalf("bench scale: %s %s", out, stderr)
	}
	var rep scaleReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Rows) != 1 {
		t.Fatalf("bench scale printed %q: %v", out, err)
	}
	r := rep.Rows[0]
	t.Logf("%+v", r)
	if r.Vnodes != 1_000_000 || r.ClientErrors != 0 || r.Missing+r.Stale+r.Misplaced != 0 {
		t.Fatalf("split on a 1M-vnode ring: %+v", r)
	}
	if r.WriteBlockMS <= 0 || r.WriteBlockMS >= 1000 || r.FlipMS <= 0 {
		t.Fatalf("write block %.1f ms, flip %.1f ms", r.WriteBlockMS, r.FlipMS)
	}
	if r.RingReloadMS <= 0 || r.RouterPeakMB <= 0 || r.RingBytes <= 0 || r.CopyRowsPerSec <= 0 || r.LoadWritesPerSec <= 0 {
		t.Fatalf("a measurement is missing: %+v", r)
	}
	if _, stderr, ok := run(t, nil, "bench", "scale", "--cases", "1000x"); ok {
		t.Fatalf("a malformed case was accepted: %s", stderr)
	}
}
