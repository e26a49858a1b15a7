package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/shard"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func newVnodeStatsCmd(g *globals) *cobra.Command {
	var pnode, bucket string
	var top int
	cmd := &cobra.Command{
		Use:   "vnode-stats --pnode P [--bucket B] [--top N]",
		Short: "Rows and bytes per vnode on a pnode, most rows first",
		Long: `The RFD's first step, "select _vnode, count(*) from manta group by _vnode",
over every bucket of the pnode's primary (or one with --bucket): one scan
per bucket, not one per vnode.`,
		Example: `  reshard vnode-stats --pnode 1.moray --top 20
  reshard vnode-stats --pnode 1.moray --bucket manta --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if bucket != "" {
				if err := shard.ValidateBucket(bucket); err != nil {
					return err
				}
			}
			if top < 0 {
				return fmt.Errorf("--top must be 0 (all) or more, got %d", top)
			}
			return withEtcd(cmd, g, 30*time.Minute, func(ctx context.Context, cli *clientv3.Client) error {
				primary, err := etcd.NewRegistry(cli).Primary(ctx, pnode)
				if err != nil {
					return err
				}
				conn, err := postgres.Connect(ctx, primary.DSN)
				if err != nil {
					return err
				}
				defer conn.Close(ctx)
				var buckets []string
				if bucket != "" {
					buckets = []string{bucket}
				}
				stats, err := shard.VnodeStats(ctx, conn, buckets...)
				if err != nil {
					return err
				}
				var rest shard.VnodeStat // what --top leaves out, summed
				if top > 0 && len(stats) > top {
					for _, s := range stats[top:] {
						rest.Vnode++
						rest.Rows += s.Rows
						rest.Bytes += s.Bytes
					}
					stats = stats[:top]
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), stats)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', tabwriter.AlignRight)
				fmt.Fprintln(tw, "VNODE\tROWS\tBYTES\t")
				for _, s := range stats {
					fmt.Fprintf(tw, "%d\t%d\t%d\t\n", s.Vnode, s.Rows, s.Bytes)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				if rest.Vnode > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "... and %d more vnodes holding %d rows (%d bytes); --top 0 lists them all\n", rest.Vnode, rest.Rows, rest.Bytes)
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&pnode, "pnode", "", "registered pnode to read (required)")
	cmd.Flags().StringVar(&bucket, "bucket", "", "only this bucket")
	cmd.Flags().IntVar(&top, "top", 50, "show only the N vnodes with the most rows (0: all; a shard of a 1,000,000-vnode ring has hundreds of thousands)")
	cmd.MarkFlagRequired("pnode")
	return cmd
}
