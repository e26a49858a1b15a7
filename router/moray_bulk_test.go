package router_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/fast"
)

func remoteErr(err error) *fast.RemoteError {
	var re *fast.RemoteError
	if errors.As(err, &re) {
		return re
	}
	return &fast.RemoteError{Name: "(not a remote error)", Message: errString(err)}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// libmantaSQL is libmanta's directory-count trigger setup, as its
// setupMantaTrigger sends it (trigger_update.plpgsql, a line break, then
// trigger_dircount.plpgsql), when a copy of libmanta's lib directory is
// at hand: RESHARD_LIBMANTA_LIB, or the unpacked npm tarball in /tmp.
func libmantaSQL(t *testing.T) string {
	dir := os.Getenv("RESHARD_LIBMANTA_LIB")
	if dir == "" {
		dir = "/tmp/libmanta-peek/package/lib"
	}
	update, err1 := os.ReadFile(filepath.Join(dir, "trigger_update.plpgsql"))
	count, err2 := os.ReadFile(filepath.Join(dir, "trigger_dircount.plpgsql"))
	if err1 != nil || err2 != nil {
		t.Logf("libmanta's trigger SQL is not in %s: its install is not tried (set RESHARD_LIBMANTA_LIB)", dir)
		return ""
	}
	return string(update) + "\n" + string(count)
}

// The sql RPC on a two-shard ring: every shard runs it and streams its
// rows, errors come back as electric-moray's MultiError, a running
// reshard refuses it unless readOnlyOverride is set, and a statement
// that changes its session leaves no trace on the shard's other work.
func TestMoraySQL(t *testing.T) {
	e := setup(t, "")
	addr := e.serveMoray(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := dialFast(t, addr)
	none := []any{}
	opts := map[string]any{}

	// Moray removes line breaks from the statement, even inside a string.
	out, err := c.Call(ctx, "sql", "select 1 as x, 'a\nb'::text as s, '{1,2}'::int8[] as a", none, opts)
	if err != nil || len(out) != 2 || string(out[0]) != `{"x":1,"s":"ab","a":["1","2"]}` || string(out[1]) != string(out[0]) {
		t.Fatalf("select on two shards: %s %v", out, err)
	}
	out, err = c.Call(ctx, "sql", "select $1::int + 1 as n, $2::text as o", []any{41, map[string]any{"k": []any{1, "x"}}}, opts)
	if err != nil || len(out) != 2 || string(out[0]) != `{"n":42,"o":"{\"k\":[1,\"x\"]}"}` {
		t.Fatalf("select with values: %s %v", out, err)
	}

	// Errors: each shard's, gathered.
	_, err = c.Call(ctx, "sql", "selec 1", none, opts)
	if re := remoteErr(err); re.Name != "MultiError" || re.Message != `first of 2 errors: Invalid SQL: syntax error at or near "selec"` {
		t.Fatalf("syntax error: %v", err)
	}
	_, err = c.Call(ctx, "sql", "", none, opts)
	if re := remoteErr(err); re.Name != "InvocationError" || re.Message != `sql expects "statement" (args[0]) to be a nonempty string: statement should NOT be shorter than 1 characters` {
		t.Fatalf("empty statement: %v", err)
	}
	_, err = c.Call(ctx, "sql", 5, none, opts)
	if re := remoteErr(err); re.Name != "InvocationError" || re.Message != `sql expects "statement" (args[0]) to be a nonempty string: statement should be string` {
		t.Fatalf("statement a number: %v", err)
	}
	_, err = c.Call(ctx, "sql", "select pg_sleep(3)", none, map[string]any{"timeout": 200})
	if re := remoteErr(err); re.Name != "MultiError" || re.Message != "first of 2 errors: query timeout: select pg_sleep(3)" {
		t.Fatalf("timeout: %v", err)
	}
	_, err = c.Call(ctx, "sql", "select 1", none, map[string]any{"timeout": "soon"})
	if re := remoteErr(err); re.Name != "InvocationError" || re.Message != `sql expects "options" (args[2]) to be a valid options object: options.timeout should be integer` {
		t.Fatalf("timeout a string: %v", err)
	}

	// A statement that changes its session: the shard's later work must
	// not run with that search_path.
	if _, err := c.Call(ctx, "sql", "set search_path to pg_catalog", none, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(ctx, "createBucket", "manta", map[string]any{"index": map[string]any{"dirname": map[string]any{"type": "string"}}}, opts); err != nil {
		t.Fatalf("createBucket after a SET: %v", err)
	}
	if _, err := c.Call(ctx, "createBucket", "manta_directory_counts", map[string]any{"index": map[string]any{"entries": map[string]any{"type": "number"}}}, opts); err != nil {
		t.Fatal(err)
	}

	// A versioned trigger installed as libmanta installs one.
	script := libmantaSQL(t)
	if script != "" {
		// Twice: PostgreSQL 15 writes "EXECUTE FUNCTION" where libmanta's
		// check looks for "EXECUTE PROCEDURE", so it installs again each
		// time, through Moray too.
		for i := 0; i < 2; i++ {
			out, err := c.Call(ctx, "sql", script, none, map[string]any{"readOnlyOverride": true})
			// Per shard, in whatever order the shards answer: the two
			// advisory locks, then the installer's answer.
			got := map[string]int{}
			for _, r := range out {
				got[string(r)]++
			}
			if err != nil || len(out) != 6 || got[`{"pg_advisory_xact_lock":""}`] != 4 ||
				got[`{"manta_update_versioned_trigger":"installed version 3"}`] != 2 {
				t.Fatalf("libmanta trigger install %d: %s %v", i+1, out, err)
			}
		}
		for _, pn := range []string{"1.moray", "2.moray"} {
			var n int
			if err := e.primary(t, pn).QueryRow(ctx, `select count(*) from information_schema.triggers
				where event_object_table = 'manta' and trigger_name = 'count_directories'`).Scan(&n); err != nil || n != 2 {
				t.Fatalf("%s: count_directories trigger rows %d %v", pn, n, err)
			}
		}
	}

	// With the trigger installed (or not), a put into manta works; with
	// it, the directory is counted on the shard that took the put.
	if _, err := c.Call(ctx, "putObject", "manta", "/acct/stor/d/o", map[string]any{"dirname": "/acct/stor/d"}, opts); err != nil {
		t.Fatalf("putObject into manta: %v", err)
	}
	out, err = c.Call(ctx, "sql", "select _key, entries from manta_directory_counts", none, opts)
	want := []string{}
	if script != "" {
		want = []string{`{"_key":"/acct/stor/d","entries":1}`}
	}
	if err != nil || len(out) != len(want) || (len(want) > 0 && string(out[0]) != want[0]) {
		t.Fatalf("manta_directory_counts after a put: %s %v, want %s", out, err, want)
	}

	// A reshard holds pnodes: refused, unless readOnlyOverride.
	if _, err := e.cli.Put(ctx, etcd.PnodeLockPrefix+"1.moray", "job-sql-test"); err != nil {
		t.Fatal(err)
	}
	_, err = c.Call(ctx, "sql", "select 1", none, opts)
	if re := remoteErr(err); re.Name != "ReadOnlyError" || re.Message != "some vnodes are in read-only mode" {
		t.Fatalf("sql during a reshard: %v", err)
	}
	out, err = c.Call(ctx, "sql", "select 1 as x", none, map[string]any{"readOnlyOverride": true})
	if err != nil || len(out) != 2 {
		t.Fatalf("sql with readOnlyOverride during a reshard: %s %v", out, err)
	}
	if _, err := e.cli.Delete(ctx, etcd.PnodeLockPrefix+"1.moray"); err != nil {
		t.Fatal(err)
	}

	// Moray's argument checks still come first.
	_, err = c.Call(ctx, "deleteMany", "manta", "(dirname=y)", nil)
	if re := remoteErr(err); re.Name != "InvocationError" || re.Message != `deleteMany expects "options" (args[2]) to be a valid options object: options should be object` {
		t.Fatalf("deleteMany with null options: %v", err)
	}
}
