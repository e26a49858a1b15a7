package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/reshard/reshard/orchestrator"
	"github.com/spf13/cobra"
)

func newRunCmd(g *globals) *cobra.Command {
	var poll time.Duration
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run as a service: pick up unfinished jobs and run them to the end",
		Long: `The long-running form of the orchestrator. It runs every job that is
pending, running, reverting or completing (a killed orchestrator's jobs
resume here), and every flipped job whose soak (--complete after:DURATION)
must end or that an operator asked to revert or complete, one at a time; a
job another orchestrator holds is waited for. Failed jobs wait for an
operator: 'reshard resume JOB' or 'reshard abort JOB'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withOrchestrator(cmd, g, orchestratorSettings{}, func(ctx context.Context, o *orchestrator.Orchestrator) error {
				log := slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), nil))
				for ctx.Err() == nil {
					jobs, err := o.Jobs(ctx)
					if err != nil {
						log.Warn("list jobs", "err", err)
					}
					for _, j := range jobs {
						if !o.NeedsRun(ctx, j) {
							continue
						}
						log.Info("running job", "job", j.ID)
						if err := o.Run(ctx, j.ID); err != nil && !errors.Is(err, orchestrator.ErrAborted) {
							log.Warn("job stopped", "job", j.ID, "err", err)
						} else {
							log.Info("job ended", "job", j.ID)
						}
					}
					select {
					case <-ctx.Done():
					case <-time.After(poll):
					}
				}
				return nil
			})
		},
	}
	cmd.Flags().DurationVar(&poll, "poll", 2*time.Second, "how often to look for jobs")
	return cmd
}
