package etcd

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

const routerPrefix = Prefix + "routers/"

// RouterInfo is what a router says about itself in etcd. A reshard waits
// until every registered router serves the new ring version.
type RouterInfo struct {
	Name        string    `json:"name"`
	URL         string    `json:"url"`
	RingVersion int64     `json:"ring_version"`
	Updated     time.Time `json:"updated"`
}

// RouterLease keeps a router's record alive on a lease: a router that dies
// stops being waited for once the lease runs out.
type RouterLease struct {
	cli   *clientv3.Client
	ttl   int64
	mu    sync.Mutex
	info  RouterInfo
	lease clientv3.LeaseID
}

// NewRouterLease prepares a registration for a router; Run keeps it.
func NewRouterLease(cli *clientv3.Client, info RouterInfo, ttl time.Duration) *RouterLease {
	return &RouterLease{cli: cli, info: info, ttl: int64(ttl.Seconds())}
}

// SetRingVersion records the ring version the router now serves.
func (r *RouterLease) SetRingVersion(ctx context.Context, v int64) error {
	r.mu.Lock()
	r.info.RingVersion = v
	r.info.Updated = time.Now().UTC()
	lease, info := r.lease, r.info
	r.mu.Unlock()
	if lease == 0 {
		return nil // Run writes it once it holds a lease
	}
	return r.put(ctx, lease, info)
}

func (r *RouterLease) put(ctx context.Context, lease clientv3.LeaseID, info RouterInfo) error {
	b, _ := json.Marshal(info)
	_, err := r.cli.Put(ctx, routerPrefix+info.Name, string(b), clientv3.WithLease(lease))
	return err
}

// Run registers the router and keeps the lease alive until ctx ends,
// registering again if etcd loses the lease (after a partition, say).
func (r *RouterLease) Run(ctx context.Context, onErr func(error)) {
	for ctx.Err() == nil {
		if err := r.hold(ctx); err != nil && ctx.Err() == nil {
			onErr(err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	// Leave at once on a clean stop instead of waiting for the TTL.
	r.mu.Lock()
	lease := r.lease
	r.mu.Unlock()
	if lease != 0 {
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		r.cli.Revoke(rctx, lease)
		cancel()
	}
}

func (r *RouterLease) hold(ctx context.Context) error {
	g, err := r.cli.Grant(ctx, r.ttl)
	if err != nil {
		return fmt.Errorf("router lease: %w", err)
	}
	r.mu.Lock()
	r.lease = g.ID
	info := r.info
	r.mu.Unlock()
	if err := r.put(ctx, g.ID, info); err != nil {
		return fmt.Errorf("register router: %w", err)
	}
	ka, err := r.cli.KeepAlive(ctx, g.ID)
	if err != nil {
		return fmt.Errorf("router keepalive: %w", err)
	}
	for range ka {
	}
	return fmt.Errorf("router lease %x lost", g.ID)
}

// Routers lists the live routers.
func Routers(ctx context.Context, cli *clientv3.Client) ([]RouterInfo, error) {
	resp, err := cli.Get(ctx, routerPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list routers: %w", err)
	}
	out := make([]RouterInfo, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var ri RouterInfo
		if err := json.Unmarshal(kv.Value, &ri); err != nil {
			return nil, fmt.Errorf("router key %s: %w", kv.Key, err)
		}
		out = append(out, ri)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// WaitRoutersServe waits until at least n live routers report serving ring
// version v or later, following their records with a watch rather than
// polling, so it returns as soon as the last one reports.
func WaitRoutersServe(ctx context.Context, cli *clientv3.Client, v int64, n int) error {
	resp, err := cli.Get(ctx, routerPrefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("list routers: %w", err)
	}
	serving := map[string]bool{}
	note := func(key string, value []byte) {
		var ri RouterInfo
		serving[key] = json.Unmarshal(value, &ri) == nil && ri.RingVersion >= v
	}
	count := func() int {
		k := 0
		for _, ok := range serving {
			if ok {
				k++
			}
		}
		return k
	}
	for _, kv := range resp.Kvs {
		note(string(kv.Key), kv.Value)
	}
	if count() >= n {
		return nil
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range cli.Watch(clientv3.WithRequireLeader(wctx), routerPrefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
		if err := wr.Err(); err != nil {
			return fmt.Errorf("watch routers: %w", err)
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				delete(serving, string(ev.Kv.Key))
				continue
			}
			note(string(ev.Kv.Key), ev.Kv.Value)
		}
		if count() >= n {
			return nil
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return fmt.Errorf("watch routers: closed")
}
