package shard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// Object is one row of a bucket.
type Object struct {
	Key string `json:"key"`
	// Value is the value as a client sees it: JSON with no "vnode", which
	// electric-moray strips on reads. A write takes it as the client sent it.
	Value json.RawMessage `json:"value"`
	Etag  string          `json:"etag"`
	Mtime int64           `json:"mtime"` // milliseconds since the epoch, as Moray keeps it
	Vnode int32           `json:"vnode"`
	ID    int64           `json:"-"` // the row's _id, which Moray clients read back
	// TxnSnap is _txn_snap, set in guaranteeOrder buckets.
	TxnSnap *int64 `json:"-"`
	// Headers are the write's options.headers, which the bucket's post
	// triggers see as req.headers (JSON; none is {}).
	Headers json.RawMessage `json:"-"`
}

var (
	ErrObjectNotFound = errors.New("object not found")
	ErrEtagMismatch   = errors.New("etag does not match")
)

// Absent as ifMatch makes a put succeed only if the object does not exist
// yet (Moray's null etag, HTTP's If-None-Match: *). Etags are hex, so the
// word can never be one.
const Absent = "absent"

// EtagError is an etag mismatch with the etag the object has ("" when it
// does not exist); it matches ErrEtagMismatch.
type EtagError struct{ Expected, Actual string }

func (e *EtagError) Error() string {
	return fmt.Sprintf("etag does not match: expected %q, found %q", e.Expected, e.Actual)
}

func (e *EtagError) Is(target error) bool { return target == ErrEtagMismatch }

// Row is one object as Moray's put stores it: the _value text (the value
// with electric-moray's "vnode"), its etag, and the index columns.
type Row struct {
	Key    string
	Value  string
	Etag   string
	Vnode  int64
	Mtime  int64
	Fields []string // the bucket's index fields, in column order
	Index  []any    // each field's text for its column, nil for NULL
	// TxnSnap is the write's number in a guaranteeOrder bucket.
	TxnSnap *int64
}

// NewRow makes the row a put of value to vnode stores, exactly as
// electric-moray and Moray would: value.vnode set, JSON.stringify'd,
// CRC-32 etag, index columns from the value's fields.
func NewRow(opts BucketOptions, key string, value []byte, vnode int64) (Row, error) {
	text, err := MorayValue(value, &vnode)
	if err != nil {
		return Row{}, err
	}
	fields := orderedFields(opts)
	ix, err := indexValues(opts, fields, text)
	if err != nil {
		return Row{}, err
	}
	return Row{Key: key, Value: text, Etag: MorayEtag(text), Vnode: vnode, Mtime: time.Now().UnixMilli(), Fields: fields, Index: ix}, nil
}

// Columns are the row's columns for COPY, in the order of Values.
func (r Row) Columns() []string {
	return append([]string{"_key", "_value", "_etag", "_mtime", "_vnode"}, columns(r.Fields)...)
}

func columns(fields []string) []string {
	out := make([]string, len(fields))
	for i, f := range fields {
		out[i] = column(f)
	}
	return out
}

// Values are the row's values for COPY. Index texts go as text: COPY's
// input parsing of each column type is the cast Moray's parameters get.
func (r Row) Values() []any {
	return append([]any{r.Key, r.Value, r.Etag, r.Mtime, r.Vnode}, r.Index...)
}

// Batcher runs a batch: a pool, connection or transaction.
type Batcher interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Every operation checks the fence explicitly and first, in the same
// implicit transaction (one pipelined batch, one round trip): a conditional
// write or a read that matches no row would otherwise never reach the
// trigger, and would answer "not found" from a shard that no longer owns
// the vnode instead of being fenced.

// PutObject writes an object as Moray's putObject does. With ifMatch
// set, it replaces only an object whose etag matches; Absent requires that
// it does not exist. An overwrite keeps the row's _id.
func PutObject(ctx context.Context, q DB, bucket string, opts BucketOptions, o Object, ifMatch string) (Object, error) {
	if err := ValidateBucket(bucket); err != nil {
		return o, err
	}
	if opts.HasTriggers() {
		set, err := opts.Triggers()
		if err != nil {
			return o, err
		}
		err = inTx(ctx, q, func(tx pgx.Tx) error {
			var err error
			o, err = putTriggered(ctx, tx, bucket, opts, set, o, ifMatch)
			return err
		})
		return o, err
	}
	if opts.GuaranteeOrder() {
		err := inTx(ctx, q, func(tx pgx.Tx) error {
			var err error
			o, err = putOrdered(ctx, tx, bucket, opts, o, ifMatch)
			return err
		})
		return o, err
	}
	return sendPut(ctx, q, bucket, opts, o, ifMatch)
}

