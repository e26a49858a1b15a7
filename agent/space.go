package agent

import (
	"context"
	"fmt"
	"strings"

	"github.com/reshard/reshard"
	"github.com/reshard/reshard/postgres"
	"golang.org/x/sys/unix"
)

// checkSpace refuses a base backup that cannot fit in the data root: a
// pg_basebackup that fills the disk fails late, after copying for as long
// as it took, and leaves the host's disk full for everything else on it.
func (a *agent) checkSpace(ctx context.Context, up *upstream) error {
	conn, err := postgres.Connect(ctx, up.DSN)
	if err != nil {
		return fmt.Errorf("upstream %s: %w", up.Name, err)
	}
	defer conn.Close(ctx)
	dbs, wal, err := postgres.ClusterSize(ctx, conn)
	if err != nil {
		return fmt.Errorf("size of upstream %s: %w", up.Name, err)
	}
	free, err := a.free()
	if err != nil {
		return err
	}
	need := postgres.BaseBackupNeeds(dbs, wal)
	if free < need {
		return fmt.Errorf("%w: host %s has %s free in %s, needs %s for a copy of %s (%s of databases, %s of WAL, 10%% and %s more)",
			reshard.ErrDiskFull, a.cfg.Host, mib(free), a.path("data"), mib(need), up.Name, mib(dbs), mib(wal), mib(postgres.BackupMargin))
	}
	return nil
}

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

// noSpace reports whether a failed pg_basebackup ran out of disk.
func noSpace(err error) bool {
	return err != nil && strings.Contains(err.Error(), "No space left on device")
}

// free is the space left in the data root, for an unprivileged user (the
// PostgreSQL user writes there).
func (a *agent) free() (int64, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(a.path("data"), &fs); err != nil {
		return 0, fmt.Errorf("free space in %s: %w", a.path("data"), err)
	}
	return int64(fs.Bavail) * int64(fs.Bsize), nil
}

// freeSpace is the data root's free space, for a message.
func (a *agent) freeSpace() string {
	n, err := a.free()
	if err != nil {
		return "unknown"
	}
	return mib(n)
}
