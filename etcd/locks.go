package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The dump lock is RFD 103's /pg_dump_lock: while a reshard holds it, no
// maintenance dump starts. It lives on its holder's lease, so a holder that
// dies releases it when the lease expires.
const (
	DumpLockKey = Prefix + "locks/pg_dump"
	// PnodeLockPrefix + PNODE names the job that holds the pnode.
	PnodeLockPrefix = Prefix + "locks/pnode/"
	dumpsPrefix     = Prefix + "dumps/"
)

// ErrLockHeld means someone else holds the lock.
var ErrLockHeld = errors.New("lock held")

// LockInfo says who holds a lock.
type LockInfo struct {
	Holder string    `json:"holder"`
	Since  time.Time `json:"since"`
	Lease  int64     `json:"lease"`
}

// AcquireDumpLock takes the dump lock for holder on lease. Taking it again
// as the same holder (a resumed job, on a new lease) moves it to the lease.
func AcquireDumpLock(ctx context.Context, cli *clientv3.Client, lease clientv3.LeaseID, holder string) error {
	info := LockInfo{Holder: holder, Since: time.Now().UTC(), Lease: int64(lease)}
	if cur, err := DumpLock(ctx, cli); err != nil {
		return err
	} else if cur != nil && cur.Holder == holder {
		info.Since = cur.Since
	}
	b, _ := json.Marshal(info)
	ok, res, err := txn(ctx, cli, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(DumpLockKey), "=", 0)},
		[]clientv3.Op{clientv3.OpPut(DumpLockKey, string(b), clientv3.WithLease(lease))},
		[]clientv3.Op{clientv3.OpGet(DumpLockKey)})
	if err != nil {
		return fmt.Errorf("take the dump lock: %w", err)
	}
	if ok {
		return nil
	}
	kvs := res[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return AcquireDumpLock(ctx, cli, lease, holder)
	}
	var cur LockInfo
	json.Unmarshal(kvs[0].Value, &cur)
	if cur.Holder != holder {
		return fmt.Errorf("dump lock held by %s since %s: %w", cur.Holder, cur.Since.Format(time.RFC3339), ErrLockHeld)
	}
	// Ours, on an older lease: move it, unless it changed meanwhile.
	moved, _, err := txn(ctx, cli, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(DumpLockKey), "=", kvs[0].ModRevision)},
		[]clientv3.Op{clientv3.OpPut(DumpLockKey, string(b), clientv3.WithLease(lease))}, nil)
	if err != nil {
		return fmt.Errorf("take the dump lock: %w", err)
	}
	if !moved {
		return AcquireDumpLock(ctx, cli, lease, holder)
	}
	return nil
}

// ReleaseDumpLock releases the lock if holder has it.
func ReleaseDumpLock(ctx context.Context, cli *clientv3.Client, holder string) error {
	resp, err := cli.Get(ctx, DumpLockKey)
	if err != nil {
		return fmt.Errorf("read the dump lock: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	var cur LockInfo
	if json.Unmarshal(resp.Kvs[0].Value, &cur) != nil || cur.Holder != holder {
		return nil
	}
	// Only the record read: a holder that took it meanwhile keeps it.
	_, _, err = txn(ctx, cli, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(DumpLockKey), "=", resp.Kvs[0].ModRevision)},
		[]clientv3.Op{clientv3.OpDelete(DumpLockKey)}, nil)
	return err
}

// DumpLock returns the holder of the dump lock, or nil when it is free.
func DumpLock(ctx context.Context, cli *clientv3.Client) (*LockInfo, error) {
	resp, err := cli.Get(ctx, DumpLockKey)
	if err != nil {
		return nil, fmt.Errorf("read the dump lock: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	var info LockInfo
	if err := json.Unmarshal(resp.Kvs[0].Value, &info); err != nil {
		return nil, fmt.Errorf("dump lock: corrupt record: %w", err)
	}
	return &info, nil
}

// DumpMarker records a running dump of pnode on the dumper's lease, so a
// reshard can wait for it to end (RFD 103 step 6).
func DumpMarker(ctx context.Context, cli *clientv3.Client, lease clientv3.LeaseID, pnode, id string) (func(), error) {
	key := dumpsPrefix + pnode + "/" + id
	if _, err := cli.Put(ctx, key, time.Now().UTC().Format(time.RFC3339), clientv3.WithLease(lease)); err != nil {
		return nil, fmt.Errorf("record the dump: %w", err)
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cli.Delete(ctx, key)
	}, nil
}

// RunningDumps lists running dumps ("PNODE/ID") of the given pnodes, or of
// all pnodes when none are given.
func RunningDumps(ctx context.Context, cli *clientv3.Client, pnodes ...string) ([]string, error) {
	resp, err := cli.Get(ctx, dumpsPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list dumps: %w", err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		d := string(kv.Key[len(dumpsPrefix):])
		if len(pnodes) == 0 {
			out = append(out, d)
			continue
		}
		for _, p := range pnodes {
			if strings.HasPrefix(d, p+"/") {
				out = append(out, d)
			}
		}
	}
	return out, nil
}

// PnodeLocks maps each pnode a reshard job holds to the job's id.
func PnodeLocks(ctx context.Context, cli *clientv3.Client) (map[string]string, error) {
	var resp *clientv3.GetResponse
	err := attempts(ctx, func(ctx context.Context) (err error) {
		resp, err = cli.Get(ctx, PnodeLockPrefix, clientv3.WithPrefix())
		return err
	})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key[len(PnodeLockPrefix):])] = string(kv.Value)
	}
	return out, nil
}

// BucketChangePrefix + ID marks a bucket change in flight. A change
// registers itself before it checks for reshard jobs, and a job waits for
// these keys after taking its pnodes, so of a change and a job starting
// together, one always sees the other.
const BucketChangePrefix = Prefix + "locks/bucket-change/"

// BeginBucketChange registers a bucket change on its own short lease, so a
// changer that dies stops blocking jobs within ttl. end releases it.
func BeginBucketChange(ctx context.Context, cli *clientv3.Client, id string, ttl time.Duration) (end func(), err error) {
	// A try that timed out may have registered the change all the same:
	// its lease ends it.
	err = attempts(ctx, func(ctx context.Context) error {
		lease, err := cli.Grant(ctx, int64(ttl.Seconds()))
		if err != nil {
			return err
		}
		end = func() { cli.Revoke(context.WithoutCancel(ctx), lease.ID) }
		_, err = cli.Put(ctx, BucketChangePrefix+id, time.Now().UTC().Format(time.RFC3339), clientv3.WithLease(lease.ID))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("register bucket change: %w", err)
	}
	return end, nil
}

// BucketChanges lists the bucket changes in flight.
func BucketChanges(ctx context.Context, cli *clientv3.Client) ([]string, error) {
	resp, err := cli.Get(ctx, BucketChangePrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Key[len(BucketChangePrefix):]))
	}
	return out, nil
}
