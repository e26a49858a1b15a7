package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/orchestrator"
	"github.com/reshard/reshard/zookeeper/zktest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const lockPath = "/pg_dump_lock"

// znodeData reads /pg_dump_lock as Manatee's dump job would.
func znodeData(t testing.TB, conn *zk.Conn) (data string, stat *zk.Stat, ok bool) {
	t.Helper()
	b, st, err := conn.Get(lockPath)
	if errors.Is(err, zk.ErrNoNode) {
		return "", nil, false
	}
	if err != nil {
		t.Fatalf("read %s: %v", lockPath, err)
	}
	return string(b), st, true
}

// startJob runs `reshard start` in the background; wait returns its job.
func startJob(t *testing.T, l *labInfo, args ...string) (wait func() (*orchestrator.Job, string)) {
	t.Helper()
	var wg sync.WaitGroup
	var out, stderr string
	wg.Add(1)
	go func() {
		defer wg.Done()
		out, stderr, _ = run(t, l.env(), append([]string{"start", "--json"}, args...)...)
	}()
	return func() (*orchestrator.Job, string) {
		wg.Wait()
		var j orchestrator.Job
		if json.Unmarshal([]byte(out), &j) != nil {
			return nil, stderr
		}
		return &j, stderr
	}
}

// waitPhase polls status until the newest job is in phase and ok accepts
// it, and returns it.
func waitPhase(t *testing.T, l *labInfo, phase string, limit time.Duration, ok func(*orchestrator.Job) bool) *orchestrator.Job {
	t.Helper()
	var last string
	for start := time.Now(); time.Since(start) < limit; time.Sleep(100 * time.Millisecond) {
		out, _, _ := run(t, l.env(), "status", "--json")
		var v statusView
		if json.Unmarshal([]byte(out), &v) != nil || v.Job == nil {
			continue
		}
		last = out
		if v.Job.Current == phase && ok(v.Job) {
			return v.Job
		}
	}
	t.Fatalf("no job reached %s as expected within %s; last status: %s", phase, limit, last)
	return nil
}

func progressNote(j *orchestrator.Job, phase string) string {
	for _, p := range j.Phases {
		if p.Name == phase {
			s := p.Error
			if p.Progress != nil {
				s += " " + p.Progress.Note
			}
			return s
		}
	}
	return ""
}

func putObjects(t *testing.T, l *labInfo, n int) {
	t.Helper()
	httpDo(t, "PUT", l.Routers[0]+"/buckets/manta", `{}`)
	for i := range n {
		if resp, b := httpDo(t, "PUT", fmt.Sprintf("%s/buckets/manta/objects/k%d", l.Routers[0], i), `{"n":1}`); resp.StatusCode != 200 {
			t.Fatalf("put: %s", b)
		}
	}
}

