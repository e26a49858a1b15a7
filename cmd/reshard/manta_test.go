package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reshard/reshard/orchestrator"
)

// mantaFlow is test/moray/manta.js's summary.
type mantaFlow struct {
	Ops             map[string]int    `json:"ops"`
	Errors          int               `json:"errors"`
	ErrorSamples    []string          `json:"errorSamples"`
	Stale           int               `json:"stale"`
	StaleSamples    []string          `json:"staleSamples"`
	DeleteLog       []string          `json:"deleteLog"`
	FastDelete      []string          `json:"fastDelete"`
	Live            map[string]string `json:"live"`
	CountMismatches []string          `json:"countMismatches"`
}

// TestMantaDuringSplit is Manta's web tier on reshard: the real libmanta
// sets up its buckets (manta with its post trigger) and installs its
// directory-count trigger through sql, then muskie-shaped work (puts and
// overwrites carrying x-muskie-prev-metadata, reads, listings by
// directory, deletes, upload records) runs through two routers while
// 1.moray is split. The clients see no error and nothing stale; every
// object the trigger had to log is in manta_delete_log or
// manta_fastdelete_queue exactly once across the shards; every live key
// is stored once; and every directory count still matches its entries.
func TestMantaDuringSplit(t *testing.T) {
	dir := morayClient(t)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "libmanta")); err != nil {
		t.Fatalf("libmanta is not installed in %s (make deps installs it): %v", dir, err)
	}
	l := labUp(t, "--shards", "2", "--peers", "2", "--routers", "2", "--vnodes", "512")
	stop := filepath.Join(t.TempDir(), "stop")

	flows := make([]mantaFlow, len(l.Moray))
	var wg sync.WaitGroup
	for i, addr := range l.Moray {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command("node", "manta.js", addr, "240", stop)
			cmd.Dir = dir
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil || json.Unmarshal(out, &flows[i]) != nil {
				t.Errorf("manta.js via %s: %v: %.2000s %.2000s", addr, err, out, stderr.String())
			}
		}()
	}
	// Let libmanta set up and the work get going before the split. The new
	// shard comes after libmanta's setup, as in a Manta that grows: the
	// directory-count trigger it installed through sql is not there, and
	// the split must bring it.
	time.Sleep(4 * time.Second)
	l.addShard(t, "3.moray", "1")
	start := time.Now()
	j := splitHalf(t, l, "1.moray", "3.moray")
	t.Logf("split took %s, write block %.1f ms", time.Since(start).Round(time.Millisecond), j.WriteBlockMS)
	time.Sleep(2 * time.Second) // some work after the flip, too
	if err := os.WriteFile(stop, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if j.State != orchestrator.Done {
		t.Fatalf("job %s: %s", j.ID, j.State)
	}

	var wantLog, wantFast []string
	live := map[string]string{}
	for i, f := range flows {
		t.Logf("manta.js via %s: ops %v, errors %d, stale %d, logged %d + %d fast", l.Moray[i], f.Ops, f.Errors, f.Stale, len(f.DeleteLog), len(f.FastDelete))
		if f.Errors != 0 || f.Stale != 0 || len(f.CountMismatches) != 0 {
			t.Errorf("via %s: errors %v, stale %v, directory counts %v", l.Moray[i], f.ErrorSamples, f.StaleSamples, f.CountMismatches)
		}
		if f.Ops["put"] < 50 || f.Ops["overwrite"] < 20 || f.Ops["delete"] < 5 || f.Ops["list"] < 5 {
			t.Errorf("via %s: too little work to mean anything: %v", l.Moray[i], f.Ops)
		}
		wantLog = append(wantLog, f.DeleteLog...)
		wantFast = append(wantFast, f.FastDelete...)
		for k, v := range f.Live {
			live[k] = v
		}
	}

	// What the shards hold, all of them together.
	var gotLog, gotFast, gotKeys []string
	for _, s := range []string{"1.moray", "2.moray", "3.moray"} {
		dsn := l.primary(s)
		gotLog = append(gotLog, query[[]string](t, dsn, "SELECT coalesce(array_agg(objectid), '{}') FROM manta_delete_log")...)
		gotFast = append(gotFast, query[[]string](t, dsn, "SELECT coalesce(array_agg(_key), '{}') FROM manta_fastdelete_queue")...)
		gotKeys = append(gotKeys, query[[]string](t, dsn, "SELECT coalesce(array_agg(_key), '{}') FROM manta")...)
	}
	sameMultiset(t, "manta_delete_log objects", gotLog, wantLog)
	sameMultiset(t, "manta_fastdelete_queue objects", gotFast, wantFast)
	var wantKeys []string
	for k := range live {
		wantKeys = append(wantKeys, k)
	}
	sameMultiset(t, "manta keys", gotKeys, wantKeys)
}

// sameMultiset fails the test unless got and want hold the same strings
// the same number of times, naming a few of the differences.
func sameMultiset(t *testing.T, what string, got, want []string) {
	t.Helper()
	n := map[string]int{}
	for _, s := range got {
		n[s]++
	}
	for _, s := range want {
		n[s]--
	}
	var extra, missing []string
	for s, c := range n {
		switch {
		case c > 0:
			extra = append(extra, s)
		case c < 0:
			missing = append(missing, s)
		}
	}
	sort.Strings(extra)
	sort.Strings(missing)
	if len(extra)+len(missing) > 0 {
		t.Errorf("%s: %d stored, %d expected; %d extra or duplicated (%s), %d missing (%s)", what, len(got), len(want),
			len(extra), strings.Join(first(extra, 5), ", "), len(missing), strings.Join(first(missing, 5), ", "))
	} else {
		t.Logf("%s: all %d stored exactly once", what, len(want))
	}
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
