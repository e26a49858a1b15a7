package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/load"
	"github.com/reshard/reshard/orchestrator"
	"github.com/reshard/reshard/postgres"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// An orchestrator paused past its lease wakes up believing it still holds
// the job. At each fault point of each strategy: the first orchestrator
// stops itself (SIGSTOP) there, a second one takes the job over and
// finishes it, and then the first continues (SIGCONT). It must stop
// without changing anything: the finished job record, the ring, the
// registry, ownership, sequences, replication objects and every row stay
// as the second one left them. Clients see no errors and lose nothing.
//
// make test runs one point of each strategy; RESHARD_FAULTS=full (make
// faults) runs every point.
func TestPausePastLease(t *testing.T) {
	parallelLab(t)
	short := map[orchestrator.StrategyName][]string{
		// Ownership and sequences, with the slot, subscription and the
		// way back's slot in place.
		orchestrator.Logical:  {orchestrator.FaultPoint("cutover", orchestrator.PointSequences)},
		orchestrator.Physical: {orchestrator.FaultPoint("register", orchestrator.PointMid)},
	}
	for _, strategy := range []orchestrator.StrategyName{orchestrator.Logical, orchestrator.Physical} {
		t.Run(string(strategy), func(t *testing.T) {
			points := short[strategy]
			if os.Getenv("RESHARD_FAULTS") == "full" {
				points = orchestrator.FaultPoints(strategy)
			}
			pausePastLease(t, strategy, points)
		})
	}
}

func pausePastLease(t *testing.T, strategy orchestrator.StrategyName, points []string) {
	l := labUp(t, "--shards", "2", "--peers", "1", "--routers", "2", "--vnodes", "4096",
		"--spare-hosts", spareHostsFor(strategy, len(points)))
	cli := l.etcdClient(t)
	ledger := t.TempDir() + "/ledger.jsonl"
	// Load for about as long as the splits take here (a physical split
	// makes new peers); the splits after it ends run without load.
	perPoint := 12 * time.Second
	if orchestrator.CreatesDestinations(strategy) {
		perPoint = 28 * time.Second
	}
	loadFor := perPoint*time.Duration(len(points)) + 20*time.Second
	ld := startProcess(t, l.env(), append([]string{"load", "--duration", loadFor.String(), "--rate", "300",
		"--keys", "1000", "--ledger", ledger, "--json"}, l.routerArgs()...)...)
	waitLedger(t, ledger, 300)
	for i, point := range points {
		from, to, extra := nextSplit(t, l, i, strategy)
		stale := startProcess(t, l.env(), append([]string{"start", "--from", from, "--to", to, "--split-half",
			"--dc-mode", "single", "--servers", "1", "--pause-at", point, "--lease-ttl", "2s"}, extra...)...)
		if !stale.waitStopped(2 * time.Minute) {
			t.Fatalf("%s: the orchestrator did not pause: %s", point, stale.stderr())
		}
		m := jobCreated.FindStringSubmatch(stale.stderr())
		if m == nil {
			t.Fatalf("%s: no job created: %s", point, stale.stderr())
		}
		id := m[1]
		// A second orchestrator waits out the first one's lease, then
		// takes the job over and finishes it.
		out, stderr, ok := run(t, l.env(), "resume", id, "--json", "--lease-ttl", "2s")
		var j orchestrator.Job
		if !ok || json.Unmarshal([]byte(out), &j) != nil || j.State != orchestrator.Done {
			t.Fatalf("%s: resume: %s %s", point, out, stderr)
		}
		// Hold the clients still, so that whatever changes now is the
		// stale orchestrator's doing.
		ld.signal(syscall.SIGSTOP)
		time.Sleep(300 * time.Millisecond)
		before := tierSnapshot(t, l, cli, id)
		stale.signal(syscall.SIGCONT)
		code, stderrStale := stale.wait(2 * time.Minute)
		after := tierSnapshot(t, l, cli, id)
		ld.signal(syscall.SIGCONT)
		if code == 0 {
			t.Errorf("%s: the paused orchestrator exited 0 after it lost the job: %s", point, stderrStale)
		}
		// It ignores the end of its session (see Orchestrator.PauseAt): the
		// fence is what must stop it.
		if !strings.Contains(stderrStale, "took the job over") {
			t.Errorf("%s: the paused orchestrator was not stopped by the fence: %s", point, lastLines(stderrStale, 5))
		}
		for _, k := range sortedKeys(before) {
			if before[k] != after[k] {
				t.Errorf("%s: the paused orchestrator changed %s:\n  before %s\n  after  %s", point, k, before[k], after[k])
			}
		}
		for _, k := range sortedKeys(after) {
			if _, ok := before[k]; !ok {
				t.Errorf("%s: the paused orchestrator added %s = %s", point, k, after[k])
			}
		}
		t.Logf("paused at %s past its lease: its successor finished the job (write block %.0f ms); it stopped with nothing changed (%d items compared)",
			point, j.WriteBlockMS, len(before))
	}
	code, out := ld.waitStdout(loadFor + 2*time.Minute)
	var sum load.Summary
	if code != 0 || json.Unmarshal([]byte(out), &sum) != nil {
		t.Fatalf("load: %s %s", out, ld.stderr())
	}
	if sum.ClientErrors != 0 {
		t.Fatalf("clients saw errors: %+v", sum.Errors)
	}
	verifyLedger(t, l, ledger)
}

