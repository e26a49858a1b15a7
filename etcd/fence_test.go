package etcd_test

import (
	"context"
	"errors"
	"testing"

	"github.com/reshard/reshard"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/etcd/etcdtest"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// A job's writes under a fence land while its holder keeps the lock, and
// are refused (ErrFenced, nothing written) once the lock changed hands,
// while the writes' own conditions still answer as without a fence.
func TestJobWritesAreFenced(t *testing.T) {
	ctx := context.Background()
	cli, _ := etcdtest.Start(t)
	jobs := etcd.NewJobs(cli)
	type rec struct{ State string }
	if err := jobs.Create(ctx, "j1", rec{"pending"}, []string{"1.moray", "3.moray"}); err != nil {
		t.Fatal(err)
	}
	if err := jobs.Create(ctx, "j2", rec{"pending"}, []string{"3.moray"}); !errors.As(err, &etcd.ErrPnodeBusy{}) {
		t.Fatalf("a second job on a busy pnode: %v", err)
	}
	first, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	fence, unlock, err := jobs.Hold(ctx, first, "j1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	fenced := etcd.WithFence(ctx, fence)
	if err := jobs.Save(fenced, "j1", rec{"running"}); err != nil {
		t.Fatal(err)
	}
	// The pnode record's own condition (not registered yet) still decides.
	reg := etcd.NewRegistry(cli)
	p := reshard.Pnode{Name: "3.moray", Peers: []reshard.Peer{{Name: "a", Role: reshard.RolePrimary, DSN: "postgres://h/db"}}}
	if err := reg.AddPnode(fenced, p); err != nil {
		t.Fatal(err)
	}
	if err := reg.AddPnode(fenced, p); !errors.Is(err, reshard.ErrExists) {
		t.Fatalf("second add under the fence: %v", err)
	}

	// The first holder's lease ends; a second orchestrator takes the job.
	first.Orphan()
	if _, err := cli.Revoke(ctx, first.Lease()); err != nil {
		t.Fatal(err)
	}
	second, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	next, unlock2, err := jobs.Hold(ctx, second, "j1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock2()
	if next.Token <= fence.Token {
		t.Fatalf("the successor's token %d is not above %d", next.Token, fence.Token)
	}
	if err := jobs.Save(etcd.WithFence(ctx, next), "j1", rec{"done"}); err != nil {
		t.Fatal(err)
	}
	// Everything the first holder still sends is refused.
	for name, err := range map[string]error{
		"save":            jobs.Save(fenced, "j1", rec{"failed"}),
		"release pnodes":  jobs.ReleasePnodes(fenced, "j1", []string{"1.moray"}),
		"remove pnode":    reg.RemovePnode(fenced, "3.moray"),
		"dump lock":       etcd.AcquireDumpLock(fenced, cli, second.Lease(), "job:j1"),
		"check the fence": etcd.CheckFence(fenced, cli),
	} {
		if !errors.Is(err, etcd.ErrFenced) {
			t.Errorf("%s by the old holder: %v, want ErrFenced", name, err)
		}
	}
	var got rec
	if err := jobs.Get(ctx, "j1", &got); err != nil || got.State != "done" {
		t.Fatalf("the record after the old holder's writes: %+v %v", got, err)
	}
	if locks, _ := etcd.PnodeLocks(ctx, cli); locks["1.moray"] != "j1" {
		t.Fatalf("pnode locks after the old holder's release: %v", locks)
	}
	if _, err := reg.Pnode(ctx, "3.moray"); err != nil {
		t.Fatalf("the old holder removed a pnode: %v", err)
	}
}
