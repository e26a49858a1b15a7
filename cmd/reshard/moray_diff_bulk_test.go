package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// diffTriggerSQL installs a versioned PL/pgSQL trigger the way libmanta
// installs its directory-count trigger: one sql request of several
// statements, each file its own BEGIN ... COMMIT, an advisory lock, a
// function defined with dollar quoting, and a SELECT of an installer
// function that returns what it did. Only C-style comments: Moray removes
// line breaks before it sends a statement (MORAY-317), so every line
// after the first starts with white space.
const diffTriggerSQL = `/* A versioned trigger, installed as libmanta installs its own. */
BEGIN;
    SELECT pg_advisory_xact_lock(4242, 17) AS locked;
    CREATE OR REPLACE FUNCTION diff_touch_v1() RETURNS TRIGGER AS
    $body$
    BEGIN
        RETURN NULL; /* nothing to do: the test looks for the trigger */
    END;
    $body$ LANGUAGE plpgsql;
    CREATE OR REPLACE FUNCTION diff_install_trigger(tbl varchar(128),
        trig varchar(128), version int, proc varchar(128))
        RETURNS varchar(128) AS
    $body$
    BEGIN
        RAISE NOTICE 'checking trigger % on %', trig, tbl;
        IF EXISTS (SELECT * FROM information_schema.triggers
            WHERE event_object_table = tbl AND trigger_name = trig AND
            substring(action_statement from '_v(\d+)\(\)$')::integer >= version)
        THEN
            RETURN 'no changes needed';
        END IF;
        EXECUTE 'DROP TRIGGER IF EXISTS ' || quote_ident(trig) || ' ON ' || quote_ident(tbl);
        EXECUTE 'CREATE TRIGGER ' || quote_ident(trig) ||
            ' AFTER INSERT OR DELETE ON ' || quote_ident(tbl) ||
            ' FOR EACH ROW EXECUTE PROCEDURE ' || quote_ident(proc) || '_v' || version || '()';
        RETURN 'installed version ' || version;
    END;
    $body$ LANGUAGE plpgsql;
COMMIT;
    BEGIN;
    SELECT diff_install_trigger('diff_ordered', 'diff_touch', 1, 'diff_touch');
    COMMIT;`

// rpc adds a raw RPC: the fast client sends args as they are, so that
// arguments the moray client would refuse reach the server.
func (d *diffOps) rpc(desc, method string, args ...any) {
	raws := make([]json.RawMessage, len(args))
	for i, a := range args {
		raws[i] = jsonText(a)
	}
	d.add(diffOp{Op: "rpc", Desc: method + ": " + desc, Method: method, Args: raws})
}

// badArgs adds a raw RPC that Moray's argument checks refuse: reshard
// answers it with Moray's checks, not electric-moray's coarser typeof
// checks, so it is compared with the bare Moray's answer.
func (d *diffOps) badArgs(desc, method string, args ...any) {
	d.rpc(desc, method, args...)
	d.ops[len(d.ops)-1].Op = "raw"
}

