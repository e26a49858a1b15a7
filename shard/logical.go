package shard

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// A reshard's logical strategy copies the moving vnodes' rows with
// PostgreSQL's row-filtered logical replication: a publication on the
// origin whose filter selects the moving vnodes, and a subscription on the
// destination. Every function here is idempotent: a resumed job runs it again.

// Range is an inclusive range of vnode ids.
type Range struct{ Lo, Hi int32 }

// VnodeFilter is a row filter over _vnode. A filter's cost while streaming grows
// with its length, so callers pass few ranges (one for a split in half).
func VnodeFilter(ranges []Range) string { return inRanges("_vnode", ranges) }

// inRanges is a predicate over an int column; the ranges' bounds are
// integers, so the text is safe to put in SQL.
func inRanges(col string, ranges []Range) string {
	if len(ranges) == 0 {
		return "false"
	}
	parts := make([]string, len(ranges))
	for i, r := range ranges {
		if r.Lo == r.Hi {
			parts[i] = fmt.Sprintf("%s = %d", col, r.Lo)
		} else {
			parts[i] = fmt.Sprintf("(%s >= %d and %s <= %d)", col, r.Lo, col, r.Hi)
		}
	}
	return strings.Join(parts, " or ")
}

var objectName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

func checkName(n string) error {
	if !objectName.MatchString(n) {
		return fmt.Errorf("invalid replication object name %q", n)
	}
	return nil
}

// CreatePublication publishes the buckets' rows in ranges, and the job's
// markers: on the origin for the copy, on a destination for the way back.
func CreatePublication(ctx context.Context, q Querier, name, job string, buckets []string, ranges []Range) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := checkName(job); err != nil {
		return err
	}
	var exists bool
	if err := q.QueryRow(ctx, `select exists (select 1 from pg_publication where pubname = $1)`, name).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	filter := VnodeFilter(ranges)
	tables := make([]string, 0, len(buckets)+1)
	for _, b := range buckets {
		if err := ValidateBucket(b); err != nil {
			return err
		}
		// A row filter on updates and deletes may only name columns of the
		// replica identity, and Moray's primary key is _key alone: without
		// this, every update and delete on the table would fail once it is
		// published. FULL changes only the catalog (no rewrite, no index
		// build); its cost is the old row in the WAL of each update and
		// delete (see docs/operator-guide.md).
		if err := SetReplicaIdentityFull(ctx, q, b); err != nil {
			return err
		}
		tables = append(tables, fmt.Sprintf("table %s where (%s)", quoteIdent(b), filter))
	}
	// Only the job's markers: another job's must not travel this way, and
	// a filter on job is allowed since job is part of the primary key.
	tables = append(tables, fmt.Sprintf("table reshard_markers where (job = %s)", quoteLiteral(job)))
	_, err := q.Exec(ctx, fmt.Sprintf("create publication %s for %s", quoteIdent(name), strings.Join(tables, ", ")))
	if err != nil {
		return fmt.Errorf("create publication %s: %w", name, err)
	}
	return nil
}

// SetReplicaIdentityFull makes a bucket's table log whole old rows, so a
// publication can filter its updates and deletes by _vnode. It is a no-op
// when the table has it already, so it takes no lock then.
func SetReplicaIdentityFull(ctx context.Context, q Querier, bucket string) error {
	if err := ValidateBucket(bucket); err != nil {
		return err
	}
	var ident string
	if err := q.QueryRow(ctx, `select relreplident::text from pg_class where oid = $1::regclass`, bucket).Scan(&ident); err != nil {
		return fmt.Errorf("replica identity of %s: %w", bucket, err)
	}
	if ident == "f" {
		return nil
	}
	if _, err := q.Exec(ctx, fmt.Sprintf("alter table %s replica identity full", quoteIdent(bucket))); err != nil {
		return fmt.Errorf("replica identity of %s: %w", bucket, err)
	}
	return nil
}

