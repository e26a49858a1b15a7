package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/lab"
	"github.com/reshard/reshard/load"
	"github.com/reshard/reshard/orchestrator"
)

// The fault suite: each case runs a reshard under load with a fault
// injected, then verifies. RESHARD_FAULTS=full runs every case for both
// strategies and more random kills (make faults); otherwise a shorter set
// runs with make test. The results table goes to RESHARD_FAULTS_OUT (or
// the test's temp dir) and to the test log.

type faultRow struct {
	Case         string  `json:"case"`
	Strategy     string  `json:"strategy"`
	Acked        int64   `json:"acked_writes"`
	ClientErrors int64   `json:"client_errors"`
	Missing      int     `json:"missing"`
	Stale        int     `json:"stale"`
	Misplaced    int     `json:"misplaced"`
	Ambiguous    int     `json:"ambiguous"`
	WriteBlockMS float64 `json:"write_block_ms"`
	Finished     bool    `json:"finished"`
	Note         string  `json:"note"`
}

type faultCtx struct {
	t      *testing.T
	l      *labInfo
	hosts  bool // the lab is distributed: hosts in 3 DCs, 3 etcd members
	job    string
	events []string

	mu    sync.Mutex
	first string // how a paused first orchestrator ended, once it has
}

func (f *faultCtx) note(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, fmt.Sprintf(format, args...))
}

// phase returns the job's current phase.
func (f *faultCtx) phase() string {
	out, _, _ := run(f.t, f.l.env(), "status", f.job, "--json")
	var v statusView
	json.Unmarshal([]byte(out), &v)
	if v.Job == nil {
		return ""
	}
	return v.Job.Current
}

// waitPhase waits until the job is in one of phases (or done), and says which.
func (f *faultCtx) waitPhase(phases ...string) string {
	for i := 0; i < 3000; i++ {
		p := f.phase()
		for _, want := range phases {
			if p == want {
				return p
			}
		}
		if p == "" && i > 20 {
			return "(done)"
		}
		time.Sleep(10 * time.Millisecond)
	}
	return "(timeout)"
}

type faultCase struct {
	name string
	// strategies the case applies to; nil: every strategy.
	strategies []orchestrator.StrategyName
	// fullOnly: only with make faults; make test covers it elsewhere.
	fullOnly bool
	// hostsOnly needs the distributed lab (hosts, partitions, etcd
	// members); localOnly has a counterpart there.
	hostsOnly, localOnly bool
	// pauseAt makes the first orchestrator stop itself at that point, in
	// whichever phase of the strategy passes it; inject then runs while it
	// is stopped, and it is continued after (its own exit is then noted).
	// A job it leaves is resumed.
	pauseAt orchestrator.Point
	// host runs the first orchestrator on that lab host, not this machine.
	host   string
	rows   int
	resume bool // the fault kills the orchestrator: resume until done
	crash  func(f *faultCtx) string
	inject func(f *faultCtx)
	extra  func(f *faultCtx) (routers []string, cleanup func())
}

// distributedFaults says whether the fault suite runs on the distributed
// lab: make faults does, as root; make test's short set does not (its
// TestSplitOnHosts covers the distributed lab).
func distributedFaults(full bool) bool { return full && os.Geteuid() == 0 }

// faultLab is the lab a fault case runs on, the peers of a shard it adds
// and the split's shape.
func faultLab(hosts bool) (labArgs []string, peers string, split []string) {
	if hosts {
		// RFD 103's triple-DC mode: each shard's primary, sync and async in
		// another DC, 10 ms apart each way.
		return []string{"--shards", "2", "--peers", "3", "--routers", "2", "--vnodes", "256",
				"--hosts", "--dcs", "3", "--dc-latency", "10ms", "--etcd-members", "3", "--spare-hosts", "4"},
			"3", []string{"--dc-mode", "triple", "--servers", "3"}
	}
	return []string{"--shards", "2", "--peers", "2", "--routers", "2", "--vnodes", "256"}, "2", []string{"--servers", "1"}
}

