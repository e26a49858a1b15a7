package router_test

// Fuzz targets that send bad input through both front ends, Fast RPC and
// HTTP/JSON, to a router with real shards. Whatever reaches the database,
// the client must get a success or a named client error: over Fast one of
// Moray's error names, never InternalError; over HTTP a 4xx whose JSON
// body names the error, never a 5xx. No answer may carry PostgreSQL's
// own error text. Plain `go test` runs the seeds below and the crashers
// kept in testdata/fuzz; `go test -fuzz FuzzX -parallel 1` searches more.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/fast"
	"github.com/reshard/reshard/lab"
	"github.com/reshard/reshard/trigger"
)

// clientErrorNames are the errors Moray answers a client's mistake with
// (Moray 2.6.1 lib/errors.js, with node-fast's FastError for a call it
// cannot take). MultiError is electric-moray's wrapper of shards' errors;
// its message carries the first part's, checked like any other.
var clientErrorNames = map[string]bool{
	"BucketNotFoundError": true, "BucketConflictError": true, "BucketVersionError": true,
	"EtagConflictError": true, "FieldUpdateError": true, "InvalidBucketConfigError": true,
	"InvalidBucketNameError": true, "InvalidIndexDefinitionError": true, "InvalidIndexTypeError": true,
	"InvalidRequireError": true, "InvalidQueryError": true, "InvocationError": true,
	"NotFunctionError": true, "NotIndexedError": true, "NotNullableError": true,
	"ObjectNotFoundError": true, "SchemaChangeError": true, "UniqueAttributeError": true,
	"FastError": true, "MultiError": true,
}

// postgresText are fragments of PostgreSQL's own error reports, which
// must never reach a client: the SQLSTATE pgx appends, and the openings
// of the messages bad values draw.
var postgresText = []string{"SQLSTATE", "invalid input syntax", "invalid byte sequence", "syntax error at or near",
	"unsupported Unicode escape", "out of range for type", "violates", "pq: ", "ERROR: "}

func leaksPostgres(msg string) string {
	for _, p := range postgresText {
		if strings.Contains(msg, p) {
			return p
		}
	}
	return ""
}

// fuzzIndex is a bucket config with one index of every Moray type, and a
// unique one, so any value finds every column type's parser.
const fuzzIndex = `{"str":{"type":"string"},"strs":{"type":"[string]"},"num":{"type":"number"},"nums":{"type":"[number]"},` +
	`"nrange":{"type":"numrange"},"flag":{"type":"boolean"},"flags":{"type":"[boolean]"},"day":{"type":"date"},` +
	`"days":{"type":"[date]"},"drange":{"type":"daterange"},"addr":{"type":"ip"},"addrs":{"type":"[ip]"},` +
	`"mac":{"type":"mac"},"macs":{"type":"[mac]"},"net":{"type":"subnet"},"nets":{"type":"[subnet]"},` +
	`"uid":{"type":"uuid"},"uniq":{"type":"string","unique":true}}`

// fuzzFields are fuzzIndex's fields, the ones the value fuzzer fills.
var fuzzFields = []string{"str", "strs", "num", "nums", "nrange", "flag", "flags", "day", "days", "drange",
	"addr", "addrs", "mac", "macs", "net", "nets", "uid", "uniq", "unindexed"}

// fuzzBuckets are the buckets every fuzz env has: fz with every index
// type, and Manta's buckets, whose keys hash by directory.
var fuzzBuckets = []string{"fz", "manta", "manta_uploads"}

type fuzzEnv struct {
	*env
	c *fast.Client
}

// fuzzLabEnv names, for `go test -fuzz`'s worker processes, the lab that
// the coordinating process started. A worker runs a router of its own on
// that lab rather than a lab of its own: the fuzzing engine kills a worker
// a second after telling it to stop, too soon for a lab to come down, and
// a lab's processes would inherit the worker's pipes to the coordinator,
// which then waits for them forever.
const fuzzLabEnv = "RESHARD_FUZZ_LAB"

// newFuzzEnv starts a lab, or joins the coordinator's, and a router, and
// creates fuzzBuckets through the Moray front end.
func newFuzzEnv(f *testing.F) *fuzzEnv {
	var e *env
	if dir := os.Getenv(fuzzLabEnv); dir != "" {
		st, err := lab.Load(dir)
		if err != nil {
			f.Fatal(err)
		}
		e = routerOn(f, st, "")
	} else {
		e = setup(f, "")
		// Workers start after the fuzz target has run up to f.Fuzz, with
		// this process's environment.
		os.Setenv(fuzzLabEnv, e.st.Dir)
		f.Cleanup(func() { os.Unsetenv(fuzzLabEnv) })
	}
	fe := &fuzzEnv{env: e, c: dialFast(f, e.serveMoray(f))}
	for _, b := range fuzzBuckets {
		_, err := fe.call("createBucket", b, json.RawMessage(`{"index":`+fuzzIndex+`}`), map[string]any{})
		if err != nil && remoteName(err) != "BucketConflictError" {
			f.Fatalf("createBucket %s: %v", b, err)
		}
	}
	return fe
}

