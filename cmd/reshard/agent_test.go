package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reshard/reshard"
	"github.com/reshard/reshard/agent"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/pgserver"
	"github.com/reshard/reshard/shard"
)

// testAgent is one `reshard agent` process of a test, on 127.0.0.1.
type testAgent struct {
	host, root, etcd, log string
	cmd                   *exec.Cmd
}

// agentRoot makes a data root the PostgreSQL user can enter (as the lab's
// makeDataRoot does) and, after the test, stops its servers and removes it.
func agentRoot(t *testing.T) string {
	t.Helper()
	bin, err := pgserver.New("", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.MkdirTemp("", "reshard-agent-")
	if err != nil {
		t.Fatal(err)
	}
	if err := bin.As.Chown(root); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dirs, _ := filepath.Glob(filepath.Join(root, "data", "*"))
		for _, d := range dirs {
			bin.Stop(pgserver.Server{DataDir: d})
		}
		pgserver.KillBackup(filepath.Join(root, "basebackup.pid"))
		os.RemoveAll(root)
	})
	return root
}

// startAgent runs `reshard agent` for host until the test ends, and waits
// until it is registered.
func startAgent(t *testing.T, l *labInfo, host, root string) *testAgent {
	t.Helper()
	a := &testAgent{host: host, root: root, etcd: l.Etcd, log: filepath.Join(t.TempDir(), host+".log")}
	a.start(t)
	t.Cleanup(func() {
		a.kill()
		if t.Failed() {
			b, _ := os.ReadFile(a.log)
			t.Logf("agent %s:\n%s", host, b)
		}
	})
	return a
}

