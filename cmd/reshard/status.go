package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/reshard/reshard/orchestrator"
	"github.com/spf13/cobra"
)

// statusView is what status prints with --json: the job and the locks.
type statusView struct {
	Job   *orchestrator.Job  `json:"job"`
	Locks orchestrator.Locks `json:"locks"`
}

func newStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status [JOB]",
		Short: "Show a job: phases with progress and time, current phase, locks, write block",
		Long: `The outputs RFD 103 asks of resharding automation: the complete phase list,
each phase's state, progress and time spent, the current phase, the lock
state (dump lock, pnodes held by jobs, frozen and read-only vnodes), and
the measured write block. Without JOB, the newest job.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withOrchestratorWithin(cmd, g, 30*time.Second, func(ctx context.Context, o *orchestrator.Orchestrator) error {
				v, err := loadStatus(ctx, o, args)
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), v)
				}
				renderStatus(cmd.OutOrStdout(), v)
				return nil
			})
		},
	}
}

func loadStatus(ctx context.Context, o *orchestrator.Orchestrator, args []string) (statusView, error) {
	var v statusView
	var err error
	if len(args) == 1 {
		v.Job, err = o.Get(ctx, args[0])
	} else {
		var jobs []*orchestrator.Job
		jobs, err = o.Jobs(ctx)
		if err == nil && len(jobs) == 0 {
			err = fmt.Errorf("no jobs yet; start one with 'reshard start'")
		}
		if err == nil {
			v.Job = jobs[0]
		}
	}
	if err != nil {
		return v, err
	}
	v.Locks, err = o.Locks(ctx)
	return v, err
}

func newWatchCmd(g *globals) *cobra.Command {
	var interval time.Duration
	return &cobra.Command{
		Use:   "watch JOB",
		Short: "Redraw a job's status live with progress bars until it ends",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			o, done, err := connectOrchestrator(ctx, g, orchestratorSettings{})
			if err != nil {
				return err
			}
			defer done()
			for {
				v, err := loadStatus(ctx, o, args)
				if err != nil {
					return err
				}
				var b strings.Builder
				renderStatus(&b, v)
				fmt.Fprint(cmd.OutOrStdout(), "\033[H\033[2J"+b.String())
				switch v.Job.State {
				case orchestrator.Done, orchestrator.Aborted, orchestrator.Failed, orchestrator.Flipped, orchestrator.Reverted:
					return nil
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(interval):
				}
			}
		},
	}
}

// renderStatus prints a job for people.
func renderStatus(w io.Writer, v statusView) {
	j := v.Job
	fmt.Fprintf(w, "job %s  %s  %s -> %s  %s", j.ID, j.Strategy, j.From, strings.Join(j.To, ", "), strings.ToUpper(string(j.State)))
	if j.Current != "" {
		fmt.Fprintf(w, "  (current phase: %s)", j.Current)
	}
	fmt.Fprintln(w)
	if j.Error != "" {
		fmt.Fprintf(w, "error: %s\n", j.Error)
	}
	if j.Paused != "" {
		fmt.Fprintln(w, j.Paused)
	}
	for _, m := range j.Moves {
		fmt.Fprintf(w, "move to %s: %d vnodes (%s), %d rows, %s, filter of %d range(s)\n",
			m.To, m.Count, abbreviate(m.Vnodes, 60), m.Rows, humanBytes(m.Bytes), len(m.Ranges))
	}
	fmt.Fprintf(w, "ring version: %d -> %s", j.RingVersionBefore, versionText(j.RingVersionAfter))
	if j.WriteBlockMS > 0 {
		fmt.Fprintf(w, "   write block: %.1f ms", j.WriteBlockMS)
		if j.PromoteMS > 0 {
			fmt.Fprintf(w, " (promotion %.1f ms)", j.PromoteMS)
		}
	}
	fmt.Fprintln(w)
	if len(j.CutoverMS) > 0 {
		fmt.Fprintf(w, "cutover steps: %s\n", cutoverSteps(j.CutoverMS))
	}
	if rv := j.Revert; rv != nil {
		fmt.Fprintf(w, "revert: ring version %d -> %s", j.RingVersionAfter, versionText(rv.RingVersion))
		if rv.WriteBlockMS > 0 {
			fmt.Fprintf(w, "   write block: %.1f ms", rv.WriteBlockMS)
		}
		fmt.Fprintln(w)
		if len(rv.CutoverMS) > 0 {
			fmt.Fprintf(w, "revert steps: %s\n", cutoverSteps(rv.CutoverMS))
		}
	}
	if j.State == orchestrator.Flipped {
		fmt.Fprintf(w, "way back open: 'reshard revert %s' goes back to %s, 'reshard complete %s' closes it\n", j.ID, j.From, j.ID)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PHASE\tSTATE\tTIME\tPROGRESS")
	var total float64
	for _, p := range j.Phases {
		total += p.Seconds
		t := "-"
		if p.Started != nil {
			t = fmt.Sprintf("%.1fs", p.Seconds)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, p.State, t, progressText(p))
	}
	tw.Flush()
	fmt.Fprintf(w, "total %.1fs\n\nlocks:\n", total)
	if l := v.Locks.DumpLock; l != nil {
		fmt.Fprintf(w, "  dump lock: held by %s since %s\n", l.Holder, l.Since.Format(time.RFC3339))
	} else {
		fmt.Fprintln(w, "  dump lock: free")
	}
	if len(j.ZooKeeper) > 0 {
		fmt.Fprintf(w, "  dump lock znode: %s in ZooKeeper %s ('reshard locks' reads it)\n", j.ZooKeeperPath, strings.Join(j.ZooKeeper, ","))
	}
	if len(v.Locks.Dumps) > 0 {
		fmt.Fprintf(w, "  running dumps: %s\n", strings.Join(v.Locks.Dumps, ", "))
	}
	var held []string
	for p, id := range v.Locks.Pnodes {
		held = append(held, p+" ("+id+")")
	}
	if len(held) > 0 {
		fmt.Fprintf(w, "  pnodes in jobs: %s\n", strings.Join(held, ", "))
	}
	if j.Frozen && !j.FlipDone() {
		for _, m := range j.Moves {
			fmt.Fprintf(w, "  frozen on %s (write-locked): %d vnodes (%s)\n", j.From, m.Count, abbreviate(m.Vnodes, 60))
		}
	}
	if v.Locks.ReadOnly != "" {
		fmt.Fprintf(w, "  read-only vnodes in the ring: %s\n", abbreviate(v.Locks.ReadOnly, 60))
	}
	for _, warn := range j.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
}

// versionText is a ring version, "-" for none yet.
func versionText(v int64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprint(v)
}

// cutoverSteps lists a cutover's step times in the order they run.
func cutoverSteps(ms map[string]float64) string {
	var parts []string
	for _, n := range []string{"freeze", "caught-up", "recheck", "sequences", "disown", "writable", "ring", "routers"} {
		if v, ok := ms[n]; ok {
			parts = append(parts, fmt.Sprintf("%s %.1f ms", n, v))
		}
	}
	return strings.Join(parts, ", ")
}

func progressText(p orchestrator.Phase) string {
	if p.State == orchestrator.Failed || strings.HasPrefix(p.Error, "retrying") {
		return p.Error
	}
	pr := p.Progress
	if pr == nil {
		return ""
	}
	var b strings.Builder
	if pr.Total > 0 && pr.Unit != "bytes behind" {
		frac := min(float64(pr.Done)/float64(pr.Total), 1)
		n := int(frac * 20)
		fmt.Fprintf(&b, "[%s%s] %3.0f%% ", strings.Repeat("#", n), strings.Repeat(".", 20-n), frac*100)
	}
	fmt.Fprintf(&b, "%d/%d %s", pr.Done, pr.Total, pr.Unit)
	if pr.Rate > 0 {
		fmt.Fprintf(&b, "  %.0f/s", pr.Rate)
	}
	if pr.ETASeconds > 0 && p.State == orchestrator.Running {
		fmt.Fprintf(&b, "  ETA %.0fs", pr.ETASeconds)
	}
	if pr.Note != "" {
		fmt.Fprintf(&b, "  (%s)", pr.Note)
	}
	return b.String()
}

func abbreviate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func humanBytes(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}
