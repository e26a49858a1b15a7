package trigger_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/reshard/reshard/lab/labtest"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/shard"
	"github.com/reshard/reshard/trigger"
)

func recordDeleteLog(t testing.TB) string {
	b, err := os.ReadFile("testdata/recordDeleteLog.js")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func load(t testing.TB, pre, post []string) *trigger.Set {
	t.Helper()
	p, _ := json.Marshal(pre)
	q, _ := json.Marshal(post)
	s, err := trigger.Load(string(p), string(q))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func jsonList(srcs ...string) []json.RawMessage {
	out := make([]json.RawMessage, len(srcs))
	for i, s := range srcs {
		out[i], _ = json.Marshal(s)
	}
	return out
}

// TestModules checks the crc and microtime modules against values npm
// crc@0.2.1 and microtime 3.1.1 gave in node.
func TestModules(t *testing.T) {
	s := load(t, []string{`function (req, cb) {
		var crc = require('crc');
		var us = require('microtime').now();
		var st = require('microtime').nowStruct();
		var strs = ['', 'hello', 'h\u00e9llo w\u00f6rld \ud83c\udf89', '{"a":1}'];
		req.value.out = strs.map(function (x) {
			return [x, crc.crc8(x), crc.crcArc(x), crc.crcModbusString(x), crc.crc16(x), crc.fcs16(x),
				crc.crc32(x), crc.hex32(crc.crc32(x)), crc.hex16(crc.crc16(x)), crc.hex8(crc.crc8(x))];
		});
		req.value.more = [crc.buffer.crc32([104,105]), crc.buffer.crc16([104,105]), crc.buffer.crc8([104,105]),
			crc.crcModbusHex([104,105]), crc.crc32(123), crc.hex32(-1), crc.hex32('x'), crc.hex8(300)];
		req.value.time = [typeof (us), Math.abs(us / 1000 - Date.now()) < 5000, st.length,
			Math.abs(require('microtime').nowDouble() * 1000 - Date.now()) < 5000];
		cb();
	}`}, nil)
	r := &trigger.Request{Bucket: "b", Key: "k", Value: `{}`}
	if err := s.RunPre(context.Background(), nil, r); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Out  [][]any `json:"out"`
		More []any   `json:"more"`
		Time []any   `json:"time"`
	}
	if err := json.Unmarshal([]byte(r.Value), &got); err != nil {
		t.Fatal(err)
	}
	want := `[["",0,0,65535,0,0,0,"00000000","0000","00"],` +
		`["hello",4,13522,13558,50018,13501,907060870,"3610A686","C362","04"],` +
		`["héllo wörld 🎉",180,50293,50654,9124,44953,1110777970,"42352072","23A4","B4"],` +
		`["{\"a\":1}",95,35215,35220,33623,34966,1444654255,"561BACAF","8357","5F"]]`
	if b, _ := json.Marshal(got.Out); string(b) != want {
		t.Errorf("crc:\n got %s\nwant %s", b, want)
	}
	if b, _ := json.Marshal(got.More); string(b) != `[-661443924,32524,205,24302,0,"FFFFFFFF","00000000","2C"]` {
		t.Errorf("crc buffer and odd arguments: %s", b)
	}
	if b, _ := json.Marshal(got.Time); string(b) != `["number",true,2,true]` {
		t.Errorf("microtime: %s", b)
	}
}

// TestValidate checks what createBucket stores and refuses, as Moray does.
func TestValidate(t *testing.T) {
	pre, post, err := trigger.Validate(jsonList("function a(req, cb) { cb(); }"), jsonList("(function (req, cb) { cb(); })", "  (r, cb) => cb()  "))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal([][]string{pre, post}); string(b) != `[["function a(req, cb) { cb(); }"],["function (req, cb) { cb(); }","(r, cb) =\u003e cb()"]]` {
		t.Errorf("stored texts: %s", b)
	}
	for _, c := range []struct {
		pre, post []json.RawMessage
		msg       string
	}{
		{jsonList("function ("), nil, "trigger not function must be [Function]"},
		{nil, jsonList("1"), "post must be [Function]"},
		{[]json.RawMessage{json.RawMessage("2")}, jsonList("function () {}"), "pre must be [Function]"},
		{jsonList("'a string'"), jsonList("{}"), "post must be [Function]"},
		{jsonList("[object Object]"), nil, "trigger not function must be [Function]"},
	} {
		_, _, err := trigger.Validate(c.pre, c.post)
		var te *trigger.Error
		if !errors.As(err, &te) || te.Name != "NotFunctionError" || te.Message != c.msg {
			t.Errorf("Validate(%s, %s): %v, want NotFunctionError %q", c.pre, c.post, err, c.msg)
		}
	}
}

func TestRun(t *testing.T) {
	ctx := context.Background()
	dsn := labtest.Postgres(t)
	conn, err := postgres.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, `create table manta_delete_log (_id serial, _key text primary key, _value text not null,
		_etag char(8) not null, _mtime bigint not null, _vnode bigint, objectid text);
		create table manta_fastdelete_queue (_id serial, _key text primary key, _value text not null,
		_etag char(8) not null, _mtime bigint not null, _vnode bigint);
		create table kinds (i int, b bigint, n numeric, f float8, ok bool, j jsonb, a text[], ia int[], ts timestamptz, t text)`); err != nil {
		t.Fatal(err)
	}
	inTx := func(t *testing.T, f func(tx pgx.Tx) error) error {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if err := f(tx); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}
	failsWith := func(t *testing.T, err error, name, msg string) {
		t.Helper()
		var te *trigger.Error
		if !errors.As(err, &te) || te.Name != name || !strings.Contains(te.Message, msg) {
			t.Errorf("error %v, want %s containing %q", err, name, msg)
		}
	}

	t.Run("recordDeleteLog", func(t *testing.T) {
		s := load(t, nil, []string{recordDeleteLog(t)})
		prev := `{"objectId":"0b1e3f2a-7c4d-4e5f-8a9b-000000000001","key":"/a/stor/x","sharks":[]}`
		for _, c := range []struct {
			headers, value string
			table          string
		}{
			{`{"x-muskie-prev-metadata":` + prev + `}`, `{"objectId":"0b1e3f2a-7c4d-4e5f-8a9b-000000000002"}`, "manta_delete_log"},
			{`{"x-muskie-prev-metadata":` + prev + `,"x-muskie-snaplinks-disabled":true}`, "", "manta_fastdelete_queue"},
			{`{"x-muskie-prev-metadata":` + prev + `}`, `{"objectId":"0b1e3f2a-7c4d-4e5f-8a9b-000000000001"}`, ""}, // same object
			{``, `{"objectId":"0b1e3f2a-7c4d-4e5f-8a9b-000000000003"}`, ""},                                        // no header
		} {
			conn.Exec(ctx, `truncate manta_delete_log, manta_fastdelete_queue`)
			id := int64(7)
			err := inTx(t, func(tx pgx.Tx) error {
				return s.RunPost(ctx, tx, &trigger.Request{Bucket: "manta", Key: "/a/stor/x", Value: c.value,
					Headers: json.RawMessage(c.headers), ID: &id})
			})
			if err != nil {
				t.Fatal(err)
			}
			var n1, n2 int
			conn.QueryRow(ctx, `select (select count(*) from manta_delete_log), (select count(*) from manta_fastdelete_queue)`).Scan(&n1, &n2)
			want := map[string][2]int{"manta_delete_log": {1, 0}, "manta_fastdelete_queue": {0, 1}, "": {0, 0}}[c.table]
			if [2]int{n1, n2} != want {
				t.Errorf("%s %s: rows %d, %d, want %v", c.headers, c.value, n1, n2, want)
			}
			if c.table == "manta_delete_log" {
				var key, value, etag, oid string
				var mtime int64
				conn.QueryRow(ctx, `select _key, _value, _etag, _mtime, objectid from manta_delete_log`).Scan(&key, &value, &etag, &mtime, &oid)
				if value != prev || etag != shard.MorayEtag(prev) || oid != "0b1e3f2a-7c4d-4e5f-8a9b-000000000001" ||
					key != "/0b1e3f2a-7c4d-4e5f-8a9b-000000000001/"+itoa(mtime) || time.Since(time.UnixMilli(mtime)).Abs() > time.Minute {
					t.Errorf("delete log row: %s %s %s %d %s", key, value, etag, mtime, oid)
				}
			}
		}
	})

	t.Run("pre changes key and value", func(t *testing.T) {
		s := load(t, []string{
			`function (req, cb) { req.value.n = (req.value.n || 0) + 1; req.value.update = req.update; cb(); }`,
			`function (req, cb) { req.key = req.key + '-x'; req.value.bucket = req.bucket; req.value.h = req.headers; req.value.s = req.schema; cb(null); }`,
		}, nil)
		r := &trigger.Request{Bucket: "b", Key: "k", Value: `{"n":1,"vnode":3}`, Schema: `{"n":{"type":"number"}}`,
			Headers: json.RawMessage(`{"ignored":"by pre, as in Moray"}`), Update: true}
		if err := s.RunPre(ctx, nil, r); err != nil {
			t.Fatal(err)
		}
		if r.Key != "k-x" || r.Value != `{"n":2,"vnode":3,"update":true,"bucket":"b","h":{},"s":{"n":{"type":"number"}}}` {
			t.Errorf("pre left key %q value %s", r.Key, r.Value)
		}
	})

	t.Run("post sees id, value and headers", func(t *testing.T) {
		s := load(t, nil, []string{`function (req, cb) {
			var q = req.pg.query('insert into kinds (t) values ($1)', [JSON.stringify([req.id, req.key, req.value, req.headers, req.update, typeof (req.log.debug)])]);
			q.on('error', cb);
			q.on('end', function () { cb(); });
		}`})
		id, snap := int64(42), int64(9)
		err := inTx(t, func(tx pgx.Tx) error {
			if err := s.RunPost(ctx, tx, &trigger.Request{Bucket: "b", Key: "k", Value: `{"a":1}`, ID: &id, TxnSnap: &snap,
				Headers: json.RawMessage(`{"h":"v"}`)}); err != nil {
				return err
			}
			// A delete: no value, the deleted row's id.
			return s.RunPost(ctx, tx, &trigger.Request{Bucket: "b", Key: "gone", ID: &id})
		})
		if err != nil {
			t.Fatal(err)
		}
		rows, _ := conn.Query(ctx, `select t from kinds where t is not null order by t`)
		got, _ := pgx.CollectRows(rows, pgx.RowTo[string])
		conn.Exec(ctx, `truncate kinds`)
		want := []string{`[42,"gone",null,{},false,"function"]`, `[42,"k",{"a":1,"_txn_snap":9,"_id":42},{"h":"v"},false,"function"]`}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("post saw:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})

	t.Run("query rows as node-postgres parses them", func(t *testing.T) {
		s := load(t, []string{`function (req, cb) {
			var rows = [];
			var q = req.pg.query("insert into kinds values (1, 9007199254740993, 1.5, 2.25, true, '{\"x\":[1]}', '{a,\"b c\",NULL}', '{1,2}', '2024-01-02T03:04:05.678Z', null) returning *");
			q.on('row', function (r) { rows.push(r); });
			q.once('end', function (res) {
				var r = rows[0];
				req.value.row = [r.i, r.b, r.n, r.f, r.ok, r.j, r.a, r.ia, r.ts instanceof Date && r.ts.toISOString(), r.t];
				req.value.res = [res.command, res.rowCount];
				req.pg.query('select $1::int + $2::int as s, $3::text as d, $4::text[] as a', [2, '3', {k: 'v'}, ['x"y', null]])
					.on('row', function (r2) { req.value.args = r2; })
					.on('end', function () { cb(); });
			});
		}`}, nil)
		r := &trigger.Request{Bucket: "b", Key: "k", Value: `{}`}
		if err := inTx(t, func(tx pgx.Tx) error { return s.RunPre(ctx, tx, r) }); err != nil {
			t.Fatal(err)
		}
		want := `{"row":[1,"9007199254740993",1.5,2.25,true,{"x":[1]},["a","b c",null],[1,2],"2024-01-02T03:04:05.678Z",null],` +
			`"res":["INSERT",1],"args":{"s":5,"d":"{\"k\":\"v\"}","a":["x\"y",null]}}`
		if r.Value != want {
			t.Errorf("got  %s\nwant %s", r.Value, want)
		}
	})

	t.Run("failures", func(t *testing.T) {
		old := trigger.SetTimeout(300 * time.Millisecond)
		defer trigger.SetTimeout(old)
		for _, c := range []struct {
			src, name, msg string
		}{
			{`function (req, cb) { cb(new Error('boom')); }`, "Error", "boom"},
			{`function (req, cb) { var e = new Error('custom'); e.name = 'MyError'; cb(e); }`, "MyError", "custom"},
			{`function (req, cb) { throw new TypeError('thrown'); }`, "TypeError", "thrown"},
			{`function (req, cb) { try { require('fs'); } catch (e) { cb(e); return; } cb(); }`, "InvalidRequireError", `"fs" is not a permitted module`},
			{`function (req, cb) { require('child_process'); cb(); }`, "InvalidRequireError", `"child_process" is not a permitted module`},
			{`function (req, cb) { }`, "QueryTimeoutError", "never finish"},
			{`function (req, cb) { while (true) {} }`, "QueryTimeoutError", "did not finish within 300ms"},
			{`function (req, cb) { req.pg.query('select pg_sleep(5)').on('end', function () { cb(); }); }`, "QueryTimeoutError", "did not finish within"},
			{`function (req, cb) { req.pg.query('select nope from nowhere').on('error', cb); }`, "error", `relation "nowhere" does not exist`},
			{`function (req, cb) { req.pg.query('select 1/0'); }`, "error", "division by zero"}, // 'error' with no listener throws
			{`function (req, cb) { cb(typeof (process) + typeof (setTimeout) + typeof (console)); }`, "Error", "undefinedundefinedundefined"},
		} {
			s := load(t, []string{c.src}, nil)
			// A query cut off by the bound closes its connection, as pgx
			// does on any cancelled query: each case gets a fresh one.
			conn.Close(ctx)
			if conn, err = postgres.Connect(ctx, dsn); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err := inTx(t, func(tx pgx.Tx) error { return s.RunPre(ctx, tx, &trigger.Request{Bucket: "b", Key: "k", Value: `{}`}) })
			failsWith(t, err, c.name, c.msg)
			if time.Since(start) > 3*time.Second {
				t.Errorf("%s took %s", c.src, time.Since(start))
			}
		}
		// A trigger passing on its query's error keeps PostgreSQL's code.
		s := load(t, nil, []string{`function (req, cb) { req.pg.query("insert into kinds (i) values ('x')").on('error', cb); }`})
		err := inTx(t, func(tx pgx.Tx) error { return s.RunPost(ctx, tx, &trigger.Request{Bucket: "b", Key: "k"}) })
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "22P02" {
			t.Errorf("query error passed on: %v", err)
		}
		// The second call of a callback is ignored, and the chain goes on.
		s = load(t, []string{`function (req, cb) { cb(); cb(new Error('late')); }`, `function (req, cb) { req.value.second = true; cb(); }`}, nil)
		r := &trigger.Request{Bucket: "b", Key: "k", Value: `{}`}
		if err := s.RunPre(ctx, nil, r); err != nil || r.Value != `{"second":true}` {
			t.Errorf("double callback: %v %s", err, r.Value)
		}
	})
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

// BenchmarkRecordDeleteLog is libmanta's trigger without the header that
// makes it write: the cost of running a trigger at all.
func BenchmarkRecordDeleteLog(b *testing.B) {
	s := load(b, nil, []string{recordDeleteLog(b)})
	id := int64(1)
	r := &trigger.Request{Bucket: "manta", Key: "/a/stor/x", Value: `{"objectId":"x"}`, ID: &id}
	for b.Loop() {
		if err := s.RunPost(context.Background(), nil, r); err != nil {
			b.Fatal(err)
		}
	}
}
