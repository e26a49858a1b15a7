package shard

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Tools that work on a bucket's table as a whole, beside the router's path:
// loading, checking and benchmarking. Each bucket name is checked by
// ValidateBucket before it goes into a statement, since a table name
// cannot be a parameter.

// Copier is a connection that can COPY (a *pgx.Conn, or a pool's).
type Copier interface {
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, rows pgx.CopyFromSource) (int64, error)
}

// CopyRows writes rows (Row.Values, in the order of Row.Columns, given as
// columns) into bucket with COPY: far faster than one insert each, and the
// fence still checks every row.
func CopyRows(ctx context.Context, c Copier, bucket string, columns []string, rows [][]any) (int64, error) {
	if err := ValidateBucket(bucket); err != nil {
		return 0, err
	}
	return c.CopyFrom(ctx, pgx.Identifier{bucket}, columns, pgx.CopyFromRows(rows))
}

// Analyze refreshes the planner's statistics of bucket's table, as after a
// bulk load, so its indexes get used.
func Analyze(ctx context.Context, q Querier, bucket string) error {
	if err := ValidateBucket(bucket); err != nil {
		return err
	}
	_, err := q.Exec(ctx, "analyze "+pgx.Identifier{bucket}.Sanitize())
	return err
}

// Etags reads the etag of each of keys that bucket holds, in one query.
// A key the bucket does not hold is not in the map.
func Etags(ctx context.Context, q Querier, bucket string, keys []string) (map[string]string, error) {
	if err := ValidateBucket(bucket); err != nil {
		return nil, err
	}
	rows, err := q.Query(ctx, fmt.Sprintf(`select _key, _etag from %s where _key = any($1)`, pgx.Identifier{bucket}.Sanitize()), keys)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	found := map[string]string{}
	for rows.Next() {
		var k, etag string
		if err := rows.Scan(&k, &etag); err != nil {
			return nil, err
		}
		found[k] = etag
	}
	return found, rows.Err()
}

// HasFence reports whether bucket's table has the fence trigger; false
// when there is no such table.
func HasFence(ctx context.Context, q Querier, bucket string) (bool, error) {
	var fenced bool
	err := q.QueryRow(ctx, `select exists (select 1 from pg_trigger where tgname = 'reshard_fence'
		and tgrelid = to_regclass($1))`, bucket).Scan(&fenced)
	return fenced, err
}

// UndoAdoption takes a shard back to what Moray alone leaves, for a
// benchmark of adopting it: no fence on bucket, no ownership rows (of any
// bucket: ownership is the shard's), Moray's replica identity, and one
// row in every clearEvery (by _id) without a vnode. It returns how many
// rows of bucket then have no vnode.
func UndoAdoption(ctx context.Context, q Querier, bucket string, clearEvery int64) (int64, error) {
	if err := ValidateBucket(bucket); err != nil {
		return 0, err
	}
	for _, stmt := range []struct {
		sql  string
		args []any
	}{
		{"drop trigger reshard_fence on " + bucket, nil},
		{"delete from reshard_vnode_chunks", nil},
		{"alter table " + bucket + " replica identity default", nil},
		{"update " + bucket + " set _vnode = null where _id % $1 = 0", []any{clearEvery}},
		{"vacuum analyze " + bucket, nil},
	} {
		if _, err := q.Exec(ctx, stmt.sql, stmt.args...); err != nil {
			return 0, fmt.Errorf("%s: %w", stmt.sql, err)
		}
	}
	var noVnode int64
	err := q.QueryRow(ctx, `select count(*) from `+bucket+` where _vnode is null`).Scan(&noVnode)
	return noVnode, err
}

// HasRows reports whether bucket's table holds any row.
func HasRows(ctx context.Context, q Querier, bucket string) (bool, error) {
	if err := ValidateBucket(bucket); err != nil {
		return false, err
	}
	var any bool
	err := q.QueryRow(ctx, fmt.Sprintf(`select exists (select 1 from %s)`, quoteIdent(bucket))).Scan(&any)
	return any, err
}