// sendPut sends a put as one pipelined batch, one implicit transaction
// unless q is a transaction already, and reads its result.
func sendPut(ctx context.Context, q Batcher, bucket string, opts BucketOptions, o Object, ifMatch string) (Object, error) {
	b := &pgx.Batch{}
	if err := queuePut(b, bucket, opts, &o, ifMatch); err != nil {
		return o, err
	}
	br := q.SendBatch(ctx, b)
	defer br.Close()
	if err := readPut(br, &o, ifMatch); err != nil {
		return o, err
	}
	return o, br.Close()
}

// DB is a pool, connection or transaction.
type DB interface {
	Batcher
	Beginner
}

// putOrdered is a put into a guaranteeOrder bucket, inside tx: as Moray
// does, it takes the bucket's <bucket>_locking_serial row, which orders
// every write of the bucket, and numbers the write in _txn_snap.
func putOrdered(ctx context.Context, tx pgx.Tx, bucket string, opts BucketOptions, o Object, ifMatch string) (Object, error) {
	// The fence first, so a fenced write never waits on the serial.
	if _, err := tx.Exec(ctx, `select reshard_fence_check($1)`, int64(o.Vnode)); err != nil {
		return o, err
	}
	snap, err := nextTxnSnap(ctx, tx, bucket)
	if err != nil {
		return o, err
	}
	o.TxnSnap = &snap
	return sendPut(ctx, tx, bucket, opts, o, ifMatch)
}

// nextTxnSnap takes the bucket's write serial and returns the next number.
func nextTxnSnap(ctx context.Context, tx pgx.Tx, bucket string) (int64, error) {
	var snap int64
	if err := tx.QueryRow(ctx, fmt.Sprintf(`update %s_locking_serial set id = id + 1 returning id`, bucket)).Scan(&snap); err != nil {
		return 0, fmt.Errorf("%s: write serial: %w", bucket, err)
	}
	return snap, nil
}

// queuePut queues a put's fence check, write and, for a conditional put,
// the read that explains a write that matched nothing.
func queuePut(b *pgx.Batch, bucket string, opts BucketOptions, o *Object, ifMatch string) error {
	row, err := NewRow(opts, o.Key, o.Value, int64(o.Vnode))
	if err != nil {
		return err
	}
	// Moray numbers the write after it has stringified the value, so
	// _txn_snap is in its column only.
	row.TxnSnap = o.TxnSnap
	o.Etag, o.Mtime = row.Etag, row.Mtime
	b.Queue(`select reshard_fence_check($1)`, row.Vnode)
	cols := []string{"_value", "_etag", "_mtime", "_vnode"}
	vals := []string{"$2", "$3", "$4", "$5"}
	args := []any{row.Key, row.Value, row.Etag, row.Mtime, row.Vnode}
	for i, f := range row.Fields {
		cols = append(cols, column(f))
		args = append(args, row.Index[i])
		vals = append(vals, indexCast(len(args), opts.Index[f].Type))
	}
	if row.TxnSnap != nil {
		cols = append(cols, "_txn_snap")
		args = append(args, *row.TxnSnap)
		vals = append(vals, fmt.Sprintf("$%d::integer", len(args)))
	}
	// A bucket with reindex_active marks each row written with its
	// version; Moray does so even once reindexObjects has emptied it ('{}').
	if opts.Config.ReindexActive != "" {
		cols = append(cols, "_rver")
		args = append(args, opts.Version())
		vals = append(vals, fmt.Sprintf("$%d::integer", len(args)))
	}
	set := make([]string, len(cols))
	for i, c := range cols {
		set[i] = c + " = " + vals[i]
	}
	switch ifMatch {
	case "":
		ex := make([]string, len(cols))
		for i, c := range cols {
			ex[i] = c + " = excluded." + c
		}
		b.Queue(fmt.Sprintf(`insert into %s (_key, %s) values ($1, %s)
			on conflict (_key) do update set %s returning _id`, bucket, strings.Join(cols, ", "), strings.Join(vals, ", "), strings.Join(ex, ", ")),
			args...)
		return nil
	case Absent:
		b.Queue(fmt.Sprintf(`insert into %s (_key, %s) values ($1, %s)
			on conflict (_key) do nothing returning _id`, bucket, strings.Join(cols, ", "), strings.Join(vals, ", ")),
			args...)
	default:
		args = append(args, etagParam(ifMatch))
		b.Queue(fmt.Sprintf(`update %s set %s where _key = $1 and ($%[3]d = '*' or _etag = $%[3]d) returning _id`, bucket, strings.Join(set, ", "), len(args)),
			args...)
	}
	b.Queue(fmt.Sprintf(`select _etag from %s where _key = $1`, bucket), o.Key)
	return nil
}

