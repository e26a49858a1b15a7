package shard_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/reshard/reshard/lab/labtest"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/shard"
)

func connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := postgres.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func code(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func setup(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn := connect(t, dsn)
	for i := 0; i < 2; i++ { // twice: setup is idempotent
		if err := shard.Init(ctx, conn); err != nil {
			t.Fatal(err)
		}
		if err := shard.CreateBucket(ctx, conn, "manta", shard.BucketOptions{HashDir: true}); err != nil && (i == 0 || !errors.Is(err, shard.ErrBucketExists)) {
			t.Fatal(err)
		}
	}
	return conn
}

func put(ctx context.Context, q shard.Querier, key string, vnode int) error {
	_, err := q.Exec(ctx, `insert into manta (_key, _value, _etag, _mtime, _vnode) values ($1, '{}', 'e', 0, $2)
		on conflict (_key) do update set _value = excluded._value, _vnode = excluded._vnode`, key, vnode)
	return err
}

func TestFence(t *testing.T) {
	ctx := context.Background()
	conn := setup(t, labtest.Postgres(t))

	if err := put(ctx, conn, "/a", 5); code(err) != shard.CodeNotOwned || !shard.IsFenced(err) {
		t.Fatalf("write to an unowned vnode: %v", err)
	}
	if err := shard.Own(ctx, conn, []int32{5, 6}, true, 1); err != nil {
		t.Fatal(err)
	}
	if err := put(ctx, conn, "/a", 5); err != nil {
		t.Fatalf("write to an owned vnode: %v", err)
	}
	// Moving a row into a vnode the shard does not own is a write there.
	if _, err := conn.Exec(ctx, `update manta set _vnode = 7 where _key = '/a'`); code(err) != shard.CodeNotOwned {
		t.Fatalf("update into an unowned vnode: %v", err)
	}
	if n, err := shard.SetWritable(ctx, conn, []int32{5, 99}, false, 2); err != nil || n != 1 {
		t.Fatalf("freeze: %d, %v", n, err)
	}
	for name, sql := range map[string]string{
		"insert": `insert into manta (_key, _value, _etag, _mtime, _vnode) values ('/b', '{}', 'e', 0, 5)`,
		"update": `update manta set _etag = 'x' where _key = '/a'`,
		"delete": `delete from manta where _key = '/a'`,
	} {
		if _, err := conn.Exec(ctx, sql); code(err) != shard.CodeFrozen {
			t.Errorf("%s on a frozen vnode: %v", name, err)
		}
	}
	if err := put(ctx, conn, "/c", 6); err != nil {
		t.Fatalf("a write to another vnode is blocked: %v", err)
	}
	// Reads: a frozen vnode still reads, an unowned one is fenced.
	var ok bool
	if err := conn.QueryRow(ctx, `select reshard_read_check(5)`).Scan(&ok); err != nil || !ok {
		t.Fatalf("read check on a frozen vnode: %v", err)
	}
	if err := conn.QueryRow(ctx, `select reshard_read_check(7)`).Scan(&ok); code(err) != shard.CodeNotOwned {
		t.Fatalf("read check on an unowned vnode: %v", err)
	}
	if err := shard.Disown(ctx, conn, []int32{6}); err != nil {
		t.Fatal(err)
	}
	if err := put(ctx, conn, "/c", 6); code(err) != shard.CodeNotOwned {
		t.Fatalf("write after disown: %v", err)
	}
	owned, err := shard.Owned(ctx, conn)
	if err != nil || len(owned) != 1 || owned[0] != (shard.VnodeState{Vnode: 5, Writable: false, RingVersion: 2}) {
		t.Fatalf("ownership: %+v %v", owned, err)
	}
}

// The freeze must wait for a writer that passed the fence before it, and a
// writer that arrives during the freeze must be refused, never committed
// after the freeze's LSN.
func TestFreezeBoundsWriters(t *testing.T) {
	ctx := context.Background()
	dsn := labtest.Postgres(t)
	conn := setup(t, dsn)
	if err := shard.Own(ctx, conn, []int32{1}, true, 1); err != nil {
		t.Fatal(err)
	}

	// A slow writer: inside the fence, not yet committed.
	writer := connect(t, dsn)
	wtx, err := writer.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := put(ctx, wtx, "/slow", 1); err != nil {
		t.Fatal(err)
	}
	freezer := connect(t, dsn)
	frozen := make(chan error, 1)
	go func() {
		_, err := shard.SetWritable(ctx, freezer, []int32{1}, false, 2)
		frozen <- err
	}()
	select {
	case err := <-frozen:
		t.Fatalf("freeze finished while a writer was inside the fence: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := wtx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var writerLSN string
	writer.QueryRow(ctx, `select pg_current_wal_lsn()::text`).Scan(&writerLSN)
	if err := <-frozen; err != nil {
		t.Fatal(err)
	}
	var freezeLSN string
	freezer.QueryRow(ctx, `select pg_current_wal_lsn()::text`).Scan(&freezeLSN)
	w, _ := postgres.ParseLSN(writerLSN)
	f, _ := postgres.ParseLSN(freezeLSN)
	if f < w {
		t.Fatalf("freeze LSN %s is before the slow writer's commit %s", f, w)
	}

	// A writer that arrives while the freeze is open waits, then is refused.
	if _, err := shard.SetWritable(ctx, conn, []int32{1}, true, 3); err != nil {
		t.Fatal(err)
	}
	ftx, err := freezer.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := shard.SetWritable(ctx, ftx, []int32{1}, false, 4); err != nil {
		t.Fatal(err)
	}
	late := make(chan error, 1)
	go func() { late <- put(ctx, writer, "/late", 1) }()
	time.Sleep(200 * time.Millisecond)
	if err := ftx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-late; code(err) != shard.CodeFrozen {
		t.Fatalf("writer arriving during the freeze: %v", err)
	}
	var n int
	conn.QueryRow(ctx, `select count(*) from manta where _key = '/late'`).Scan(&n)
	if n != 0 {
		t.Fatal("the late write committed")
	}
}

// Logical replication's apply worker must not be stopped by the fence on a
// destination that does not (yet) own the vnodes.
func TestFenceDoesNotBlockApply(t *testing.T) {
	ctx := context.Background()
	srcDSN, dstDSN := labtest.Postgres(t), labtest.Postgres(t)
	src, dst := setup(t, srcDSN), setup(t, dstDSN)
	if err := shard.Own(ctx, src, []int32{3}, true, 1); err != nil {
		t.Fatal(err)
	}
	if err := shard.CreatePublication(ctx, src, "p", "j1", []string{"manta"}, []shard.Range{{Lo: 3, Hi: 3}}); err != nil {
		t.Fatal(err)
	}
	srcCfg, _ := pgx.ParseConfig(srcDSN)
	conninfo := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=moray", srcCfg.Port)
	if _, err := dst.Exec(ctx, fmt.Sprintf(`create subscription s connection '%s' publication p`, conninfo)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dst.Exec(context.Background(), `drop subscription if exists s`) })
	if err := put(ctx, src, "/replicated", 3); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		if err := dst.QueryRow(ctx, `select count(*) from manta where _key = '/replicated'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("row not applied on a destination that does not own its vnode")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// An ordinary client is still fenced there.
	if err := put(ctx, dst, "/direct", 3); code(err) != shard.CodeNotOwned {
		t.Fatalf("direct write on the destination: %v", err)
	}
}

func TestBucketNames(t *testing.T) {
	for _, bad := range []string{"", "Manta", "a;drop table x", `a"b`, "a b", "reshard_vnodes", "pg_class", "1abc",
		"a234567890123456789012345678901234567890123456789012345678901234"} {
		if err := shard.ValidateBucket(bad); err == nil {
			t.Errorf("bucket name %q accepted", bad)
		}
	}
	for _, good := range []string{"manta", "manta_uploads", "b1"} {
		if err := shard.ValidateBucket(good); err != nil {
			t.Errorf("bucket name %q refused: %v", good, err)
		}
	}
}

func TestVnodeStats(t *testing.T) {
	ctx := context.Background()
	conn := setup(t, labtest.Postgres(t))
	if err := shard.CreateBucket(ctx, conn, "other", shard.BucketOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := shard.Own(ctx, conn, []int32{0, 106, 943}, true, 1); err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{0: 5, 106: 3, 943: 1}
	for v, n := range want {
		for i := int64(0); i < n; i++ {
			if err := put(ctx, conn, fmt.Sprintf("/k%d-%d", v, i), int(v)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := conn.Exec(ctx, `insert into other (_key, _value, _etag, _mtime, _vnode) values ('/o', '{"x":1}', 'e', 0, 943)`); err != nil {
		t.Fatal(err)
	}
	stats, err := shard.VnodeStats(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	want[943]++
	if len(stats) != 3 || stats[0].Vnode != 0 || stats[0].Rows != 5 {
		t.Fatalf("stats %+v", stats)
	}
	for _, s := range stats {
		if s.Rows != want[s.Vnode] || s.Bytes <= 0 {
			t.Errorf("vnode %d: %d rows %d bytes, want %d rows", s.Vnode, s.Rows, s.Bytes, want[s.Vnode])
		}
	}
	one, err := shard.VnodeStats(ctx, conn, "other")
	if err != nil || len(one) != 1 || one[0].Vnode != 943 || one[0].Rows != 1 {
		t.Fatalf("stats of one bucket: %+v %v", one, err)
	}
	if _, err := shard.VnodeStats(ctx, conn, "x;drop"); err == nil {
		t.Fatal("bad bucket name accepted")
	}
}

// Ownership at chunk edges, at the top of a 1,000,000-vnode ring, and the
// fold of an earlier version's per-vnode table into chunks.
func TestOwnershipChunks(t *testing.T) {
	ctx := context.Background()
	conn := setup(t, labtest.Postgres(t))
	edges := []int32{0, 62, 63, 64, 1023, 1024, 999_999}
	if err := shard.Own(ctx, conn, edges, true, 1); err != nil {
		t.Fatal(err)
	}
	fence := func(v int32) string {
		_, err := conn.Exec(ctx, `select reshard_fence_check($1)`, v)
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			return pe.Code
		}
		if err != nil {
			t.Fatal(err)
		}
		return "ok"
	}
	for _, v := range edges {
		if c := fence(v); c != "ok" {
			t.Errorf("owned vnode %d: fence says %s", v, c)
		}
	}
	for _, v := range []int32{1, 61, 65, 1022, 1025, 999_998} {
		if c := fence(v); c != shard.CodeNotOwned {
			t.Errorf("unowned vnode %d: fence says %s", v, c)
		}
	}
	if n, err := shard.SetWritableRanges(ctx, conn, []shard.Range{{63, 1023}}, false, 2); err != nil || n != 3 {
		t.Fatalf("freeze 63-1023: %d %v", n, err)
	}
	for v, want := range map[int32]string{62: "ok", 63: shard.CodeFrozen, 64: shard.CodeFrozen, 1023: shard.CodeFrozen, 1024: "ok"} {
		if c := fence(v); c != want {
			t.Errorf("vnode %d after the freeze: %s, want %s", v, c, want)
		}
	}
	if err := shard.DisownRanges(ctx, conn, []shard.Range{{0, 63}, {999_999, 999_999}}); err != nil {
		t.Fatal(err)
	}
	if n, _ := shard.OwnedCount(ctx, conn); n != 3 {
		t.Fatalf("owned after disowning 4: %d", n)
	}
	st, err := shard.Owned(ctx, conn)
	if err != nil || fmt.Sprint(st) != "[{64 false 2} {1023 false 2} {1024 true 1}]" {
		t.Fatalf("owned: %v %v", st, err)
	}
	if err := shard.KeepOnly(ctx, conn, []int32{64, 1024, 5}); err != nil {
		t.Fatal(err)
	}
	if st, _ := shard.Owned(ctx, conn); fmt.Sprint(st) != "[{64 false 2} {1024 true 1}]" {
		t.Fatalf("after KeepOnly: %v", st)
	}
	// A shard initialized by an earlier version: one row per vnode.
	if _, err := conn.Exec(ctx, `drop view reshard_vnodes; drop table reshard_vnode_chunks;
		create table reshard_vnodes (vnode int primary key, writable boolean not null, ring_version bigint not null);
		insert into reshard_vnodes values (5, true, 7), (70, false, 7), (71, true, 8), (1030, true, 9)`); err != nil {
		t.Fatal(err)
	}
	if err := shard.Init(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if st, _ := shard.Owned(ctx, conn); fmt.Sprint(st) != "[{5 true 8} {70 false 8} {71 true 8} {1030 true 9}]" {
		t.Fatalf("after folding the per-vnode table: %v", st)
	}
	if c := fence(70); c != shard.CodeFrozen {
		t.Fatalf("vnode 70 after the fold: %s", c)
	}
}
