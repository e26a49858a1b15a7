package shard

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ErrInvalidQuery: the filter cannot run on this bucket's columns.
var ErrInvalidQuery = errors.New("invalid query")

// queryError marks the filter's own errors, which already say "invalid query".
type queryError struct{ error }

func (e queryError) Is(target error) bool { return target == ErrInvalidQuery }
func (e queryError) Unwrap() error        { return e.error }

// Sort orders a find by one attribute.
type Sort struct {
	Attribute string
	Desc      bool
}

// FindOptions are findObjects' limit, offset and sort.
type FindOptions struct {
	Limit, Offset int
	// NoLimit drops the limit, as Moray's noLimit does.
	NoLimit bool
	Sort    []Sort
	NoCount bool
	// CheckVnode, when set, first runs the read fence on Vnode: a find
	// routed by a hash key then fails over to the shard the next ring names
	// instead of answering from one that gave the vnode away.
	CheckVnode bool
	Vnode      int32
	// RingVnodes, when set, is a bitmap of the vnodes the router's ring
	// maps to this shard (vnode v at bit v%8 of byte v/8, as PostgreSQL's
	// get_bit reads it). Rows are then kept by it instead of by the
	// shard's ownership table, with rows without a vnode (shard-local)
	// kept too: a find gathered from every shard then counts each row of
	// a moving vnode once, on the shard the ring it started with names,
	// even while the vnode's rows are on both shards.
	RingVnodes []byte
	// SortKeys selects each sort attribute's value as text (Found.SortKeys)
	// for a merge of several shards' sorted rows.
	SortKeys bool
}

// Record is a found object and the number of objects the filter matched.
type Record struct {
	Object
	Count int64
}

// Found is a row of a streamed find, before Moray's JavaScript re-check.
type Found struct {
	Record
	// SortKeys are the sort attributes' values as PostgreSQL's text (nil
	// for NULL), with FindOptions.SortKeys.
	SortKeys []*string
	js       map[string]any
}

// Matches is Moray's JavaScript re-check of the row against f, with count
// as the value's _count (nil: a no_count find, where Moray leaves it unset).
func (r *Found) Matches(opts BucketOptions, f *Filter, count *int64) bool {
	if count != nil {
		r.js["_count"] = float64(*count)
	} else {
		r.js["_count"] = jsUndefined{}
	}
	return f.Matches(opts, r.js)
}

// findQuery is the SQL of a find and its arguments.
func findQuery(bucket string, opts BucketOptions, f *Filter, fo FindOptions) (string, []any, []string, error) {
	if err := ValidateBucket(bucket); err != nil {
		return "", nil, nil, err
	}
	var args []any
	where, err := f.compile(bucket, opts.IndexColumn, &args)
	if err != nil {
		var fe *FilterError
		if errors.As(err, &fe) {
			return "", nil, nil, err
		}
		return "", nil, nil, queryError{err}
	}
	order := "_id"
	keys := ""
	if len(fo.Sort) > 0 {
		parts := make([]string, len(fo.Sort))
		for i, s := range fo.Sort {
			if s.Attribute == "" {
				return "", nil, nil, fmt.Errorf("%w: sort needs an attribute", ErrInvalidQuery)
			}
			if strings.IndexByte(s.Attribute, 0) >= 0 {
				// An unindexed attribute is a literal in the SQL text,
				// which cannot hold a NUL.
				return "", nil, nil, fmt.Errorf("%w: sort attribute %q holds a NUL byte, which PostgreSQL text cannot", ErrInvalidQuery, s.Attribute)
			}
			expr := opts.IndexColumn(s.Attribute).Expr
			parts[i] = expr
			if s.Desc {
				parts[i] += " desc"
			}
			if fo.SortKeys {
				// Named apart: ORDER BY reads a bare name as an output
				// column first, and (n)::text would be named n.
				keys += fmt.Sprintf(", (%s)::text as reshard_sort_key_%d", expr, i)
			}
		}
		order = strings.Join(parts, ", ") + ", _id"
	}
	count := "count(*) over ()"
	if fo.NoCount {
		count = "0::bigint"
	}
	if fo.Limit < 0 || fo.Offset < 0 {
		return "", nil, nil, fmt.Errorf("%w: limit and offset must not be negative", ErrInvalidQuery)
	}
	owned := "reshard_owns(b._vnode)"
	if fo.RingVnodes != nil {
		// Checked against the bitmap's size first: get_bit fails past it.
		args = append(args, fo.RingVnodes, int64(len(fo.RingVnodes))*8)
		owned = fmt.Sprintf(`case when b._vnode is null then true when b._vnode < 0 or b._vnode >= $%d then false
			else get_bit($%d::bytea, b._vnode) = 1 end`, len(args), len(args)-1)
	}
	limit := "all"
	if !fo.NoLimit {
		args = append(args, fo.Limit)
		limit = fmt.Sprintf("$%d", len(args))
	}
	args = append(args, fo.Offset)
	fields := orderedFields(opts)
	sql := fmt.Sprintf(`select _key, _value, _etag, _mtime, _vnode, _id, _txn_snap%s, %s%s from %s b
		where %s and %s
		order by %s limit %s offset $%d`, indexReadSQL(fields), count, keys, quoteIdent(bucket), owned, where, order, limit, len(args))
	return sql, args, fields, nil
}