// DropPublication removes the publication if it exists.
func DropPublication(ctx context.Context, q Querier, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	_, err := q.Exec(ctx, "drop publication if exists "+quoteIdent(name))
	return err
}

// CreateSlot creates on the origin the logical replication slot that the
// subscription of the same name will stream from. Creating it apart from
// the subscription lets both be made inside a transaction (a fenced one:
// see fence.go), which CREATE SUBSCRIPTION refuses when it makes the slot.
func CreateSlot(ctx context.Context, q Querier, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	_, err := q.Exec(ctx, `select pg_create_logical_replication_slot($1, 'pgoutput')
		where not exists (select 1 from pg_replication_slots where slot_name = $1)`, name)
	if err != nil {
		return fmt.Errorf("create replication slot %s: %w", name, err)
	}
	return nil
}

// CreateSubscription subscribes the destination to the origin's publication
// through the slot of the subscription's name, made first by CreateSlot.
// copyData copies the rows there are first (the copy); without it only
// changes after the slot's position stream (the way back, whose other
// side has the rows). The conninfo holds the origin's credentials: it goes
// into the statement only, never into an error.
func CreateSubscription(ctx context.Context, q Querier, name, conninfo, publication string, copyData bool) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := checkName(publication); err != nil {
		return err
	}
	var exists bool
	if err := q.QueryRow(ctx, `select exists (select 1 from pg_subscription where subname = $1)`, name).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	lit := "'" + strings.ReplaceAll(conninfo, "'", "''") + "'"
	_, err := q.Exec(ctx, fmt.Sprintf("create subscription %s connection %s publication %s with (copy_data = %t, create_slot = false, slot_name = %s)",
		quoteIdent(name), lit, quoteIdent(publication), copyData, quoteLiteral(name)))
	if err != nil {
		return fmt.Errorf("create subscription %s: %s", name, scrubConninfo(err, conninfo))
	}
	return nil
}

func scrubConninfo(err error, conninfo string) string {
	return strings.ReplaceAll(err.Error(), conninfo, "(origin)")
}

// DropSubscription removes the subscription and, through it, its slot on
// the origin. If the origin cannot be reached the slot is detached first so
// the drop succeeds; DropSlot on the origin then removes it.
func DropSubscription(ctx context.Context, q Querier, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	var exists bool
	if err := q.QueryRow(ctx, `select exists (select 1 from pg_subscription where subname = $1)`, name).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		return nil
	}
	id := quoteIdent(name)
	if _, err := q.Exec(ctx, "drop subscription "+id); err == nil {
		return nil
	}
	if _, err := q.Exec(ctx, "alter subscription "+id+" disable"); err != nil {
		return err
	}
	if _, err := q.Exec(ctx, "alter subscription "+id+" set (slot_name = none)"); err != nil {
		return err
	}
	_, err := q.Exec(ctx, "drop subscription "+id)
	return err
}

// SetSubscriptionEnabled starts or stops a subscription's apply. Stopped,
// the origin's slot keeps every change for it: a backlog, drained once it
// starts again.
func SetSubscriptionEnabled(ctx context.Context, q Querier, name string, enabled bool) error {
	if err := checkName(name); err != nil {
		return err
	}
	verb := map[bool]string{true: "enable", false: "disable"}[enabled]
	_, err := q.Exec(ctx, "alter subscription "+quoteIdent(name)+" "+verb)
	return err
}

// SubscriptionApplying reports whether a subscription's apply worker runs.
func SubscriptionApplying(ctx context.Context, q Querier, name string) (bool, error) {
	var ok bool
	err := q.QueryRow(ctx, `select exists (select 1 from pg_stat_subscription where subname = $1 and pid is not null)`, name).Scan(&ok)
	return ok, err
}

