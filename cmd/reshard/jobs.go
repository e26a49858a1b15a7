package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/reshard/reshard/orchestrator"
	"github.com/spf13/cobra"
)

func newJobsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "jobs",
		Short: "List reshard jobs, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withOrchestratorWithin(cmd, g, 30*time.Second, func(ctx context.Context, o *orchestrator.Orchestrator) error {
				jobs, err := o.Jobs(ctx)
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), jobs)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "JOB\tSTRATEGY\tFROM\tTO\tSTATE\tPHASE\tCREATED")
				for _, j := range jobs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.Strategy, j.From, strings.Join(j.To, ","),
						j.State, j.Current, j.Created.Format(time.RFC3339))
				}
				return tw.Flush()
			})
		},
	}
}
