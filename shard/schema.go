// Package shard owns what lives inside each shard's database: moray-style
// bucket tables, the vnode ownership table, and the fence that makes the
// database itself refuse writes to vnodes the shard does not own or that
// are frozen for a move.
package shard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/reshard/reshard/postgres"
)

// SQLSTATEs the fence raises. A router that sees either knows the write did
// not happen and may retry on the shard the next ring names. They are
// shard's own (class RS is no PostgreSQL class); PostgreSQL's codes are
// named in package postgres.
const (
	CodeNotOwned = "RS001" // the shard does not own the vnode
	CodeFrozen   = "RS002" // the shard owns it, but it is frozen for a move
	// CodeStaleToken: a job's statement came from an orchestrator that
	// another has since replaced (see fence.go).
	CodeStaleToken = "RS003"
)

// IsFenced reports whether err is the fence refusing a vnode.
func IsFenced(err error) bool {
	code := postgres.Code(err)
	return code == CodeNotOwned || code == CodeFrozen
}

// Querier is what the schema functions need: a connection, pool or tx.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// schemaSQL is idempotent: every shard runs it on setup, and again is harmless.
//
// Ownership is kept in chunks of 1024 vnodes: one row holds two bitmaps,
// the vnodes the shard owns and those of them that are writable. A
// 1,000,000-vnode ring needs at most 977 rows, so a split in half freezes
// and hands over a few hundred rows, not half a million.
//
// The fence takes FOR SHARE on the vnode's chunk row. Freezing updates that
// row, so the freeze waits for every writer already past the fence to
// commit, and a writer arriving later re-reads the row and sees it frozen.
// That makes the freeze's commit LSN an upper bound on every acknowledged
// write to the vnode. The trigger is an ordinary one, so logical
// replication's apply worker (session_replication_role = replica) skips it.
const schemaSQL = `
-- Earlier versions took int vnodes; Moray's _vnode is bigint.
drop function if exists reshard_fence_check(int);
drop function if exists reshard_read_check(int);
drop function if exists reshard_owns(int);
create table if not exists reshard_vnode_chunks (
	chunk int primary key, -- vnode >> 10
	owned bit(1024) not null, -- bit (vnode & 1023) set: the shard owns the vnode
	writable bit(1024) not null, -- a subset of owned
	ring_version bigint not null
);
do $$
begin
	-- Earlier versions kept one row per vnode; fold them into chunks.
	if (select relkind from pg_class where oid = to_regclass('reshard_vnodes')) = 'r' then
		insert into reshard_vnode_chunks (chunk, owned, writable, ring_version)
			select c.chunk,
				(select string_agg(case when o.vnode is null then '0' else '1' end, '' order by g)
					from generate_series(0, 1023) g left join reshard_vnodes o on o.vnode = c.chunk * 1024 + g)::bit(1024),
				(select string_agg(case when o.writable then '1' else '0' end, '' order by g)
					from generate_series(0, 1023) g left join reshard_vnodes o on o.vnode = c.chunk * 1024 + g)::bit(1024),
				c.ring_version
			from (select vnode >> 10 as chunk, max(ring_version) as ring_version from reshard_vnodes group by 1) c
			on conflict (chunk) do nothing;
		drop table reshard_vnodes;
	end if;
end $$;
-- One row per owned vnode, for reports; the fence reads the chunks.
create or replace view reshard_vnodes as
	select c.chunk * 1024 + i as vnode, get_bit(c.writable, i) = 1 as writable, c.ring_version
	from reshard_vnode_chunks c, generate_series(0, 1023) as i
	where get_bit(c.owned, i) = 1;
create or replace function reshard_owns(v bigint) returns boolean
language sql stable as $$
	select coalesce((select get_bit(owned, (v & 1023)::int) = 1 from reshard_vnode_chunks where chunk = (v >> 10)::int), false)
$$;
create table if not exists reshard_markers (
	job text not null,
	token text not null,
	primary key (job, token)
);
-- Fencing tokens (see fence.go): per job, the highest token any of its
-- orchestrators has claimed on this shard. Rows are never deleted: a
-- stale orchestrator must find its successor's token here forever.
create table if not exists reshard_job_tokens (
	job text primary key,
	token bigint not null
);
-- reshard_job_fence lets a job's statement through only if no newer
-- orchestrator of the job has claimed this shard. It takes the job's
-- advisory lock shared (no transaction id, so even a replication slot can
-- be created after it), and a claim takes it exclusive: a claim waits for
-- fenced transactions in flight, and every later one sees the new token.
-- A standby takes no locks; it sees the tokens its primary recorded.
create or replace function reshard_job_fence(j text, t bigint) returns void
language plpgsql as $$
declare cur bigint;
begin
	if not pg_is_in_recovery() then
		perform pg_advisory_xact_lock_shared(hashtextextended('reshard job ' || j, 0));
	end if;
	select token into cur from reshard_job_tokens where job = j;
	if cur > t then
		raise exception 'job %: token % is stale; an orchestrator with token % took the job over', j, t, cur using errcode = 'RS003';
	end if;
end $$;
create or replace function reshard_job_claim(j text, t bigint) returns void
language plpgsql as $$
declare cur bigint;
begin
	perform pg_advisory_xact_lock(hashtextextended('reshard job ' || j, 0));
	insert into reshard_job_tokens as k (job, token) values (j, t)
		on conflict (job) do update set token = greatest(k.token, excluded.token)
		returning token into cur;
	if cur > t then
		raise exception 'job %: token % is stale; an orchestrator with token % took the job over', j, t, cur using errcode = 'RS003';
	end if;
end $$;
-- Moray's own bucket registry, with pg-setup's DDL: a shard Moray wrote
-- already has it, and Moray reads what reshard writes here.
create table if not exists buckets_config (
	name text primary key,
	index text not null,
	pre text not null,
	post text not null,
	options text,
	mtime timestamp without time zone default now() not null
);
create or replace function reshard_fence_check(v bigint) returns void
language plpgsql as $$
declare o bit(1024); w bit(1024);
begin
	select owned, writable into o, w from reshard_vnode_chunks where chunk = (v >> 10)::int for share;
	if not found or get_bit(o, (v & 1023)::int) = 0 then
		raise exception 'vnode % is not owned by this shard', v using errcode = 'RS001';
	end if;
	if get_bit(w, (v & 1023)::int) = 0 then
		raise exception 'vnode % is frozen', v using errcode = 'RS002';
	end if;
end $$;
create or replace function reshard_fence() returns trigger
language plpgsql as $$
begin
	-- A reshard's cleanup deletes rows of vnodes this shard gave away.
	if tg_op = 'DELETE' and current_setting('reshard.cleanup', true) = 'on' then
		return old;
	end if;
	-- A row without a vnode (Moray leaves _vnode NULL when a value has
	-- none, as libmanta's trigger rows) belongs to no vnode: nothing to fence.
	if tg_op in ('UPDATE', 'DELETE') and old._vnode is not null then
		perform reshard_fence_check(old._vnode);
	end if;
	if (tg_op = 'INSERT' or (tg_op = 'UPDATE' and new._vnode is distinct from old._vnode)) and new._vnode is not null then
		perform reshard_fence_check(new._vnode);
	end if;
	if tg_op = 'DELETE' then
		return old;
	end if;
	return new;
end $$;
create or replace function reshard_read_check(v bigint) returns boolean
language plpgsql stable as $$
declare o bit(1024);
begin
	-- The lookup is written out: a SQL function called from PL/pgSQL is
	-- planned on every call, which halves read throughput.
	select owned into o from reshard_vnode_chunks where chunk = (v >> 10)::int;
	if not found or get_bit(o, (v & 1023)::int) = 0 then
		raise exception 'vnode % is not owned by this shard', v using errcode = 'RS001';
	end if;
	return true;
end $$;
`

