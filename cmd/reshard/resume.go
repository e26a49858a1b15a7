package main

import (
	"context"

	"github.com/reshard/reshard/orchestrator"
	"github.com/spf13/cobra"
)

func newResumeCmd(g *globals) *cobra.Command {
	var faults faultFlags
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
				return runJob(ctx, cmd, g, o, args[0], faults)
			})
		},
	}
	orch.leaseTTLFlag(cmd)
	faults.register(cmd.Flags())
	return cmd
}
