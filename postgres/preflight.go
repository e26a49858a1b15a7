package postgres

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// What a reshard asks of a server before it starts: its settings, its free
// disk, and the transactions it has open.

// Setting is a server setting's current value, as SHOW prints it.
func Setting(ctx context.Context, q Querier, name string) (string, error) {
	var v string
	err := q.QueryRow(ctx, `select current_setting($1)`, name).Scan(&v)
	return v, err
}

// IntSetting is a numeric setting.
func IntSetting(ctx context.Context, q Querier, name string) (int64, error) {
	v, err := Setting(ctx, q, name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("setting %s = %q is not a number", name, v)
	}
	return n, nil
}

// ErrNoProgramRights: the role may not run programs on the server (COPY
// FROM PROGRAM needs superuser or pg_execute_server_program).
var ErrNoProgramRights = errors.New("the role may not run programs on the server")

// safePath is a data directory path df can be given without quoting.
var safePath = regexp.MustCompile(`^/[A-Za-z0-9/._-]*$`)

// FreeDisk is the space left on the file system of the server's data
// directory, for the server's own user, read with df on the server host
// through COPY FROM PROGRAM in a transaction that is rolled back: SQL has
// no other way to ask. ErrNoProgramRights when the role may not.
func FreeDisk(ctx context.Context, conn *pgx.Conn) (int64, error) {
	dir, err := DataDirectory(ctx, conn)
	if err != nil {
		return 0, err
	}
	if !safePath.MatchString(dir) {
		return 0, fmt.Errorf("data directory %q is not a plain path", dir)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `create temporary table reshard_df (line text) on commit drop`); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf(`copy reshard_df from program 'df -P -B1 %s'`, dir)); err != nil {
		if Code(err) == InsufficientPrivilege {
			return 0, ErrNoProgramRights
		}
		return 0, fmt.Errorf("df on the server: %w", err)
	}
	var line string
	if err := tx.QueryRow(ctx, `select line from reshard_df offset 1 limit 1`).Scan(&line); err != nil {
		return 0, fmt.Errorf("df on the server printed nothing: %w", err)
	}
	// Filesystem 1-blocks Used Available Capacity Mounted-on
	f := strings.Fields(line)
	if len(f) < 6 {
		return 0, fmt.Errorf("df on the server printed %q", line)
	}
	return strconv.ParseInt(f[3], 10, 64)
}

// Xact is a transaction open on a server.
type Xact struct {
	PID   int32         `json:"pid"`
	Age   time.Duration `json:"age"`
	State string        `json:"state"`
	Query string        `json:"query"`
}

// OldTransactions lists the client transactions open longer than age,
// oldest first, with the first words of their current statement.
func OldTransactions(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, age time.Duration) ([]Xact, error) {
	rows, err := q.Query(ctx, `select pid, extract(epoch from now() - xact_start)::float8, coalesce(state, ''), left(coalesce(query, ''), 60)
		from pg_stat_activity
		where backend_type = 'client backend' and pid <> pg_backend_pid() and xact_start < now() - make_interval(secs => $1)
		order by xact_start`, age.Seconds())
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Xact, error) {
		var x Xact
		var secs float64
		err := r.Scan(&x.PID, &secs, &x.State, &x.Query)
		x.Age = time.Duration(secs * float64(time.Second))
		return x, err
	})
}

// StandbyLag is how many bytes of a primary's WAL its physical standbys
// have yet to replay, the furthest behind (0 with none).
func StandbyLag(ctx context.Context, q Querier) (int64, error) {
	var n int64
	err := q.QueryRow(ctx, `select coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)), 0)::bigint
		from pg_stat_replication where pid not in
			(select active_pid from pg_replication_slots where slot_type = 'logical' and active_pid is not null)`).Scan(&n)
	return n, err
}
