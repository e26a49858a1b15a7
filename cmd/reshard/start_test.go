package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/orchestrator"
)

// Every bad input to start is refused with one clear line, and nothing
// changes: not the ring, not the locks, not the destination.
func TestStartBadInputChangesNothing(t *testing.T) {
	l := labUp(t, "--shards", "2", "--peers", "1", "--routers", "1", "--vnodes", "64")
	req, _ := http.NewRequest("PUT", l.Routers[0]+"/buckets/manta", strings.NewReader(`{}`))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("create bucket: %v", err)
	}
	dst := l.addShard(t, "3.moray", "1")
	full := l.addShard(t, "4.moray", "1")
	owning := l.addShard(t, "5.moray", "1")
	for _, sql := range []string{
		`create table manta (_id bigserial, _txn_snap integer, _key text primary key, _value text not null, _etag char(8) not null, _mtime bigint, _vnode bigint)`,
		`insert into buckets_config (name, index, pre, post, options) values ('manta', '{}', '[]', '[]', '{"version":0}')`,
		`insert into manta (_key, _value, _etag, _mtime, _vnode) values ('x', '{}', 'e', 0, 0)`,
	} {
		query[int](t, full, sql)
	}
	query[int](t, owning, `insert into reshard_vnode_chunks values (0, B'1'::bit(1024), B'1'::bit(1024), 1)`) // owns vnode 0

	ctx := context.Background()
	cli := l.etcdClient(t)
	snapshot := func() string {
		_, rv, err := etcd.NewRingStore(cli).Current(ctx)
		if err != nil {
			t.Fatal(err)
		}
		locks, _ := orchestrator.NewStore(cli).PnodeLocks(ctx)
		dl, _ := etcd.DumpLock(ctx, cli)
		jobs, _ := orchestrator.NewStore(cli).List(ctx)
		owned := query[int64](t, dst, `select count(*) from reshard_vnodes`)
		tables := query[int64](t, dst, `select count(*) from pg_tables where schemaname = 'public' and tablename not like 'reshard_%'`)
		b, _ := json.Marshal([]any{rv.Version, locks, dl, len(jobs), owned, tables})
		return string(b)
	}
	before := snapshot()
	ok1 := []string{"--from", "1.moray", "--to", "3.moray", "--dc-mode", "single", "--servers", "1"}
	with := func(extra ...string) []string { return append(append([]string{"start"}, ok1...), extra...) }
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"start", "--from", "9.moray", "--to", "3.moray", "--split-half", "--servers", "1"}, "9.moray: not found"},
		{[]string{"start", "--from", "1.moray", "--to", "8.moray", "--split-half", "--servers", "1"}, "8.moray: not found"},
		{[]string{"start", "--from", "1.moray", "--to", "1.moray", "--split-half", "--servers", "1"}, "given twice"},
		{with("--vnodes", "1"), "vnode 1 is on 2.moray"},
		{with("--vnodes", "0, 106, 943, 689"), "unknown vnode 106"},
		{with("--vnodes", "-5"), "not negative"},
		{with("--vnodes", "0,,x"), "bad vnode"},
		{with("--vnodes", "0-62/2"), "every vnode of 1.moray"},
		{with(), "exactly one of --split-half and --vnodes"},
		{with("--split-half", "--vnodes", "0"), "exactly one of"},
		{with("--split-half", "--dc-mode", "quad"), "--dc-mode"},
		{with("--split-half", "--strategy", "magic"), "--strategy"},
		{with("--split-half", "--rate-limit", "0"), "--rate-limit"},
		{with("--split-half", "--servers", "2"), "expected 1"},
		{[]string{"start", "--from", "1.moray", "--to", "3.moray", "--split-half", "--dc-mode", "triple", "--servers", "3"}, "needs 3"},
		{[]string{"start", "--from", "1.moray", "--to", "4.moray", "--split-half", "--servers", "1"}, "already holds rows in bucket manta"},
		{[]string{"start", "--from", "1.moray", "--to", "5.moray", "--split-half", "--servers", "1"}, "already owns 1 vnodes"},
		{[]string{"start", "--from", "1.moray", "--to", "2.moray", "--split-half", "--servers", "1"}, "already owns 32 vnodes in the ring"},
	}
	for _, c := range cases {
		_, stderr, ok := run(t, l.env(), c.args...)
		if ok || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%v: ok=%v, stderr %q, want %q", c.args[1:], ok, stderr, c.want)
		}
		if after := snapshot(); after != before {
			t.Fatalf("%v changed state: %s -> %s", c.args[1:], before, after)
		}
	}

	// A bucket the origin lacks.
	if err := etcd.NewBuckets(cli).Put(ctx, "extra", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if _, stderr, ok := run(t, l.env(), with("--split-half")...); ok || !strings.Contains(stderr, "bucket extra is missing on the origin") {
		t.Fatalf("missing bucket: %s", stderr)
	}
	cli.Delete(ctx, etcd.Prefix+"buckets/extra")
	if after := snapshot(); after != before {
		t.Fatalf("missing bucket changed state: %s -> %s", before, after)
	}

	// A dry run plans and changes nothing.
	out, stderr, ok := run(t, l.env(), with("--split-half", "--dry-run")...)
	if !ok || !strings.Contains(out, "to 3.moray: 16 vnodes") || !strings.Contains(out, "phases: validate -> prepare") {
		t.Fatalf("dry run: %s %s", out, stderr)
	}
	if after := snapshot(); after != before {
		t.Fatalf("dry run changed state")
	}

	// A second job on the same pnodes is refused while the first holds them.
	out, stderr, ok = run(t, l.env(), with("--split-half", "--detach")...)
	if !ok {
		t.Fatalf("detached start: %s", stderr)
	}
	id := strings.TrimSpace(out)
	mid := snapshot()
	if _, stderr, ok := run(t, l.env(), "start", "--from", "2.moray", "--to", "3.moray", "--split-half", "--servers", "1"); ok || !strings.Contains(stderr, "3.moray is in job "+id) {
		t.Fatalf("second job on 3.moray: %s", stderr)
	}
	if after := snapshot(); after != mid {
		t.Fatalf("the refused second job changed state")
	}
	// Abort before it ran: the locks are gone and the destination is as it was.
	if _, stderr, ok := run(t, l.env(), "abort", id); !ok {
		t.Fatalf("abort: %s", stderr)
	}
	if _, stderr, ok := run(t, l.env(), "abort", id); ok || !strings.Contains(stderr, "already aborted") {
		t.Fatalf("second abort: %s", stderr)
	}
	var v statusView
	out, _, _ = run(t, l.env(), "status", id, "--json")
	json.Unmarshal([]byte(out), &v)
	if v.Job.State != orchestrator.Aborted || len(v.Locks.Pnodes) != 0 {
		t.Fatalf("after abort: %s", out)
	}
	if _, stderr, ok := run(t, l.env(), "resume", "nosuchjob"); ok || !strings.Contains(stderr, "not found") {
		t.Fatalf("resume of an unknown job: %s", stderr)
	}
}
