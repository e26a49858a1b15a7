package etcd

import (
	"context"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Prefixes a dashboard follows (see WatchPrefix).
const (
	RouterPrefix = routerPrefix
	PnodePrefix  = pnodePrefix
	LockPrefix   = Prefix + "locks/"
)

// Change is one key under a watched prefix: its name below the prefix and
// its value, nil once deleted.
type Change struct {
	Key   string
	Value []byte
}

// WatchPrefix delivers every key under prefix as it stands, in one batch,
// then each committed batch of changes, until ctx ends. A watch that fails
// (etcd compacted past it, a lost leader) starts over with a full batch,
// marked by reset; the channel closes only when ctx ends.
func WatchPrefix(ctx context.Context, cli *clientv3.Client, prefix string) <-chan WatchBatch {
	out := make(chan WatchBatch, 4)
	go func() {
		defer close(out)
		send := func(b WatchBatch) bool {
			select {
			case out <- b:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for ctx.Err() == nil {
			resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
			if err != nil {
				if !pause(ctx) {
					return
				}
				continue
			}
			all := WatchBatch{Reset: true}
			for _, kv := range resp.Kvs {
				all.Changes = append(all.Changes, Change{Key: strings.TrimPrefix(string(kv.Key), prefix), Value: kv.Value})
			}
			if !send(all) {
				return
			}
			wch := cli.Watch(clientv3.WithRequireLeader(ctx), prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
			for wr := range wch {
				if wr.Err() != nil {
					break
				}
				var b WatchBatch
				for _, ev := range wr.Events {
					c := Change{Key: strings.TrimPrefix(string(ev.Kv.Key), prefix)}
					if ev.Type == clientv3.EventTypePut {
						c.Value = ev.Kv.Value
					}
					b.Changes = append(b.Changes, c)
				}
				if len(b.Changes) > 0 && !send(b) {
					return
				}
			}
			if !pause(ctx) {
				return
			}
		}
	}()
	return out
}

// WatchBatch is what WatchPrefix delivers: with Reset, every key there is
// (forget what came before); without, the keys that changed.
type WatchBatch struct {
	Reset   bool
	Changes []Change
}

// pause waits a moment before a watch starts over; false if ctx ended.
func pause(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(500 * time.Millisecond):
		return true
	}
}
