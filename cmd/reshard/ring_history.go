package main

// The ring subcommands on the versions etcd keeps: history, diff, rollback.

import (
	"context"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/ring"
	"github.com/spf13/cobra"
)

func newRingHistoryCmd(o *ringOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "history",
		Short: "List the ring versions kept in etcd",
		Long: `List the ring versions kept in etcd, oldest first; * marks the current one.

STORED says how each version is kept. "full" is the whole ring (a create, an
import, or a change too large for a delta). "delta of N" is only the vnode
ranges it changed from version N: a split's flip of a 1,000,000-vnode ring is
about a hundred bytes, and routers apply it to the ring they hold. Every 16th
delta in a row is also kept whole ("checkpoint"), so a router starting cold
reads one whole ring and at most 15 deltas. SIZE is the gzipped ring's bytes,
or the delta's.`,
		Example: `  reshard ring history
  reshard ring history --json | jq .current`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.needEtcd("history"); err != nil {
				return err
			}
			return o.withStore(cmd, func(ctx context.Context, s *etcd.RingStore) error {
				h, err := s.History(ctx)
				if err != nil {
					return err
				}
				cur, err := s.CurrentVersion(ctx)
				if err != nil {
					return err
				}
				if o.g.json {
					return printJSON(cmd.OutOrStdout(), map[string]any{"current": cur, "versions": h})
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "VERSION\tTIME\tPNODES\tSTORED\tSIZE\tCOMMENT")
				for _, v := range h {
					mark := ""
					if v.Version == cur {
						mark = " *"
					}
					fmt.Fprintf(tw, "%d%s\t%s\t%d\t%s\t%d\t%s\n", v.Version, mark, v.Time.Format(time.RFC3339), v.Pnodes, v.Stored(), v.Size, v.Comment)
				}
				return tw.Flush()
			})
		},
	}
}

func newRingDiffCmd(o *ringOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "diff V1 V2",
		Short: "Show what changed between two ring versions (or ring files)",
		Long: `Compare two rings: pnodes added or removed, vnodes moved between pnodes, and
vnode data changed, as ranges. V1 and V2 are etcd versions or ring files
(node-fash or reshard format).`,
		Example: `  reshard ring diff 3 4
  reshard ring diff old.json new.json`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var rings [2]*ring.Ring
			for i, a := range args {
				if v, err := strconv.ParseInt(a, 10, 64); err == nil {
					if rings[i], err = o.getVersion(cmd, v); err != nil {
						return err
					}
					continue
				}
				r, _, err := ring.Load(a)
				if err != nil {
					return err
				}
				rings[i] = r
			}
			d, err := ring.Compare(rings[0], rings[1])
			if err != nil {
				return err
			}
			if o.g.json {
				return printJSON(cmd.OutOrStdout(), d)
			}
			w := cmd.OutOrStdout()
			if d.Empty() {
				fmt.Fprintln(w, "no differences")
			}
			for _, p := range d.AddedPnodes {
				fmt.Fprintf(w, "+ pnode %s\n", p)
			}
			for _, p := range d.RemovedPnodes {
				fmt.Fprintf(w, "- pnode %s\n", p)
			}
			for _, m := range d.Moves {
				fmt.Fprintf(w, "move %d vnodes %s -> %s: %s\n", len(m.Vnodes), m.From, m.To, m.List)
			}
			for _, c := range d.Data {
				fmt.Fprintf(w, "data %s -> %s on %d vnodes: %s\n", c.From, c.To, len(c.Vnodes), c.List)
			}
			return nil
		},
	}
}

func newRingRollbackCmd(o *ringOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "rollback V",
		Short: "Make an earlier ring version current again (as a new version)",
		Long: `Store the content of version V as a new version, so routers switch back to
it and history still shows what happened. Use 'reshard ring diff' first to
see what the rollback will change.`,
		Example: `  reshard ring diff 5 4 && reshard ring rollback 4 --expect-version 5`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.needEtcd("rollback"); err != nil {
				return err
			}
			to, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || to <= 0 {
				return fmt.Errorf("bad version %q: want a positive number from 'reshard ring history'", args[0])
			}
			return o.withStore(cmd, func(ctx context.Context, s *etcd.RingStore) error {
				rv, err := s.Rollback(ctx, to, o.expect)
				if err != nil {
					return err
				}
				return o.written(cmd, rv.Version, fmt.Sprintf("rolled back to the ring of version %d", to))
			})
		},
	}
}