func readPut(br pgx.BatchResults, o *Object, ifMatch string) error {
	if _, err := br.Exec(); err != nil {
		return err
	}
	err := br.QueryRow().Scan(&o.ID)
	if ifMatch == "" || !errors.Is(err, pgx.ErrNoRows) {
		return err // the batch's Close drains the explaining read
	}
	var actual string
	err = br.QueryRow().Scan(&actual)
	switch {
	case errors.Is(err, pgx.ErrNoRows) && ifMatch == Absent:
		return fmt.Errorf("put %s: the write matched nothing yet no object exists", o.Key)
	case errors.Is(err, pgx.ErrNoRows) && ifMatch == "*":
		return ErrObjectNotFound
	case errors.Is(err, pgx.ErrNoRows):
		return &EtagError{Expected: ifMatch, Actual: ""}
	case err != nil:
		return err
	}
	return &EtagError{Expected: ifMatch, Actual: actual}
}

// GetObject reads an object; a vnode the shard does not own is fenced.
// The value is what a client reads through electric-moray and Moray.
func GetObject(ctx context.Context, q Batcher, bucket string, opts BucketOptions, key string, vnode int32) (Object, error) {
	if err := ValidateBucket(bucket); err != nil {
		return Object{}, err
	}
	fields := orderedFields(opts)
	b := &pgx.Batch{}
	b.Queue(`select reshard_read_check($1)`, int64(vnode))
	b.Queue(fmt.Sprintf(`select _value, _etag, _mtime, _id, _txn_snap%s from %s where _key = $1`, indexReadSQL(fields), bucket), key)
	br := q.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return Object{}, err
	}
	o := Object{Key: key, Vnode: vnode}
	var stored string
	var mtime *int64
	var snap *int32
	cols := make([][]byte, len(fields))
	dest := []any{&stored, &o.Etag, &mtime, &o.ID, &snap}
	for i := range cols {
		dest = append(dest, &cols[i])
	}
	err := br.QueryRow().Scan(dest...)
	if errors.Is(err, pgx.ErrNoRows) {
		return Object{}, ErrObjectNotFound
	}
	if err != nil {
		return Object{}, err
	}
	if mtime != nil {
		o.Mtime = *mtime
	}
	if snap != nil {
		n := int64(*snap)
		o.TxnSnap = &n
	}
	if o.Value, err = readValue(opts, fields, stored)(cols); err != nil {
		return Object{}, fmt.Errorf("%s %s: stored value: %w", bucket, key, err)
	}
	return o, nil
}

// DeleteObject deletes an object, only if its etag matches when ifMatch is set.
func DeleteObject(ctx context.Context, q Batcher, bucket, key string, vnode int32, ifMatch string) error {
	if err := ValidateBucket(bucket); err != nil {
		return err
	}
	b := &pgx.Batch{}
	queueDelete(b, bucket, key, vnode, ifMatch)
	br := q.SendBatch(ctx, b)
	defer br.Close()
	if err := readDelete(br, ifMatch); err != nil {
		return err
	}
	return br.Close()
}

func queueDelete(b *pgx.Batch, bucket, key string, vnode int32, ifMatch string) {
	b.Queue(`select reshard_fence_check($1)`, int64(vnode))
	b.Queue(fmt.Sprintf(`delete from %s where _key = $1 and ($2 = '' or $2 = '*' or _etag = $2)`, bucket), key, etagParam(ifMatch))
	b.Queue(fmt.Sprintf(`select _etag from %s where _key = $1`, bucket), key)
}

// etagParam is an expected etag as a query parameter. One PostgreSQL text
// cannot hold (a NUL, bytes that are not UTF-8) matches no etag, which
// are hex, as Moray's comparison in JavaScript finds: it is sent as one
// that cannot match either, so the answer is an etag conflict.
func etagParam(ifMatch string) string {
	if strings.IndexByte(ifMatch, 0) >= 0 || !utf8.ValidString(ifMatch) {
		return "\uFFFD"
	}
	return ifMatch
}

