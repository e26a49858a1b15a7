package etcd

import (
	"context"
	"errors"
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A Fence is one orchestrator's hold on one job: the key of its job lock
// and that key's create revision, the fencing token. Revisions only grow,
// so each orchestrator that takes a job over holds a higher token than the
// one before it. A process paused past its lease wakes up still believing
// it holds the job; its lock key is gone (or another's), so every write it
// makes under the fence is refused. Checking "do I still hold it?" before
// writing would not do: the pause can fall between the check and the write.
type Fence struct {
	Key   string `json:"key"`
	Token int64  `json:"token"`
}

// ErrFenced means a write was refused because its fence no longer holds:
// another orchestrator has the job now. The caller must stop working on it.
var ErrFenced = errors.New("this orchestrator no longer holds the job (fenced)")

func (f Fence) cmp() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(f.Key), "=", f.Token)
}

type fenceKey struct{}

// WithFence makes every write the stores in this package make with ctx
// conditional on f: a job's ring flips, locks, pnode records and job
// records all go through here, so none can land after the job changed hands.
func WithFence(ctx context.Context, f Fence) context.Context {
	return context.WithValue(ctx, fenceKey{}, f)
}

// FenceOf returns the fence ctx carries.
func FenceOf(ctx context.Context) (Fence, bool) {
	f, ok := ctx.Value(fenceKey{}).(Fence)
	return f, ok
}

// txn commits If(cmps).Then(then).Else(els), nested inside the fence when
// ctx carries one, so a refused fence is told apart from the caller's own
// conditions failing. It returns whether cmps held and the branch's results.
func txn(ctx context.Context, cli *clientv3.Client, cmps []clientv3.Cmp, then, els []clientv3.Op) (bool, []*pb.ResponseOp, error) {
	ok, resps, _, err := txnAt(ctx, cli, cmps, then, els)
	return ok, resps, err
}

// txnAt is txn that also returns the revision it committed at.
func txnAt(ctx context.Context, cli *clientv3.Client, cmps []clientv3.Cmp, then, els []clientv3.Op) (bool, []*pb.ResponseOp, int64, error) {
	f, fenced := FenceOf(ctx)
	if !fenced {
		resp, err := cli.Txn(ctx).If(cmps...).Then(then...).Else(els...).Commit()
		if err != nil {
			return false, nil, 0, err
		}
		return resp.Succeeded, resp.Responses, resp.Header.Revision, nil
	}
	resp, err := cli.Txn(ctx).If(f.cmp()).Then(clientv3.OpTxn(cmps, then, els)).Commit()
	if err != nil {
		return false, nil, 0, err
	}
	if !resp.Succeeded {
		return false, nil, 0, fmt.Errorf("%w: lock %s token %d", ErrFenced, f.Key, f.Token)
	}
	inner := resp.Responses[0].GetResponseTxn()
	return inner.Succeeded, inner.Responses, resp.Header.Revision, nil
}

// do runs unconditional operations, under the fence when ctx carries one.
func do(ctx context.Context, cli *clientv3.Client, ops ...clientv3.Op) error {
	_, _, err := txn(ctx, cli, nil, ops, nil)
	return err
}

// CheckFence reports ErrFenced when ctx's fence no longer holds: for a
// caller that has just acted outside etcd (ZooKeeper) and must undo that
// act if it was already stale.
func CheckFence(ctx context.Context, cli *clientv3.Client) error {
	return do(ctx, cli)
}
