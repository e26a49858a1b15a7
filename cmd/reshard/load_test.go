package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reshard/reshard/load"
	"github.com/reshard/reshard/postgres"
)

// Load for 30s through two routers, then verify: nothing lost. Then damage
// the shards by hand and check verify notices each kind of damage.
func TestLoadThenVerify(t *testing.T) {
	if testing.Short() {
		t.Skip("30s load run")
	}
	up := labUp(t, "--shards", "2", "--peers", "1", "--routers", "2", "--vnodes", "256")
	env := up.env()
	var out, stderr string
	var ok bool
	ledger := filepath.Join(t.TempDir(), "ledger.jsonl")
	args := []string{"load", "--duration", "30s", "--rate", "300", "--keys", "1000", "--ledger", ledger, "--json"}
	for _, r := range up.Routers {
		args = append(args, "--router", r)
	}
	out, stderr, ok = run(t, env, args...)
	if !ok {
		t.Fatalf("load: %s", stderr)
	}
	var sum load.Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("load summary %q: %v", out, err)
	}
	if sum.AckedWrites < 3000 || sum.ClientErrors != 0 || sum.Ops["get"] == 0 || sum.Ops["delete"] == 0 {
		t.Fatalf("load summary: %+v", sum)
	}
	if !strings.Contains(stderr, "load:  10s") {
		t.Errorf("no progress lines on stderr: %q", stderr)
	}
	out, stderr, ok = run(t, env, "verify", "--ledger", ledger, "--json")
	var rep load.Report
	if json.Unmarshal([]byte(out), &rep); !ok || !rep.OK() || rep.Checked < 500 {
		t.Fatalf("verify after load: %s %s", out, stderr)
	}

	// Damage: lose one acknowledged put, and put a row on a shard that
	// does not own its vnode.
	entries, err := load.ReadLedger(ledger)
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]load.Entry{}
	for _, e := range entries {
		last[e.Bucket+" "+e.Key] = e
	}
	var victim load.Entry
	for _, e := range last {
		if e.Op == "put" && e.Status == load.Acked {
			victim = e
			break
		}
	}
	ctx := context.Background()
	for _, sh := range up.Shards {
		conn, err := postgres.Connect(ctx, sh.Peers[0].DSN)
		if err != nil {
			t.Fatal(err)
		}
		var sql string
		if sh.Name == "2.moray" {
			// Put a row of a vnode that 1.moray owns onto 2.moray.
			sql = fmt.Sprintf(`alter table %[1]s disable trigger reshard_fence;
				delete from %[1]s where _key = '%[2]s';
				insert into %[1]s (_key, _value, _etag, _mtime, _vnode) values ('misplaced', '{}', 'e', 0, 0);
				alter table %[1]s enable trigger reshard_fence;`, victim.Bucket, victim.Key)
		} else {
			sql = fmt.Sprintf(`alter table %[1]s disable trigger reshard_fence;
				delete from %[1]s where _key = '%[2]s';
				alter table %[1]s enable trigger reshard_fence;`, victim.Bucket, victim.Key)
		}
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
	}
	out, stderr, ok = run(t, env, "verify", "--ledger", ledger, "--json")
	rep = load.Report{}
	json.Unmarshal([]byte(out), &rep)
	if ok || rep.Missing != 1 || rep.Misplaced != 1 || rep.Stale != 0 || !strings.Contains(stderr, "verify failed") {
		t.Fatalf("verify after damage: ok=%v %s %s", ok, out, stderr)
	}
	if _, stderr, ok := run(t, env, "verify", "--ledger", filepath.Join(t.TempDir(), "none")); ok || !strings.Contains(stderr, "no such file") {
		t.Fatalf("verify without a ledger: %s", stderr)
	}
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	os.WriteFile(bad, []byte("{not json\n"), 0o644)
	if _, stderr, ok := run(t, env, "verify", "--ledger", bad); ok || !strings.Contains(stderr, "ledger line 1") {
		t.Fatalf("verify with a malformed ledger: %s", stderr)
	}
}
