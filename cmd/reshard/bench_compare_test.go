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
	out, stderr, ok := run(t, nil, "bench", "compare", "--only", "router,copy", "--quick", "--json", "--markdown", md)
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
	// and a p99; one copy and its verify.
	if areas["router"] != 8 || areas["copy"] != 1 || areas["verify"] != 1 || len(areas) != 3 {
		t.Fatalf("results by area: %v", areas)
	}
	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"reshard bench compare --only router,copy", "| router | gets, HTTP |", "| copy | logical copy rows/s |"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the Markdown lacks %q:\n%s", want, b)
		}
	}
	for _, bad := range [][]string{{"--only", "routr"}, {"--rounds", "0"}, {"--per", "1ms"}, {"--concurrency", "0"}, {"--markdown", "/nonexistent/dir/x.md"}} {
		if _, stderr, ok := run(t, nil, append([]string{"bench", "compare"}, bad...)...); ok || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("bench compare %v: ok=%v, stderr %q", bad, ok, stderr)
		}
	}
}
