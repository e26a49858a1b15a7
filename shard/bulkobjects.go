package shard

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Moray's updateObjects and deleteMany (and their batch forms) change every
// row a filter selects, as Moray 2.6.1 writes them (lib/objects/update.js,
// del_many.js): the filter's WHERE clause in a subquery, with its ORDER BY,
// LIMIT (1000 unless the caller set one or noLimit) and OFFSET, and no
// JavaScript re-check of the rows. updateObjects sets index columns only:
// the stored _value keeps its old fields, and reads merge the columns in
// (readValue), as Moray's rowToObject does; every row it changes gets one
// new etag and _mtime.
//
// A shard holds only some of a logical Moray's rows, and may still hold
// rows of vnodes it gave away (until a reshard's cleanup deletes them):
// only rows of vnodes it owns, and rows without a vnode, are touched. The
// fence trigger still checks each row: a frozen vnode fails the statement
// whole, and the router retries it.

// Bulk is one updateObjects or deleteMany on one shard.
type Bulk struct {
	Bucket string
	Filter string // the filter's text, for answers and errors
	Where  string // the filter's SQL, from WhereClause
	Args   []any  // its parameters
	Sort   []Sort
	// Limit bounds the rows changed (nil: no limit); Offset skips as many
	// matching rows first.
	Limit  *int64
	Offset int64

	// Update: set Fields (index fields) to Values (their column texts, as
	// indexValues makes them), _etag to Etag and _mtime to Mtime.
	Update bool
	Opts   BucketOptions
	Fields []string
	Values []any
	Etag   string
	Mtime  int64
}

// BulkResult is what one shard did: Count rows changed, of Matched rows
// the filter selected before the offset was skipped (so a router can
// spend an offset across shards).
type BulkResult struct {
	Count, Matched int64
}

// ownedRow restricts a statement to the rows this shard answers for.
const ownedRow = "(b._vnode is null or reshard_owns(b._vnode))"

func (bk Bulk) sql() (string, []any, error) {
	if err := ValidateBucket(bk.Bucket); err != nil {
		return "", nil, err
	}
	args := append([]any(nil), bk.Args...)
	order := ""
	if len(bk.Sort) > 0 {
		parts := make([]string, len(bk.Sort))
		for i, s := range bk.Sort {
			parts[i] = bk.Opts.IndexColumn(s.Attribute).Expr
			if s.Desc {
				parts[i] += " desc"
			}
		}
		order = " order by " + strings.Join(parts, ", ")
	}
	var span any // NULL: LIMIT ALL
	if bk.Limit != nil {
		span = *bk.Limit + bk.Offset
	}
	args = append(args, span, bk.Offset)
	// row_number over the ordered subquery numbers the rows in its order,
	// so the offset skips the first ones as Moray's OFFSET does.
	matched := fmt.Sprintf(`with m as (select _key, row_number() over () as n from
		(select b._key from %s b where %s and (%s)%s limit $%d) s)`,
		bk.Bucket, ownedRow, bk.Where, order, len(args)-1)
	picked := fmt.Sprintf("_key in (select _key from m where n > $%d)", len(args))
	var change string
	if bk.Update {
		args = append(args, bk.Etag, bk.Mtime)
		set := fmt.Sprintf("_etag = $%d, _mtime = $%d", len(args)-1, len(args))
		for i, f := range bk.Fields {
			ix, ok := bk.Opts.Index[f]
			if !ok {
				return "", nil, fmt.Errorf("%s is not an index field of %s", f, bk.Bucket)
			}
			args = append(args, bk.Values[i])
			set += ", " + column(f) + " = " + indexCast(len(args), ix.Type)
		}
		change = fmt.Sprintf("update %s set %s where %s returning 1", bk.Bucket, set, picked)
	} else {
		change = fmt.Sprintf("delete from %s where %s returning 1", bk.Bucket, picked)
	}
	return fmt.Sprintf("%s, c as (%s) select (select count(*) from m), (select count(*) from c)", matched, change), args, nil
}

