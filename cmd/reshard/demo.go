package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/lab"
	"github.com/reshard/reshard/load"
	"github.com/reshard/reshard/orchestrator"
	"github.com/spf13/cobra"
)

// demoResult is the last line `reshard demo --json` prints.
type demoResult struct {
	Strategy     string      `json:"strategy"`
	Rows         int         `json:"rows"`
	AckedWrites  int64       `json:"acked_writes"`
	ClientErrors int64       `json:"client_errors"`
	Missing      int         `json:"missing"`
	Stale        int         `json:"stale"`
	Misplaced    int         `json:"misplaced"`
	Ambiguous    int         `json:"ambiguous"`
	WriteBlockMS float64     `json:"write_block_ms"`
	Phases       []phaseTime `json:"phases"`
	TotalSeconds float64     `json:"total_seconds"` // the job, from its first phase to its last
	DemoSeconds  float64     `json:"demo_seconds"`  // everything, lab up to verify
	Job          string      `json:"job"`
}

type phaseTime struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

func newDemoCmd(g *globals) *cobra.Command {
	var strategy, dir string
	var rows int
	var keep bool
	cmd := &cobra.Command{
		Use:   "demo [--strategy logical|physical] [--rows N]",
		Short: "The whole story: a lab, traffic, an online split of 1.moray, and proof nothing was lost",
		Long: `Brings up a lab (embedded etcd, 2 shards x 3 peers, 2 routers), fills a
Manta-like bucket with --rows objects, starts traffic through the routers,
and splits 1.moray in half while the traffic runs: with the logical
strategy onto an empty 3.moray added for it, with the physical strategy
(RFD 103's method) onto 3 new peers of 1.moray that become 3.moray. It
shows the phases live, then stops the traffic, verifies every
acknowledged write against the shards, prints a summary and tears the lab
down (--keep leaves it up). Exits non-zero if anything is missing, stale
or misplaced.`,
		Example: `  reshard demo
  reshard demo --strategy physical --rows 50000 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if strategy != "logical" && strategy != "physical" {
				return fmt.Errorf("--strategy must be logical or physical, got %q", strategy)
			}
			if rows < 0 || rows > 50_000_000 {
				return fmt.Errorf("--rows must be between 0 and 50000000, got %d", rows)
			}
			return withSignals(cmd, func(ctx context.Context) error {
				res, err := runDemo(ctx, cmd, g, strategy, dir, rows, keep)
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
	cmd.Flags().BoolVar(&keep, "keep", false, "leave the lab up afterwards")
	return cmd
}

func runDemo(ctx context.Context, cmd *cobra.Command, g *globals, strategy, dir string, rows int, keep bool) (*demoResult, error) {
	start := time.Now()
	w := cmd.ErrOrStderr()
	step := func(format string, args ...any) { fmt.Fprintf(w, "\n== "+format+"\n", args...) }
	if dir == "" {
		d, err := os.MkdirTemp("", "reshard-demo-")
		if err != nil {
			return nil, err
		}
		dir = filepath.Join(d, "lab")
	}
	step("lab up in %s: embedded etcd, 2 shards x 3 peers (primary, sync, async), 2 routers", dir)
	st, err := lab.Up(ctx, lab.Config{Dir: dir, Shards: 2, Peers: 3, Routers: 2, Progress: w})
	if err != nil {
		return nil, err
	}
	defer func() {
		if keep {
			fmt.Fprintf(w, "\nthe lab is still up:\n  export RESHARD_ETCD=%s\n  reshard lab status --dir %s\n  routers: %s\n  reshard lab down --dir %s\n",
				st.EtcdURL, dir, strings.Join(st.Routers, " "), dir)
			return
		}
		step("lab down")
		if err := lab.Down(dir); err != nil {
			fmt.Fprintln(w, "lab down:", err)
		}
	}()
	cli, err := etcd.Connect(ctx, st.EtcdURL)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	g.etcd = st.EtcdURL

	step("fill: %d objects in bucket manta (hashed by directory, as Manta does)", rows)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, st.Routers[0]+"/buckets/manta", strings.NewReader(`{"hash_dir":true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("create bucket manta: HTTP %d", resp.StatusCode)
	}
	ledgerPath := filepath.Join(dir, "ledger.jsonl")
	ledger, err := os.Create(ledgerPath)
	if err != nil {
		return nil, err
	}
	defer ledger.Close()
	if err := load.Fill(ctx, cli, "manta", rows, ledger, w); err != nil {
		return nil, err
	}

	o, done, err := connectOrchestrator(ctx, g)
	if err != nil {
		return nil, err
	}
	defer done()
	sreq := orchestrator.Request{From: "1.moray", To: []string{"3.moray"}, SplitHalf: true, Strategy: strategy,
		DCMode: "single", Servers: 1, RateLimit: 50000}
	if strategy == "logical" {
		step("lab add-shard: an empty 3.moray, the destination")
		if _, err := lab.AddShard(ctx, dir, "3.moray", 3, w); err != nil {
			return nil, err
		}
	} else {
		step("the physical strategy will create 3.moray from 3 new peers of 1.moray (triple-DC mode)")
		sreq.DCMode, sreq.Servers, sreq.Provisioner = "triple", 3, "lab:"+dir
	}

	step("load: traffic through both routers while 1.moray is split")
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	type loadResult struct {
		sum load.Summary
		err error
	}
	loadDone := make(chan loadResult, 1)
	go func() {
		sum, err := load.Run(loadCtx, load.Config{Routers: st.Routers, Duration: time.Hour, Rate: 300, Keys: 2000,
			Buckets: 2, Concurrency: 8, Ledger: ledger})
		loadDone <- loadResult{sum, err}
	}()
	time.Sleep(3 * time.Second)

	step("reshard start --from 1.moray --to 3.moray --split-half --strategy %s", strategy)
	j, err := o.Start(ctx, sreq)
	if err != nil {
		stopLoad()
		<-loadDone
		return nil, err
	}
	o.OnUpdate = liveView(w, isTerminal(w))
	runErr := o.Run(ctx, j.ID)
	if j, err = o.Get(context.WithoutCancel(ctx), j.ID); err != nil {
		return nil, err
	}
	var b strings.Builder
	locks, _ := o.Locks(ctx)
	renderStatus(&b, statusView{Job: j, Locks: locks})
	fmt.Fprint(w, "\n"+b.String())
	time.Sleep(2 * time.Second) // traffic on the new layout
	stopLoad()
	lr := <-loadDone
	if lr.err != nil {
		return nil, lr.err
	}
	if runErr != nil {
		return nil, fmt.Errorf("job %s: %w", j.ID, runErr)
	}
	if err := ledger.Sync(); err != nil {
		return nil, err
	}

	step("verify: every acknowledged write against the shard that owns it")
	entries, err := load.ReadLedger(ledgerPath)
	if err != nil {
		return nil, err
	}
	rep, err := load.Verify(ctx, cli, entries)
	if err != nil {
		return nil, err
	}
	res := &demoResult{Strategy: strategy, Rows: rows, AckedWrites: lr.sum.AckedWrites, ClientErrors: lr.sum.ClientErrors,
		Missing: rep.Missing, Stale: rep.Stale, Misplaced: rep.Misplaced, Ambiguous: rep.Ambiguous,
		WriteBlockMS: j.WriteBlockMS, Job: j.ID}
	for _, p := range j.Phases {
		res.Phases = append(res.Phases, phaseTime{p.Name, p.Seconds})
		res.TotalSeconds += p.Seconds
	}
	res.DemoSeconds = time.Since(start).Seconds()
	printDemoSummary(w, res, lr.sum, rep)
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
	fmt.Fprintf(w, "  verify                %d keys: %d missing, %d stale, %d misplaced (%d ambiguous)\n",
		rep.Checked, r.Missing, r.Stale, r.Misplaced, r.Ambiguous)
	fmt.Fprintf(w, "  write block           %.1f ms\n", r.WriteBlockMS)
	fmt.Fprintf(w, "  job                   %.1f s (%s)\n", r.TotalSeconds, r.Job)
	for _, p := range r.Phases {
		fmt.Fprintf(w, "    %-18s %6.2f s\n", p.Name, p.Seconds)
	}
	fmt.Fprintf(w, "  demo                  %.1f s in all\n", r.DemoSeconds)
	for _, e := range rep.Examples {
		fmt.Fprintf(w, "  ! %s\n", e)
	}
}
