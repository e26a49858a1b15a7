package etcd_test

import (
	"context"
	"errors"
	"testing"

	"github.com/reshard/reshard"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/etcd/etcdtest"
	"github.com/reshard/reshard/ring"
)

func TestRegistry(t *testing.T) {
	ctx := context.Background()
	cli, _ := etcdtest.Start(t)
	reg := etcd.NewRegistry(cli)
	p := reshard.Pnode{Name: "1.moray", Peers: []reshard.Peer{
		{Name: "a", Role: reshard.RolePrimary, DSN: "postgres://h1/moray"},
		{Name: "b", Role: reshard.RoleSync, DSN: "postgres://h2/moray"},
	}}
	if err := reg.AddPnode(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := reg.AddPnode(ctx, p); !errors.Is(err, reshard.ErrExists) {
		t.Fatalf("second add: %v", err)
	}
	bad := p
	bad.Name = "2.moray"
	bad.Peers = []reshard.Peer{{Name: "a", Role: reshard.RoleSync, DSN: "postgres://h/db"}}
	if err := reg.AddPnode(ctx, bad); err == nil {
		t.Fatal("pnode without a primary registered")
	}
	got, err := reg.Pnode(ctx, "1.moray")
	if err != nil || len(got.Peers) != 2 || got.Peers[1].DSN != "postgres://h2/moray" {
		t.Fatalf("got %+v, %v", got, err)
	}
	if _, err := reg.Pnode(ctx, "2.moray"); !errors.Is(err, reshard.ErrNotFound) {
		t.Fatalf("unregistered pnode: %v", err)
	}

	// The ring maps vnodes to 1.moray: it cannot go.
	rg, err := ring.New(ring.SHA256, 8, []string{"1.moray"})
	if err != nil {
		t.Fatal(err)
	}
	store := etcd.NewRingStore(cli)
	rv, err := store.Put(ctx, 0, rg, "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.RemovePnode(ctx, "1.moray"); !errors.Is(err, reshard.ErrInUse) {
		t.Fatalf("removing a pnode in use: %v", err)
	}
	if _, err := store.Update(ctx, rv.Version, "move away", func(r *ring.Ring) error {
		return r.Remap([]uint32{0, 1, 2, 3, 4, 5, 6, 7}, "2.moray")
	}); err != nil {
		t.Fatal(err)
	}
	if err := reg.RemovePnode(ctx, "1.moray"); err != nil {
		t.Fatal(err)
	}
	if ps, err := reg.Pnodes(ctx); err != nil || len(ps) != 0 {
		t.Fatalf("after remove: %+v %v", ps, err)
	}
}
