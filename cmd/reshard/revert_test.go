package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/load"
	"github.com/reshard/reshard/orchestrator"
	"github.com/reshard/reshard/ring"
	"github.com/reshard/reshard/shard"
)

// The main test of a split (issue 1) and of the way back (issue 20). Under load through two routers, for both
// strategies: a split that keeps its way back open (--complete manual), a
// revert, the split again, and complete. The load runs through each step
// and the ledger is verified after it; clients see no errors; each write
// block, forward and back, is under a second; at the end each side holds
// exactly the rows of the vnodes it owns and nothing of the jobs.
func TestSplitRevertComplete(t *testing.T) {
	for _, strategy := range []string{"logical", "physical"} {
		t.Run(strategy, func(t *testing.T) { splitRevertComplete(t, strategy) })
	}
}

func splitRevertComplete(t *testing.T, strategy string) {
	l := labUp(t, "--shards", "2", "--peers", "2", "--routers", "2", "--vnodes", "512",
		"--spare-hosts", spareHostsFor(orchestrator.StrategyName(strategy), 1))
	extra := []string{"--strategy", strategy}
	if strategy == "logical" {
		l.addShard(t, "3.moray", "1")
	} else {
		extra = append(extra, "--lab", l.Dir)
	}
	origin := l.primary("1.moray")
	ledger := filepath.Join(t.TempDir(), "ledger.jsonl")
	// underLoad runs one step while the load runs through both routers,
	// then checks the clients and the ledger once the load has stopped.
	underLoad := func(step, duration string, fn func() orchestrator.Job) orchestrator.Job {
		t.Helper()
		wait := startLoad(t, l, ledger, duration)
		es, _ := load.ReadLedger(ledger)
		waitLedger(t, ledger, len(es)+200)
		j := fn()
		if sum := wait(); sum.ClientErrors != 0 || sum.AckedWrites == 0 {
			t.Fatalf("%s: load %+v", step, sum)
		}
		rep := verifyLedger(t, l, ledger)
		t.Logf("%s: job %s %s; %d keys verified", step, j.ID, j.State, rep.Checked)
		return j
	}
	startJob := func() orchestrator.Job {
		out, stderr, ok := run(t, l.env(), append([]string{"start", "--from", "1.moray", "--to", "3.moray", "--split-half",
			"--dc-mode", "single", "--servers", "1", "--complete", "manual", "--json"}, extra...)...)
		var j orchestrator.Job
		if !ok || json.Unmarshal([]byte(out), &j) != nil {
			t.Fatalf("start: %s %s", out, stderr)
		}
		if j.State != orchestrator.Flipped || !strings.Contains(stderr, "reshard revert "+j.ID) || !strings.Contains(stderr, "reshard complete "+j.ID) {
			t.Fatalf("start --complete manual: job %s, stderr %s", j.State, stderr)
		}
		checkWriteBlock(t, strategy, j.WriteBlockMS, j.PromoteMS)
		// Under a second each way, PostgreSQL's promotion included.
		if j.WriteBlockMS >= 1000 {
			t.Fatalf("write block %.1f ms (promotion %.1f ms of it)", j.WriteBlockMS, j.PromoteMS)
		}
		return j
	}

	// 1. The split, way back open.
	j := underLoad("split", "7s", startJob)
	moved := movedVnodes(t, j)
	checkOwner(t, l, moved, "3.moray")
	dst := pnodePrimary(t, l, "3.moray")
	if n := unownedRows(t, origin); n == 0 {
		t.Fatal("the origin kept none of the moved rows for the way back")
	}
	// The origin follows what the destination wrote to the moved vnodes.
	waitSameRows(t, origin, dst, j.Moves[0].Ranges)
	if _, stderr, ok := run(t, l.env(), "abort", j.ID); ok || !strings.Contains(stderr, "reshard revert "+j.ID) {
		t.Fatalf("abort of a flipped job: %s", stderr)
	}
	out, _, _ := run(t, l.env(), "status", j.ID)
	for _, want := range []string{"FLIPPED", "way back open", "soak", "waiting"} {
		if !strings.Contains(out, want) {
			t.Errorf("status of the flipped job lacks %q:\n%s", want, out)
		}
	}

	// 2. The revert.
	reverted := underLoad("revert", "4s", func() orchestrator.Job {
		out, stderr, ok := run(t, l.env(), "revert", j.ID, "--json")
		var r orchestrator.Job
		if !ok || json.Unmarshal([]byte(out), &r) != nil {
			t.Fatalf("revert: %s %s", out, stderr)
		}
		return r
	})
	if reverted.State != orchestrator.Reverted || reverted.Revert == nil || reverted.Revert.WriteBlockMS <= 0 || reverted.Revert.WriteBlockMS >= 1000 {
		t.Fatalf("after the revert: state %s, revert %+v", reverted.State, reverted.Revert)
	}
	t.Logf("revert write block %.1f ms", reverted.Revert.WriteBlockMS)
	for _, p := range reverted.Phases {
		wantSkipped := slices.Contains([]string{"soak", "close-way-back", "cleanup"}, p.Name)
		if (p.State == orchestrator.Skipped) != wantSkipped || (!wantSkipped && p.State != orchestrator.Done) {
			t.Errorf("reverted job: phase %s %s", p.Name, p.State)
		}
	}
	checkOwner(t, l, moved, "1.moray")
	if n := query[int64](t, origin, `select count(*) from reshard_vnodes where writable`); n != 256 {
		t.Fatalf("the origin owns %d writable vnodes after the revert, want 256", n)
	}
	checkClean(t, "the origin after the revert", origin)
	if strategy == "logical" {
		checkClean(t, "the destination after the revert", dst)
		if n := query[int64](t, dst, `select count(*) from reshard_vnodes`); n != 0 {
			t.Fatalf("the destination still owns %d vnodes", n)
		}
		if n := bucketRows(t, dst, ""); n != 0 {
			t.Fatalf("the destination keeps %d rows", n)
		}
	} else if slices.ContainsFunc(registeredPnodes(t, l), func(p registeredPnode) bool { return p.Name == "3.moray" }) {
		t.Fatal("the physical revert left 3.moray registered")
	}
	if _, stderr, ok := run(t, l.env(), "complete", j.ID); ok || !strings.Contains(stderr, "cannot complete") {
		t.Fatalf("complete of a reverted job: %s", stderr)
	}
	if out, stderr, ok := run(t, l.env(), "revert", j.ID); !ok {
		t.Fatalf("a second revert of a reverted job: %s %s", out, stderr)
	}

	// 3. The split again, then 4. complete.
	again := underLoad("split again", "7s", startJob)
	done := underLoad("complete", "4s", func() orchestrator.Job {
		out, stderr, ok := run(t, l.env(), "complete", again.ID, "--json")
		var r orchestrator.Job
		if !ok || json.Unmarshal([]byte(out), &r) != nil {
			t.Fatalf("complete: %s %s", out, stderr)
		}
		return r
	})
	if done.State != orchestrator.Done || done.Revert != nil {
		t.Fatalf("after complete: %s", done.State)
	}
	for _, p := range done.Phases {
		if p.State != orchestrator.Done {
			t.Errorf("completed job: phase %s %s", p.Name, p.State)
		}
	}
	if _, stderr, ok := run(t, l.env(), "revert", again.ID); ok || !strings.Contains(stderr, "has completed") {
		t.Fatalf("revert of a completed job: %s", stderr)
	}
	movedAgain := movedVnodes(t, done)
	checkOwner(t, l, movedAgain, "3.moray")
	if n := ringOf(t, l).PnodeVnodeCount("1.moray"); n == 0 || n+len(movedAgain) != 256 {
		t.Fatalf("1.moray keeps %d vnodes, moved %d", n, len(movedAgain))
	}
	dst = pnodePrimary(t, l, "3.moray")
	if n := bucketRows(t, dst, ""); n == 0 {
		t.Fatal("3.moray holds no rows")
	}
	for side, dsn := range map[string]string{"origin": origin, "destination": dst} {
		checkClean(t, "the "+side+" at the end", dsn)
		if n := unownedRows(t, dsn); n != 0 {
			t.Errorf("the %s keeps %d rows of vnodes it does not own", side, n)
		}
	}
	out, _, _ = run(t, l.env(), "status", done.ID)
	for _, want := range []string{"DONE", "write block", "cleanup", "dump lock: free"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

func movedVnodes(t *testing.T, j orchestrator.Job) []uint32 {
	t.Helper()
	moved, err := ring.ParseVnodeList(j.Moves[0].Vnodes, 0)
	if err != nil || len(moved) == 0 {
		t.Fatalf("moved vnodes %q: %v", j.Moves[0].Vnodes, err)
	}
	return moved
}

// checkOwner asserts the ring maps every vnode to pnode.
func checkOwner(t *testing.T, l *labInfo, vnodes []uint32, pnode string) {
	t.Helper()
	rg := ringOf(t, l)
	for _, v := range vnodes {
		if p, _, _ := rg.Vnode(v); p != pnode {
			t.Fatalf("vnode %d is on %s, want %s", v, p, pnode)
		}
	}
}

// loadBuckets are the buckets 'reshard load' writes.
var loadBuckets = []string{"load_0", "load_1", "load_2", "load_3"}

// bucketRows counts the rows of every load bucket that match where.
func bucketRows(t *testing.T, dsn, where string) int64 {
	t.Helper()
	var parts []string
	for _, b := range loadBuckets {
		q := "(select count(*) from " + b + " b"
		if where != "" {
			q += " where " + where
		}
		parts = append(parts, q+")")
	}
	return query[int64](t, dsn, "select "+strings.Join(parts, " + "))
}

// unownedRows counts a shard's rows of vnodes it does not own.
func unownedRows(t *testing.T, dsn string) int64 {
	return bucketRows(t, dsn, "not reshard_owns(b._vnode)")
}

// checkClean asserts a shard holds nothing of a job: no slot, publication,
// subscription or marker.
func checkClean(t *testing.T, what, dsn string) {
	t.Helper()
	n := query[int64](t, dsn, `select (select count(*) from pg_replication_slots) + (select count(*) from pg_publication)
		+ (select count(*) from pg_subscription) + (select count(*) from reshard_markers)`)
	if n != 0 {
		t.Fatalf("%s: %d slots, publications, subscriptions or markers left", what, n)
	}
}

// waitSameRows waits until two shards hold the same rows (key and etag) in
// ranges: the way back has brought the destination's writes to the origin.
func waitSameRows(t *testing.T, a, b string, ranges []shard.Range) {
	t.Helper()
	sum := func(dsn string) string {
		var parts []string
		for _, bk := range loadBuckets {
			parts = append(parts, fmt.Sprintf(`select _key, _etag from %s where %s`, bk, shard.VnodeFilter(ranges)))
		}
		return query[string](t, dsn, `select count(*) || ':' || coalesce(sum(hashtextextended(_key || ':' || _etag, 0)), 0) from (`+
			strings.Join(parts, " union all ")+`) r`)
	}
	var x, y string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); sleep(100) {
		if x, y = sum(a), sum(b); x == y {
			return
		}
	}
	t.Fatalf("the way back did not bring the moved rows to the origin: origin %s, destination %s", x, y)
}

// Kill-and-resume at every step of a revert: for each point a split keeps
// its way back open, 'reshard revert --crash-at POINT' is SIGKILLed there,
// and a second 'reshard revert' finishes it, under load through two
// routers. make test strikes after the origin takes writes back, after the
// ring flips back, and in the cleanup; make faults (RESHARD_FAULTS=full) every point, both
// strategies. The complete steps (soak, close-way-back, cleanup) are in
// TestKillAndResumeEveryPhase, whose jobs complete on their own.
func TestKillAndResumeRevert(t *testing.T) {
	parallelLab(t)
	full := os.Getenv("RESHARD_FAULTS") == "full"
	for _, strategy := range []string{"logical", "physical"} {
		t.Run(strategy, func(t *testing.T) {
			if strategy == "physical" && !full {
				t.Skip("the physical strategy's revert points run with make faults (RESHARD_FAULTS=full)")
			}
			killAndResumeRevert(t, orchestrator.StrategyName(strategy), full)
		})
	}
}

func killAndResumeRevert(t *testing.T, strategy orchestrator.StrategyName, full bool) {
	points := orchestrator.RevertFaultPoints()
	if !full {
		points = slices.DeleteFunc(points, func(p string) bool {
			return !slices.Contains([]string{
				orchestrator.FaultPoint("revert-cutover", orchestrator.PointWritable),
				orchestrator.FaultPoint("revert-cutover", orchestrator.PointFlipped),
				orchestrator.FaultPoint("revert-cleanup", orchestrator.PointMid)}, p)
		})
	}
	l := labUp(t, "--shards", "2", "--peers", "1", "--routers", "2", "--vnodes", "1024", "--spare-hosts", spareHostsFor(strategy, 1))
	ledger := filepath.Join(t.TempDir(), "ledger.jsonl")
	wait := startLoad(t, l, ledger, fmt.Sprintf("%ds", 10*len(points)+10))
	waitLedger(t, ledger, 300)
	for i, point := range points {
		from, to, extra := nextSplit(t, l, i, strategy)
		out, stderr, ok := run(t, l.env(), append([]string{"start", "--from", from, "--to", to, "--split-half",
			"--dc-mode", "single", "--servers", "1", "--complete", "manual", "--json"}, extra...)...)
		var j orchestrator.Job
		if !ok || json.Unmarshal([]byte(out), &j) != nil || j.State != orchestrator.Flipped {
			t.Fatalf("%s: start: %s %s", point, out, stderr)
		}
		if _, stderr, ok := run(t, l.env(), "revert", j.ID, "--crash-at", point, "--lease-ttl", "2s"); ok {
			t.Fatalf("%s: the revert was not killed: %s", point, stderr)
		}
		out, _, _ = run(t, l.env(), "status", j.ID, "--json")
		var st statusView
		json.Unmarshal([]byte(out), &st)
		if st.Job == nil || st.Job.State != orchestrator.Reverting || st.Job.Current != strings.Split(point, ":")[0] {
			t.Fatalf("%s: after the kill the job is %+v", point, st.Job)
		}
		out, stderr, ok = run(t, l.env(), "revert", j.ID, "--json", "--lease-ttl", "2s")
		var r orchestrator.Job
		if !ok || json.Unmarshal([]byte(out), &r) != nil || r.State != orchestrator.Reverted {
			t.Fatalf("%s: revert again: %s %s", point, out, stderr)
		}
		checkOwner(t, l, movedVnodes(t, r), from)
		checkClean(t, point+": the origin", pnodePrimary(t, l, from))
		if orchestrator.CreatesDestinations(strategy) {
			if slices.ContainsFunc(registeredPnodes(t, l), func(p registeredPnode) bool { return p.Name == to }) {
				t.Fatalf("%s: %s is still registered", point, to)
			}
		} else {
			dst := pnodePrimary(t, l, to)
			checkClean(t, point+": the destination", dst)
			if n := bucketRows(t, dst, ""); n != 0 {
				t.Fatalf("%s: the destination keeps %d rows", point, n)
			}
		}
		t.Logf("killed at %s, reverted: write block %.0f ms back", point, r.Revert.WriteBlockMS)
	}
	if sum := wait(); sum.ClientErrors != 0 {
		t.Fatalf("clients saw errors: %+v", sum.Errors)
	}
	verifyLedger(t, l, ledger)
}
