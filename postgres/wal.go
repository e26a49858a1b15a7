package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// Querier runs a query: a connection, a pool or a transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// CurrentLSN is a primary's current WAL write position.
func CurrentLSN(ctx context.Context, q Querier) (LSN, error) {
	var s string
	if err := q.QueryRow(ctx, `select pg_current_wal_lsn()::text`).Scan(&s); err != nil {
		return 0, err
	}
	return ParseLSN(s)
}

// ReplayLSN is how far a standby has replayed its primary's WAL (0/0 on a
// server that is not in recovery).
func ReplayLSN(ctx context.Context, q Querier) (LSN, error) {
	var s string
	if err := q.QueryRow(ctx, `select coalesce(pg_last_wal_replay_lsn(), '0/0')::text`).Scan(&s); err != nil {
		return 0, err
	}
	return ParseLSN(s)
}

// BytesBehind is how many bytes of a primary's WAL lie past lsn (0 when
// lsn is at or past the current position).
func BytesBehind(ctx context.Context, q Querier, lsn LSN) (int64, error) {
	var n int64
	err := q.QueryRow(ctx, `select greatest(pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn), 0)::bigint`, lsn.String()).Scan(&n)
	return n, err
}
