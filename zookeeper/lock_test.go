package zookeeper_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/reshard/reshard/zookeeper"
	"github.com/reshard/reshard/zookeeper/zktest"
)

// The dump lock znode against a real ZooKeeper: taken, taken again by the
// same holder, refused to another, and released only by its holder and
// only while its data is unchanged.
func TestDumpLockZnode(t *testing.T) {
	addr := zktest.Start(t)
	ctx := context.Background()
	other := zktest.Client(t, addr) // an operator with zkCli.sh
	l, err := zookeeper.Dial(ctx, []string{addr}, zookeeper.DefaultPath)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	data := func() (string, int32, bool) {
		t.Helper()
		b, st, err := other.Get(zookeeper.DefaultPath)
		if errors.Is(err, zk.ErrNoNode) {
			return "", 0, false
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(b), st.Version, true
	}

	if err := l.Acquire(ctx, "job-a"); err != nil {
		t.Fatal(err)
	}
	if d, _, ok := data(); !ok || d != "job-a" {
		t.Fatalf("after acquire: %q %v", d, ok)
	}
	flags := func() int64 {
		_, st, err := other.Get(zookeeper.DefaultPath)
		if err != nil {
			t.Fatal(err)
		}
		return st.EphemeralOwner
	}
	if owner := flags(); owner != 0 {
		t.Fatalf("the znode is ephemeral (owner %d); Manatee's dump must see it after reshard exits", owner)
	}
	// Again, as a resumed job would: no error, nothing changed.
	_, v0, _ := data()
	if err := l.Acquire(ctx, "job-a"); err != nil {
		t.Fatalf("re-acquire by the holder: %v", err)
	}
	if d, v, _ := data(); d != "job-a" || v != v0 {
		t.Fatalf("re-acquire changed the node: %q version %d -> %d", d, v0, v)
	}
	// From another session too: the lock is the data, not the session.
	l2, err := zookeeper.Dial(ctx, []string{addr}, zookeeper.DefaultPath)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if err := l2.Acquire(ctx, "job-a"); err != nil {
		t.Fatalf("re-acquire from a new session: %v", err)
	}
	// Another holder is refused, and told who holds it.
	err = l2.Acquire(ctx, "manatee-dump")
	var held *zookeeper.HeldError
	if !errors.As(err, &held) || !errors.Is(err, zookeeper.ErrHeld) || held.Holder != "job-a" ||
		!strings.Contains(err.Error(), `held by "job-a"`) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("acquire by another holder: %v", err)
	}
	if d, v, _ := data(); d != "job-a" || v != v0 {
		t.Fatalf("a refused acquire changed the node: %q", d)
	}
	if h, since, ok, err := l2.Holder(ctx); err != nil || !ok || h != "job-a" || time.Since(since) > time.Minute {
		t.Fatalf("holder: %q %v %v %v", h, since, ok, err)
	}
	// Release by someone else leaves it.
	if del, err := l2.Release(ctx, "manatee-dump"); err != nil || del {
		t.Fatalf("release by another holder: %v %v", del, err)
	}
	if d, _, ok := data(); !ok || d != "job-a" {
		t.Fatal("another holder's release deleted the node")
	}
	// Release by the holder deletes it; again does nothing.
	if del, err := l.Release(ctx, "job-a"); err != nil || !del {
		t.Fatalf("release: %v %v", del, err)
	}
	if _, _, ok := data(); ok {
		t.Fatal("the node survived its holder's release")
	}
	if del, err := l.Release(ctx, "job-a"); err != nil || del {
		t.Fatalf("second release: %v %v", del, err)
	}
	if _, _, ok, err := l.Holder(ctx); ok || err != nil {
		t.Fatalf("holder of no node: %v %v", ok, err)
	}

	// The data changed under the holder (a person took the lock over with
	// zkCli.sh set): its release leaves the node alone.
	if err := l.Acquire(ctx, "job-b"); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Set(zookeeper.DefaultPath, []byte("manatee-dump"), -1); err != nil {
		t.Fatal(err)
	}
	if del, err := l.Release(ctx, "job-b"); err != nil || del {
		t.Fatalf("release after the data changed: %v %v", del, err)
	}
	if d, _, ok := data(); !ok || d != "manatee-dump" {
		t.Fatalf("release clobbered the new holder: %q %v", d, ok)
	}
	if err := l.Acquire(ctx, "job-b"); !errors.Is(err, zookeeper.ErrHeld) {
		t.Fatalf("acquire while manatee-dump holds it: %v", err)
	}
	// Empty data, as `zkCli.sh create /pg_dump_lock` leaves, is a holder too.
	if err := other.Delete(zookeeper.DefaultPath, -1); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Create(zookeeper.DefaultPath, nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	if err := l.Acquire(ctx, "job-b"); !errors.Is(err, zookeeper.ErrHeld) || !strings.Contains(err.Error(), `held by ""`) {
		t.Fatalf("acquire over an empty node: %v", err)
	}
	other.Delete(zookeeper.DefaultPath, -1)

	// A path under a parent that does not exist is one clear line.
	deep, err := zookeeper.Dial(ctx, []string{addr}, "/manatee/nosuch/pg_dump_lock")
	if err != nil {
		t.Fatal(err)
	}
	defer deep.Close()
	if err := deep.Acquire(ctx, "job-c"); err == nil || !strings.Contains(err.Error(), "parent znode does not exist") {
		t.Fatalf("acquire under a missing parent: %v", err)
	}
}

// The release deletes at the version it read: a change between its read
// and its delete makes it look again rather than delete the new data.
func TestDumpLockZnodeReleaseRace(t *testing.T) {
	addr := zktest.Start(t)
	ctx := context.Background()
	other := zktest.Client(t, addr)
	l, err := zookeeper.Dial(ctx, []string{addr}, "/lock")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// Rewriting the same data bumps the version: the holder is unchanged,
	// so the release still deletes, after a second look.
	for i := range 30 {
		if err := l.Acquire(ctx, "job-a"); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			other.Set("/lock", []byte("job-a"), -1)
			if i%2 == 0 {
				other.Set("/lock", []byte("other"), -1)
			}
		}()
		_, relErr := l.Release(ctx, "job-a")
		<-done
		if relErr != nil {
			t.Fatal(relErr)
		}
		b, _, err := other.Get("/lock")
		switch {
		case errors.Is(err, zk.ErrNoNode):
		case err != nil:
			t.Fatal(err)
		case string(b) != "other":
			t.Fatalf("round %d: the release left %q behind", i, b)
		}
		other.Delete("/lock", -1)
	}
}

