package main

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Argument checks, compared with the reference Moray: every RPC is sent
// raw over Fast (the npm client refuses most bad arguments before sending
// them, and the server's answer is what Moray's own tests and careful
// clients compare), with the wrong number of arguments and, one argument
// at a time, with values of every wrong kind; then every option Moray
// knows with a wrong type or value, every part of a batch request and of
// a bucket config. Every case must fail on both sides with the same error
// name and message, and store nothing.

// argRPCs are Moray 2.6.1's RPCs with arguments that pass its checks, which
// each case spoils in one place. Valid calls would touch a bucket that
// does not exist, so a case that both sides let through changes nothing.
var argRPCs = []struct {
	rpc   string
	kinds []string // each argument's schema, as Moray declares it
	valid []any
}{
	{"createBucket", []string{"string", "object", "options"}, []any{"diff_args_none", map[string]any{}, map[string]any{}}},
	{"getBucket", []string{"options", "string"}, []any{map[string]any{}, "diff_args_none"}},
	{"listBuckets", []string{"options"}, []any{map[string]any{}}},
	{"updateBucket", []string{"string", "object", "options"}, []any{"diff_args_none", map[string]any{}, map[string]any{}}},
	{"delBucket", []string{"string", "options"}, []any{"diff_args_none", map[string]any{}}},
	{"putObject", []string{"string", "string", "object", "options"}, []any{"diff_args_none", "k", map[string]any{}, map[string]any{}}},
	{"batch", []string{"requests", "options"}, []any{[]any{map[string]any{"bucket": "diff_args_none", "key": "k", "value": map[string]any{}}}, map[string]any{}}},
	{"getObject", []string{"string", "string", "options"}, []any{"diff_args_none", "k", map[string]any{}}},
	{"delObject", []string{"string", "string", "options"}, []any{"diff_args_none", "k", map[string]any{}}},
	{"findObjects", []string{"string", "string", "options"}, []any{"diff_args_none", "(k=1)", map[string]any{}}},
	{"updateObjects", []string{"string", "object", "string", "options"}, []any{"diff_args_none", map[string]any{}, "(k=1)", map[string]any{}}},
	{"reindexObjects", []string{"string", "integer", "options"}, []any{"diff_args_none", 1, map[string]any{}}},
	{"deleteMany", []string{"string", "string", "options"}, []any{"diff_args_none", "(k=1)", map[string]any{}}},
	{"getTokens", []string{"options"}, []any{map[string]any{}}},
	{"sql", []string{"string", "array", "options"}, []any{"SELECT 1", []any{}, map[string]any{}}},
	{"ping", []string{"options"}, []any{map[string]any{}}},
	{"version", []string{"options"}, []any{map[string]any{}}},
}

// wrongValues are, for each schema, values of every kind it refuses.
var wrongValues = map[string][]any{
	"string":   {nil, 5, true, []any{}, map[string]any{}, ""},
	"object":   {nil, 5, "x", true, []any{}, []any{1}, map[string]any{"hasOwnProperty": 1}},
	"options":  {nil, 5, "x", false, []any{}, map[string]any{"hasOwnProperty": true}},
	"integer":  {nil, -1, 1.5, "1", []any{}, map[string]any{}},
	"array":    {nil, 5, "x", map[string]any{}},
	"requests": {nil, "x", map[string]any{"bucket": "b"}, []any{5}, []any{nil}, []any{[]any{}}},
}

