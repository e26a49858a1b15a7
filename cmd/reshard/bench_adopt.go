package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/reshard/reshard/lab"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/shard"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// adoptRow is what bench adopt measured.
type adoptRow struct {
	Date             string  `json:"date"`
	CPUs             int     `json:"cpus"`
	Vnodes           int     `json:"vnodes"`
	Rows             int     `json:"rows"`
	NoVnodeRows      int64   `json:"no_vnode_rows"`
	InitSeconds      float64 `json:"init_s"`
	InitFixed        int64   `json:"init_fixed_rows"`
	ReplicaIdentMS   float64 `json:"replica_identity_ms"`
	WriteBlockMS     float64 `json:"write_block_ms"`
	CopyRowsPerSec   float64 `json:"copy_rows_per_s"`
	TotalSeconds     float64 `json:"split_total_s"`
	ClientErrors     int64   `json:"client_errors"`
	Missing          int     `json:"missing"`
	Stale            int     `json:"stale"`
	Misplaced        int     `json:"misplaced"`
	LoadWritesPerSec float64 `json:"load_writes_per_s"`
}

func newBenchAdoptCmd(g *globals) *cobra.Command {
	var rows, vnodes int
	var rate float64
	cmd := &cobra.Command{
		Use:   "adopt [--rows N] [--vnodes N]",
		Short: "Adopt a Moray-written shard in place, then split it under load, and time each step",
		Long: `Makes a lab shard look as a live Manta shard does before reshard: a filled
manta bucket in Moray's layout (written as electric-moray and Moray write
it), without reshard's fence or ownership, a tenth of its rows without a
vnode (as batch writes through electric-moray leave them), and Moray's
default replica identity. Then it measures:

  init       pnode init --fix: the fence, the ownership, reading every
             row's key and vnode, and setting the missing vnodes
  identity   REPLICA IDENTITY FULL on the table, which a logical job sets
             on the buckets it moves (a catalog change, no rewrite)
  split      the demo's split of the adopted shard under load: the write
             block, the copy rate, every acknowledged write verified

The WAL that FULL adds to updates and deletes is measured side by side
by 'go test -run ^$ -bench ReplicaIdentityWAL ./shard/'.`,
		Example: `  reshard bench adopt --rows 1000000 --vnodes 1000000`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if rows < 1000 || rows > 100_000_000 {
				return fmt.Errorf("--rows must be between 1000 and 100000000, got %d", rows)
			}
			if vnodes < 2 || vnodes > 10_000_000 {
				return fmt.Errorf("--vnodes must be between 2 and 10000000, got %d", vnodes)
			}
			return withSignals(cmd, func(ctx context.Context) error {
				row, err := runBenchAdopt(ctx, g, rows, vnodes, rate, cmd.ErrOrStderr())
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), row)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "VNODES\tROWS\tNO VNODE\tINIT\tFIXED\tIDENTITY\tWRITE BLOCK\tCOPY\tSPLIT\tERRORS\tVERIFY")
				fmt.Fprintf(tw, "%d\t%d\t%d\t%.1f s\t%d\t%.1f ms\t%.1f ms\t%.0f rows/s\t%.1f s\t%d\t%d/%d/%d\n",
					row.Vnodes, row.Rows, row.NoVnodeRows, row.InitSeconds, row.InitFixed, row.ReplicaIdentMS, row.WriteBlockMS,
					row.CopyRowsPerSec, row.TotalSeconds, row.ClientErrors, row.Missing, row.Stale, row.Misplaced)
				return tw.Flush()
			})
		},
	}
	cmd.Flags().IntVar(&rows, "rows", 1_000_000, "objects in the adopted shard's manta bucket")
	cmd.Flags().IntVar(&vnodes, "vnodes", 1_000_000, "the ring's vnodes")
	cmd.Flags().Float64Var(&rate, "rate", 1000, "the load's operations/s through the routers during the split")
	return cmd
}

func runBenchAdopt(ctx context.Context, g *globals, rows, vnodes int, rate float64, progress io.Writer) (*adoptRow, error) {
	row := &adoptRow{Date: time.Now().UTC().Format("2006-01-02"), CPUs: runtime.NumCPU(), Vnodes: vnodes, Rows: rows}
	sc := scenario{Strategy: "logical", Vnodes: vnodes, Rows: rows, Peers: 1, Rate: rate, Progress: progress}
	sc.BeforeLoad = func(ctx context.Context, st *lab.State, cli *clientv3.Client) error {
		sh, ok := st.Shard("1.moray")
		if !ok {
			return fmt.Errorf("no 1.moray in the lab")
		}
		conn, err := postgres.Connect(ctx, sh.Peers[0].DSN())
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		// Back to what Moray alone leaves: no fence, no ownership, Moray's
		// replica identity, and a tenth of the rows without a vnode.
		if row.NoVnodeRows, err = shard.UndoAdoption(ctx, conn, "manta", 10); err != nil {
			return err
		}
		fmt.Fprintf(progress, "\n== pnode init 1.moray --fix: %d rows, %d without a vnode\n", rows, row.NoVnodeRows)
		rep, err := adoptPnode(ctx, cli, "1.moray", adoptOptions{Fix: true}, progress)
		if err != nil {
			return err
		}
		rep.print(progress)
		row.InitSeconds = rep.Seconds
		for _, b := range rep.Buckets {
			row.InitFixed += b.Fixed
		}
		start := time.Now()
		if err := shard.SetReplicaIdentityFull(ctx, conn, "manta"); err != nil {
			return err
		}
		row.ReplicaIdentMS = float64(time.Since(start).Microseconds()) / 1000
		return nil
	}
	r, err := runScenario(ctx, g, sc)
	if err != nil {
		return nil, err
	}
	var moved int64
	for _, m := range r.Job.Moves {
		moved += m.Rows
	}
	for _, p := range r.Job.Phases {
		row.TotalSeconds += p.Seconds
		if p.Name == "copy" && p.Seconds > 0 {
			row.CopyRowsPerSec = float64(moved) / p.Seconds
		}
	}
	row.WriteBlockMS = r.Job.WriteBlockMS
	row.ClientErrors = r.Load.ClientErrors
	if r.Load.Seconds > 0 {
		row.LoadWritesPerSec = float64(r.Load.AckedWrites) / r.Load.Seconds
	}
	row.Missing, row.Stale, row.Misplaced = r.Report.Missing, r.Report.Stale, r.Report.Misplaced
	return row, nil
}
