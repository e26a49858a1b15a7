package shard_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/reshard/reshard/lab/labtest"
	"github.com/reshard/reshard/shard"
)

// The fence check and the operation must share one transaction, or the
// check's row lock would not bound the write.
func TestBatchIsOneTransaction(t *testing.T) {
	ctx := context.Background()
	conn := connect(t, labtest.Postgres(t))
	b := &pgx.Batch{}
	b.Queue(`select txid_current()`)
	b.Queue(`select txid_current()`)
	br := conn.SendBatch(ctx, b)
	var x, y int64
	if err := br.QueryRow().Scan(&x); err != nil {
		t.Fatal(err)
	}
	if err := br.QueryRow().Scan(&y); err != nil {
		t.Fatal(err)
	}
	br.Close()
	if x != y {
		t.Fatalf("batch ran in two transactions: %d, %d", x, y)
	}
}

func TestObjects(t *testing.T) {
	ctx := context.Background()
	conn := setup(t, labtest.Postgres(t))
	if err := shard.Own(ctx, conn, []int32{1, 2}, true, 1); err != nil {
		t.Fatal(err)
	}
	o, err := shard.PutObject(ctx, conn, "manta", shard.BucketOptions{}, shard.Object{Key: "/u/stor/a", Value: []byte(`{"n":1}`), Vnode: 1}, "")
	if err != nil || o.Etag != shard.MorayEtag(`{"n":1,"vnode":1}`) || o.Mtime == 0 {
		t.Fatalf("put: %+v %v", o, err)
	}
	// Stored as electric-moray and Moray store it: the value with its
	// vnode as JSON text, the vnode in _vnode, Moray's CRC-32 etag.
	var stored, etag string
	var vnode int64
	if err := conn.QueryRow(ctx, `select _value, _etag, _vnode from manta where _key = '/u/stor/a'`).Scan(&stored, &etag, &vnode); err != nil {
		t.Fatal(err)
	}
	if stored != `{"n":1,"vnode":1}` || etag != o.Etag || vnode != 1 {
		t.Fatalf("stored row: _value %s, _etag %s, _vnode %d", stored, etag, vnode)
	}
	got, err := shard.GetObject(ctx, conn, "manta", shard.BucketOptions{}, "/u/stor/a", 1)
	if err != nil || got.Etag != o.Etag || string(got.Value) != `{"n":1}` {
		t.Fatalf("get: %+v %v", got, err)
	}
	// Conditional writes.
	if _, err := shard.PutObject(ctx, conn, "manta", shard.BucketOptions{}, shard.Object{Key: "/u/stor/a", Value: []byte(`{"n":2}`), Vnode: 1}, "wrong"); !errors.Is(err, shard.ErrEtagMismatch) {
		t.Fatalf("put with a wrong etag: %v", err)
	}
	if _, err := shard.PutObject(ctx, conn, "manta", shard.BucketOptions{}, shard.Object{Key: "/u/stor/none", Value: []byte(`{}`), Vnode: 1}, "*"); !errors.Is(err, shard.ErrObjectNotFound) {
		t.Fatalf("put if-match on a missing object: %v", err)
	}
	o2, err := shard.PutObject(ctx, conn, "manta", shard.BucketOptions{}, shard.Object{Key: "/u/stor/a", Value: []byte(`{"n":2}`), Vnode: 1}, o.Etag)
	if err != nil || o2.Etag == o.Etag {
		t.Fatalf("put with the right etag: %+v %v", o2, err)
	}
	if err := shard.DeleteObject(ctx, conn, "manta", "/u/stor/a", 1, o.Etag); !errors.Is(err, shard.ErrEtagMismatch) {
		t.Fatalf("delete with a stale etag: %v", err)
	}
	if _, err := shard.PutObject(ctx, conn, "manta", shard.BucketOptions{}, shard.Object{Key: "/u/stor/b", Value: []byte(`{}`), Vnode: 2}, ""); err != nil {
		t.Fatal(err)
	}
	list, err := shard.ListObjects(ctx, conn, "manta", "/u/stor/", 10)
	if err != nil || len(list) != 2 || list[0].Key != "/u/stor/a" || list[1].Key != "/u/stor/b" {
		t.Fatalf("list: %+v %v", list, err)
	}
	// A vnode that moved away: rows still here are neither listed nor read.
	if err := shard.Disown(ctx, conn, []int32{2}); err != nil {
		t.Fatal(err)
	}
	if list, _ := shard.ListObjects(ctx, conn, "manta", "/u/", 10); len(list) != 1 {
		t.Fatalf("list shows a disowned vnode: %+v", list)
	}
	if _, err := shard.GetObject(ctx, conn, "manta", shard.BucketOptions{}, "/u/stor/b", 2); !shard.IsFenced(err) {
		t.Fatalf("read of a disowned vnode: %v", err)
	}
	if _, err := shard.GetObject(ctx, conn, "manta", shard.BucketOptions{}, "/u/stor/zz", 2); !shard.IsFenced(err) {
		t.Fatalf("read of a missing key on a disowned vnode is not fenced: %v", err)
	}
	// Conditional ops that match nothing are fenced too, not "not found".
	if err := shard.DeleteObject(ctx, conn, "manta", "/u/stor/zz", 2, "x"); !shard.IsFenced(err) {
		t.Fatalf("conditional delete on a disowned vnode: %v", err)
	}
	if _, err := shard.SetWritable(ctx, conn, []int32{1}, false, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := shard.PutObject(ctx, conn, "manta", shard.BucketOptions{}, shard.Object{Key: "/nope", Value: []byte(`{}`), Vnode: 1}, "*"); !shard.IsFenced(err) {
		t.Fatalf("conditional put on a frozen vnode: %v", err)
	}
	if err := shard.DeleteObject(ctx, conn, "manta", "/u/stor/a", 1, ""); !shard.IsFenced(err) {
		t.Fatalf("delete on a frozen vnode: %v", err)
	}
	if _, err := shard.GetObject(ctx, conn, "manta", shard.BucketOptions{}, "/u/stor/a", 1); err != nil {
		t.Fatalf("read of a frozen vnode: %v", err)
	}
	if err := shard.DeleteObject(ctx, conn, "manta", "/x", 1, ""); !shard.IsFenced(err) {
		t.Fatalf("delete: %v", err)
	}
	if _, err := shard.SetWritable(ctx, conn, []int32{1}, true, 3); err != nil {
		t.Fatal(err)
	}
	if err := shard.DeleteObject(ctx, conn, "manta", "/u/stor/a", 1, ""); err != nil {
		t.Fatal(err)
	}
	if err := shard.DeleteObject(ctx, conn, "manta", "/u/stor/a", 1, ""); !errors.Is(err, shard.ErrObjectNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}
