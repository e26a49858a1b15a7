package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/lab"
	"github.com/reshard/reshard/orchestrator"
	"github.com/reshard/reshard/perf"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/ring"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// compareRun is what every comparison of `bench compare` is given.
type compareRun struct {
	g           *globals
	concurrency int
	rounds      int
	per         time.Duration
	rows        int
	changes     int
	splits      int
	flips       int
	growthRows  []int
	writeRate   float64
	rate        float64
	reference   string // ../shared/reference: moray.sh
	morayClient string // test/moray: the npm moray client
	progress    io.Writer
}

func (c compareRun) step(format string, args ...any) {
	fmt.Fprintf(c.progress, "\n== "+format+"\n", args...)
}

// comparison measures one area against its baselines.
type comparison struct {
	name string
	what string // for --help
	run  func(ctx context.Context, c compareRun) ([]perf.Result, error)
}

var comparisons = []comparison{
	{"router", "gets and puts through a router's HTTP API and Moray port against pgx straight to the shard", compareRouter},
	{"moray", "reshard's Moray port against the real Moray on the same database, with the npm moray client", compareMoray},
	{"tier", "reshard's router on two shards against the real tier (electric-moray in front of two Morays), with the npm moray client", compareTier},
	{"copy", "a logical split's copy against a plain COPY pipe of the same rows between the same servers, and its verify against counting them", compareCopy},
	{"add-peers", "a physical split's add-peers against plain pg_basebackups of the same origin", compareAddPeers},
	{"catch-up", "a subscription draining a backlog against the origin's write rate, at 1,000 and 1,000,000 vnodes", compareCatchUp},
	{"growth", "the whole logical split at growing row counts (--growth-rows), against linear in the rows", compareGrowth},
	{"ring", "a split's ring flip, and the routers' reload of it, at 1,000,000 vnodes against 1,000, and as a delta against a whole ring", compareRing},
	{"write-block", "the write block over many splits (each reverted after) under steady writes, and what writes to the moving vnodes met, at 1,000 and 1,000,000 vnodes", compareWriteBlock},
}

func comparisonNames() []string {
	var out []string
	for _, c := range comparisons {
		out = append(out, c.name)
	}
	return out
}

