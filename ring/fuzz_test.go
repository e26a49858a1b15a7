package ring

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: a ring file or fash JSON either fails cleanly or parses to a
// ring that exports and reads back to an equal ring.
func FuzzParse(f *testing.F) {
	small, _ := New(SHA256, 8, []string{"a", "b"})
	b, _ := small.MarshalFile()
	f.Add(b)
	var fb bytes.Buffer
	small.WriteFash(&fb)
	f.Add(fb.Bytes())
	if files, _ := filepath.Glob("testdata/*.json"); len(files) > 0 {
		for _, p := range files[:min(3, len(files))] {
			if data, err := os.ReadFile(p); err == nil && len(data) < 1<<20 {
				f.Add(data)
			}
		}
	}
	f.Add([]byte(`{"vnodes":1,"pnodeToVnodeMap":{},"algorithm":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Parse(data)
		if err != nil {
			return
		}
		out, err := r.MarshalFile()
		if err != nil {
			t.Fatalf("marshal a parsed ring: %v", err)
		}
		back, err := Parse(out)
		if err != nil || !back.Equal(r) {
			t.Fatalf("ring does not round-trip: %v", err)
		}
		var fj bytes.Buffer
		if err := r.WriteFash(&fj); err != nil {
			t.Fatalf("export fash: %v", err)
		}
		viaFash, err := Parse(fj.Bytes())
		if err != nil || !viaFash.Equal(r) {
			t.Fatalf("fash export does not read back: %v", err)
		}
	})
}

// FuzzVnodeList: a list either fails cleanly or formats to a list that
// parses to the same set.
func FuzzVnodeList(f *testing.F) {
	for _, s := range []string{"0, 106, 943, 689", "0-99", "0-999996/4", "-5", "1,,x", "7-3", "0-4294967295"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		vs, err := ParseVnodeList(s, 1_000_000)
		if err != nil {
			return
		}
		back, err := ParseVnodeList(FormatVnodeList(vs), 1_000_000)
		if err != nil || len(back) != len(vs) {
			t.Fatalf("%q: %d vnodes, formatted and parsed %d: %v", s, len(vs), len(back), err)
		}
		seen := map[uint32]bool{}
		for _, v := range vs {
			seen[v] = true
		}
		for _, v := range back {
			if !seen[v] {
				t.Fatalf("%q: %d appeared", s, v)
			}
		}
	})
}
