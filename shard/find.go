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
	Sort          []Sort
	NoCount       bool
	// CheckVnode, when set, first runs the read fence on Vnode: a find
	// routed by a hash key then fails over to the shard the next ring names
	// instead of answering from one that gave the vnode away.
	CheckVnode bool
	Vnode      int32
}

// Record is a found object and the number of objects the filter matched.
type Record struct {
	Object
	Count int64
}

// FindObjects runs a filter as SQL on the bucket's columns, only over the
// vnodes the shard owns, so rows left behind by a move never show.
func FindObjects(ctx context.Context, q Batcher, bucket string, opts BucketOptions, f *Filter, fo FindOptions) ([]Record, error) {
	if err := ValidateBucket(bucket); err != nil {
		return nil, err
	}
	var args []any
	where, err := f.compile(bucket, opts.IndexColumn, &args)
	if err != nil {
		var fe *FilterError
		if errors.As(err, &fe) {
			return nil, err
		}
		return nil, queryError{err}
	}
	order := "_id"
	if len(fo.Sort) > 0 {
		parts := make([]string, len(fo.Sort))
		for i, s := range fo.Sort {
			if s.Attribute == "" {
				return nil, fmt.Errorf("%w: sort needs an attribute", ErrInvalidQuery)
			}
			if strings.IndexByte(s.Attribute, 0) >= 0 {
				// An unindexed attribute is a literal in the SQL text,
				// which cannot hold a NUL.
				return nil, fmt.Errorf("%w: sort attribute %q holds a NUL byte, which PostgreSQL text cannot", ErrInvalidQuery, s.Attribute)
			}
			parts[i] = opts.IndexColumn(s.Attribute).Expr
			if s.Desc {
				parts[i] += " desc"
			}
		}
		order = strings.Join(parts, ", ") + ", _id"
	}
	count := "count(*) over ()"
	if fo.NoCount {
		count = "0::bigint"
	}
	if fo.Limit < 0 || fo.Offset < 0 {
		return nil, fmt.Errorf("%w: limit and offset must not be negative", ErrInvalidQuery)
	}
	args = append(args, fo.Limit, fo.Offset)
	fields := orderedFields(opts)
	sql := fmt.Sprintf(`select _key, _value, _etag, _mtime, _vnode, _id, _txn_snap%s, %s from %s b
		where reshard_owns(b._vnode) and %s
		order by %s limit $%d offset $%d`, indexReadSQL(fields), count, quoteIdent(bucket), where, order, len(args)-1, len(args))
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
	var dropped []bool
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Record, error) {
		var o Record
		var stored string
		var mtime, vnode *int64
		var snap *int32
		cols := make([][]byte, len(fields))
		dest := []any{&o.Key, &stored, &o.Etag, &mtime, &vnode, &o.ID, &snap}
		for i := range cols {
			dest = append(dest, &cols[i])
		}
		if err := r.Scan(append(dest, &o.Count)...); err != nil {
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
		var count *int64
		if !fo.NoCount {
			count = &o.Count
		}
		js, err := jsRowValue(opts, fields, v, cols, o.Object, count)
		if err != nil {
			return o, err
		}
		dropped = append(dropped, !f.Matches(opts, js))
		return o, nil
	})
	if err != nil {
		return nil, err
	}
	kept := out[:0]
	for i, rec := range out {
		if !dropped[i] {
			kept = append(kept, rec)
		}
	}
	return kept, br.Close()
}
