package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reshard/reshard/orchestrator"
)

var npmOnce sync.Once

// morayClient returns test/moray with the npm moray client installed. The
// tests need Node.js; without it they skip and say so (make test's
// install step says it too).
func morayClient(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../../test/moray")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("Node.js is not installed: the Moray client tests need node and npm (apt-get install nodejs npm)")
	}
	mod := filepath.Join(dir, "node_modules", "moray", "package.json")
	if _, err := os.Stat(mod); err != nil {
		npmOnce.Do(func() {
			if _, err := exec.LookPath("npm"); err != nil {
				return
			}
			cmd := exec.Command("npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund")
			cmd.Dir = dir
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Logf("npm ci: %v\n%s", err, out)
			}
		})
	}
	if _, err := os.Stat(mod); err != nil {
		t.Skip("the npm moray client is not installed in test/moray and npm could not install it (run make deps)")
	}
	return dir
}

// TestMorayClient drives the router's Moray port with the real npm moray
// client 4.1.4: buckets with indexes, CRUD, etag conflicts, findObjects,
// batch, getTokens, both CRC variants, unknown and malformed RPCs.
func TestMorayClient(t *testing.T) {
	dir := morayClient(t)
	l := labUp(t, "--shards", "2", "--peers", "1", "--routers", "1", "--vnodes", "256")
	if len(l.Moray) != 1 {
		t.Fatalf("lab up --json reports moray addresses %v", l.Moray)
	}
	cmd := exec.Command("node", "scenario.js", l.Moray[0])
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	t.Logf("scenario:\n%s", out)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var sum struct {
		OK     bool `json:"ok"`
		Checks int  `json:"checks"`
	}
	if err != nil || json.Unmarshal([]byte(lines[len(lines)-1]), &sum) != nil || !sum.OK || sum.Checks < 40 {
		t.Fatalf("scenario failed (%v): %s", err, stderr.String())
	}
}

// splitHalf runs a logical split of from onto to in one datacenter and
// returns the job as start --json prints it.
func splitHalf(t *testing.T, l *labInfo, from, to string) orchestrator.Job {
	t.Helper()
	out, stderr, ok := run(t, l.env(), "start", "--from", from, "--to", to, "--split-half",
		"--dc-mode", "single", "--servers", "1", "--json")
	if !ok {
		t.Fatalf("start: %s %s", out, stderr)
	}
	var j orchestrator.Job
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatal(err)
	}
	return j
}

// morayLoad is load.js's summary.
type morayLoad struct {
	Puts, Deletes, Gets, Finds, Errors, Unknown int
	ErrorNames                                  map[string]int `json:"error_names"`
}

// TestMorayClientDuringSplit keeps the npm moray client writing through
// both routers' Moray ports while 1.moray is split; the client sees no
// error and verify finds nothing missing, stale or misplaced.
func TestMorayClientDuringSplit(t *testing.T) {
	dir := morayClient(t)
	l := labUp(t, "--shards", "2", "--peers", "2", "--routers", "2", "--vnodes", "512")
	l.addShard(t, "3.moray", "1")
	ledger := filepath.Join(t.TempDir(), "ledger.jsonl")
	var wg sync.WaitGroup
	sums := make([]morayLoad, len(l.Moray))
	for i, addr := range l.Moray {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command("node", "load.js", addr, ledger, "14", "6", string(rune('a'+i)))
			cmd.Dir = dir
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if err != nil || json.Unmarshal([]byte(lines[len(lines)-1]), &sums[i]) != nil {
				t.Errorf("load.js via %s: %v: %s %s", addr, err, out, stderr.String())
			}
			if stderr.Len() > 0 {
				t.Logf("load.js via %s: %s", addr, stderr.String())
			}
		}()
	}
	waitLedger(t, ledger, 300)
	start := time.Now()
	j := splitHalf(t, l, "1.moray", "3.moray")
	t.Logf("split took %s, write block %.1f ms", time.Since(start).Round(time.Millisecond), j.WriteBlockMS)
	wg.Wait()
	if j.State != orchestrator.Done {
		t.Fatalf("job %s: %s", j.ID, j.State)
	}
	for i, s := range sums {
		t.Logf("moray load via %s: %+v", l.Moray[i], s)
		if s.Errors != 0 || s.Puts < 200 || s.Finds == 0 {
			t.Fatalf("moray client via %s during the split: %+v", l.Moray[i], s)
		}
	}
	rep := verifyLedger(t, l, ledger)
	t.Logf("verify: %+v", rep)
}
