package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/orchestrator"
)

// RFD 103 steps 5, 6 and 9: a reshard waits for a running dump, and a dump
// refuses (or waits) while a reshard holds the dump lock.
func TestDumpAndTheDumpLock(t *testing.T) {
	l := labUp(t, "--shards", "2", "--peers", "1", "--routers", "1", "--vnodes", "64")
	for i, body := range []string{`{}`, `{"a":1}`, `{"b":2}`} {
		httpDo(t, "PUT", l.Routers[0]+"/buckets/manta", `{}`)
		if resp, b := httpDo(t, "PUT", l.Routers[0]+"/buckets/manta/objects/k"+string(rune('a'+i)), body); resp.StatusCode != 200 {
			t.Fatalf("put: %s", b)
		}
	}
	out := t.TempDir()
	stdout, stderr, ok := run(t, l.env(), "dump", "--pnode", "1.moray", "--out", out, "--json")
	var d struct {
		File  string
		Bytes int64
	}
	if !ok || json.Unmarshal([]byte(stdout), &d) != nil || d.Bytes == 0 {
		t.Fatalf("dump: %s %s", stdout, stderr)
	}
	if b, err := os.ReadFile(d.File); err != nil || !strings.HasPrefix(string(b), "PGDMP") {
		t.Fatalf("dump file %s is not a pg_dump archive: %v", d.File, err)
	}

	ctx := context.Background()
	cli := l.etcdClient(t)
	lease, err := cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}

	// A dump is running on 1.moray: the reshard takes the lock, then waits.
	releaseDump, err := etcd.DumpMarker(ctx, cli, lease.ID, "1.moray", "nightly")
	if err != nil {
		t.Fatal(err)
	}
	l.addShard(t, "3.moray", "1")
	var wg sync.WaitGroup
	var jobOut, jobErr string
	var jobOK bool
	wg.Add(1)
	go func() {
		defer wg.Done()
		jobOut, jobErr, jobOK = run(t, l.env(), "start", "--from", "1.moray", "--to", "3.moray", "--split-half", "--servers", "1", "--json")
	}()
	var waited time.Duration
	for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(100 * time.Millisecond) {
		out, _, _ := run(t, l.env(), "status", "--json")
		var v statusView
		json.Unmarshal([]byte(out), &v)
		if v.Job == nil || v.Job.Current != "dump-lock" {
			continue
		}
		if p := v.Job.Phases[5].Progress; p != nil && strings.Contains(p.Note, "1.moray/nightly") && v.Locks.DumpLock != nil {
			if waited == 0 {
				waited = time.Since(start)
				time.Sleep(time.Second) // it keeps waiting
				if st := jobState(t, l, v.Job.ID); st.Current != "dump-lock" {
					t.Fatalf("the job went on while the dump ran: %s", st.Current)
				}
				break
			}
		}
	}
	if waited == 0 {
		t.Fatal("the job never waited for the running dump")
	}
	// While the reshard holds the lock, a new dump refuses to start.
	if _, stderr, ok := run(t, l.env(), "dump", "--pnode", "2.moray", "--out", out); ok || !strings.Contains(stderr, "dump lock is held by job:") {
		t.Fatalf("dump under the lock: ok=%v %s", ok, stderr)
	}
	if stdout, _, _ := run(t, l.env(), "locks"); !strings.Contains(stdout, "dump lock: held by job:") || !strings.Contains(stdout, "1.moray/nightly") {
		t.Fatalf("locks: %s", stdout)
	}
	releaseDump()
	wg.Wait()
	var j orchestrator.Job
	if !jobOK || json.Unmarshal([]byte(jobOut), &j) != nil || j.State != orchestrator.Done {
		t.Fatalf("job after the dump: %s %s", jobOut, jobErr)
	}

	// A lock whose holder died: it goes when the lease expires, and a
	// waiting dump then runs.
	dead, err := cli.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := etcd.AcquireDumpLock(ctx, cli, dead.ID, "job:dead"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stdout, stderr, ok = run(t, l.env(), "dump", "--pnode", "2.moray", "--out", out, "--wait")
	if !ok || !strings.Contains(stderr, "waiting: the dump lock is held by job:dead") || time.Since(start) < time.Second {
		t.Fatalf("dump --wait on a dead holder's lock: %s %s", stdout, stderr)
	}
	if files, _ := filepath.Glob(filepath.Join(out, "2.moray-*.dump")); len(files) != 1 {
		t.Fatalf("dump files: %v", files)
	}
	if _, stderr, ok := run(t, l.env(), "dump", "--pnode", "9.moray", "--out", out); ok || !strings.Contains(stderr, "not found") {
		t.Fatalf("dump of an unknown pnode: %s", stderr)
	}
}
