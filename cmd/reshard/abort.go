package main

import (
	"context"
	"fmt"

	"github.com/reshard/reshard/orchestrator"
	"github.com/spf13/cobra"
)

func newAbortCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "abort JOB",
		Short: "Stop a job and undo it (only before its ring flip)",
		Long: `Before the ring flips, abort undoes everything: the origin owns and serves
its vnodes again, and the subscription, slot, publication, the
destination's copied rows and ownership rows, and the locks are removed.
After the flip abort is refused: the job goes back with 'reshard revert'
or finishes with 'reshard complete'.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withOrchestrator(cmd, g, orchestratorSettings{}, func(ctx context.Context, o *orchestrator.Orchestrator) error {
				if err := o.Abort(ctx, args[0]); err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), map[string]string{"aborted": args[0]})
				}
				fmt.Fprintf(cmd.OutOrStdout(), "job %s aborted and undone\n", args[0])
				return nil
			})
		},
	}
}