func TestParseServersAndPath(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:2181":              "127.0.0.1:2181",
		"zk1:2181, zk2:2182,zk3":      "zk1:2181,zk2:2182,zk3:2181",
		"[::1]:2181":                  "[::1]:2181",
		"nameservice.example.com:218": "nameservice.example.com:218",
	} {
		got, err := zookeeper.ParseServers(in)
		if err != nil || strings.Join(got, ",") != want {
			t.Errorf("ParseServers(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", ",", "zk1:", "zk1:x", "zk1:70000", "a:b:c", "http://zk1:2181"} {
		if got, err := zookeeper.ParseServers(in); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseServers(%q) = %v, %v; want one-line error", in, got, err)
		}
	}
	for _, p := range []string{"/pg_dump_lock", "/manatee/1.moray/pg_dump_lock"} {
		if err := zookeeper.ValidatePath(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	for _, p := range []string{"", "/", "pg_dump_lock", "/a/", "/a//b", "/a/../b", "/zookeeper/quota"} {
		if err := zookeeper.ValidatePath(p); err == nil {
			t.Errorf("%q accepted", p)
		}
	}
	// An ensemble that is not there fails in one line, in bounded time.
	old := zookeeper.SessionWait
	zookeeper.SessionWait = 2 * time.Second
	defer func() { zookeeper.SessionWait = old }()
	start := time.Now()
	_, err := zookeeper.Dial(context.Background(), []string{"127.0.0.1:1"}, zookeeper.DefaultPath)
	if err == nil || !strings.Contains(err.Error(), "ZooKeeper 127.0.0.1:1: no session") || strings.Contains(err.Error(), "\n") || time.Since(start) > 5*time.Second {
		t.Fatalf("dial of nothing: %v after %s", err, time.Since(start))
	}
}