// DropSlot removes a replication slot on the origin if it is still there.
// A slot left behind holds WAL until the origin's disk fills.
func DropSlot(ctx context.Context, q Querier, name string) error {
	for i := 0; i < 50; i++ {
		var active *bool
		err := q.QueryRow(ctx, `select active from pg_replication_slots where slot_name = $1`, name).Scan(&active)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if active != nil && !*active {
			_, err := q.Exec(ctx, `select pg_drop_replication_slot($1)`, name)
			return err
		}
		// The walsender is still attached; it goes once the subscription does.
		if _, err := q.Exec(ctx, `select pg_terminate_backend(active_pid) from pg_replication_slots where slot_name = $1 and active_pid is not null`, name); err != nil {
			return err
		}
		if _, err := q.Exec(ctx, `select pg_sleep(0.1)`); err != nil {
			return err
		}
	}
	return fmt.Errorf("replication slot %s stays active", name)
}

// AdvanceSlot moves a logical slot's confirmed position forward to lsn, so
// its subscriber starts after it: the way back skips the changes the copy
// applied on a destination, which the origin has. PostgreSQL moves a slot
// no further than the WAL flushed, so it reports whether lsn was reached;
// the caller asks again once the WAL writer has flushed.
func AdvanceSlot(ctx context.Context, q Querier, slot, lsn string) (bool, error) {
	if err := checkName(slot); err != nil {
		return false, err
	}
	var reached bool
	err := q.QueryRow(ctx, `select confirmed_flush_lsn >= $2::pg_lsn from pg_replication_slots where slot_name = $1`, slot, lsn).Scan(&reached)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, fmt.Errorf("replication slot %s does not exist", slot)
	}
	if err != nil || reached {
		return reached, err
	}
	if err := q.QueryRow(ctx, `select end_lsn >= $2::pg_lsn from pg_replication_slot_advance($1, $2::pg_lsn)`, slot, lsn).Scan(&reached); err != nil {
		return false, fmt.Errorf("advance replication slot %s: %w", slot, err)
	}
	return reached, nil
}

// SlotExists reports whether the origin still has the slot.
func SlotExists(ctx context.Context, q Querier, name string) (bool, error) {
	var n int
	err := q.QueryRow(ctx, `select count(*) from pg_replication_slots where slot_name = $1`, name).Scan(&n)
	return n > 0, err
}

// SyncState says how far the subscription's initial copy is: tables ready
// (streaming) out of all.
func SyncState(ctx context.Context, q Querier, subscription string) (ready, total int, err error) {
	err = q.QueryRow(ctx, `select count(*) filter (where r.srsubstate = 'r'), count(*)
		from pg_subscription_rel r join pg_subscription s on s.oid = r.srsubid where s.subname = $1`,
		subscription).Scan(&ready, &total)
	return ready, total, err
}

// SlotLag is how many bytes of WAL the origin has written that the slot's
// subscriber has not yet confirmed.
func SlotLag(ctx context.Context, q Querier, slot string) (int64, error) {
	var lag *int64
	err := q.QueryRow(ctx, `select pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
		from pg_replication_slots where slot_name = $1`, slot).Scan(&lag)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("replication slot %s does not exist", slot)
	}
	if err != nil || lag == nil {
		return 0, err
	}
	return *lag, nil
}

// PutMarker writes a marker row on the origin. The destination applies
// transactions in commit order, so once it sees the marker it has applied
// every change committed before it.
func PutMarker(ctx context.Context, q Querier, job, token string) error {
	_, err := q.Exec(ctx, `insert into reshard_markers (job, token) values ($1, $2) on conflict do nothing`, job, token)
	return err
}

// HasMarker reports whether the marker has arrived.
func HasMarker(ctx context.Context, q Querier, job, token string) (bool, error) {
	var ok bool
	err := q.QueryRow(ctx, `select exists (select 1 from reshard_markers where job = $1 and token = $2)`, job, token).Scan(&ok)
	return ok, err
}

// DropMarkers removes a job's markers.
func DropMarkers(ctx context.Context, q Querier, job string) error {
	_, err := q.Exec(ctx, `delete from reshard_markers where job = $1`, job)
	return err
}

// Checksum summarizes one vnode's rows in one bucket: their number and a
// sum of hashes of key and etag, so a lost, extra or different row shows.
type Checksum struct {
	Rows int64
	Sum  string // numeric, as text: exact, whatever the row count
}

