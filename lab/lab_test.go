package lab

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/postgres"
)

// The test binary stands in for `reshard lab supervise` and
// `reshard lab etcd-member`.
func TestMain(m *testing.M) {
	if dir, name, ok := EtcdMemberFromEnv(); ok {
		if err := RunEtcdMember(dir, name); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	if dir := os.Getenv(SupervisorEnv); dir != "" {
		if err := Supervise(dir); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func testConfig(t *testing.T, shards, peers int) Config {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		Dir: filepath.Join(t.TempDir(), "lab"), Shards: shards, Peers: peers,
		Supervisor: []string{exe, "-test.run=^$"},
	}
}

func TestLabTwoShardsThreePeers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := testConfig(t, 2, 3)
	st, err := Up(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	downed := false
	defer func() {
		if !downed {
			Down(cfg.Dir)
		}
	}()

	if _, err := Up(ctx, cfg); err == nil || !strings.Contains(err.Error(), "already up") {
		t.Fatalf("second lab up in the same dir: %v", err)
	}

	// Roles: the chain primary -> sync -> async, as the servers see it.
	rows := Status(ctx, st)
	if len(rows) != 6 {
		t.Fatalf("status has %d rows, want 6", len(rows))
	}
	for i, r := range rows {
		want := []reshard.Role{reshard.RolePrimary, reshard.RoleSync, reshard.RoleAsync}[i%3]
		if r.Role != want || r.PG != "ok" {
			t.Errorf("row %d: role %s pg %s, want %s ok", i, r.Role, r.PG, want)
		}
		if r.InRecovery != (want != reshard.RolePrimary) {
			t.Errorf("%s: in_recovery=%v", r.Peer, r.InRecovery)
		}
		switch want {
		case reshard.RolePrimary:
			if r.Repl != "sync" {
				t.Errorf("%s streams to its standby as %q, want sync", r.Peer, r.Repl)
			}
		case reshard.RoleSync:
			if r.Repl != "async" {
				t.Errorf("%s streams to the async as %q", r.Peer, r.Repl)
			}
		}
	}

	// A row written on the primary reaches both standbys.
	for _, sh := range st.Shards {
		primary := sh.Peers[0]
		conn, err := postgres.Connect(ctx, primary.DSN())
		if err != nil {
			t.Fatal(err)
		}
		_, err = conn.Exec(ctx, `create table canary (k text primary key, v text)`)
		if err == nil {
			_, err = conn.Exec(ctx, `insert into canary values ($1, $2)`, "re-shard-canary", sh.Name)
		}
		conn.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, standby := range sh.Peers[1:] {
			waitRow(t, ctx, standby, sh.Name)
		}
	}

	// Every shard is registered as a pnode with its peers.
	cli, err := etcd.Connect(ctx, st.EtcdURL)
	if err != nil {
		t.Fatal(err)
	}
	reg := etcd.NewRegistry(cli)
	ps, err := reg.Pnodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].Name != "1.moray" || len(ps[1].Peers) != 3 || ps[1].Peers[0].DSN != st.Shards[1].Peers[0].DSN() {
		t.Fatalf("registry holds %+v", ps)
	}

	// add-shard: an empty destination shard, registered too.
	st, err = AddShard(ctx, cfg.Dir, "3.moray", 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := reg.Pnode(ctx, "3.moray"); err != nil || len(p.Peers) != 2 {
		t.Fatalf("3.moray registered as %+v, %v", p, err)
	}
	if _, err := AddShard(ctx, cfg.Dir, "3.moray", 2, nil); err == nil {
		t.Fatal("adding 3.moray twice succeeded")
	}
	cli.Close()

	var pids []int
	for _, sh := range st.Shards {
		for _, p := range sh.Peers {
			pid := postmasterPID(p.DataDir)
			if !alive(pid) {
				t.Fatalf("%s: pid %d not running before down", p.Name, pid)
			}
			pids = append(pids, pid)
		}
	}
	pids = append(pids, st.SupervisorPID)
	if err := Down(cfg.Dir); err != nil {
		t.Fatal(err)
	}
	downed = true
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("pid %d still running after down", pid)
		}
	}
	if _, err := os.Stat(st.DataRoot); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data root %s left behind", st.DataRoot)
	}
	if _, err := Load(cfg.Dir); !errors.Is(err, ErrNoLab) {
		t.Errorf("state left after down: %v", err)
	}
}

func waitRow(t *testing.T, ctx context.Context, p Peer, want string) {
	t.Helper()
	conn, err := postgres.Connect(ctx, p.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var v string
		err := conn.QueryRow(ctx, `select v from canary where k = 're-shard-canary'`).Scan(&v)
		if err == nil && v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: canary row not replicated: %v", p.Name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestUpBadInputStartsNothing(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "afile")
	os.WriteFile(file, []byte("x"), 0o644)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port

	cases := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no shards", func(c *Config) { c.Shards = 0 }, "--shards"},
		{"negative peers", func(c *Config) { c.Peers = -1 }, "--peers"},
		{"dir is a file", func(c *Config) { c.Dir = file }, "is a file"},
		{"occupied port", func(c *Config) { c.BasePort = busyPort }, "in use"},
		{"negative routers", func(c *Config) { c.Routers = -1 }, "--routers"},
		{"too many vnodes", func(c *Config) { c.Vnodes = 20_000_000 }, "--vnodes"},
		{"even etcd members", func(c *Config) { c.EtcdMembers = 2 }, "--etcd-members"},
		{"too many etcd members", func(c *Config) { c.EtcdMembers = 9 }, "--etcd-members"},
		{"negative etcd members", func(c *Config) { c.EtcdMembers = -1 }, "--etcd-members"},
		// Fails after the data root exists: everything must be undone.
		{"supervisor dies", func(c *Config) { c.Supervisor = []string{"/bin/false"} }, "supervisor exited"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(t, 1, 2)
			c.edit(&cfg)
			st, err := Up(ctx, cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error about %q", err, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			if fi, err := os.Stat(cfg.Dir); err == nil && fi.IsDir() {
				t.Errorf("%s was created", cfg.Dir)
			}
			if st != nil && st.DataRoot != "" {
				if _, err := os.Stat(st.DataRoot); err == nil {
					t.Errorf("data root %s left behind", st.DataRoot)
				}
				if alive(st.SupervisorPID) {
					t.Errorf("supervisor %d left running", st.SupervisorPID)
				}
			}
		})
	}
}