// scanFound reads one row of findQuery's SQL.
func scanFound(r pgx.CollectableRow, opts BucketOptions, fields []string, fo FindOptions) (Found, error) {
	var o Found
	var stored string
	var mtime, vnode *int64
	var snap *int32
	cols := make([][]byte, len(fields))
	dest := []any{&o.Key, &stored, &o.Etag, &mtime, &vnode, &o.ID, &snap}
	for i := range cols {
		dest = append(dest, &cols[i])
	}
	dest = append(dest, &o.Count)
	if fo.SortKeys {
		o.SortKeys = make([]*string, len(fo.Sort))
		for i := range o.SortKeys {
			dest = append(dest, &o.SortKeys[i])
		}
	}
	if err := r.Scan(dest...); err != nil {
		return o, err
	}
	if mtime != nil {
		o.Mtime = *mtime
	}
	if vnode != nil {
		o.Vnode = int32(*vnode)
	}
	if snap != nil {
		n := int64(*snap)
		o.TxnSnap = &n
	}
	v, err := readValue(opts, fields, stored)(cols)
	o.Value = v
	if err != nil {
		return o, err
	}
	o.js, err = jsRowValue(opts, fields, v, cols, o.Object, nil)
	return o, err
}

// FindObjects runs a filter as SQL on the bucket's columns, only over the
// vnodes the shard owns, so rows left behind by a move never show.
func FindObjects(ctx context.Context, q Batcher, bucket string, opts BucketOptions, f *Filter, fo FindOptions) ([]Record, error) {
	sql, args, fields, err := findQuery(bucket, opts, f, fo)
	if err != nil {
		return nil, err
	}
	b := &pgx.Batch{}
	if fo.CheckVnode {
		b.Queue(`select reshard_read_check($1)`, int64(fo.Vnode))
	}
	b.Queue(sql, args...)
	br := q.SendBatch(ctx, b)
	defer br.Close()
	if fo.CheckVnode {
		if _, err := br.Exec(); err != nil {
			return nil, err
		}
	}
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	// Rows Moray's JavaScript test would drop are left out after the
	// limit, as Moray leaves them out; the count is PostgreSQL's.
	found, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Found, error) {
		return scanFound(r, opts, fields, fo)
	})
	if err != nil {
		return nil, err
	}
	var kept []Record
	for i := range found {
		var count *int64
		if !fo.NoCount {
			count = &found[i].Count
		}
		if found[i].Matches(opts, f, count) {
			kept = append(kept, found[i].Record)
		}
	}
	return kept, br.Close()
}

// FindCursor streams a find's rows as PostgreSQL sends them: the client
// reads them off the connection one at a time, so a large answer is never
// held whole.
type FindCursor struct {
	rows   pgx.Rows
	opts   BucketOptions
	fields []string
	fo     FindOptions
	err    error
}

// FindStream starts a find and returns its rows, not yet re-checked:
// the caller applies Found.Matches where Moray would.
func FindStream(ctx context.Context, q Querier, bucket string, opts BucketOptions, f *Filter, fo FindOptions) (*FindCursor, error) {
	sql, args, fields, err := findQuery(bucket, opts, f, fo)
	if err != nil {
		return nil, err
	}
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return &FindCursor{rows: rows, opts: opts, fields: fields, fo: fo}, nil
}

// Next returns the next row; false at the end or on an error (Err).
func (c *FindCursor) Next() (Found, bool) {
	if c.err != nil || !c.rows.Next() {
		return Found{}, false
	}
	r, err := scanFound(c.rows, c.opts, c.fields, c.fo)
	if err != nil {
		c.err = err
		c.rows.Close()
		return Found{}, false
	}
	return r, true
}

// Err is the error that ended the rows, if any.
func (c *FindCursor) Err() error {
	if c.err != nil {
		return c.err
	}
	return c.rows.Err()
}

// Close ends the query, reading what is left of it.
func (c *FindCursor) Close() { c.rows.Close() }

// MergeOrder orders rows of several shards' sorted finds as one find's
// ORDER BY would, by PostgreSQL's own comparison of each sort attribute's
// column type (collation, NULLs last ascending and first descending,
// numeric, inet, array and range ordering): keys[i] are row i's
// Found.SortKeys. Ties keep the rows' order in keys, so rows of one shard,
// listed in the order it sent them, stay in that order. It returns the row
// indexes in order.
func MergeOrder(ctx context.Context, q Querier, opts BucketOptions, sorts []Sort, keys [][]*string) ([]int, error) {
	n := len(keys)
	idx := make([]int32, n)
	for i := range idx {
		idx[i] = int32(i)
	}
	args := []any{idx}
	cols := []string{"i"}
	order := make([]string, 0, len(sorts)+1)
	for s, sort := range sorts {
		col := make([]*string, n)
		for i, k := range keys {
			col[i] = k[s]
		}
		args = append(args, col)
		cols = append(cols, fmt.Sprintf("k%d", s))
		o := fmt.Sprintf("k%d::%s", s, sortType(opts.IndexColumn(sort.Attribute).Type))
		if sort.Desc {
			o += " desc"
		}
		order = append(order, o)
	}
	order = append(order, "i")
	params := make([]string, len(args))
	params[0] = "$1::int[]"
	for i := 1; i < len(args); i++ {
		params[i] = fmt.Sprintf("$%d::text[]", i+1)
	}
	rows, err := q.Query(ctx, fmt.Sprintf("select i from unnest(%s) as u(%s) order by %s",
		strings.Join(params, ", "), strings.Join(cols, ", "), strings.Join(order, ", ")), args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (int, error) {
		var i int32
		err := r.Scan(&i)
		return int(i), err
	})
}

// sortType is the column type a sort attribute's text is read back as:
// the index's column type, or jsonb for a field of the value.
func sortType(typ string) string {
	if t, ok := indexTypes[typ]; ok {
		return t.pg
	}
	return "jsonb"
}
