package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/orchestrator"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/ring"
	"github.com/reshard/reshard/router"
	"github.com/reshard/reshard/shard"
)

const adoptAccount = "/5884dd74-949a-40ec-8d13-dd3151897343/stor"

// adoptObject is one object the reference Moray writes before adoption.
type adoptObject struct {
	Bucket string         `json:"bucket"`
	Key    string         `json:"key"`
	Value  map[string]any `json:"value"`
	Batch  bool           `json:"batch"`
}

// mantaObjects are Manta-shaped objects as muskie writes them through
// electric-moray: putObject values carry the vnode electric-moray sets;
// batch values (muskie's multipart commit) carry none, because
// electric-moray's batch forwards them untouched; the delete log and the
// directory counts are rows libmanta's triggers write on the shard, with
// no vnode.
func mantaObjects(rg *ring.Ring) (objs []adoptObject, batched, queued int) {
	dir := shard.BucketOptions{HashDir: true}
	vnode := func(key string) uint32 { return rg.LocateString(router.HashKey(key, dir)).Vnode }
	names := []string{"cat.jpg", "héllo wörld 🎉.txt", "日本語.txt", `it's "quoted".txt`, "a,b{c}.bin", "plain"}
	for d := 0; d < 40; d++ {
		dirname := fmt.Sprintf("%s/dir%02d", adoptAccount, d)
		objs = append(objs, adoptObject{Bucket: "manta", Key: dirname, Value: map[string]any{
			"dirname": adoptAccount, "key": dirname, "mtime": 1700000000000 + d, "name": fmt.Sprintf("dir%02d", d),
			"owner": "5884dd74-949a-40ec-8d13-dd3151897343", "type": "directory", "headers": map[string]any{},
			"vnode": vnode(dirname)}})
		for i := 0; i < 12; i++ {
			key := fmt.Sprintf("%s/%s-%d", dirname, names[i%len(names)], i)
			v := map[string]any{
				"dirname": dirname, "key": key, "mtime": 1700000000000 + d*100 + i, "name": key[len(dirname)+1:],
				"owner": "5884dd74-949a-40ec-8d13-dd3151897343", "type": "object", "contentLength": i * 1000,
				"contentMD5": "XUFAKrxLKna5cZ2REBfFkg==", "contentType": "application/octet-stream",
				"objectId": fmt.Sprintf("0b1e3f2a-7c4d-4e5f-8a9b-%012d", d*100+i), "etag": "0b1e3f2a",
				"roles": []any{}, "headers": map[string]any{"m-note": "ça va ☃"},
				"sharks": []any{map[string]any{"datacenter": "dc1", "manta_storage_id": "1.stor"}, map[string]any{"datacenter": "dc2", "manta_storage_id": "2.stor"}},
			}
			if i%5 == 4 {
				delete(v, "objectId") // a missing index field
			}
			b := d%8 == 3 // every eighth directory committed by batches
			if !b {
				v["vnode"] = vnode(key)
			} else {
				batched++
			}
			objs = append(objs, adoptObject{Bucket: "manta", Key: key, Value: v, Batch: b})
		}
	}
	for i := 0; i < 20; i++ {
		key := fmt.Sprintf("/0b1e3f2a-7c4d-4e5f-8a9b-%012d/%d", i, 1700000000000+i)
		objs = append(objs, adoptObject{Bucket: "manta_delete_log", Key: key, Value: map[string]any{
			"objectId": fmt.Sprintf("0b1e3f2a-7c4d-4e5f-8a9b-%012d", i), "key": adoptAccount + "/gone", "mtime": 1700000000000 + i}})
		queued++
	}
	return objs, batched, queued
}

var libmantaBuckets = []map[string]any{
	{"name": "manta", "config": map[string]any{"index": map[string]any{"dirname": map[string]any{"type": "string"},
		"name": map[string]any{"type": "string"}, "owner": map[string]any{"type": "string"},
		"objectId": map[string]any{"type": "string"}, "type": map[string]any{"type": "string"}}, "options": map[string]any{"version": 2}}},
	{"name": "manta_uploads", "config": map[string]any{"index": map[string]any{"finalizingType": map[string]any{"type": "string"},
		"uploadId": map[string]any{"type": "string"}}, "options": map[string]any{"version": 1}}},
	{"name": "manta_delete_log", "config": map[string]any{"index": map[string]any{"objectId": map[string]any{"type": "string"}}, "options": map[string]any{"version": 1}}},
	{"name": "manta_fastdelete_queue", "config": map[string]any{"options": map[string]any{"version": 1}}},
	{"name": "manta_directory_counts", "config": map[string]any{"index": map[string]any{"entries": map[string]any{"type": "number"}}, "options": map[string]any{"version": 1}}},
}

