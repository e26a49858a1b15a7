package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/orchestrator"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/ring"
	"github.com/reshard/reshard/shard"
)

// A bucket created after a job was planned but before it took its pnodes
// moves with the others, and a bucket change once the job holds its
// pnodes is refused, so no bucket is ever left behind on the origin.
func TestBucketChangesAroundAJob(t *testing.T) {
	ctx := context.Background()
	l := labUp(t, "--shards", "2", "--peers", "1", "--routers", "1", "--vnodes", "256")
	l.addShard(t, "3.moray", "1")
	if resp, body := httpDo(t, "PUT", l.Routers[0]+"/buckets/early", ""); resp.StatusCode != 200 {
		t.Fatalf("create bucket: %d %s", resp.StatusCode, body)
	}
	for i := 0; i < 200; i++ {
		httpDo(t, "PUT", fmt.Sprintf("%s/buckets/early/objects/k%d", l.Routers[0], i), `{}`)
	}
	// The job is planned, takes its pnodes and dies in prepare.
	_, stderr, ok := run(t, l.env(), "start", "--from", "1.moray", "--to", "3.moray", "--split-half",
		"--dc-mode", "single", "--servers", "1", "--crash-at", "prepare", "--lease-ttl", "2s")
	m := jobCreated.FindStringSubmatch(stderr)
	if ok || m == nil {
		t.Fatalf("start: %s", stderr)
	}
	out, _, _ := run(t, l.env(), "status", m[1], "--json")
	var st statusView
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Job == nil {
		t.Fatalf("status: %s", out)
	}
	if slices.Contains(st.Job.Buckets, "late") {
		t.Fatal("the plan knew the late bucket")
	}
	// Now a router's bucket change is refused, and says why.
	if resp, body := httpDo(t, "PUT", l.Routers[0]+"/buckets/refused", ""); resp.StatusCode != 503 || !strings.Contains(body, m[1]) {
		t.Fatalf("a bucket create during the job: %d %s", resp.StatusCode, body)
	}
	// As if a change had finished between the plan and the locks: the
	// tables on every shard, then the record, and rows in moving vnodes.
	moved, err := ring.ParseVnodeList(st.Job.Moves[0].Vnodes, 256)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"1.moray", "2.moray", "3.moray"} {
		conn, err := postgres.Connect(ctx, pnodePrimary(t, l, p))
		if err != nil {
			t.Fatal(err)
		}
		if err := shard.Init(ctx, conn); err != nil {
			t.Fatal(err)
		}
		if err := shard.CreateBucket(ctx, conn, "late", shard.BucketOptions{}); err != nil {
			t.Fatal(err)
		}
		if p == "1.moray" {
			for i, v := range moved[:10] {
				if _, err := shard.PutObject(ctx, conn, "late", shard.BucketOptions{}, shard.Object{Key: fmt.Sprintf("late%d", i), Value: []byte(`{}`), Vnode: int32(v)}, ""); err != nil {
					t.Fatal(err)
				}
			}
		}
		conn.Close(ctx)
	}
	cli := l.etcdClient(t)
	if err := etcd.NewBuckets(cli).Put(ctx, "late", shard.BucketOptions{}); err != nil {
		t.Fatal(err)
	}
	out, stderr, ok = run(t, l.env(), "resume", m[1], "--json", "--lease-ttl", "2s")
	var j orchestrator.Job
	if !ok || json.Unmarshal([]byte(out), &j) != nil || j.State != orchestrator.Done {
		t.Fatalf("resume: %s %s", out, stderr)
	}
	if !slices.Contains(j.Buckets, "late") {
		t.Fatalf("the job's buckets after prepare: %v", j.Buckets)
	}
	if n := query[int64](t, pnodePrimary(t, l, "3.moray"), `select count(*) from late`); n != 10 {
		t.Fatalf("3.moray holds %d of the late bucket's 10 moved rows", n)
	}
	if n := query[int64](t, pnodePrimary(t, l, "1.moray"), `select count(*) from late`); n != 0 {
		t.Fatalf("1.moray kept %d rows of vnodes it gave away", n)
	}
	// With the job done, bucket changes go through again.
	if resp, body := httpDo(t, "PUT", l.Routers[0]+"/buckets/after", ""); resp.StatusCode != 200 {
		t.Fatalf("a bucket create after the job: %d %s", resp.StatusCode, body)
	}
}
