package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reshard/reshard/lab"
	"github.com/reshard/reshard/orchestrator"
)

// Issue 19's fault on a three-member etcd: the leader is killed (SIGKILL)
// during the cutover of a logical split, with writes frozen, while load
// runs through two routers. The job finishes, clients see no errors, the
// ledger verifies, and the killed member rejoins with a leader elected.
func TestEtcdClusterLeaderKilledInCutover(t *testing.T) {
	l := labUp(t, "--shards", "2", "--peers", "1", "--routers", "2", "--vnodes", "256", "--etcd-members", "3")
	if urls := strings.Split(l.Etcd, ","); len(urls) != 3 {
		t.Fatalf("lab up --json etcd is %q, want three client URLs", l.Etcd)
	}
	before := etcdMembers(t, l)
	out, _, _ := run(t, nil, "lab", "status", "--dir", l.Dir)
	if !strings.Contains(out, "etcd:") || strings.Count(out, "etcd-") != 3 || strings.Count(out, "leader") != 1 {
		t.Fatalf("lab status does not show three members and one leader:\n%s", out)
	}
	l.addShard(t, "3.moray", "1")

	ledger := filepath.Join(t.TempDir(), "ledger.jsonl")
	wait := startLoad(t, l, ledger, "16s")
	waitLedger(t, ledger, 300)
	out, stderr, ok := run(t, l.env(), "start", "--from", "1.moray", "--to", "3.moray", "--split-half", "--servers", "1",
		"--strategy", "logical", "--detach")
	if !ok {
		t.Fatalf("start: %s", stderr)
	}
	f := &faultCtx{t: t, l: l, job: strings.TrimSpace(out)}
	// The orchestrator stops itself once writes are frozen: the cutover is
	// hit every run, not by polling luck.
	orch := startProcess(t, l.env(), "resume", f.job, "--pause-at", orchestrator.FaultPoint("cutover", orchestrator.PointFrozen))
	if !orch.waitStopped(time.Minute) {
		t.Fatalf("the orchestrator did not reach the cutover: %s", orch.stderr())
	}
	if p := f.phase(); p != "cutover" {
		t.Fatalf("paused in phase %q, want cutover", p)
	}
	killer := startProcess(t, nil, "lab", "restart", "--dir", l.Dir, "--etcd-member", "leader", "--down", "2s")
	killed := ""
	for i := 0; i < 200 && killed == ""; i++ {
		killer.mu.Lock()
		s := killer.out.String()
		killer.mu.Unlock()
		if name, ok := strings.CutPrefix(strings.TrimSpace(s), "killed etcd member "); ok {
			killed = name
		}
		time.Sleep(10 * time.Millisecond)
	}
	if killed != before {
		t.Fatalf("lab restart killed %q, the leader was %q: %s", killed, before, killer.stderr())
	}
	// Let the kill land, then the cutover goes on while the cluster elects.
	time.Sleep(50 * time.Millisecond)
	orch.signal(syscall.SIGCONT)
	if code, stderr := orch.wait(2 * time.Minute); code != 0 {
		f.note("orchestrator exited %d: %s", code, lastLines(stderr, 2))
		for attempt := 0; attempt < 5; attempt++ {
			_, stderr, ok := run(t, l.env(), "resume", f.job)
			if ok {
				break
			}
			f.note("resume failed: %s", lastLines(stderr, 2))
		}
	}
	if code, stderr := killer.wait(time.Minute); code != 0 {
		t.Fatalf("lab restart --etcd-member leader: %s", stderr)
	}
	sum := wait()
	j := jobState(t, l, f.job)
	t.Logf("killed %s in cutover; write block %.0f ms; acked %d; %v", killed, j.WriteBlockMS, sum.AckedWrites, f.events)
	if j.State != orchestrator.Done {
		t.Fatalf("job %s is %s: %v", f.job, j.State, f.events)
	}
	if sum.ClientErrors != 0 || sum.AckedWrites == 0 {
		t.Fatalf("load: %+v", sum)
	}
	verifyLedger(t, l, ledger)
	etcdMembers(t, l)
}

// etcdMembers waits until `lab status --etcd` shows three members that
// answer and one leader, and returns the leader's name.
func etcdMembers(t *testing.T, l *labInfo) string {
	t.Helper()
	var out string
	for i := 0; i < 100; i++ {
		out, _, _ = run(t, nil, "lab", "status", "--dir", l.Dir, "--etcd", "--json")
		var ms []lab.EtcdMemberStatus
		json.Unmarshal([]byte(out), &ms)
		if leader := lab.EtcdHealthy(ms); len(ms) == 3 && leader != "" {
			return leader
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("lab status --etcd: %s", out)
	return ""
}