func (a *testAgent) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(a.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	a.cmd = exec.Command(binary, "agent", "--etcd", a.etcd, "--host", a.host, "--addr", "127.0.0.1", "--data-root", a.root, "--ttl", "3s")
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cli := (&labInfo{Etcd: a.etcd}).etcdClient(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := etcd.NewAgents(cli).Host(context.Background(), a.host)
		if err == nil && b != nil && strings.Contains(string(b), `"pid":`+strconv.Itoa(a.cmd.Process.Pid)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s did not register within 30s", a.host)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (a *testAgent) kill() {
	if a.cmd != nil && a.cmd.Process != nil {
		a.cmd.Process.Kill()
		a.cmd.Wait()
	}
}

// inRecovery reads pg_is_in_recovery() from the server at dsn.
func inRecovery(t *testing.T, dsn string) bool {
	return query[bool](t, dsn, "select pg_is_in_recovery()")
}

// streamsTo reads how upstream sees the standby name: its sync_state, or
// "" when it is not streaming.
func streamsTo(t *testing.T, upstream, name string) string {
	return query[string](t, upstream, "select sync_state from pg_stat_replication where application_name = $1 and state = 'streaming'", name)
}

// The agents' provisioner, live on two agents and the lab's primary: a
// standby made from the primary and one chained from it, an idempotent
// repeat, the chained one made sync, the first promoted (fenced), a stale
// token refused, and both removed.
func TestAgentProvisioner(t *testing.T) {
	l := labUp(t, "--shards", "1", "--peers", "1", "--routers", "0", "--vnodes", "16", "--spare-hosts", "0")
	startAgent(t, l, "h1", agentRoot(t))
	startAgent(t, l, "h2", agentRoot(t))
	cli := l.etcdClient(t)
	store := etcd.NewAgents(cli)
	prov := &agent.Provisioner{Agents: store, Hosts: []string{"h1", "h2"}}
	token := reshard.FencingToken{Job: "agent-test", Token: 5}
	ctx := reshard.WithFencingToken(context.Background(), token)
	origin := reshard.Peer{Name: l.Shards[0].Peers[0].Name, Role: reshard.RolePrimary, DSN: l.primary("1.moray")}

	p1, err := prov.CreateStandby(ctx, "2.moray", "2.moray-1", origin)
	if err != nil {
		t.Fatal(err)
	}
	if !inRecovery(t, p1.DSN) || streamsTo(t, origin.DSN, p1.Name) != "async" {
		t.Fatalf("%s: not a standby streaming from the origin", p1.Name)
	}
	again, err := prov.CreateStandby(ctx, "2.moray", "2.moray-1", origin)
	if err != nil || again.DSN != p1.DSN {
		t.Fatalf("create again: %v %v, want %v", again, err, p1)
	}
	p2, err := prov.CreateStandby(ctx, "2.moray", "2.moray-2", p1)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := store.HostOf(ctx, p2.Name); h != "h2" {
		t.Fatalf("%s is on host %q, want h2", p2.Name, h)
	}
	if err := prov.Follow(ctx, p2, p1, reshard.RoleSync); err != nil {
		t.Fatal(err)
	}
	if got := query[string](t, p1.DSN, "show synchronous_standby_names"); got != `"2.moray-2"` {
		t.Fatalf("%s synchronous_standby_names = %s", p1.Name, got)
	}
	if err := prov.Promote(ctx, p1, token); err != nil {
		t.Fatal(err)
	}
	if inRecovery(t, p1.DSN) {
		t.Fatalf("%s still in recovery after promote", p1.Name)
	}
	// The chained standby follows the new timeline and is now sync.
	deadline := time.Now().Add(30 * time.Second)
	for streamsTo(t, p1.DSN, p2.Name) != "sync" {
		if time.Now().After(deadline) {
			t.Fatalf("%s is not the sync standby of the promoted %s", p2.Name, p1.Name)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A job's older token is refused: a newer orchestrator holds the job.
	stale := reshard.WithFencingToken(context.Background(), reshard.FencingToken{Job: token.Job, Token: 3})
	if err := prov.Follow(stale, p2, p1, reshard.RoleAsync); !errors.Is(err, shard.ErrStaleToken) {
		t.Fatalf("stale follow: %v, want %v", err, shard.ErrStaleToken)
	}
	if got := streamsTo(t, p1.DSN, p2.Name); got != "sync" {
		t.Fatalf("the stale follow changed %s to %q", p2.Name, got)
	}
	for _, p := range []reshard.Peer{p2, p1} {
		if err := prov.Remove(ctx, p); err != nil {
			t.Fatal(err)
		}
		if err := prov.Remove(ctx, p); err != nil {
			t.Fatalf("remove %s again: %v", p.Name, err)
		}
	}
	if free, _ := store.FreeHosts(ctx); strings.Join(free, ",") != "h1,h2" {
		t.Fatalf("free hosts after removal: %v", free)
	}
	if _, err := prov.CreateStandby(ctx, "2.moray", "2.moray-3", reshard.Peer{Name: "nowhere", DSN: "postgres://postgres@127.0.0.1:1/moray"}); err == nil ||
		!strings.Contains(err.Error(), "agent host h1: create-standby 2.moray-3") {
		t.Fatalf("create from an unreachable upstream: %v", err)
	}
}

// An agent SIGKILLed while its pg_basebackup runs leaves that backup
// running (its own process group); the agent started again kills it,
// removes the half-made peer and makes it again, and the provisioner that
// asked sees the operation done.
func TestAgentKilledDuringBaseBackup(t *testing.T) {
	l := labUp(t, "--shards", "1", "--peers", "1", "--routers", "0", "--vnodes", "16", "--spare-hosts", "0")
	root := agentRoot(t)
	a := startAgent(t, l, "h1", root)
	cli := l.etcdClient(t)
	// Throttled so the backup of the lab's (small) origin takes seconds.
	prov := &agent.Provisioner{Agents: etcd.NewAgents(cli), Hosts: []string{"h1"}, MaxRate: "4M"}
	ctx := reshard.WithFencingToken(context.Background(), reshard.FencingToken{Job: "agent-kill-test", Token: 1})
	origin := reshard.Peer{Name: l.Shards[0].Peers[0].Name, Role: reshard.RolePrimary, DSN: l.primary("1.moray")}
	type result struct {
		p   reshard.Peer
		err error
	}
	done := make(chan result, 1)
	go func() {
		p, err := prov.CreateStandby(ctx, "2.moray", "2.moray-1", origin)
		done <- result{p, err}
	}()
	pidFile := filepath.Join(root, "basebackup.pid")
	var pid int
	deadline := time.Now().Add(30 * time.Second)
	for pid == 0 || !pgserver.Alive(pid) {
		if time.Now().After(deadline) {
			t.Fatal("no pg_basebackup started within 30s")
		}
		time.Sleep(20 * time.Millisecond)
		b, _ := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	time.Sleep(time.Second) // well into the copy
	a.cmd.Process.Signal(syscall.SIGKILL)
	a.cmd.Wait()
	if !pgserver.Alive(pid) {
		t.Fatal("pg_basebackup ended with its agent: nothing to clean up, the test shows nothing")
	}
	a.start(t)
	// The agent kills the orphan before it registers again.
	if pgserver.Alive(pid) {
		t.Fatalf("the orphaned pg_basebackup %d still runs after the agent restarted", pid)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(3 * time.Minute):
		t.Fatal("the create-standby did not finish after the agent restarted")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !inRecovery(t, r.p.DSN) || streamsTo(t, origin.DSN, r.p.Name) != "async" {
		t.Fatalf("%s: not a standby streaming from the origin", r.p.Name)
	}
	if left := backups(root); len(left) > 0 {
		t.Fatalf("pg_basebackup processes left for %s: %v", root, left)
	}
}

// backups lists the pg_basebackup processes writing under root.
func backups(root string) []int {
	var out []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range procs {
		b, err := os.ReadFile(f)
		if err != nil || !strings.Contains(string(b), "pg_basebackup") || !strings.Contains(string(b), root) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		if pgserver.Alive(pid) {
			out = append(out, pid)
		}
	}
	return out
}