// Init creates the ownership table, Moray's bucket registry and the fence
// functions beside whatever the database already holds.
func Init(ctx context.Context, q Querier) error {
	if _, err := q.Exec(ctx, schemaSQL); err != nil {
		return fmt.Errorf("init shard schema: %w", err)
	}
	return nil
}

// Bucket names become table names, so they are held to a strict pattern
// (Moray's, less upper case, which PostgreSQL would fold), clear of
// reshard's own tables and Moray's reserved names.
var bucketName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// reservedBuckets are the names Moray refuses.
var reservedBuckets = map[string]bool{"buckets_config": true, "moray": true, "search": true}

// ValidateBucket rejects a name that is not safe as an identifier.
func ValidateBucket(name string) error {
	if !bucketName.MatchString(name) {
		return fmt.Errorf("invalid bucket name %q: use a lower-case letter, then lower-case letters, digits and '_' (at most 63)", name)
	}
	if strings.HasPrefix(name, "reshard_") || strings.HasPrefix(name, "pg_") || reservedBuckets[name] {
		return fmt.Errorf("invalid bucket name %q: reserved", name)
	}
	return nil
}

// BucketOptions is a bucket's definition: how the router hashes its keys
// (kept in etcd) and Moray's config (kept in each shard's buckets_config).
type BucketOptions struct {
	// HashDir hashes a key's parent directory instead of the whole key, as
	// Manta's "manta" bucket does, so a directory's entries share a vnode.
	HashDir bool `json:"hash_dir,omitempty"`
	// HashUpload hashes the parent directory of the path after the upload
	// id ("ID:PATH"), as Manta's "manta_uploads" bucket does.
	HashUpload bool `json:"hash_upload,omitempty"`
	// ShardLocal buckets are never moved: each shard keeps its own rows,
	// as the queues that libmanta's triggers fill on the shard that ran
	// the write (manta_delete_log, manta_fastdelete_queue). Their rows
	// carry no vnode.
	ShardLocal bool `json:"shard_local,omitempty"`
	// Index holds Moray's index definitions: each is a typed column that
	// every write fills from the value's field, as Moray fills it.
	Index map[string]Index `json:"index,omitempty"`
	// Config is the bucket's buckets_config row as Moray writes it.
	Config Config `json:"config"`
}

