package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"

	"github.com/reshard/reshard/lab"
	"github.com/reshard/reshard/load"
	"github.com/reshard/reshard/orchestrator"
	"github.com/spf13/cobra"
)

// demoResult is the last line `reshard demo --json` prints.
type demoResult struct {
	Strategy     string `json:"strategy"`
	Rows         int    `json:"rows"`
	Vnodes       int    `json:"vnodes"`
	AckedWrites  int64  `json:"acked_writes"`
	ClientErrors int64  `json:"client_errors"`
	// ErrorSamples is the first client error of each kind, when there were any.
	ErrorSamples map[string]string `json:"error_samples,omitempty"`
	Missing      int               `json:"missing"`
	Stale        int               `json:"stale"`
	Misplaced    int               `json:"misplaced"`
	Ambiguous    int               `json:"ambiguous"`
	WriteBlockMS float64           `json:"write_block_ms"`
	PromoteMS    float64           `json:"promote_ms,omitempty"` // of the write block, PostgreSQL promoting (physical)
	Phases       []phaseTime       `json:"phases"`
	TotalSeconds float64           `json:"total_seconds"` // the job, from its first phase to its last
	DemoSeconds  float64           `json:"demo_seconds"`  // everything, lab up to verify
	Job          string            `json:"job"`
}

type phaseTime struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

func newDemoCmd(g *globals) *cobra.Command {
	var strategy, dir string
	var rows, vnodes int
	var keep bool
	var dashboard string
	cmd := &cobra.Command{
		Use:   "demo [--strategy logical|physical] [--rows N] [--vnodes N]",
		Short: "The whole story: a lab, traffic, an online split of 1.moray, and proof nothing was lost",
		Long: `Brings up a lab (embedded etcd, 2 shards x 3 peers, 2 routers), fills a
Manta-like bucket with --rows objects, starts traffic through the routers,
and splits 1.moray in half while the traffic runs: with the logical
strategy onto an empty 3.moray added for it, with the physical strategy
(RFD 103's method) onto 3 new peers of 1.moray that become 3.moray. It
shows the phases live, then stops the traffic, verifies every
acknowledged write against the shards, prints a summary and tears the lab
down (--keep leaves it up). Exits non-zero if anything is missing, stale
or misplaced.

It also serves the dashboard ('reshard ui') on --ui, printed at the start,
for as long as the lab is up: watch the phases, the ring and the routers
in a browser while the split runs (--ui "" turns it off; when the port is
taken, a free one is used).`,
		Example: `  reshard demo
  reshard demo --strategy physical --rows 50000 --json
  reshard demo --vnodes 1000000 --rows 1000000     # a production-size ring`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if orchestrator.PhaseNames(orchestrator.StrategyName(strategy)) == nil {
				return fmt.Errorf("--strategy must be %s, got %q", orchestrator.StrategyNames(), strategy)
			}
			if rows < 0 || rows > 50_000_000 {
				return fmt.Errorf("--rows must be between 0 and 50000000, got %d", rows)
			}
			if vnodes < 0 || vnodes > 10_000_000 {
				return fmt.Errorf("--vnodes must be between 1 and 10000000, got %d", vnodes)
			}
			return withSignals(cmd, func(ctx context.Context) error {
				res, err := runDemo(ctx, cmd, g, strategy, dir, rows, vnodes, keep, demoUI(dashboard))
				if res != nil && g.json {
					if perr := printJSON(cmd.OutOrStdout(), res); perr != nil {
						return perr
					}
				}
				if err == nil && (res.Missing > 0 || res.Stale > 0 || res.Misplaced > 0) {
					err = fmt.Errorf("verify found %d missing, %d stale, %d misplaced", res.Missing, res.Stale, res.Misplaced)
				}
				return err
			})
		},
	}
	cmd.Flags().StringVar(&strategy, "strategy", "logical", "logical or physical")
	cmd.Flags().IntVar(&rows, "rows", 200_000, "objects to fill before the split")
	cmd.Flags().StringVar(&dir, "dir", "", "lab directory (default: a new temp directory)")
	cmd.Flags().BoolVar(&keep, "keep", false, "leave the lab up afterwards (the dashboard too)")
	cmd.Flags().StringVar(&dashboard, "ui", "127.0.0.1:8090", "serve the dashboard here while the lab is up; \"\" for none")
	cmd.Flags().IntVar(&vnodes, "vnodes", lab.DefaultVnodes, "ring size (Manta's production rings have 1000000)")
	return cmd
}