// RFD 103 step 5 where Manta's dumps look: with --zookeeper, the job's
// dump lock is also the persistent znode /pg_dump_lock holding the job's
// id, from its dump-lock phase to its release, and an abort deletes it.
func TestZooKeeperDumpLockDuringSplit(t *testing.T) {
	zkAddr := zktest.Start(t)
	l := labUp(t, "--shards", "2", "--peers", "1", "--routers", "1", "--vnodes", "64")
	putObjects(t, l, 20)
	l.addShard(t, "3.moray", "1")
	conn := zktest.Client(t, zkAddr)
	ctx := context.Background()
	cli := l.etcdClient(t)
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	split := []string{"--from", "1.moray", "--to", "3.moray", "--split-half", "--servers", "1", "--zookeeper", zkAddr}

	// A dump running on 1.moray holds the job inside its dump-lock phase,
	// after it has taken the lock: the znode is there, with its id.
	releaseDump, err := etcd.DumpMarker(ctx, cli, lease.ID, "1.moray", "nightly")
	if err != nil {
		t.Fatal(err)
	}
	wait := startJob(t, l, split...)
	j := waitPhase(t, l, "dump-lock", time.Minute, func(j *orchestrator.Job) bool {
		return strings.Contains(progressNote(j, "dump-lock"), "1.moray/nightly")
	})
	if d, st, ok := znodeData(t, conn); !ok || d != j.ID || st.EphemeralOwner != 0 {
		t.Fatalf("znode during dump-lock: %q %v (want %s, persistent)", d, ok, j.ID)
	}
	if strings.Join(j.ZooKeeper, ",") != zkAddr || j.ZooKeeperPath != lockPath {
		t.Fatalf("job record: zookeeper %v path %q", j.ZooKeeper, j.ZooKeeperPath)
	}
	// What stops Manatee's dump: its create finds the node.
	if _, err := conn.Create(lockPath, []byte("manatee-dump"), 0, zk.WorldACL(zk.PermAll)); !errors.Is(err, zk.ErrNodeExists) {
		t.Fatalf("a dump's create of %s: %v", lockPath, err)
	}
	out, _, _ := run(t, l.env(), "locks")
	if want := fmt.Sprintf("dump lock znode %s in ZooKeeper %s: held by %q", lockPath, zkAddr, j.ID); !strings.Contains(out, want) ||
		!strings.Contains(out, "dump lock: held by job:"+j.ID) {
		t.Fatalf("locks does not show the znode (%s):\n%s", want, out)
	}
	// Abort while holding it: the etcd lock and the znode both go.
	if _, stderr, ok := run(t, l.env(), "abort", j.ID); !ok {
		t.Fatalf("abort: %s", stderr)
	}
	if aj, _ := wait(); aj != nil && aj.State != orchestrator.Aborted {
		t.Fatalf("the job was not aborted: %s", aj.State)
	}
	if d, _, ok := znodeData(t, conn); ok {
		t.Fatalf("the znode survived the abort: %q", d)
	}
	if dl, _ := etcd.DumpLock(ctx, cli); dl != nil {
		t.Fatalf("the etcd dump lock survived the abort: %+v", dl)
	}
	releaseDump()

	// A whole split, watched from outside: whenever the job is between its
	// dump-lock and release phases, the znode holds its id; after, it is gone.
	wait = startJob(t, l, split...)
	var id string
	for start := time.Now(); id == "" && time.Since(start) < time.Minute; time.Sleep(20 * time.Millisecond) {
		if resp, err := cli.Get(ctx, etcd.Prefix+"jobs/", clientv3.WithPrefix()); err == nil {
			for _, kv := range resp.Kvs {
				var jj orchestrator.Job
				if json.Unmarshal(kv.Value, &jj) == nil && jj.ID != j.ID {
					id = jj.ID
				}
			}
		}
	}
	if id == "" {
		t.Fatal("the second job never appeared")
	}
	store := orchestrator.NewStore(cli)
	inside := map[string]bool{"verify": true, "cutover": true, "teardown": true}
	seen := map[string]int{}
	for {
		before, err := store.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if before.State != orchestrator.Running && before.State != orchestrator.Pending {
			break
		}
		d, _, ok := znodeData(t, conn)
		after, err := store.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		// Phases only go forward, so a job inside the span both before and
		// after the read was inside it when the znode was read.
		if inside[before.Current] && inside[after.Current] {
			if !ok || d != id {
				t.Fatalf("in phase %s the znode is %q (present %v), want %s", after.Current, d, ok, id)
			}
			seen[after.Current]++
		}
		time.Sleep(5 * time.Millisecond)
	}
	done, stderr := wait()
	if done == nil || done.State != orchestrator.Done {
		t.Fatalf("split: %s", stderr)
	}
	if len(seen) < 2 {
		t.Fatalf("too few looks inside the lock's span to tell: %v", seen)
	}
	t.Logf("znode seen holding the job's id in %v", seen)
	if d, _, ok := znodeData(t, conn); ok {
		t.Fatalf("the znode survived the job: %q", d)
	}
	if out, _, _ := run(t, l.env(), "locks"); strings.Contains(out, "znode") || !strings.Contains(out, "dump lock: free") {
		t.Fatalf("locks after the job:\n%s", out)
	}
}