// RunBulk runs one updateObjects or deleteMany on a shard, in q's
// transaction when q is one.
func RunBulk(ctx context.Context, q Querier, bk Bulk) (BulkResult, error) {
	stmt, args, err := bk.sql()
	if err != nil {
		return BulkResult{}, err
	}
	var res BulkResult
	err = q.QueryRow(ctx, stmt, args...).Scan(&res.Matched, &res.Count)
	return res, err
}

// Reindexed is what one reindexObjects pass did on a shard.
type Reindexed struct {
	Processed, Remaining int64
}

// ReindexObjects is Moray's reindexObjects on one shard: up to count rows
// whose _rver is behind the bucket's version (NULL or lower) get their
// index columns filled from their value, as Moray's reindex does: the
// value first takes the columns' current contents (an updateObjects
// leaves them only there) except those of the fields being reindexed,
// and is stored back; _rver becomes the version. Remaining counts the
// rows still behind afterwards. Only rows of vnodes the shard owns count.
func ReindexObjects(ctx context.Context, db Beginner, bucket string, opts BucketOptions, count int64) (Reindexed, error) {
	if err := ValidateBucket(bucket); err != nil {
		return Reindexed{}, err
	}
	var out Reindexed
	version := opts.Version()
	fields := orderedFields(opts)
	err := inTx(ctx, db, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, fmt.Sprintf(`select _key, _value%s from %s b
			where (_rver is null or _rver < $1) and %s limit $2 for update`, indexReadSQL(fields), bucket, ownedRow), version, count)
		if err != nil {
			return err
		}
		type behind struct {
			key, value string
			cols       [][]byte
		}
		var todo []behind
		for rows.Next() {
			var r behind
			r.cols = make([][]byte, len(fields))
			dest := []any{&r.key, &r.value}
			for i := range r.cols {
				dest = append(dest, &r.cols[i])
			}
			if err := rows.Scan(dest...); err != nil {
				rows.Close()
				return err
			}
			todo = append(todo, r)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for _, r := range todo {
			text, err := MorayValue([]byte(r.value), nil)
			if err != nil {
				return fmt.Errorf("reindex %s: %w", r.key, err)
			}
			value, err := mergeColumns(opts, fields, text, r.cols)
			if err != nil {
				return fmt.Errorf("reindex %s: %w", r.key, err)
			}
			ixs, err := indexValues(opts, fields, string(value))
			if err != nil {
				return err
			}
			args := []any{r.key, string(value), version}
			set := "_value = $2, _rver = $3"
			for i, f := range fields {
				args = append(args, ixs[i])
				set += ", " + column(f) + " = " + indexCast(len(args), opts.Index[f].Type)
			}
			if _, err := tx.Exec(ctx, fmt.Sprintf("update %s set %s where _key = $1", bucket, set), args...); err != nil {
				return err
			}
			out.Processed++
		}
		return tx.QueryRow(ctx, fmt.Sprintf(`select count(*) from %s b where (_rver is null or _rver < $1) and %s`, bucket, ownedRow),
			version).Scan(&out.Remaining)
	})
	return out, err
}

// ClearReindexActive records that a bucket's rows are all reindexed, as
// Moray does once a reindexObjects pass finds nothing left: reindex_active
// becomes '{}'.
func ClearReindexActive(ctx context.Context, q Querier, bucket string) error {
	_, err := q.Exec(ctx, `update buckets_config set reindex_active = '{}' where name = $1`, bucket)
	return err
}

// morayInternalFields are the row fields every bucket can filter on.
var morayInternalFields = []string{"_etag", "_key", "_id", "_mtime", "_txn_snap"}

