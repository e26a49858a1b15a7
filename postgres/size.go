package postgres

import "context"

// ClusterSize is what a base backup of the server copies: the size of
// all its databases and of its WAL directory, in bytes.
func ClusterSize(ctx context.Context, q Querier) (databases, wal int64, err error) {
	err = q.QueryRow(ctx, `select (select sum(pg_database_size(oid))::bigint from pg_database),
		(select coalesce(sum(size), 0)::bigint from pg_ls_waldir())`).Scan(&databases, &wal)
	return databases, wal, err
}

// BackupMargin is room kept beyond a server's size for a copy of it: WAL
// written while the copy runs, and the new server's first checkpoint.
const BackupMargin = 64 << 20

// BaseBackupNeeds is the disk a base backup of a server of that size needs
// on the new peer's host: its databases and WAL, 10% and BackupMargin more.
func BaseBackupNeeds(databases, wal int64) int64 { return (databases+wal)*11/10 + BackupMargin }
