package postgres_test

import (
	"context"
	"testing"

	"github.com/reshard/reshard/lab/labtest"
	"github.com/reshard/reshard/postgres"
)

// TestServerHelpers runs the WAL and server helpers on a lone primary.
func TestServerHelpers(t *testing.T) {
	ctx := context.Background()
	conn, err := postgres.Connect(ctx, labtest.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	if standby, err := postgres.InRecovery(ctx, conn); err != nil || standby {
		t.Fatalf("InRecovery = %v, %v", standby, err)
	}
	before, err := postgres.CurrentWAL(ctx, conn)
	if err != nil || before == 0 {
		t.Fatalf("CurrentWAL = %v, %v", before, err)
	}
	if _, err := conn.Exec(ctx, `create table t as select generate_series(1, 1000) i`); err != nil {
		t.Fatal(err)
	}
	after, err := postgres.CurrentWAL(ctx, conn)
	if err != nil || after <= before {
		t.Fatalf("CurrentWAL after a write = %v (before %v), %v", after, before, err)
	}
	// A primary never replayed: 0/0, so it is all of the WAL behind.
	replayed, err := postgres.ReplayedWAL(ctx, conn)
	if err != nil || replayed != 0 {
		t.Fatalf("ReplayedWAL = %v, %v", replayed, err)
	}
	if n, err := postgres.WALBytesAfter(ctx, conn, before); err != nil || n < int64(after-before) {
		t.Errorf("WALBytesAfter(%v) = %d, %v; want at least %d", before, n, err, after-before)
	}
	if n, err := postgres.WALBytesAfter(ctx, conn, after+1<<30); err != nil || n != 0 {
		t.Errorf("WALBytesAfter(a position ahead) = %d, %v; want 0", n, err)
	}
	if streaming, err := postgres.IsStreaming(ctx, conn, "nobody", false); err != nil || streaming {
		t.Errorf("IsStreaming = %v, %v", streaming, err)
	}
	if n, err := postgres.DecodedTransactions(ctx, conn); err != nil || n != 0 {
		t.Errorf("DecodedTransactions = %d, %v", n, err)
	}
	if err := postgres.ReloadConf(ctx, conn); err != nil {
		t.Error(err)
	}
	if err := postgres.CreateDatabase(ctx, conn, "made_here"); err != nil {
		t.Fatal(err)
	}
	if err := postgres.CreateDatabase(ctx, conn, "x; drop table t"); err == nil {
		t.Error("CreateDatabase took a name that is not an identifier")
	}
}
