package main

import (
	"fmt"

	"github.com/reshard/reshard/lab"
	"github.com/spf13/cobra"
)

func newLabDiskCmd(g *globals) *cobra.Command {
	var dir, peer, size string
	cmd := &cobra.Command{
		Use:   "disk --dir DIR --peer PEER|SPARE-HOST --size SIZE",
		Short: "Give a lab peer (or spare host) a small disk, to see what happens when it fills up",
		Long: `Mounts a tmpfs of SIZE over a peer's data directory (root only): the peer
is stopped, its data copied onto the tmpfs (owner and modes kept) at the
same path, and started again. Given a spare host that runs no peer yet,
the tmpfs goes where its agent makes its peers' data: the physical
strategy's new peer there then has that little room. Once the peer writes more than SIZE holds,
PostgreSQL fails with "No space left on device" (SQLSTATE 53100), as on
a real host whose disk is full.

--size +SIZE gives that much room beyond what the directory uses (measured
with the peer stopped): a few MiB fill with a few writes, or with a
reshard's copy into it. 'lab down' unmounts the disk. A peer
has at most one; there is no way to grow it short of 'lab down'.`,
		Example: `  reshard lab add-shard --dir /tmp/lab --name 3.moray --peers 1
  reshard lab disk --dir /tmp/lab --peer 3.moray-1 --size +8M
  reshard start --from 1.moray --to 3.moray --split-half   # fails: disk full
  reshard lab disk --dir /tmp/lab --peer spare-1 --size 64M
  reshard start --from 1.moray --to 3.moray --split-half --strategy physical --dc-mode single --servers 1 --lab /tmp/lab`,
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
	cmd.Flags().StringVar(&peer, "peer", "", "the peer, as 'lab status' names it, e.g. 3.moray-1, or a spare host, e.g. spare-1 (required)")
	cmd.Flags().StringVar(&size, "size", "", "the disk's size in bytes, or with k, M or G, e.g. 64M (required)")
	for _, f := range []string{"dir", "peer", "size"} {
		cmd.MarkFlagRequired(f)
	}
	return cmd
}
