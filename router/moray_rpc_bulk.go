package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/shard"
)

// The RPCs that reach more than one object: sql, updateObjects and
// deleteMany. reshard answers them as the pair it replaces does,
// electric-moray 1.2.2 in front of Moray 2.6.1:
//
//   - sql goes to every shard; each shard's rows are streamed as they come,
//     and the shards' errors are gathered in a MultiError.
//   - updateObjects and deleteMany are checked and then refused with
//     electric-moray's "Operation not supported": they could touch objects
//     on every shard, which electric-moray does not do.
//   - reindexObjects, listen and unlisten are not registered with
//     electric-moray at all, so they get fast's "unsupported RPC method",
//     as every RPC missing from morayRPCs does.
func init() {
	morayRPCs["sql"] = moraySQL                                   // [statement, values, options]
	morayRPCs["updateObjects"] = unsupported(emArgsUpdateObjects) // [bucket, fields, filter, options]
	morayRPCs["deleteMany"] = unsupported(emArgsDeleteMany)       // [bucket, filter, options]
}

// emArg is one argument of electric-moray's own argument check, which runs
// before it forwards a request: a JavaScript typeof, or "array".
type emArg struct{ name, typ string }

var (
	emArgsSQL           = []emArg{{"statement", "string"}, {"values", "array"}, {"options", "object"}}
	emArgsUpdateObjects = []emArg{{"bucket", "string"}, {"fields", "object"}, {"filter", "string"}, {"options", "object"}}
	emArgsDeleteMany    = []emArg{{"bucket", "string"}, {"filter", "string"}, {"options", "object"}}
)

// jsTypeof is JavaScript's typeof for a JSON value.
func jsTypeof(raw json.RawMessage) string {
	switch jsonKind(raw) {
	case "a string":
		return "string"
	case "a number":
		return "number"
	case "a boolean":
		return "boolean"
	}
	return "object" // objects, arrays and null
}

// emInvalidArgs is electric-moray's invalidArgs, messages and all.
func emInvalidArgs(a rpcArgs, schema []emArg) error {
	fail := func(format string, args ...any) error {
		return &MorayError{Name: "InvocationError", Message: fmt.Sprintf(format, args...)}
	}
	if len(a.a) != len(schema) {
		plural := "s"
		if len(schema) == 1 {
			plural = ""
		}
		return fail("%s expects %d argument%s", a.rpc, len(schema), plural)
	}
	for i, s := range schema {
		v := a.a[i]
		switch {
		case s.typ == "array":
			if jsonKind(v) != "an array" {
				return fail("%s expects %q (args[%d]) to be of type array but received type %s instead", a.rpc, s.name, i, jsTypeof(v))
			}
		case s.typ == "object" && jsonKind(v) == "null":
			return fail("%s expects %q (args[%d]) to be an object but received the value \"null\"", a.rpc, s.name, i)
		case jsTypeof(v) != s.typ:
			return fail("%s expects %q (args[%d]) to be of type %s but received type %s instead", a.rpc, s.name, i, s.typ, jsTypeof(v))
		}
	}
	return nil
}

// unsupported answers an RPC electric-moray checks and then refuses.
func unsupported(schema []emArg) func(context.Context, *Router, rpcArgs, *stream) error {
	return func(_ context.Context, _ *Router, a rpcArgs, _ *stream) error {
		if err := emInvalidArgs(a, schema); err != nil {
			return err
		}
		// TODO(triggers): were updateObjects and deleteMany ever routed,
		// Moray runs no bucket pre/post triggers for them (its update and
		// deleteMany pipelines have none), which would matter to the
		// trigger work.
		return &MorayError{Name: "Error", Message: "Operation not supported"}
	}
}

// sqlOptions are the options electric-moray's Moray client forwards to
// each shard: it rebuilds them from req_id, timeout and readOnlyOverride
// alone, so Moray never sees the others.
type sqlOptions struct {
	ReqID            json.RawMessage
	Timeout          json.RawMessage
	ReadOnlyOverride bool
}

// sqlReadOnly is electric-moray's ReadOnlyError when its ring is read-only
// and the request did not set readOnlyOverride.
var sqlReadOnly = &MorayError{Name: "ReadOnlyError", Message: "some vnodes are in read-only mode"}

