package etcd_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reshard/reshard"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/etcd/etcdtest"
	"github.com/reshard/reshard/ring"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var shards = []string{"tcp://1.moray:2020", "tcp://2.moray:2020", "tcp://3.moray:2020"}

func newRing(t testing.TB, vnodes int) *ring.Ring {
	t.Helper()
	r, err := ring.New(ring.SHA256, vnodes, shards)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRingVersionsHistoryRollback(t *testing.T) {
	cli, _ := etcdtest.Start(t)
	ctx := context.Background()
	s := etcd.NewRingStore(cli)
	if _, _, err := s.Current(ctx); !errors.Is(err, etcd.ErrNoRing) {
		t.Fatalf("empty store: %v", err)
	}
	r1 := newRing(t, 1024)
	v1, err := s.Put(ctx, 0, r1, "create")
	if err != nil || v1.Version != 1 {
		t.Fatalf("create: %v %+v", err, v1)
	}
	if _, err := s.Put(ctx, 0, r1, "create again"); !errors.Is(err, etcd.ErrVersionConflict) {
		t.Fatalf("second create: %v", err)
	}
	v2, err := s.Update(ctx, 0, "remap", func(r *ring.Ring) error {
		return r.Remap([]uint32{0, 106, 943, 689}, "tcp://4.moray:2020")
	})
	if err != nil || v2.Version != 2 || v2.Parent != 1 {
		t.Fatalf("update: %v %+v", err, v2)
	}
	// A change that fails validation stores nothing.
	if _, err := s.Update(ctx, 0, "bad", func(r *ring.Ring) error {
		return r.SetData([]uint32{5000}, json.RawMessage(`"ro"`))
	}); err == nil || !strings.Contains(err.Error(), "unknown vnode 5000") {
		t.Fatalf("bad update: %v", err)
	}
	cur, rv, err := s.Current(ctx)
	if err != nil || rv.Version != 2 {
		t.Fatalf("current: %v %d", err, rv.Version)
	}
	if p, _, _ := cur.Vnode(943); p != "tcp://4.moray:2020" {
		t.Fatalf("vnode 943 on %s", p)
	}
	old, _, err := s.Get(ctx, 1)
	if err != nil || !old.Equal(r1) {
		t.Fatalf("version 1 not kept: %v", err)
	}
	v3, err := s.Rollback(ctx, 1, 2)
	if err != nil || v3.Version != 3 || v3.Blob != v1.Blob {
		t.Fatalf("rollback: %v %+v", err, v3)
	}
	cur, _, _ = s.Current(ctx)
	if !cur.Equal(r1) {
		t.Fatal("rollback did not restore version 1")
	}
	if _, err := s.Rollback(ctx, 2, 2); !errors.Is(err, etcd.ErrVersionConflict) {
		t.Fatalf("stale rollback: %v", err)
	}
	if _, err := s.Rollback(ctx, 9, 0); err == nil || !strings.Contains(err.Error(), "version 9 does not exist") {
		t.Fatalf("rollback to missing version: %v", err)
	}
	h, err := s.History(ctx)
	if err != nil || len(h) != 3 || h[0].Version != 1 || h[2].Comment != "rollback to version 1" {
		t.Fatalf("history: %v %+v", err, h)
	}
}

// Two operators write from the same version: exactly one wins, the other is
// told about the conflict, and the stored ring is the winner's.
func TestRingConcurrentWritersOneWins(t *testing.T) {
	cli, url := etcdtest.Start(t)
	ctx := context.Background()
	if _, err := etcd.NewRingStore(cli).Put(ctx, 0, newRing(t, 1000), "create"); err != nil {
		t.Fatal(err)
	}
	// A second client, as a second operator would have.
	cli2, err := etcd.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer cli2.Close()
	stores := []*etcd.RingStore{etcd.NewRingStore(cli), etcd.NewRingStore(cli2)}
	for round := int64(1); round <= 5; round++ {
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, 2)
		rings := make([]*ring.Ring, 2)
		for i := range stores {
			r, rv, err := stores[i].Current(ctx)
			if err != nil || rv.Version != round {
				t.Fatalf("round %d: at version %d: %v", round, rv.Version, err)
			}
			r = r.Clone()
			if err := r.Remap([]uint32{uint32(round)}, fmt.Sprintf("writer-%d", i)); err != nil {
				t.Fatal(err)
			}
			rings[i] = r
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, errs[i] = stores[i].Put(ctx, round, rings[i], fmt.Sprintf("writer %d", i))
			}()
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil:
				if winner >= 0 {
					t.Fatalf("round %d: both writers won", round)
				}
				winner = i
			case !errors.Is(err, etcd.ErrVersionConflict):
				t.Fatalf("round %d: writer %d: unexpected error %v", round, i, err)
			case !strings.Contains(err.Error(), fmt.Sprintf("expected version %d but the ring is now at version %d", round, round+1)):
				t.Fatalf("round %d: unclear conflict error %q", round, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: nobody won: %v", round, errs)
		}
		cur, rv, err := stores[0].Current(ctx)
		if err != nil || rv.Version != round+1 || !cur.Equal(rings[winner]) {
			t.Fatalf("round %d: stored ring is not the winner's (version %d, %v)", round, rv.Version, err)
		}
	}
}

