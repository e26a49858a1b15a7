// Package labtest gives tests a real PostgreSQL server.
package labtest

import (
	"context"
	"testing"

	"github.com/reshard/reshard/lab"
)

// Postgres starts a standalone server for the test and returns its DSN.
func Postgres(t testing.TB) string {
	t.Helper()
	s, err := lab.StartServer(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s.DSN()
}
