package shard_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/reshard/reshard/lab/labtest"
	"github.com/reshard/reshard/shard"
)

// BenchmarkReplicaIdentityWAL measures what REPLICA IDENTITY FULL, which a
// logical job sets on the buckets it moves, costs a live shard: the WAL of
// an overwrite and of a delete of a Manta-sized object (about 1 KB),
// side by side with Moray's default identity (the primary key, _key).
// wal_level=logical, as a logical reshard needs.
//
//	go test -run '^$' -bench ReplicaIdentityWAL -benchtime 5000x ./shard/
func BenchmarkReplicaIdentityWAL(b *testing.B) {
	ctx := context.Background()
	conn := setup(b, labtest.Postgres(b))
	var level string
	conn.QueryRow(ctx, `show wal_level`).Scan(&level)
	if level != "logical" {
		b.Skip("the test server runs with wal_level " + level + "; the figures need logical")
	}
	value := `{"dirname":"/acct/stor/d","key":"/acct/stor/d/o","headers":{},"mtime":1700000000000,"name":"o","creator":"acct","owner":"acct","roles":[],"type":"object","contentLength":1000,"contentMD5":"XUFAKrxLKna5cZ2REBfFkg==","contentType":"application/octet-stream","etag":"0b1e3f2a","objectId":"0b1e3f2a-7c4d-4e5f-8a9b-000000000001","sharks":[{"datacenter":"dc1","manta_storage_id":"1.stor.example.com"},{"datacenter":"dc2","manta_storage_id":"2.stor.example.com"}],"pad":"` + strings.Repeat("x", 500) + `","vnode":1}`
	if err := shard.Own(ctx, conn, []int32{1}, true, 1); err != nil {
		b.Fatal(err)
	}
	for _, ident := range []string{"default", "full"} {
		if _, err := conn.Exec(ctx, "alter table manta replica identity "+ident); err != nil {
			b.Fatal(err)
		}
		for _, op := range []string{"overwrite", "delete"} {
			b.Run(ident+"/"+op, func(b *testing.B) {
				if _, err := conn.Exec(ctx, `truncate manta`); err != nil {
					b.Fatal(err)
				}
				if _, err := conn.Exec(ctx, `insert into manta (_key, _value, _etag, _mtime, _vnode)
					select 'k' || g, $1, 'ABCDEF01', 0, 1 from generate_series(1, $2) g`, value, b.N); err != nil {
					b.Fatal(err)
				}
				var start, end string
				conn.QueryRow(ctx, `select pg_current_wal_insert_lsn()::text`).Scan(&start)
				b.ResetTimer()
				for i := 1; i <= b.N; i++ {
					var err error
					if op == "overwrite" {
						_, err = conn.Exec(ctx, `update manta set _value = $2, _mtime = $3 where _key = $1`, fmt.Sprint("k", i), value, i)
					} else {
						_, err = conn.Exec(ctx, `delete from manta where _key = $1`, fmt.Sprint("k", i))
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				var bytes float64
				conn.QueryRow(ctx, `select pg_current_wal_insert_lsn()::text`).Scan(&end)
				conn.QueryRow(ctx, `select pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)`, end, start).Scan(&bytes)
				b.ReportMetric(bytes/float64(b.N), "WAL-B/op")
			})
		}
	}
}