// Config is a buckets_config row: JSON texts exactly as Moray stores them.
type Config struct {
	Index   string    `json:"index"`   // the index object
	Pre     string    `json:"pre"`     // an array of trigger sources
	Post    string    `json:"post"`    // an array of trigger sources
	Options string    `json:"options"` // options, with version
	Mtime   time.Time `json:"mtime"`
	// ReindexActive is Moray's reindex_active: fields added at a version
	// whose rows are not reindexed yet ("" when none).
	ReindexActive string `json:"reindex_active,omitempty"`
}

// Version is the bucket's options.version (0 when unset).
func (o BucketOptions) Version() int64 {
	var v struct {
		Version json.Number `json:"version"`
	}
	json.Unmarshal([]byte(o.Config.Options), &v)
	n, _ := v.Version.Float64()
	return int64(n)
}

// GuaranteeOrder is Moray's options.guaranteeOrder: writes take a
// bucket-wide lock and number themselves in _txn_snap.
func (o BucketOptions) GuaranteeOrder() bool {
	var v struct {
		GuaranteeOrder any `json:"guaranteeOrder"`
	}
	json.Unmarshal([]byte(o.Config.Options), &v)
	return v.GuaranteeOrder == true
}

// WithConfig fills Config for options made without one (the HTTP API's),
// as Moray would store a createBucket of the same index.
func (o BucketOptions) WithConfig() BucketOptions {
	if o.Config.Index == "" {
		ix, _ := json.Marshal(o.Index)
		if o.Index == nil {
			ix = []byte("{}")
		}
		o.Config.Index = string(ix)
	}
	if o.Config.Pre == "" {
		o.Config.Pre = "[]"
	}
	if o.Config.Post == "" {
		o.Config.Post = "[]"
	}
	if o.Config.Options == "" {
		o.Config.Options = `{"version":0}`
	}
	if o.Config.Mtime.IsZero() {
		o.Config.Mtime = time.Now().UTC().Truncate(time.Microsecond)
	}
	return o
}

// SameHashing reports whether two option sets place keys alike; a bucket's
// hashing can never change, because that would move every key.
func (o BucketOptions) SameHashing(p BucketOptions) bool {
	return o.HashDir == p.HashDir && o.HashUpload == p.HashUpload
}

// Index is one Moray index definition.
type Index struct {
	Type   string `json:"type"`
	Unique bool   `json:"unique,omitempty"`
}