// wrongOptions are options with a wrong type or value, alone or together
// (the first error in Moray's order is the one reported).
var wrongOptions = []string{
	`{"timeout": -1}`, `{"timeout": 1.5}`, `{"timeout": "5"}`,
	`{"req_id": "foo"}`, `{"req_id": 5}`, `{"req_id": "0123456789abcdef0123456789abcdef01234"}`,
	`{"req_id": "urn:uuid:not-a-uuid"}`,
	`{"etag": 5}`, `{"etag": {}}`, `{"etag": false}`,
	`{"_value": 5}`,
	`{"noBucketCache": 1}`, `{"noCache": "true"}`, `{"requireOnlineReindexing": null}`,
	`{"noLimit": 0}`, `{"no_count": "yes"}`, `{"sql_only": []}`, `{"requireIndexes": 1}`,
	`{"no_reindex": 1}`, `{"deep": "x"}`,
	`{"headers": []}`, `{"headers": 5}`, `{"headers": {"hasOwnProperty": 2}}`,
	`{"limit": "abc"}`, `{"limit": -1}`, `{"limit": true}`, `{"limit": 1.5}`, `{"limit": "-1"}`,
	`{"offset": "1e3"}`, `{"offset": -5}`, `{"offset": null}`,
	`{"sort": 5}`, `{"sort": "name"}`, `{"sort": {"attribute": "a", "order": "bad"}}`,
	`{"sort": {"attribute": "a", "order": 5}}`, `{"sort": {"attribute": 5}}`,
	`{"sort": [{"attribute": 5}]}`, `{"sort": [{"attribute": "a"}, {"order": "up"}]}`,
	`{"sort": [5]}`, `{"sort": {"hasOwnProperty": 1}}`,
	`{"internalOpts": 5}`, `{"internalOpts": {"sendHandledOptions": 1}}`,
	`{"hasOwnProperty": 1}`,
	`{"limit": "x", "timeout": -1}`, `{"timeout": -1, "limit": "x"}`,
	`{"sort": 5, "hasOwnProperty": 1}`, `{"deep": 1, "noCache": 1}`,
}

// wrongRequests are batch requests Moray's requests schema refuses.
var wrongRequests = []string{
	`[{}]`, `[{"operation": "put"}]`, `[{"operation": "invalid", "bucket": "b"}]`,
	`[{"operation": 5, "bucket": "b"}]`, `[{"operation": "x"}]`, `[{"key": 5}]`,
	`[{"bucket": 5, "key": "k"}]`, `[{"bucket": "b", "key": 5}]`, `[{"bucket": "b", "filter": 5}]`,
	`[{"bucket": "b", "fields": []}]`, `[{"bucket": "b", "value": []}]`, `[{"bucket": "b", "value": null}]`,
	`[{"bucket": "b", "options": {"etag": 1}}]`, `[{"bucket": "b", "options": []}]`,
	`[{"bucket": "b", "hasOwnProperty": 1, "key": 5}]`,
	`[{"bucket": "b", "key": "k", "value": {}}, {"operation": "put", "key": "k"}]`,
}

// wrongConfigs are bucket configs Moray refuses, for createBucket and
// updateBucket, with the errors its bucket schema and rules give.
var wrongConfigs = []string{
	`{"index": []}`, `{"index": "x"}`, `{"index": 5}`,
	`{"index": {"a": {"type": "nope"}}}`, `{"index": {"a": {}}}`, `{"index": {"a": 5}}`,
	`{"index": {"a": {"type": "string", "x": 1}}}`, `{"index": {"a": {"x": 1}}}`,
	`{"index": {"a": {"type": 5, "x": 1}}}`, `{"index": {"a": {"type": "string", "unique": "yes"}}}`,
	`{"index": {"b": {"type": "string"}, "2": {"type": 5}, "a": {}}}`,
	`{"index": {"it's": {"type": "x"}}}`, `{"index": {"a b": {"type": "string"}}}`,
	`{"index": {"a-b": {"type": "string"}}}`, `{"index": {"_id": {"type": "string"}}}`,
	`{"index": {"_Value": {"type": "string"}}}`, `{"index": {"moray_x": {"type": "string"}}}`,
	`{"index": {"__morayx": {"type": "string"}}}`, `{"index": {"a_": {"type": "string"}}}`,
	`{"index": {"hasOwnProperty": {"type": "string"}}}`,
	`{"options": {"version": -1}}`, `{"options": {"version": 1.5}}`, `{"options": {"version": "1"}}`,
	`{"options": []}`, `{"options": {"guaranteeOrder": 1}}`, `{"options": {"syncUpdates": "x"}}`,
	`{"options": {"trackModification": true}}`, `{"options": {"version": 2, "trackModification": false}}`,
	`{"pre": {}}`, `{"post": 5}`, `{"pre": "function (req, cb) { cb(); }"}`,
	`{"hasOwnProperty": 1}`,
}

func rawJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func (d *diffOps) raw(desc, rpc string, args ...json.RawMessage) {
	if args == nil {
		args = []json.RawMessage{}
	}
	d.add(diffOp{Op: "raw", Desc: desc, Method: rpc, Args: args})
}

// argCases adds every case, with descriptions that say what is wrong.
func (d *diffOps) argCases() {
	d.raw("unknown RPC", "bogusName")
	for _, r := range argRPCs {
		valid := make([]json.RawMessage, len(r.valid))
		for i, v := range r.valid {
			valid[i] = rawJSON(v)
		}
		d.raw(fmt.Sprintf("args: %s with no arguments", r.rpc), r.rpc)
		d.raw(fmt.Sprintf("args: %s with one too few", r.rpc), r.rpc, valid[:len(valid)-1]...)
		d.raw(fmt.Sprintf("args: %s with one too many", r.rpc), r.rpc, append(append([]json.RawMessage{}, valid...), rawJSON(1))...)
		for i, kind := range r.kinds {
			for _, w := range wrongValues[kind] {
				args := append([]json.RawMessage{}, valid...)
				args[i] = rawJSON(w)
				d.raw(fmt.Sprintf("args: %s args[%d] %s", r.rpc, i, args[i]), r.rpc, args...)
			}
			if kind == "options" && (r.rpc == "findObjects" || r.rpc == "ping" || r.rpc == "putObject") {
				for _, o := range wrongOptions {
					args := append([]json.RawMessage{}, valid...)
					args[i] = json.RawMessage(o)
					d.raw(fmt.Sprintf("args: %s options %s", r.rpc, o), r.rpc, args...)
				}
			}
		}
	}
	for _, q := range wrongRequests {
		d.raw("args: batch requests "+q, "batch", json.RawMessage(q), rawJSON(map[string]any{}))
	}
	for _, o := range []string{`{"etag": 1}`, `{"sort": 5}`} {
		d.raw("args: batch request options "+o, "batch",
			json.RawMessage(`[{"bucket": "diff_args_none", "key": "k", "value": {}, "options": `+o+`}]`), rawJSON(map[string]any{}))
	}
	for _, rpc := range []string{"createBucket", "updateBucket"} {
		for _, c := range wrongConfigs {
			d.raw(fmt.Sprintf("config: %s %s", rpc, c), rpc, rawJSON("diff_args_none"), json.RawMessage(c), rawJSON(map[string]any{}))
		}
		for _, name := range []string{"moray", "search", "buckets_config", "9abc", "a-b", "_a", strings.Repeat("a", 64)} {
			d.raw(fmt.Sprintf("config: %s named %q", rpc, name), rpc, rawJSON(name), rawJSON(map[string]any{}), rawJSON(map[string]any{}))
		}
		// A bad config and a bad name: the config is checked first.
		d.raw(fmt.Sprintf("config: %s bad name and config", rpc), rpc, rawJSON("9abc"), json.RawMessage(`{"index": []}`), rawJSON(map[string]any{}))
	}
	// Lookups of names no bucket can have: Moray finds no such bucket.
	for _, name := range []string{"9abc", "a-b", "moray"} {
		d.raw(fmt.Sprintf("lookup: getBucket %q", name), "getBucket", rawJSON(map[string]any{}), rawJSON(name))
		d.raw(fmt.Sprintf("lookup: getObject %q", name), "getObject", rawJSON(name), rawJSON("k"), rawJSON(map[string]any{}))
		d.raw(fmt.Sprintf("lookup: delBucket %q", name), "delBucket", rawJSON(name), rawJSON(map[string]any{}))
	}
}
