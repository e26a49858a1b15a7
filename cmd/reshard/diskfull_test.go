package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard"
	"github.com/reshard/reshard/agent"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/lab"
	"github.com/reshard/reshard/load"
	"github.com/reshard/reshard/orchestrator"
	"github.com/reshard/reshard/pgserver"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/shard"
	"golang.org/x/sys/unix"
)

// Issue 19: the destination's disk fills up during a job's copy. The job
// must fail naming the cause and the destination, not wait for ever, and
// an abort must leave the origin with no slot or publication (so no WAL
// held for it) even while the destination's disk is still full. Logical:
// the destination's primary has a small disk; physical: the spare host
// that the first new peer goes to. make test runs the logical case;
// make faults both, on the distributed lab as root.
func TestDestinationDiskFull(t *testing.T) {
	parallelLab(t)
	if os.Geteuid() != 0 {
		t.Skip("mounts a tmpfs for the destination's disk: root only")
	}
	full := os.Getenv("RESHARD_FAULTS") == "full"
	strategies := []string{"logical"}
	if full {
		strategies = append(strategies, "physical")
	}
	for _, strategy := range strategies {
		t.Run(strategy, func(t *testing.T) { testDestinationDiskFull(t, strategy, distributedFaults(full)) })
	}
}

func testDestinationDiskFull(t *testing.T, strategy string, hosts bool) {
	// Registered before the lab, so it runs after `lab down`: a disk that
	// down failed to unmount is unmounted here, the test failing or not.
	var disk string
	t.Cleanup(func() {
		if disk != "" && lab.Mounted(disk) {
			t.Errorf("lab down left %s mounted", disk)
			unix.Unmount(disk, unix.MNT_DETACH)
		}
	})
	labArgs, peers, split := faultLab(hosts)
	l := labUp(t, labArgs...)
	httpDo(t, "PUT", l.Routers[0]+"/buckets/manta", `{}`)
	if err := load.Fill(context.Background(), l.etcdClient(t), "manta", 150000, io.Discard, nil); err != nil {
		t.Fatal(err)
	}
	origin := l.primary("1.moray")
	dst, target := "", lab.SpareHostName(1)
	if strategy == "logical" {
		dst, target = l.addShard(t, "3.moray", peers), "3.moray-1"
	}
	owned := query[int64](t, origin, `select count(*) from reshard_vnodes where writable`)
	rows := query[int64](t, origin, `select count(*) from manta`)
	moving := query[int64](t, origin, `select pg_total_relation_size('manta')`) / 2

	st, err := lab.Load(l.Dir)
	if err != nil {
		t.Fatal(err)
	}
	// Room beyond what the destination holds now for half of what moves
	// to it: the copy (its rows, indexes and their WAL) overflows it. A
	// new peer's copy is of the whole origin.
	if _, peer := findPeer(st, target); peer != nil {
		disk = peer.DataDir
	} else {
		disk = filepath.Join(st.Agents[0].Root, "data")
	}
	room := max(moving/2>>20, 4)
	t.Logf("%d MiB move to the destination: a disk with %d MiB of room", moving>>20, room)
	for _, bad := range [][]string{{"--peer", "9.moray-1", "--size", "64M"}, {"--peer", target, "--size", "64 MB"}} {
		if _, stderr, ok := run(t, nil, append([]string{"lab", "disk", "--dir", l.Dir}, bad...)...); ok ||
			!strings.Contains(stderr, "not a peer or spare host of the lab") && !strings.Contains(stderr, "--size must be") {
			t.Fatalf("lab disk %v: %s", bad, stderr)
		}
	}
	if out, stderr, ok := run(t, nil, "lab", "disk", "--dir", l.Dir, "--peer", target, "--size", fmt.Sprintf("+%dM", room)); !ok {
		t.Fatalf("lab disk: %s %s", out, stderr)
	}
	if !lab.Mounted(disk) {
		t.Fatalf("%s is not a mount point after lab disk", disk)
	}

	// Writes through the router all along: the job's failure and its
	// abort must lose none of them.
	ledger := filepath.Join(t.TempDir(), "ledger.jsonl")
	ld := startProcess(t, l.env(), append([]string{"load", "--duration", "8s", "--rate", "200", "--keys", "300",
		"--ledger", ledger}, l.routerArgs()...)...)
	waitLedger(t, ledger, 30) // its buckets exist before the job: a bucket change during one is refused

	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(l.Dir, "logs", target+".log"))
			t.Logf("the destination's log ends:\n%s", lastLines(string(b), 30))
		}
	})
	start := time.Now()
	// The pre-flight check would refuse this destination (TestPreflightRefuses):
	// skipped, to fill the disk while the job runs.
	args := append([]string{"start", "--from", "1.moray", "--to", "3.moray", "--split-half", "--strategy", strategy, "--detach",
		"--skip-check", "disk"}, split...)
	if strategy == "physical" {
		args = append(args, "--lab", l.Dir)
	}
	out, stderr, ok := run(t, l.env(), args...)
	if !ok {
		t.Fatalf("start: %s", stderr)
	}
	job := strings.TrimSpace(out)
	orch := startProcess(t, l.env(), "resume", job)
	code, stderr := orch.wait(90 * time.Second)
	t.Logf("the orchestrator exited %d after %s: %s", code, time.Since(start).Round(time.Second), lastLines(stderr, 3))
	j := jobState(t, l, job)
	if code == 0 || j.State != orchestrator.Failed {
		t.Fatalf("the job is %s (exit %d), want failed", j.State, code)
	}
	t.Logf("the job failed: %s", j.Error)
	for _, want := range []string{map[string]string{"logical": "3.moray", "physical": target}[strategy], "disk full"} {
		if !strings.Contains(j.Error, want) {
			t.Errorf("the job's error does not name %q: %s", want, j.Error)
		}
	}

	retained := `select coalesce(sum(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)), 0)::bigint from pg_replication_slots`
	if strategy == "logical" {
		// The origin still holds the slots: what the abort must drop.
		if n := query[int64](t, origin, `select count(*) from pg_replication_slots`); n == 0 {
			t.Fatal("no slot on the origin before the abort")
		}
		t.Logf("the failed job's slots hold %d bytes of the origin's WAL", query[int64](t, origin, retained))
		// The abort runs with the destination's disk still full.
		if err := probe(dst); !postgres.IsDiskFull(err) {
			t.Fatalf("the destination's disk is not full before the abort: %v", err)
		}
	} else {
		// The agent refused the copy before it began, or discarded it:
		// spare-1 keeps no peer, half made or not.
		if peers, err := agent.LocalPeers(st.Agents[0].Root); err != nil || len(peers) != 0 {
			t.Fatalf("%s keeps peers after the failed copy: %+v %v", target, peers, err)
		}
	}
	if out, stderr, ok := run(t, l.env(), "abort", job); !ok {
		t.Fatalf("abort: %s %s", out, stderr)
	}
	checkUndone(t, origin, dst, owned, rows)
	if _, err := etcd.NewRegistry(l.etcdClient(t)).Pnode(context.Background(), "3.moray"); dst == "" && !errors.Is(err, reshard.ErrNotFound) {
		t.Errorf("3.moray is registered after the abort: %v", err)
	}
	if rg := ringOf(t, l); rg.PnodeVnodeCount("3.moray") != 0 {
		t.Fatal("the ring changed")
	}
	// Writes go on after the abort; no slot holds their WAL.
	sleep(1000)
	if n := query[int64](t, origin, retained); n != 0 {
		t.Errorf("the origin's slots hold %d bytes of WAL after the abort", n)
	}
	if code, stderr := ld.wait(30 * time.Second); code != 0 {
		t.Fatalf("load exited %d: %s", code, lastLines(stderr, 3))
	}
	verifyLedger(t, l, ledger)
}