func writeJSONFile(t *testing.T, v any) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "spec.json")
	b, _ := json.Marshal(v)
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func nodeScript(t *testing.T, dir string, args ...string) []string {
	t.Helper()
	cmd := exec.Command("node", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var sum struct{ OK bool }
	if err != nil || json.Unmarshal([]byte(lines[len(lines)-1]), &sum) != nil || !sum.OK {
		t.Fatalf("node %s: %v\n%.3000s\n%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return lines[:len(lines)-1]
}

func initReport(t *testing.T, l *labInfo, args ...string) adoptReport {
	t.Helper()
	out, stderr, ok := run(t, l.env(), append([]string{"pnode", "init", "1.moray", "--json"}, args...)...)
	if !ok {
		t.Fatalf("pnode init %v: %s", args, stderr)
	}
	var rep adoptReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("pnode init printed %q: %v", out, err)
	}
	return rep
}

func (r adoptReport) bucket(t *testing.T, name string) bucketReport {
	t.Helper()
	for _, b := range r.Buckets {
		if b.Name == name {
			return b
		}
	}
	t.Fatalf("pnode init reported no bucket %s: %+v", name, r.Buckets)
	return bucketReport{}
}

// TestAdoptMantaShardAndHandBack is issue 16's main test. The real Moray
// writes a Manta shard; reshard adopts it in place with pnode init, splits
// it online under load from the npm moray client through its Moray port,
// and then a real Moray on each resulting shard reads every object back
// with the value and the etag that reshard serves.
func TestAdoptMantaShardAndHandBack(t *testing.T) {
	kit := referenceKit(t)
	client := morayClient(t)
	l := labUp(t, "--shards", "1", "--peers", "1", "--routers", "1", "--vnodes", "256")
	port := l.Shards[0].Peers[0].Port
	ref1 := startReferenceMoray(t, kit, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/moray", port))
	rg := ringOf(t, l)

	// 1. Moray writes the shard, as Manta's web tier would through electric-moray.
	objs, batched, queued := mantaObjects(rg)
	nodeScript(t, client, "adopt.js", "write", writeJSONFile(t, map[string]any{"buckets": libmantaBuckets, "objects": objs}), ref1)
	ctx := context.Background()
	origin, err := postgres.Connect(ctx, l.primary("1.moray"))
	if err != nil {
		t.Fatal(err)
	}
	defer origin.Close(ctx)
	count := func(sql string) int {
		t.Helper()
		var n int
		if err := origin.QueryRow(ctx, sql).Scan(&n); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return n
	}
	if n := count(`select count(*) from manta where _vnode is null`); n != batched {
		t.Fatalf("Moray left %d manta rows without a vnode, want the %d batch writes", n, batched)
	}

	// 2. pnode init reports, then --fix adopts; again is a no-op.
	rep := initReport(t, l)
	m := rep.bucket(t, "manta")
	if m.Source != "shard" || m.NoVnode != int64(batched) || m.Action != fmt.Sprintf("set _vnode on %d rows", batched) || m.Fixed != 0 {
		t.Fatalf("report on manta: %+v", m)
	}
	if dl := rep.bucket(t, "manta_delete_log"); dl.NoVnode != int64(queued) || dl.Action != "shard-local" {
		t.Fatalf("report on manta_delete_log: %+v", dl)
	}
	if n := count(`select count(*) from manta where _vnode is null`); n != batched {
		t.Fatalf("pnode init without --fix changed rows: %d without a vnode", n)
	}
	rep = initReport(t, l, "--fix")
	if m := rep.bucket(t, "manta"); m.Fixed != int64(batched) {
		t.Fatalf("--fix on manta: %+v", m)
	}
	t.Logf("pnode init --fix: %.2f s", rep.Seconds)
	if n := count(`select count(*) from manta where _vnode is null`); n != 0 {
		t.Fatalf("%d manta rows still lack a vnode after --fix", n)
	}
	if n := count(`select count(*) from manta_delete_log where _vnode is null`); n != queued {
		t.Fatalf("shard-local rows changed: %d of %d keep no vnode", n, queued)
	}
	if m := initReport(t, l, "--fix").bucket(t, "manta"); m.Fixed != 0 || m.Action != "none" || !strings.Contains(fmt.Sprint(m.Source), "both") {
		t.Fatalf("pnode init --fix again: %+v", m)
	}
	if n := count(`select count(*) from pg_trigger where tgname = 'reshard_fence'`); n != len(libmantaBuckets) {
		t.Fatalf("%d bucket tables carry the fence, want %d", n, len(libmantaBuckets))
	}
	cli := l.etcdClient(t)
	var dlOpts, mOpts shard.BucketOptions
	if err := etcd.NewBuckets(cli).Get(ctx, "manta_delete_log", &dlOpts); err != nil || !dlOpts.ShardLocal {
		t.Fatalf("manta_delete_log in etcd: %+v %v", dlOpts, err)
	}
	if err := etcd.NewBuckets(cli).Get(ctx, "manta", &mOpts); err != nil || !mOpts.HashDir || mOpts.ShardLocal {
		t.Fatalf("manta in etcd: %+v %v", mOpts, err)
	}

	// 3. Split online under load from the npm client through reshard.
	l.addShard(t, "3.moray", "1")
	ledger := filepath.Join(t.TempDir(), "ledger.jsonl")
	var wg sync.WaitGroup
	var load morayLoad
	wg.Add(1)
	go func() {
		defer wg.Done()
		cmd := exec.Command("node", "load.js", l.Moray[0], ledger, "10", "6", "a")
		cmd.Dir = client
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if err != nil || json.Unmarshal([]byte(lines[len(lines)-1]), &load) != nil {
			t.Errorf("load.js: %v: %s %s", err, out, stderr.String())
		}
	}()
	waitLedger(t, ledger, 200)
	j := splitHalf(t, l, "1.moray", "3.moray")
	wg.Wait()
	if j.State != orchestrator.Done {
		t.Fatalf("job %s: %s", j.ID, j.State)
	}
	t.Logf("split: write block %.1f ms; load %+v", j.WriteBlockMS, load)
	if load.Errors != 0 || load.Puts < 100 {
		t.Fatalf("npm client during the split: %+v", load)
	}
	if slices.Contains(j.Buckets, "manta_delete_log") {
		t.Fatalf("the job moved a shard-local bucket: %v", j.Buckets)
	}
	verifyLedger(t, l, ledger)

	// 4. Hand back: a real Moray on each shard reads every row back as
	// reshard serves it, value (less vnode, as electric-moray strips it),
	// etag and _id.
	ref3 := startReferenceMoray(t, kit, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/moray", l.shardPort("3.moray")))
	dst, err := postgres.Connect(ctx, l.primary("3.moray"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close(ctx)
	var reads []map[string]any
	perShard := map[string]int{}
	for name, s := range map[string]struct {
		conn  *pgx.Conn
		moray string
	}{"1.moray": {origin, ref1}, "3.moray": {dst, ref3}} {
		for _, b := range []string{"manta", "manta_uploads"} {
			rows, err := s.conn.Query(ctx, fmt.Sprintf(`select _key from %s where reshard_owns(_vnode)`, b))
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var k string
				rows.Scan(&k)
				reads = append(reads, map[string]any{"bucket": b, "key": k, "addrs": []string{l.Moray[0], s.moray}})
				perShard[name]++
			}
			rows.Close()
		}
	}
	// Every row, Moray's or reshard's, holds Moray's etag of its _value,
	// so a Moray client's conditional write works either side of the swap.
	for _, c := range []*pgx.Conn{origin, dst} {
		rows, err := c.Query(ctx, `select _key, _value, _etag from manta`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var k, v, e string
			rows.Scan(&k, &v, &e)
			if shard.MorayEtag(v) != e {
				t.Errorf("manta %s: _etag %s, Moray's would be %s", k, e, shard.MorayEtag(v))
			}
		}
		rows.Close()
	}
	if perShard["1.moray"] == 0 || perShard["3.moray"] == 0 {
		t.Fatalf("objects per shard after the split: %v", perShard)
	}
	written := map[string]bool{} // the objects Moray wrote before adoption
	for _, o := range objs {
		if o.Bucket == "manta" {
			written[o.Key] = true
		}
	}
	lines := nodeScript(t, client, "adopt.js", "read", writeJSONFile(t, map[string]any{"reads": reads}))
	seen := 0
	for _, line := range lines {
		var r struct {
			Bucket, Key string
			Answers     []struct {
				Value, Etag, Error string
				ID                 int64
			}
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil || len(r.Answers) != 2 {
			t.Fatalf("read: %q: %v", line, err)
		}
		a, b := r.Answers[0], r.Answers[1]
		if a.Error != "" || b.Error != "" || a.Value != b.Value || a.Etag != b.Etag || a.ID != b.ID {
			t.Errorf("%s %s: reshard %+v, Moray %+v", r.Bucket, r.Key, a, b)
		}
		if written[r.Key] && r.Bucket == "manta" {
			seen++
		}
	}
	if seen != len(written) {
		t.Errorf("%d of the %d objects Moray wrote before adoption read back after the split", seen, len(written))
	}
	t.Logf("hand back: %d objects read through reshard and a real Moray per shard (%v), all identical", len(lines), perShard)
	if n := count(`select count(*) from manta_delete_log`); n != queued {
		t.Errorf("the origin keeps %d of its %d shard-local rows", n, queued)
	}
}
