package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// `reshard demo --json` end to end, for each strategy, with fewer rows.
func TestDemoJSON(t *testing.T) {
	for _, strategy := range []string{"logical", "physical"} {
		t.Run(strategy, func(t *testing.T) {
			out, stderr, ok := run(t, nil, "demo", "--strategy", strategy, "--rows", "20000", "--json", "--ui", "127.0.0.1:0")
			if !ok {
				t.Fatalf("demo: %s", stderr)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			var r demoResult
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
				t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
			}
			if r.Strategy != strategy || r.Rows != 20000 || r.AckedWrites == 0 || r.ClientErrors != 0 ||
				r.Missing != 0 || r.Stale != 0 || r.Misplaced != 0 {
				t.Fatalf("demo result: %+v", r)
			}
			checkWriteBlock(t, strategy, r.WriteBlockMS, r.PromoteMS)
			if len(r.Phases) < 10 || r.TotalSeconds <= 0 {
				t.Fatalf("phases: %+v", r.Phases)
			}
			for _, want := range []string{"== summary", "lab down", "phase cutover", "dashboard: http://127.0.0.1:"} {
				if !strings.Contains(stderr, want) {
					t.Errorf("demo output lacks %q", want)
				}
			}
			// The physical strategy's new peers are made by the spare
			// hosts' agents, and the new primary serves writes.
			if strategy == "physical" && (strings.Count(stderr, " on spare-") != 3 ||
				!strings.Contains(stderr, "primary  3.moray-1  on spare-1  pg ok, read-write")) {
				t.Errorf("demo output does not show 3.moray's peers on the spare hosts:\n%s", stderr)
			}
		})
	}
	if _, stderr, ok := run(t, nil, "demo", "--strategy", "magic"); ok || !strings.Contains(stderr, "--strategy") {
		t.Fatalf("bad strategy: %s", stderr)
	}
}
