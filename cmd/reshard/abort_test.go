package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reshard/reshard/load"
	"github.com/reshard/reshard/orchestrator"
)

// Abort before the ring flips undoes everything; after, it is refused.
func TestAbort(t *testing.T) {
	parallelLab(t)
	l := labUp(t, "--shards", "2", "--peers", "1", "--routers", "1", "--vnodes", "64")
	ledger := filepath.Join(t.TempDir(), "ledger.jsonl")
	out, stderr, ok := run(t, l.env(), append([]string{"load", "--duration", "2s", "--rate", "500", "--keys", "300", "--ledger", ledger}, l.routerArgs()...)...)
	if !ok {
		t.Fatalf("load: %s %s", out, stderr)
	}
	origin := l.primary("1.moray")
	dst := l.addShard(t, "3.moray", "1")
	ownedBefore := query[int64](t, origin, `select count(*) from reshard_vnodes where writable`)

	// Killed while frozen, after the copy: the destination holds rows, the
	// origin's vnodes are frozen, replication objects exist.
	_, stderr, _ = run(t, l.env(), "start", "--from", "1.moray", "--to", "3.moray", "--split-half", "--servers", "1",
		"--crash-at", orchestrator.FaultPoint("cutover", orchestrator.PointFrozen), "--lease-ttl", "2s")
	id := regexp.MustCompile(`job (\S+) created`).FindStringSubmatch(stderr)[1]
	if n := query[int64](t, dst, `select count(*) from load_0`); n == 0 {
		t.Fatal("nothing was copied before the kill")
	}
	if n := query[int64](t, origin, `select count(*) from reshard_vnodes where not writable`); n == 0 {
		t.Fatal("the origin is not frozen")
	}
	out, _, _ = run(t, l.env(), "status", id)
	if !strings.Contains(out, "frozen on 1.moray") {
		t.Errorf("status does not show the frozen vnodes:\n%s", out)
	}
	if _, stderr, ok := run(t, l.env(), "abort", id); !ok {
		t.Fatalf("abort: %s", stderr)
	}
	checks := map[string]struct {
		dsn, sql string
		want     int64
	}{
		"slots on the origin":           {origin, `select count(*) from pg_replication_slots`, 0},
		"publications on the origin":    {origin, `select count(*) from pg_publication`, 0},
		"writable vnodes on the origin": {origin, `select count(*) from reshard_vnodes where writable`, ownedBefore},
		"frozen vnodes on the origin":   {origin, `select count(*) from reshard_vnodes where not writable`, 0},
		"subscriptions on the dest":     {dst, `select count(*) from pg_subscription`, 0},
		"rows on the destination":       {dst, `select (select count(*) from load_0) + (select count(*) from load_1) + (select count(*) from load_2) + (select count(*) from load_3)`, 0},
		"ownership on the destination":  {dst, `select count(*) from reshard_vnodes`, 0},
		"markers on the origin":         {origin, `select count(*) from reshard_markers`, 0},
	}
	for name, c := range checks {
		if got := query[int64](t, c.dsn, c.sql); got != c.want {
			t.Errorf("%s: %d, want %d", name, got, c.want)
		}
	}
	var v statusView
	out, _, _ = run(t, l.env(), "status", id, "--json")
	json.Unmarshal([]byte(out), &v)
	if v.Job.State != orchestrator.Aborted || len(v.Locks.Pnodes) != 0 || v.Locks.DumpLock != nil || v.Job.RingVersionAfter != 0 {
		t.Fatalf("after abort: %s", out)
	}
	if rg := ringOf(t, l); rg.PnodeVnodeCount("3.moray") != 0 {
		t.Fatal("the ring changed")
	}
	verifyLedger(t, l, ledger)

	// The same split again, with a soak, killed in it after the ring
	// flip: abort is refused (revert or complete instead).
	_, stderr, _ = run(t, l.env(), "start", "--from", "1.moray", "--to", "3.moray", "--split-half", "--servers", "1",
		"--complete", "after:2s", "--crash-at", "soak", "--lease-ttl", "2s")
	id = regexp.MustCompile(`job (\S+) created`).FindStringSubmatch(stderr)[1]
	if _, stderr, ok := run(t, l.env(), "abort", id); ok || !strings.Contains(stderr, "'reshard revert "+id+"' goes back") {
		t.Fatalf("abort after the flip: %s", stderr)
	}
	// The service form picks the job up, ends its soak on time and
	// completes it.
	svc := exec.Command(binary, "run", "--poll", "200ms")
	svc.Env = append(os.Environ(), l.env()...)
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	defer svc.Process.Kill()
	for i := 0; ; i++ {
		var v statusView
		out, _, _ := run(t, l.env(), "status", id, "--json")
		json.Unmarshal([]byte(out), &v)
		if v.Job != nil && v.Job.State == orchestrator.Done {
			break
		}
		if i > 300 {
			t.Fatalf("reshard run did not finish the job: %s", out)
		}
		sleep(100)
	}
	svc.Process.Signal(syscall.SIGTERM)
	svc.Wait()
	var done statusView
	out, _, _ = run(t, l.env(), "status", id, "--json")
	json.Unmarshal([]byte(out), &done)
	if soak := done.Job.Phases[slices.IndexFunc(done.Job.Phases, func(p orchestrator.Phase) bool { return p.Name == "soak" })]; soak.Ended == nil ||
		soak.Ended.Sub(done.Job.FlippedAt) < 2*time.Second {
		t.Fatalf("the soak of 2s ended %v after the flip at %v", soak.Ended, done.Job.FlippedAt)
	}
	verifyLedger(t, l, ledger)
}

