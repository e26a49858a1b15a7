package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/reshard/reshard"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const bucketPrefix = Prefix + "buckets/"

// Buckets keeps each bucket's options in etcd, the one place every router
// reads them from; the tables themselves live on every shard.
type Buckets struct{ cli *clientv3.Client }

// NewBuckets returns the bucket config store.
func NewBuckets(cli *clientv3.Client) *Buckets { return &Buckets{cli: cli} }

// Put records a bucket's options (idempotent).
func (b *Buckets) Put(ctx context.Context, name string, opts any) error {
	v, err := json.Marshal(opts)
	if err != nil {
		return err
	}
	// The same value written twice is one write: tried again elsewhere
	// when a member does not answer.
	if err := attempts(ctx, func(ctx context.Context) error {
		_, err := b.cli.Put(ctx, bucketPrefix+name, string(v))
		return err
	}); err != nil {
		return fmt.Errorf("record bucket %s: %w", name, err)
	}
	return nil
}

// Get reads a bucket's options into opts.
func (b *Buckets) Get(ctx context.Context, name string, opts any) error {
	resp, err := get(ctx, b.cli, bucketPrefix+name)
	if err != nil {
		return fmt.Errorf("read bucket %s: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return fmt.Errorf("bucket %s: %w", name, reshard.ErrNotFound)
	}
	return json.Unmarshal(resp.Kvs[0].Value, opts)
}

// All reads every bucket's options in one request, by name.
func (b *Buckets) All(ctx context.Context) (map[string]json.RawMessage, error) {
	resp, err := get(ctx, b.cli, bucketPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list buckets: %w", err)
	}
	out := make(map[string]json.RawMessage, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[string(kv.Key[len(bucketPrefix):])] = kv.Value
	}
	return out, nil
}

// Names lists every bucket.
func (b *Buckets) Names(ctx context.Context) ([]string, error) {
	resp, err := get(ctx, b.cli, bucketPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list buckets: %w", err)
	}
	out := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Key[len(bucketPrefix):]))
	}
	return out, nil
}

// Delete removes a bucket's record.
func (b *Buckets) Delete(ctx context.Context, name string) error {
	if _, err := b.cli.Delete(ctx, bucketPrefix+name); err != nil {
		return fmt.Errorf("delete bucket %s: %w", name, err)
	}
	return nil
}

// Create records a bucket only if no record exists; ErrExists otherwise,
// so of two racing creators exactly one wins.
func (b *Buckets) Create(ctx context.Context, name string, opts any) error {
	v, err := json.Marshal(opts)
	if err != nil {
		return err
	}
	key := bucketPrefix + name
	resp, err := b.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(v))).Commit()
	if err != nil {
		return fmt.Errorf("record bucket %s: %w", name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("bucket %s: %w", name, ErrExists)
	}
	return nil
}

// ErrExists: the record is already there.
var ErrExists = errors.New("already exists")