// moraySQL runs a statement on every shard, as electric-moray does.
//
// Differences that remain, on purpose: electric-moray's process dies on an
// options.timeout that is not a number or an options.readOnlyOverride that
// is not a boolean (its Moray client asserts them); reshard answers the
// assertion's message instead. Rows carry what node-postgres makes of
// PostgreSQL's text output, except interval, point, circle and tstzrange
// values, which stay text (see shard.RunSQL).
func moraySQL(ctx context.Context, r *Router, a rpcArgs, s *stream) error {
	if err := emInvalidArgs(a, emArgsSQL); err != nil {
		return err
	}
	var raw map[string]json.RawMessage
	json.Unmarshal(a.a[2], &raw) // an array leaves raw empty, as its properties are none of these
	var o sqlOptions
	o.ReqID, o.Timeout = raw["req_id"], raw["timeout"]
	if v, ok := raw["readOnlyOverride"]; ok && jsonKind(v) != "null" {
		if jsonKind(v) != "a boolean" {
			return &MorayError{Name: "AssertionError", Message: "options.readOnlyOverride (bool) is required"}
		}
		json.Unmarshal(v, &o.ReadOnlyOverride)
	}
	if o.Timeout != nil && jsonKind(o.Timeout) != "null" && jsonKind(o.Timeout) != "a number" {
		return &MorayError{Name: "AssertionError", Message: "options.timeout (number) is required"}
	}

	// A reshard holds pnodes: electric-moray's read-only ring. The
	// statement is registered as a bucket change either way, so a job
	// that starts meanwhile waits for it to end.
	var end func()
	var err error
	if o.ReadOnlyOverride {
		end, err = etcd.BeginBucketChange(ctx, r.cfg.Etcd, fmt.Sprintf("%s-sql-%d", r.cfg.Name, time.Now().UnixNano()), 10*time.Second)
	} else {
		end, err = r.beginChange(ctx)
		if errors.Is(err, ErrBucketsBusy) {
			return sqlReadOnly
		}
	}
	if err != nil {
		return err
	}
	defer end()

	stmt := string(jsonString(a.a[0]))
	var values []json.RawMessage
	json.Unmarshal(a.a[1], &values)
	// What each Moray checks of what it is sent.
	shardErr := morayCheckSQL(stmt, o)
	var timeout time.Duration
	if shardErr == nil && o.Timeout != nil {
		var ms float64
		json.Unmarshal(o.Timeout, &ms)
		timeout = time.Duration(ms) * time.Millisecond
	}

	var mu sync.Mutex
	_, err = r.eachShard(ctx, func(ctx context.Context, p *pgxpool.Pool) error {
		if shardErr != nil {
			return shardErr
		}
		err := shard.RunSQL(ctx, p, stmt, values, timeout, func(row json.RawMessage) error {
			mu.Lock()
			defer mu.Unlock()
			return s.write(row)
		})
		return morayPGError(stmt, err)
	})
	return err
}

func jsonString(raw json.RawMessage) string {
	var s string
	json.Unmarshal(raw, &s)
	return s
}

// uuidFormat is ajv's "uuid" format, which Moray checks options.req_id by.
var uuidFormat = regexp.MustCompile(`(?i)^(?:urn:uuid:)?[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}$`)

// morayCheckSQL is Moray's argument check of a forwarded sql request: a
// non-empty statement, and options that fit its schema (timeout a
// non-negative integer, req_id a UUID).
func morayCheckSQL(stmt string, o sqlOptions) error {
	fail := func(i int, name, what, text string) error {
		return &MorayError{Name: "InvocationError", Message: fmt.Sprintf("sql expects %q (args[%d]) to be %s: %s", name, i, what, text)}
	}
	if stmt == "" {
		return fail(0, "statement", "a nonempty string", "statement should NOT be shorter than 1 characters")
	}
	opts := func(text string) error { return fail(2, "options", "a valid options object", text) }
	if o.Timeout != nil {
		var f float64
		if jsonKind(o.Timeout) != "a number" || json.Unmarshal(o.Timeout, &f) != nil || f != math.Trunc(f) {
			return opts("options.timeout should be integer")
		}
		if f < 0 {
			return opts("options.timeout should be >= 0")
		}
	}
	// The client sends options.req_id || a new UUID.
	if id := o.ReqID; id != nil && !jsFalsy(id) {
		if jsonKind(id) != "a string" {
			return opts("options.req_id should be string")
		}
		s := jsonString(id)
		if len([]rune(s)) > 36 {
			return opts("options.req_id should NOT be longer than 36 characters")
		}
		if !uuidFormat.MatchString(s) {
			return opts(`options.req_id should match format "uuid"`)
		}
	}
	return nil
}

// jsFalsy is JavaScript's !v for a JSON value.
func jsFalsy(raw json.RawMessage) bool {
	switch string(raw) {
	case "null", "false", `""`:
		return true
	}
	var f float64
	return jsonKind(raw) == "a number" && json.Unmarshal(raw, &f) == nil && f == 0
}

// morayPGError names a shard's failure as Moray's pgError does: a unique
// violation is UniqueAttributeError, a syntax error or duplicate column
// InternalError "Invalid SQL", and any other PostgreSQL error keeps
// node-postgres's name, "error".
func morayPGError(stmt string, err error) error {
	var pe *pgconn.PgError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, shard.ErrSQLTimeout):
		return &MorayError{Name: "QueryTimeoutError", Message: "query timeout: " + shard.MorayStatement(stmt)}
	case errors.As(err, &pe) && pe.Code == "23505":
		return uniqueError(pe)
	case errors.As(err, &pe) && (pe.Code == "42601" || pe.Code == "42701"):
		return &MorayError{Name: "InternalError", Message: "Invalid SQL: " + pe.Message}
	case errors.As(err, &pe):
		return &MorayError{Name: "error", Message: pe.Message}
	}
	return err
}
