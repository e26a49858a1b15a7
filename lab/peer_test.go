package lab

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/reshard/reshard"
)

// A server whose port another server took in the meantime (a second lab,
// in tests run side by side) moves to a free port, and the lab never takes
// the other server for its own.
func TestStartMovesOffATakenPort(t *testing.T) {
	ctx := context.Background()
	other, err := StartServer(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Stop()
	g, err := newPG(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.MkdirTemp("", "reshard-pg-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(root)
	if err := g.as.Chown(root); err != nil {
		t.Fatal(err)
	}
	p := Peer{Name: "pg2", Role: reshard.RolePrimary, Port: other.Port, DataDir: filepath.Join(root, "pg")}
	if err := g.initPrimary(p); err != nil {
		t.Fatal(err)
	}
	if _, err := g.writeConf(p, "", nil); err != nil {
		t.Fatal(err)
	}
	if err := g.start(ctx, &p); err != nil {
		t.Fatal(err)
	}
	defer g.stop(p)
	if p.Port == other.Port {
		t.Fatalf("started on the taken port %d", p.Port)
	}
	if ours, err := serves(ctx, &p); err != nil || !ours {
		t.Fatalf("the server on port %d is not this one: %v %v", p.Port, ours, err)
	}
	if ours, _ := serves(ctx, &Peer{Port: other.Port, DataDir: p.DataDir}); ours {
		t.Fatal("the other server was taken for this one")
	}
}
