// Package shard owns what lives inside each shard's database: moray-style
// bucket tables, the vnode ownership table, and the fence that makes the
// database itself refuse writes to vnodes the shard does not own or that
// are frozen for a move.
package shard

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// SQLSTATEs the fence raises. A router that sees either knows the write did
// not happen and may retry on the shard the next ring names.
const (
	CodeNotOwned = "RS001" // the shard does not own the vnode
	CodeFrozen   = "RS002" // the shard owns it, but it is frozen for a move
)

// IsFenced reports whether err is the fence refusing a vnode.
func IsFenced(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == CodeNotOwned || pe.Code == CodeFrozen)
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
create or replace function reshard_owns(v int) returns boolean
language sql stable as $$
	select coalesce((select get_bit(owned, v & 1023) = 1 from reshard_vnode_chunks where chunk = v >> 10), false)
$$;
create table if not exists reshard_markers (
	job text not null,
	token text not null,
	primary key (job, token)
);
create table if not exists reshard_buckets (
	name text primary key,
	options jsonb not null default '{}'
);
create or replace function reshard_fence_check(v int) returns void
language plpgsql as $$
declare o bit(1024); w bit(1024);
begin
	select owned, writable into o, w from reshard_vnode_chunks where chunk = v >> 10 for share;
	if not found or get_bit(o, v & 1023) = 0 then
		raise exception 'vnode % is not owned by this shard', v using errcode = 'RS001';
	end if;
	if get_bit(w, v & 1023) = 0 then
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
	if tg_op in ('UPDATE', 'DELETE') then
		perform reshard_fence_check(old._vnode);
	end if;
	if tg_op = 'INSERT' or (tg_op = 'UPDATE' and new._vnode <> old._vnode) then
		perform reshard_fence_check(new._vnode);
	end if;
	if tg_op = 'DELETE' then
		return old;
	end if;
	return new;
end $$;
-- Index columns are generated from the value's fields. A value of the
-- wrong type gives NULL, as Moray leaves such a field out of its index,
-- rather than failing the write.
create or replace function reshard_idx_text(v jsonb) returns text
language sql immutable as $$
	select case when jsonb_typeof(v) in ('string', 'number', 'boolean') then v #>> '{}' end