// Another holder's /pg_dump_lock (Manatee's dump, or an operator with
// zkCli.sh) holds a job at its dump-lock phase exactly as a held etcd dump
// lock does: the job retries, says who holds it, and never touches the
// node; once the node is gone it goes on. A resumed job checks again.
func TestZooKeeperDumpLockHeldByAnother(t *testing.T) {
	parallelLab(t)
	zkAddr := zktest.Start(t)
	l := labUp(t, "--shards", "2", "--peers", "1", "--routers", "1", "--vnodes", "64")
	putObjects(t, l, 20)
	// The destination is registered with the ensemble: the job finds it
	// there, with no --zookeeper.
	dst := l.addShard(t, "3.moray", "1")
	if _, stderr, ok := run(t, l.env(), "pnode", "remove", "3.moray"); !ok {
		t.Fatalf("pnode remove: %s", stderr)
	}
	if _, stderr, ok := run(t, l.env(), "pnode", "add", "3.moray", "--primary", dst, "--zookeeper", "bad:port"); ok || !strings.Contains(stderr, "invalid ZooKeeper server") {
		t.Fatalf("pnode add with a bad --zookeeper: %s", stderr)
	}
	if _, stderr, ok := run(t, l.env(), "pnode", "add", "3.moray", "--primary", dst, "--zookeeper", zkAddr); !ok {
		t.Fatalf("pnode add --zookeeper: %s", stderr)
	}
	conn := zktest.Client(t, zkAddr)
	if _, err := conn.Create(lockPath, []byte("manatee-dump"), 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	_, st0, _ := znodeData(t, conn)

	// A plan names the ensemble; an unreachable one fails the plan in one
	// line, before anything is recorded.
	split := []string{"--from", "1.moray", "--to", "3.moray", "--split-half", "--servers", "1"}
	out, stderr, ok := run(t, l.env(), append([]string{"start", "--dry-run", "--wait-dump-lock"}, split...)...)
	if !ok || !strings.Contains(out, "dump lock: in etcd and as znode /pg_dump_lock in ZooKeeper "+zkAddr) {
		t.Fatalf("dry run: %s %s", out, stderr)
	}
	if _, stderr, ok := run(t, l.env(), append([]string{"start", "--zookeeper", "127.0.0.1:1"}, split...)...); ok ||
		!strings.Contains(stderr, "ZooKeeper 127.0.0.1:1: no session") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Fatalf("start with an unreachable ZooKeeper: ok=%v %q", ok, stderr)
	}
	if _, stderr, ok := run(t, l.env(), append([]string{"start", "--zookeeper-path", "pg_dump_lock"}, split...)...); ok || !strings.Contains(stderr, "invalid znode path") {
		t.Fatalf("start with a bad --zookeeper-path: %q", stderr)
	}
	// While another holder has the znode, a job refuses to start.
	if _, stderr, ok := run(t, l.env(), append([]string{"start"}, split...)...); ok ||
		!strings.Contains(stderr, `is held by "manatee-dump"`) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Fatalf("start while manatee-dump holds the znode: ok=%v %q", ok, stderr)
	}
	if out, _, _ := run(t, l.env(), "jobs"); strings.Contains(out, "1.moray") {
		t.Fatalf("a refused start recorded a job:\n%s", out)
	}

	// --wait-dump-lock starts it anyway; it waits at its dump-lock phase.
	wait := startJob(t, l, append([]string{"--wait-dump-lock"}, split...)...)
	j := waitPhase(t, l, "dump-lock", time.Minute, func(j *orchestrator.Job) bool {
		return strings.Contains(progressNote(j, "dump-lock"), `held by "manatee-dump"`)
	})
	time.Sleep(2 * time.Second) // it keeps waiting
	j = jobState(t, l, j.ID)
	if j.Current != "dump-lock" || j.State != orchestrator.Running {
		t.Fatalf("the job went past a held znode: %s %s", j.State, j.Current)
	}
	if d, st, ok := znodeData(t, conn); !ok || d != "manatee-dump" || st.Version != st0.Version || st.Mzxid != st0.Mzxid {
		t.Fatalf("the job touched the other holder's znode: %q %v", d, ok)
	}
	out, _, _ = run(t, l.env(), "locks")
	if !strings.Contains(out, `in ZooKeeper `+zkAddr+`: held by "manatee-dump"`) || !strings.Contains(out, "dump lock: free") {
		t.Fatalf("locks while manatee-dump holds the znode:\n%s", out)
	}
	// reshard dump obeys the znode as Manatee's dump does: of the pnode
	// registered with the ensemble, or with --zookeeper.
	dumps := t.TempDir()
	for _, args := range [][]string{{"--pnode", "3.moray"}, {"--pnode", "1.moray", "--zookeeper", zkAddr}} {
		_, stderr, ok := run(t, l.env(), append([]string{"dump", "--out", dumps}, args...)...)
		if ok || !strings.Contains(stderr, `the dump lock is held by "manatee-dump" (znode /pg_dump_lock)`) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Fatalf("dump %v under the znode: ok=%v %q", args, ok, stderr)
		}
	}
	out, _, _ = run(t, l.env(), "status", j.ID)
	if !strings.Contains(out, `held by "manatee-dump"`) {
		t.Fatalf("status does not say who holds the znode:\n%s", out)
	}
	// The other holder lets go: the job takes it and finishes.
	if err := conn.Delete(lockPath, -1); err != nil {
		t.Fatal(err)
	}
	released := time.Now()
	done, stderr := wait()
	if done == nil || done.State != orchestrator.Done {
		t.Fatalf("the job after the znode was deleted: %s", stderr)
	}
	if d := done.Phases[5].Ended.Sub(released); d > 15*time.Second {
		t.Fatalf("dump-lock ended %s after the znode went", d)
	}
	if _, _, ok := znodeData(t, conn); ok {
		t.Fatal("the znode survived the job")
	}

	// Killed inside the lock's span, the job leaves the znode (it is
	// persistent, as Manatee needs). Someone takes it over while the job
	// is dead: the resumed job waits for them before it goes on.
	l.addShard(t, "4.moray", "1")
	_, stderr, ok = run(t, l.env(), "start", "--from", "1.moray", "--to", "4.moray", "--split-half", "--servers", "1",
		"--zookeeper", zkAddr, "--crash-at", "teardown", "--lease-ttl", "2s")
	if ok {
		t.Fatalf("the crash point did not kill the job: %s", stderr)
	}
	var v statusView
	out, _, _ = run(t, l.env(), "status", "--json")
	if json.Unmarshal([]byte(out), &v) != nil || v.Job == nil || v.Job.Current != "teardown" {
		t.Fatalf("after the kill: %s", out)
	}
	id := v.Job.ID
	if d, _, ok := znodeData(t, conn); !ok || d != id {
		t.Fatalf("after the kill the znode is %q (present %v), want %s", d, ok, id)
	}
	if _, err := conn.Set(lockPath, []byte("manatee-dump"), -1); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var resumeOut, resumeErr string
	wg.Add(1)
	go func() {
		defer wg.Done()
		resumeOut, resumeErr, _ = run(t, l.env(), "resume", id, "--json")
	}()
	waitPhase(t, l, "teardown", time.Minute, func(j *orchestrator.Job) bool {
		return j.ID == id && strings.Contains(progressNote(j, "teardown"), `held by "manatee-dump"`)
	})
	if d, _, _ := znodeData(t, conn); d != "manatee-dump" {
		t.Fatalf("the resumed job overwrote the znode: %q", d)
	}
	if err := conn.Delete(lockPath, -1); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	var rj orchestrator.Job
	if json.Unmarshal([]byte(resumeOut), &rj) != nil || rj.State != orchestrator.Done {
		t.Fatalf("resume: %s %s", resumeOut, resumeErr)
	}
	if _, _, ok := znodeData(t, conn); ok {
		t.Fatal("the znode survived the resumed job")
	}
}
