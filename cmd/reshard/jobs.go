package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newJobsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "jobs",
		Short: "List reshard jobs, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(cmd, 30*time.Second)
			defer cancel()
			o, done, err := connectOrchestrator(ctx, g, orchestratorSettings{})
			if err != nil {
				return err
			}
			defer done()
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
		},
	}
}