// call is one Fast RPC, bounded so that a hang fails the input.
func (fe *fuzzEnv) call(rpc string, args ...any) ([]json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	return fe.c.Call(ctx, rpc, args...)
}

// moray makes an RPC and fails the input unless the answer is a success
// or a client error from clientErrorNames (or, where extra says so, one
// named otherwise), free of PostgreSQL's text.
func (fe *fuzzEnv) moray(t *testing.T, extra func(name string) bool, rpc string, args ...any) ([]json.RawMessage, *fast.RemoteError) {
	t.Helper()
	out, err := fe.call(rpc, args...)
	if err == nil {
		return out, nil
	}
	var re *fast.RemoteError
	if !errors.As(err, &re) {
		t.Fatalf("%s%s: no answer: %v", rpc, argsText(args), err)
	}
	switch {
	case re.Name == "Error" && re.Message == "Invalid search request, requires either token or hashkey":
		// electric-moray's refusal of a findObjects naming no shard
		// (the router's default, --cross-shard-find refuse).
		return nil, re
	case re.Name == "error":
		// Moray passes a PostgreSQL error on as node-postgres names it
		// (lib/pg.js pgError): the server's message, and no more.
		if re.Message == "" || strings.Contains(re.Message, "SQLSTATE") || strings.Contains(re.Message, "ERROR: ") {
			t.Fatalf("%s%s: error is not a PostgreSQL message as Moray passes it: %s", rpc, argsText(args), re.Message)
		}
		return nil, re
	}
	if !clientErrorNames[re.Name] && (extra == nil || !extra(re.Name)) {
		t.Fatalf("%s%s: %s is not a client error: %s", rpc, argsText(args), re.Name, re.Message)
	}
	if p := leaksPostgres(re.Message); p != "" {
		t.Fatalf("%s%s: %s carries PostgreSQL's text (%q): %s", rpc, argsText(args), re.Name, p, re.Message)
	}
	return nil, re
}

func argsText(args []any) string {
	b, _ := json.Marshal(args)
	if len(b) > 600 {
		b = append(b[:600], "..."...)
	}
	return string(b)
}

// httpAnswer is one HTTP answer: its status, its error's code, its body.
type httpAnswer struct {
	status int
	code   string
	body   string
}