// probe asks a server to write a little (shard.ProbeWrite).
func probe(dsn string) error {
	ctx := context.Background()
	conn, err := postgres.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return shard.ProbeWrite(ctx, conn)
}

func findPeer(st *lab.State, name string) (*lab.Shard, *lab.Peer) {
	for i := range st.Shards {
		for k := range st.Shards[i].Peers {
			if st.Shards[i].Peers[k].Name == name {
				return &st.Shards[i], &st.Shards[i].Peers[k]
			}
		}
	}
	return nil, nil
}

// Issue 19, the physical strategy's side: an agent whose data root has
// less room than a copy of the upstream refuses the standby before
// pg_basebackup starts, naming the host, the free space and the need, and
// leaves nothing behind; one whose disk fills during the copy says so and
// discards the half-made copy.
func TestAgentDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounts a tmpfs for the agent's data: root only")
	}
	l := labUp(t, "--shards", "1", "--peers", "1", "--routers", "0", "--vnodes", "16")
	root := agentRoot(t)
	data := filepath.Join(root, "data")
	mountTmpfs(t, data, "32M")
	startAgent(t, l, "h1", root)
	prov := &agent.Provisioner{Agents: etcd.NewAgents(l.etcdClient(t)), Hosts: []string{"h1"}}
	ctx := reshard.WithFencingToken(context.Background(), reshard.FencingToken{Job: "disk-test", Token: 1})
	origin := reshard.Peer{Name: l.Shards[0].Peers[0].Name, Role: reshard.RolePrimary, DSN: l.primary("1.moray")}
	_, err := prov.CreateStandby(ctx, "2.moray", "2.moray-1", origin)
	t.Logf("create-standby: %v", err)
	if err == nil {
		t.Fatal("a standby was made on a 32 MiB disk")
	}
	for _, want := range []string{"host h1 has", "MiB free", "needs", origin.Name} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
	if left, _ := os.ReadDir(data); len(left) != 0 {
		t.Errorf("left in the data root: %v", left)
	}
	if left, _ := filepath.Glob(filepath.Join(root, "peers", "*")); len(left) != 0 {
		t.Errorf("peer records left: %v", left)
	}

	// Room enough by the check, but the disk fills while pg_basebackup
	// copies (slowed down, and something else takes the space): the
	// error says the disk is full and the half-made copy is gone.
	root = agentRoot(t)
	data = filepath.Join(root, "data")
	mountTmpfs(t, data, "160M")
	startAgent(t, l, "h2", root)
	prov = &agent.Provisioner{Agents: prov.Agents, Hosts: []string{"h2"}, MaxRate: "4M"}
	done := make(chan error, 1)
	go func() {
		_, err := prov.CreateStandby(ctx, "2.moray", "2.moray-2", origin)
		done <- err
	}()
	for i := 0; ; i++ {
		if _, err := os.Stat(filepath.Join(data, "2.moray-2")); err == nil {
			break
		}
		if i > 600 {
			t.Fatal("pg_basebackup did not start within 30s")
		}
		sleep(50)
	}
	ballast := filepath.Join(data, "ballast")
	fill(t, ballast)
	err = <-done
	t.Logf("create-standby: %v", err)
	if err == nil {
		t.Fatal("a standby was made on a full disk")
	}
	for _, want := range []string{"host h2's disk is full", "No space left on device"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
	if _, err := os.Stat(filepath.Join(data, "2.moray-2")); !os.IsNotExist(err) {
		t.Errorf("the half-made copy is left: %v", err)
	}
	os.Remove(ballast)
}