func newBenchCompareCmd(g *globals) *cobra.Command {
	c := compareRun{g: g}
	var only, markdown, growth string
	var quick bool
	var about strings.Builder
	for _, cmp := range comparisons {
		fmt.Fprintf(&about, "  %-10s %s\n", cmp.name, cmp.what)
	}
	cmd := &cobra.Command{
		Use:   "compare [--only AREA,...] [--markdown FILE] [--json]",
		Short: "Measure reshard side by side with plain PostgreSQL tools and the real Moray",
		Long: `Runs each comparison in a lab of its own on this machine and prints one
table: what reshard achieved, what the baseline achieved doing the same
work on the same servers, their ratio, and the goal for that ratio.
Where both sides are request loops, they run in alternating rounds
(--rounds of --per each), so drift on a shared machine falls on both.

` + about.String() + `
A comparison that needs something this machine lacks (Node.js and the npm
moray client, the reference kit) is listed as skipped, with why.
--markdown writes the table with the command and the machine to a file
(docs/performance.md keeps the last one).`,
		Example: `  reshard bench compare
  reshard bench compare --only router --rounds 5 --per 5s
  reshard bench compare --quick --json
  reshard bench compare --markdown docs/performance-table.md`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			areas := comparisonNames()
			if only != "" {
				areas = strings.Split(only, ",")
				for _, a := range areas {
					if !slices.Contains(comparisonNames(), a) {
						return fmt.Errorf("--only: unknown area %q (areas: %s)", a, strings.Join(comparisonNames(), ", "))
					}
				}
			}
			if quick {
				c.rounds, c.per, c.rows, c.changes, c.splits, c.flips = 1, time.Second, 20_000, 5_000, 2, 4
				if !cmd.Flags().Changed("growth-rows") {
					growth = "20000,80000"
				}
			}
			c.growthRows = nil
			for _, part := range strings.Split(growth, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(part))
				if err != nil || n < 1000 || n > 100_000_000 {
					return fmt.Errorf("--growth-rows: %q is not a row count from 1000 to 100000000", part)
				}
				c.growthRows = append(c.growthRows, n)
			}
			if len(c.growthRows) < 2 || !slices.IsSorted(c.growthRows) {
				return fmt.Errorf("--growth-rows needs at least two row counts, smallest first")
			}
			switch {
			case c.concurrency < 1 || c.concurrency > 256:
				return fmt.Errorf("--concurrency must be between 1 and 256, got %d", c.concurrency)
			case c.rounds < 1 || c.rounds > 100:
				return fmt.Errorf("--rounds must be between 1 and 100, got %d", c.rounds)
			case c.per < 100*time.Millisecond || c.per > 10*time.Minute:
				return fmt.Errorf("--per must be between 100ms and 10m, got %v", c.per)
			case c.rows < 1000 || c.rows > 50_000_000:
				return fmt.Errorf("--rows must be between 1000 and 50000000, got %d", c.rows)
			case c.changes < 1000 || c.changes > 10_000_000:
				return fmt.Errorf("--changes must be between 1000 and 10000000, got %d", c.changes)
			case c.splits < 1 || c.splits > 1000:
				return fmt.Errorf("--splits must be between 1 and 1000, got %d", c.splits)
			case c.flips < 2 || c.flips > 10_000 || c.flips%2 != 0:
				return fmt.Errorf("--flips must be an even number from 2 to 10000, got %d", c.flips)
			case c.writeRate < 1 || c.writeRate > 100_000:
				return fmt.Errorf("--write-rate must be between 1 and 100000 writes/s, got %v", c.writeRate)
			case c.rate < 1 || c.rate > 100_000:
				return fmt.Errorf("--rate must be between 1 and 100000 operations/s, got %v", c.rate)
			}
			if markdown != "" {
				// Fail now, not after the run, if the file cannot be written.
				_, statErr := os.Stat(markdown)
				f, err := os.OpenFile(markdown, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
				if err != nil {
					return fmt.Errorf("--markdown: %w", err)
				}
				f.Close()
				if statErr != nil {
					os.Remove(markdown)
				}
			}
			c.progress = cmd.ErrOrStderr()
			return withSignals(cmd, func(ctx context.Context) error {
				start := time.Now()
				rep := perf.Report{Date: time.Now().UTC().Format("2006-01-02"), Machine: machine(),
					Command: "reshard " + strings.Join(os.Args[1:], " ")}
				for _, cmp := range comparisons {
					if !slices.Contains(areas, cmp.name) {
						continue
					}
					c.step("%s: %s", cmp.name, cmp.what)
					rs, err := cmp.run(ctx, c)
					if err != nil {
						return fmt.Errorf("%s: %w", cmp.name, err)
					}
					rep.Results = append(rep.Results, rs...)
				}
				rep.Duration = time.Since(start).Seconds()
				if markdown != "" {
					f, err := os.Create(markdown)
					if err != nil {
						return err
					}
					rep.Markdown(f)
					if err := f.Close(); err != nil {
						return err
					}
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), rep)
				}
				rep.Table(cmd.OutOrStdout())
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&only, "only", "", "run only these areas, comma-separated ("+strings.Join(comparisonNames(), ", ")+")")
	f.IntVar(&c.concurrency, "concurrency", 16, "requests in flight on each side of a request comparison")
	f.IntVar(&c.rounds, "rounds", 3, "alternating rounds of each request comparison")
	f.DurationVar(&c.per, "per", 3*time.Second, "how long each side runs in each round")
	f.IntVar(&c.rows, "rows", 250_000, "objects in the bucket the copy comparisons split")
	f.IntVar(&c.changes, "changes", 50_000, "writes in the catch-up comparison's backlog")
	f.StringVar(&growth, "growth-rows", "1000000,4000000,16000000", "the growth comparison's row counts, smallest first")
	f.IntVar(&c.splits, "splits", 20, "splits (each reverted after) the write-block comparison runs at each ring size")
	f.IntVar(&c.flips, "flips", 64, "ring flips (forward and back, so even) the ring comparison makes at each size and each way of storing them")
	f.Float64Var(&c.writeRate, "write-rate", 1000, "the writes/s through the routers during the write-block comparison's splits")
	f.Float64Var(&c.rate, "rate", 200, "the light load's operations/s through the routers during a split")
	f.StringVar(&c.reference, "reference", defaultReference(), "the reference kit's directory (moray.sh); RESHARD_REFERENCE")
	f.StringVar(&c.morayClient, "moray-client", "test/moray", "the directory with the npm moray client installed (bench.js)")
	f.StringVar(&markdown, "markdown", "", "also write the table, the command and the machine to this file as Markdown")
	f.BoolVar(&quick, "quick", false, "a short run (1 round of 1 s, 20,000 rows): checks the harness, not the figures")
	return cmd
}