// Issue 19: `reshard abort` while a running orchestrator copies at full
// speed (no load, many rows). The running orchestrator sees the request
// and undoes the job: the origin is left as it was (no slot, publication,
// markers, ownership change) and the destination empty (logical: no rows
// and no ownership; physical: no new peers and no pnode). make test runs
// the logical strategy; make faults both, on the distributed lab.
func TestAbortDuringCopy(t *testing.T) {
	parallelLab(t)
	full := os.Getenv("RESHARD_FAULTS") == "full"
	strategies := []string{"logical"}
	if full {
		strategies = append(strategies, "physical")
	}
	for _, strategy := range strategies {
		t.Run(strategy, func(t *testing.T) {
			args := []string{"--shards", "2", "--peers", "1", "--routers", "1", "--vnodes", "256"}
			if distributedFaults(full) {
				args = append(args, "--hosts", "--dcs", "3", "--etcd-members", "3")
			}
			l := labUp(t, args...)
			httpDo(t, "PUT", l.Routers[0]+"/buckets/manta", `{}`)
			if err := load.Fill(context.Background(), l.etcdClient(t), "manta", 150000, io.Discard, nil); err != nil {
				t.Fatal(err)
			}
			origin := l.primary("1.moray")
			owned := query[int64](t, origin, `select count(*) from reshard_vnodes where writable`)
			rows := query[int64](t, origin, `select count(*) from manta`)
			start := []string{"start", "--from", "1.moray", "--to", "3.moray", "--split-half", "--servers", "1",
				"--strategy", strategy, "--detach"}
			dst := ""
			if strategy == "logical" {
				dst = l.addShard(t, "3.moray", "1")
			} else {
				start = append(start, "--lab", l.Dir)
			}
			out, stderr, ok := run(t, l.env(), start...)
			if !ok {
				t.Fatalf("start: %s", stderr)
			}
			f := &faultCtx{t: t, l: l, job: strings.TrimSpace(out)}
			orch := startProcess(t, l.env(), "resume", f.job)
			// The copy (logical) or the base backup and catch-up (physical).
			if p := f.waitPhase("copy", "add-peers"); p != "copy" && p != "add-peers" {
				t.Fatalf("the job never copied: %s (%s)", p, orch.stderr())
			}
			sleep(300)
			out, stderr, ok = run(t, l.env(), "abort", f.job)
			if !ok || !strings.Contains(out, "aborted and undone") {
				t.Fatalf("abort during the copy: %s %s", out, stderr)
			}
			if code, stderr := orch.wait(time.Minute); code == 0 || !strings.Contains(stderr, "abort") {
				t.Fatalf("the running orchestrator exited %d: %s", code, stderr)
			}
			if j := jobState(t, l, f.job); j.State != orchestrator.Aborted {
				t.Fatalf("job is %s", j.State)
			}
			checkUndone(t, origin, dst, owned, rows)
			if strategy == "physical" {
				if out, _, _ := run(t, nil, "lab", "status", "--dir", l.Dir); strings.Contains(out, "3.moray") {
					t.Fatalf("new peers left after the abort:\n%s", out)
				}
				if out, _, _ := run(t, l.env(), "pnode", "list"); strings.Contains(out, "3.moray") {
					t.Fatalf("3.moray still registered:\n%s", out)
				}
			}
			if rg := ringOf(t, l); rg.PnodeVnodeCount("3.moray") != 0 {
				t.Fatal("the ring changed")
			}
		})
	}
}

// checkUndone asserts that an aborted job left the origin as it was (no
// slot, publication or marker; its ownership and rows) and the logical
// destination dst, if any, empty.
func checkUndone(t *testing.T, origin, dst string, owned, rows int64) {
	t.Helper()
	type check struct {
		dsn, sql string
		want     int64
	}
	checks := map[string]check{
		"slots on the origin":           {origin, `select count(*) from pg_replication_slots`, 0},
		"publications on the origin":    {origin, `select count(*) from pg_publication`, 0},
		"markers on the origin":         {origin, `select count(*) from reshard_markers`, 0},
		"writable vnodes on the origin": {origin, `select count(*) from reshard_vnodes where writable`, owned},
		"rows on the origin":            {origin, `select count(*) from manta`, rows},
	}
	if dst != "" {
		checks["subscriptions on the destination"] = check{dst, `select count(*) from pg_subscription`, 0}
		checks["rows on the destination"] = check{dst, `select count(*) from manta`, 0}
		checks["ownership on the destination"] = check{dst, `select count(*) from reshard_vnodes`, 0}
	}
	for name, c := range checks {
		if got := query[int64](t, c.dsn, c.sql); got != c.want {
			t.Errorf("%s: %d, want %d", name, got, c.want)
		}
	}
}
