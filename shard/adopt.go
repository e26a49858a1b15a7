package shard

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/reshard/reshard/postgres"
)

// Adopting a shard that Moray wrote: its tables stay as they are. What a
// reshard needs beside them is the fence trigger on each bucket table, the
// ownership rows, and every row's _vnode set. Moray leaves _vnode NULL
// when a value carries no vnode (rows that libmanta's triggers insert,
// and every batch write through electric-moray, which sets the vnode only
// on putObject), and a row with no vnode would never move with its key.

// ScanKeys calls fn with every row's key and _vnode (nil when NULL),
// streaming, in no particular order.
func ScanKeys(ctx context.Context, q Querier, bucket string, fn func(key string, vnode *int64) error) error {
	if err := ValidateBucket(bucket); err != nil {
		return err
	}
	rows, err := q.Query(ctx, fmt.Sprintf(`select _key, _vnode from %s`, bucket))
	if err != nil {
		return fmt.Errorf("scan %s: %w", bucket, err)
	}
	defer rows.Close()
	var key string
	var vnode *int64
	for rows.Next() {
		if err := rows.Scan(&key, &vnode); err != nil {
			return err
		}
		if err := fn(key, vnode); err != nil {
			return err
		}
	}
	return rows.Err()
}

// SetVnodes sets _vnode of the rows with these keys, in one statement, and
// leaves _value as it is: its etag is a digest of _value, which a client
// may hold for a conditional write. It returns the rows changed. The
// fence checks the new vnode, so only vnodes the shard owns can be set.
func SetVnodes(ctx context.Context, q Querier, bucket string, keys []string, vnodes []int64) (int64, error) {
	if err := ValidateBucket(bucket); err != nil {
		return 0, err
	}
	tag, err := q.Exec(ctx, fmt.Sprintf(`update %s b set _vnode = u.v from unnest($1::text[], $2::bigint[]) as u(k, v)
		where b._key = u.k and b._vnode is distinct from u.v`, bucket), keys, vnodes)
	if err != nil {
		return 0, fmt.Errorf("set _vnode in %s: %w", bucket, err)
	}
	return tag.RowsAffected(), nil
}

// lockTimeout bounds how long a DDL statement on a live table waits for
// its lock. A statement queued behind a long transaction would make every
// later writer queue behind it; giving up and trying again does not.
const lockTimeout = 2 * time.Second

// withLockRetry runs a DDL statement with a short lock_timeout, again on a
// lock timeout until tries run out.
func withLockRetry(ctx context.Context, db Beginner, tries int, fn func(pgx.Tx) error) error {
	var err error
	for i := 0; i < tries; i++ {
		err = inTx(ctx, db, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, fmt.Sprintf("set local lock_timeout = '%dms'", lockTimeout.Milliseconds())); err != nil {
				return err
			}
			return fn(tx)
		})
		if !postgres.IsLockNotAvailable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(i+1) * 200 * time.Millisecond):
		}
	}
	return fmt.Errorf("%w (gave up after %d tries of %s: a long transaction holds the table)", err, tries, lockTimeout)
}

// EnsureVnodeIndex builds Moray's <bucket>__vnode_idx without blocking
// writes when a table lacks it (Moray makes it with the table; an old or
// hand-made table may not have it). The cleanup and verify read by _vnode.
func EnsureVnodeIndex(ctx context.Context, q Querier, bucket string) (bool, error) {
	if err := ValidateBucket(bucket); err != nil {
		return false, err
	}
	name := identifier(bucket + "__vnode_idx")
	var valid *bool
	err := q.QueryRow(ctx, `select i.indisvalid from pg_class c join pg_index i on i.indexrelid = c.oid
		where c.relname = $1 and c.relnamespace = current_schema()::regnamespace`, name).Scan(&valid)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return false, err
	}
	if valid != nil && *valid {
		return false, nil
	}
	if valid != nil {
		// A concurrent build that died leaves an invalid index behind.
		if _, err := q.Exec(ctx, "drop index concurrently if exists "+quoteIdent(name)); err != nil {
			return false, err
		}
	}
	// Not in a transaction: CONCURRENTLY cannot run in one.
	if _, err := q.Exec(ctx, fmt.Sprintf("create index concurrently if not exists %s on %s using btree (_vnode) where _vnode is not null",
		quoteIdent(name), bucket)); err != nil {
		return false, fmt.Errorf("index _vnode of %s: %w", bucket, err)
	}
	return true, nil
}
