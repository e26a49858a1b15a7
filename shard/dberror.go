package shard

import (
	"errors"
	"regexp"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/reshard/reshard/postgres"
)

// DBError is PostgreSQL's refusal of a statement a shard ran, with what a
// front end needs to name it to its clients. Its methods say what the
// refusal means for the request; front ends decide from them, and so need
// neither pgx's error type nor SQLSTATEs.
type DBError struct {
	Severity   string // ERROR, FATAL, ...
	Code       string // SQLSTATE, named in package postgres
	Message    string // PostgreSQL's primary message
	Detail     string
	Constraint string // the constraint violated, if any
}

// Error reads as pgconn.PgError's.
func (e *DBError) Error() string {
	return e.Severity + ": " + e.Message + " (SQLSTATE " + e.Code + ")"
}

// AsDBError finds PostgreSQL's error in err's chain, if PostgreSQL answered
// with one.
func AsDBError(err error) (*DBError, bool) {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return nil, false
	}
	return &DBError{Severity: pe.Severity, Code: pe.Code, Message: pe.Message, Detail: pe.Detail, Constraint: pe.ConstraintName}, true
}

// UniqueViolation: the value of a unique index is taken.
func (e *DBError) UniqueViolation() bool { return e.Code == postgres.UniqueViolation }

// duplicateKey reads the column and value from PostgreSQL's detail of a
// unique violation: Key (col)=(value) already exists.
var duplicateKey = regexp.MustCompile(`^Key \((.*)\)=\((.*)\) already exists\.$`)

// DuplicateKey is the column and value a unique violation names in its
// detail; ok is false when the detail does not have them.
func (e *DBError) DuplicateKey() (column, value string, ok bool) {
	m := duplicateKey.FindStringSubmatch(e.Detail)
	if m == nil {
		return "", "", false
	}
	return m[1], m[2], true
}

// UndefinedTable: the statement named a table that does not exist (a
// bucket's, when the bucket is gone).
func (e *DBError) UndefinedTable() bool { return e.Code == postgres.UndefinedTable }

// NulInText: a text value held a NUL character, which PostgreSQL's text
// cannot.
func (e *DBError) NulInText() bool { return e.Code == postgres.CharacterNotInRepertoire }

// InvalidSQL: a syntax error or a duplicate column, the two errors Moray's
// pgError calls "Invalid SQL".
func (e *DBError) InvalidSQL() bool {
	return e.Code == postgres.SyntaxError || e.Code == postgres.DuplicateColumn
}

// RefusedQuery: PostgreSQL refused the statement's text or one of its
// values (SQLSTATE classes 22, data exception, and 42, syntax error or
// access rule violation), as a filter it cannot run.
func (e *DBError) RefusedQuery() bool {
	return postgres.InClass(e.Code, postgres.ClassDataException) ||
		postgres.InClass(e.Code, postgres.ClassSyntaxErrorOrAccessRuleViolation)
}

// RefusedValue reports whether PostgreSQL refused a value the client sent
// (a NUL, a number out of a column's range, text a column type cannot
// read, a value too long to index), rather than failing for reasons of
// its own: SQLSTATE classes 22 (data exception) and 23 (integrity
// constraint violation), and 54000 (program limit exceeded: an index row
// over its size limit).
func (e *DBError) RefusedValue() bool {
	return postgres.InClass(e.Code, postgres.ClassDataException) ||
		postgres.InClass(e.Code, postgres.ClassIntegrityConstraintViolation) ||
		e.Code == postgres.ProgramLimitExceeded ||
		// datatype_mismatch: an updateBucket changed a field's type, which,
		// as in Moray, leaves its column's type as it was.
		e.Code == postgres.DatatypeMismatch
}

// IsFrozen reports whether err is the fence refusing a vnode that is
// frozen for a move (IsFenced is true of it too).
func IsFrozen(err error) bool { return postgres.Code(err) == CodeFrozen }