func TestRingWatchDeliversEachVersion(t *testing.T) {
	cli, _ := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := etcd.NewRingStore(cli)
	if _, err := s.Put(ctx, 0, newRing(t, 1000), "create"); err != nil {
		t.Fatal(err)
	}
	ch := s.Watch(ctx)
	first := <-ch
	if first.Err != nil || first.Version.Version != 1 {
		t.Fatalf("first delivery: %+v", first)
	}
	var worst time.Duration
	for v := int64(2); v <= 6; v++ {
		began := time.Now()
		if _, err := s.Update(ctx, v-1, "", func(r *ring.Ring) error {
			return r.SetData([]uint32{uint32(v)}, json.RawMessage(`"ro"`))
		}); err != nil {
			t.Fatal(err)
		}
		select {
		case u := <-ch:
			if u.Err != nil || u.Version.Version != v {
				t.Fatalf("want version %d, got %+v", v, u)
			}
			if _, d, _ := u.Ring.Vnode(uint32(v)); string(d) != `"ro"` {
				t.Fatalf("version %d: vnode %d data %s", v, v, d)
			}
			worst = max(worst, time.Since(began))
		case <-time.After(2 * time.Second):
			t.Fatalf("version %d not delivered", v)
		}
	}
	t.Logf("slowest write-to-delivery: %v", worst)
	if worst > 500*time.Millisecond {
		t.Errorf("watch took %v", worst)
	}
	cancel()
	for range ch { // the channel closes when the context ends
	}
}

