package postgres

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"
)

// The SQLSTATEs reshard tells apart, named as PostgreSQL's "Errors Codes"
// appendix names them. Every comparison of a PostgreSQL error's code goes
// through these names, so a search for one finds every place that acts on
// it. (The fence's own codes, RS001 and RS002, are shard's: shard.CodeNotOwned
// and shard.CodeFrozen.)
const (
	CharacterNotInRepertoire = "22021" // a NUL in text
	UniqueViolation          = "23505"
	InsufficientPrivilege    = "42501"
	SyntaxError              = "42601"
	DuplicateColumn          = "42701"
	DuplicateTable           = "42P07"
	DuplicateObject          = "42710"
	UndefinedTable           = "42P01"
	DatatypeMismatch         = "42804"
	DiskFull                 = "53100" // ENOSPC, or a short write extending a file
	ProgramLimitExceeded     = "54000" // e.g. an index row over its size limit
	LockNotAvailable         = "55P03" // lock_timeout ran out
)

// SQLSTATE classes: the first two characters of a code.
const (
	ClassDataException                    = "22"
	ClassIntegrityConstraintViolation     = "23"
	ClassSyntaxErrorOrAccessRuleViolation = "42"
)

// shutdownCodes is the prefix of admin_shutdown (57P01), crash_shutdown
// (57P02), cannot_connect_now (57P03), database_dropped (57P04) and
// idle_session_timeout (57P05): the server is going away or not taking
// connections yet. The rest of class 57 (query_canceled, ...) is not.
const shutdownCodes = "57P"

// Code is the SQLSTATE of the PostgreSQL error in err's chain, or "" when
// PostgreSQL did not answer with an error (a connection failure, a
// timeout on the client's side, an error of reshard's own).
func Code(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// IsServerError reports whether err holds an error PostgreSQL answered
// with, whatever its code.
func IsServerError(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe)
}

// InClass reports whether code is in the SQLSTATE class class.
func InClass(code, class string) bool { return strings.HasPrefix(code, class) }

// IsUniqueViolation: an insert or update met a unique index's value.
func IsUniqueViolation(err error) bool { return Code(err) == UniqueViolation }

// IsUndefinedTable: a statement named a table that does not exist.
func IsUndefinedTable(err error) bool { return Code(err) == UndefinedTable }

// IsDiskFull: the server could not write a file for want of space.
func IsDiskFull(err error) bool { return Code(err) == DiskFull }

// IsLockNotAvailable: a statement gave up waiting for a lock (lock_timeout).
func IsLockNotAvailable(err error) bool { return Code(err) == LockNotAvailable }

// IsShutdown reports whether the server is shutting down, restarting, or
// refusing connections for now.
func IsShutdown(err error) bool { return strings.HasPrefix(Code(err), shutdownCodes) }

// NotSent reports whether a statement surely never reached the server:
// no connection was made, or pgx failed before sending anything. Such a
// statement may be sent again, even a write. A pool closed while a
// statement waited to acquire from it (a router dropping the pool of a
// pnode whose primary changed) refuses before any connection is used.
func NotSent(err error) bool {
	var ce *pgconn.ConnectError
	return pgconn.SafeToRetry(err) || errors.As(err, &ce) || errors.Is(err, puddle.ErrClosedPool)
}