func runFaultCase(t *testing.T, c faultCase, strategy string, hosts bool) faultRow {
	labArgs, peers, split := faultLab(hosts)
	l := labUp(t, labArgs...)
	f := &faultCtx{t: t, l: l, hosts: hosts}
	row := faultRow{Case: c.name, Strategy: strategy}
	if c.rows > 0 {
		httpDo(t, "PUT", l.Routers[0]+"/buckets/manta", `{}`)
		if err := load.Fill(context.Background(), l.etcdClient(t), "manta", c.rows, io.Discard, nil); err != nil {
			t.Fatal(err)
		}
	}
	// The cleanup at --rate-limit: these cases are about the faults, and
	// an adaptive cleanup under their load would take a minute of them.
	args := append([]string{"start", "--from", "1.moray", "--to", "3.moray", "--split-half",
		"--strategy", strategy, "--detach", "--cleanup-pace", "fixed"}, split...)
	if strategy == "logical" {
		l.addShard(t, "3.moray", peers)
	} else {
		args = append(args, "--lab", l.Dir)
	}
	routers := l.Routers
	cleanup := func() {}
	if c.extra != nil {
		var more []string
		more, cleanup = c.extra(f)
		routers = append(append([]string{}, routers...), more...)
	}
	ledger := filepath.Join(t.TempDir(), "ledger.jsonl")
	var wg sync.WaitGroup
	var loadOut, loadErr string
	loadArgs := []string{"load", "--duration", "14s", "--rate", "300", "--keys", "1000", "--ledger", ledger, "--json"}
	for _, r := range routers {
		loadArgs = append(loadArgs, "--router", r)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		loadOut, loadErr, _ = run(t, l.env(), loadArgs...)
	}()
	// The job starts once the load has made its buckets and writes: a
	// bucket change during a job is refused, and a fault can slow the load's
	// start (a member cut off makes the first etcd requests wait).
	waitLedgerFor(t, ledger, 30, 45*time.Second)
	out, stderr, ok := run(t, l.env(), args...)
	if !ok {
		t.Fatalf("%s: start: %s", c.name, stderr)
	}
	f.job = strings.TrimSpace(out)
	crash := ""
	if c.crash != nil {
		crash = c.crash(f)
	}
	jobDone := make(chan struct{})
	if c.pauseAt != "" {
		runPausedOrchestrator(f, c, strategy)
		go func() {
			defer close(jobDone)
			resumeUntilDone(f)
		}()
	} else {
		go runOrchestrators(f, c, crash, jobDone)
	}
	if c.inject != nil && c.pauseAt == "" {
		c.inject(f)
	}
	<-jobDone
	wg.Wait()
	cleanup()
	var sum load.Summary
	if err := json.Unmarshal([]byte(loadOut), &sum); err != nil {
		t.Fatalf("%s: load: %s %s", c.name, loadOut, loadErr)
	}
	row.Acked, row.ClientErrors = sum.AckedWrites, sum.ClientErrors
	j := jobState(t, l, f.job)
	row.Finished, row.WriteBlockMS = j.State == orchestrator.Done, j.WriteBlockMS
	vout, _, _ := run(t, l.env(), "verify", "--ledger", ledger, "--json")
	var rep load.Report
	if err := json.Unmarshal([]byte(vout), &rep); err != nil {
		t.Fatalf("%s: verify: %s", c.name, vout)
	}
	row.Missing, row.Stale, row.Misplaced, row.Ambiguous = rep.Missing, rep.Stale, rep.Misplaced, rep.Ambiguous
	if len(sum.Errors) > 0 {
		f.note("client errors %v", sum.Errors)
	}
	if c.pauseAt != "" {
		first := ""
		for i := 0; i < 300 && first == ""; i++ {
			f.mu.Lock()
			first = f.first
			f.mu.Unlock()
			time.Sleep(100 * time.Millisecond)
		}
		if first == "" {
			first = "first orchestrator still running 30 s after the job"
		}
		f.note("%s", first)
	}
	f.mu.Lock()
	row.Note = strings.Join(f.events, "; ")
	f.mu.Unlock()
	if n := query[int64](t, l.primary("1.moray"), `select count(*) from pg_replication_slots`); n != 0 {
		t.Errorf("%s: %d replication slots left on the origin", c.name, n)
	}
	return row
}

// runOrchestrators runs the job to its end: resumed after each kill when
// the case kills the orchestrator.
func runOrchestrators(f *faultCtx, c faultCase, crash string, jobDone chan<- struct{}) {
	t, l := f.t, f.l
	{
		defer close(jobDone)
		args := []string{"resume", f.job, "--lease-ttl", "2s"}
		if crash != "" {
			args = append(args, "--crash-at", crash)
		}
		for attempt := 0; attempt < 5; attempt++ {
			_, stderr, ok := run(t, l.env(), args...)
			if ok {
				return
			}
			if !c.resume {
				f.note("resume failed: %s", strings.TrimSpace(stderr))
				return
			}
			f.note("orchestrator killed; resumed")
			args = []string{"resume", f.job, "--lease-ttl", "2s"}
		}
	}
}

