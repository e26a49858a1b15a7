package shard

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/reshard/reshard/trigger"
)

// Moray runs a bucket's triggers inside the write's transaction: pre after
// it has locked the object's row (selectForUpdate) and before it checks the
// etag and writes, post after the write. A write to a bucket with triggers
// therefore runs as a real transaction, statement by statement, rather
// than as one pipelined batch, so that a trigger can query between them.
// Moray's updateObjects and deleteMany run no triggers.

// Triggers are the bucket's compiled triggers, nil when it has none. Sets
// are compiled once per config text and shared.
func (o BucketOptions) Triggers() (*trigger.Set, error) {
	return trigger.Load(o.Config.Pre, o.Config.Post)
}

// HasTriggers reports whether writes to the bucket run triggers.
func (o BucketOptions) HasTriggers() bool {
	return (o.Config.Pre != "" && o.Config.Pre != "[]") || (o.Config.Post != "" && o.Config.Post != "[]")
}

// TriggerRequest is the req a trigger of bucket sees for a write of o.
// Callers running their own writes (updates, deletes by filter) fill in
// the rest: Value, Update, ID.
func TriggerRequest(bucket string, opts BucketOptions, o Object) trigger.Request {
	return trigger.Request{Bucket: bucket, Key: o.Key, Schema: opts.WithConfig().Config.Index, Headers: o.Headers}
}

// putTriggered is Moray's put pipeline, inside tx: fence, lock the row,
// pre chain, etag check, write, post chain. With no triggers it is a
// plain put.
func putTriggered(ctx context.Context, tx pgx.Tx, bucket string, opts BucketOptions, set *trigger.Set, o Object, ifMatch string) (Object, error) {
	vnode := int64(o.Vnode)
	if _, err := tx.Exec(ctx, `select reshard_fence_check($1)`, vnode); err != nil {
		return o, err
	}
	var prev string
	err := tx.QueryRow(ctx, fmt.Sprintf(`select _etag from %s where _key = $1 for update`, bucket), o.Key).Scan(&prev)
	exists := err == nil
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return o, err
	}
	req := TriggerRequest(bucket, opts, o)
	req.Update = exists
	if set.HasPre() {
		// The value as electric-moray hands it to Moray: with its vnode.
		if req.Value, err = MorayValue(o.Value, &vnode); err != nil {
			return o, err
		}
		if err := set.RunPre(ctx, tx, &req); err != nil {
			return o, err
		}
		o.Key, o.Value = req.Key, []byte(req.Value)
	}
	switch {
	case ifMatch == "":
	case ifMatch == Absent && exists:
		return o, &EtagError{Expected: ifMatch, Actual: prev}
	case ifMatch == Absent:
	case !exists && ifMatch == "*":
		return o, ErrObjectNotFound
	case !exists:
		return o, &EtagError{Expected: ifMatch, Actual: ""}
	case ifMatch != "*" && ifMatch != prev:
		return o, &EtagError{Expected: ifMatch, Actual: prev}
	}
	if opts.GuaranteeOrder() {
		snap, err := nextTxnSnap(ctx, tx, bucket)
		if err != nil {
			return o, err
		}
		o.TxnSnap = &snap
	}
	// Moray inserts when the row it locked did not exist and updates it
	// when it did, whatever key a pre trigger left.
	write := Absent
	if exists {
		write = "*"
	}
	o, err = sendPut(ctx, tx, bucket, opts, o, write)
	if exists && errors.Is(err, ErrObjectNotFound) {
		err = nil // a pre trigger renamed the key: Moray's UPDATE matched nothing
	}
	if err != nil || !set.HasPost() {
		return o, err
	}
	req.Key = o.Key
	if req.Value, err = MorayValue(o.Value, &vnode); err != nil {
		return o, err
	}
	req.TxnSnap = o.TxnSnap
	if !exists {
		req.ID = &o.ID
	}
	return o, set.RunPost(ctx, tx, &req)
}

// deleteTriggered is Moray's delete pipeline, inside tx: the delete, its
// etag check, and the post chain, which sees the deleted row's _id.
func deleteTriggered(ctx context.Context, tx pgx.Tx, bucket string, opts BucketOptions, set *trigger.Set, o Object, ifMatch string) error {
	if _, err := tx.Exec(ctx, `select reshard_fence_check($1)`, int64(o.Vnode)); err != nil {
		return err
	}
	var id int64
	var etag string
	err := tx.QueryRow(ctx, fmt.Sprintf(`delete from %s where _key = $1 returning _id, _etag`, bucket), o.Key).Scan(&id, &etag)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return ErrObjectNotFound
	case err != nil:
		return err
	case ifMatch != "" && ifMatch != "*" && ifMatch != etag:
		return &EtagError{Expected: ifMatch, Actual: etag}
	}
	req := TriggerRequest(bucket, opts, o)
	req.ID = &id
	return set.RunPost(ctx, tx, &req)
}

// DeleteObjectOf deletes o.Key as DeleteObject does and runs the bucket's
// triggers, with o.Headers as their req.headers.
func DeleteObjectOf(ctx context.Context, db DB, bucket string, opts BucketOptions, o Object, ifMatch string) error {
	if !opts.HasTriggers() {
		return DeleteObject(ctx, db, bucket, o.Key, o.Vnode, ifMatch)
	}
	if err := ValidateBucket(bucket); err != nil {
		return err
	}
	set, err := opts.Triggers()
	if err != nil {
		return err
	}
	return inTx(ctx, db, func(tx pgx.Tx) error { return deleteTriggered(ctx, tx, bucket, opts, set, o, ifMatch) })
}

// batchTriggered runs a batch with triggers, op by op, in tx.
func batchTriggered(ctx context.Context, tx pgx.Tx, ops []Op) error {
	for i := range ops {
		op := &ops[i]
		if op.Bulk != nil {
			res, err := RunBulk(ctx, tx, *op.Bulk)
			if err != nil {
				return &BatchError{Index: i, Err: err}
			}
			op.Result = res
			continue
		}
		set, err := op.Options.Triggers()
		if err == nil {
			if op.Delete {
				err = deleteTriggered(ctx, tx, op.Bucket, op.Options, set, op.Object, op.IfMatch)
			} else {
				op.Object, err = putTriggered(ctx, tx, op.Bucket, op.Options, set, op.Object, op.IfMatch)
			}
		}
		if err != nil {
			return &BatchError{Index: i, Err: err}
		}
	}
	return nil
}
