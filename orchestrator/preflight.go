package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/reshard/reshard"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/shard"
)

// Before a job changes anything it checks what would sink it halfway: a
// destination disk too small for the copy, an origin that cannot stream
// (wal_level, slots, WAL senders), a table whose rows replication cannot
// find again, a transaction old enough to hold the freeze. Each check says
// what it measured, how, and how to fix it; Start refuses a job that fails
// one, and 'start --dry-run' prints them all.

// Check is one pre-flight check.
type Check struct {
	Kind string `json:"kind"` // what --skip-check names
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	// Warn: passed, but with something worth knowing (a cost, or a value
	// that could not be measured).
	Warn  bool   `json:"warn,omitempty"`
	Found string `json:"found"` // what was measured, and how
	Fix   string `json:"fix,omitempty"`
}

// PhaseEstimate is how long a phase should take, and from what.
type PhaseEstimate struct {
	Phase   string  `json:"phase"`
	Seconds float64 `json:"seconds"` // < 0: unknown
	Basis   string  `json:"basis"`
}

// CheckKinds are the kinds of pre-flight checks, as --skip-check names them.
var CheckKinds = []string{"wal_level", "senders", "identity", "xact", "server", "disk"}

// DefaultMaxXactAge is the oldest transaction on the origin a job starts with.
const DefaultMaxXactAge = 5 * time.Minute

// ErrPreflight: a pre-flight check failed; the job was not started.
var ErrPreflight = errors.New("pre-flight check failed")

// PreflightError lists the checks that failed.
type PreflightError struct{ Failed []Check }

func (e *PreflightError) Error() string {
	c := e.Failed[0]
	msg := fmt.Sprintf("%v: %s: %s", ErrPreflight, c.Name, c.Found)
	if c.Fix != "" {
		msg += "; " + c.Fix
	}
	if len(e.Failed) > 1 {
		msg += fmt.Sprintf(" (and %d more: see 'reshard start --dry-run')", len(e.Failed)-1)
	}
	return msg
}

func (e *PreflightError) Is(target error) bool { return target == ErrPreflight }

// diskMargin is room kept on a destination beyond the estimated copy.
const diskMargin = 64 << 20

// preflight runs every check for a planned job and records them, with the
// phase estimates, in the job. It fails only when a server cannot be asked.
func (o *Orchestrator) preflight(ctx context.Context, j *Job, maxXactAge time.Duration, skip []string) error {
	if maxXactAge <= 0 {
		maxXactAge = DefaultMaxXactAge
	}
	strat, err := strategyOf(j.Strategy)
	if err != nil {
		return err
	}
	origin, err := o.reg.Pnode(ctx, j.From)
	if err != nil {
		return err
	}
	oconn, err := connectPrimary(ctx, origin)
	if err != nil {
		return fmt.Errorf("origin %s: %w", j.From, err)
	}
	defer oconn.Close(ctx)
	var checks []Check
	add := func(c Check, err error) error {
		if err != nil {
			return err
		}
		checks = append(checks, c)
		return nil
	}
	if err := add(checkWALLevel(ctx, "origin "+j.From, oconn)); err != nil {
		return err
	}
	if err := add(checkSenders(ctx, j, strat, oconn)); err != nil {
		return err
	}
	if err := add(checkIdentities(ctx, j, oconn)); err != nil {
		return err
	}
	if err := add(checkOldTransactions(ctx, j, oconn, maxXactAge)); err != nil {
		return err
	}
	if err := add(checkSlotBudget(ctx, j, oconn)); err != nil {
		return err
	}
	tables, err := shard.TablesSize(ctx, oconn, j.Buckets)
	if err != nil {
		return err
	}
	if strat.CreatesDestinations {
		if err := add(o.checkPeerHosts(ctx, j, oconn)); err != nil {
			return err
		}
	} else {
		for _, m := range j.Moves {
			dests, err := o.checkDestination(ctx, j, m, oconn, tables)
			if err != nil {
				return err
			}
			checks = append(checks, dests...)
		}
	}
	for i := range checks {
		if c := &checks[i]; slices.Contains(skip, c.Kind) {
			c.Found = fmt.Sprintf("skipped (--skip-check %s): %s", c.Kind, c.Found)
			c.OK, c.Warn = true, true
		}
	}
	j.Preflight = checks
	j.Estimate = o.estimate(ctx, j, strat)
	return nil
}

