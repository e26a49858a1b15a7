package main

import (
	"context"
	"os"

	"github.com/reshard/reshard/orchestrator"
	"github.com/spf13/cobra"
)

func newResumeCmd(g *globals) *cobra.Command {
	var crashAt string
	var orch orchestratorSettings
	cmd := &cobra.Command{
		Use:   "resume JOB",
		Short: "Continue a job where it stopped (after a crash, a kill or a failed phase)",
		Long: `Every phase is recorded in etcd and safe to run twice, so a job whose
orchestrator died continues from its current phase. If another orchestrator
holds the job, this waits for it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withOrchestrator(cmd, g, orch, func(ctx context.Context, o *orchestrator.Orchestrator) error {
				return runJob(ctx, cmd, g, o, args[0], crashAt)
			})
		},
	}
	orch.leaseTTLFlag(cmd)
	cmd.Flags().StringVar(&crashAt, "crash-at", os.Getenv("RESHARD_CRASH_AT"), "fault injection for tests")
	cmd.Flags().MarkHidden("crash-at")
	return cmd
}