// indexType is one of Moray's index types: its PostgreSQL column type,
// its index method, and the scalar type of an array type's elements.
type indexType struct {
	pg, method, scalar string
}

// indexTypes are Moray 2.6.1's types (its lib/types.js): the column
// type and index method createBucket gives each. Moray has no [uuid],
// [numrange] or [daterange].
var indexTypes = map[string]indexType{
	"string":    {"TEXT", "BTREE", ""},
	"[string]":  {"TEXT[]", "GIN", "string"},
	"number":    {"NUMERIC", "BTREE", ""},
	"[number]":  {"NUMERIC[]", "GIN", "number"},
	"numrange":  {"NUMRANGE", "GIST", ""},
	"boolean":   {"BOOLEAN", "BTREE", ""},
	"[boolean]": {"BOOLEAN[]", "GIN", "boolean"},
	"date":      {"TIMESTAMPTZ", "BTREE", ""},
	"[date]":    {"TIMESTAMPTZ[]", "GIN", "date"},
	"daterange": {"TSTZRANGE", "GIST", ""},
	"ip":        {"INET", "BTREE", ""},
	"[ip]":      {"INET[]", "GIN", "ip"},
	"mac":       {"MACADDR", "BTREE", ""},
	"[mac]":     {"MACADDR[]", "GIN", "mac"},
	"subnet":    {"CIDR", "BTREE", ""},
	"[subnet]":  {"CIDR[]", "GIN", "subnet"},
	"uuid":      {"UUID", "BTREE", ""},
}

// morayTypeOrder is the order of Moray's type table, which its
// createBucket error lists.
var morayTypeOrder = []string{"string", "[string]", "number", "[number]", "numrange", "boolean", "[boolean]",
	"date", "[date]", "daterange", "ip", "[ip]", "mac", "[mac]", "subnet", "[subnet]", "uuid"}

// extOps are the column types' extensible filters, Moray's overlaps,
// contains and within: the type of the filter's value and the operator
// that puts it before the column.
type extOp struct{ valueType, op string }

var extOps = map[string]map[string]extOp{
	"number":    {"within": {"numrange", "@>"}},
	"[number]":  {"within": {"numrange", "@>"}},
	"numrange":  {"overlaps": {"numrange", "&&"}, "contains": {"number", "<@"}},
	"date":      {"within": {"daterange", "@>"}},
	"[date]":    {"within": {"daterange", "@>"}},
	"daterange": {"overlaps": {"daterange", "&&"}, "contains": {"date", "<@"}},
	"ip":        {"within": {"subnet", ">>"}},
	"[ip]":      {"within": {"subnet", ">>"}},
	"subnet":    {"contains": {"ip", "<<"}},
	"[subnet]":  {"contains": {"ip", "<<"}},
}

// Index field names become column names, so they are held to Moray's
// pattern; like Moray, reshard puts them in SQL unquoted, so PostgreSQL
// folds them to lower case.
var indexName = regexp.MustCompile(`^(_[a-zA-Z0-9]+|[a-zA-Z][_a-zA-Z0-9]*[a-zA-Z0-9]|[a-zA-Z])$`)

var reservedIndexes = map[string]bool{"_etag": true, "_id": true, "_idx": true, "_key": true, "_atime": true,
	"_ctime": true, "_mtime": true, "_rver": true, "_txn_snap": true, "_value": true, "_vnode": true}

// sqlReserved are words PostgreSQL will not take as a bare column name;
// Moray fails on them at createBucket, and so does reshard, up front.
var sqlReserved = map[string]bool{"all": true, "analyse": true, "analyze": true, "and": true, "any": true, "array": true,
	"as": true, "asc": true, "asymmetric": true, "both": true, "case": true, "cast": true, "check": true, "collate": true,
	"column": true, "constraint": true, "create": true, "current_catalog": true, "current_date": true, "current_role": true,
	"current_time": true, "current_timestamp": true, "current_user": true, "default": true, "deferrable": true, "desc": true,
	"distinct": true, "do": true, "else": true, "end": true, "except": true, "false": true, "fetch": true, "for": true,
	"foreign": true, "from": true, "grant": true, "group": true, "having": true, "in": true, "initially": true,
	"intersect": true, "into": true, "lateral": true, "leading": true, "limit": true, "localtime": true,
	"localtimestamp": true, "not": true, "null": true, "offset": true, "on": true, "only": true, "or": true, "order": true,
	"placing": true, "primary": true, "references": true, "returning": true, "select": true, "session_user": true,
	"some": true, "symmetric": true, "table": true, "then": true, "to": true, "trailing": true, "true": true, "union": true,
	"unique": true, "user": true, "using": true, "variadic": true, "when": true, "where": true, "window": true, "with": true}

