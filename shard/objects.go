package shard

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Object is one row of a bucket.
type Object struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
	Etag  string          `json:"etag"`
	Mtime int64           `json:"mtime"` // milliseconds since the epoch, as Moray keeps it
	Vnode int32           `json:"vnode"`
	ID    int64           `json:"-"` // the row's _id, which Moray clients read back
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

// Etag is a digest of the value, so the same value always has the same etag.
func Etag(value []byte) string {
	sum := sha256.Sum256(value)
	return hex.EncodeToString(sum[:8])
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

// PutObject writes an object. With ifMatch set, it replaces only an object
// whose etag matches; ifMatch "*" requires only that it exists, and Absent
// that it does not.
func PutObject(ctx context.Context, q Batcher, bucket string, o Object, ifMatch string) (Object, error) {
	if err := ValidateBucket(bucket); err != nil {
		return o, err
	}
	b := &pgx.Batch{}
	queuePut(b, bucket, &o, ifMatch)
	br := q.SendBatch(ctx, b)
	defer br.Close()
	if err := readPut(br, &o, ifMatch); err != nil {
		return o, err
	}
	return o, br.Close()
}

// queuePut queues a put's fence check, write and, for a conditional put,
// the read that explains a write that matched nothing.
func queuePut(b *pgx.Batch, bucket string, o *Object, ifMatch string) {
	o.Etag = Etag(o.Value)
	o.Mtime = time.Now().UnixMilli()
	t := quoteIdent(bucket)
	b.Queue(`select reshard_fence_check($1)`, o.Vnode)
	switch ifMatch {
	case "":
		b.Queue(fmt.Sprintf(`insert into %s (_key, _value, _etag, _mtime, _vnode) values ($1, $2, $3, $4, $5)
			on conflict (_key, _vnode) do update set _value = excluded._value, _etag = excluded._etag, _mtime = excluded._mtime
			returning _id`, t),
			o.Key, o.Value, o.Etag, o.Mtime, o.Vnode)
		return
	case Absent:
		b.Queue(fmt.Sprintf(`insert into %s (_key, _value, _etag, _mtime, _vnode) values ($1, $2, $3, $4, $5)
			on conflict (_key, _vnode) do nothing returning _id`, t),
			o.Key, o.Value, o.Etag, o.Mtime, o.Vnode)
	default:
		b.Queue(fmt.Sprintf(`update %s set _value = $3, _etag = $4, _mtime = $5
			where _key = $1 and _vnode = $2 and ($6 = '*' or _etag = $6) returning _id`, t),
			o.Key, o.Vnode, o.Value, o.Etag, o.Mtime, ifMatch)
	}
	b.Queue(fmt.Sprintf(`select _etag from %s where _key = $1 and _vnode = $2`, t), o.Key, o.Vnode)
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
	case errors.Is(err, pgx.ErrNoRows):
		return ErrObjectNotFound
	case err != nil:
		return err
	}
	return &EtagError{Expected: ifMatch, Actual: actual}
}

// GetObject reads an object; a vnode the shard does not own is fenced.
func GetObject(ctx context.Context, q Batcher, bucket, key string, vnode int32) (Object, error) {
	if err := ValidateBucket(bucket); err != nil {
		return Object{}, err
	}
	b := &pgx.Batch{}
	b.Queue(`select reshard_read_check($1)`, vnode)
	b.Queue(fmt.Sprintf(`select _value, _etag, _mtime, _id from %s where _key = $1 and _vnode = $2`, quoteIdent(bucket)), key, vnode)
	br := q.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return Object{}, err
	}
	o := Object{Key: key, Vnode: vnode}
	err := br.QueryRow().Scan(&o.Value, &o.Etag, &o.Mtime, &o.ID)
	if errors.Is(err, pgx.ErrNoRows) {
		return Object{}, ErrObjectNotFound
	}
	return o, err
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
	t := quoteIdent(bucket)
	b.Queue(`select reshard_fence_check($1)`, vnode)
	b.Queue(fmt.Sprintf(`delete from %s where _key = $1 and _vnode = $2 and ($3 = '' or $3 = '*' or _etag = $3)`, t), key, vnode, ifMatch)
	b.Queue(fmt.Sprintf(`select _etag from %s where _key = $1 and _vnode = $2`, t), key, vnode)
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
	Delete  bool
	Object  Object // Key, Value and Vnode; a put fills Etag, Mtime and ID
	IfMatch string
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
	b := &pgx.Batch{}
	for i := range ops {
		op := &ops[i]
		if op.Delete {
			queueDelete(b, op.Bucket, op.Object.Key, op.Object.Vnode, op.IfMatch)
		} else {
			queuePut(b, op.Bucket, &op.Object, op.IfMatch)
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
		order by b._key limit $2`, quoteIdent(bucket)), prefix, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Object, error) {
		var o Object
		err := r.Scan(&o.Key, &o.Value, &o.Etag, &o.Mtime, &o.Vnode)
		return o, err
	})
}
