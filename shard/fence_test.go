package shard_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/reshard/reshard"
	"github.com/reshard/reshard/lab/labtest"
	"github.com/reshard/reshard/shard"
)

// A job's fencing token on a shard: a claim raises it, a fenced step with
// a lower one is refused and changes nothing, and a claim waits for a
// fenced step already in flight, so no step of the old holder can land
// after its successor's claim.
func TestJobFencingToken(t *testing.T) {
	ctx := context.Background()
	dsn := labtest.Postgres(t)
	setup(t, dsn)
	db, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	old, successor := reshard.FencingToken{Job: "j1", Token: 5}, reshard.FencingToken{Job: "j1", Token: 9}
	own := func(t reshard.FencingToken, v int32) error {
		return shard.Fenced(ctx, db, t, func(tx pgx.Tx) error { return shard.Own(ctx, tx, []int32{v}, true, 1) })
	}
	owns := func(v int64) bool {
		var ok bool
		if err := db.QueryRow(ctx, `select reshard_owns($1)`, v).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}

	if err := shard.Claim(ctx, db, old); err != nil {
		t.Fatal(err)
	}
	if err := own(old, 1); err != nil || !owns(1) {
		t.Fatalf("the holder's step: %v", err)
	}
	// Another job's token is its own: it does not fence j1.
	if err := shard.Claim(ctx, db, reshard.FencingToken{Job: "j2", Token: 100}); err != nil {
		t.Fatal(err)
	}
	if err := own(old, 2); err != nil {
		t.Fatalf("j1 refused after j2's claim: %v", err)
	}

	// The old holder is inside a fenced step when the successor claims:
	// the claim waits for it to end.
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `select reshard_job_fence($1, $2)`, old.Job, old.Token); err != nil {
		t.Fatal(err)
	}
	claimed := make(chan error, 1)
	go func() { claimed <- shard.Claim(ctx, db, successor) }()
	select {
	case err := <-claimed:
		t.Fatalf("the claim did not wait for the step in flight: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := shard.Own(ctx, tx, []int32{3}, true, 1); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-claimed; err != nil {
		t.Fatal(err)
	}

	// From now on the old holder's steps are refused and change nothing.
	if err := own(old, 4); !errors.Is(err, shard.ErrStaleToken) {
		t.Fatalf("the old holder's step after the claim: %v", err)
	}
	if owns(4) {
		t.Fatal("the refused step landed")
	}
	if err := shard.Claim(ctx, db, old); !errors.Is(err, shard.ErrStaleToken) {
		t.Fatalf("the old holder claimed again: %v", err)
	}
	if err := own(successor, 4); err != nil || !owns(4) {
		t.Fatalf("the successor's step: %v", err)
	}
	// A standby checks the token it replayed, without locks; on a primary
	// the promotion itself fails, but only after the token check.
	if _, err := shard.PromoteStandby(ctx, db, old); !errors.Is(err, shard.ErrStaleToken) {
		t.Fatalf("promotion with a stale token: %v", err)
	}
}