// runPausedOrchestrator runs the first orchestrator (on c.host when set)
// until it stops itself at c.pauseAt, injects the fault, continues it and
// notes how it ended.
func runPausedOrchestrator(f *faultCtx, c faultCase, strategy string) {
	at := ""
	for _, p := range orchestrator.FaultPoints(orchestrator.StrategyName(strategy)) {
		if strings.HasSuffix(p, ":"+string(c.pauseAt)) {
			at = p
			break
		}
	}
	if at == "" {
		f.t.Fatalf("the %s strategy has no point %s", strategy, c.pauseAt)
	}
	argv := []string{binary, "resume", f.job, "--lease-ttl", "2s", "--pause-at", at}
	if c.host != "" {
		argv = append([]string{"nsenter", "--net=" + filepath.Join("/run/netns", f.hostNS(c.host)), "--"}, argv...)
	}
	orch := startCommand(f.t, f.l.env(), argv...)
	if !orch.waitStopped(3 * time.Minute) {
		f.t.Fatalf("the orchestrator did not reach %s: %s", at, orch.stderr())
	}
	f.note("orchestrator stopped at %s", at)
	if c.inject != nil {
		c.inject(f)
	}
	orch.signal(syscall.SIGCONT)
	// It may be cut off for good (the next orchestrator then takes over),
	// so it is waited for apart from the job.
	go func() {
		code, stderr := orch.wait(3 * time.Minute)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.first = fmt.Sprintf("first orchestrator exited %d: %s", code, lastLines(stderr, 1))
	}()
}

// resumeUntilDone resumes the job until it is done (or five tries fail),
// waiting out the lease of an orchestrator that was cut off.
func resumeUntilDone(f *faultCtx) {
	for attempt := 0; attempt < 8; attempt++ {
		if j := jobState(f.t, f.l, f.job); j.State == orchestrator.Done {
			return
		}
		_, stderr, ok := run(f.t, f.l.env(), "resume", f.job, "--lease-ttl", "2s")
		if ok {
			f.note("resumed")
			return
		}
		f.note("resume: %s", lastLines(strings.TrimSpace(stderr), 1))
		time.Sleep(2 * time.Second)
	}
}

// hostNS is a lab host's network namespace.
func (f *faultCtx) hostNS(name string) string {
	st, err := lab.Load(f.l.Dir)
	if err != nil {
		f.t.Fatal(err)
	}
	h, ok := st.Host(name)
	if !ok {
		f.t.Fatalf("no host %s in the lab", name)
	}
	return h.NS
}

// partition cuts a from each of bs (lab partition), noting it.
func (f *faultCtx) partition(a string, bs ...string) {
	for _, b := range bs {
		args := []string{"lab", "partition", "--dir", f.l.Dir, a, b}
		if b == "" {
			args = []string{"lab", "partition", "--dir", f.l.Dir, a, "--from-all"}
		}
		if _, stderr, ok := run(f.t, nil, args...); !ok {
			f.t.Fatalf("partition %s %s: %s", a, b, stderr)
		}
	}
}

func (f *faultCtx) heal() {
	if _, stderr, ok := run(f.t, nil, "lab", "heal", "--dir", f.l.Dir); !ok {
		f.t.Fatalf("heal: %s", stderr)
	}
}

// tcpProxy forwards to target until cut: a network partition on loopback.
type tcpProxy struct {
	target string
	mu     sync.Mutex
	ln     net.Listener
	addr   string
	conns  []net.Conn
}

func newProxy(t testing.TB, target string) *tcpProxy {
	p := &tcpProxy{target: target}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	return p
}

func (p *tcpProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
}

// cut drops every connection and refuses new ones.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ln.Close()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *tcpProxy) heal(t testing.TB) {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.serve(ln)
}

