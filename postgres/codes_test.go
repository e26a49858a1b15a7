package postgres

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

func TestCodes(t *testing.T) {
	wrapped := func(code string) error {
		return fmt.Errorf("put: %w", &pgconn.PgError{Code: code, Message: "m"})
	}
	if got := Code(wrapped(UniqueViolation)); got != UniqueViolation {
		t.Errorf("Code = %q", got)
	}
	if got := Code(errors.New("no server error")); got != "" {
		t.Errorf("Code of a plain error = %q", got)
	}
	if !IsServerError(wrapped("XX000")) || IsServerError(context.Canceled) {
		t.Error("IsServerError")
	}
	for _, c := range []struct {
		name string
		is   func(error) bool
		code string
	}{
		{"IsUniqueViolation", IsUniqueViolation, UniqueViolation},
		{"IsUndefinedTable", IsUndefinedTable, UndefinedTable},
		{"IsLockNotAvailable", IsLockNotAvailable, LockNotAvailable},
		{"IsShutdown", IsShutdown, "57P01"},
		{"IsShutdown", IsShutdown, "57P03"},
	} {
		if !c.is(wrapped(c.code)) {
			t.Errorf("%s(%s) = false", c.name, c.code)
		}
		if c.is(wrapped("XX000")) || c.is(nil) {
			t.Errorf("%s of another code or nil = true", c.name)
		}
	}
	// query_canceled is class 57 but no shutdown.
	if IsShutdown(wrapped("57014")) {
		t.Error("IsShutdown(57014)")
	}
	if !InClass(CharacterNotInRepertoire, ClassDataException) || InClass(DatatypeMismatch, ClassDataException) ||
		!InClass(UniqueViolation, ClassIntegrityConstraintViolation) || !InClass(SyntaxError, ClassSyntaxErrorOrAccessRuleViolation) {
		t.Error("InClass")
	}
	if NotSent(wrapped(UniqueViolation)) || !NotSent(&pgconn.ConnectError{}) {
		t.Error("NotSent")
	}
	// A statement that waits on a pool closed under it (a router
	// reconnecting to a new primary) was never sent. No server is needed:
	// a pool connects only when asked.
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none")
	if err != nil {
		t.Fatal(err)
	}
	pool.Close()
	_, err = pool.Exec(context.Background(), "select 1")
	if err == nil || !NotSent(fmt.Errorf("put: %w", err)) {
		t.Errorf("NotSent(%v) = false", err)
	}
}