// FailedChecks returns the checks a job failed, as an error, or nil.
func FailedChecks(j *Job) error {
	var failed []Check
	for _, c := range j.Preflight {
		if !c.OK {
			failed = append(failed, c)
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return &PreflightError{Failed: failed}
}

func checkWALLevel(ctx context.Context, who string, conn *pgx.Conn) (Check, error) {
	c := Check{Kind: "wal_level", Name: "wal_level on " + who}
	level, err := postgres.Setting(ctx, conn, "wal_level")
	if err != nil {
		return c, err
	}
	c.OK = level == "logical"
	c.Found = fmt.Sprintf("wal_level = %s (SHOW wal_level)", level)
	if !c.OK {
		c.Fix = "set wal_level = logical in postgresql.conf and restart the server: the copy and the way back decode its WAL"
	}
	return c, nil
}

// checkSenders counts the origin's free replication slots and WAL senders
// against what the job takes at once: per destination, the logical copy's
// slot and its table-sync workers' slots; the physical strategy, one WAL
// sender per new pnode's first peer.
func checkSenders(ctx context.Context, j *Job, strat *Strategy, conn *pgx.Conn) (Check, error) {
	c := Check{Kind: "senders", Name: "replication slots and WAL senders on origin " + j.From}
	var slots, usedSlots, senders, usedSenders, syncWorkers int64
	err := conn.QueryRow(ctx, `select current_setting('max_replication_slots')::bigint, (select count(*) from pg_replication_slots),
		current_setting('max_wal_senders')::bigint, (select count(*) from pg_stat_replication),
		current_setting('max_sync_workers_per_subscription')::bigint`).Scan(&slots, &usedSlots, &senders, &usedSenders, &syncWorkers)
	if err != nil {
		return c, err
	}
	needSlots, needSenders := int64(len(j.Moves))*(1+syncWorkers), int64(len(j.Moves))*(1+syncWorkers)
	if strat.CreatesDestinations {
		needSlots, needSenders = 0, int64(len(j.To))
	}
	c.OK = slots-usedSlots >= needSlots && senders-usedSenders >= needSenders
	c.Found = fmt.Sprintf("%d of %d slots free, the job needs %d; %d of %d WAL senders free, it needs %d (pg_replication_slots, pg_stat_replication)",
		slots-usedSlots, slots, needSlots, senders-usedSenders, senders, needSenders)
	if !c.OK {
		c.Fix = "raise max_replication_slots or max_wal_senders (a restart), or drop slots no one uses"
	}
	return c, nil
}

// checkSlotBudget sets the job's WAL budget, a quarter of the origin's
// free disk unless given, and refuses one the origin's disk cannot hold
// twice (the hard limit).
func checkSlotBudget(ctx context.Context, j *Job, conn *pgx.Conn) (Check, error) {
	c := Check{Kind: "disk", Name: "WAL budget of the job's slots on origin " + j.From}
	free, err := postgres.FreeDisk(ctx, conn)
	switch {
	case err != nil && !errors.Is(err, postgres.ErrNoProgramRights):
		return c, err
	case err != nil:
		if j.MaxSlotLagBytes == 0 {
			j.MaxSlotLagBytes = defaultSlotBudget
		}
		c.OK, c.Warn = true, true
		c.Found = fmt.Sprintf("--max-slot-lag-bytes %s; the origin's free disk not measured (%v)", humanSize(j.MaxSlotLagBytes), err)
		return c, nil
	case j.MaxSlotLagBytes == 0:
		j.MaxSlotLagBytes = max(free/4, 1)
	}
	c.OK = 2*j.MaxSlotLagBytes <= free
	c.Found = fmt.Sprintf("--max-slot-lag-bytes %s, abort at %s; the origin has %s free (df on the server)",
		humanSize(j.MaxSlotLagBytes), humanSize(2*j.MaxSlotLagBytes), humanSize(free))
	if !c.OK {
		c.Fix = "lower --max-slot-lag-bytes to at most half the origin's free disk (default: a quarter)"
	}
	return c, nil
}

// checkIdentities refuses a bucket table without a primary key: the copy
// and the way back find the row an update or delete names by it, and
// without one each replayed change would scan the whole table. Tables
// without REPLICA IDENTITY FULL are set to it by the job (a catalog
// change; the cost is the old row in the WAL of updates and deletes).
func checkIdentities(ctx context.Context, j *Job, conn *pgx.Conn) (Check, error) {
	c := Check{Kind: "identity", Name: "replica identity of the bucket tables on origin " + j.From}
	ids, err := shard.ReplicaIdentities(ctx, conn, j.Buckets)
	if err != nil {
		return c, err
	}
	var noKey, toFull []string
	for _, t := range ids {
		if !t.PrimaryKey {
			noKey = append(noKey, t.Table)
		}
		if t.Identity != "f" {
			toFull = append(toFull, t.Table)
		}
	}
	c.OK = len(noKey) == 0
	c.Found = fmt.Sprintf("%d tables, %d with a primary key, %d already REPLICA IDENTITY FULL (pg_class, pg_index)", len(ids), len(ids)-len(noKey), len(ids)-len(toFull))
	if !c.OK {
		c.Found += fmt.Sprintf("; without a primary key: %s", strings.Join(noKey, ", "))
		c.Fix = "give each a primary key on _key (ALTER TABLE t ADD PRIMARY KEY (_key)): replication finds rows by it"
	} else if len(toFull) > 0 {
		c.Warn = true
		c.Found += fmt.Sprintf("; the job sets REPLICA IDENTITY FULL on %d (old rows then go into the WAL of updates and deletes)", len(toFull))
	}
	return c, nil
}

// checkOldTransactions refuses while the origin has a transaction open
// longer than maxAge: the freeze waits for writers holding a moving
// vnode, and a logical slot's creation for every running transaction.
func checkOldTransactions(ctx context.Context, j *Job, conn *pgx.Conn, maxAge time.Duration) (Check, error) {
	c := Check{Kind: "xact", Name: "long transactions on origin " + j.From}
	xs, err := postgres.OldTransactions(ctx, conn, maxAge)
	if err != nil {
		return c, err
	}
	c.OK = len(xs) == 0
	c.Found = fmt.Sprintf("%d open longer than %s (pg_stat_activity)", len(xs), maxAge)
	if !c.OK {
		var list []string
		for _, x := range xs[:min(len(xs), 3)] {
			list = append(list, fmt.Sprintf("pid %d for %s (%s)", x.PID, x.Age.Round(time.Second), x.State))
		}
		c.Found += ": " + strings.Join(list, ", ")
		c.Fix = fmt.Sprintf("let them end, or end them (SELECT pg_terminate_backend(%d)); they would hold the freeze and the slot's creation; --max-xact-age sets the bound", xs[0].PID)
	}
	return c, nil
}

// checkDestination checks an existing destination: PostgreSQL 15 or later
// with wal_level logical and a free slot (the way back publishes from it
// with a row filter), and disk for its share of the origin's tables.
func (o *Orchestrator) checkDestination(ctx context.Context, j *Job, m Move, oconn *pgx.Conn, tables int64) ([]Check, error) {
	p, err := o.reg.Pnode(ctx, m.To)
	if err != nil {
		return nil, err
	}
	conn, err := connectPrimary(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("destination %s: %w", m.To, err)
	}
	defer conn.Close(ctx)
	wal, err := checkWALLevel(ctx, "destination "+m.To, conn)
	if err != nil {
		return nil, err
	}
	server := Check{Kind: "server", Name: "server of destination " + m.To}
	var version, originVersion, slots, used int64
	if err := conn.QueryRow(ctx, `select current_setting('server_version_num')::bigint, current_setting('max_replication_slots')::bigint,
		(select count(*) from pg_replication_slots)`).Scan(&version, &slots, &used); err != nil {
		return nil, err
	}
	if originVersion, err = postgres.IntSetting(ctx, oconn, "server_version_num"); err != nil {
		return nil, err
	}
	server.OK = version >= 150000 && slots-used >= 1
	server.Found = fmt.Sprintf("PostgreSQL %d.%d (origin %d.%d), %d of %d replication slots free, the way back needs 1 (server_version_num, pg_replication_slots)",
		version/10000, version%10000, originVersion/10000, originVersion%10000, slots-used, slots)
	if !server.OK {
		server.Fix = "PostgreSQL 15 or later (row filters), and a free replication slot (max_replication_slots)"
	}
	disk := Check{Kind: "disk", Name: "disk of destination " + m.To}
	share := tables
	if j.OriginBytes > 0 {
		share = int64(float64(tables) * float64(m.Bytes) / float64(j.OriginBytes))
	}
	need := share*12/10 + diskMargin
	free, err := postgres.FreeDisk(ctx, conn)
	switch {
	case errors.Is(err, postgres.ErrNoProgramRights):
		disk.OK, disk.Warn = true, true
		disk.Found = fmt.Sprintf("not measured: %v; the copy needs about %s", err, humanSize(need))
		disk.Fix = "check by hand, or grant pg_execute_server_program to the role"
	case err != nil:
		return nil, fmt.Errorf("destination %s: %w", m.To, err)
	default:
		disk.OK = free >= need
		disk.Found = fmt.Sprintf("%s free, the copy needs %s: its share of the origin's %s of tables and indexes, 20%% and %s more (df on the server, pg_total_relation_size)",
			humanSize(free), humanSize(need), humanSize(tables), humanSize(diskMargin))
		if !disk.OK {
			disk.Fix = "free space on " + m.To + ", or move fewer vnodes (--vnodes)"
		}
	}
	return []Check{wal, server, disk}, nil
}

// checkPeerHosts checks the hosts that would hold the new peers have room
// for a whole copy of the origin, as their agents last measured it.
func (o *Orchestrator) checkPeerHosts(ctx context.Context, j *Job, oconn *pgx.Conn) (Check, error) {
	c := Check{Kind: "disk", Name: "disk of the new peers' hosts"}
	dbs, wal, err := postgres.ClusterSize(ctx, oconn)
	if err != nil {
		return c, err
	}
	need := postgres.BaseBackupNeeds(dbs, wal)
	prov, err := o.provisioner(j.Provisioner)
	if err != nil {
		return c, err
	}
	sr, ok := prov.(reshard.SpaceReporter)
	if !ok {
		c.OK, c.Warn = true, true
		c.Found = fmt.Sprintf("not measured: the provisioner cannot tell; each new peer needs %s", humanSize(need))
		return c, nil
	}
	hosts, err := sr.FreeSpace(ctx, j.Servers)
	if err != nil {
		return c, err
	}
	var short, seen []string
	for _, h := range hosts {
		seen = append(seen, fmt.Sprintf("%s %s", h.Host, humanSize(h.Free)))
		if h.Free < need {
			short = append(short, h.Host)
		}
	}
	c.OK = len(short) == 0 && len(hosts) >= j.Servers
	c.Found = fmt.Sprintf("each new peer needs %s (the origin's %s of databases and %s of WAL, 10%% and %s more); free: %s (the agents' last measure)",
		humanSize(need), humanSize(dbs), humanSize(wal), humanSize(postgres.BackupMargin), strings.Join(seen, ", "))
	if !c.OK {
		c.Fix = "free space on " + strings.Join(short, ", ") + ", or name other hosts (--peer-hosts)"
	}
	return c, nil
}

// estimate gives each phase a time from the last finished job of the same
// strategy: phases that move rows by its rate, the others by its time.
func (o *Orchestrator) estimate(ctx context.Context, j *Job, strat *Strategy) []PhaseEstimate {
	var rows int64
	for _, m := range j.Moves {
		rows += m.Rows
	}
	jobs, _ := o.store.List(ctx)
	i := slices.IndexFunc(jobs, func(p *Job) bool { return p.Strategy == j.Strategy && p.State == Done })
	var last *Job
	if i >= 0 {
		last = jobs[i]
	}
	var out []PhaseEstimate
	for _, p := range strat.Phases {
		e := PhaseEstimate{Phase: p.Name, Seconds: -1}
		switch {
		case p.Name == "cleanup":
			e.Seconds = float64(rows) / float64(max(j.RateLimit, 1))
			e.Basis = fmt.Sprintf("%d rows at --rate-limit %d/s", rows, j.RateLimit)
		case p.Name == soakName:
			d, _ := ParseComplete(j.Complete)
			e.Seconds, e.Basis = d.Seconds(), "--complete "+j.Complete
			if j.Complete == CompleteManual {
				e.Seconds, e.Basis = -1, "until 'reshard complete' or 'reshard revert'"
			}
		case last == nil:
			e.Basis = "no finished " + string(j.Strategy) + " job to measure from"
		default:
			lp := last.phase(p.Name)
			if lp == nil || lp.State != Done {
				e.Basis = "not measured by job " + last.ID
				break
			}
			var lastRows int64
			for _, m := range last.Moves {
				lastRows += m.Rows
			}
			if (p.Name == "copy" || p.Name == "add-peers") && lastRows > 0 && lp.Seconds > 0 {
				rate := float64(lastRows) / lp.Seconds
				e.Seconds = float64(rows) / rate
				e.Basis = fmt.Sprintf("%d rows at %.0f rows/s, as job %s", rows, rate, last.ID)
			} else {
				e.Seconds = lp.Seconds
				e.Basis = "as job " + last.ID
			}
		}
		out = append(out, e)
	}
	return out
}

func humanSize(b int64) string {
	switch {
	case b >= 1<<30:
		return strconv.FormatFloat(float64(b)/(1<<30), 'f', 1, 64) + " GiB"
	case b >= 1<<20:
		return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) + " MiB"
	}
	return strconv.FormatInt(b>>10, 10) + " KiB"
}
