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
}

var (
	ErrObjectNotFound = errors.New("object not found")
	ErrEtagMismatch   = errors.New("etag does not match")
)

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
// whose etag matches; ifMatch "*" requires only that it exists.
func PutObject(ctx context.Context, q Batcher, bucket string, o Object, ifMatch string) (Object, error) {
	if err := ValidateBucket(bucket); err != nil {
		return o, err
	}
	o.Etag = Etag(o.Value)
	o.Mtime = time.Now().UnixMilli()
	t := quoteIdent(bucket)
	b := &pgx.Batch{}
	b.Queue(`select reshard_fence_check($1)`, o.Vnode)
	if ifMatch == "" {
		b.Queue(fmt.Sprintf(`insert into %s (_key, _value, _etag, _mtime, _vnode) values ($1, $2, $3, $4, $5)
			on conflict (_key, _vnode) do update set _value = excluded._value, _etag = excluded._etag, _mtime = excluded._mtime`, t),
			o.Key, o.Value, o.Etag, o.Mtime, o.Vnode)
	} else {
		b.Queue(fmt.Sprintf(`update %s set _value = $3, _etag = $4, _mtime = $5
			where _key = $1 and _vnode = $2 and ($6 = '*' or _etag = $6)`, t),
			o.Key, o.Vnode, o.Value, o.Etag, o.Mtime, ifMatch)
		b.Queue(fmt.Sprintf(`select count(*) from %s where _key = $1 and _vnode = $2`, t), o.Key, o.Vnode)
	}
	br := q.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return o, err
	}
	tag, err := br.Exec()
	if err != nil {
		return o, err
	}
	if ifMatch != "" && tag.RowsAffected() == 0 {
		var n int
		if err := br.QueryRow().Scan(&n); err != nil {
			return o, err
		}
		if n == 0 {
			return o, ErrObjectNotFound
		}
		return o, ErrEtagMismatch
	}
	return o, br.Close()
}

// GetObject reads an object; a vnode the shard does not own is fenced.
func GetObject(ctx context.Context, q Batcher, bucket, key string, vnode int32) (Object, error) {
	if err := ValidateBucket(bucket); err != nil {
		return Object{}, err
	}
	b := &pgx.Batch{}
	b.Queue(`select reshard_read_check($1)`, vnode)
	b.Queue(fmt.Sprintf(`select _value, _etag, _mtime from %s where _key = $1 and _vnode = $2`, quoteIdent(bucket)), key, vnode)
	br := q.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return Object{}, err
	}
	o := Object{Key: key, Vnode: vnode}
	err := br.QueryRow().Scan(&o.Value, &o.Etag, &o.Mtime)
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
	t := quoteIdent(bucket)
	b := &pgx.Batch{}
	b.Queue(`select reshard_fence_check($1)`, vnode)
	b.Queue(fmt.Sprintf(`delete from %s where _key = $1 and _vnode = $2 and ($3 = '' or $3 = '*' or _etag = $3)`, t), key, vnode, ifMatch)
	b.Queue(fmt.Sprintf(`select count(*) from %s where _key = $1 and _vnode = $2`, t), key, vnode)
	br := q.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return err
	}
	tag, err := br.Exec()
	if err != nil {
		return err
	}
	var left int
	if err := br.QueryRow().Scan(&left); err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		if left > 0 {
			return ErrEtagMismatch
		}
		return ErrObjectNotFound
	}
	return br.Close()
}

// ListObjects returns up to limit objects whose keys start with prefix, in
// key order, only from vnodes the shard owns: rows left behind by a move
// are not listed.
func ListObjects(ctx context.Context, q Querier, bucket, prefix string, limit int) ([]Object, error) {
	if err := ValidateBucket(bucket); err != nil {
		return nil, err
	}
	rows, err := q.Query(ctx, fmt.Sprintf(`select b._key, b._value, b._etag, b._mtime, b._vnode
		from %s b join reshard_vnodes v on v.vnode = b._vnode
		where b._key >= $1 and left(b._key, length($1)) = $1
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