// scattered assigns every vnode to a random pnode: the worst case for the
// range encoding.
func scattered(t testing.TB, vnodes, pnodes int) *ring.Ring {
	r := newRing(t, vnodes)
	rng := rand.New(rand.NewSource(7))
	lists := make([][]uint32, pnodes)
	for v := 0; v < vnodes; v++ {
		p := rng.Intn(pnodes)
		lists[p] = append(lists[p], uint32(v))
	}
	for p, vs := range lists {
		if err := r.Remap(vs, fmt.Sprintf("tcp://%d.moray.example.com:2020", p)); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// Rings too big for one etcd request are chunked, and a writer that loses
// leaves no chunks behind.
func TestRingChunkedAndLarge(t *testing.T) {
	cli, _ := etcdtest.Start(t)
	ctx := context.Background()
	s := etcd.NewRingStore(cli)
	big := scattered(t, 100000, 50)
	v, err := s.Put(ctx, 0, big, "100k scattered vnodes, default chunks")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("100k scattered vnodes over 50 pnodes: %d bytes gzipped in %d chunk(s)", v.Size, v.Chunks)
	got, _, err := s.Get(ctx, 1)
	if err != nil || !got.Equal(big) {
		t.Fatalf("read back: %v", err)
	}

	s.ChunkSize = 4096
	v2, err := s.Put(ctx, 1, newRing(t, 1000000), "")
	if err != nil {
		t.Fatal(err)
	}
	v3, err := s.Put(ctx, 2, big, "chunked")
	if err != nil || v3.Chunks < 2 {
		t.Fatalf("chunked write: %v, %d chunks", err, v3.Chunks)
	}
	got, _, err = s.Get(ctx, 3)
	if err != nil || !got.Equal(big) {
		t.Fatalf("chunked read back: %v", err)
	}
	blobs := func() int64 {
		resp, err := cli.Get(ctx, etcd.Prefix+"ring/blobs/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}
	before := blobs()
	if _, err := s.Put(ctx, 2, big, "stale"); !errors.Is(err, etcd.ErrVersionConflict) {
		t.Fatalf("stale chunked write: %v", err)
	}
	if after := blobs(); after != before {
		t.Fatalf("losing writer left %d chunks behind", after-before)
	}
	if v2.Chunks != 1 {
		t.Errorf("a round-robin 1M-vnode ring took %d chunks", v2.Chunks)
	}
}

func TestRingInUseGuardsRegistry(t *testing.T) {
	cli, _ := etcdtest.Start(t)
	ctx := context.Background()
	reg := etcd.NewRegistry(cli)
	reg.InUse = etcd.RingInUse(cli)
	for _, name := range []string{"1.moray", "9.moray"} {
		p := reshard.Pnode{Name: name, Peers: []reshard.Peer{{Name: name + "-1", Role: reshard.RolePrimary, DSN: "postgres://u@h/db"}}}
		if err := reg.AddPnode(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	r, _ := ring.New(ring.SHA256, 10, []string{"1.moray", "2.moray"})
	if _, err := etcd.NewRingStore(cli).Put(ctx, 0, r, ""); err != nil {
		t.Fatal(err)
	}
	if err := reg.RemovePnode(ctx, "1.moray"); !errors.Is(err, reshard.ErrInUse) {
		t.Fatalf("removing a pnode with vnodes: %v", err)
	}
	if err := reg.RemovePnode(ctx, "9.moray"); err != nil {
		t.Fatalf("removing an unused pnode: %v", err)
	}
}

// A change is stored as the ranges it moves; every FullEvery-th delta is
// also stored whole, and a change whose delta would be large is stored
// whole instead; a store that has never
// seen the ring (another process) reads every version back exactly, and a
// rollback to a delta version restores it.
func TestRingDeltas(t *testing.T) {
	cli, _ := etcdtest.Start(t)
	ctx := context.Background()
	w := etcd.NewRingStore(cli)
	w.FullEvery = 4
	base := newRing(t, 1_000_000)
	if _, err := w.Put(ctx, 0, base, "create"); err != nil {
		t.Fatal(err)
	}
	want := map[int64]*ring.Ring{1: base}
	cur, rv := base, etcd.RingVersion{}
	rv, _ = w.Version(ctx, 1)
	stored := []string{"full"}
	for i := 0; i < 6; i++ {
		to, from := "tcp://4.moray:2020", shards[0]
		if i%2 == 1 {
			to, from = from, to
		}
		d, err := cur.TransferDelta([]ring.Transfer{{From: from, To: to, Vnodes: "0-499998/3"}})
		if err != nil || d == nil {
			t.Fatalf("transfer %d: %v %v", i, d, err)
		}
		nv, err := w.PutDelta(ctx, cur, rv, d, fmt.Sprintf("move %d", i))
		if err != nil {
			t.Fatal(err)
		}
		if cur, err = cur.Apply(d); err != nil {
			t.Fatal(err)
		}
		want[nv.Version], rv = cur, nv
		stored = append(stored, nv.Stored())
	}
	if v, _ := w.Version(ctx, 6); v.Depth != 1 {
		t.Fatalf("the delta after a checkpoint has depth %d", v.Depth)
	}
	if got := strings.Join(stored, ","); got != "full,delta of 1,delta of 2,delta of 3,delta of 4, checkpoint,delta of 5,delta of 6" {
		t.Fatalf("versions stored as %s", got)
	}
	if v, _ := w.Version(ctx, 2); v.Size > 200 || v.Blob != "" || v.Depth != 1 {
		t.Fatalf("a split of a 1M-vnode ring stored as %+v", v)
	}
	// Moving them again to where they are is nothing to do.
	if d, err := cur.TransferDelta([]ring.Transfer{{From: "tcp://4.moray:2020", To: shards[0], Vnodes: "0-499998/3"}}); err != nil || d != nil {
		t.Fatalf("a done transfer: %v %v", d, err)
	}
	if _, err := cur.TransferDelta([]ring.Transfer{{From: "tcp://4.moray:2020", To: shards[0], Vnodes: "1"}}); err == nil || !strings.Contains(err.Error(), "vnode 1 is on tcp://2.moray:2020") {
		t.Fatalf("a vnode elsewhere: %v", err)
	}
	// A stale writer stores nothing.
	stale, _ := w.Version(ctx, 6)
	d := cur.RemapDelta([]ring.Assign{{Pnode: "tcp://5.moray:2020", Vnodes: "7"}})
	if _, err := w.PutDelta(ctx, want[6], stale, d, "stale"); !errors.Is(err, etcd.ErrVersionConflict) {
		t.Fatalf("stale delta: %v", err)
	}
	// A generic update of a few vnodes is a delta too; one that scatters
	// many is stored whole.
	nv, err := w.Update(ctx, 7, "mark read-only", func(r *ring.Ring) error {
		return r.SetData([]uint32{3, 9, 12}, json.RawMessage(`"ro"`))
	})
	if err != nil || nv.Stored() != "delta of 7" {
		t.Fatalf("small update stored as %q: %v", nv.Stored(), err)
	}
	want[8], _, _ = w.Get(ctx, 8)
	w.MaxDelta = 1000
	nv, err = w.Update(ctx, 8, "scatter", func(r *ring.Ring) error {
		vs := make([]uint32, 0, 500)
		for v := uint32(0); v < 500; v++ {
			vs = append(vs, v*v)
		}
		return r.Remap(vs, "tcp://6.moray:2020")
	})
	if err != nil || nv.Stored() != "full" {
		t.Fatalf("large update stored as %q: %v", nv.Stored(), err)
	}
	want[9], _, _ = w.Get(ctx, 9)
	if p, _, _ := want[9].Vnode(400 * 400); p != "tcp://6.moray:2020" {
		t.Fatalf("vnode 160000 on %s", p)
	}
	rb, err := w.Rollback(ctx, 3, 9)
	if err != nil || rb.Stored() != "delta of 2" {
		t.Fatalf("rollback to a delta: %q %v", rb.Stored(), err)
	}
	want[10] = want[3]
	for v, r := range want {
		got, _, err := etcd.NewRingStore(cli).Get(ctx, v)
		if err != nil || !got.Equal(r) {
			t.Fatalf("version %d read cold: %v", v, err)
		}
	}
	// The newest versions alone, as a dashboard lists them, and all of
	// them, with the checkpoint where there is one.
	recent, err := w.Recent(ctx, 6)
	if err != nil || len(recent) != 6 || recent[0].Version != 5 || recent[0].Stored() != "delta of 4, checkpoint" || recent[5].Version != 10 {
		t.Fatalf("recent: %v %+v", err, recent)
	}
	all, err := w.History(ctx)
	if err != nil || len(all) != 10 || all[0].Version != 1 || all[4].Checkpoint == nil || all[3].Checkpoint != nil {
		t.Fatalf("history: %v, %d versions", err, len(all))
	}
	// And the same through one store, newest first, then oldest first.
	rd := etcd.NewRingStore(cli)
	for v := int64(10); v >= 1; v-- {
		if got, _, err := rd.Get(ctx, v); err != nil || !got.Equal(want[v]) {
			t.Fatalf("version %d read after %d: %v", v, v+1, err)
		}
	}
	for v := int64(1); v <= 10; v++ {
		if got, _, err := rd.Get(ctx, v); err != nil || !got.Equal(want[v]) {
			t.Fatalf("version %d read after %d: %v", v, v-1, err)
		}
	}
}
