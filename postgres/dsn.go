// Package postgres talks to the PostgreSQL servers of each shard.
package postgres

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

var kvPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// RedactDSN hides the password of a URL or keyword/value DSN, so a DSN can
// be logged, printed or put in an error.
func RedactDSN(dsn string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "(unparseable DSN)"
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.Redacted()
	}
	return kvPassword.ReplaceAllString(dsn, "${1}xxxxx")
}

// CheckDSN parses a DSN without connecting. Its error never contains the
// password.
func CheckDSN(dsn string) error {
	if strings.TrimSpace(dsn) == "" {
		return fmt.Errorf("empty DSN")
	}
	if _, err := pgconn.ParseConfig(dsn); err != nil {
		return fmt.Errorf("invalid DSN %s", RedactDSN(dsn))
	}
	return nil
}