// http sends a request and fails the input unless the answer is a
// success or a 4xx whose JSON body names the error, free of PostgreSQL's
// text. A path the HTTP client cannot send is no answer at all.
func (fe *fuzzEnv) http(t *testing.T, method, path, body string, hdr ...string) (httpAnswer, bool) {
	t.Helper()
	req, err := http.NewRequest(method, fe.srv.URL+path, strings.NewReader(body))
	if err != nil {
		return httpAnswer{}, false
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("%s %q: no answer: %v", method, path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	a := httpAnswer{status: resp.StatusCode, body: string(b)}
	if a.status >= 500 {
		t.Fatalf("%s %q %.300q: %d %s", method, path, body, a.status, b)
	}
	if a.status >= 400 {
		var e struct{ Code, Error string }
		if json.Unmarshal(b, &e) != nil || e.Code == "" {
			t.Fatalf("%s %q: %d without a JSON error: %s", method, path, a.status, b)
		}
		a.code = e.Code
		if p := leaksPostgres(e.Error); p != "" {
			t.Fatalf("%s %q %.300q: %d carries PostgreSQL's text (%q): %s", method, path, body, a.status, p, b)
		}
	}
	return a, true
}

// objectValue is the fuzzer's value text as an object value: itself when
// it is a JSON object, else an object holding it.
func objectValue(text string) json.RawMessage {
	if json.Valid([]byte(text)) && strings.HasPrefix(strings.TrimSpace(text), "{") {
		return json.RawMessage(text)
	}
	b, _ := json.Marshal(map[string]string{"str": text})
	return b
}

// FuzzObjectKeys: any key, in any bucket's key transform, put, read,
// found and deleted through both front ends.
func FuzzObjectKeys(f *testing.F) {
	for _, k := range []string{"/u/stor/a", "a", "/", "//", "/a//", ".", "..", "/./..", "\x00", "a\x00b", "\xff\xfe",
		"a\xc3", "\xed\xa0\x80", "\xed\xbf\xbf", "\U0010ffff", "\ufffe", "é", "%", "%ff", "%2F", "?x=1", "#f", " ",
		"\t\r\n", "'", `"`, `\`, "'; drop table fz; --", "(key=*)", "*", strings.Repeat("k", 1024),
		strings.Repeat("k", 1025), strings.Repeat("/", 4000), strings.Repeat("é", 600), "id:", ":", "id:/x:y/z",
		"0b9b5a80:/acct/uploads/a/b", "/a3829ca2-0966-60ce-9dc3-e4e9060f0950/public", "\u2028", "a\u0000"} {
		f.Add(k, `{"str":"v"}`)
	}
	f.Add("k", `{"str":"\u0000"}`)
	f.Add("k", "{\"str\":\"\xff\"}")
	f.Add("k", `{"str":"\ud800"}`)
	f.Add("k", `{"uniq":"same"}`)
	f.Add("k", `0`)
	f.Add(incompressible(3000), `{"str":"v"}`)
	f.Add("k", `{"str":"`+incompressible(3000)+`"}`)
	f.Add("k", `{"strs":["`+incompressible(3000)+`"]}`)
	f.Add("k", `{"uniq":"`+incompressible(3000)+`"}`)
	f.Add("k", `[{}]`)
	f.Add("k", strings.Repeat(`{"a":`, 4001)+"1"+strings.Repeat("}", 4001))
	f.Add("k", strings.Repeat(`[`, 5000)+strings.Repeat("]", 5000))
	fe := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, key, value string) {
		v := objectValue(value)
		for _, b := range fuzzBuckets {
			if _, err := fe.moray(t, nil, "putObject", b, key, v, map[string]any{}); err == nil {
				fe.moray(t, nil, "getObject", b, key, map[string]any{})
				fe.moray(t, nil, "findObjects", b, "(str=*)", map[string]any{"limit": 2, "hashkey": key})
				fe.moray(t, nil, "delObject", b, key, map[string]any{})
			}
			fe.moray(t, nil, "getObject", b, key, map[string]any{"noCache": true})
			fe.moray(t, nil, "batch", []any{map[string]any{"bucket": b, "key": key, "value": v},
				map[string]any{"bucket": b, "operation": "delete", "key": key}}, map[string]any{})
			for _, path := range []string{"/buckets/" + b + "/objects/" + url.PathEscape(key), "/buckets/" + b + "/objects/" + key} {
				if a, ok := fe.http(t, "PUT", path, value); ok && a.status == 200 {
					fe.http(t, "GET", path, "")
					fe.http(t, "DELETE", path, "", "If-Match", `"`+url.QueryEscape(key)+`"`)
					fe.http(t, "DELETE", path, "")
				}
			}
			fe.http(t, "GET", "/buckets/"+b+"/objects?prefix="+url.QueryEscape(key), "")
		}
	})
}

// nastyValues are values for every index type that its parser should
// refuse or read oddly.
var nastyValues = []string{
	`""`, `" "`, `"abc"`, `"1e400"`, `1e400`, `-1e400`, `1e-400`, `"NaN"`, `"Infinity"`, `"-Infinity"`, `"0x10"`,
	`123456789012345678901234567890`, `0.1e-99999`, `-0`, `"1,2"`, `"[1,2]"`, `"(1,2]"`, `"[2,1]"`, `"[,]"`, `"(,)"`,
	`"empty"`, `"[a,b]"`, `"[1,2"`, `"[1e400,2]"`, `"[NaN,1]"`, `true`, `"true"`, `"TRUE"`, `"yes"`, `"t"`, `0`, `1`,
	`"2020-02-30"`, `"2020-13-01T00:00:00Z"`, `"10000-01-01"`, `"-0001-01-01"`, `"0000-00-00T00:00:00.000Z"`,
	`"2020-01-01T25:61:61Z"`, `"2020-01-01T00:00:00+99:99"`, `"[2020-01-01,2019-01-01]"`,
	`"[2020-01-01T00:00:00Z,infinity)"`, `"[\"2020-01-01\",\"2021-01-01\"]"`, `"epoch"`, `"now"`, `"allballs"`,
	`"1.2.3.4"`, `"1.2.3.256"`, `"1.2.3.4/33"`, `"::1"`, `"::ffff:1.2.3.4"`, `"fe80::1%eth0"`, `"1.2.3.4/24"`,
	`"10.0.0.1/8"`, `"::/129"`, `"1.2.3"`, `4294967296`, `-1`, `16909060`, `"00:11:22:33:44:55"`, `"0011.2233.4455"`,
	`"00:11:22:33:44:55:66:77"`, `"zz:zz:zz:zz:zz:zz"`, `281474976710656`, `"deadbeef-dead-beef-dead-beefdeadbeef"`,
	`"DEADBEEF-DEAD-BEEF-DEAD-BEEFDEADBEEF"`, `"{deadbeef-dead-beef-dead-beefdeadbeef}"`, `"deadbeefdeadbeefdeadbeefdeadbeef"`,
	`"not-a-uuid"`, `null`, `[]`, `[null]`, `[[1]]`, `[[[[[]]]]]`, `[{}]`, `{}`, `{"a":1}`, `[1,"a",true,null]`,
	`["a,b","{c}","\"","\\"]`, `"\u0000"`, `"\ud800"`, `"a\u0000b"`, `"{}"`, `"{1,2}"`, `"{\"a\"}"`, `"NULL"`,
	`"` + strings.Repeat("9", 2000) + `"`, strings.Repeat("9", 1000), `"` + strings.Repeat("x", 3000) + `"`,
}

// FuzzIndexValues: any value in any index field, written and searched
// through both front ends.
func FuzzIndexValues(f *testing.F) {
	for i, v := range nastyValues {
		for j := range fuzzFields {
			if (i+j)%4 == 0 || j == len(fuzzFields)-1 {
				f.Add(uint8(j), v)
			}
		}
	}
	fe := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, field uint8, raw string) {
		name := fuzzFields[int(field)%len(fuzzFields)]
		if !json.Valid([]byte(raw)) {
			b, _ := json.Marshal(raw)
			raw = string(b)
		}
		value := json.RawMessage(`{"` + name + `":` + raw + `}`)
		key := fmt.Sprintf("k-%s", name)
		if _, err := fe.moray(t, nil, "putObject", "fz", key, value, map[string]any{}); err == nil {
			fe.moray(t, nil, "getObject", "fz", key, map[string]any{})
		}
		fe.moray(t, nil, "batch", []any{map[string]any{"bucket": "fz", "operation": "update",
			"fields": map[string]any{name: json.RawMessage(raw)}, "filter": "(" + name + "=*)"}}, map[string]any{})
		fe.moray(t, nil, "findObjects", "fz", "("+name+"="+strings.Trim(raw, `"`)+")", map[string]any{"hashkey": key})
		if a, ok := fe.http(t, "PUT", "/buckets/fz/objects/h-"+name, string(value)); ok && a.status == 200 {
			fe.http(t, "GET", "/buckets/fz/objects/h-"+name, "")
		}
	})
}

// nastyFilters are filters that are malformed, name unknown attributes,
// use every operator on every type, or are deep or long.
func nastyFilters() []string {
	fs := []string{"", "(", ")", "()", "(str)", "(str=)", "(=x)", "str=x", "(str=x", "(str=x))", "(&)", "(|)", "(!)",
		"(&(str=x)", "(!(str=x)(str=y))", "(str=\\)", "(str=\\zz)", "(str=\\00)", "(str=\x00)", "(str=\xff)",
		"(nosuch=1)", "(_id=abc)", "(_id>=x)", "(_mtime<=now)", "(_key=*)", "(_etag=*)", "(_txn_snap=1)",
		"(_vnode=1)", "(_value=x)", "(str:caseIgnoreMatch:=X)", "(str:caseIgnoreSubstringsMatch:=*x*)",
		"(str:nosuchMatch:=x)", "(:caseIgnoreMatch:=x)", "(str:=x)", "(str:dn:=x)", "(num:overlaps:=[1,2])",
		"(nrange:overlaps:=[1,2])", "(nrange:overlaps:=junk)", "(nrange:contains:=x)", "(num:within:=[1,a])",
		"(day:within:=[2020-01-01,2019-01-01])", "(drange:contains:=notadate)", "(addr:within:=1.2.3.4/99)",
		"(net:contains:=junk)", "(nets:contains:=1.2.3.4)", "(addrs:within:=::/0)", "(nosuch:within:=[1,2])",
		"(str~=x)", "(num~=1)", "(str=a*b*c)", "(str=**)", "(str=*\\2a*)", "(uid=*abc*)", "(addr=1.2.*)",
		"(&(str=a)(|(num>=1)(!(flag=true))))", "(" + strings.Repeat("!(", 300) + "str=x" + strings.Repeat(")", 301),
		"(" + strings.Repeat("&(", 2000) + "str=x" + strings.Repeat(")", 2001), "(|" + strings.Repeat("(str=x)", 3000) + ")",
		"(str=" + strings.Repeat("x", 20000) + ")", "(STR=x)", "(Str>=x)", "(str;drop=1)", "(str=x)(str=y)",
	}
	for _, field := range fuzzFields {
		for _, op := range []string{"=", ">=", "<=", "~="} {
			for _, v := range []string{"x", "1", "1e400", "NaN", "-Infinity", "true", "2020-02-30", "1.2.3.999", "[1,2]",
				"zz:zz", "not-a-uuid", "*", "a*", "\\2a", "\\00", "{1,2}", "(1,2)", "null", ""} {
				fs = append(fs, "("+field+op+v+")")
			}
		}
	}
	return fs
}

// FuzzFilters: any filter and find options, through findObjects (with
// its sort, limit and offset) and the HTTP list's prefix and limit.
func FuzzFilters(f *testing.F) {
	opts := []string{`{}`, `{"limit":0}`, `{"limit":-1}`, `{"limit":1e400}`, `{"limit":"10"}`, `{"limit":9007199254740993}`,
		`{"offset":-5}`, `{"offset":"x"}`, `{"offset":1e20}`, `{"sort":{"attribute":"nosuch","order":"DESC"}}`,
		`{"sort":{"attribute":"str","order":"SIDEWAYS"}}`, `{"sort":[{"attribute":"num"},{"attribute":"_id","order":"ASC"}]}`,
		`{"sort":{"attribute":"str; drop table fz","order":"ASC"}}`, `{"sort":{"attribute":"_value"}}`, `{"sort":[]}`,
		`{"noLimit":true}`, `{"no_count":true,"limit":1}`, `{"sql_only":true}`, `{"req_id":"x"}`, `{"hashkey":""}`,
		`{"requireIndexes":true}`, `{"sort":{"attribute":"str\u0000"}}`, `{"sort":{"attribute":"no such\u0000'"}}`,
		`{"sort":{"attribute":"'; select 1; --"}}`, `{"sort":{"attribute":"\ud800"}}`, `{"token":"x"}`, `{"hashkey":"\u0000"}`, `{"requireOnlineReindexing":true}`, `{"timeout":1}`, `{"timeout":-1}`}
	for i, fl := range nastyFilters() {
		f.Add(fl, opts[i%len(opts)])
	}
	fe := newFuzzEnv(f)
	for i, v := range nastyValues {
		fe.call("putObject", "fz", fmt.Sprintf("seed-%d", i), json.RawMessage(`{"str":`+v+`,"num":`+v+`,"unindexed":`+v+`}`), map[string]any{})
	}
	f.Fuzz(func(t *testing.T, filter, options string) {
		var o map[string]json.RawMessage
		if json.Unmarshal([]byte(options), &o) != nil {
			o = map[string]json.RawMessage{}
		}
		fe.moray(t, nil, "findObjects", "fz", filter, o)
		// electric-moray wants a hashkey or a token before it looks at
		// the filter; with one, the filter and options reach the shard.
		if _, ok := o["token"]; !ok {
			if _, ok := o["hashkey"]; !ok {
				o["hashkey"] = json.RawMessage(`"seed-1"`)
			}
		}
		fe.moray(t, nil, "findObjects", "fz", filter, o)
		fe.moray(t, nil, "findObjects", "manta", filter, map[string]any{"hashkey": "/x", "limit": 3})
		fe.http(t, "GET", "/buckets/fz/objects?prefix="+url.QueryEscape(filter)+"&limit="+url.QueryEscape(options), "")
	})
}

// FuzzBucketConfigs: any bucket name and config, with trigger sources
// that do not parse, are not functions, throw or loop, created, updated,
// written to and dropped through both front ends.
func FuzzBucketConfigs(f *testing.F) {
	for _, c := range []struct{ name, config string }{
		{"b1", `{"index":{"x":{"type":"string"}}}`},
		{"B1", `{}`}, {"1b", `{}`}, {"", `{}`}, {"b;drop", `{}`}, {"buckets_config", `{}`}, {"pg_class", `{}`},
		{"reshard_x", `{}`}, {strings.Repeat("b", 64), `{}`}, {strings.Repeat("c", 63), `{"index":{"x":{"type":"string"}}}`},
		{strings.Repeat("d", 56), `{"options":{"guaranteeOrder":true}}`},
		{strings.Repeat("e", 40), `{"index":{"` + strings.Repeat("x", 30) + `a":{"type":"string"},"` + strings.Repeat("x", 30) + `b":{"type":"number"}}}`},
		{"b4", `{"index":{"` + strings.Repeat("x", 70) + `a":{"type":"string"},"` + strings.Repeat("x", 70) + `b":{"type":"number"}}}`},
		{"b4", `{"index":{"X":{"type":"string"},"x":{"type":"number"}}}`}, {"b\x00", `{}`}, {"b\xff", `{}`}, {"b2", `[]`},
		{"b2", `{"index":[]}`}, {"b2", `{"index":{"x":{"type":"nosuch"}}}`}, {"b2", `{"index":{"x":{"type":7}}}`},
		{"b2", `{"index":{"x":{}}}`}, {"b2", `{"index":{"x":null}}`}, {"b2", `{"index":{"_id":{"type":"string"}}}`},
		{"b2", `{"index":{"select":{"type":"string"}}}`}, {"b2", `{"index":{"a b":{"type":"string"}}}`},
		{"b2", `{"index":{"x":{"type":"string","unique":"yes"}}}`}, {"b2", `{"index":{"x\u0000":{"type":"string"}}}`},
		{"b2", `{"index":{"` + strings.Repeat("x", 100) + `":{"type":"string"}}}`},
		{"b2", `{"options":{"version":"x"}}`}, {"b2", `{"options":{"version":-1}}`}, {"b2", `{"options":{"version":1e400}}`},
		{"b2", `{"options":{"version":1.5}}`}, {"b2", `{"options":{"guaranteeOrder":true}}`}, {"b2", `{"options":[]}`},
		{"b3", `{"pre":["function (req, cb) { cb(); }"]}`},
		{"b3", `{"pre":["not javascript ("]}`}, {"b3", `{"pre":["42"]}`}, {"b3", `{"pre":[42]}`}, {"b3", `{"pre":"x"}`},
		{"b3", `{"pre":[null]}`}, {"b3", `{"post":["function (req, cb) { while (true) {} }"]}`},
		{"b3", `{"pre":["function (req, cb) { for (;;) {} }"]}`}, {"b3", `{"pre":["(function () { while (true) {} })()"]}`},
		{"b3", `{"pre":["function (req, cb) { throw new Error('boom'); }"]}`},
		{"b3", `{"pre":["function (req, cb) { cb(new Error('no')); }"]}`},
		{"b3", `{"pre":["function (req, cb) { req.key = 7; cb(); }"]}`},
		{"b3", `{"pre":["function (req, cb) { req.value = null; cb(); }"]}`},
		{"b3", `{"pre":["function (req, cb) { req.value = {a: function () {}}; cb(); }"]}`},
		{"b3", `{"pre":["function (req, cb) { req.key = '\\u0000'; cb(); }"]}`},
		{"b3", `{"pre":["function (req, cb) { req.key = '\\ud800'; cb(); }"]}`},
		{"b3", `{"pre":["function (req, cb) { req.value = {str: '\\u0000'}; cb(); }"]}`},
		{"b3", `{"pre":["function (req, cb) { req.value = {num: 'x', addr: 'y'}; cb(); }"]}`},
		{"b3", `{"post":["function (req, cb) { req.pg.query('select nonsense('); cb(); }"]}`},
		{"b3", `{"post":["function (req, cb) { var q = req.pg.query('select $1::int', ['x']); q.on('error', cb); q.on('end', function () { cb(); }); }"]}`},
		{"b3", `{"post":["function (req, cb) { var q = req.pg.query(null); q.on('error', cb); q.on('end', function () { cb(); }); }"]}`},
		{"b3", `{"post":["function (req, cb) { }"]}`}, {"b3", `{"post":["function (req, cb) { cb(); cb(); }"]}`},
		{"b3", `{"pre":["function (req, cb) { require('fs'); cb(); }"]}`},
		{"b3", `{"pre":["function (req, cb) { var a = []; for (;;) a.push(a); }"]}`},
		{"h1", `{"config":{"pre":"[\"function (req, cb) { cb(new Error('no')); }\"]"}}`},
		{"h1", `{"config":{"post":"[\"function (req, cb) { while (true) {} }\"]"}}`},
		{"h1", `{"config":{"pre":"[\"function (req, cb) { req.value = {num: 'x', addr: 'y'}; cb(); }\"]"}}`},
		{"h1", `{"config":{"pre":"not json"}}`}, {"h1", `{"config":{"options":"not json"}}`},
		{"h1", `{"config":{"index":"not json"}}`}, {"h1", `{"config":{"index":"{\"x\":{\"type\":\"nosuch\"}}"}}`},
		{"h1", `{"config":{"options":"{\"version\":\"x\"}"}}`}, {"h1", `{"config":{"mtime":"x"}}`},
		{"h1", `{"index":{"x":{"type":"ip"}},"config":{"index":"{}"}}`}, {"h1", `{"shard_local":true,"hash_dir":true}`},
		{"h1", `{"config":{"reindex_active":"{\"1\":[\"x\"]}"}}`}, {"h1", `{"hash_dir":"yes"}`},
	} {
		f.Add(c.name, c.config)
	}
	fe := newFuzzEnv(f)
	old := trigger.SetTimeout(300 * time.Millisecond)
	f.Cleanup(func() { trigger.SetTimeout(old) })
	f.Fuzz(func(t *testing.T, name, config string) {
		// A trigger's own errors, whatever it names them, and its
		// timeout are the bucket's answer; InternalError only when the
		// trigger says so itself.
		triggerNames := func(n string) bool { return n != "InternalError" || strings.Contains(config, n) }
		cfg := json.RawMessage(config)
		if !json.Valid(cfg) {
			b, _ := json.Marshal(config)
			cfg = b
		}
		if _, err := fe.moray(t, triggerNames, "createBucket", name, cfg, map[string]any{}); err == nil {
			fe.moray(t, nil, "getBucket", map[string]any{}, name)
			fe.moray(t, triggerNames, "updateBucket", name, cfg, map[string]any{})
			fe.moray(t, triggerNames, "putObject", name, "k", map[string]any{"x": "y", "num": 1}, map[string]any{})
			// A field's type changed under a stored row, and a field
			// that differs from another only in case.
			fe.moray(t, triggerNames, "updateBucket", name, json.RawMessage(`{"index":{"x":{"type":"number"},"num":{"type":"ip"}},"options":{"version":2}}`), map[string]any{})
			fe.moray(t, triggerNames, "putObject", name, "k", map[string]any{"x": "y", "num": 1}, map[string]any{})
			fe.moray(t, nil, "findObjects", name, "(x>=1)", map[string]any{"hashkey": "k"})
			fe.moray(t, triggerNames, "updateBucket", name, json.RawMessage(`{"index":{"X":{"type":"string"},"x":{"type":"number"}},"options":{"version":3}}`), map[string]any{})
			fe.moray(t, triggerNames, "delObject", name, "k", map[string]any{})
			fe.moray(t, nil, "findObjects", name, "(x=*)", map[string]any{"hashkey": "k"})
			fe.moray(t, nil, "delBucket", name, map[string]any{})
		}
		if a, ok := fe.http(t, "PUT", "/buckets/"+url.PathEscape(name), config); ok && a.status == 200 {
			fe.http(t, "PUT", "/buckets/"+url.PathEscape(name)+"/objects/k", `{"x":"y"}`)
			fe.http(t, "GET", "/buckets/"+url.PathEscape(name)+"/objects/k", "")
			fe.http(t, "DELETE", "/buckets/"+url.PathEscape(name)+"/objects/k", "")
			fe.moray(t, nil, "delBucket", name, map[string]any{})
		}
		fe.moray(t, nil, "listBuckets", map[string]any{})
	})
}

// FuzzMorayRPCs: any RPC but sql (whose errors are the statement's, as
// Moray passes them) with any arguments.
func FuzzMorayRPCs(f *testing.F) {
	v := `{"str":"a","num":1}`
	for _, c := range []struct{ rpc, args string }{
		{"putObject", `["fz","k",` + v + `,{"etag":"nosuch"}]`}, {"putObject", `["fz","k",` + v + `,{"etag":null}]`},
		{"putObject", `["fz","k",` + v + `,{"etag":""}]`}, {"putObject", `["fz","k",` + v + `,{"vnode":"x"}]`},
		{"putObject", `["fz","k",` + v + `,{"_value":"x"}]`}, {"putObject", `["fz","k",` + v + `,{"etag":"\u0000"}]`},
		{"delObject", `["fz","k",{"etag":"a\u0000"}]`}, {"batch", `[[{"bucket":"fz","key":"k","operation":"delete","options":{"etag":"\u0000"}}],{}]`},
		{"putObject", `["fz","k",` + v + `,{"etag":"\ud800"}]`}, {"putObject", `["fz","k",` + v + `,{"headers":"x"}]`},
		{"putObject", `["fz","k",` + v + `,{"req_id":{}}]`}, {"putObject", `["nosuch","k",{},{}]`},
		{"putObject", `["fz","",{},{}]`}, {"putObject", `["fz","k",{"num":{"a":1}},{}]`},
		{"getObject", `["fz","k",{"noCache":"x"}]`}, {"getObject", `["fz",["k"],{}]`},
		{"delObject", `["fz","nosuch",{"etag":"x"}]`}, {"delObject", `["fz","k",{"etag":7}]`},
		{"findObjects", `["fz","(str=a)",{"sort":{"attribute":"num","order":"DESC"},"limit":1,"offset":1}]`},
		{"findObjects", `["nosuch","(str=a)",{}]`}, {"findObjects", `["fz",7,{}]`}, {"findObjects", `["fz","(str=a)",[]]`},
		{"batch", `[[{"bucket":"fz","key":"k","value":{}},{"bucket":"fz","key":"k","operation":"delete","options":{"etag":"x"}}],{}]`},
		{"batch", `[[{"bucket":"fz","key":"k","operation":"update","fields":{"num":"x"},"filter":"(str=*)"}],{}]`},
		{"batch", `[[{"bucket":"fz","key":"k","operation":"deleteMany","filter":"(("}],{}]`},
		{"batch", `[[{"bucket":"fz","operation":"nosuch"}],{}]`}, {"batch", `[[{"bucket":"nosuch","key":"k","value":{}}],{}]`},
		{"batch", `[[{"bucket":"fz","key":"a","value":{"uniq":"u"}},{"bucket":"fz","key":"b","value":{"uniq":"u"}}],{}]`},
		{"batch", `[[],{}]`}, {"batch", `[[null],{}]`}, {"batch", `[[{"bucket":"fz","key":"k","value":{"num":"1e400"}}],{}]`},
		{"updateObjects", `["fz",{"num":"abc"},"(str=*)",{}]`}, {"updateObjects", `["fz",{"nosuch":1},"(str=*)",{}]`},
		{"deleteMany", `["fz","(str=nothing)",{"limit":1}]`}, {"deleteMany", `["fz","((",{}]`},
		{"getBucket", `[{},"nosuch"]`}, {"getBucket", `["fz"]`}, {"getBucket", `[{},"B;drop"]`}, {"listBuckets", `[7]`},
		{"delBucket", `["nosuch",{}]`}, {"delBucket", `["",{}]`}, {"getTokens", `[{}]`}, {"ping", `[{"deep":true}]`},
		{"version", `[]`}, {"reindexObjects", `["fz",1,{}]`}, {"gc", `[]`},
	} {
		f.Add(c.rpc, c.args)
	}
	fe := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, rpc, args string) {
		if rpc == "sql" {
			return
		}
		var list []json.RawMessage
		if json.Unmarshal([]byte(args), &list) != nil {
			list = []json.RawMessage{json.RawMessage(mustJSON(args))}
		}
		as := make([]any, len(list))
		for i, a := range list {
			as[i] = a
		}
		fe.moray(t, nil, rpc, as...)
	})
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// An HTTP key that is not UTF-8 is refused before any query, with a named
// 400, and nothing of it reaches a shard; so is a NUL, over HTTP in a key
// or a list prefix. Over Fast, Moray's own answer to a NUL key is
// PostgreSQL's, named "error", and nothing is stored either. Index names
// that PostgreSQL would fold or cut into one are a bad config.
func TestBadInputIsTheClientsError(t *testing.T) {
	e := setup(t, "")
	fe := &fuzzEnv{env: e, c: dialFast(t, e.serveMoray(t))}
	if _, err := fe.call("createBucket", "t1", map[string]any{"index": map[string]any{"str": map[string]any{"type": "string"}}}, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/buckets/t1/objects/%ff%fe", "/buckets/t1/objects/a%00b", "/buckets/t1/objects/%ed%a0%80"} {
		resp, body := e.do(t, "PUT", p, `{"str":"v"}`)
		if resp.StatusCode != 400 || !strings.Contains(body, `"code":"InvalidKey"`) {
			t.Errorf("PUT %s: %d %s, want 400 InvalidKey", p, resp.StatusCode, body)
		}
	}
	if resp, body := e.do(t, "GET", "/buckets/t1/objects?prefix=%ff", ""); resp.StatusCode != 400 || !strings.Contains(body, `"code":"InvalidPrefix"`) {
		t.Errorf("list with a prefix that is not UTF-8: %d %s", resp.StatusCode, body)
	}
	if _, err := fe.call("putObject", "t1", "a\x00b", map[string]any{"str": "v"}, map[string]any{}); remoteName(err) != "error" ||
		!strings.HasPrefix(remoteErr(err).Message, `invalid byte sequence for encoding "UTF8": 0x00`) {
		t.Errorf("putObject with a NUL key: %v, want Moray's error", err)
	}
	if _, err := fe.call("putObject", "t1", "k", map[string]any{"str": "a\x00"}, map[string]any{}); remoteName(err) != "error" {
		t.Errorf("putObject with a NUL in an indexed string: %v, want Moray's error", err)
	}
	if resp, body := e.do(t, "PUT", "/buckets/t1/objects/k", `{"str":"a\u0000"}`); resp.StatusCode != 400 || !strings.Contains(body, `"code":"InvalidValue"`) {
		t.Errorf("HTTP put with a NUL in an indexed string: %d %s, want 400 InvalidValue", resp.StatusCode, body)
	}
	// An expected etag PostgreSQL text cannot hold matches none, as in
	// Moray, whose comparison is JavaScript's.
	if _, err := fe.call("putObject", "t1", "k", map[string]any{"str": "v"}, map[string]any{"etag": "\x00"}); remoteName(err) != "EtagConflictError" {
		t.Errorf("putObject with a NUL etag: %v, want EtagConflictError", err)
	}
	if _, err := fe.call("putObject", "t1", "k", map[string]any{"str": "v"}, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if _, err := fe.call("delObject", "t1", "k", map[string]any{"etag": "a\x00"}); remoteName(err) != "EtagConflictError" {
		t.Errorf("delObject with a NUL etag: %v, want EtagConflictError", err)
	}
	if resp, body := e.do(t, "PUT", "/buckets/t1/objects/k", `{"str":"v"}`, "If-Match", "\"\xff\xfe\""); resp.StatusCode != http.StatusPreconditionFailed {
		t.Errorf("HTTP put with an If-Match that is not UTF-8: %d %s, want 412", resp.StatusCode, body)
	}
	// Names that PostgreSQL folds or cuts into one: the client's config.
	for _, c := range []struct{ name, index string }{
		{"b4", `{"X":{"type":"string"},"x":{"type":"number"}}`},
		{strings.Repeat("c", 63), `{"x":{"type":"string"}}`},
	} {
		_, err := fe.call("createBucket", c.name, json.RawMessage(`{"index":`+c.index+`}`), map[string]any{})
		re := remoteErr(err)
		if re.Name != "MultiError" || !strings.Contains(re.Message, c.name) || leaksPostgres(re.Message) != "" {
			t.Errorf("createBucket %s %s: %v, want each shard's InvalidBucketConfigError", c.name, c.index, err)
		}
		resp, body := e.do(t, "PUT", "/buckets/"+c.name, `{"index":`+c.index+`}`)
		if resp.StatusCode != 400 || !strings.Contains(body, `"code":"InvalidBucketConfig"`) {
			t.Errorf("HTTP create %s %s: %d %s", c.name, c.index, resp.StatusCode, body)
		}
	}
	// Only the one object put on purpose, k, is stored.
	total := 0
	for _, pn := range []string{"1.moray", "2.moray"} {
		var n int
		if err := e.primary(t, pn).QueryRow(context.Background(), "select count(*) from t1 where _key <> 'k'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if total != 0 {
		t.Errorf("the shards hold %d rows of t1 besides k, want none", total)
	}
}

// incompressible is n bytes of letters that PostgreSQL cannot compress,
// so that an index entry of them is as long as they are.
func incompressible(n int) string {
	b := make([]byte, n)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = 'a' + byte(x%26)
	}
	return string(b)
}
