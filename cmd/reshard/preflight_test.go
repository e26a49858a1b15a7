package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reshard/reshard/load"
	"github.com/reshard/reshard/orchestrator"
	"github.com/reshard/reshard/postgres"
)

// guardLab is the guard-rail tests' lab: 1.moray, whose primary is
// origin, with 3,000 objects in bucket manta, and an empty 3.moray, whose
// primary is dst, to split them to.
func guardLab(t *testing.T) (l *labInfo, origin, dst string) {
	l = labUp(t, "--shards", "2", "--peers", "1", "--routers", "1", "--vnodes", "64", "--spare-hosts", "0")
	httpDo(t, "PUT", l.Routers[0]+"/buckets/manta", `{}`)
	if err := load.Fill(context.Background(), l.etcdClient(t), "manta", 3000, io.Discard, nil); err != nil {
		t.Fatal(err)
	}
	return l, l.primary("1.moray"), l.addShard(t, "3.moray", "1")
}

// Issue 20's guard rails: each pre-flight check trips on what it guards
// against. `start --dry-run` prints the failed check and exits non-zero;
// `start` refuses with one line naming it and how to fix it; and nothing
// changes: not etcd (its revision), not the origin (slots, publications,
// replica identity, ownership), not the destination.
func TestPreflightRefuses(t *testing.T) {
	l, origin, dst := guardLab(t)
	ctx := context.Background()
	cli := l.etcdClient(t)
	snapshot := func() string {
		resp, err := cli.Get(ctx, "/reshard/", etcdPrefix())
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join([]string{itoa(resp.Header.Revision),
			query[string](t, origin, `select (select count(*) from pg_replication_slots) || '/' || (select count(*) from pg_publication)
				|| '/' || (select relreplident::text from pg_class where relname = 'manta') || '/' || (select count(*) from reshard_vnodes where writable)`),
			query[string](t, dst, `select (select count(*) from reshard_vnodes) || '/' || (select count(*) from pg_tables where tablename = 'manta')`),
		}, "|")
	}
	before := snapshot()
	refused := func(check string, extra ...string) {
		t.Helper()
		args := append([]string{"start", "--from", "1.moray", "--to", "3.moray", "--split-half", "--servers", "1"}, extra...)
		out, stderr, ok := run(t, l.env(), append(args, "--dry-run")...)
		if ok || !strings.Contains(out, "check FAIL "+check) || !strings.Contains(out, "fix: ") {
			t.Fatalf("dry run with %s failing: exit ok=%v\n%s%s", check, ok, out, stderr)
		}
		_, stderr, ok = run(t, l.env(), args...)
		msg := strings.TrimSpace(stderr)
		if ok || strings.Count(msg, "\n") != 0 || !strings.Contains(msg, "pre-flight check failed: "+check) {
			t.Fatalf("start with %s failing: %q", check, stderr)
		}
		t.Logf("refused: %s", msg)
		if after := snapshot(); after != before {
			t.Fatalf("a start refused for %s changed something: %s, before %s", check, after, before)
		}
	}

	// A transaction open on the origin longer than --max-xact-age.
	conn, err := postgres.Connect(ctx, origin)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `select txid_current()`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	refused("long transactions on origin 1.moray", "--max-xact-age", "1s")
	tx.Rollback(ctx)
	conn.Close(ctx)

	// A bucket table without a primary key: replication could not find
	// the rows an update or delete names.
	query[int](t, origin, `alter table manta drop constraint manta_pkey`)
	refused("replica identity of the bucket tables on origin 1.moray")
	query[int](t, origin, `alter table manta add primary key (_key)`)

	// With those fixed, the dry run passes, printing every check.
	out, stderr, ok := run(t, l.env(), "start", "--from", "1.moray", "--to", "3.moray", "--split-half", "--servers", "1", "--dry-run")
	if !ok || strings.Contains(out, "check FAIL") || strings.Count(out, "check ok") < 5 || !strings.Contains(out, "estimate:") {
		t.Fatalf("dry run: %s %s", out, stderr)
	}

	// A destination whose disk cannot take its share of the copy.
	if os.Geteuid() == 0 {
		if out, stderr, ok := run(t, nil, "lab", "disk", "--dir", l.Dir, "--peer", "3.moray-1", "--size", "+16M"); !ok {
			t.Fatalf("lab disk: %s %s", out, stderr)
		}
		refused("disk of destination 3.moray")
		// --skip-check reports it and lets the job start.
		out, stderr, ok := run(t, l.env(), "start", "--from", "1.moray", "--to", "3.moray", "--split-half", "--servers", "1",
			"--dry-run", "--skip-check", "disk")
		if !ok || !strings.Contains(out, "check warn disk of destination 3.moray: skipped (--skip-check disk)") {
			t.Fatalf("dry run with --skip-check disk: %s %s", out, stderr)
		}
	} else {
		t.Log("the destination's disk is made small with a tmpfs: root only")
	}

}

