package perf

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// identifier is what a table name given to CopyPipe may be: it goes into
// the COPY statements, which take no parameters.
var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// CopyPipe is the plain copy a logical copy is judged against: COPY of the
// rows query selects TO STDOUT on src, piped as it comes into COPY table
// FROM STDIN on dst, in text format, one stream. It returns the rows
// copied and the time from the first statement to the last commit.
func CopyPipe(ctx context.Context, src, dst *pgconn.PgConn, query, table string) (int64, time.Duration, error) {
	if !identifier.MatchString(table) {
		return 0, 0, fmt.Errorf("perf: %q is not a plain table name", table)
	}
	start := time.Now()
	r, w := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		_, err := src.CopyTo(ctx, w, "copy ("+query+") to stdout")
		w.CloseWithError(err)
		errc <- err
	}()
	tag, err := dst.CopyFrom(ctx, r, "copy "+table+" from stdin")
	r.CloseWithError(err)
	if srcErr := <-errc; srcErr != nil {
		return 0, 0, fmt.Errorf("copy out: %w", srcErr)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("copy in: %w", err)
	}
	return tag.RowsAffected(), time.Since(start), nil
}

// BaseBackup is the plain copy a physical add-peers is judged against: one
// pg_basebackup of the server at host:port, with the flags reshard's agents
// use (WAL streamed alongside, a fast checkpoint, no fsync at the end),
// into a new directory under dir that it removes after. It returns the
// time pg_basebackup took and the bytes it wrote.
func BaseBackup(ctx context.Context, pgBin, host string, port int, user, dir string) (time.Duration, int64, error) {
	out, err := os.MkdirTemp(dir, "basebackup-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(out)
	target := filepath.Join(out, "data")
	cmd := exec.CommandContext(ctx, filepath.Join(pgBin, "pg_basebackup"), "-h", host, "-p", strconv.Itoa(port), "-U", user,
		"-D", target, "-X", "stream", "-c", "fast", "--no-sync")
	start := time.Now()
	b, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		return 0, 0, fmt.Errorf("pg_basebackup: %v: %s", err, strings.TrimSpace(string(b)))
	}
	size, err := dirSize(target)
	return took, size, err
}

func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	})
	return n, err
}

// CopyTable copies every row of table on src into a new table on dst
// made like dst's own table of that name (its columns, defaults and
// indexes, as a split's destination has them), with CopyPipe; then drops
// the new table. It returns the rows copied and the time the copy took.
func CopyTable(ctx context.Context, src, dst *pgx.Conn, table string) (int64, time.Duration, error) {
	if !identifier.MatchString(table) || len(table) > 50 {
		return 0, 0, fmt.Errorf("perf: %q is not a plain table name", table)
	}
	scratch := "perf_copy_" + table
	if _, err := dst.Exec(ctx, "drop table if exists "+scratch+"; create table "+scratch+" (like "+table+" including all)"); err != nil {
		return 0, 0, err
	}
	defer dst.Exec(context.WithoutCancel(ctx), "drop table if exists "+scratch)
	return CopyPipe(ctx, src.PgConn(), dst.PgConn(), "select * from "+table, scratch)
}
