package postgres

import "context"

// ClusterSize is what a base backup of the server copies: the size of
// all its databases and of its WAL directory, in bytes.
func ClusterSize(ctx context.Context, q Querier) (databases, wal int64, err error) {
	err = q.QueryRow(ctx, `select (select sum(pg_database_size(oid))::bigint from pg_database),
		(select coalesce(sum(size), 0)::bigint from pg_ls_waldir())`).Scan(&databases, &wal)
	return databases, wal, err
}