$$;
create or replace function reshard_idx_num(v jsonb) returns numeric
language sql immutable as $$
	select case
		when jsonb_typeof(v) = 'number' then (v #>> '{}')::numeric
		when jsonb_typeof(v) = 'string' and (v #>> '{}') ~ '^\s*-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?\s*$' then (v #>> '{}')::numeric
	end
$$;
create or replace function reshard_idx_bool(v jsonb) returns boolean
language sql immutable as $$
	select case
		when jsonb_typeof(v) = 'boolean' then (v #>> '{}')::boolean
		when jsonb_typeof(v) = 'string' and (v #>> '{}') in ('true', 'false') then (v #>> '{}')::boolean
	end
$$;
create or replace function reshard_read_check(v int) returns boolean
language plpgsql stable as $$
declare o bit(1024);
begin
	-- The lookup is written out: a SQL function called from PL/pgSQL is
	-- planned on every call, which halves read throughput.
	select owned into o from reshard_vnode_chunks where chunk = v >> 10;
	if not found or get_bit(o, v & 1023) = 0 then
		raise exception 'vnode % is not owned by this shard', v using errcode = 'RS001';
	end if;
	return true;
end $$;
`

// arrayIndexSQL gives each scalar index function its array form, for the
// "[string]", "[number]" and "[boolean]" index types: a scalar value counts
// as an array of one.
var arrayIndexSQL = func() string {
	var b strings.Builder
	for _, t := range []struct{ fn, typ string }{{"text", "text"}, {"num", "numeric"}, {"bool", "boolean"}} {
		fmt.Fprintf(&b, `create or replace function reshard_idx_%[1]s_array(v jsonb) returns %[2]s[]
language sql immutable as $$
	select case jsonb_typeof(v)
		when 'array' then array(select reshard_idx_%[1]s(e) from jsonb_array_elements(v) e)
		when 'null' then null
		else array[reshard_idx_%[1]s(v)]
	end
$$;
`, t.fn, t.typ)
	}
	return b.String()
}()

// Init creates the ownership table, bucket registry and fence functions.
func Init(ctx context.Context, q Querier) error {
	if _, err := q.Exec(ctx, schemaSQL+arrayIndexSQL); err != nil {
		return fmt.Errorf("init shard schema: %w", err)
	}
	return nil
}

// Bucket names become table names, so they are held to a strict pattern
// (and kept clear of reshard's own tables and PostgreSQL's).
var bucketName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// ValidateBucket rejects a name that is not safe as an identifier.
func ValidateBucket(name string) error {
	if !bucketName.MatchString(name) {
		return fmt.Errorf("invalid bucket name %q: use a lower-case letter, then lower-case letters, digits and '_' (at most 63)", name)
	}
	if len(name) >= 8 && name[:8] == "reshard_" || len(name) >= 3 && name[:3] == "pg_" {
		return fmt.Errorf("invalid bucket name %q: reserved prefix", name)
	}
	return nil
}

// BucketOptions are per-bucket settings kept in reshard_buckets and etcd.
type BucketOptions struct {
	// HashDir hashes a key's parent directory instead of the whole key, as
	// Manta's "manta" bucket does, so a directory's entries share a vnode.
	HashDir bool `json:"hash_dir,omitempty"`
	// HashUpload hashes the parent directory of the path after the upload
	// id ("ID:PATH"), as Manta's "manta_uploads" bucket does.
	HashUpload bool `json:"hash_upload,omitempty"`
	// Index holds Moray's index definitions: each becomes a typed column
	// generated from the value's field, with an index on it.
	Index map[string]Index `json:"index,omitempty"`
	// Moray keeps what a Moray client set that reshard stores but does not
	// interpret (pre and post triggers, options with version, mtime).
	Moray json.RawMessage `json:"moray,omitempty"`
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

// indexTypes maps Moray's index types to the column type, the function
// that extracts a value of that type from jsonb, and the index method.
var indexTypes = map[string]struct{ col, fn, method string }{
	"string":    {"text", "reshard_idx_text", "btree"},
	"number":    {"numeric", "reshard_idx_num", "btree"},
	"boolean":   {"boolean", "reshard_idx_bool", "btree"},
	"[string]":  {"text[]", "reshard_idx_text_array", "gin"},
	"[number]":  {"numeric[]", "reshard_idx_num_array", "gin"},
	"[boolean]": {"boolean[]", "reshard_idx_bool_array", "gin"},
}

// Index field names become column names, so they are held to a pattern
// that cannot reach reshard's own columns (which start with "_").
var indexName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,62}$`)

// ValidateIndex checks one index definition.
func ValidateIndex(field string, ix Index) error {
	if !indexName.MatchString(field) {
		return fmt.Errorf("invalid index name %q: use a letter, then letters, digits and '_' (at most 63)", field)
	}
	if _, ok := indexTypes[ix.Type]; !ok {
		return fmt.Errorf("index %s has type %q: supported types are string, number, boolean, [string], [number] and [boolean]", field, ix.Type)
	}
	return nil
}

// IndexColumn is how a bucket's field is read in SQL: the typed column of
// an index, a row column for Moray's own fields, or the raw jsonb field.
func (o BucketOptions) IndexColumn(attr string) Column {
	switch attr {
	case "_key":
		return Column{Expr: "_key", Type: "string"}
	case "_id", "_mtime":
		return Column{Expr: attr, Type: "number"}
	case "_etag":
		return Column{Expr: "_etag", Type: "string"}
	}
	if ix, ok := o.Index[attr]; ok {
		return Column{Expr: quoteIdent(attr), Type: ix.Type}
	}
	return Column{Expr: "(_value->" + quoteLiteral(attr) + ")", Type: "json"}
}

// quoteLiteral quotes s as an SQL string literal.
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// indexIdent names a field's index; long names are shortened with a digest
// so two fields never truncate to the same name.
func indexIdent(bucket, field string) string {
	n := bucket + "_" + field + "_idx"
	if len(n) <= 63 {
		return quoteIdent(n)
	}
	sum := sha256.Sum256([]byte(field))
	b := bucket
	if len(b) > 40 {
		b = b[:40]
	}
	return quoteIdent(b + "_" + hex.EncodeToString(sum[:6]) + "_idx")
}

// indexSQL adds a field's generated column and its index. The column is
// generated (stored) so every write path fills it: the router's puts, COPY,
// and logical replication's apply on a destination, which computes
// generated columns itself.
func indexSQL(bucket, field string, ix Index) string {
	t := indexTypes[ix.Type]
	unique := ""
	if ix.Unique {
		unique = "unique "
	}
	return fmt.Sprintf(`alter table %[1]s add column if not exists %[2]s %[3]s generated always as (%[4]s(_value->%[5]s)) stored;
create %[6]sindex if not exists %[7]s on %[1]s using %[8]s (%[2]s);
`, quoteIdent(bucket), quoteIdent(field), t.col, t.fn, quoteLiteral(field), unique, indexIdent(bucket, field), t.method)
}

// CreateBucket creates a moray-style bucket table with the fence and its
// index columns. The primary key holds _vnode so it can serve as the
// replica identity that a row filter on _vnode needs.
func CreateBucket(ctx context.Context, q Querier, name string, opts BucketOptions) error {
	if err := ValidateBucket(name); err != nil {
		return err
	}
	for f, ix := range opts.Index {
		if err := ValidateIndex(f, ix); err != nil {
			return err
		}
	}
	t := quoteIdent(name)
	sql := fmt.Sprintf(`
create table if not exists %[1]s (
	_id bigserial not null,
	_key text not null,
	_value jsonb not null,
	_etag text not null,
	_mtime bigint not null,
	_vnode int not null,
	primary key (_key, _vnode)
);
create index if not exists %[2]s on %[1]s (_vnode);
create or replace trigger reshard_fence before insert or update or delete on %[1]s
	for each row execute function reshard_fence();
`, t, quoteIdent(name+"_vnode_idx"))
	for _, f := range sortedFields(opts.Index) {
		sql += indexSQL(name, f, opts.Index[f])
	}
	// Two creators racing on "if not exists" can both pass the check and
	// one fails on the catalog's unique index; a second try sees the table.
	for try := 0; ; try++ {
		_, err := q.Exec(ctx, sql)
		if err == nil {
			break
		}
		var pe *pgconn.PgError
		if try < 3 && errors.As(err, &pe) && (pe.Code == "23505" || pe.Code == "42P07" || pe.Code == "42710") {
			continue
		}
		return fmt.Errorf("create bucket %s: %w", name, err)
	}
	return recordBucket(ctx, q, name, opts)
}

func recordBucket(ctx context.Context, q Querier, name string, opts BucketOptions) error {
	if _, err := q.Exec(ctx, `insert into reshard_buckets (name, options) values ($1, $2)
		on conflict (name) do update set options = excluded.options`, name, opts); err != nil {
		return fmt.Errorf("record bucket %s: %w", name, err)
	}
	return nil
}

// UpdateBucket brings a bucket's index columns to opts: new fields get a
// column and an index, removed fields lose theirs, and a field whose type
// or uniqueness changed is rebuilt. Adding a generated column rewrites the
// table, as Moray's reindexing also touches every row.
func UpdateBucket(ctx context.Context, q Querier, name string, opts BucketOptions) error {
	if err := ValidateBucket(name); err != nil {
		return err
	}
	for f, ix := range opts.Index {
		if err := ValidateIndex(f, ix); err != nil {
			return err
		}
	}
	have, err := Buckets(ctx, q)
	if err != nil {
		return err
	}
	old, ok := have[name]
	if !ok {
		return fmt.Errorf("bucket %s: %w", name, ErrBucketNotFound)
	}
	if !old.SameHashing(opts) {
		return fmt.Errorf("bucket %s: its hashing cannot change, that would move every key", name)
	}
	sql := ""
	for _, f := range sortedFields(old.Index) {
		if nix, ok := opts.Index[f]; !ok || nix != old.Index[f] {
			sql += fmt.Sprintf("alter table %s drop column if exists %s;\n", quoteIdent(name), quoteIdent(f))
		}
	}
	for _, f := range sortedFields(opts.Index) {
		sql += indexSQL(name, f, opts.Index[f])
	}
	if sql != "" {
		if _, err := q.Exec(ctx, sql); err != nil {
			return fmt.Errorf("update bucket %s: %w", name, err)
		}
	}
	return recordBucket(ctx, q, name, opts)
}

// DropBucket drops a bucket's table and record (idempotent).
func DropBucket(ctx context.Context, q Querier, name string) error {
	if err := ValidateBucket(name); err != nil {
		return err
	}
	if _, err := q.Exec(ctx, fmt.Sprintf("drop table if exists %s", quoteIdent(name))); err != nil {
		return fmt.Errorf("drop bucket %s: %w", name, err)
	}
	if _, err := q.Exec(ctx, `delete from reshard_buckets where name = $1`, name); err != nil {
		return fmt.Errorf("drop bucket %s: %w", name, err)
	}
	return nil
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

// Buckets lists the shard's buckets and their options.
func Buckets(ctx context.Context, q Querier) (map[string]BucketOptions, error) {
	rows, err := q.Query(ctx, `select name, options from reshard_buckets order by name`)
	if err != nil {
		return nil, fmt.Errorf("list buckets: %w", err)
	}
	out := map[string]BucketOptions{}
	for rows.Next() {
		var n string
		var o BucketOptions
		if err := rows.Scan(&n, &o); err != nil {
			return nil, err
		}
		out[n] = o
	}
	return out, rows.Err()
}

func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }
