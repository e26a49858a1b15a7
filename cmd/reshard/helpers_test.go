package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/postgres"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// labInfo is what `lab up --json` prints.
type labInfo struct {
	Dir     string
	Etcd    string   `json:"etcd"`
	Routers []string `json:"routers"`
	Moray   []string `json:"moray"`
	UI      string   `json:"ui"`
	Shards  []struct {
		Name  string `json:"name"`
		Peers []struct {
			Role, Name, DSN string
			Port            int
		} `json:"peers"`
	} `json:"shards"`
}

// shardPort is the port of a shard's primary.
func (l *labInfo) shardPort(name string) int {
	for _, s := range l.Shards {
		if s.Name == name {
			return s.Peers[0].Port
		}
	}
	return 0
}

func (l *labInfo) env() []string { return []string{"RESHARD_ETCD=" + l.Etcd} }

// labUp brings a lab up for one test and takes it down after.
func labUp(t testing.TB, args ...string) *labInfo {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "lab")
	out, stderr, ok := run(t, nil, append([]string{"lab", "up", "--dir", dir, "--json"}, args...)...)
	if !ok {
		t.Fatalf("lab up: %s", stderr)
	}
	t.Cleanup(func() { run(t, nil, "lab", "down", "--dir", dir) })
	l := &labInfo{Dir: dir}
	if err := json.Unmarshal([]byte(out), l); err != nil {
		t.Fatalf("lab up printed %q: %v", out, err)
	}
	return l
}

// addShard adds an empty shard and returns its primary's DSN.
func (l *labInfo) addShard(t testing.TB, name string, peers string) string {
	t.Helper()
	out, stderr, ok := run(t, nil, "lab", "add-shard", "--dir", l.Dir, "--name", name, "--peers", peers, "--json")
	if !ok {
		t.Fatalf("add-shard %s: %s", name, stderr)
	}
	dir := l.Dir
	if err := json.Unmarshal([]byte(out), l); err != nil {
		t.Fatal(err)
	}
	l.Dir = dir
	if dsn := l.primary(name); dsn != "" {
		return dsn
	}
	t.Fatalf("add-shard: %s not in %s", name, out)
	return ""
}

// etcdClient connects to the lab's etcd for the rest of the test.
func (l *labInfo) etcdClient(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := etcd.Connect(context.Background(), l.Etcd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func sleep(ms int) { time.Sleep(time.Duration(ms) * time.Millisecond) }

func (l *labInfo) primary(name string) string {
	for _, s := range l.Shards {
		if s.Name == name {
			return s.Peers[0].DSN
		}
	}
	return ""
}

func (l *labInfo) routerArgs() []string {
	var a []string
	for _, r := range l.Routers {
		a = append(a, "--router", r)
	}
	return a
}

// query runs one query returning one value.
func query[T any](t testing.TB, dsn, sql string, args ...any) T {
	t.Helper()
	ctx := context.Background()
	conn, err := postgres.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v T
	if err := conn.QueryRow(ctx, sql, args...).Scan(&v); err != nil && err != pgx.ErrNoRows {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

func itoa[T ~int64 | ~int](v T) string { return strconv.FormatInt(int64(v), 10) }

func etcdPrefix() clientv3.OpOption { return clientv3.WithPrefix() }

// parallelLab marks a lab test that may share the machine with one other:
// the long fault, kill and pause tests, which check what was kept and
// where, never how fast. Their labs mostly wait (on load at a fixed rate,
// leases, restarts), so two side by side take little more than one. Tests
// that assert a write block or a latency stay sequential, and run before
// these (go test starts parallel tests after the sequential ones).
func parallelLab(t *testing.T) {
	if os.Getenv("RESHARD_SEQUENTIAL") == "" {
		t.Parallel()
	}
}
