package load

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/router"
	"github.com/reshard/reshard/shard"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Fill writes rows objects into bucket straight into the shards that own
// them by the current ring, with COPY: far faster than through a router,
// and the fence still checks every row. Each object is recorded in the
// ledger as an acknowledged put, so verify checks it too.
func Fill(ctx context.Context, cli *clientv3.Client, bucket string, rows int, ledger io.Writer, progress io.Writer) error {
	if err := shard.ValidateBucket(bucket); err != nil {
		return err
	}
	rg, _, err := etcd.NewRingStore(cli).Current(ctx)
	if err != nil {
		return err
	}
	var opts shard.BucketOptions
	if err := etcd.NewBuckets(cli).Get(ctx, bucket, &opts); err != nil {
		return err
	}
	reg := etcd.NewRegistry(cli)
	conns := map[string]*pgx.Conn{}
	defer func() {
		for _, c := range conns {
			c.Close(context.Background())
		}
	}()
	enc := json.NewEncoder(ledger)
	const batch = 20000
	now := time.Now().UnixMilli()
	var cols []string
	for start := 0; start < rows; start += batch {
		byPnode := map[string][][]any{}
		for i := start; i < min(start+batch, rows); i++ {
			// Manta-like: objects in directories of about a hundred.
			key := fmt.Sprintf("/demo/stor/d%05d/o%08d", i/100, i)
			value := fmt.Appendf(nil, `{"name":"o%08d","type":"object","size":%d}`, i, i*7%100000)
			loc := rg.LocateString(router.HashKey(key, opts))
			row, err := shard.NewRow(opts, key, value, int64(loc.Vnode))
			if err != nil {
				return err
			}
			row.Mtime = now
			cols = row.Columns()
			byPnode[loc.Pnode] = append(byPnode[loc.Pnode], row.Values())
			if err := enc.Encode(Entry{Time: time.Now().UnixNano(), Op: "put", Bucket: bucket, Key: key, Etag: row.Etag, Status: Acked}); err != nil {
				return err
			}
		}
		for pnode, rs := range byPnode {
			conn := conns[pnode]
			if conn == nil {
				primary, err := reg.Primary(ctx, pnode)
				if err != nil {
					return err
				}
				if conn, err = postgres.Connect(ctx, primary.DSN); err != nil {
					return err
				}
				conns[pnode] = conn
			}
			if _, err := shard.CopyRows(ctx, conn, bucket, cols, rs); err != nil {
				return fmt.Errorf("fill %s on %s: %w", bucket, pnode, err)
			}
		}
		if progress != nil {
			fmt.Fprintf(progress, "fill: %d of %d objects\n", min(start+batch, rows), rows)
		}
	}
	for _, c := range conns {
		if err := shard.Analyze(ctx, c, bucket); err != nil {
			return err
		}
	}
	return nil
}
