package router_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/shard"
)

// shardCounts counts a bucket's rows matching cond on each shard.
func shardCounts(t *testing.T, ctx context.Context, conns []*pgx.Conn, bucket, cond string) []int64 {
	t.Helper()
	out := make([]int64, len(conns))
	for i, c := range conns {
		if err := c.QueryRow(ctx, fmt.Sprintf("select count(*) from %s where %s", bucket, cond)).Scan(&out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func sum(ns []int64) int64 {
	var t int64
	for _, n := range ns {
		t += n
	}
	return t
}

// updateObjects, deleteMany, reindexObjects, batch's update and
// deleteMany, and listen on a two-shard ring: each reaches the rows (and
// notifications) of both shards, limits hold over the whole, and a
// frozen vnode or a running reshard makes the statement wait, then fail
// whole, on every shard.
func TestMorayBulkObjects(t *testing.T) {
	e := setup(t, "")
	addr := e.serveMoray(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	c := dialFast(t, addr)
	opts := map[string]any{}
	conns := []*pgx.Conn{e.primary(t, "1.moray"), e.primary(t, "2.moray")}

	cfg := map[string]any{"index": map[string]any{"n": map[string]any{"type": "number"}, "s": map[string]any{"type": "string"},
		"sa": map[string]any{"type": "[string]"}}}
	if _, err := c.Call(ctx, "createBucket", "bulk", cfg, opts); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 40; i++ {
		v := map[string]any{"n": i, "s": "s", "sa": []string{"a", fmt.Sprintf("x%d", i%4)}, "m": i * 10}
		if _, err := c.Call(ctx, "putObject", "bulk", fmt.Sprintf("k%02d", i), v, opts); err != nil {
			t.Fatal(err)
		}
	}
	if n := shardCounts(t, ctx, conns, "bulk", "true"); n[0] == 0 || n[1] == 0 || sum(n) != 40 {
		t.Fatalf("rows per shard %v: the test needs rows on both", n)
	}

	// updateObjects: one etag for every row changed, on both shards; the
	// column is set, _value is not, and reads merge the column in.
	out, err := c.Call(ctx, "updateObjects", "bulk", map[string]any{"s": "set"}, "(n>=10)", opts)
	var res struct {
		Count int64  `json:"count"`
		Etag  string `json:"etag"`
	}
	if err != nil || len(out) != 1 || json.Unmarshal(out[0], &res) != nil || res.Count != 30 || len(res.Etag) != 8 || res.Etag[0] != 'u' {
		t.Fatalf("updateObjects: %s %v", out, err)
	}
	if n := shardCounts(t, ctx, conns, "bulk", fmt.Sprintf("s = 'set' and _etag = '%s' and _value not like '%%set%%'", res.Etag)); n[0] == 0 || n[1] == 0 || sum(n) != 30 {
		t.Fatalf("rows updated per shard: %v", n)
	}
	got, err := c.Call(ctx, "getObject", "bulk", "k15", opts)
	if err != nil || !strings.Contains(string(got[0]), `"s":"set"`) || !strings.Contains(string(got[0]), `"_etag":"`+res.Etag+`"`) {
		t.Fatalf("getObject after updateObjects: %s %v", got, err)
	}
	// The limit is over all shards; an array filter; no match.
	for _, tc := range []struct {
		filter string
		opts   map[string]any
		want   int64
	}{{"(sa=a)", map[string]any{"limit": 7}, 7}, {"(sa=x1)", map[string]any{}, 10}, {"(sa=x1)", map[string]any{"limit": "3"}, 3},
		{"(n=1000)", map[string]any{}, 0}, {"(s=*)", map[string]any{"limit": 0, "noLimit": true}, 40}} {
		out, err := c.Call(ctx, "updateObjects", "bulk", map[string]any{"n": 1}, tc.filter, tc.opts)
		if err != nil || json.Unmarshal(out[0], &res) != nil || res.Count != tc.want {
			t.Fatalf("updateObjects %s %v: %s %v, want count %d", tc.filter, tc.opts, out, err, tc.want)
		}
	}
	// Moray's errors, in Moray's order.
	for _, tc := range []struct {
		args       []any
		name, text string
	}{
		{[]any{"bulk", map[string]any{}, "(n=1)", opts}, "FieldUpdateError", "{} is not a valid update definition"},
		{[]any{"bulk", map[string]any{"nope": 1}, "(n=1)", opts}, "NotIndexedError", `bulk does not have indexes that support {"nope":1}`},
		{[]any{"bulk", map[string]any{"n": nil}, "(n=1)", opts}, "NotNullableError", `index "n" (of type "number") cannot store null values`},
		{[]any{"bulk", map[string]any{"n": 2}, "(&(nope=1)(m=2))", opts}, "NotIndexedError",
			`bulk does not have indexes that support (&(nope=1)(m=2)). Reindexing fields: []. Unindexed fields: [ 'nope', 'm' ]`},
		{[]any{"nosuch", map[string]any{"n": 2}, "(n=1)", opts}, "BucketNotFoundError", "nosuch does not exist"},
		{[]any{"bulk", map[string]any{"n": 2}, "((bad", opts}, "InvalidQueryError", "((bad is an invalid filter"},
	} {
		_, err := c.Call(ctx, "updateObjects", tc.args...)
		if re := remoteErr(err); re.Name != tc.name || re.Message != tc.text {
			t.Fatalf("updateObjects %v: %v, want %s: %s", tc.args, err, tc.name, tc.text)
		}
	}

	// deleteMany: both shards, with a limit over the whole.
	out, err = c.Call(ctx, "deleteMany", "bulk", "(sa=x0)", map[string]any{"limit": 4})
	if err != nil || string(out[0]) != `{"count":4}` {
		t.Fatalf("deleteMany with a limit: %s %v", out, err)
	}
	out, err = c.Call(ctx, "deleteMany", "bulk", "(sa=x0)", opts)
	if err != nil || string(out[0]) != `{"count":6}` {
		t.Fatalf("deleteMany: %s %v", out, err)
	}
	if n := shardCounts(t, ctx, conns, "bulk", "true"); n[0] == 0 || n[1] == 0 || sum(n) != 30 {
		t.Fatalf("rows per shard after deleteMany: %v", n)
	}

	// batch: a put, an update and a deleteMany in one go.
	out, err = c.Call(ctx, "batch", []any{
		map[string]any{"bucket": "bulk", "key": "b1", "value": map[string]any{"n": 500, "s": "b"}},
		map[string]any{"bucket": "bulk", "operation": "update", "fields": map[string]any{"s": "batched"}, "filter": "(sa=x2)"},
		map[string]any{"bucket": "bulk", "operation": "deleteMany", "filter": "(sa=x3)", "options": map[string]any{"limit": 2}},
	}, opts)
	if err != nil || !strings.Contains(string(out[0]), `{"bucket":"bulk","count":10,"etag":"u`) ||
		!strings.Contains(string(out[0]), `{"bucket":"bulk","count":2,"filter":"(sa=x3)"}`) {
		t.Fatalf("batch with update and deleteMany: %s %v", out, err)
	}
	if n := shardCounts(t, ctx, conns, "bulk", "s = 'batched'"); n[0] == 0 || n[1] == 0 || sum(n) != 10 {
		t.Fatalf("rows a batch's update changed, per shard: %v", n)
	}
	if n := shardCounts(t, ctx, conns, "bulk", "true"); sum(n) != 29 {
		t.Fatalf("rows after the batch: %v", n)
	}

	// A frozen vnode on one shard: the statement waits, then fails on
	// both shards (not half-applied); thawed, it runs whole.
	var key string
	var vnode int32
	if err := conns[1].QueryRow(ctx, "select _key, _vnode from bulk limit 1").Scan(&key, &vnode); err != nil {
		t.Fatal(err)
	}
	if _, err := shard.SetWritable(ctx, conns[1], []int32{vnode}, false, 0); err != nil {
		t.Fatal(err)
	}
	_, err = c.Call(ctx, "deleteMany", "bulk", "(s=*)", opts)
	if re := remoteErr(err); re.Name != "ReadOnlyError" {
		t.Fatalf("deleteMany with a frozen vnode: %v", err)
	}
	if n := shardCounts(t, ctx, conns, "bulk", "true"); sum(n) != 29 {
		t.Fatalf("rows after a refused deleteMany: %v", n)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Call(ctx, "updateObjects", "bulk", map[string]any{"s": "thawed"}, "(s=*)", opts)
		done <- err
	}()
	time.Sleep(500 * time.Millisecond)
	if n := shardCounts(t, ctx, conns, "bulk", "s = 'thawed'"); sum(n) != 0 {
		t.Fatalf("rows updated while a vnode is frozen: %v", n)
	}
	if _, err := shard.SetWritable(ctx, conns[1], []int32{vnode}, true, 0); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("updateObjects once thawed: %v", err)
	}
	if n := shardCounts(t, ctx, conns, "bulk", "s = 'thawed'"); sum(n) != 29 {
		t.Fatalf("rows updated once thawed: %v", n)
	}

	// A running reshard (it holds pnodes): the statement waits for it.
	if _, err := e.cli.Put(ctx, etcd.PnodeLockPrefix+"1.moray", "job-bulk-test"); err != nil {
		t.Fatal(err)
	}
	go func() {
		_, err := c.Call(ctx, "deleteMany", "bulk", "(s=thawed)", map[string]any{"limit": 5})
		done <- err
	}()
	time.Sleep(500 * time.Millisecond)
	if n := shardCounts(t, ctx, conns, "bulk", "true"); sum(n) != 29 {
		t.Fatalf("rows deleted during a reshard: %v", n)
	}
	if _, err := e.cli.Delete(ctx, etcd.PnodeLockPrefix+"1.moray"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("deleteMany after the reshard: %v", err)
	}
	if n := shardCounts(t, ctx, conns, "bulk", "true"); sum(n) != 24 {
		t.Fatalf("rows after the deleteMany that waited: %v", n)
	}

	// reindexObjects after updateBucket adds a field: rows on both shards
	// get the column, a few at a time, then reindex_active is emptied.
	cfg["index"].(map[string]any)["m"] = map[string]any{"type": "number"}
	cfg["options"] = map[string]any{"version": 2}
	if _, err := c.Call(ctx, "updateBucket", "bulk", cfg, opts); err != nil {
		t.Fatal(err)
	}
	_, err = c.Call(ctx, "updateObjects", "bulk", map[string]any{"m": 1}, "(n=1)", opts)
	if re := remoteErr(err); re.Name != "NotIndexedError" || re.Message != `bulk does not have indexes that support {"m":1}. Reindexing fields: [ 'm' ]. Unindexed fields: []` {
		t.Fatalf("updateObjects of a field being reindexed: %v", err)
	}
	_, err = c.Call(ctx, "reindexObjects", "bulk", 0, opts)
	if re := remoteErr(err); re.Name != "InvalidArgumentError" || re.Message != "count 0 < 1" {
		t.Fatalf("reindexObjects count 0: %v", err)
	}
	var passes []string
	for i := 0; i < 10; i++ {
		out, err := c.Call(ctx, "reindexObjects", "bulk", 10, opts)
		if err != nil {
			t.Fatal(err)
		}
		passes = append(passes, string(out[0]))
		if string(out[0]) == `{"processed":0,"remaining":0}` {
			break
		}
	}
	if strings.Join(passes, " ") != `{"processed":10,"remaining":14} {"processed":10,"remaining":4} {"processed":4,"remaining":0} {"processed":0,"remaining":0}` {
		t.Fatalf("reindexObjects passes: %v", passes)
	}
	if n := shardCounts(t, ctx, conns, "bulk", "_rver = 2"); n[0] == 0 || n[1] == 0 || sum(n) != 24 {
		t.Fatalf("rows reindexed per shard: %v", n)
	}
	// Every row but the batch's b1, whose value has no m.
	if n := shardCounts(t, ctx, conns, "bulk", "m = (_value::jsonb->>'m')::numeric"); sum(n) != 23 {
		t.Fatalf("rows whose m column the reindex filled: %v", n)
	}
	if n := shardCounts(t, ctx, conns, "buckets_config", "name = 'bulk' and reindex_active = '{}'"); n[0] != 1 || n[1] != 1 {
		t.Fatalf("reindex_active emptied per shard: %v", n)
	}
	out, err = c.Call(ctx, "reindexObjects", "bulk", 10, opts)
	if err != nil || string(out[0]) != `{"processed":0}` {
		t.Fatalf("reindexObjects with nothing to do: %s %v", out, err)
	}
	out, err = c.Call(ctx, "updateObjects", "bulk", map[string]any{"m": 7}, "(m>=100)", opts)
	if err != nil || json.Unmarshal(out[0], &res) != nil || res.Count == 0 {
		t.Fatalf("updateObjects on the reindexed field: %s %v", out, err)
	}

	// listen: a NOTIFY on either shard reaches the listener; unlisten
	// ends it without error.
	id := "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
	var recs []json.RawMessage
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		l := dialFast(t, addr)
		recs, err = l.Call(ctx, "listen", "bulk_chan", map[string]any{"req_id": id})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		conns[0].QueryRow(ctx, "select count(*) from pg_stat_activity where query like 'LISTEN%'").Scan(&n)
		var m int
		conns[1].QueryRow(ctx, "select count(*) from pg_stat_activity where query like 'LISTEN%'").Scan(&m)
		if n > 0 && m > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("listen did not reach both shards")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i, conn := range conns {
		if _, err := conn.Exec(ctx, "select pg_notify('bulk_chan', $1)", fmt.Sprintf("from shard %d", i+1)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if out, err := c.Call(ctx, "unlisten", id, opts); err != nil || len(out) != 0 {
		t.Fatalf("unlisten: %s %v", out, err)
	}
	wg.Wait()
	all := ""
	for _, r := range recs {
		all += string(r)
	}
	if err != nil || len(recs) != 2 || !strings.Contains(all, `{"channel":"bulk_chan","payload":"from shard 1"}`) ||
		!strings.Contains(all, `{"channel":"bulk_chan","payload":"from shard 2"}`) {
		t.Fatalf("listen: %s %v", recs, err)
	}
}