func readDelete(br pgx.BatchResults, ifMatch string) error {
	if _, err := br.Exec(); err != nil {
		return err
	}
	tag, err := br.Exec()
	if err != nil {
		return err
	}
	var actual string
	err = br.QueryRow().Scan(&actual)
	switch {
	case tag.RowsAffected() > 0:
		return nil
	case errors.Is(err, pgx.ErrNoRows):
		return ErrObjectNotFound
	case err != nil:
		return err
	}
	return &EtagError{Expected: ifMatch, Actual: actual}
}

// Op is one write of a batch.
type Op struct {
	Bucket  string
	Options BucketOptions // the bucket's index, for a put
	Delete  bool
	Object  Object // Key, Value and Vnode; a put fills Etag, Mtime and ID
	IfMatch string
	// Bulk, when set, makes the op an updateObjects or deleteMany, run in
	// the batch's transaction; Result is what it did.
	Bulk   *Bulk
	Result BulkResult
}

// Batch runs writes in one transaction, all or none: Moray's batch, whose
// keys all hash to one vnode, so one shard holds them.
func Batch(ctx context.Context, db interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}, ops []Op) ([]Op, error) {
	for i := range ops {
		if err := ValidateBucket(ops[i].Bucket); err != nil {
			return nil, err
		}
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	for i := range ops {
		// Triggers and bulk ops run one op at a time, in order.
		if ops[i].Options.HasTriggers() || ops[i].Bulk != nil {
			if err := batchTriggered(ctx, tx, ops); err != nil {
				return nil, err
			}
			return ops, tx.Commit(ctx)
		}
	}
	for i := range ops {
		op := &ops[i]
		if op.Delete || !op.Options.GuaranteeOrder() {
			continue
		}
		if _, err := tx.Exec(ctx, `select reshard_fence_check($1)`, int64(op.Object.Vnode)); err != nil {
			return nil, &BatchError{Index: i, Err: err}
		}
		snap, err := nextTxnSnap(ctx, tx, op.Bucket)
		if err != nil {
			return nil, &BatchError{Index: i, Err: err}
		}
		op.Object.TxnSnap = &snap
	}
	b := &pgx.Batch{}
	for i := range ops {
		op := &ops[i]
		if op.Delete {
			queueDelete(b, op.Bucket, op.Object.Key, op.Object.Vnode, op.IfMatch)
		} else {
			if err := queuePut(b, op.Bucket, op.Options, &op.Object, op.IfMatch); err != nil {
				return nil, &BatchError{Index: i, Err: err}
			}
		}
	}
	br := tx.SendBatch(ctx, b)
	for i := range ops {
		op := &ops[i]
		if op.Delete {
			err = readDelete(br, op.IfMatch)
		} else {
			err = readPut(br, &op.Object, op.IfMatch)
			if err == nil && op.IfMatch != "" {
				_, err = br.Exec() // the explaining read, unused
			}
		}
		if err != nil {
			br.Close()
			return nil, &BatchError{Index: i, Err: err}
		}
	}
	if err := br.Close(); err != nil {
		return nil, err
	}
	return ops, tx.Commit(ctx)
}

// BatchError says which op of a batch failed.
type BatchError struct {
	Index int
	Err   error
}

func (e *BatchError) Error() string { return fmt.Sprintf("batch request %d: %v", e.Index, e.Err) }
func (e *BatchError) Unwrap() error { return e.Err }

// ListObjects returns up to limit objects whose keys start with prefix, in
// key order, only from vnodes the shard owns: rows left behind by a move
// are not listed.
func ListObjects(ctx context.Context, q Querier, bucket, prefix string, limit int) ([]Object, error) {
	if err := ValidateBucket(bucket); err != nil {
		return nil, err
	}
	rows, err := q.Query(ctx, fmt.Sprintf(`select b._key, b._value, b._etag, b._mtime, b._vnode
		from %s b
		where reshard_owns(b._vnode) and b._key >= $1 and left(b._key, length($1)) = $1
		order by b._key limit $2`, bucket), prefix, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Object, error) {
		var o Object
		var stored string
		var mtime, vnode *int64
		if err := r.Scan(&o.Key, &stored, &o.Etag, &mtime, &vnode); err != nil {
			return o, err
		}
		if mtime != nil {
			o.Mtime = *mtime
		}
		if vnode != nil {
			o.Vnode = int32(*vnode)
		}
		v, err := ClientValue(stored)
		o.Value = v
		return o, err
	})
}