func defaultReference() string {
	if d := os.Getenv("RESHARD_REFERENCE"); d != "" {
		return d
	}
	return filepath.Join("..", "shared", "reference")
}

// machine says what the figures were measured on.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%d CPUs (%s), %.1f GB memory, %s", runtime.NumCPU(), model, memoryGB(), runtime.Version())
}

// compareLab brings up a lab of its own for one comparison: shards of one
// peer each and one router. down takes it away.
func compareLab(ctx context.Context, c compareRun, shards, vnodes int) (st *lab.State, down func(), err error) {
	return compareLabRouters(ctx, c, shards, vnodes, 1)
}

func compareLabRouters(ctx context.Context, c compareRun, shards, vnodes, routers int) (st *lab.State, down func(), err error) {
	root, err := os.MkdirTemp("", "reshard-compare-")
	if err != nil {
		return nil, nil, err
	}
	// The lab's PostgreSQL user must be able to enter it.
	if err := os.Chmod(root, 0o755); err != nil {
		return nil, nil, err
	}
	dir := filepath.Join(root, "lab")
	st, err = lab.Up(ctx, lab.Config{Dir: dir, Shards: shards, Peers: 1, Routers: routers, Vnodes: vnodes, Progress: io.Discard})
	if err != nil {
		os.RemoveAll(root)
		return nil, nil, err
	}
	return st, func() {
		if err := lab.Down(dir); err != nil {
			fmt.Fprintln(c.progress, "lab down:", err)
		}
		os.RemoveAll(root)
	}, nil
}

func (c compareRun) request() perf.Request {
	return perf.Request{Concurrency: c.concurrency, Rounds: c.rounds, Per: c.per, Keys: 5000}
}

func compareRouter(ctx context.Context, c compareRun) ([]perf.Result, error) {
	st, down, err := compareLab(ctx, c, 2, lab.DefaultVnodes)
	if err != nil {
		return nil, err
	}
	defer down()
	rg, err := labRing(ctx, st)
	if err != nil {
		return nil, err
	}
	t := perf.RouterTarget{HTTP: st.Routers[0], Moray: st.Moray[0], Ring: rg, Shards: map[string]string{}, PoolSize: 16}
	t.RouterPID = routerPID(st, 0)
	for _, sh := range st.Shards {
		t.Shards[sh.Name] = sh.Peers[0].DSN()
	}
	c.step("router: %d rounds of %v per side, %d requests in flight", c.rounds, c.per, c.concurrency)
	return perf.CompareRouter(ctx, t, c.request())
}

