package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/lab"
	"github.com/reshard/reshard/load"
	"github.com/reshard/reshard/orchestrator"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/shard"
	"golang.org/x/sys/unix"
)

// Issue 19: the destination's disk fills up during a logical job's copy.
// The job must fail naming the cause and the destination, not wait for
// ever, and an abort must leave the origin with no slot or publication
// (so no WAL held for it) even while the destination's disk is still full.
func TestDestinationDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounts a tmpfs for the destination's disk: root only")
	}
	// Registered before the lab, so it runs after `lab down`: a disk that
	// down failed to unmount is unmounted here, the test failing or not.
	var disk string
	t.Cleanup(func() {
		if disk != "" && lab.Mounted(disk) {
			t.Errorf("lab down left %s mounted", disk)
			unix.Unmount(disk, unix.MNT_DETACH)
		}
	})
	l := labUp(t, "--shards", "2", "--peers", "1", "--routers", "1", "--vnodes", "256")
	httpDo(t, "PUT", l.Routers[0]+"/buckets/manta", `{}`)
	if err := load.Fill(context.Background(), l.etcdClient(t), "manta", 150000, io.Discard, nil); err != nil {
		t.Fatal(err)
	}
	origin := l.primary("1.moray")
	dst := l.addShard(t, "3.moray", "1")
	owned := query[int64](t, origin, `select count(*) from reshard_vnodes where writable`)
	rows := query[int64](t, origin, `select count(*) from manta`)
	moving := query[int64](t, origin, `select pg_total_relation_size('manta')`) / 2

	st, err := lab.Load(l.Dir)
	if err != nil {
		t.Fatal(err)
	}
	_, peer := findPeer(st, "3.moray-1")
	used := dirBytes(t, peer.DataDir)
	// Room for what the destination holds now plus less than half of what
	// moves to it: the copy overflows it whichever part comes first.
	size := (used + moving/3) >> 20
	disk = peer.DataDir
	t.Logf("destination uses %d MiB, %d MiB move to it: a disk of %d MiB", used>>20, moving>>20, size)
	if out, stderr, ok := run(t, nil, "lab", "disk", "--dir", l.Dir, "--peer", peer.Name, "--size", fmt.Sprintf("%dM", size)); !ok {
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
	sleep(1000) // its buckets exist before the job lists them

	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(l.Dir, "logs", peer.Name+".log"))
			t.Logf("the destination's log ends:\n%s", lastLines(string(b), 30))
		}
	})
	start := time.Now()
	out, stderr, ok := run(t, l.env(), "start", "--from", "1.moray", "--to", "3.moray", "--split-half", "--servers", "1",
		"--strategy", "logical", "--detach")
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
	for _, want := range []string{"3.moray", "disk full"} {
		if !strings.Contains(j.Error, want) {
			t.Errorf("the job's error does not name %q: %s", want, j.Error)
		}
	}

	// The origin still holds the slots: what the abort must drop.
	if n := query[int64](t, origin, `select count(*) from pg_replication_slots`); n == 0 {
		t.Fatal("no slot on the origin before the abort")
	}
	// The abort runs with the destination's disk still full.
	if err := probe(dst); !postgres.IsDiskFull(err) {
		t.Fatalf("the destination's disk is not full before the abort: %v", err)
	}
	if out, stderr, ok := run(t, l.env(), "abort", job); !ok {
		t.Fatalf("abort: %s %s", out, stderr)
	}
	checks := map[string]struct {
		dsn, sql string
		want     int64
	}{
		"slots on the origin":           {origin, `select count(*) from pg_replication_slots`, 0},
		"publications on the origin":    {origin, `select count(*) from pg_publication`, 0},
		"markers on the origin":         {origin, `select count(*) from reshard_markers`, 0},
		"writable vnodes on the origin": {origin, `select count(*) from reshard_vnodes where writable`, owned},
		"rows on the origin":            {origin, `select count(*) from manta`, rows},
		"subscriptions on the dest":     {dst, `select count(*) from pg_subscription`, 0},
		"ownership on the destination":  {dst, `select count(*) from reshard_vnodes`, 0},
		"rows on the destination":       {dst, `select count(*) from manta`, 0},
	}
	for name, c := range checks {
		if got := query[int64](t, c.dsn, c.sql); got != c.want {
			t.Errorf("%s: %d, want %d", name, got, c.want)
		}
	}
	if rg := ringOf(t, l); rg.PnodeVnodeCount("3.moray") != 0 {
		t.Fatal("the ring changed")
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

// dirBytes is the space a directory's files take, as du counts it.
func dirBytes(t *testing.T, dir string) int64 {
	out, err := exec.Command("du", "-sb", dir).Output()
	if err != nil {
		t.Fatalf("du %s: %v", dir, err)
	}
	var n int64
	fmt.Sscanf(string(out), "%d", &n)
	return n
}