// bulkOps are the RPCs that reach more than one object. Through
// electric-moray, sql goes to every shard (the lab and the reference have
// one each), updateObjects and deleteMany are refused after electric-
// moray's own argument check, and reindexObjects, listen and unlisten are
// RPCs it does not serve.
//
// sql answers hold whatever the statement selects, and some of that is
// the database's own (now(), oids, backend pids, sequence values): the
// statements here select only what two databases with the same history
// share, so answers are compared whole. Rows and DDL that sql changes are
// compared by the test's rows and ddl comparisons.
func (d *diffOps) bulkOps() {
	none := []any{}
	empty := jsonObj()

	// sql: rows, as node-postgres parses PostgreSQL's text output.
	d.rpc("one row", "sql", "select 1 as x", none, empty)
	d.rpc("no rows", "sql", "select 1 as x where false", none, empty)
	d.rpc("several statements, no values: simple protocol", "sql", "select 1 as a; select 2 as b, 'two' as c", none, empty)
	d.rpc("scalar types", "sql", `select 9007199254740993::int8 as i8, 32767::int2 as i2, 7::oid as o,
		1.50::numeric as num, 'NaN'::numeric as nan, 2.5::float8 as f8, 0.1::float4 as f4, 'Infinity'::float8 as inf,
		true as t, false as f, null as n, 'text ✓ "q" \'::text as s, ''::varchar as e,
		'{"b":1.0,"a":[1e2,"x"],"c":null}'::jsonb as jb, '{"z":1,"a":2}'::json as j, '[1, 2]'::json as ja,
		'2020-01-02'::date as d, '2020-01-02 03:04:05.678901+05:30'::timestamptz as tz, '2020-01-02 03:04:05.5'::timestamp as ts,
		'\x00ff41'::bytea as by, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid as u, pg_sleep(0) as v,
		1 as dup, 2 as dup`, none, empty)
	d.rpc("array types", "sql", `select '{1,NULL,3}'::int4[] as i4, '{9007199254740993}'::int8[] as i8,
		'{1.5,NaN}'::numeric[] as num, '{t,f,NULL}'::bool[] as b, '{"a,b","c\"d",NULL,"NULL",""}'::text[] as s,
		'{{1,2},{3,4}}'::int[] as nested, '{}'::int[] as empty, '[0:1]={5,6}'::int[] as dims, '[1:1][1:2]={{1,2}}'::int[] as dims2, '[0:1]={a,b}'::text[] as dims3,
		'{2020-01-02}'::date[] as d, array['{"a":1}'::json] as j, array['{"a":1}'::jsonb] as jb,
		'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'::uuid[] as u`, none, empty)
	d.rpc("values of every JSON kind: text parameters, as node-postgres prepares them", "sql",
		"select $1::text as s, $2::int as n, $3::text as obj, $4::text as arr, $5::text as bool, $6::numeric as f, $7::text as nul, $8::text as big, $9::jsonb as jb",
		[]any{"x", 2, jsonObj("k", []any{1, "a"}, "u", "é\"\\"), []any{1, "a,b", nil, []any{"in"}, jsonObj("o", 1)}, true, 1.5, nil, raw("1e21"), jsonObj("z", 1.0, "a", 2)}, empty)
	d.rpc("a value for an int parameter", "sql", "select $1::int + 1 as n", []any{41}, empty)
	d.rpc("line breaks are removed: a -- comment runs to the end", "sql", "select 1 as x -- the rest is a comment\n, 2 as y", none, empty)
	d.rpc("line breaks are removed, not replaced", "sql", "select 1\nas x", none, empty)
	d.rpc("several statements with values", "sql", "select 1 as a; select $1::int as b", []any{1}, empty)
	d.rpc("syntax error", "sql", "selec 1", none, empty)
	d.rpc("division by zero", "sql", "select 1/0", none, empty)
	d.rpc("missing parameter", "sql", "select $1::int", none, empty)
	d.rpc("unknown table", "sql", "select * from nosuchtable", none, empty)
	d.rpc("update a bucket's rows", "sql", "update diff_types set s = $1 where _key = $2", []any{"set by sql", "t17"}, empty)
	d.rpc("unique violation", "sql", "update diff_types set u = 'u3' where _key = 't20'", none, empty)
	d.rpc("read what sql wrote", "sql", "select _key, s from diff_types where _key in ('t17', 't20') order by _key", none, empty)
	d.rpc("a failed statement rolls back", "sql", "update diff_types set s = 'rolled back' where _key = 't17'; select 1/0", none, empty)
	d.rpc("read after the rollback", "sql", "select s from diff_types where _key = 't17'", none, empty)
	d.rpc("install a versioned trigger, as libmanta does", "sql", diffTriggerSQL, none, jsonObj("readOnlyOverride", true))
	d.rpc("install it again: no changes needed", "sql", diffTriggerSQL, none, jsonObj("readOnlyOverride", true))
	// libmanta's own trigger setup, when a copy of its lib directory is at
	// hand (it is not on npm's registry as reshard reaches it).
	lib := os.Getenv("RESHARD_LIBMANTA_LIB")
	if lib == "" {
		lib = "/tmp/libmanta-peek/package/lib"
	}
	update, err1 := os.ReadFile(filepath.Join(lib, "trigger_update.plpgsql"))
	count, err2 := os.ReadFile(filepath.Join(lib, "trigger_dircount.plpgsql"))
	if err1 == nil && err2 == nil {
		d.rpc("libmanta's directory-count trigger", "sql", string(update)+"\n"+string(count), none, jsonObj("readOnlyOverride", true))
	}
	d.rpc("the trigger is there", "sql", "select trigger_name, event_manipulation, action_statement from information_schema.triggers where trigger_name = 'diff_touch' order by event_manipulation", none, empty)

	// sql: arguments and options.
	d.badArgs("statement not a string", "sql", 5, none, empty)
	d.badArgs("empty statement", "sql", "", none, empty)
	d.badArgs("values not an array", "sql", "select 1", empty, empty)
	d.badArgs("values null", "sql", "select 1", nil, empty)
	d.badArgs("options null", "sql", "select 1", none, nil)
	d.badArgs("options a string", "sql", "select 1", none, "x")
	d.badArgs("options an array (the client rebuilds options)", "sql", "select 1 as x", none, []any{})
	d.badArgs("two arguments", "sql", "select 1", none)
	d.badArgs("no arguments", "sql")
	d.badArgs("timeout not an integer", "sql", "select 1", none, jsonObj("timeout", 1.5))
	d.badArgs("timeout negative", "sql", "select 1", none, jsonObj("timeout", -1))
	d.rpc("timeout 0", "sql", "select 1 as x", none, jsonObj("timeout", 0))
	d.rpc("timeout not reached", "sql", "select 1 as x", none, jsonObj("timeout", 60000))
	d.badArgs("req_id not a string", "sql", "select 1", none, jsonObj("req_id", 5))
	d.badArgs("req_id not a UUID", "sql", "select 1", none, jsonObj("req_id", "nope"))
	d.badArgs("req_id empty (the client makes one)", "sql", "select 1 as x", none, jsonObj("req_id", ""))
	d.rpc("req_id a UUID", "sql", "select 1 as x", none, jsonObj("req_id", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"))
	d.badArgs("options Moray does not know", "sql", "select 1 as x", none, jsonObj("noCache", 3, "limit", "x"))

	// updateObjects and deleteMany: as Moray answers them (reshard is one
	// Moray to its clients for these), sorted by _key so that a limit
	// picks the same rows on both sides.
	byKey := func(kv ...any) json.RawMessage {
		return jsonObj(append([]any{"sort", jsonObj("attribute", "_key", "order", "ASC")}, kv...)...)
	}
	filters := []string{"(s=alpha)", "(n>=10)", "(b=true)", "(sa=a)", "(na<=2)", "(ba=false)", "(u=*)", "(&(s=a*)(!(n=1)))", "(nosuchfield=1)", "((bad"}
	for _, f := range filters {
		d.rpc("filter "+f, "updateObjects", "diff_types", jsonObj("n", 5), f, byKey("limit", 2))
	}
	d.rpc("no match", "updateObjects", "diff_types", jsonObj("s", "none"), "(s=no such value)", empty)
	d.rpc("a field that is not indexed", "updateObjects", "diff_types", jsonObj("nosuchfield", 1), "(n=5)", empty)
	d.rpc("an index field set to null", "updateObjects", "diff_types", jsonObj("n", nil), "(n=5)", empty)
	d.rpc("an array field", "updateObjects", "diff_types", jsonObj("sa", []any{"p", "q"}), "(n=5)", byKey("limit", 3))
	d.rpc("a value the type refuses", "updateObjects", "diff_types", jsonObj("b", "maybe"), "(n=5)", empty)
	d.rpc("limit as a string, offset", "updateObjects", "diff_types", jsonObj("s", "offset"), "(n=*)", byKey("limit", "2", "offset", 1))
	d.rpc("read what updateObjects wrote", "sql", "select _key, n, s, sa, _value from diff_types where _etag like 'u%' order by _key", none, empty)
	for _, f := range filters {
		d.rpc("filter "+f, "deleteMany", "diff_types", f, byKey("limit", 2))
	}
	d.rpc("no match", "deleteMany", "diff_types", "(s=no such value)", empty)
	d.rpc("missing bucket", "updateObjects", "nosuchbucket", jsonObj("n", 5), "(n=1)", empty)
	d.rpc("no fields", "updateObjects", "diff_types", empty, "(n=1)", empty)
	d.badArgs("fields an array", "updateObjects", "diff_types", []any{}, "(n=1)", empty)
	d.badArgs("fields null", "updateObjects", "diff_types", nil, "(n=1)", empty)
	d.badArgs("fields a string", "updateObjects", "diff_types", "n", "(n=1)", empty)
	d.badArgs("bucket a number", "updateObjects", 5, jsonObj("n", 5), "(n=1)", empty)
	d.badArgs("filter a number", "updateObjects", "diff_types", jsonObj("n", 5), 7, empty)
	d.badArgs("options null", "updateObjects", "diff_types", jsonObj("n", 5), "(n=1)", nil)
	d.badArgs("options a boolean", "updateObjects", "diff_types", jsonObj("n", 5), "(n=1)", true)
	d.badArgs("three arguments", "updateObjects", "diff_types", jsonObj("n", 5), "(n=1)")
	d.rpc("missing bucket", "deleteMany", "nosuchbucket", "(n=1)", empty)
	d.badArgs("bucket null", "deleteMany", nil, "(n=1)", empty)
	d.badArgs("filter an object", "deleteMany", "diff_types", empty, empty)
	d.badArgs("options a number", "deleteMany", "diff_types", "(n=1)", 3)
	d.badArgs("options an array", "deleteMany", "diff_types", "(n=1)", []any{})
	d.badArgs("two arguments", "deleteMany", "diff_types", "(n=1)")
	d.badArgs("four arguments", "deleteMany", "diff_types", "(n=1)", empty, empty)

	// batch: update and deleteMany requests, in the batch's transaction.
	d.batch("a put, an update and a deleteMany",
		d.bput("diff_types", "tb1", jsonText(jsonObj("n", 77, "s", "batch")), ""),
		diffOp{Bucket: "diff_types", Operation: "update", Filter: "(n=77)", Fields: jsonText(jsonObj("s", "batch-updated"))},
		diffOp{Bucket: "diff_types", Operation: "deleteMany", Filter: "(s=batch-updated)"})
	d.batch("an update that fails rolls the batch back",
		d.bput("diff_types", "tb2", jsonText(jsonObj("n", 78)), ""),
		diffOp{Bucket: "diff_types", Operation: "update", Filter: "(n=78)", Fields: jsonText(jsonObj("nosuchfield", 1))})

	// reindexObjects after updateBucket adds an index at a new version.
	d.createBucket("for reindexObjects", "diff_reindex", jsonText(jsonObj("index", jsonObj("a", jsonObj("type", "number")), "options", jsonObj("version", 1))))
	for i := 0; i < 5; i++ {
		d.put("before the new index", "diff_reindex", fmt.Sprintf("r%d", i), jsonText(jsonObj("a", i, "b", fmt.Sprintf("v%d", i))), "")
	}
	d.badArgs("add an index at version 2", "updateBucket", "diff_reindex",
		jsonObj("index", jsonObj("a", jsonObj("type", "number"), "b", jsonObj("type", "string")), "options", jsonObj("version", 2)), empty)
	d.rpc("filter on a field being reindexed", "deleteMany", "diff_reindex", "(b=v1)", empty)
	d.rpc("set a field being reindexed", "updateObjects", "diff_reindex", jsonObj("b", "x"), "(a=1)", empty)
	d.rpc("set an index before reindexing", "updateObjects", "diff_reindex", jsonObj("a", 10), "(a=1)", empty)
	d.rpc("2 of 5", "reindexObjects", "diff_reindex", 2, empty)
	d.rpc("the rest", "reindexObjects", "diff_reindex", 10, empty)
	d.rpc("none left", "reindexObjects", "diff_reindex", 10, empty)
	d.rpc("no_count", "reindexObjects", "diff_reindex", 10, jsonObj("no_count", true))
	d.rpc("filter on the reindexed field", "deleteMany", "diff_reindex", "(b=v2)", empty)
	d.put("after reindexing", "diff_reindex", "r9", jsonText(jsonObj("a", 9, "b", "v9")), "")

	// reindexObjects, and unlisten of an id no listen has (listen itself
	// runs until unlisten, which the one-request-at-a-time ops cannot do:
	// router/moray_bulkobjects_test.go tests it).
	d.rpc("nothing to reindex", "reindexObjects", "diff_types", 100, empty)
	d.rpc("count 0", "reindexObjects", "diff_types", 0, empty)
	d.rpc("missing bucket", "reindexObjects", "nosuchbucket", 5, empty)
	d.badArgs("no arguments", "reindexObjects")
	d.rpc("an id", "unlisten", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", empty)
}