func compareMoray(ctx context.Context, c compareRun) ([]perf.Result, error) {
	// One shard: the real Moray and the router both use its database.
	return compareReference(ctx, c, "moray", "the real Moray", 1, lab.DefaultVnodes,
		func(st *lab.State, work string) (perf.MorayServer, func() error, error) {
			c.step("moray: the real Moray (%s) on 1.moray's database", filepath.Join(c.reference, "moray.sh"))
			addr, pid, stop, err := perf.StartMoray(ctx, c.reference, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/moray", st.Shards[0].Peers[0].Port), work, 16)
			return perf.MorayServer{Addr: addr, PIDs: []int{pid}}, stop, err
		})
}

// compareTier runs the real tier (electric-moray in front of two Morays,
// each with its own PostgreSQL, a 1,000,000-vnode ring) and a lab of the
// same shape (a router in front of two shards, 1,000,000 vnodes) and
// sends both the same requests with the npm client.
func compareTier(ctx context.Context, c compareRun) ([]perf.Result, error) {
	return compareReference(ctx, c, "tier", "the real tier (electric-moray, 2 Morays)", 2, 1_000_000,
		func(st *lab.State, work string) (perf.MorayServer, func() error, error) {
			c.step("tier: the real tier (%s)", filepath.Join(c.reference, "tier.sh"))
			tier, stop, err := perf.StartTier(ctx, c.reference, filepath.Join(work, "tier"))
			return perf.MorayServer{Addr: tier.Addr, PIDs: tier.PIDs}, stop, err
		})
}

// compareReference starts a lab of shards shards and vnodes vnodes, then
// the reference (start, with a work directory PostgreSQL may enter), and
// compares the lab's Moray port with it through the npm client. Without
// the client or the reference kit, the results say skipped and why.
func compareReference(ctx context.Context, c compareRun, area, against string, shards, vnodes int,
	start func(st *lab.State, work string) (perf.MorayServer, func() error, error)) ([]perf.Result, error) {
	client := perf.MorayClient{Dir: c.morayClient}
	skip := func(why string) []perf.Result {
		var out []perf.Result
		for _, op := range []string{"putObject", "getObject", "findObjects"} {
			out = append(out, perf.Skip(area, op, against, why, 4))
		}
		return out
	}
	if why := client.Usable(); why != "" {
		return skip(why), nil
	}
	c.step("%s: a lab of %d shard(s) and a router, %d vnodes", area, shards, vnodes)
	st, down, err := compareLab(ctx, c, shards, vnodes)
	if err != nil {
		return nil, err
	}
	defer down()
	work, err := os.MkdirTemp("", "reshard-compare-"+area+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	// The reference's PostgreSQL servers run as postgres, in work.
	if err := os.Chmod(work, 0o755); err != nil {
		return nil, err
	}
	theirs, stop, err := start(st, work)
	if err != nil {
		return skip(err.Error()), nil
	}
	defer func() {
		if err := stop(); err != nil {
			fmt.Fprintln(c.progress, err)
		}
	}()
	c.step("%s: %d rounds of %v per side, %d requests in flight, the npm moray client", area, c.rounds, c.per, c.concurrency)
	return perf.CompareMoray(ctx, client, perf.MorayComparison{Area: area, Against: against,
		Ours: perf.MorayServer{Addr: st.Moray[0], PIDs: []int{routerPID(st, 0)}}, Theirs: theirs}, c.request())
}

// The goals of issue 21 for the copies, as ratios to the plain tool.
const (
	copyGoal     = 0.8
	addPeersGoal = 0.9
)

// phaseSeconds is how long a finished job spent in a phase.
func phaseSeconds(j *orchestrator.Job, name string) float64 {
	for _, p := range j.Phases {
		if p.Name == name {
			return p.Seconds
		}
	}
	return 0
}

func movedRows(j *orchestrator.Job) int64 {
	var n int64
	for _, m := range j.Moves {
		n += m.Rows
	}
	return n
}

// compareCopy splits 1.moray in half with the logical strategy (the demo's
// split, under a light load), then copies the rows the job moved, from
// 3.moray back to 1.moray, with a plain COPY pipe.
func compareCopy(ctx context.Context, c compareRun) ([]perf.Result, error) {
	var plainRows int64
	var plain time.Duration
	var verify perf.VerifyResult
	sc := scenario{Strategy: "logical", Rows: c.rows, Peers: 1, Rate: c.rate, Progress: c.progress, CleanupPace: orchestrator.PaceFixed}
	sc.Measure = func(ctx context.Context, st *lab.State, _ *clientv3.Client, j *orchestrator.Job) error {
		now, err := lab.Load(st.Dir)
		if err != nil {
			return err
		}
		src, ok1 := now.Shard("3.moray")
		dst, ok2 := now.Shard("1.moray")
		if !ok1 || !ok2 {
			return fmt.Errorf("the lab has no 1.moray or 3.moray")
		}
		from, err := postgres.Connect(ctx, src.Peers[0].DSN())
		if err != nil {
			return err
		}
		defer from.Close(ctx)
		to, err := postgres.Connect(ctx, dst.Peers[0].DSN())
		if err != nil {
			return err
		}
		defer to.Close(ctx)
		c.step("copy: a plain COPY pipe of each of 3.moray's buckets (%s) into a new table on 1.moray", strings.Join(j.Buckets, ", "))
		for _, b := range j.Buckets {
			n, took, err := perf.CopyTable(ctx, from, to, b)
			if err != nil {
				return err
			}
			plainRows += n
			plain += took
		}
		c.step("verify: the checksums of the moved rows on 3.moray, against counting them")
		verify, err = perf.MeasureVerify(ctx, from, j.Buckets, j.AllRanges())
		return err
	}
	r, err := runScenario(ctx, c.g, sc)
	if err != nil {
		return nil, err
	}
	rows, secs := movedRows(r.Job), phaseSeconds(r.Job, "copy")
	// The plain copy's rows are the job's and what the load wrote to the
	// moved vnodes since.
	if rows == 0 || secs <= 0 || plainRows < rows*9/10 {
		return nil, fmt.Errorf("the job copied %d rows in %.2f s; the plain copy %d rows", rows, secs, plainRows)
	}
	res := perf.Faster("copy", "logical copy rows/s", "COPY TO STDOUT | COPY FROM STDIN", "rows/s",
		float64(rows)/secs, float64(plainRows)/plain.Seconds(), copyGoal)
	res.Detail = fmt.Sprintf("%d / %d rows in %.2f / %.2f s; load %.0f ops/s during the job", rows, plainRows, secs, plain.Seconds(), c.rate)
	return []perf.Result{res, verify.Result(phaseSeconds(r.Job, "verify"))}, nil
}

// compareAddPeers splits 1.moray with the physical strategy in triple-DC
// mode (three new peers, each made by a host agent with pg_basebackup,
// started and caught up), and before it, times three plain pg_basebackups
// of the same origin one after another.
func compareAddPeers(ctx context.Context, c compareRun) ([]perf.Result, error) {
	bin, err := postgres.BinDir()
	if err != nil {
		return nil, err
	}
	const peers = 3
	var plain time.Duration
	var size int64
	sc := scenario{Strategy: "physical", Rows: c.rows, Peers: 1, Rate: c.rate, Progress: c.progress, CleanupPace: orchestrator.PaceFixed}
	sc.BeforeLoad = func(ctx context.Context, st *lab.State, _ *clientv3.Client) error {
		sh, ok := st.Shard("1.moray")
		if !ok {
			return fmt.Errorf("the lab has no 1.moray")
		}
		c.step("add-peers: %d plain pg_basebackups of 1.moray, one after another", peers)
		for range peers {
			took, n, err := perf.BaseBackup(ctx, bin, "127.0.0.1", sh.Peers[0].Port, "postgres", os.TempDir())
			if err != nil {
				return err
			}
			plain += took
			size = n
		}
		return nil
	}
	r, err := runScenario(ctx, c.g, sc)
	if err != nil {
		return nil, err
	}
	secs := phaseSeconds(r.Job, "add-peers")
	if secs <= 0 {
		return nil, fmt.Errorf("the job recorded no add-peers phase")
	}
	res := perf.Quicker("add-peers", "3 new peers, s", "3 × pg_basebackup -X stream", "s", secs, plain.Seconds(), addPeersGoal)
	res.Detail = fmt.Sprintf("origin %.0f MB; the job's peers started and caught up; load %.0f ops/s during the job", float64(size)/(1<<20), c.rate)
	return []perf.Result{res}, nil
}

// compareCatchUp builds and drains a backlog on a lab of the ring's size,
// once per size: the subscription's cost may grow with the vnodes.
func compareCatchUp(ctx context.Context, c compareRun) ([]perf.Result, error) {
	var out []perf.Result
	for _, vnodes := range []int{1000, 1_000_000} {
		c.step("catch-up: %d vnodes, a backlog of %d writes on 1.moray", vnodes, c.changes)
		st, down, err := compareLab(ctx, c, 2, vnodes)
		if err != nil {
			return nil, err
		}
		r, err := catchUpOn(ctx, c, st)
		down()
		if err != nil {
			return nil, err
		}
		out = append(out, r.Result(vnodes))
	}
	return out, nil
}

func catchUpOn(ctx context.Context, c compareRun, st *lab.State) (perf.CatchUpResult, error) {
	const bucket = "perf_catchup"
	if err := createBucket(ctx, st.Routers[0], bucket, "{}"); err != nil {
		return perf.CatchUpResult{}, err
	}
	rg, err := labRing(ctx, st)
	if err != nil {
		return perf.CatchUpResult{}, err
	}
	origin, _ := st.Shard("1.moray")
	dest, _ := st.Shard("2.moray")
	return perf.CatchUp(ctx, perf.CatchUpTarget{Origin: origin.Peers[0].DSN(), Dest: dest.Peers[0].DSN(), OriginPnode: "1.moray",
		Ring: rg, Bucket: bucket, Changes: c.changes, Concurrency: c.concurrency})
}

// compareRing flips half of 1.moray's vnodes onto a new pnode and back,
// --flips times, on a lab of 1,000 and one of 1,000,000 vnodes (each with
// two routers), as deltas and then as whole rings.
func compareRing(ctx context.Context, c compareRun) ([]perf.Result, error) {
	var sides []perf.RingSide
	for _, vnodes := range []int{1000, 1_000_000} {
		c.step("ring: a lab of %d vnodes with two routers", vnodes)
		st, down, err := compareLabRouters(ctx, c, 2, vnodes, 2)
		if err != nil {
			return nil, err
		}
		defer down()
		cli, err := etcd.Connect(ctx, st.EtcdURL)
		if err != nil {
			return nil, err
		}
		defer cli.Close()
		rg, _, err := etcd.NewRingStore(cli).Current(ctx)
		if err != nil {
			return nil, err
		}
		vs, err := rg.VnodesOf("1.moray")
		if err != nil {
			return nil, err
		}
		// As a split in half moves: the first half in vnode order.
		sides = append(sides, perf.RingSide{Vnodes: vnodes, Etcd: cli, Routers: st.Routers,
			Transfer: ring.Transfer{From: "1.moray", To: "3.moray", Vnodes: ring.FormatVnodeList(vs[:len(vs)/2])}})
	}
	c.step("ring: %d flips at each size, as deltas and as whole rings, interleaved", c.flips)
	return perf.CompareRing(ctx, sides[0], sides[1], c.flips, func(s string) { fmt.Fprintln(c.progress, s) })
}

// compareWriteBlock splits 1.moray in half onto 3.moray and reverts it,
// --splits times over, on a lab of each ring size, while a Writer puts
// objects through both routers at --write-rate.
func compareWriteBlock(ctx context.Context, c compareRun) ([]perf.Result, error) {
	var out []perf.Result
	for _, vnodes := range []int{1000, 1_000_000} {
		c.step("write block: %d vnodes, %d splits of 1.moray onto 3.moray, each reverted, under %.0f writes/s", vnodes, c.splits, c.writeRate)
		rs, err := writeBlockAt(ctx, c, vnodes)
		if err != nil {
			return nil, fmt.Errorf("%d vnodes: %w", vnodes, err)
		}
		out = append(out, rs...)
	}
	return out, nil
}

func writeBlockAt(ctx context.Context, c compareRun, vnodes int) ([]perf.Result, error) {
	root, err := os.MkdirTemp("", "reshard-compare-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(root)
	if err := os.Chmod(root, 0o755); err != nil {
		return nil, err
	}
	dir := filepath.Join(root, "lab")
	st, err := lab.Up(ctx, lab.Config{Dir: dir, Shards: 2, Peers: 1, Routers: 2, Vnodes: vnodes, Progress: io.Discard})
	if err != nil {
		return nil, err
	}
	defer lab.Down(dir)
	if _, err := lab.AddShard(ctx, dir, "3.moray", 1, io.Discard); err != nil {
		return nil, err
	}
	const bucket = "perf_block"
	if err := createBucket(ctx, st.Routers[0], bucket, "{}"); err != nil {
		return nil, err
	}
	g := *c.g
	g.etcd = st.EtcdURL
	o, done, err := connectOrchestrator(ctx, &g, orchestratorSettings{})
	if err != nil {
		return nil, err
	}
	defer done()
	rg, err := labRing(ctx, st)
	if err != nil {
		return nil, err
	}
	w := &perf.Writer{Routers: st.Routers, Bucket: bucket, Ring: rg, Rate: c.writeRate, Concurrency: c.concurrency, Keys: 5000}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	wrote := make(chan struct{})
	started := time.Now()
	go func() { w.Run(wctx); close(wrote) }()
	time.Sleep(2 * time.Second)

	var blocks, reverts []float64
	var cutovers []perf.Cutover
	window := func(name string, from time.Time, blockMS float64, steps map[string]float64, moving []uint32) perf.Cutover {
		set := make(map[uint32]bool, len(moving))
		for _, v := range moving {
			set[v] = true
		}
		d := time.Duration((blockMS + steps["ring"] + steps["routers"]) * float64(time.Millisecond))
		return perf.Cutover{Name: name, From: from, To: from.Add(d), Moving: func(v uint32) bool { return set[v] }}
	}
	for i := range c.splits {
		req := orchestrator.Request{From: "1.moray", To: []string{"3.moray"}, SplitHalf: true, Strategy: orchestrator.Logical,
			DCMode: orchestrator.SingleDC, Servers: 1, RateLimit: 50000, Complete: orchestrator.CompleteManual, CleanupPace: orchestrator.PaceFixed}
		j, err := o.Start(ctx, req)
		if err != nil {
			return nil, err
		}
		if err := o.Run(ctx, j.ID); err != nil {
			return nil, fmt.Errorf("split %d, job %s: %w", i+1, j.ID, err)
		}
		if err := o.Revert(ctx, j.ID); err != nil {
			return nil, fmt.Errorf("revert %d, job %s: %w", i+1, j.ID, err)
		}
		if j, err = o.Get(ctx, j.ID); err != nil {
			return nil, err
		}
		moving, err := ring.ParseVnodeList(j.Moves[0].Vnodes, vnodes)
		if err != nil {
			return nil, err
		}
		blocks = append(blocks, j.WriteBlockMS)
		cutovers = append(cutovers, window(fmt.Sprintf("split %d", i+1), j.FrozenAt, j.WriteBlockMS, j.CutoverMS, moving))
		var back float64
		if j.Revert != nil {
			back = j.Revert.WriteBlockMS
			reverts = append(reverts, back)
			cutovers = append(cutovers, window(fmt.Sprintf("revert %d", i+1), j.Revert.FrozenAt, back, j.Revert.CutoverMS, moving))
		}
		fmt.Fprintf(c.progress, "split %d of %d: write block %.0f ms, the revert's %.0f ms\n", i+1, c.splits, j.WriteBlockMS, back)
	}
	time.Sleep(time.Second)
	stop()
	<-wrote
	writes := w.Writes()
	lat := perf.Latency(writes, cutovers)
	for _, s := range lat.Slowest {
		fmt.Fprintln(c.progress, "slow write:", s)
	}
	// What the routers logged of them: each attempt and why it failed.
	logs, _ := filepath.Glob(filepath.Join(dir, "logs", "router*.log"))
	for _, f := range logs {
		b, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "slow request") {
				fmt.Fprintf(c.progress, "%s: %s\n", filepath.Base(f), line)
			}
		}
	}
	if lat.Failed > 0 {
		return nil, fmt.Errorf("%d of %d writes failed", lat.Failed, len(writes))
	}
	return perf.BlockResults(vnodes, blocks, reverts, lat, float64(len(writes))/time.Since(started).Seconds()), nil
}

// growthGoal: the whole split's rows/s at a size is within 10 % of linear
// from the smallest size, that is at least 1/1.1 of its rows/s.
const growthGoal = 1 / 1.1

// compareGrowth runs the demo's logical split (under the light load) once
// per row count, and sets each one's rows per second of job time against
// the smallest's. The jobs of bench compare clean up at the fixed pace:
// the adaptive one follows the foreground, which a job's time should not.
func compareGrowth(ctx context.Context, c compareRun) ([]perf.Result, error) {
	type run struct {
		rows    int
		seconds float64
		shares  string
	}
	var runs []run
	for _, rows := range c.growthRows {
		c.step("growth: the split of 1.moray with %d objects filled", rows)
		r, err := runScenario(ctx, c.g, scenario{Strategy: "logical", Rows: rows, Peers: 1, Rate: c.rate, Progress: c.progress, CleanupPace: orchestrator.PaceFixed})
		if err != nil {
			return nil, fmt.Errorf("%d rows: %w", rows, err)
		}
		var total float64
		for _, p := range r.Job.Phases {
			total += p.Seconds
		}
		var shares []string
		for _, p := range r.Job.Phases {
			if total > 0 && p.Seconds/total >= 0.02 {
				shares = append(shares, fmt.Sprintf("%s %.0f%%", p.Name, 100*p.Seconds/total))
			}
		}
		runs = append(runs, run{rows, total, strings.Join(shares, ", ")})
	}
	first := runs[0]
	var out []perf.Result
	for _, r := range runs {
		res := perf.Faster("growth", fmt.Sprintf("%s rows: rows/s of job time", perf.HumanCount(r.rows)), perf.HumanCount(first.rows)+" rows' rows/s", "rows/s",
			float64(r.rows)/r.seconds, float64(first.rows)/first.seconds, growthGoal)
		if r.rows == first.rows {
			res.Goal, res.Met = 0, true
		}
		res.Detail = fmt.Sprintf("%.1f s: %s", r.seconds, r.shares)
		out = append(out, res)
	}
	return out, nil
}

// routerPID is the process of a lab's router i (0 if unknown).
func routerPID(st *lab.State, i int) int {
	b, err := os.ReadFile(lab.RouterPIDFile(st.Dir, i))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// labRing reads a lab's current ring.
func labRing(ctx context.Context, st *lab.State) (*ring.Ring, error) {
	cli, err := etcd.Connect(ctx, st.EtcdURL)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	rg, _, err := etcd.NewRingStore(cli).Current(ctx)
	return rg, err
}
