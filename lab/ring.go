package lab

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/ring"
	"github.com/reshard/reshard/shard"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// initRing stores the first ring, its vnodes spread over the lab's shards as
// node-fash's create does, and records on each shard the vnodes it owns.
func initRing(ctx context.Context, cli *clientv3.Client, st *State, vnodes int) error {
	names := make([]string, len(st.Shards))
	for i, sh := range st.Shards {
		names[i] = sh.Name
	}
	rg, err := ring.New(ring.SHA256, vnodes, names)
	if err != nil {
		return err
	}
	rv, err := etcd.NewRingStore(cli).Put(ctx, 0, rg, "lab up")
	if err != nil {
		return err
	}
	st.RingVersion = rv.Version
	for _, sh := range st.Shards {
		vs, err := rg.VnodesOf(sh.Name)
		if err != nil {
			return err
		}
		if err := ownVnodes(ctx, sh.Peers[0], vs, rv.Version); err != nil {
			return fmt.Errorf("%s: %w", sh.Name, err)
		}
	}
	return st.save()
}

func ownVnodes(ctx context.Context, primary Peer, vs []uint32, version int64) error {
	owned := make([]int32, len(vs))
	for i, v := range vs {
		owned[i] = int32(v)
	}
	conn, err := postgres.Connect(ctx, primary.DSN())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return shard.Own(ctx, conn, owned, true, version)
}

// waitRouters waits until every router of the lab serves the lab's ring.
func waitRouters(ctx context.Context, cli *clientv3.Client, st *State) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		rs, err := etcd.Routers(ctx, cli)
		if err != nil {
			return err
		}
		ready := 0
		for _, r := range rs {
			if r.RingVersion >= st.RingVersion {
				ready++
			}
		}
		if ready >= len(st.Routers) && routersAnswer(ctx, st.Routers) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d routers serve ring version %d after 60s (see %s/logs)", ready, len(st.Routers), st.RingVersion, st.Dir)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func routersAnswer(ctx context.Context, urls []string) bool {
	for _, u := range urls {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u+"/healthz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false
		}
	}
	return true
}