// BucketConfigError is Moray's InvalidBucketConfigError: a bucket's
// config that createBucket or updateBucket refuses, with Moray's message.
type BucketConfigError struct{ Message string }

func (e *BucketConfigError) Error() string { return e.Message }

// nameClash is the client's error behind PostgreSQL's refusal of a name
// that is taken. Like Moray, reshard leaves its names unquoted, so
// PostgreSQL folds them to lower case and cuts them to 63 bytes: two
// index fields that differ in case are one column, and a long bucket
// name can make its sequence, its indexes and its table one name. Moray
// passes PostgreSQL's error on; the names are the client's choice, so
// here they are a bad config, said without PostgreSQL's text.
func nameClash(bucket string, err error) error {
	switch postgres.Code(err) {
	case postgres.DuplicateColumn:
		return &BucketConfigError{"two index names of bucket " + bucket + " are one column: PostgreSQL reads them in lower case"}
	case postgres.DuplicateTable, postgres.DuplicateObject:
		return &BucketConfigError{"bucket " + bucket + " and its index names are too long: PostgreSQL cuts names to 63 bytes, " +
			"which would give two of the bucket's tables, sequences or indexes one name"}
	}
	return err
}

// ValidateIndex checks one index definition: its type, then its name,
// with Moray's messages.
func ValidateIndex(field string, ix Index) error {
	if _, ok := indexTypes[ix.Type]; !ok {
		return typeEnumError(field)
	}
	return validateIndexName(field)
}

func validateIndexName(field string) error {
	if !indexName.MatchString(field) {
		return &BucketConfigError{`invalid index name "` + field + `"`}
	}
	lc := strings.ToLower(field)
	if reservedIndexes[lc] {
		return &BucketConfigError{`index name "` + field + `" is reserved for use by Moray`}
	}
	if strings.HasPrefix(strings.TrimLeft(lc, "_"), "moray") {
		return &BucketConfigError{`index names cannot start with "moray": "` + field + `"`}
	}
	if sqlReserved[lc] || len(lc) > 63 {
		// Moray would fail creating the table; reshard refuses up front.
		return &BucketConfigError{`index name "` + field + `" cannot be a column name`}
	}
	return nil
}

// typeEnumError is the message Moray's schema validator (ajv) gives a
// type that is not one of Moray's.
func typeEnumError(field string) error {
	quoted := make([]string, len(morayTypeOrder))
	for i, t := range morayTypeOrder {
		quoted[i] = `"` + t + `"`
	}
	return &BucketConfigError{"bucket.index['" + field + "'].type should be equal to one of the allowed values (" +
		strings.Join(quoted, ", ") + ")"}
}

// column is the column of an index field: the name folded to lower case,
// as PostgreSQL folds Moray's unquoted identifiers. ValidateIndex has
// held it to letters, digits and '_', so it is safe in SQL as it is.
func column(field string) string { return strings.ToLower(field) }

// IndexColumn is how a bucket's field is read in SQL: the typed column of
// an index, a row column for Moray's own fields, or the field of the value.
func (o BucketOptions) IndexColumn(attr string) Column {
	switch attr {
	case "_key":
		return Column{Expr: "_key", Type: "string"}
	case "_id", "_mtime", "_txn_snap":
		return Column{Expr: attr, Type: "number"}
	case "_etag":
		return Column{Expr: "_etag", Type: "string"}
	}
	if ix, ok := o.Index[attr]; ok {
		return Column{Expr: column(attr), Type: ix.Type}
	}
	return Column{Expr: "(_value::jsonb->" + quoteLiteral(attr) + ")", Type: "json"}
}

