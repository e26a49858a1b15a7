package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// LSN is a WAL position.
type LSN uint64

// ParseLSN reads PostgreSQL's "X/Y" text form.
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("invalid LSN %q", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid LSN %q", s)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid LSN %q", s)
	}
	return LSN(h<<32 | l), nil
}

func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint64(l)>>32, uint64(l)&0xffffffff) }

// MarshalText makes LSNs read as PostgreSQL prints them in JSON.
func (l LSN) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// Downstream is one standby streaming from a server, as pg_stat_replication
// shows it.
type Downstream struct {
	Name      string         // application_name
	State     string         // streaming, catchup, ...
	SyncState string         // sync, async, potential, quorum
	Sent      LSN            // sent_lsn
	Flush     LSN            // flush_lsn
	Replay    LSN            // replay_lsn
	ReplayLag *time.Duration // nil when the standby is idle and caught up
}

// Replication is what a server says about its own WAL position and the
// standbys streaming from it.
type Replication struct {
	InRecovery bool
	// WAL is the current write position on a primary, or the replayed
	// position on a standby: what a downstream can have at most.
	WAL        LSN
	Receive    LSN // standby only: last WAL received
	Downstream []Downstream
}

// ReadReplication reads a server's replication state in two short queries.
func ReadReplication(ctx context.Context, conn *pgx.Conn) (Replication, error) {
	var r Replication
	var wal, recv *string
	err := conn.QueryRow(ctx, `select pg_is_in_recovery(),
		case when pg_is_in_recovery() then pg_last_wal_replay_lsn() else pg_current_wal_lsn() end::text,
		pg_last_wal_receive_lsn()::text`).Scan(&r.InRecovery, &wal, &recv)
	if err != nil {
		return r, fmt.Errorf("read WAL position: %w", err)
	}
	if wal != nil {
		if r.WAL, err = ParseLSN(*wal); err != nil {
			return r, err
		}
	}
	if recv != nil {
		if r.Receive, err = ParseLSN(*recv); err != nil {
			return r, err
		}
	}
	rows, err := conn.Query(ctx, `select application_name, coalesce(state, ''), coalesce(sync_state, ''),
		coalesce(sent_lsn::text, '0/0'), coalesce(flush_lsn::text, '0/0'), coalesce(replay_lsn::text, '0/0'),
		extract(epoch from replay_lag)::float8
		from pg_stat_replication order by application_name`)
	if err != nil {
		return r, fmt.Errorf("read pg_stat_replication: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var d Downstream
		var sent, flush, replay string
		var lag *float64
		if err := rows.Scan(&d.Name, &d.State, &d.SyncState, &sent, &flush, &replay, &lag); err != nil {
			return r, err
		}
		for _, p := range []struct {
			s   string
			dst *LSN
		}{{sent, &d.Sent}, {flush, &d.Flush}, {replay, &d.Replay}} {
			if *p.dst, err = ParseLSN(p.s); err != nil {
				return r, err
			}
		}
		if lag != nil {
			l := time.Duration(*lag * float64(time.Second))
			d.ReplayLag = &l
		}
		r.Downstream = append(r.Downstream, d)
	}
	return r, rows.Err()
}
