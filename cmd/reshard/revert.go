package main

import (
	"context"
	"fmt"

	"github.com/reshard/reshard/orchestrator"
	"github.com/spf13/cobra"
)

func newRevertCmd(g *globals) *cobra.Command {
	return decisionCmd(g, "revert", "Go back after the flip: the moved vnodes return to the origin, online",
		`After its ring flip a job keeps a way back until it completes: the origin
keeps the moved rows, and each destination streams its changes to them back
to the origin. revert runs the cutover the other way with the same
machinery: it waits for the way back to catch up, takes the dump lock,
freezes the moved vnodes on the destinations, waits for the origin to have
every change, moves the origin's _id sequences past the destinations',
hands ownership back, flips the ring back and waits for the routers. The
write block is measured and shown by 'reshard status' as the forward one.
Then the way back is dropped and the destinations' copies are removed
(the logical strategy deletes the rows at the cleanup's pace; the physical
one removes the new pnodes and their peers).

A job reverts while it is flipped (--complete manual or after:DURATION, not
yet completed). A revert that is killed resumes with 'reshard revert JOB'
or 'reshard resume JOB'. Reverting a reverted job does nothing.`,
		`  reshard start --from 1.moray --to 3.moray --split-half --servers 1 --complete manual
  reshard revert r20261130t101500ab12`,
		(*orchestrator.Orchestrator).Revert, "reverted: the moved vnodes are back on the origin")
}

func newCompleteCmd(g *globals) *cobra.Command {
	return decisionCmd(g, "complete", "Close a flipped job's way back and clean up",
		`A job started with --complete manual waits after its flip, with the way
back open ('reshard revert'), until complete closes it: the reverse
stream is dropped, then the cleanup deletes the moved rows from the origin
(and, for the physical strategy, the rows each new shard does not own) at
its pace. After that the job cannot be reverted. A job with --complete
after:DURATION completes on its own once soaked that long; complete ends
its soak at once. Completing a done job does nothing.`,
		`  reshard complete r20261130t101500ab12`,
		(*orchestrator.Orchestrator).Complete, "completed: the way back is closed and the moved rows are cleaned up")
}

// decisionCmd is revert or complete: an operator's decision on a flipped
// job, carried out in the foreground with the job's phases shown as they
// run, and the job printed at the end.
func decisionCmd(g *globals, verb, short, long, example string,
	act func(*orchestrator.Orchestrator, context.Context, string) error, done string) *cobra.Command {
	var faults faultFlags
	var orch orchestratorSettings
	cmd := &cobra.Command{
		Use:     verb + " JOB",
		Short:   short,
		Long:    long,
		Example: example,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withOrchestrator(cmd, g, orch, func(ctx context.Context, o *orchestrator.Orchestrator) error {
				return decide(ctx, cmd, g, o, args[0], faults, func(ctx context.Context, id string) error { return act(o, ctx, id) }, done)
			})
		},
	}
	orch.leaseTTLFlag(cmd)
	faults.register(cmd.Flags())
	return cmd
}

// decide carries out an operator's decision on a flipped job, showing its
// phases as they run, and prints the job at the end.
func decide(ctx context.Context, cmd *cobra.Command, g *globals, o *orchestrator.Orchestrator, id string, faults faultFlags,
	act func(context.Context, string) error, done string) error {
	o.CrashAt, o.PauseAt = faults.crashAt, faults.pauseAt
	o.OnUpdate = liveView(cmd.ErrOrStderr(), isTerminal(cmd.ErrOrStderr()))
	if err := act(ctx, id); err != nil {
		return err
	}
	j, err := o.Get(context.WithoutCancel(ctx), id)
	if err != nil {
		return err
	}
	if g.json {
		return printJSON(cmd.OutOrStdout(), j)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "job %s %s\n", id, done)
	if j.Revert != nil && j.Revert.WriteBlockMS > 0 {
		fmt.Fprintf(cmd.OutOrStdout(), "write block of the revert: %.1f ms\n", j.Revert.WriteBlockMS)
	}
	return nil
}