// quoteLiteral quotes s as an SQL string literal.
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// identifier is how PostgreSQL reads an unquoted name: folded to lower case
// and cut to 63 bytes, which is what Moray's generated names become.
func identifier(s string) string {
	s = strings.ToLower(s)
	if len(s) > 63 {
		s = s[:63]
	}
	return s
}

// indexDDL creates Moray's partial index on one column.
func indexDDL(bucket, col, method string) string {
	return fmt.Sprintf("CREATE INDEX %s ON %s USING %s (%s) WHERE %s IS NOT NULL",
		quoteIdent(identifier(bucket+"_"+col+"_idx")), bucket, method, col, col)
}

// fenceDDL puts the fence on a bucket table. It is an ordinary trigger, so
// logical replication's apply worker does not fire it.
func fenceDDL(bucket string) string {
	return fmt.Sprintf(`create or replace trigger reshard_fence before insert or update or delete on %s
	for each row execute function reshard_fence()`, bucket)
}

// CreateBucket makes what Moray's createBucket makes, in one transaction:
// the buckets_config row, the <bucket>_serial sequence, <bucket>_locking_serial
// for guaranteeOrder, the table with Moray's columns and one column per
// index, and Moray's partial indexes; and the fence. A bucket that exists
// already is ErrBucketExists, and nothing changes.
func CreateBucket(ctx context.Context, db Beginner, name string, opts BucketOptions) error {
	if err := ValidateBucket(name); err != nil {
		return err
	}
	for f, ix := range opts.Index {
		if err := ValidateIndex(f, ix); err != nil {
			return err
		}
	}
	opts = opts.WithConfig()
	cols := ""
	fields := orderedFields(opts)
	for _, f := range fields {
		ix := opts.Index[f]
		cols += ", " + column(f) + " " + indexTypes[ix.Type].pg
		if ix.Unique {
			cols += " UNIQUE"
		}
	}
	stmts := []string{
		fmt.Sprintf("CREATE SEQUENCE %s_serial", name),
	}
	if opts.GuaranteeOrder() {
		stmts = append(stmts, fmt.Sprintf("CREATE TABLE %s_locking_serial (id INTEGER PRIMARY KEY)", name),
			fmt.Sprintf("INSERT INTO %s_locking_serial (id) VALUES (1)", name))
	}
	stmts = append(stmts, fmt.Sprintf("CREATE TABLE %[1]s (_id BIGINT DEFAULT nextval('%[1]s_serial'), _txn_snap INTEGER, "+
		"_key TEXT PRIMARY KEY, _value TEXT NOT NULL, _etag CHAR(8) NOT NULL, "+
		"_mtime BIGINT DEFAULT CAST (EXTRACT (EPOCH FROM NOW()) * 1000 AS BIGINT), _vnode BIGINT %[2]s)", name, cols))
	for _, f := range fields {
		if ix := opts.Index[f]; !ix.Unique {
			stmts = append(stmts, indexDDL(name, column(f), indexTypes[ix.Type].method))
		}
	}
	for _, c := range []string{"_id", "_etag", "_mtime", "_vnode"} {
		stmts = append(stmts, indexDDL(name, c, "BTREE"))
	}
	stmts = append(stmts, fenceDDL(name))
	return inTx(ctx, db, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `insert into buckets_config (name, index, pre, post, options, mtime)
			values ($1, $2, $3, $4, $5, $6) on conflict (name) do nothing`,
			name, opts.Config.Index, opts.Config.Pre, opts.Config.Post, opts.Config.Options, opts.Config.Mtime)
		if err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("bucket %s: %w", name, ErrBucketExists)
		}
		for _, st := range stmts {
			if _, err := tx.Exec(ctx, st); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, nameClash(name, err))
			}
		}
		return nil
	})
}

// Beginner starts transactions: a pool or a connection.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

func inTx(ctx context.Context, db Beginner, fn func(pgx.Tx) error) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// ErrBucketExists: createBucket of a bucket the shard has.
var ErrBucketExists = errors.New("bucket already exists")

