// Package shard owns what lives inside each shard's database: moray-style
// bucket tables, the vnode ownership table, and the fence that makes the
// database itself refuse writes to vnodes the shard does not own or that
// are frozen for a move.
package shard

import (
	"context"
	"errors"
	"fmt"
	"regexp"

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
// The fence takes FOR SHARE on the vnode's ownership row. Freezing updates
// that row, so the freeze waits for every writer already past the fence to
// commit, and a writer arriving later re-reads the row and sees it frozen.
// That makes the freeze's commit LSN an upper bound on every acknowledged
// write to the vnode. The trigger is an ordinary one, so logical
// replication's apply worker (session_replication_role = replica) skips it.
const schemaSQL = `
create table if not exists reshard_vnodes (
	vnode int primary key,
	writable boolean not null,
	ring_version bigint not null
);
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
declare w boolean;
begin
	select writable into w from reshard_vnodes where vnode = v for share;
	if not found then
		raise exception 'vnode % is not owned by this shard', v using errcode = 'RS001';
	end if;
	if not w then
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
create or replace function reshard_read_check(v int) returns boolean
language plpgsql stable as $$
begin
	if not exists (select 1 from reshard_vnodes where vnode = v) then
		raise exception 'vnode % is not owned by this shard', v using errcode = 'RS001';
	end if;
	return true;
end $$;
`

// Init creates the ownership table, bucket registry and fence functions.
func Init(ctx context.Context, q Querier) error {
	if _, err := q.Exec(ctx, schemaSQL); err != nil {
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

// BucketOptions are per-bucket settings kept in reshard_buckets.
type BucketOptions struct {
	// HashDir hashes a key's parent directory instead of the whole key, as
	// Manta does, so a directory's entries share a vnode.
	HashDir bool `json:"hash_dir,omitempty"`
}

// CreateBucket creates a moray-style bucket table with the fence. The
// primary key holds _vnode so it can serve as the replica identity that a
// row filter on _vnode needs.
func CreateBucket(ctx context.Context, q Querier, name string, opts BucketOptions) error {
	if err := ValidateBucket(name); err != nil {
		return err
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
	if _, err := q.Exec(ctx, sql); err != nil {
		return fmt.Errorf("create bucket %s: %w", name, err)
	}
	if _, err := q.Exec(ctx, `insert into reshard_buckets (name, options) values ($1, $2)
		on conflict (name) do update set options = excluded.options`, name, opts); err != nil {
		return fmt.Errorf("record bucket %s: %w", name, err)
	}
	return nil
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
