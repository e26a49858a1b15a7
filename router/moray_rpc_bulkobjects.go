package router

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/reshard/reshard/shard"
)

// updateObjects, deleteMany and reindexObjects change rows on every shard.
// They answer as one Moray 2.6.1 does, checks in Moray's order (fields,
// filter, bucket, unusable fields, the WHERE clause), and:
//
//   - limit means what it means to one Moray: at most that many rows
//     change in all (1000 unless the caller sets a limit or noLimit). The
//     shards run one after another, in pnode name order, each with what
//     is left of the limit and of the offset; with a sort, each shard's
//     rows are taken in that order, but not merged across shards.
//   - All the shards' statements run in open transactions, committed
//     together once every shard has run its own: a shard whose fence
//     refuses a row (a frozen vnode), or whose vnodes are read-only in the
//     ring, makes every shard roll back, and the whole is retried as a
//     routed write is, until RetryFor passes (then ReadOnlyError).
//   - The statement registers as a bucket change, so a reshard job that
//     starts meanwhile waits for it, and while a job holds pnodes it
//     waits, as above: rows moving between shards are neither missed nor
//     changed twice.

// bulkLimit is Moray's buildWhereClause limit: options.limit when truthy
// in JavaScript (a number other than 0, or any digits string, even "0"),
// else none with noLimit, else 1000.
func bulkLimit(opts map[string]json.RawMessage) *int64 {
	if raw, ok := opts["limit"]; ok {
		var n float64
		var str string
		switch {
		case json.Unmarshal(raw, &n) == nil && n != 0:
			l := int64(n)
			return &l
		case json.Unmarshal(raw, &str) == nil && str != "":
			l, _ := strconv.ParseInt(str, 10, 64)
			return &l
		}
	}
	var noLimit bool
	json.Unmarshal(opts["noLimit"], &noLimit)
	if noLimit {
		return nil
	}
	l := int64(DefaultFindLimit)
	return &l
}

// bulkFilter checks and compiles a bulk RPC's filter for a bucket as
// Moray's pipeline does, and reads its options.
func bulkFilter(ctx context.Context, r *Router, a rpcArgs, bucket, text string, optsArg int) (shard.Bulk, error) {
	f, err := shard.ParseFilter(text)
	if err != nil {
		return shard.Bulk{}, &MorayError{Name: "InvalidQueryError", Message: text + " is an invalid filter"}
	}
	bo, err := r.bucketOptions(ctx, bucket, 2*time.Second)
	if err != nil {
		return shard.Bulk{}, morayBucketErr(bucket, err)
	}
	if unindexed, reindexing := shard.UnusableFields(bo, f); len(unindexed)+len(reindexing) > 0 {
		return shard.Bulk{}, findError(bucket, text, shard.NotIndexedFilter(bucket, text, unindexed, reindexing))
	}
	where, args, _, err := shard.WhereClause(bucket, bo, text)
	if err != nil {
		return shard.Bulk{}, findError(bucket, text, err)
	}
	var opts map[string]json.RawMessage
	json.Unmarshal(a.arg(optsArg), &opts)
	fo, err := findOptions(a, opts)
	if err != nil {
		return shard.Bulk{}, err
	}
	bk := shard.Bulk{Bucket: bucket, Filter: text, Where: where, Args: args, Sort: fo.Sort, Offset: int64(fo.Offset), Limit: bulkLimit(opts), Opts: bo}
	return bk, nil
}

// updateEtag is the etag Moray's updateObjects gives every row it
// changes: "u" and seven hex digits of a random UUID.
func updateEtag() string {
	var b [4]byte
	rand.Read(b[:])
	return "u" + hex.EncodeToString(b[:])[:7]
}

// updateBulk reads updateObjects' fields for a compiled filter.
func updateBulk(bk shard.Bulk, fields json.RawMessage) (shard.Bulk, error) {
	names, values, err := shard.UpdateFields(bk.Bucket, bk.Opts, fields)
	if err != nil {
		return bk, err
	}
	bk.Update, bk.Fields, bk.Values = true, names, values
	bk.Etag, bk.Mtime = updateEtag(), time.Now().UnixMilli()
	return bk, nil
}

// fieldUpdateError is Moray's answer to updateObjects with no fields.
func fieldUpdateError(fields json.RawMessage) error {
	text, err := shard.MorayValue(fields, nil)
	if err != nil {
		text = string(fields)
	}
	return &MorayError{Name: "FieldUpdateError", Message: text + " is not a valid update definition"}
}

func morayUpdateObjects(ctx context.Context, r *Router, a rpcArgs, s *stream) error {
	// checkMorayArgs has checked the arguments' types and options.
	bucket, fields, text := jsonString(a.a[0]), a.a[1], jsonString(a.a[2])
	var keys map[string]json.RawMessage
	json.Unmarshal(fields, &keys)
	if len(keys) == 0 {
		return fieldUpdateError(fields)
	}
	bk, err := bulkFilter(ctx, r, a, bucket, text, 3)
	if err != nil {
		return err
	}
	if bk, err = updateBulk(bk, fields); err != nil {
		return findError(bucket, text, err)
	}
	count, err := r.runBulk(ctx, "updateObjects", []shard.Bulk{bk})
	if err != nil {
		return morayBulkErr(bucket, text, err)
	}
	return s.write(map[string]any{"count": count[0], "etag": bk.Etag})
}

func morayDeleteMany(ctx context.Context, r *Router, a rpcArgs, s *stream) error {
	bucket, text := jsonString(a.a[0]), jsonString(a.a[1])
	bk, err := bulkFilter(ctx, r, a, bucket, text, 2)
	if err != nil {
		return err
	}
	count, err := r.runBulk(ctx, "deleteMany", []shard.Bulk{bk})
	if err != nil {
		return morayBulkErr(bucket, text, err)
	}
	// Moray's stdOutput: count, and an etag it never set.
	return s.write(map[string]any{"count": count[0]})
}

// morayBulkErr names a failed statement: PostgreSQL's errors as findError
// names them, the rest (ReadOnlyError after the retries) as they are.
func morayBulkErr(bucket, filter string, err error) error {
	var se ShardErrors
	if errors.As(err, &se) {
		return err
	}
	return findError(bucket, filter, err)
}

// errBulkBusy: a reshard holds pnodes; a bulk statement waits for it.
var errBulkBusy = errors.New("a reshard is running")

// runBulk runs bulk statements on every shard, each shard's in one
// transaction, committed together; it returns each statement's count
// over all the shards. It retries, as routeHash does, while a reshard
// runs or a shard's fence or the ring refuses a vnode.
func (r *Router) runBulk(ctx context.Context, opName string, bks []shard.Bulk) ([]int64, error) {
	var counts []int64
	err := r.retryBulk(ctx, opName, func(ctx context.Context, v *view) error {
		return r.bulkOnce(ctx, v, func(ctx context.Context, _ []string, txs []pgx.Tx) error {
			counts = make([]int64, len(bks))
			for i, bk := range bks {
				n, err := bulkAcross(ctx, txs, bk)
				if err != nil {
					return err
				}
				counts[i] = n
			}
			return nil
		})
	})
	return counts, err
}

// bulkAcross runs one statement on each shard's transaction in turn, with
// what is left of the limit and the offset.
func bulkAcross(ctx context.Context, txs []pgx.Tx, bk shard.Bulk) (int64, error) {
	var total int64
	for _, tx := range txs {
		if bk.Limit != nil && *bk.Limit <= total {
			break
		}
		one := bk
		if bk.Limit != nil {
			left := *bk.Limit - total
			one.Limit = &left
		}
		res, err := shard.RunBulk(ctx, tx, one)
		if err != nil {
			return 0, err
		}
		total += res.Count
		bk.Offset -= min(bk.Offset, res.Matched)
	}
	return total, nil
}

// retryBulk runs once while no reshard holds pnodes (registered, so one
// that starts waits), retrying as routeHash retries a write.
func (r *Router) retryBulk(ctx context.Context, opName string, once func(ctx context.Context, v *view) error) error {
	deadline := time.Now().Add(r.cfg.RetryFor)
	backoff := 5 * time.Millisecond
	for {
		v := r.cur.Load()
		if v == nil {
			return ErrNoRing
		}
		var err error
		end, berr := r.beginChange(ctx)
		switch {
		case errors.Is(berr, ErrBucketsBusy):
			err = errBulkBusy
		case berr != nil:
			return berr
		default:
			err = once(ctx, v)
			end()
		}
		reason := retryReason(err)
		if errors.Is(err, errBulkBusy) {
			reason = "reshard"
		}
		if reason == "" || reason == "shutdown" {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w (%s: %v)", ErrStillFenced, reason, err)
		}
		r.metrics.retries.WithLabelValues(opName, reason).Inc()
		r.waitRing(ctx, v.version, backoff)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if backoff < 200*time.Millisecond {
			backoff *= 2
		}
	}
}