// UpdateBucket brings a bucket to opts as Moray's updateBucket does:
// removed fields lose their columns, new fields get a column (NULL in the
// existing rows, which is why a versioned bucket records them in
// reindex_active and its rows carry _rver) and Moray's index, and the
// buckets_config row is replaced. No table is rewritten.
func UpdateBucket(ctx context.Context, db Beginner, name string, opts BucketOptions) error {
	if err := ValidateBucket(name); err != nil {
		return err
	}
	for f, ix := range opts.Index {
		if err := ValidateIndex(f, ix); err != nil {
			return err
		}
	}
	opts = opts.WithConfig()
	return inTx(ctx, db, func(tx pgx.Tx) error {
		have, err := Buckets(ctx, tx)
		if err != nil {
			return err
		}
		old, ok := have[name]
		if !ok {
			return fmt.Errorf("bucket %s: %w", name, ErrBucketNotFound)
		}
		var add, del []string
		for _, f := range orderedFields(opts) {
			if _, ok := old.Index[f]; !ok {
				add = append(add, f)
			}
		}
		for _, f := range sortedFields(old.Index) {
			if _, ok := opts.Index[f]; !ok {
				del = append(del, f)
			}
		}
		var stmts []string
		if _, err := tx.Exec(ctx, `alter table buckets_config add column if not exists reindex_active text`); err != nil {
			return fmt.Errorf("update bucket %s: %w", name, err)
		}
		reindex := NextReindexActive(old, opts)
		if opts.Version() != 0 {
			stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s ADD COLUMN IF NOT EXISTS _rver INTEGER", name),
				strings.Replace(indexDDL(name, "_rver", "BTREE"), "CREATE INDEX", "CREATE INDEX IF NOT EXISTS", 1))
		}
		for _, f := range del {
			stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s DROP COLUMN %s", name, column(f)))
		}
		for _, f := range add {
			stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", name, column(f), indexTypes[opts.Index[f].Type].pg))
		}
		for _, f := range add {
			ix := opts.Index[f]
			ddl := indexDDL(name, column(f), indexTypes[ix.Type].method)
			if ix.Unique {
				ddl = strings.Replace(ddl, "CREATE INDEX", "CREATE UNIQUE INDEX", 1)
			}
			stmts = append(stmts, ddl)
		}
		var ra any
		if reindex != "" {
			ra = reindex
		}
		if _, err := tx.Exec(ctx, `update buckets_config set index = $2, pre = $3, post = $4, options = $5,
			reindex_active = coalesce($6, reindex_active) where name = $1`,
			name, opts.Config.Index, opts.Config.Pre, opts.Config.Post, opts.Config.Options, ra); err != nil {
			return fmt.Errorf("update bucket %s: %w", name, err)
		}
		for _, st := range stmts {
			if _, err := tx.Exec(ctx, st); err != nil {
				return fmt.Errorf("update bucket %s: %w", name, nameClash(name, err))
			}
		}
		return nil
	})
}

// NextReindexActive is the reindex_active an update from old to opts
// leaves: a versioned update records the fields it adds at its version,
// which old rows have not filled. Routers keep it with the bucket too.
func NextReindexActive(old, opts BucketOptions) string {
	v := opts.Version()
	if v == 0 {
		return old.Config.ReindexActive
	}
	var add []string
	for _, f := range orderedFields(opts) {
		if _, ok := old.Index[f]; !ok {
			add = append(add, f)
		}
	}
	return addReindex(old.Config.ReindexActive, v, add)
}