func faultCases(full bool) []faultCase {
	cases := []faultCase{
		// make test kills at every named point (TestKillAndResumeEveryPhase).
		{name: "orchestrator SIGKILL at a random point", fullOnly: true, resume: true, crash: func(f *faultCtx) string {
			d := time.Duration(30+rand.IntN(450)) * time.Millisecond
			f.note("kill timer %s", d)
			return "after:" + d.String()
		}},
		{name: "router SIGKILL mid-reshard", fullOnly: true, inject: func(f *faultCtx) {
			p := f.waitPhase("copy", "add-peers", "catchup")
			b, _ := os.ReadFile(filepath.Join(f.l.Dir, "run", "router-1.pid"))
			var pid int
			fmt.Sscanf(string(b), "%d", &pid)
			syscall.Kill(pid, syscall.SIGKILL)
			f.note("router-1 killed in %s", p)
		}},
		{name: "router cut off from etcd through the cutover", localOnly: true, extra: func(f *faultCtx) ([]string, func()) {
			proxy := newProxy(f.t, strings.TrimPrefix(f.l.Etcd, "http://"))
			ln, _ := net.Listen("tcp", "127.0.0.1:0")
			addr := ln.Addr().String()
			ln.Close()
			cmd := exec.Command(binary, "router", "--etcd", "http://"+proxy.addr, "--listen", addr, "--name", "cut-off", "--retry-for", "3s")
			if err := cmd.Start(); err != nil {
				f.t.Fatal(err)
			}
			for i := 0; i < 100; i++ {
				if resp, err := httpGet("http://" + addr + "/healthz"); err == nil && strings.Contains(resp, `"ring_version":1`) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			// Let it learn the load's buckets first: after the cut it keeps
			// what it knew, the ring included.
			warmBuckets(f.t, "http://"+addr)
			proxy.cut()
			f.note("router cut-off partitioned from etcd before the job, healed after")
			return []string{"http://" + addr}, func() {
				proxy.heal(f.t)
				healed := false
				for i := 0; i < 100 && !healed; i++ {
					resp, _ := httpGet("http://" + addr + "/healthz")
					healed = strings.Contains(resp, `"ring_version":2`)
					time.Sleep(100 * time.Millisecond)
				}
				f.note("after healing it serves the new ring: %v", healed)
				cmd.Process.Kill()
				cmd.Wait()
			}
		}},
		{name: "embedded etcd restart mid-job", localOnly: true, fullOnly: true, inject: func(f *faultCtx) {
			p := f.waitPhase("copy", "add-peers", "catchup", "verify")
			if _, stderr, ok := run(f.t, nil, "lab", "restart", "--dir", f.l.Dir, "--etcd"); !ok {
				f.t.Fatalf("restart etcd: %s", stderr)
			}
			f.note("etcd restarted in %s", p)
		}},
		{name: "origin primary restart during the copy", rows: 100000, inject: func(f *faultCtx) {
			p := f.waitPhase("copy", "add-peers")
			if _, stderr, ok := run(f.t, nil, "lab", "restart", "--dir", f.l.Dir, "--peer", "1.moray-1", "--down", "1s"); !ok {
				f.t.Fatalf("restart: %s", stderr)
			}
			f.note("1.moray-1 down 1s in %s", p)
		}},
		{name: "dump lock held by a dead process", fullOnly: true, crash: func(f *faultCtx) string {
			ctx := context.Background()
			cli := f.l.etcdClient(f.t)
			lease, err := cli.Grant(ctx, 4)
			if err != nil {
				f.t.Fatal(err)
			}
			if err := etcd.AcquireDumpLock(ctx, cli, lease.ID, "dump:dead-process"); err != nil {
				f.t.Fatal(err)
			}
			f.note("lock taken on a 4 s lease that nobody keeps alive")
			return ""
		}},
	}
	cases = append(cases, distributedFaultCases()...)
	cases = append(cases, faultCase{name: "destination primary restart during catch-up", rows: 100000,
		strategies: []orchestrator.StrategyName{orchestrator.Logical}, inject: func(f *faultCtx) {
			p := f.waitPhase("catchup", "verify", "dump-lock")
			if _, stderr, ok := run(f.t, nil, "lab", "restart", "--dir", f.l.Dir, "--peer", "3.moray-1", "--down", "1s"); !ok {
				f.t.Fatalf("restart: %s", stderr)
			}
			f.note("3.moray-1 down 1s in %s", p)
		}},
		// The physical strategy's destination does not exist until after
		// catch-up: its new peer is restarted instead.
		faultCase{name: "new peer restart during catch-up", rows: 100000,
			strategies: []orchestrator.StrategyName{orchestrator.Physical}, inject: func(f *faultCtx) {
				p := f.waitPhase("catchup", "dump-lock", "freeze")
				if _, stderr, ok := run(f.t, nil, "lab", "restart", "--dir", f.l.Dir, "--peer", "3.moray-1", "--down", "1s"); !ok {
					f.t.Fatalf("restart: %s", stderr)
				}
				f.note("new peer 3.moray-1 down 1s in %s", p)
			}})
	cases = append(cases, agentFaultCases()...)
	if full {
		for i := 0; i < 4; i++ {
			cases = append(cases, cases[0])
		}
	}
	return cases
}

// orchestratorHost is the spare host a case's orchestrator runs on: the
// last one, as the physical strategy's new peers take the first three.
var orchestratorHost = lab.SpareHostName(4)

// distributedFaultCases are issue 19's faults: partitions and crashes of a
// lab of hosts, and the crash of the origin's postmaster in the cutover.
func distributedFaultCases() []faultCase {
	frozen := orchestrator.PointFrozen
	return []faultCase{
		{name: "origin primary SIGKILLed between the freeze and the flip", fullOnly: true, pauseAt: frozen, inject: func(f *faultCtx) {
			if _, stderr, ok := run(f.t, nil, "lab", "restart", "--dir", f.l.Dir, "--peer", "1.moray-1", "--kill", "--down", "1s"); !ok {
				f.t.Fatalf("kill 1.moray-1: %s", stderr)
			}
			f.note("1.moray-1's postmaster SIGKILLed with writes frozen, started 1 s later")
		}},
		// With the suite's 2 s lease, an election across DCs can outlast the
		// orchestrator's session: it then stops, as it must, and is resumed.
		{name: "etcd leader killed mid-job", hostsOnly: true, resume: true, inject: func(f *faultCtx) {
			p := f.waitPhase("copy", "add-peers", "catchup", "verify")
			out, stderr, ok := run(f.t, nil, "lab", "restart", "--dir", f.l.Dir, "--etcd-member", "leader", "--down", "2s")
			if !ok {
				f.t.Fatalf("kill the etcd leader: %s", stderr)
			}
			f.note("%s in %s, back after 2 s", strings.TrimSpace(out), p)
		}},
		{name: "etcd minority member partitioned for the whole job", hostsOnly: true, extra: func(f *faultCtx) ([]string, func()) {
			cut := "etcd-1"
			if etcdMembers(f.t, f.l) == cut {
				cut = "etcd-2"
			}
			f.partition(cut, "")
			f.note("%s (not the leader) cut from all before the job, healed after", cut)
			return nil, f.heal
		}},
		// The cut comes once the job runs, so the load has made its buckets
		// (a bucket change through a router cut off from etcd waits for it
		// and then fails); the router keeps what it knew, the ring included.
		{name: "router's host partitioned from etcd through the cutover", hostsOnly: true, inject: func(f *faultCtx) {
			p := f.waitPhase("copy", "add-peers", "catchup")
			f.partition("router-2", "etcd-1", "etcd-2", "etcd-3")
			f.note("router-2 cut from every etcd member in %s, healed after the job", p)
		}, extra: func(f *faultCtx) ([]string, func()) {
			return nil, func() {
				f.heal()
				healed := false
				for i := 0; i < 100 && !healed; i++ {
					resp, _ := httpGet(f.l.Routers[1] + "/healthz")
					healed = strings.Contains(resp, `"ring_version":2`)
					time.Sleep(100 * time.Millisecond)
				}
				f.note("after healing router-2 serves the new ring: %v", healed)
			}
		}},
		{name: "router's host partitioned from the origin primary through the cutover", hostsOnly: true, inject: func(f *faultCtx) {
			p := f.waitPhase("copy", "add-peers", "catchup")
			f.partition("router-1", "1.moray-1")
			f.note("router-1 cut from 1.moray-1 in %s; healed after the job", p)
		}, extra: func(f *faultCtx) ([]string, func()) { return nil, f.heal }},
		{name: "orchestrator's host partitioned from etcd just after the freeze", hostsOnly: true, pauseAt: frozen, host: orchestratorHost,
			inject: func(f *faultCtx) {
				f.partition(orchestratorHost, "etcd-1", "etcd-2", "etcd-3")
				f.note("the orchestrator's host (%s) cut from every etcd member with writes frozen, not from PostgreSQL", orchestratorHost)
			}, extra: func(f *faultCtx) ([]string, func()) { return nil, f.heal }},
	}
}

// warmBuckets makes router learn the load's buckets.
func warmBuckets(t *testing.T, router string) {
	for b := 0; b < 4; b++ {
		httpDo(t, "PUT", fmt.Sprintf("%s/buckets/load_%d", router, b), "")
		httpDo(t, "GET", fmt.Sprintf("%s/buckets/load_%d/objects/warm", router, b), "")
	}
}

func httpGet(u string) (string, error) {
	resp, err := http.Get(u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestFaults(t *testing.T) {
	parallelLab(t)
	full := os.Getenv("RESHARD_FAULTS") == "full"
	strategies := []string{"logical"}
	if full {
		strategies = append(strategies, "physical")
	}
	hosts := distributedFaults(full)
	var rows []faultRow
	for _, strategy := range strategies {
		for _, c := range faultCases(full) {
			if c.strategies != nil && !slices.Contains(c.strategies, orchestrator.StrategyName(strategy)) || c.fullOnly && !full ||
				c.hostsOnly && !hosts || c.localOnly && hosts {
				continue
			}
			t.Run(strategy+"/"+c.name, func(t *testing.T) {
				r := runFaultCase(t, c, strategy, hosts)
				rows = append(rows, r)
				if !r.Finished || r.Missing != 0 || r.Stale != 0 || r.Misplaced != 0 {
					t.Errorf("%+v", r)
				}
			})
		}
	}
	table := faultTable(rows)
	t.Log("\n" + table)
	out := os.Getenv("RESHARD_FAULTS_OUT")
	if out == "" {
		out = filepath.Join(t.TempDir(), "faults.md")
	}
	if err := os.WriteFile(out, []byte(table), 0o644); err != nil {
		t.Fatal(err)
	}
}

func faultTable(rows []faultRow) string {
	var b strings.Builder
	b.WriteString("| case | strategy | acked writes | client errors | missing | stale | misplaced | ambiguous | write block | finished | what happened |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %d | %d | %d | %.0f ms | %v | %s |\n", r.Case, r.Strategy, r.Acked,
			r.ClientErrors, r.Missing, r.Stale, r.Misplaced, r.Ambiguous, r.WriteBlockMS, r.Finished, strings.Join(strings.Fields(r.Note), " "))
	}
	return b.String()
}

// agentFaultCases are the faults of the physical strategy's host agents:
// the agent of the first new peer's host (spare-1) killed while its
// pg_basebackup runs, and that host cut off while the peer is promoted.
func agentFaultCases() []faultCase {
	physical := []orchestrator.StrategyName{orchestrator.Physical}
	host := lab.SpareHostName(1)
	return []faultCase{
		{name: "agent SIGKILLed during its pg_basebackup", strategies: physical, rows: 100000, inject: func(f *faultCtx) {
			st, err := lab.Load(f.l.Dir)
			if err != nil || len(st.Agents) == 0 {
				f.t.Fatalf("the lab has no agents: %v", err)
			}
			pidFile := filepath.Join(st.Agents[0].Root, "basebackup.pid")
			backup := 0
			for i := 0; i < 6000 && backup == 0; i++ {
				backup = livePID(pidFile)
				time.Sleep(5 * time.Millisecond)
			}
			if backup == 0 {
				f.t.Fatalf("no pg_basebackup ran on %s in 30 s", host)
			}
			agentPID := livePID(lab.AgentPIDFile(f.l.Dir, host))
			if agentPID == 0 {
				f.t.Fatalf("no agent runs on %s", host)
			}
			syscall.Kill(agentPID, syscall.SIGKILL)
			running := syscall.Kill(backup, 0) == nil
			// The lab's supervisor starts the agent again a second later,
			// as SMF would; the new agent kills the base backup it finds
			// and makes the peer again.
			gone := false
			for i := 0; i < 300 && !gone; i++ {
				gone = syscall.Kill(backup, 0) != nil
				time.Sleep(50 * time.Millisecond)
			}
			if !gone {
				f.t.Errorf("the pg_basebackup (pid %d) the killed agent left still runs 15 s later", backup)
			}
			f.note("%s's agent (pid %d) SIGKILLed while its pg_basebackup (pid %d) ran (still running after the kill: %v); orphaned base backup gone: %v",
				host, agentPID, backup, running, gone)
		}},
		{name: "agent's host partitioned from all while its peer is promoted", strategies: physical, hostsOnly: true,
			pauseAt: orchestrator.PointFrozen, inject: func(f *faultCtx) {
				f.partition(host, "")
				f.note("%s (the new primary's host and agent) cut from every host with writes frozen, before the promotion", host)
				go func() {
					time.Sleep(8 * time.Second)
					if _, stderr, ok := run(f.t, nil, "lab", "heal", "--dir", f.l.Dir); !ok {
						f.note("heal failed: %s", stderr)
						return
					}
					f.note("healed 8 s later")
				}()
			}},
	}
}

// livePID is the pid recorded in path if that process runs, else 0.
func livePID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}
