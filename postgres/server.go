package postgres

import (
	"context"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Querier is what these helpers need: a connection, a pool or a
// transaction (shard.Querier is one).
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// CurrentWAL is a primary's current WAL write position
// (pg_current_wal_lsn). A standby cannot answer it.
func CurrentWAL(ctx context.Context, q Querier) (LSN, error) {
	return scanLSN(q.QueryRow(ctx, `select pg_current_wal_lsn()::text`))
}

// ReplayedWAL is how far a standby has replayed its upstream's WAL
// (pg_last_wal_replay_lsn); 0/0 on a server that never replayed any, as a
// primary that was never a standby.
func ReplayedWAL(ctx context.Context, q Querier) (LSN, error) {
	return scanLSN(q.QueryRow(ctx, `select coalesce(pg_last_wal_replay_lsn(), '0/0')::text`))
}

// WALBytesAfter is how many bytes of WAL a primary has written past lsn:
// how far behind a standby that replayed up to lsn is. It is 0, not
// negative, when lsn is at or past the primary's position.
func WALBytesAfter(ctx context.Context, q Querier, lsn LSN) (int64, error) {
	var n int64
	err := q.QueryRow(ctx, `select greatest(pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn), 0)::bigint`, lsn.String()).Scan(&n)
	return n, err
}

func scanLSN(row pgx.Row) (LSN, error) {
	var s string
	if err := row.Scan(&s); err != nil {
		return 0, err
	}
	return ParseLSN(s)
}

// InRecovery reports whether the server is a standby (pg_is_in_recovery).
func InRecovery(ctx context.Context, q Querier) (bool, error) {
	var standby bool
	err := q.QueryRow(ctx, `select pg_is_in_recovery()`).Scan(&standby)
	return standby, err
}

// ReloadConf makes the server read its configuration files again
// (pg_reload_conf).
func ReloadConf(ctx context.Context, q Querier) error {
	_, err := q.Exec(ctx, `select pg_reload_conf()`)
	return err
}

// IsStreaming reports whether the server has a standby named name (its
// application_name) streaming from it, and, when sync is set, as its
// synchronous standby.
func IsStreaming(ctx context.Context, q Querier, name string, sync bool) (bool, error) {
	var n int
	err := q.QueryRow(ctx, `select count(*) from pg_stat_replication
		where application_name = $1 and state = 'streaming' and (not $2 or sync_state = 'sync')`,
		name, sync).Scan(&n)
	return n > 0, err
}

// DecodedTransactions is how many transactions logical decoding has sent
// through all of the server's replication slots, summed
// (pg_stat_replication_slots.total_txns): its rate is a subscription's
// pace.
func DecodedTransactions(ctx context.Context, q Querier) (int64, error) {
	var n int64
	err := q.QueryRow(ctx, `select coalesce(sum(total_txns), 0)::bigint from pg_stat_replication_slots`).Scan(&n)
	return n, err
}

// databaseName is the names CreateDatabase accepts: an identifier that
// needs no quoting, since a database name cannot be a parameter.
var databaseName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// CreateDatabase creates an empty database.
func CreateDatabase(ctx context.Context, q Querier, name string) error {
	if !databaseName.MatchString(name) {
		return fmt.Errorf("invalid database name %q: use lower-case letters, digits and '_' (at most 63)", name)
	}
	_, err := q.Exec(ctx, "create database "+name)
	return err
}

// DataDirectory is the server's data directory, which tells one server
// from another that answers on the same address.
func DataDirectory(ctx context.Context, q Querier) (string, error) {
	var dir string
	err := q.QueryRow(ctx, `show data_directory`).Scan(&dir)
	return dir, err
}
