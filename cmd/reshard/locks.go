package main

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/reshard/reshard/orchestrator"
	"github.com/spf13/cobra"
)

func newLocksCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "locks",
		Short: "Show every lock: the dump lock, running dumps, pnodes held by jobs, frozen and read-only vnodes",
		Long: `Show every lock: the dump lock in etcd and, for unfinished jobs that name a
ZooKeeper ensemble, its znode there (who holds it, as Manatee's dump job
sees it), running dumps, pnodes held by jobs, frozen and read-only vnodes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withOrchestrator(cmd, g, orchestratorSettings{}, func(ctx context.Context, o *orchestrator.Orchestrator) error {
				ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				l, err := o.Locks(ctx)
				if err != nil {
					return err
				}
				jobs, err := o.Jobs(ctx)
				if err != nil {
					return err
				}
				znodes, err := o.ZnodeLocks(ctx)
				if err != nil {
					return err
				}
				type frozen struct {
					Job    string `json:"job"`
					Pnode  string `json:"pnode"`
					Vnodes string `json:"vnodes"`
				}
				var fz []frozen
				for _, j := range jobs {
					if j.Frozen && !j.FlipDone() && j.State != orchestrator.Aborted {
						for _, m := range j.Moves {
							fz = append(fz, frozen{j.ID, j.From, m.Vnodes})
						}
					}
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), map[string]any{"locks": l, "frozen": fz, "znodes": znodes})
				}
				w := cmd.OutOrStdout()
				if l.DumpLock != nil {
					fmt.Fprintf(w, "dump lock: held by %s since %s\n", l.DumpLock.Holder, l.DumpLock.Since.Format(time.RFC3339))
				} else {
					fmt.Fprintln(w, "dump lock: free")
				}
				for _, z := range znodes {
					fmt.Fprintf(w, "dump lock znode %s in ZooKeeper %s: ", z.Path, z.Servers)
					switch {
					case z.Error != "":
						fmt.Fprintf(w, "unknown (%s)\n", z.Error)
					case z.Holder != nil:
						fmt.Fprintf(w, "held by %q since %s\n", *z.Holder, z.Since.Format(time.RFC3339))
					default:
						fmt.Fprintln(w, "free")
					}
				}
				fmt.Fprintf(w, "running dumps: %d\n", len(l.Dumps))
				for _, d := range l.Dumps {
					fmt.Fprintf(w, "  %s\n", d)
				}
				names := make([]string, 0, len(l.Pnodes))
				for p := range l.Pnodes {
					names = append(names, p)
				}
				sort.Strings(names)
				fmt.Fprintf(w, "pnodes held by jobs: %d\n", len(names))
				for _, p := range names {
					fmt.Fprintf(w, "  %s: job %s\n", p, l.Pnodes[p])
				}
				for _, f := range fz {
					fmt.Fprintf(w, "frozen (write-locked) on %s by job %s: %s\n", f.Pnode, f.Job, abbreviate(f.Vnodes, 60))
				}
				if l.ReadOnly != "" {
					fmt.Fprintf(w, "read-only vnodes in the ring: %s\n", abbreviate(l.ReadOnly, 60))
				}
				return nil
			})
		},
	}
}
