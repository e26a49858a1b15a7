package shard

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/reshard/reshard"
)

// A job's statements that a stale orchestrator could repeat harmfully
// (freeze, markers, sequences, ownership, replication objects, cleanup
// deletes) run through Fenced: one transaction that first checks the
// orchestrator's fencing token against the highest the shard has seen for
// the job, then runs the step. An orchestrator that takes a job over
// claims every shard of the job first (Claim), so from then on the old
// one's statements are refused, even one paused between its own check and
// its act: the claim waits for that transaction to end.

// ErrStaleToken means the shard refused a job's statement because a newer
// orchestrator has claimed the job: the caller must stop acting for it.
var ErrStaleToken = errors.New("a newer orchestrator holds the job")

// Claim records t as the job's token on the shard, refusing with
// ErrStaleToken if a higher one is there.
func Claim(ctx context.Context, db Beginner, t reshard.FencingToken) error {
	err := inTx(ctx, db, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `select reshard_job_claim($1, $2)`, t.Job, t.Token)
		return err
	})
	if isUndefinedFunction(err) {
		// A shard set up by an older reshard: give it the functions.
		if err := inTx(ctx, db, func(tx pgx.Tx) error { return Init(ctx, tx) }); err != nil {
			return err
		}
		return Claim(ctx, db, t)
	}
	return stale(err)
}

// Fenced runs fn in a transaction that the shard lets through only while t
// is the job's newest token.
func Fenced(ctx context.Context, db Beginner, t reshard.FencingToken, fn func(tx pgx.Tx) error) error {
	return stale(inTx(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `select reshard_job_fence($1, $2)`, t.Job, t.Token); err != nil {
			return err
		}
		return fn(tx)
	}))
}

// PromoteStandby promotes a standby in the same statement that checks t
// against the tokens it has replayed from its primary: a standby takes no
// locks, so this is the fence a promotion gets. It then waits up to a
// minute for the promotion to finish, and reports whether it did. It polls
// every few milliseconds rather than let pg_promote wait, which looks only
// every 100 ms: the physical strategy promotes inside its write block.
func PromoteStandby(ctx context.Context, q Querier, t reshard.FencingToken) (bool, error) {
	var signalled bool
	err := q.QueryRow(ctx, `select pg_promote(false) from (select reshard_job_fence($1, $2)) as fence`, t.Job, t.Token).Scan(&signalled)
	if err != nil || !signalled {
		return false, stale(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		var standby bool
		if err := q.QueryRow(ctx, `select pg_is_in_recovery()`).Scan(&standby); err != nil {
			return false, err
		}
		if !standby {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func stale(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == CodeStaleToken {
		return fmt.Errorf("%w: %s", ErrStaleToken, pe.Message)
	}
	return err
}

func isUndefinedFunction(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "42883"
}
