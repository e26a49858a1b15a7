// Package postgres talks to the PostgreSQL servers of each shard.
package postgres

import (
	"context"
	"errors"

	"fmt"
	"github.com/jackc/pgx/v5"
	"net/url"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

var urlPassword = regexp.MustCompile(`^([a-z]+://[^:/@]*):[^@]*@`)

var kvPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// RedactDSN hides the password of a URL or keyword/value DSN, so a DSN can
// be logged, printed or put in an error.
func RedactDSN(dsn string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return urlPassword.ReplaceAllString(dsn, "${1}:xxxxx@")
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
		return dsnError(dsn, err)
	}
	return nil
}

// Connect opens one connection; its errors never carry the password.
func Connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, dsnError(dsn, err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %s", RedactDSN(dsn), scrub(err.Error(), cfg.Password))
	}
	return conn, nil
}

// scrub removes a secret from text that a driver produced.
func scrub(s, secret string) string {
	if secret == "" {
		return s
	}
	return strings.ReplaceAll(s, secret, "xxxxx")
}

// dsnError says why a DSN does not parse. The driver's innermost error names
// the bad part without repeating the DSN.
func dsnError(dsn string, err error) error {
	cause := err
	for u := errors.Unwrap(cause); u != nil; u = errors.Unwrap(cause) {
		cause = u
	}
	return fmt.Errorf("invalid DSN %s: %s", RedactDSN(dsn), cause.Error())
}
