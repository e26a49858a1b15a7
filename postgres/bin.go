package postgres

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/jackc/pgx/v5/pgconn"
)

// BinDir finds PostgreSQL's server and client programs: Debian keeps the
// server's off PATH, under /usr/lib/postgresql/VERSION/bin.
func BinDir() (string, error) {
	if d := os.Getenv("RESHARD_PG_BIN"); d != "" {
		return d, nil
	}
	for _, v := range []string{"17", "16", "15"} {
		d := "/usr/lib/postgresql/" + v + "/bin"
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("PostgreSQL server binaries not found (install Debian's 'postgresql' package or set RESHARD_PG_BIN)")
}

// Dump writes a custom-format pg_dump of the database at dsn to file. The
// password goes to pg_dump in PGPASSWORD, not in its arguments, so it does
// not show in the process list.
func Dump(ctx context.Context, dsn, file string) error {
	bin, err := BinDir()
	if err != nil {
		return err
	}
	bare, password, err := splitPassword(dsn)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "pg_dump"), "--format=custom", "--file="+file, "--dbname="+bare)
	cmd.Env = os.Environ()
	if password != "" {
		cmd.Env = append(cmd.Env, "PGPASSWORD="+password)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_dump of %s: %v: %s", RedactDSN(dsn), err, RedactDSN(string(out)))
	}
	return nil
}

// splitPassword takes the password out of a DSN.
func splitPassword(dsn string) (string, string, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "", "", dsnError(dsn, err)
	}
	if cfg.Password == "" {
		return dsn, "", nil
	}
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		if u.User != nil {
			u.User = url.User(u.User.Username())
		}
		q := u.Query()
		q.Del("password")
		u.RawQuery = q.Encode()
		return u.String(), cfg.Password, nil
	}
	return kvPassword.ReplaceAllString(dsn, ""), cfg.Password, nil
}
