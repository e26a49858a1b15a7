package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/shard"
)

// The RPCs that reach more than one object: sql, updateObjects,
// deleteMany, reindexObjects, listen and unlisten. reshard is one logical
// Moray over its shards, so each runs on every shard:
//
//   - sql goes to every shard as electric-moray 1.2.2 sends it; each
//     shard's rows are streamed as they come, and the shards' errors are
//     gathered in a MultiError.
//   - updateObjects, deleteMany and reindexObjects answer as Moray 2.6.1
//     does (moray_rpc_bulkobjects.go), over the rows of every shard.
//   - listen streams the notifications of every shard (moray_listen.go).
func init() {
	morayRPCs["sql"] = moraySQL                       // [statement, values, options]
	morayRPCs["updateObjects"] = morayUpdateObjects   // [bucket, fields, filter, options]
	morayRPCs["deleteMany"] = morayDeleteMany         // [bucket, filter, options]
	morayRPCs["reindexObjects"] = morayReindexObjects // [bucket, count, options]
	morayRPCs["listen"] = morayListen                 // [channel, options]
	morayRPCs["unlisten"] = morayUnlisten             // [id, options]
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
	// checkMorayArgs has checked the arguments and options as Moray does.
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
	var timeout time.Duration
	if o.Timeout != nil {
		var ms float64
		json.Unmarshal(o.Timeout, &ms)
		timeout = time.Duration(ms) * time.Millisecond
	}

	var mu sync.Mutex
	// Any SQL: tried again only when it did not reach the server.
	_, err = r.eachShard(ctx, false, func(ctx context.Context, p *pgxpool.Pool) error {
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

// morayPGError names a shard's failure as Moray's pgError does: a unique
// violation is UniqueAttributeError, a syntax error or duplicate column
// InternalError "Invalid SQL", and any other PostgreSQL error keeps
// node-postgres's name, "error".
func morayPGError(stmt string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, shard.ErrSQLTimeout) {
		return &MorayError{Name: "QueryTimeoutError", Message: "query timeout: " + shard.MorayStatement(stmt)}
	}
	if de, ok := shard.AsDBError(err); ok {
		return morayDBError(de)
	}
	return err
}

// morayDBError is PostgreSQL's refusal as Moray's pgError names it.
func morayDBError(de *shard.DBError) *MorayError {
	switch {
	case de.UniqueViolation():
		return uniqueError(de)
	case de.InvalidSQL():
		return &MorayError{Name: "InternalError", Message: "Invalid SQL: " + de.Message}
	}
	return &MorayError{Name: "error", Message: de.Message}
}