// addReindex records fields added at version v in a reindex_active text,
// {"VERSION": [fields]}, as Moray keeps it.
func addReindex(text string, v int64, fields []string) string {
	if len(fields) == 0 {
		return text
	}
	m := map[string][]string{}
	json.Unmarshal([]byte(text), &m)
	k := fmt.Sprint(v)
	for _, f := range fields {
		if !containsString(m[k], f) {
			m[k] = append(m[k], f)
		}
	}
	out, _ := json.Marshal(m)
	return string(out)
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// DropBucket drops what CreateBucket made (idempotent).
func DropBucket(ctx context.Context, db Beginner, name string) error {
	if err := ValidateBucket(name); err != nil {
		return err
	}
	return inTx(ctx, db, func(tx pgx.Tx) error {
		for _, st := range []string{
			fmt.Sprintf("DROP TABLE IF EXISTS %s", name),
			fmt.Sprintf("DROP TABLE IF EXISTS %s_locking_serial", name),
			fmt.Sprintf("DROP SEQUENCE IF EXISTS %s_serial", name),
		} {
			if _, err := tx.Exec(ctx, st); err != nil {
				return fmt.Errorf("drop bucket %s: %w", name, err)
			}
		}
		if _, err := tx.Exec(ctx, `delete from buckets_config where name = $1`, name); err != nil {
			return fmt.Errorf("drop bucket %s: %w", name, err)
		}
		return nil
	})
}

// ErrBucketNotFound: no such bucket.
var ErrBucketNotFound = errors.New("bucket does not exist")

func sortedFields(m map[string]Index) []string {
	out := make([]string, 0, len(m))
	for f := range m {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

// Buckets reads the shard's buckets_config: every bucket's definition.
// Hashing is not there (the router decides it, from etcd).
func Buckets(ctx context.Context, q Querier) (map[string]BucketOptions, error) {
	hasReindex := false
	if err := q.QueryRow(ctx, `select exists (select 1 from information_schema.columns
		where table_name = 'buckets_config' and column_name = 'reindex_active' and table_schema = current_schema())`).Scan(&hasReindex); err != nil {
		return nil, fmt.Errorf("list buckets: %w", err)
	}
	ra := "null::text"
	if hasReindex {
		ra = "reindex_active"
	}
	rows, err := q.Query(ctx, `select name, index, pre, post, coalesce(options, '{}'), mtime, `+ra+` from buckets_config order by name`)
	if err != nil {
		return nil, fmt.Errorf("list buckets: %w", err)
	}
	defer rows.Close()
	out := map[string]BucketOptions{}
	for rows.Next() {
		var n string
		var o BucketOptions
		var reindex *string
		if err := rows.Scan(&n, &o.Config.Index, &o.Config.Pre, &o.Config.Post, &o.Config.Options, &o.Config.Mtime, &reindex); err != nil {
			return nil, err
		}
		if reindex != nil {
			o.Config.ReindexActive = *reindex
		}
		if err := json.Unmarshal([]byte(o.Config.Index), &o.Index); err != nil {
			return nil, fmt.Errorf("bucket %s: its index in buckets_config is not JSON: %w", n, err)
		}
		out[n] = o
	}
	return out, rows.Err()
}

func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

// OptionsWithVersion is Moray's createBucket options text: the client's
// options with `version` set to `options.version || 0`, and the version.
func OptionsWithVersion(raw []byte) (string, int64, error) {
	var v struct {
		Version any `json:"version"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", 0, err
	}
	version := int64(0)
	switch x := v.Version.(type) {
	case float64:
		version = int64(x)
	case nil, bool:
	default:
		return "", 0, fmt.Errorf("options.version must be a number")
	}
	text, err := MorayValue(raw, nil)
	if err != nil {
		return "", 0, err
	}
	if v.Version == nil || v.Version == false || v.Version == float64(0) {
		fs, err := topFields(text)
		if err != nil {
			return "", 0, err
		}
		if j := fs.find("version"); j >= 0 {
			fs[j].val = "0"
		} else {
			fs = append(fs, field{quoted: `"version"`, key: "version", val: "0"})
		}
		text = fs.text()
	}
	return text, version, nil
}

// EnsureBucket makes sure the shard has the bucket, creating it as Moray
// would if it is missing, and that its table carries the fence. A bucket
// Moray created already keeps its table and config as they are: adopting
// a shard rewrites nothing, and only a missing fence trigger is added.
func EnsureBucket(ctx context.Context, db Beginner, name string, opts BucketOptions) error {
	err := CreateBucket(ctx, db, name, opts)
	if !errors.Is(err, ErrBucketExists) {
		return err
	}
	return withLockRetry(ctx, db, 30, func(tx pgx.Tx) error {
		var fenced bool
		if err := tx.QueryRow(ctx, `select exists (select 1 from pg_trigger
			where tgrelid = $1::regclass and tgname = 'reshard_fence')`, name).Scan(&fenced); err != nil {
			return fmt.Errorf("bucket %s: %w", name, err)
		}
		if fenced {
			return nil
		}
		if _, err := tx.Exec(ctx, fenceDDL(name)); err != nil {
			return fmt.Errorf("bucket %s: fence: %w", name, err)
		}
		return nil
	})
}