// fill writes zeros to path until its file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("fill %s: %v", path, err)
			}
			return
		}
	}
}

// mountTmpfs mounts a tmpfs of size at dir, a directory under one the test
// made, owned by the PostgreSQL user, and unmounts it when the test ends.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	bin, err := pgserver.New("", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	opts := fmt.Sprintf("size=%s,mode=0700", size)
	if bin.As.Cred != nil {
		opts += fmt.Sprintf(",uid=%d,gid=%d", bin.As.UID, bin.As.GID)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		t.Fatalf("mount a tmpfs at %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
}

// A destination that goes down during the copy (a full pg_wal makes
// PostgreSQL PANIC, and its recovery then fails for want of the same
// space: it stays down) cannot drop its subscription. An abort meanwhile
// still drops the origin's slots and publication, so no WAL piles up
// there, says what it left on the destination, and finishes once the
// destination is back. make faults runs it (make test is near its time).
func TestAbortDestinationDown(t *testing.T) {
	if os.Getenv("RESHARD_FAULTS") != "full" {
		t.Skip("with make faults (RESHARD_FAULTS=full)")
	}
	l := labUp(t, "--shards", "2", "--peers", "1", "--routers", "1", "--vnodes", "256")
	httpDo(t, "PUT", l.Routers[0]+"/buckets/manta", `{}`)
	if err := load.Fill(context.Background(), l.etcdClient(t), "manta", 150000, io.Discard, nil); err != nil {
		t.Fatal(err)
	}
	origin := l.primary("1.moray")
	dst := l.addShard(t, "3.moray", "1")
	rows := query[int64](t, origin, `select count(*) from manta`)
	out, stderr, ok := run(t, l.env(), "start", "--from", "1.moray", "--to", "3.moray", "--split-half", "--servers", "1",
		"--strategy", "logical", "--detach")
	if !ok {
		t.Fatalf("start: %s", stderr)
	}
	f := &faultCtx{t: t, l: l, job: strings.TrimSpace(out)}
	orch := startProcess(t, l.env(), "resume", f.job)
	if p := f.waitPhase("copy"); p != "copy" {
		t.Fatalf("the job never copied: %s (%s)", p, orch.stderr())
	}
	down := startProcess(t, nil, "lab", "restart", "--dir", l.Dir, "--peer", "3.moray-1", "--kill", "--down", "15s")
	for i := 0; reachable(dst); i++ {
		if i > 200 {
			t.Fatal("the destination still answers 10 s after its kill")
		}
		sleep(50)
	}
	out, stderr, ok = run(t, l.env(), "abort", f.job)
	t.Logf("abort with the destination down: %s\nthe orchestrator: %s", stderr, orch.stderr())
	if ok || !strings.Contains(stderr, "destination 3.moray keeps subscription") {
		t.Fatalf("abort with the destination down: ok=%v %s %s", ok, out, stderr)
	}
	for name, sql := range map[string]string{
		"slots on the origin":        `select count(*) from pg_replication_slots`,
		"publications on the origin": `select count(*) from pg_publication`,
	} {
		if n := query[int64](t, origin, sql); n != 0 {
			t.Errorf("%s: %d, want 0", name, n)
		}
	}
	if code, stderr := down.wait(time.Minute); code != 0 {
		t.Fatalf("lab restart: %s", stderr)
	}
	if out, stderr, ok := run(t, l.env(), "abort", f.job); !ok || !strings.Contains(out, "aborted and undone") {
		t.Fatalf("abort again with the destination back: %s %s", out, stderr)
	}
	for name, c := range map[string]struct {
		dsn, sql string
		want     int64
	}{
		"slots on the origin":          {origin, `select count(*) from pg_replication_slots`, 0},
		"rows on the origin":           {origin, `select count(*) from manta`, rows},
		"subscriptions on the dest":    {dst, `select count(*) from pg_subscription`, 0},
		"rows on the destination":      {dst, `select count(*) from manta`, 0},
		"ownership on the destination": {dst, `select count(*) from reshard_vnodes`, 0},
	} {
		if got := query[int64](t, c.dsn, c.sql); got != c.want {
			t.Errorf("%s: %d, want %d", name, got, c.want)
		}
	}
	if rg := ringOf(t, l); rg.PnodeVnodeCount("3.moray") != 0 {
		t.Fatal("the ring changed")
	}
}

func reachable(dsn string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := postgres.Connect(ctx, dsn)
	if err != nil {
		return false
	}
	conn.Close(ctx)
	return true
}
