package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every command refuses bad input with one clear line and changes nothing:
// the etcd revision (any write bumps it), the lab's state file and the
// shard's ownership rows stay as they were.
func TestBadInputEveryCommand(t *testing.T) {
	l := labUp(t, "--shards", "1", "--peers", "1", "--routers", "1", "--vnodes", "64")
	httpDo(t, "PUT", l.Routers[0]+"/buckets/manta", `{}`)
	ctx := context.Background()
	cli := l.etcdClient(t)
	tmp := t.TempDir()
	file := filepath.Join(tmp, "afile")
	os.WriteFile(file, []byte("x"), 0o644)
	badJSON := filepath.Join(tmp, "bad.json")
	os.WriteFile(badJSON, []byte(`{"vnodes": 4, "pnodeToVnodeMap": {"a": {"0": 1}`), 0o644)
	badLedger := filepath.Join(tmp, "bad.jsonl")
	os.WriteFile(badLedger, []byte("{\"op\":\"put\"}\n"), 0o644)
	state := func() string {
		resp, err := cli.Get(ctx, "/reshard/", etcdPrefix())
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(filepath.Join(l.Dir, "lab.json"))
		owned := query[int64](t, l.primary("1.moray"), `select count(*) from reshard_vnodes`)
		return strings.Join([]string{itoa(resp.Header.Revision), string(b), itoa(owned)}, "|")
	}
	before := state()
	secret := "hunter2"
	cases := [][]string{
		{"lab", "up", "--dir", tmp + "/a", "--shards", "-1"},
		{"lab", "up", "--dir", tmp + "/b", "--shards", "99999"},
		{"lab", "up", "--dir", tmp + "/c", "--peers", "0"},
		{"lab", "up", "--dir", tmp + "/d", "--vnodes", "-5"},
		{"lab", "up", "--dir", tmp + "/e", "--port", "80"},
		{"lab", "up", "--dir", file},
		{"lab", "up", "--dir", l.Dir},
		{"lab", "up", "--dir", tmp + "/f", "--etcd-members", "2"},
		{"lab", "up", "--dir", tmp + "/g", "--etcd-members", "9"},
		{"lab", "add-shard", "--dir", l.Dir, "--name", "x'y"},
		{"lab", "add-shard", "--dir", l.Dir, "--name", "3.moray", "--peers", "0"},
		{"lab", "add-shard", "--dir", tmp + "/none", "--name", "3.moray"},
		{"lab", "restart", "--dir", l.Dir},
		{"lab", "restart", "--dir", l.Dir, "--peer", "nosuch-1"},
		{"lab", "restart", "--dir", l.Dir, "--etcd-member", "leader"},
		{"lab", "restart", "--dir", l.Dir, "--peer", "1.moray-1", "--etcd-member", "leader"},
		{"lab", "restart", "--dir", l.Dir, "--peer", "1.moray-1", "--down", "-1s"},
		{"lab", "status", "--dir", tmp + "/none"},
		{"pnode", "add", "a;b", "--primary", "postgres://h/db"},
		{"pnode", "add", "9.moray", "--primary", "postgres://u:" + secret + "@h:port/db"},
		{"pnode", "add", "9.moray"},
		{"pnode", "add", "1.moray", "--primary", "postgres://h/db"},
		{"pnode", "remove", "nosuch"},
		{"pnode", "remove", "1.moray"},
		{"pnode", "init", "nosuch"},
		{"ring", "remap-vnode", "--vnodes", "-1", "--pnode", "x"},
		{"ring", "remap-vnode", "--vnodes", "99999999", "--pnode", "x"},
		{"ring", "remap-vnode", "--vnodes", "1,,x", "--pnode", "x"},
		{"ring", "add-data", "--vnodes", "64", "--data", "ro"},
		{"ring", "get-vnodes", "nosuch"},
		{"ring", "locate", "--ring-file", tmp + "/none", "k"},
		{"ring", "import-fash", badJSON},
		{"ring", "diff", "1", "999"},
		{"ring", "rollback", "999"},
		{"ring", "create", "--vnodes", "0", "--pnode", "a"},
		{"ring", "create", "--vnodes", "8", "--pnode", "a", "--pnode", "a", "--ring-file", tmp + "/r.json"},
		{"vnode-stats", "--pnode", "nosuch"},
		{"vnode-stats", "--pnode", "1.moray", "--bucket", "a'b"},
		{"vnode-stats", "--pnode", "1.moray", "--top", "-1"},
		{"start", "--from", "1.moray", "--to", "2.moray", "--vnodes", "1e9", "--servers", "1"},
		{"start", "--from", "1.moray", "--to", "2.moray", "--split-half", "--servers", "-1"},
		{"start", "--from", "1.moray", "--to", "2.moray", "--split-half", "--servers", "1", "--rate-limit", "-5"},
		{"start", "--from", "1.moray", "--to", "2.moray", "--split-half", "--servers", "1", "--complete", "later"},
		{"start", "--from", "1.moray", "--to", "2.moray", "--split-half", "--servers", "1", "--complete", "after:soon"},
		{"start", "--from", "1.moray", "--to", "2.moray", "--split-half", "--servers", "1", "--skip-check", "everything"},
		{"resume", "nosuchjob"},
		{"abort", "nosuchjob"},
		{"revert", "nosuchjob"},
		{"complete", "nosuchjob"},
		{"revert"},
		{"status", "nosuchjob"},
		{"watch", "nosuchjob"},
		{"load", "--router", "notaurl", "--ledger", tmp + "/l1"},
		{"load", "--router", l.Routers[0], "--rate", "-1", "--ledger", tmp + "/l2"},
		{"load", "--router", l.Routers[0], "--keys", "0", "--ledger", tmp + "/l3"},
		{"load", "--router", l.Routers[0], "--duration", "0s", "--ledger", tmp + "/l4"},
		{"load", "--router", l.Routers[0], "--buckets", "1000", "--ledger", tmp + "/l5"},
		{"load", "--router", l.Routers[0]},
		{"verify", "--ledger", tmp + "/none"},
		{"verify", "--ledger", badLedger},
		{"dump", "--pnode", "nosuch", "--out", tmp},
		{"dump", "--pnode", "1.moray", "--out", tmp + "/none"},
		{"demo", "--strategy", "magic"},
		{"demo", "--rows", "-1"},
		{"router", "--listen", "bad:addr:x"},
		{"router", "--token-file", tmp + "/none"},
		{"jobs", "--etcd", "http://127.0.0.1:1"},
	}
	for _, args := range cases {
		_, stderr, ok := run(t, l.env(), args...)
		msg := strings.TrimSpace(stderr)
		switch {
		case ok:
			t.Errorf("%v succeeded", args)
		case strings.Count(msg, "\n") != 0 || !strings.HasPrefix(msg, "reshard: ") || len(msg) < 15:
			t.Errorf("%v: not one clear line: %q", args, stderr)
		case strings.Contains(stderr, secret):
			t.Errorf("%v: the error shows the password: %q", args, stderr)
		}
		if after := state(); after != before {
			t.Fatalf("%v changed state", args)
		}
	}
}
