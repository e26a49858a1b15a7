package shard_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/reshard/reshard/lab/labtest"
	"github.com/reshard/reshard/shard"
)

// TestTableTools loads a bucket with COPY, reads its etags back, and takes
// it back to what Moray alone leaves.
func TestTableTools(t *testing.T) {
	ctx := context.Background()
	conn := setup(t, labtest.Postgres(t))
	if err := shard.Own(ctx, conn, []int32{1, 2}, true, 1); err != nil {
		t.Fatal(err)
	}
	opts := shard.BucketOptions{HashDir: true}
	var cols []string
	var rows [][]any
	etags := map[string]string{}
	for i := 0; i < 20; i++ {
		key := fmt.Sprintf("/d/o%02d", i)
		r, err := shard.NewRow(opts, key, []byte(fmt.Sprintf(`{"i":%d}`, i)), int64(1+i%2))
		if err != nil {
			t.Fatal(err)
		}
		cols, rows = r.Columns(), append(rows, r.Values())
		etags[key] = r.Etag
	}
	if n, err := shard.CopyRows(ctx, conn, "manta", cols, rows); err != nil || n != 20 {
		t.Fatalf("CopyRows = %d, %v", n, err)
	}
	// The fence checks COPY too.
	r, _ := shard.NewRow(opts, "/d/elsewhere", []byte(`{}`), 3)
	if _, err := shard.CopyRows(ctx, conn, "manta", cols, [][]any{r.Values()}); !shard.IsFenced(err) {
		t.Errorf("CopyRows into an unowned vnode: %v", err)
	}
	if err := shard.Analyze(ctx, conn, "manta"); err != nil {
		t.Fatal(err)
	}
	found, err := shard.Etags(ctx, conn, "manta", []string{"/d/o00", "/d/o07", "/d/none"})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 2 || found["/d/o00"] != etags["/d/o00"] || found["/d/o07"] != etags["/d/o07"] {
		t.Errorf("Etags = %v", found)
	}
	for _, bad := range []string{"Manta", "manta; drop table manta"} {
		if _, err := shard.Etags(ctx, conn, bad, nil); err == nil {
			t.Errorf("Etags took bucket %q", bad)
		}
	}
	if fenced, err := shard.HasFence(ctx, conn, "manta"); err != nil || !fenced {
		t.Fatalf("HasFence = %v, %v", fenced, err)
	}
	if fenced, err := shard.HasFence(ctx, conn, "no_such_bucket"); err != nil || fenced {
		t.Errorf("HasFence of no table = %v, %v", fenced, err)
	}
	// _id counts from 1: 5 and 10, 15, 20 are cleared.
	noVnode, err := shard.UndoAdoption(ctx, conn, "manta", 5)
	if err != nil || noVnode != 4 {
		t.Fatalf("UndoAdoption = %d, %v", noVnode, err)
	}
	if fenced, err := shard.HasFence(ctx, conn, "manta"); err != nil || fenced {
		t.Errorf("HasFence after UndoAdoption = %v, %v", fenced, err)
	}
}
