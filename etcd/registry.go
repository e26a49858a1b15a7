package etcd

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/reshard/reshard"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const pnodePrefix = Prefix + "pnodes/"

// Registry stores pnodes under /reshard/pnodes/NAME.
type Registry struct {
	cli *clientv3.Client
	// InUse is asked before a removal. By default it asks the ring, so a
	// pnode that still has vnodes cannot be removed.
	InUse func(ctx context.Context, name string) (bool, error)
}

var _ reshard.Registry = (*Registry)(nil)

// NewRegistry returns a registry backed by cli.
func NewRegistry(cli *clientv3.Client) *Registry {
	return &Registry{cli: cli, InUse: NewRingStore(cli).InUse}
}

// PnodeKey is the etcd key of a pnode's record.
func PnodeKey(name string) string { return pnodePrefix + name }

// AddPnode registers p; it fails with reshard.ErrExists if the name is taken.
func (r *Registry) AddPnode(ctx context.Context, p reshard.Pnode) error {
	if err := p.Validate(); err != nil {
		return err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	key := PnodeKey(p.Name)
	ok, _, err := txn(ctx, r.cli, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)},
		[]clientv3.Op{clientv3.OpPut(key, string(b))}, nil)
	if err != nil {
		return fmt.Errorf("register pnode %s: %w", p.Name, err)
	}
	if !ok {
		return fmt.Errorf("pnode %s: %w", p.Name, reshard.ErrExists)
	}
	return nil
}

// Pnode returns one registered pnode.
func (r *Registry) Pnode(ctx context.Context, name string) (reshard.Pnode, error) {
	resp, err := get(ctx, r.cli, PnodeKey(name))
	if err != nil {
		return reshard.Pnode{}, fmt.Errorf("read pnode %s: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return reshard.Pnode{}, fmt.Errorf("pnode %s: %w", name, reshard.ErrNotFound)
	}
	var p reshard.Pnode
	if err := json.Unmarshal(resp.Kvs[0].Value, &p); err != nil {
		return reshard.Pnode{}, fmt.Errorf("pnode %s: corrupt record: %w", name, err)
	}
	return p, nil
}

// Pnodes lists every registered pnode, sorted by name.
func (r *Registry) Pnodes(ctx context.Context) ([]reshard.Pnode, error) {
	out, _, err := r.pnodesAt(ctx)
	return out, err
}

// Watch delivers every registered pnode, then the whole list again after
// each change to it, until ctx ends or the watch fails; then the channel
// closes.
func (r *Registry) Watch(ctx context.Context) <-chan []reshard.Pnode {
	out := make(chan []reshard.Pnode, 1)
	go func() {
		defer close(out)
		send := func(ps []reshard.Pnode) bool {
			select {
			case out <- ps:
				return true
			case <-ctx.Done():
				return false
			}
		}
		ps, rev, err := r.pnodesAt(ctx)
		if err != nil || !send(ps) {
			return
		}
		wch := r.cli.Watch(clientv3.WithRequireLeader(ctx), pnodePrefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		for wr := range wch {
			if wr.Err() != nil {
				return
			}
			if ps, _, err = r.pnodesAt(ctx); err != nil || !send(ps) {
				return
			}
		}
	}()
	return out
}

// pnodesAt lists the pnodes and the revision they were read at.
func (r *Registry) pnodesAt(ctx context.Context) ([]reshard.Pnode, int64, error) {
	resp, err := get(ctx, r.cli, pnodePrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("list pnodes: %w", err)
	}
	out := make([]reshard.Pnode, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var p reshard.Pnode
		if err := json.Unmarshal(kv.Value, &p); err != nil {
			return nil, 0, fmt.Errorf("pnode key %s: corrupt record: %w", kv.Key, err)
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, resp.Header.Revision, nil
}

// RemovePnode unregisters a pnode, refusing while InUse says it serves vnodes.
func (r *Registry) RemovePnode(ctx context.Context, name string) error {
	if _, err := r.Pnode(ctx, name); err != nil {
		return err
	}
	if r.InUse != nil {
		used, err := r.InUse(ctx, name)
		if err != nil {
			return err
		}
		if used {
			return fmt.Errorf("pnode %s: the ring maps vnodes to it; move them first: %w", name, reshard.ErrInUse)
		}
	}
	if err := do(ctx, r.cli, clientv3.OpDelete(PnodeKey(name))); err != nil {
		return fmt.Errorf("remove pnode %s: %w", name, err)
	}
	return nil
}

// Primary returns the primary peer of a registered pnode.
func (r *Registry) Primary(ctx context.Context, name string) (reshard.Peer, error) {
	p, err := r.Pnode(ctx, name)
	if err != nil {
		return reshard.Peer{}, err
	}
	return p.Primary()
}