// A held-back slot: the destination stops consuming (its subscription
// disabled by hand while the orchestrator is stopped in the copy) and the
// origin keeps writing. Past --max-slot-lag-bytes the job pauses and says
// why; past twice it aborts, drops its slots and says why, and nothing of
// it is left on either side.
func TestSlotLagGuard(t *testing.T) {
	l, origin, dst := guardLab(t)
	const budget = 8 << 20
	p := startProcess(t, l.env(), "start", "--from", "1.moray", "--to", "3.moray", "--split-half", "--servers", "1",
		"--max-slot-lag-bytes", itoa(int64(budget)), "--pause-at", "copy:mid")
	if !p.waitStopped(time.Minute) {
		t.Fatalf("the orchestrator did not stop in the copy: %s", p.stderr())
	}
	id := jobCreated.FindStringSubmatch(p.stderr())[1]
	query[int](t, dst, `alter subscription reshard_`+id+`_0 disable`)
	query[int](t, origin, `create table filler (x text)`)
	fill := func(mib int) {
		query[int](t, origin, `insert into filler select repeat(md5(g::text), 32) from generate_series(1, $1) g`, mib*1024)
	}
	fill(12) // over the budget, under twice it
	p.signal(syscall.SIGCONT)
	var st statusView
	for deadline := time.Now().Add(30 * time.Second); ; sleep(200) {
		out, _, _ := run(t, l.env(), "status", id, "--json")
		json.Unmarshal([]byte(out), &st)
		if st.Job != nil && strings.HasPrefix(st.Job.Paused, "paused: slot reshard_"+id) {
			t.Logf("%s", st.Job.Paused)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job did not pause: %s", out)
		}
	}
	fill(12) // past twice the budget
	code, stderr := p.wait(time.Minute)
	out, _, _ := run(t, l.env(), "status", id, "--json")
	json.Unmarshal([]byte(out), &st)
	if code == 0 || st.Job.State != orchestrator.Aborted || !strings.Contains(st.Job.Error, "past twice --max-slot-lag-bytes") {
		t.Fatalf("exit %d, job %s %q: %s", code, st.Job.State, st.Job.Error, stderr)
	}
	t.Logf("%s", st.Job.Error)
	checkClean(t, "the origin", origin)
	checkClean(t, "the destination", dst)
	if n := query[int64](t, dst, `select count(*) from manta`); n != 0 {
		t.Fatalf("the destination keeps %d rows", n)
	}
}

// After the flip the way back's slot on the destination is held to the
// same limit: a job soaking (--complete after:) whose origin stops taking
// the way back (its subscription disabled by hand) while the destination
// writes closes the way back past twice the budget, says why, and
// completes; it cannot be reverted.
func TestSlotLagGuardWayBack(t *testing.T) {
	l, origin, dst := guardLab(t)
	p := startProcess(t, l.env(), "start", "--from", "1.moray", "--to", "3.moray", "--split-half", "--servers", "1",
		"--max-slot-lag-bytes", itoa(int64(4<<20)), "--complete", "after:2m")
	var st statusView
	id := ""
	for deadline := time.Now().Add(time.Minute); ; sleep(200) {
		if m := jobCreated.FindStringSubmatch(p.stderr()); m != nil && id == "" {
			id = m[1]
		}
		if id != "" {
			out, _, _ := run(t, l.env(), "status", id, "--json")
			json.Unmarshal([]byte(out), &st)
			if st.Job != nil && st.Job.Current == "soak" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job did not reach its soak: %s", p.stderr())
		}
	}
	query[int](t, origin, `alter subscription reshard_`+id+`_0_back disable`)
	query[int](t, dst, `create table filler (x text)`)
	query[int](t, dst, `insert into filler select repeat(md5(g::text), 32) from generate_series(1, 12 * 1024) g`)
	if code, stderr := p.wait(time.Minute); code != 0 {
		t.Fatalf("the job did not complete: %s", stderr)
	}
	out, _, _ := run(t, l.env(), "status", id, "--json")
	json.Unmarshal([]byte(out), &st)
	if st.Job.State != orchestrator.Done || !strings.Contains(st.Job.WayBackClosed, "past twice --max-slot-lag-bytes") {
		t.Fatalf("job %s, way back closed: %q", st.Job.State, st.Job.WayBackClosed)
	}
	t.Logf("%s", st.Job.WayBackClosed)
	if soak := st.Job.Phases[slices.IndexFunc(st.Job.Phases, func(p orchestrator.Phase) bool { return p.Name == "soak" })]; soak.Seconds > 60 {
		t.Fatalf("the soak ran its whole 2m (%.0fs) instead of closing the way back", soak.Seconds)
	}
	checkClean(t, "the origin", origin)
	checkClean(t, "the destination", dst)
	if _, stderr, ok := run(t, l.env(), "revert", id); ok || !strings.Contains(stderr, "has completed") {
		t.Fatalf("revert after the way back closed: %s", stderr)
	}
}
