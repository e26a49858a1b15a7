package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/lab"
	"github.com/reshard/reshard/orchestrator"
	"github.com/reshard/reshard/perf"
	"github.com/reshard/reshard/postgres"
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
	{"copy", "a logical split's copy against a plain COPY pipe of the same rows between the same servers", compareCopy},
	{"add-peers", "a physical split's add-peers against plain pg_basebackups of the same origin", compareAddPeers},
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
	var only, markdown string
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
				c.rounds, c.per, c.rows = 1, time.Second, 20_000
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
func compareLab(ctx context.Context, c compareRun, shards int) (st *lab.State, down func(), err error) {
	root, err := os.MkdirTemp("", "reshard-compare-")
	if err != nil {
		return nil, nil, err
	}
	// The lab's PostgreSQL user must be able to enter it.
	if err := os.Chmod(root, 0o755); err != nil {
		return nil, nil, err
	}
	dir := filepath.Join(root, "lab")
	st, err = lab.Up(ctx, lab.Config{Dir: dir, Shards: shards, Peers: 1, Routers: 1, Vnodes: lab.DefaultVnodes, Progress: io.Discard})
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
	st, down, err := compareLab(ctx, c, 2)
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
	t := perf.RouterTarget{HTTP: st.Routers[0], Moray: st.Moray[0], Ring: rg, Shards: map[string]string{}, PoolSize: 16}
	for _, sh := range st.Shards {
		t.Shards[sh.Name] = sh.Peers[0].DSN()
	}
	c.step("router: %d rounds of %v per side, %d requests in flight", c.rounds, c.per, c.concurrency)
	return perf.CompareRouter(ctx, t, c.request())
}

func compareMoray(ctx context.Context, c compareRun) ([]perf.Result, error) {
	client := perf.MorayClient{Dir: c.morayClient}
	skip := func(why string) []perf.Result {
		var out []perf.Result
		for _, op := range []string{"putObject", "getObject", "findObjects"} {
			out = append(out, perf.Skip("moray", op, "the real Moray", why, 4))
		}
		return out
	}
	if why := client.Usable(); why != "" {
		return skip(why), nil
	}
	// One shard: the real Moray and the router both use its database.
	st, down, err := compareLab(ctx, c, 1)
	if err != nil {
		return nil, err
	}
	defer down()
	work, err := os.MkdirTemp("", "reshard-compare-moray-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	c.step("moray: the real Moray (%s) on 1.moray's database", filepath.Join(c.reference, "moray.sh"))
	theirs, stop, err := perf.StartMoray(ctx, c.reference, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/moray", st.Shards[0].Peers[0].Port), work, 16)
	if err != nil {
		return skip(err.Error()), nil
	}
	defer func() {
		if err := stop(); err != nil {
			fmt.Fprintln(c.progress, err)
		}
	}()
	c.step("moray: %d rounds of %v per side, %d requests in flight, the npm moray client", c.rounds, c.per, c.concurrency)
	return perf.CompareMoray(ctx, client, st.Moray[0], theirs, c.request())
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
	sc := scenario{Strategy: "logical", Rows: c.rows, Peers: 1, Rate: c.rate, Progress: c.progress}
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
		return nil
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
	return []perf.Result{res}, nil
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
	sc := scenario{Strategy: "physical", Rows: c.rows, Peers: 1, Rate: c.rate, Progress: c.progress}
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