// BucketVnode names one vnode's rows in one bucket.
type BucketVnode struct {
	Bucket string
	Vnode  int32
}

// ChecksumsInSnapshot is Checksums over every bucket in one snapshot of
// db, so rows that move between buckets meanwhile are counted once.
func ChecksumsInSnapshot(ctx context.Context, db interface {
	BeginTx(context.Context, pgx.TxOptions) (pgx.Tx, error)
}, buckets []string, ranges []Range) (map[BucketVnode]Checksum, error) {
	var out map[BucketVnode]Checksum
	err := pgx.BeginTxFunc(ctx, db, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) (err error) {
		out, err = Checksums(ctx, tx, buckets, ranges)
		return err
	})
	return out, err
}

// Checksums computes the checksum of every vnode in ranges, per bucket.
func Checksums(ctx context.Context, q Querier, buckets []string, ranges []Range) (map[BucketVnode]Checksum, error) {
	out := map[BucketVnode]Checksum{}
	filter := VnodeFilter(ranges)
	for _, b := range buckets {
		if err := ValidateBucket(b); err != nil {
			return nil, err
		}
		rows, err := q.Query(ctx, fmt.Sprintf(`select _vnode, count(*),
			sum(hashtextextended(_key || ':' || _etag, 0)::numeric)::text
			from %s where %s group by _vnode`, quoteIdent(b), filter))
		if err != nil {
			return nil, fmt.Errorf("checksums of %s: %w", b, err)
		}
		for rows.Next() {
			var v int32
			var c Checksum
			if err := rows.Scan(&v, &c.Rows, &c.Sum); err != nil {
				rows.Close()
				return nil, err
			}
			out[BucketVnode{b, v}] = c
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Mismatches lists the vnodes whose checksums differ between two sides.
func Mismatches(a, b map[BucketVnode]Checksum) []int32 {
	bad := map[int32]bool{}
	for k, ca := range a {
		if b[k] != ca {
			bad[k.Vnode] = true
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			bad[k.Vnode] = true
		}
	}
	out := make([]int32, 0, len(bad))
	for v := range bad {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

// DeleteBatch deletes up to limit rows of vnodes in ranges that the shard
// does not own, bypassing the fence for this delete only. It returns the
// number deleted; 0 means none are left.
func DeleteBatch(ctx context.Context, q Batcher, bucket string, ranges []Range, limit int) (int64, error) {
	return deleteBatch(ctx, q, bucket, ranges, limit,
		"and not reshard_owns(b._vnode)")
}

// DeleteAll deletes up to limit rows of vnodes in ranges, owned or not: an
// aborted job's copy on a destination that never served them.
func DeleteAll(ctx context.Context, q Batcher, bucket string, ranges []Range, limit int) (int64, error) {
	return deleteBatch(ctx, q, bucket, ranges, limit, "")
}

func deleteBatch(ctx context.Context, q Batcher, bucket string, ranges []Range, limit int, also string) (int64, error) {
	if err := ValidateBucket(bucket); err != nil {
		return 0, err
	}
	t := quoteIdent(bucket)
	b := &pgx.Batch{}
	// Deleting rows that moved is no client's delete: the users' own
	// triggers must not see it (libmanta's directory count would count
	// the moved entries out, and its fence check refuse the vnodes given
	// away). session_replication_role = replica skips ordinary triggers,
	// as logical replication's apply does; reshard.cleanup lets the fence
	// pass should it ever run.
	b.Queue(`select set_config('session_replication_role', 'replica', true), set_config('reshard.cleanup', 'on', true)`)
	b.Queue(fmt.Sprintf(`delete from %[1]s where ctid = any(array(
		select ctid from %[1]s b where (%[2]s) %[3]s limit $1))`, t, VnodeFilter(ranges), also), limit)
	br := q.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return 0, err
	}
	tag, err := br.Exec()
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), br.Close()
}

// SyncSequences moves each bucket's _id sequence on dst past the origin's,
// since logical replication does not carry sequences.
func SyncSequences(ctx context.Context, origin, dst Querier, buckets []string) error {
	for _, b := range buckets {
		if err := ValidateBucket(b); err != nil {
			return err
		}
		var last *int64
		if err := origin.QueryRow(ctx, `select last_value from pg_sequences where schemaname = current_schema() and sequencename = $1`,
			b+"_serial").Scan(&last); err != nil {
			return fmt.Errorf("sequence of %s on the origin: %w", b, err)
		}
		if last == nil {
			continue
		}
		if _, err := dst.Exec(ctx, `select setval($1::regclass, greatest($2::bigint,
			(select coalesce(last_value, 1) from pg_sequences where schemaname = current_schema() and sequencename = $3)))`,
			b+"_serial", *last, b+"_serial"); err != nil {
			return fmt.Errorf("sequence of %s on the destination: %w", b, err)
		}
	}
	return nil
}

// RowCount counts rows of vnodes in ranges over the buckets.
func RowCount(ctx context.Context, q Querier, buckets []string, ranges []Range) (int64, error) {
	var total int64
	for _, b := range buckets {
		if err := ValidateBucket(b); err != nil {
			return 0, err
		}
		var n int64
		if err := q.QueryRow(ctx, fmt.Sprintf(`select count(*) from %s where %s`, quoteIdent(b), VnodeFilter(ranges))).Scan(&n); err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// UnownedRows counts rows in ranges whose vnode the shard does not own:
// leftovers of an earlier move that a new publication would copy along.
func UnownedRows(ctx context.Context, q Querier, buckets []string, ranges []Range) (int64, error) {
	var total int64
	for _, b := range buckets {
		if err := ValidateBucket(b); err != nil {
			return 0, err
		}
		var n int64
		if err := q.QueryRow(ctx, fmt.Sprintf(`select count(*) from %s b where (%s)
			and not reshard_owns(b._vnode)`, quoteIdent(b), VnodeFilter(ranges))).Scan(&n); err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// userTrigger is a trigger someone other than reshard put on a bucket's
// table, with the definition of the function it runs.
type userTrigger struct {
	table, name, def, function string
	enabled                    byte // pg_trigger.tgenabled: O, D, R or A
}

// CopyUserTriggers gives dst the PostgreSQL triggers installed on the
// buckets' tables at src by others than reshard (libmanta installs its
// directory count through the sql RPC, on the shards there were then),
// with the functions they run, so that writes to the vnodes dst takes
// over keep running them. It is safe to run again: functions are
// replaced with the origin's, and a trigger dst has already is left as
// it is. The definitions come from the origin's own catalog, as
// PostgreSQL prints them, and run as they are: they cannot be parameters.
// A function that a trigger function calls in turn is not copied.
func CopyUserTriggers(ctx context.Context, src Querier, dst Beginner, buckets []string) error {
	rows, err := src.Query(ctx, `select c.relname, t.tgname, pg_get_triggerdef(t.oid), pg_get_functiondef(t.tgfoid), t.tgenabled
		from pg_trigger t join pg_class c on c.oid = t.tgrelid
		where c.relnamespace = current_schema()::regnamespace and not t.tgisinternal
			and c.relname = any($1) and t.tgname <> 'reshard_fence'
		order by c.relname, t.tgname`, buckets)
	if err != nil {
		return err
	}
	var all []userTrigger
	for rows.Next() {
		var u userTrigger
		var enabled string
		if err := rows.Scan(&u.table, &u.name, &u.def, &u.function, &enabled); err != nil {
			rows.Close()
			return err
		}
		u.enabled = enabled[0]
		all = append(all, u)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(all) == 0 {
		return nil
	}
	return inTx(ctx, dst, func(tx pgx.Tx) error {
		for _, u := range all {
			if _, err := tx.Exec(ctx, u.function); err != nil {
				return fmt.Errorf("copy function of trigger %s on %s: %w", u.name, u.table, err)
			}
			var exists bool
			if err := tx.QueryRow(ctx, `select exists (select 1 from pg_trigger t join pg_class c on c.oid = t.tgrelid
			where c.relnamespace = current_schema()::regnamespace and c.relname = $1 and t.tgname = $2)`, u.table, u.name).Scan(&exists); err != nil {
				return err
			}
			if exists {
				continue
			}
			if _, err := tx.Exec(ctx, u.def); err != nil {
				return fmt.Errorf("copy trigger %s on %s: %w", u.name, u.table, err)
			}
			state := map[byte]string{'D': "disable trigger", 'R': "enable replica trigger", 'A': "enable always trigger"}[u.enabled]
			if state != "" {
				if _, err := tx.Exec(ctx, fmt.Sprintf("alter table %s %s %s", quoteIdent(u.table), state, quoteIdent(u.name))); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// TableIdentity is how a bucket's table lets logical replication find a
// row again: its replica identity (d default, f full, i index, n nothing)
// and whether it has a primary key, which a subscriber's apply uses to
// find the row an update or delete names.
type TableIdentity struct {
	Table      string `json:"table"`
	Identity   string `json:"identity"`
	PrimaryKey bool   `json:"primary_key"`
}

// ReplicaIdentities reads the buckets' tables' replica identities.
func ReplicaIdentities(ctx context.Context, q Querier, buckets []string) ([]TableIdentity, error) {
	rows, err := q.Query(ctx, `select c.relname, c.relreplident::text,
		exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisprimary)
		from pg_class c where c.relnamespace = current_schema()::regnamespace and c.relkind = 'r' and c.relname = any($1)
		order by c.relname`, buckets)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (TableIdentity, error) {
		var t TableIdentity
		err := r.Scan(&t.Table, &t.Identity, &t.PrimaryKey)
		return t, err
	})
}

// TablesSize is the disk the buckets' tables take with their indexes and
// TOAST, in bytes.
func TablesSize(ctx context.Context, q Querier, buckets []string) (int64, error) {
	var n int64
	err := q.QueryRow(ctx, `select coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint from pg_class c
		where c.relnamespace = current_schema()::regnamespace and c.relkind = 'r' and c.relname = any($1)`, buckets).Scan(&n)
	return n, err
}

// Footprint is every bucket table's rows (the live rows PostgreSQL's
// statistics count as writes commit: no table is read) and disk, indexes
// and TOAST included: a dashboard's figure for a shard, cheap at any size.
func Footprint(ctx context.Context, q Querier) (rows, bytes int64, err error) {
	err = q.QueryRow(ctx, `select coalesce(sum(pg_stat_get_live_tuples(c.oid)), 0)::bigint,
		coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
		from pg_class c join buckets_config b on b.name = c.relname
		where c.relnamespace = current_schema()::regnamespace and c.relkind = 'r'`).Scan(&rows, &bytes)
	return rows, bytes, err
}

// SlotRetention is the WAL a replication slot keeps on its server.
type SlotRetention struct {
	Slot  string `json:"slot"`
	Bytes int64  `json:"bytes"`
}

// RetainedWAL lists, worst first, how many bytes of WAL each named slot,
// and each table-copy slot of the subscriptions with the given oids,
// keeps on the server (from its restart position to the current one).
func RetainedWAL(ctx context.Context, q Querier, slots []string, subscriptionOIDs []uint32) ([]SlotRetention, error) {
	patterns := make([]string, len(subscriptionOIDs))
	for i, oid := range subscriptionOIDs {
		patterns[i] = fmt.Sprintf("pg\\_%d\\_sync\\_%%", oid)
	}
	rows, err := q.Query(ctx, `select slot_name::text, coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint
		from pg_replication_slots where slot_name = any($1) or slot_name like any($2) order by 2 desc`, slots, patterns)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (SlotRetention, error) {
		var s SlotRetention
		err := r.Scan(&s.Slot, &s.Bytes)
		return s, err
	})
}