// bulkOnce opens a transaction on every registered shard (in pnode name
// order), runs fn with the names and transactions, and commits them all if
// it succeeds. A shard holding a vnode the ring marks read-only refuses,
// as routed writes do.
func (r *Router) bulkOnce(ctx context.Context, v *view, fn func(ctx context.Context, names []string, txs []pgx.Tx) error) error {
	pnodes, err := r.reg.Pnodes(ctx)
	if err != nil {
		return err
	}
	names := make([]string, len(pnodes))
	for i, pn := range pnodes {
		names[i] = pn.Name
	}
	sort.Strings(names)
	readOnly := map[string]bool{}
	for _, vn := range v.ring.DataVnodes() {
		if pn, data, err := v.ring.Vnode(vn); err == nil && isReadOnly(data) {
			readOnly[pn] = true
		}
	}
	var txs []pgx.Tx
	defer func() {
		for _, tx := range txs {
			tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	for _, name := range names {
		if readOnly[name] {
			return errReadOnly
		}
		p, err := r.pool(ctx, name)
		if err != nil {
			return err
		}
		tx, err := p.Begin(ctx)
		if err != nil {
			return err
		}
		txs = append(txs, tx)
	}
	if err := fn(ctx, names, txs); err != nil {
		return err
	}
	for i, tx := range txs {
		if err := tx.Commit(ctx); err != nil {
			if i > 0 {
				return fmt.Errorf("%w: %s committed, %s failed: %v", ErrOutcomeUnknown, names[i-1], names[i], err)
			}
			return err
		}
	}
	txs = nil
	return nil
}

// morayReindexObjects is Moray's reindexObjects over every shard: up to
// count rows in all are reindexed, shard after shard; when a call finds
// none left to do, reindex_active is emptied on every shard and in etcd.
// The answer is {processed, remaining}, remaining left out with no_count,
// and {processed: 0} alone for a bucket with nothing to reindex.
func morayReindexObjects(ctx context.Context, r *Router, a rpcArgs, s *stream) error {
	bucket := jsonString(a.a[0])
	var countArg float64
	json.Unmarshal(a.a[1], &countArg)
	count := int64(countArg)
	var opts map[string]json.RawMessage
	json.Unmarshal(a.arg(2), &opts)
	var noCount bool
	json.Unmarshal(opts["no_count"], &noCount)
	// Moray reads the bucket afresh (noBucketCache).
	r.opts.Delete(bucket)
	bo, err := r.bucketOptions(ctx, bucket)
	if err != nil {
		return morayBucketErr(bucket, err)
	}
	var active map[string]json.RawMessage
	json.Unmarshal([]byte(bo.Config.ReindexActive), &active)
	if count <= 0 {
		return &MorayError{Name: "InvalidArgumentError", Message: fmt.Sprintf("count %d < 1", count)}
	}
	if len(active) == 0 {
		return s.write(map[string]any{"processed": 0})
	}
	var out shard.Reindexed
	err = r.retryBulk(ctx, "reindexObjects", func(ctx context.Context, v *view) error {
		out = shard.Reindexed{}
		pnodes, err := r.reg.Pnodes(ctx)
		if err != nil {
			return err
		}
		sort.Slice(pnodes, func(i, j int) bool { return pnodes[i].Name < pnodes[j].Name })
		pools := make([]*pgxpool.Pool, len(pnodes))
		for i, pn := range pnodes {
			if pools[i], err = r.pool(ctx, pn.Name); err != nil {
				return err
			}
			one, err := shard.ReindexObjects(ctx, pools[i], bucket, bo, max(count-out.Processed, 0))
			if err != nil {
				return err
			}
			out.Processed += one.Processed
			out.Remaining += one.Remaining
		}
		if out.Processed > 0 {
			return nil
		}
		// Nothing left: the bucket's new fields are usable in filters.
		for _, p := range pools {
			if err := shard.ClearReindexActive(ctx, p, bucket); err != nil {
				return err
			}
		}
		bo.Config.ReindexActive = "{}"
		if err := r.buckets.Put(ctx, bucket, bo); err != nil {
			return err
		}
		r.opts.Delete(bucket)
		return nil
	})
	if err != nil {
		return morayBucketErr(bucket, err)
	}
	res := map[string]any{"processed": out.Processed}
	if !noCount {
		res["remaining"] = out.Remaining
	}
	return s.write(res)
}

// batchBulk reads a batch's update or deleteMany request. Moray merges
// the batch's options over the request's own.
func batchBulk(ctx context.Context, r *Router, a rpcArgs, req map[string]json.RawMessage, bucket, op string) (shard.Op, error) {
	opts := map[string]json.RawMessage{}
	json.Unmarshal(req["options"], &opts)
	var batchOpts map[string]json.RawMessage
	json.Unmarshal(a.arg(1), &batchOpts)
	for k, v := range batchOpts {
		opts[k] = v
	}
	merged, _ := json.Marshal(opts)
	text := jsonString(req["filter"])
	sub := rpcArgs{rpc: a.rpc, a: []json.RawMessage{merged}}
	if op == "update" {
		var keys map[string]json.RawMessage
		json.Unmarshal(req["fields"], &keys)
		if len(keys) == 0 {
			return shard.Op{}, fieldUpdateError(req["fields"])
		}
	}
	bk, err := bulkFilter(ctx, r, sub, bucket, text, 0)
	if err != nil {
		return shard.Op{}, err
	}
	if op == "update" {
		if bk, err = updateBulk(bk, req["fields"]); err != nil {
			return shard.Op{}, findError(bucket, text, err)
		}
	}
	return shard.Op{Bucket: bucket, Bulk: &bk, Options: bk.Opts}, nil
}

// batchWithBulk runs a batch that holds updateObjects or deleteMany
// requests, in order: those on every shard, the keyed puts and deletes on
// the shard that owns their (one) hash key's vnode, each shard in one
// transaction, all committed together, as runBulk does. Moray lists each
// request: bulk ones with their bucket, filter, count and (an update's)
// etag.
func batchWithBulk(ctx context.Context, r *Router, ops []shard.Op, hk string, keyed bool, s *stream) error {
	err := r.retryBulk(ctx, "batch", func(ctx context.Context, v *view) error {
		return r.bulkOnce(ctx, v, func(ctx context.Context, names []string, txs []pgx.Tx) error {
			var home pgx.Tx
			var vnode int32
			if keyed {
				loc := v.ring.LocateString(hk)
				if isReadOnly(loc.Data) {
					return errReadOnly
				}
				vnode = int32(loc.Vnode)
				for i, n := range names {
					if n == loc.Pnode && i < len(txs) {
						home = txs[i]
					}
				}
				if home == nil {
					return fmt.Errorf("pnode %s of vnode %d is not registered", loc.Pnode, loc.Vnode)
				}
			}
			for i := range ops {
				op := &ops[i]
				if op.Bulk != nil {
					n, err := bulkAcross(ctx, txs, *op.Bulk)
					if err != nil {
						return &shard.BatchError{Index: i, Err: err}
					}
					op.Result.Count = n
					continue
				}
				op.Object.Vnode = vnode
				done, err := shard.Batch(ctx, home, []shard.Op{*op})
				if err != nil {
					var be *shard.BatchError
					if errors.As(err, &be) {
						be.Index = i
					}
					return err
				}
				*op = done[0]
			}
			return nil
		})
	})
	if err != nil {
		var be *shard.BatchError
		if errors.As(err, &be) {
			op := ops[be.Index]
			if op.Bulk != nil {
				return morayBulkErr(op.Bucket, op.Bulk.Filter, be.Err)
			}
			if op.Delete && errors.Is(be.Err, shard.ErrObjectNotFound) {
				return objectNotFound(op.Bucket, op.Object.Key)
			}
			return etagConflict(op.Bucket, op.Object.Key, op.IfMatch, be.Err)
		}
		return err
	}
	etags := []map[string]any{}
	for _, op := range ops {
		e := map[string]any{"bucket": op.Bucket}
		switch {
		case op.Bulk != nil:
			e["count"], e["filter"] = op.Result.Count, op.Bulk.Filter
			if op.Bulk.Update {
				e["etag"] = op.Bulk.Etag
			}
		case op.Delete:
			e["key"] = op.Object.Key
		default:
			e["key"] = op.Object.Key
			e["etag"] = op.Object.Etag
		}
		etags = append(etags, e)
	}
	return s.write(map[string]any{"etags": etags})
}
