package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/shard"
)

var binary string

// The CLI tests run the real binary, as an operator would.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "reshard-bin-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "reshard")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		os.Stderr.Write(out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run runs reshard and returns stdout, stderr and whether it succeeded.
func run(t testing.TB, env []string, args ...string) (string, string, bool) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err == nil
}

func TestLabCLI(t *testing.T) {
	up := labUp(t, "--shards", "1", "--peers", "2", "--routers", "1", "--vnodes", "16", "--ui", "127.0.0.1:0")
	dir := up.Dir
	// The lab serves the dashboard; lab down stops it.
	if !strings.HasPrefix(up.UI, "http://127.0.0.1:") {
		t.Fatalf("lab up --ui: dashboard at %q", up.UI)
	}
	var dash struct {
		Ring struct{ Version int64 } `json:"ring"`
	}
	for deadline := time.Now().Add(15 * time.Second); dash.Ring.Version == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the lab's dashboard %s did not show the ring", up.UI)
		}
		if resp, err := http.Get(up.UI + "api/state"); err == nil {
			json.NewDecoder(resp.Body).Decode(&dash)
			resp.Body.Close()
		}
	}
	if !strings.HasPrefix(up.Etcd, "http://127.0.0.1:") || len(up.Routers) != 1 || len(up.Shards) != 1 ||
		up.Shards[0].Name != "1.moray" || len(up.Shards[0].Peers) != 2 ||
		up.Shards[0].Peers[0].Role != "primary" || up.Shards[0].Peers[1].Role != "sync" || up.Shards[0].Peers[0].Port == 0 {
		t.Fatalf("lab up --json: %+v", up)
	}
	env := up.env()
	var out, stderr string
	var ok bool

	// The router is its own process, serving the lab's ring.
	resp, err := http.Get(up.Routers[0] + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var health struct {
		RingVersion int64 `json:"ring_version"`
	}
	json.NewDecoder(resp.Body).Decode(&health)
	resp.Body.Close()
	if health.RingVersion != 1 {
		t.Fatalf("router serves ring %d", health.RingVersion)
	}
	pidb, err := os.ReadFile(filepath.Join(dir, "run", "router-1.pid"))
	if err != nil {
		t.Fatal(err)
	}
	routerPID, _ := strconv.Atoi(string(pidb))
	if out, _, _ := run(t, env, "ring", "get-pnodes", "--json"); !strings.Contains(out, "1.moray") {
		t.Fatalf("ring get-pnodes: %s", out)
	}

	// A second up on the same dir is one clear line, and changes nothing.
	if _, stderr, ok := run(t, nil, "lab", "up", "--dir", dir); ok || !strings.Contains(stderr, "already up") || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("second lab up: ok=%v %q", ok, stderr)
	}

	out, stderr, ok = run(t, nil, "lab", "status", "--dir", dir)
	if !ok || !strings.Contains(out, "cluster: 1.moray") || !strings.Contains(out, "REPLAY") {
		t.Fatalf("lab status: %s %s", out, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if f := strings.Fields(lines[2]); f[0] != "primary" || f[2] != "1.moray-1" || f[3] != "ok" || f[4] != "sync" {
		t.Fatalf("primary row: %q", lines[2])
	}

	// The registry path an operator uses on real hosts.
	if _, stderr, ok := run(t, env, "pnode", "add", "9.moray", "--primary", "postgres://postgres:hunter2@10.0.0.9:5432/moray"); !ok {
		t.Fatalf("pnode add: %s", stderr)
	}
	out, _, _ = run(t, env, "pnode", "list", "--json")
	if strings.Contains(out, "hunter2") || !strings.Contains(out, "9.moray") || !strings.Contains(out, "1.moray") {
		t.Fatalf("pnode list: %s", out)
	}
	if _, stderr, ok := run(t, env, "pnode", "add", "9.moray", "--primary", "postgres://x@h/db"); ok || !strings.Contains(stderr, "already exists") {
		t.Fatalf("duplicate pnode add: ok=%v %s", ok, stderr)
	}
	if _, stderr, ok := run(t, env, "pnode", "add", "8.moray", "--primary", "postgres://u:hunter2@h:port/db"); ok || strings.Contains(stderr, "hunter2") {
		t.Fatalf("bad DSN: ok=%v %s", ok, stderr)
	}
	if _, _, ok := run(t, env, "pnode", "remove", "9.moray"); !ok {
		t.Fatal("pnode remove failed")
	}

	// vnode-stats reads the primary through the registry.
	ctx := context.Background()
	conn, err := postgres.Connect(ctx, up.Shards[0].Peers[0].DSN)
	if err != nil {
		t.Fatal(err)
	}
	if err := shard.CreateBucket(ctx, conn, "manta", shard.BucketOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := shard.Own(ctx, conn, []int32{0, 106, 943, 689}, true, 1); err != nil {
		t.Fatal(err)
	}
	for i, v := range []int{0, 0, 0, 106, 106, 943} {
		if _, err := conn.Exec(ctx, `insert into manta (_key, _value, _etag, _mtime, _vnode) values ($1, '{}', 'e', 0, $2)`, fmt.Sprint("/k", i), v); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close(ctx)
	out, stderr, ok = run(t, env, "vnode-stats", "--pnode", "1.moray", "--json")
	var stats []shard.VnodeStat
	if !ok || json.Unmarshal([]byte(out), &stats) != nil || len(stats) != 3 || stats[0].Vnode != 0 || stats[0].Rows != 3 || stats[2].Rows != 1 {
		t.Fatalf("vnode-stats: %s %s", out, stderr)
	}
	out, _, _ = run(t, env, "vnode-stats", "--pnode", "1.moray", "--top", "1")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || strings.Fields(lines[1])[0] != "0" || !strings.Contains(lines[2], "2 more vnodes holding 3 rows") {
		t.Fatalf("vnode-stats --top 1: %q", out)
	}
	if _, stderr, ok := run(t, env, "vnode-stats", "--pnode", "1.moray", "--bucket", "x;drop"); ok || !strings.Contains(stderr, "invalid bucket") {
		t.Fatalf("vnode-stats with a bad bucket: %s", stderr)
	}

	// pnode init adopts a shard: schema, buckets, and the ring's vnodes.
	out, stderr, ok = run(t, env, "pnode", "init", "1.moray", "--json")
	var initOut struct {
		Vnodes  int
		Buckets []string
	}
	if json.Unmarshal([]byte(out), &initOut); !ok || initOut.Vnodes != 16 {
		t.Fatalf("pnode init: %s %s", out, stderr)
	}
	if n := query[int64](t, up.Shards[0].Peers[0].DSN, `select count(*) from reshard_vnodes where writable`); n < 16 {
		t.Fatalf("after pnode init 1.moray owns %d writable vnodes", n)
	}

	out, stderr, ok = run(t, nil, "lab", "add-shard", "--dir", dir, "--name", "3.moray", "--peers", "1", "--json")
	if !ok || !strings.Contains(out, `"name":"3.moray"`) {
		t.Fatalf("add-shard: %s %s", out, stderr)
	}
	if _, stderr, ok := run(t, nil, "lab", "add-shard", "--dir", dir, "--name", "x;drop", "--peers", "1"); ok || !strings.Contains(stderr, "invalid pnode name") {
		t.Fatalf("add-shard with a bad name: %s", stderr)
	}

	if _, stderr, ok := run(t, nil, "lab", "down", "--dir", dir); !ok {
		t.Fatalf("lab down: %s", stderr)
	}
	if syscall.Kill(routerPID, 0) == nil {
		t.Fatalf("router pid %d still running after lab down", routerPID)
	}
	if _, err := http.Get(up.UI + "api/state"); err == nil {
		t.Fatalf("the dashboard %s still answers after lab down", up.UI)
	}
	if _, stderr, ok := run(t, nil, "lab", "status", "--dir", dir); ok || !strings.Contains(stderr, "no lab") {
		t.Fatalf("status after down: %s", stderr)
	}
}

func TestBadInputIsOneLine(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, nil, 0o644)
	cases := [][]string{
		{"lab", "up", "--dir", t.TempDir() + "/x", "--shards", "0"},
		{"lab", "up", "--dir", file},
		{"lab", "up", "--dir", t.TempDir() + "/y", "--peers", "abc"},
		{"lab", "down", "--dir", t.TempDir()},
		{"pnode", "list", "--etcd", "http://127.0.0.1:1"},
		{"pnode", "add", "x'y", "--primary", "postgres://h/db"},
		{"lab", "up", "--dir", t.TempDir() + "/z", "--ui", "nonsense"},
		{"ui", "--sample", "1ms"},
		{"ui", "--listen", "nonsense"},
		{"ui", "--token-file", file},
	}
	for _, args := range cases {
		out, stderr, ok := run(t, nil, args...)
		if ok {
			t.Errorf("%v succeeded: %s", args, out)
			continue
		}
		if n := strings.Count(strings.TrimSpace(stderr), "\n"); n != 0 || !strings.HasPrefix(stderr, "reshard: ") {
			t.Errorf("%v: error is not one line: %q", args, stderr)
		}
	}
}
