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
	clientv3 "go.etcd.io/etcd/client/v3"
)

// scenario is the demo's story, which the scale bench runs too: a lab, a
// filled bucket, traffic through both routers, a split of 1.moray in half
// while it runs, and a verify of every acknowledged write.
type scenario struct {
	Strategy string
	Vnodes   int // ring size; 0 means the lab's default
	Rows     int // objects filled before the split
	Peers    int // per shard; the physical strategy's destination gets 3 in triple-DC mode
	Rate     float64
	Dir      string // the lab's directory; "" makes a temp one
	Keep     bool   // leave the lab up
	UI       string // serve the dashboard here (lab.Config.UI); "" none
	Progress io.Writer
	Live     bool // redraw the job's status in place (a terminal), else print changes
	// CleanupPace is the job's --cleanup-pace; "" is the default (adaptive).
	CleanupPace string
	// Sample, when set, runs every 200 ms while the job runs.
	Sample func(ctx context.Context, st *lab.State)
	// BeforeLoad, when set, runs after the fill and before the load starts.
	BeforeLoad func(ctx context.Context, st *lab.State, cli *clientv3.Client) error
	// Measure, when set, runs after the verify and before the lab goes down.
	Measure func(ctx context.Context, st *lab.State, cli *clientv3.Client, j *orchestrator.Job) error
}

type scenarioResult struct {
	Vnodes  int
	Job     *orchestrator.Job
	Load    load.Summary
	Report  load.Report
	Seconds float64 // everything, lab up to verify
}

func runScenario(ctx context.Context, g *globals, sc scenario) (*scenarioResult, error) {
	start := time.Now()
	w := sc.Progress
	if w == nil {
		w = io.Discard
	}
	step := func(format string, args ...any) { fmt.Fprintf(w, "\n== "+format+"\n", args...) }
	dir := sc.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "reshard-demo-")
		if err != nil {
			return nil, err
		}
		dir = filepath.Join(d, "lab")
		// A lab of its own goes with it, unless kept (a lab in a given
		// --dir stays for the operator to read).
		defer func() {
			if !sc.Keep {
				os.RemoveAll(d)
			}
		}()
	}
	if sc.Vnodes == 0 {
		sc.Vnodes = lab.DefaultVnodes
	}
	if sc.Peers == 0 {
		sc.Peers = 1
	}
	step("lab up in %s: embedded etcd, 2 shards x %d peers, 2 routers, a %d-vnode ring", dir, sc.Peers, sc.Vnodes)
	st, err := lab.Up(ctx, lab.Config{Dir: dir, Shards: 2, Peers: sc.Peers, Routers: 2, Vnodes: sc.Vnodes,
		SpareHosts: lab.DefaultSpareHosts, UI: sc.UI, Progress: w})
	if err != nil {
		return nil, err
	}
	if st.UI != "" {
		fmt.Fprintf(w, "\ndashboard: %s (live until the demo ends)\n", st.UI)
	}
	defer func() {
		if sc.Keep {
			fmt.Fprintf(w, "\nthe lab is still up:\n  export RESHARD_ETCD=%s\n  reshard lab status --dir %s\n  routers: %s\n",
				st.EtcdURL, dir, strings.Join(st.Routers, " "))
			if st.UI != "" {
				fmt.Fprintf(w, "  dashboard: %s\n", st.UI)
			}
			fmt.Fprintf(w, "  reshard lab down --dir %s\n", dir)
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

	step("fill: %d objects in bucket manta (hashed by directory, as Manta does)", sc.Rows)
	if err := createBucket(ctx, st.Routers[0], "manta", `{"hash_dir":true}`); err != nil {
		return nil, err
	}
	ledgerPath := filepath.Join(dir, "ledger.jsonl")
	ledger, err := os.Create(ledgerPath)
	if err != nil {
		return nil, err
	}
	defer ledger.Close()
	if err := load.Fill(ctx, cli, "manta", sc.Rows, ledger, w); err != nil {
		return nil, err
	}
	if sc.BeforeLoad != nil {
		if err := sc.BeforeLoad(ctx, st, cli); err != nil {
			return nil, err
		}
	}

	o, done, err := connectOrchestrator(ctx, g, orchestratorSettings{})
	if err != nil {
		return nil, err
	}
	defer done()
	sreq := orchestrator.Request{From: "1.moray", To: []string{"3.moray"}, SplitHalf: true, Strategy: orchestrator.StrategyName(sc.Strategy),
		DCMode: orchestrator.SingleDC, Servers: 1, RateLimit: 50000, CleanupPace: sc.CleanupPace}
	if !orchestrator.CreatesDestinations(sreq.Strategy) {
		step("lab add-shard: an empty 3.moray, the destination")
		if _, err := lab.AddShard(ctx, dir, "3.moray", sc.Peers, w); err != nil {
			return nil, err
		}
	} else {
		step("the %s strategy will create 3.moray from 3 new peers of 1.moray (triple-DC mode), made by the agents of %s", sc.Strategy, strings.Join(st.AgentNames(), ", "))
		sreq.DCMode, sreq.Servers, sreq.Provisioner = orchestrator.TripleDC, 3, st.AgentSpec()
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
		sum, err := load.Run(loadCtx, load.Config{Routers: st.Routers, Duration: time.Hour, Rate: sc.Rate, Keys: 2000,
			Buckets: 2, Concurrency: 8, Ledger: ledger})
		loadDone <- loadResult{sum, err}
	}()
	time.Sleep(3 * time.Second)

	step("reshard start --from 1.moray --to 3.moray --split-half --strategy %s", sc.Strategy)
	j, err := o.Start(ctx, sreq)
	if err != nil {
		stopLoad()
		<-loadDone
		return nil, err
	}
	if sc.Progress != nil {
		o.OnUpdate = liveView(w, sc.Live)
	}
	sampleCtx, stopSample := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		if sc.Sample == nil {
			return
		}
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			sc.Sample(sampleCtx, st)
			select {
			case <-t.C:
			case <-sampleCtx.Done():
				return
			}
		}
	}()
	runErr := o.Run(ctx, j.ID)
	stopSample()
	<-sampled
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
	if orchestrator.CreatesDestinations(sreq.Strategy) {
		step("lab status: 3.moray's peers, each made by the agent of a spare host")
		for _, r := range lab.Status(ctx, st) {
			if r.Shard == "3.moray" {
				fmt.Fprintf(w, "%-8s %-10s on %-8s pg %s, %s\n", r.Role, r.Peer, r.Agent, r.PG, map[bool]string{true: "in recovery", false: "read-write"}[r.InRecovery])
			}
		}
	}
	if err := ledger.Sync(); err != nil {
		return nil, err
	}

	step("verify: every acknowledged write against the shard that owns it")
	entries, err := load.ReadLedger(ledgerPath)
	if err != nil {
		return nil, err
	}
	rep, err := verifyLedgerEntries(ctx, cli, entries)
	if err != nil {
		return nil, err
	}
	if sc.Measure != nil {
		if err := sc.Measure(ctx, st, cli, j); err != nil {
			return nil, err
		}
	}
	return &scenarioResult{Vnodes: sc.Vnodes, Job: j, Load: lr.sum, Report: rep, Seconds: time.Since(start).Seconds()}, nil
}

// createBucket creates a bucket through a router's HTTP API.
func createBucket(ctx context.Context, router, bucket, options string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, router+"/buckets/"+bucket, strings.NewReader(options))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("create bucket %s: HTTP %d: %.200s", bucket, resp.StatusCode, b)
	}
	return nil
}