// tierSnapshot reads what a stale orchestrator could change: the job's
// record (and its revision), the ring, the registry and the locks in etcd,
// and on every shard its ownership, sequences, replication objects, job
// tokens and each bucket's rows.
func tierSnapshot(t *testing.T, l *labInfo, cli *clientv3.Client, id string) map[string]string {
	t.Helper()
	ctx := context.Background()
	snap := map[string]string{}
	for _, prefix := range []string{etcd.JobPrefix + id, etcd.Prefix + "ring/current", etcd.Prefix + "pnodes/", etcd.Prefix + "locks/"} {
		resp, err := cli.Get(ctx, prefix, etcdPrefix())
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range resp.Kvs {
			snap["etcd "+string(kv.Key)] = fmt.Sprintf("rev %d %s", kv.ModRevision, kv.Value)
		}
	}
	for _, p := range registeredPnodes(t, l) {
		conn, err := postgres.Connect(ctx, p.Peers[0].DSN)
		if err != nil {
			t.Fatal(err)
		}
		one := func(what, sql string) {
			var v *string
			if err := conn.QueryRow(ctx, sql).Scan(&v); err != nil {
				t.Fatalf("%s %s: %v", p.Name, what, err)
			}
			if v != nil {
				snap[p.Name+" "+what] = *v
			}
		}
		one("ownership", `select string_agg(chunk || ':' || owned::text || ':' || writable::text || ':' || ring_version, ',' order by chunk) from reshard_vnode_chunks`)
		one("sequences", `select string_agg(sequencename || '=' || coalesce(last_value::text, '-'), ',' order by sequencename) from pg_sequences`)
		one("slots", `select string_agg(slot_name, ',' order by slot_name) from pg_replication_slots`)
		one("subscriptions", `select string_agg(subname, ',' order by subname) from pg_subscription`)
		one("publications", `select string_agg(pubname, ',' order by pubname) from pg_publication`)
		one("markers", `select string_agg(job || ':' || token, ',' order by job, token) from reshard_markers`)
		one("tokens", `select string_agg(job || '=' || token, ',' order by job) from reshard_job_tokens`)
		rows, err := conn.Query(ctx, `select name from buckets_config order by name`)
		if err != nil {
			t.Fatal(err)
		}
		var buckets []string
		for rows.Next() {
			var b string
			rows.Scan(&b)
			buckets = append(buckets, b)
		}
		rows.Close()
		for _, b := range buckets {
			one("rows of "+b, fmt.Sprintf(`select count(*) || ' ' || coalesce(sum(hashtextextended(_key || _etag || coalesce(_vnode::text, ''), 0)::numeric), 0)
				from %s`, pgIdent(b)))
		}
		conn.Close(ctx)
	}
	return snap
}

func pgIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// process is a reshard command running in the background.
type process struct {
	t        *testing.T
	cmd      *exec.Cmd
	mu       sync.Mutex
	out, err bytes.Buffer
	done     chan struct{}
}

func startProcess(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	return startCommand(t, env, append([]string{binary}, args...)...)
}

// startCommand is startProcess for any command line (reshard under
// nsenter, on a lab host: nsenter execs it in its own pid).
func startCommand(t *testing.T, env []string, argv ...string) *process {
	t.Helper()
	p := &process{t: t, done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = lockedWriter{&p.mu, &p.out}, lockedWriter{&p.mu, &p.err}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGCONT)
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(b)
}

func (p *process) stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err.String()
}

func (p *process) signal(s syscall.Signal) { p.cmd.Process.Signal(s) }

// waitStopped waits until the process has stopped itself (state T).
func (p *process) waitStopped(limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return false
		default:
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
		if err == nil {
			// pid (comm) STATE ...: comm may hold spaces, so read after ')'.
			if i := bytes.LastIndexByte(b, ')'); i > 0 && len(b) > i+2 && b[i+2] == 'T' {
				return true
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// wait waits for the process to exit and returns its exit code and stderr.
func (p *process) wait(limit time.Duration) (int, string) {
	select {
	case <-p.done:
	case <-time.After(limit):
		p.t.Fatalf("%v did not exit within %s: %s", p.cmd.Args, limit, p.stderr())
	}
	return p.cmd.ProcessState.ExitCode(), p.stderr()
}

func (p *process) waitStdout(limit time.Duration) (int, string) {
	code, _ := p.wait(limit)
	p.mu.Lock()
	defer p.mu.Unlock()
	return code, p.out.String()
}
