package shard_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/reshard/reshard/shard"
)

func TestDBError(t *testing.T) {
	if _, ok := shard.AsDBError(errors.New("not PostgreSQL's")); ok {
		t.Fatal("AsDBError found a DBError in a plain error")
	}
	pe := &pgconn.PgError{Severity: "ERROR", Code: "23505", Message: "duplicate key value violates unique constraint \"b_u_key\"",
		Detail: "Key (u)=(x) already exists.", ConstraintName: "b_u_key"}
	de, ok := shard.AsDBError(fmt.Errorf("put: %w", pe))
	if !ok {
		t.Fatal("AsDBError missed a wrapped PgError")
	}
	if de.Error() != pe.Error() {
		t.Errorf("Error() = %q, want %q", de.Error(), pe.Error())
	}
	if !de.UniqueViolation() || de.Constraint != "b_u_key" || !de.RefusedValue() || de.RefusedQuery() {
		t.Errorf("unique violation read as %+v", de)
	}
	if c, v, ok := de.DuplicateKey(); !ok || c != "u" || v != "x" {
		t.Errorf("DuplicateKey() = %q, %q, %v", c, v, ok)
	}
	if _, _, ok := (&shard.DBError{Detail: "something else"}).DuplicateKey(); ok {
		t.Error("DuplicateKey read a detail without a key")
	}
	for _, c := range []struct {
		code                                     string
		undefined, nul, invalidSQL, query, value bool
	}{
		{"42P01", true, false, false, true, false},
		{"22021", false, true, false, true, true},
		{"42601", false, false, true, true, false},
		{"42701", false, false, true, true, false},
		{"22003", false, false, false, true, true},
		{"54000", false, false, false, false, true},
		{"42804", false, false, false, true, true},
		{"XX000", false, false, false, false, false},
	} {
		de := &shard.DBError{Code: c.code}
		got := []bool{de.UndefinedTable(), de.NulInText(), de.InvalidSQL(), de.RefusedQuery(), de.RefusedValue()}
		want := []bool{c.undefined, c.nul, c.invalidSQL, c.query, c.value}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%s: UndefinedTable, NulInText, InvalidSQL, RefusedQuery, RefusedValue = %v, want %v", c.code, got, want)
				break
			}
		}
	}
	frozen := fmt.Errorf("write: %w", &pgconn.PgError{Code: shard.CodeFrozen})
	notOwned := fmt.Errorf("write: %w", &pgconn.PgError{Code: shard.CodeNotOwned})
	if !shard.IsFrozen(frozen) || !shard.IsFenced(frozen) || shard.IsFrozen(notOwned) || !shard.IsFenced(notOwned) {
		t.Error("IsFrozen/IsFenced")
	}
}