// demoUI is the dashboard's address: addr, or a free port on its host
// when addr's port is taken.
func demoUI(addr string) string {
	if addr == "" {
		return ""
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		host, _, _ := net.SplitHostPort(addr)
		return net.JoinHostPort(host, "0")
	}
	l.Close()
	return addr
}

func runDemo(ctx context.Context, cmd *cobra.Command, g *globals, strategy, dir string, rows, vnodes int, keep bool, dashboard string) (*demoResult, error) {
	w := cmd.ErrOrStderr()
	sc := scenario{Strategy: strategy, Vnodes: vnodes, Rows: rows, Peers: 3, Rate: 300, Dir: dir, Keep: keep, UI: dashboard,
		Progress: w, Live: isTerminal(w)}
	r, err := runScenario(ctx, g, sc)
	if err != nil {
		return nil, err
	}
	j := r.Job
	res := &demoResult{Strategy: strategy, Rows: rows, Vnodes: r.Vnodes, AckedWrites: r.Load.AckedWrites, ClientErrors: r.Load.ClientErrors,
		ErrorSamples: r.Load.ErrorSamples,
		Missing:      r.Report.Missing, Stale: r.Report.Stale, Misplaced: r.Report.Misplaced, Ambiguous: r.Report.Ambiguous,
		WriteBlockMS: j.WriteBlockMS, PromoteMS: j.PromoteMS, Job: j.ID}
	for _, p := range j.Phases {
		res.Phases = append(res.Phases, phaseTime{p.Name, p.Seconds})
		res.TotalSeconds += p.Seconds
	}
	res.DemoSeconds = r.Seconds
	printDemoSummary(w, res, r.Load, r.Report)
	return res, nil
}

func printDemoSummary(w io.Writer, r *demoResult, sum load.Summary, rep load.Report) {
	var ops int64
	for _, n := range sum.Ops {
		ops += n
	}
	fmt.Fprintf(w, "\n== summary (%s strategy)\n", r.Strategy)
	fmt.Fprintf(w, "  filled objects        %d\n", r.Rows)
	fmt.Fprintf(w, "  traffic               %d operations, %d acknowledged writes, %d client errors\n", ops, r.AckedWrites, r.ClientErrors)
	for _, kind := range slices.Sorted(maps.Keys(r.ErrorSamples)) {
		fmt.Fprintf(w, "    %-19s %d, the first: %s\n", kind, sum.Errors[kind], r.ErrorSamples[kind])
	}
	fmt.Fprintf(w, "  verify                %d keys: %d missing, %d stale, %d misplaced (%d ambiguous)\n",
		rep.Checked, r.Missing, r.Stale, r.Misplaced, r.Ambiguous)
	if r.PromoteMS > 0 {
		fmt.Fprintf(w, "  write block           %.1f ms, %.1f ms of it PostgreSQL promoting\n", r.WriteBlockMS, r.PromoteMS)
	} else {
		fmt.Fprintf(w, "  write block           %.1f ms\n", r.WriteBlockMS)
	}
	fmt.Fprintf(w, "  job                   %.1f s (%s)\n", r.TotalSeconds, r.Job)
	for _, p := range r.Phases {
		fmt.Fprintf(w, "    %-18s %6.2f s\n", p.Name, p.Seconds)
	}
	fmt.Fprintf(w, "  demo                  %.1f s in all\n", r.DemoSeconds)
	for _, e := range rep.Examples {
		fmt.Fprintf(w, "  ! %s\n", e)
	}
}