// UnusableFields are the filter's attributes that updateObjects and
// deleteMany refuse (Moray's checkOnlyUsableIndexes): those without an
// index, and those whose index is still being reindexed, each in the
// order moray-filter's forEach first meets it (leaves left to right).
func UnusableFields(opts BucketOptions, f *Filter) (unindexed, reindexing []string) {
	unindexed, reindexing = []string{}, []string{}
	busy := opts.reindexing()
	var walk func(*Filter)
	walk = func(f *Filter) {
		for _, k := range f.children {
			walk(k)
		}
		if len(f.children) > 0 || f.attr == "" || containsString(morayInternalFields, f.attr) {
			return
		}
		if _, ok := opts.Index[f.attr]; !ok && !containsString(unindexed, f.attr) {
			unindexed = append(unindexed, f.attr)
		}
		if busy[f.attr] && !containsString(reindexing, f.attr) {
			reindexing = append(reindexing, f.attr)
		}
	}
	walk(f)
	return unindexed, reindexing
}

// UpdateFields reads updateObjects' fields as Moray's updateRows does:
// every field's value goes through the index's type first (an
// IndexTypeError), then, field by field, one that is not an index is
// NotIndexedError, one being reindexed NotIndexedError naming them, and a
// null NotNullableError. It returns the fields, in their order, and the
// column texts to set.
func UpdateFields(bucket string, opts BucketOptions, raw []byte) ([]string, []any, error) {
	text, err := MorayValue(raw, nil)
	if err != nil {
		return nil, nil, err
	}
	ordered := orderedFields(opts)
	ixs, err := indexValues(opts, ordered, text)
	if err != nil {
		return nil, nil, err
	}
	top, err := topFields(text)
	if err != nil {
		return nil, nil, err
	}
	busy := opts.reindexing()
	var fields []string
	var values []any
	for _, fl := range top {
		ix, ok := opts.Index[fl.key]
		if !ok {
			return nil, nil, &FilterError{"NotIndexedError", bucket + " does not have indexes that support " + text}
		}
		if busy[fl.key] {
			return nil, nil, &FilterError{"NotIndexedError", fmt.Sprintf("%s does not have indexes that support %s. Reindexing fields: %s. Unindexed fields: []",
				bucket, text, jsonStrings(reindexingList(opts)))}
		}
		if fl.val == "null" {
			return nil, nil, &FilterError{"NotNullableError", fmt.Sprintf("index %q (of type %q) cannot store null values", fl.key, ix.Type)}
		}
		fields = append(fields, fl.key)
		for i, f := range ordered {
			if f == fl.key {
				values = append(values, ixs[i])
			}
		}
	}
	return fields, values, nil
}

// reindexingList is Moray's getReindexingFields: reindex_active's fields,
// version by version.
func reindexingList(opts BucketOptions) []string {
	out := []string{}
	text := opts.Config.ReindexActive
	if text == "" {
		return out
	}
	// Object keys in their stored order, as JSON.parse keeps them.
	top, err := topFields(text)
	if err != nil {
		return out
	}
	for _, v := range top {
		var fs []string
		json.Unmarshal([]byte(v.val), &fs)
		out = append(out, fs...)
	}
	return out
}

// jsonStrings is an array of strings as Moray's errors print it: verror's
// %j is extsprintf's, which writes util.inspect's form ([ 'a', 'b' ]).
func jsonStrings(list []string) string {
	if len(list) == 0 {
		return "[]"
	}
	quoted := make([]string, len(list))
	for i, s := range list {
		quoted[i] = "'" + strings.NewReplacer(`\`, `\\`, "'", `\'`, "\n", `\n`).Replace(s) + "'"
	}
	return "[ " + strings.Join(quoted, ", ") + " ]"
}

// NotIndexedFilter is Moray's NotIndexedError for a filter with unusable
// fields.
func NotIndexedFilter(bucket, filter string, unindexed, reindexing []string) error {
	return &FilterError{"NotIndexedError", fmt.Sprintf("%s does not have indexes that support %s. Reindexing fields: %s. Unindexed fields: %s",
		bucket, filter, jsonStrings(reindexing), jsonStrings(unindexed))}
}
