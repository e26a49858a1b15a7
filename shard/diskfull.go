package shard

import (
	"context"
	"errors"
	"fmt"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/reshard/reshard/postgres"
)

// SubscriptionErrors is how many times the subscription's workers have
// failed since it was made: table-sync workers (the initial copy) and the
// apply worker (streaming). PostgreSQL 15 counts the failures
// (pg_stat_subscription_stats) but keeps their text only in its log: a
// worker that fails logs its ERROR, exits, and is started again 5 s later
// (wal_retrieve_retry_interval), for ever.
func SubscriptionErrors(ctx context.Context, q Querier, subscription string) (int64, error) {
	var n *int64
	err := q.QueryRow(ctx, `select sync_error_count + apply_error_count from pg_stat_subscription_stats where subname = $1`,
		subscription).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) || n == nil {
		return 0, err
	}
	return *n, err
}

// ProbeWrite makes the server extend a file, and then rolls back: it
// fails with disk_full (53100) when the data directory's file system has
// no room for one more block, as the subscription's workers do then. A
// temporary table writes no WAL for its rows and is gone with the
// transaction; its first row still extends its file on disk at once
// (PostgreSQL 15 writes a new block out when it adds it, local buffer or
// not). It cannot tell a disk that has some room left but less than the
// copy needs.
func ProbeWrite(ctx context.Context, db Beginner) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `create temporary table reshard_write_probe (b text) on commit drop`); err != nil {
		return err
	}
	// About two blocks of rows (each under TOAST's threshold, so in the
	// heap): a disk with one block left fails too.
	_, err = tx.Exec(ctx, `insert into reshard_write_probe select string_agg(md5(i::text || g::text), '')
		from generate_series(1, 8) g, generate_series(1, 60) i group by g`)
	return err
}

// DiskFullCause is the one-line cause of a disk_full error, PostgreSQL's
// own message (`could not extend file "...": No space left on device`),
// or "" when err is not one.
func DiskFullCause(err error) string {
	var pe *pgconn.PgError
	if !postgres.IsDiskFull(err) || !errors.As(err, &pe) {
		return ""
	}
	return pe.Message
}

// SubscriptionOID is the subscription's oid on the destination, 0 when it
// does not exist: its table-sync workers name their slots on the origin
// pg_OID_sync_RELID_SYSID.
func SubscriptionOID(ctx context.Context, q Querier, subscription string) (uint32, error) {
	var oid uint32
	err := q.QueryRow(ctx, `select oid from pg_subscription where subname = $1`, subscription).Scan(&oid)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return oid, err
}

// DropSyncSlots drops on the origin the slots that the table-sync workers
// of the subscription of oid made. DROP SUBSCRIPTION drops them itself
// when it reaches the origin; one that could not (a subscription dropped
// with slot_name = none, the origin unreachable from the destination)
// leaves them holding WAL.
func DropSyncSlots(ctx context.Context, q Querier, oid uint32) error {
	if oid == 0 {
		return nil
	}
	rows, err := q.Query(ctx, `select slot_name from pg_replication_slots where slot_name like $1`,
		fmt.Sprintf(`pg\_%d\_sync\_%%`, oid))
	if err != nil {
		return err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := DropSlot(ctx, q, n); err != nil {
			return err
		}
	}
	return nil
}
