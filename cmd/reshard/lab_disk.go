package main

import (
	"fmt"

	"github.com/reshard/reshard/lab"
	"github.com/spf13/cobra"
)

func newLabDiskCmd(g *globals) *cobra.Command {
	var dir, peer, size string
	cmd := &cobra.Command{
		Use:   "disk --dir DIR --peer PEER --size SIZE",
		Short: "Give a lab peer a small disk, to see what happens when it fills up",
		Long: `Mounts a tmpfs of SIZE over a peer's data directory (root only): the peer
is stopped, its data copied onto the tmpfs (owner and modes kept) at the
same path, and started again. Once the peer writes more than SIZE holds,
PostgreSQL fails with "No space left on device" (SQLSTATE 53100), as on
a real host whose disk is full.

Give it a size a little above the peer's current usage ('du -sh' of its
data directory, which 'lab status' lists) to fill it with a few writes,
or with a reshard's copy into it. 'lab down' unmounts the disk. A peer
has at most one; there is no way to grow it short of 'lab down'.`,
		Example: `  reshard lab add-shard --dir /tmp/lab --name 3.moray --peers 1
  reshard lab disk --dir /tmp/lab --peer 3.moray-1 --size 64M
  reshard start --from 1.moray --to 3.moray --split-half   # fails: disk full`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := lab.LimitDisk(cmd.Context(), dir, peer, size)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), d)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: a disk of %s at %s\n", d.Peer, d.Size, d.Path)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the lab's directory (required)")
	cmd.Flags().StringVar(&peer, "peer", "", "the peer, as 'lab status' names it, e.g. 3.moray-1 (required)")
	cmd.Flags().StringVar(&size, "size", "", "the disk's size in bytes, or with k, M or G, e.g. 64M (required)")
	for _, f := range []string{"dir", "peer", "size"} {
		cmd.MarkFlagRequired(f)
	}
	return cmd
}
