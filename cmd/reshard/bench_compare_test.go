package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reshard/reshard/perf"
)

// A short run of `bench compare` (issue 21): the harness measures both
// sides for real and writes what it measured. The figures of a one-second
// round say nothing; that each side did work, and the table shows it, does.
func TestBenchCompareQuick(t *testing.T) {
	parallelLab(t)
	md := filepath.Join(t.TempDir(), "perf.md")
	out, stderr, ok := run(t, nil, "bench", "compare", "--only", "router,copy,ring", "--quick", "--json", "--markdown", md)
	if !ok {
		t.Fatalf("bench compare: %s %s", out, stderr)
	}
	var rep perf.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("bench compare printed %q: %v", out, err)
	}
	areas := map[string]int{}
	for _, r := range rep.Results {
		areas[r.Area]++
		if r.Skipped != "" || r.Ours <= 0 || r.Base <= 0 || (!r.Added && r.Ratio <= 0) {
			t.Errorf("%s %s: %+v", r.Area, r.Name, r)
		}
	}
	// Gets and puts, each through HTTP and the Moray port, each a rate
	// and a p99; one copy and its verify; the ring's flip, reload and
	// both together at 1M against 1k, and flip and reload of a delta
	// against a whole ring.
	if areas["router"] != 8 || areas["copy"] != 1 || areas["verify"] != 1 || areas["ring"] != 5 || len(areas) != 4 {
		t.Fatalf("results by area: %v", areas)
	}
	for _, r := range rep.Results {
		// Whatever the machine's noise, a delta of a few bytes is not
		// slower to reload than a million-vnode ring file.
		if r.Area == "ring" && strings.Contains(r.Name, "reload") && strings.Contains(r.Name, "delta") && r.Ratio < 1 {
			t.Errorf("a delta reloads slower than a whole ring: %+v", r)
		}
	}
	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"reshard bench compare --only router,copy", "| router | gets, HTTP |", "| copy | logical copy rows/s |", "| ring | router reload, 1M vnodes |"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the Markdown lacks %q:\n%s", want, b)
		}
	}
	for _, bad := range [][]string{{"--only", "routr"}, {"--rounds", "0"}, {"--per", "1ms"}, {"--concurrency", "0"}, {"--markdown", "/nonexistent/dir/x.md"}, {"--flips", "3"}} {
		if _, stderr, ok := run(t, nil, append([]string{"bench", "compare"}, bad...)...); ok || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("bench compare %v: ok=%v, stderr %q", bad, ok, stderr)
		}
	}
}
