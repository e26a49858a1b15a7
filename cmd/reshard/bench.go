package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/lab"
	"github.com/reshard/reshard/orchestrator"
	"github.com/reshard/reshard/perf"
	"github.com/reshard/reshard/postgres"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func newBenchCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure reshard on this machine",
	}
	cmd.AddCommand(newBenchScaleCmd(g), newBenchAdoptCmd(g), newBenchCompareCmd(g))
	return cmd
}

// scaleCase is one row of the scale table.
type scaleCase struct {
	Vnodes int `json:"vnodes"`
	Rows   int `json:"rows"`
}

// scaleRow is what one case measured.
type scaleRow struct {
	scaleCase
	CopyRowsPerSec   float64            `json:"copy_rows_per_s"`
	CopyMBPerSec     float64            `json:"copy_mb_per_s"`
	CatchupPerSec    float64            `json:"catchup_changes_per_s"` // peak decoded transactions/s on the origin's slots
	CatchupSeconds   float64            `json:"catchup_s"`             // the catch-up phase: copy done to lag under its threshold
	LoadWritesPerSec float64            `json:"load_writes_per_s"`
	WriteBlockMS     float64            `json:"write_block_ms"`
	FlipMS           float64            `json:"flip_ms"` // after the write block: the ring flip and the routers loading it
	CutoverMS        map[string]float64 `json:"cutover_ms"`
	VerifySeconds    float64            `json:"verify_s"`
	CleanupSeconds   float64            `json:"cleanup_s"`
	TotalSeconds     float64            `json:"total_s"`
	RouterPeakMB     float64            `json:"router_peak_mb"`
	RingBytes        int                `json:"ring_bytes"`
	RingReloadMS     float64            `json:"ring_reload_ms"`
	PutP99MS         float64            `json:"put_p99_ms"`
	GetP99MS         float64            `json:"get_p99_ms"`
	ClientErrors     int64              `json:"client_errors"`
	Missing          int                `json:"missing"`
	Stale            int                `json:"stale"`
	Misplaced        int                `json:"misplaced"`
}

// scaleReport is `bench scale --json`.
type scaleReport struct {
	Date     string     `json:"date"`
	CPUs     int        `json:"cpus"`
	MemoryGB float64    `json:"memory_gb"`
	Rate     float64    `json:"load_rate"`
	Rows     []scaleRow `json:"rows"`
}

const defaultScaleCases = "1000x1000000,100000x1000000,1000000x1000000,1000000x250000,1000000x2000000"

func parseScaleCases(s string) ([]scaleCase, error) {
	var out []scaleCase
	for _, part := range strings.Split(s, ",") {
		v, r, ok := strings.Cut(strings.TrimSpace(part), "x")
		vn, err1 := strconv.Atoi(v)
		rn, err2 := strconv.Atoi(r)
		if !ok || err1 != nil || err2 != nil || vn < 2 || vn > 10_000_000 || rn < 0 || rn > 50_000_000 {
			return nil, fmt.Errorf("--cases: %q is not VNODESxROWS (vnodes 2 to 10000000, rows 0 to 50000000)", part)
		}
		out = append(out, scaleCase{vn, rn})
	}
	return out, nil
}

func newBenchScaleCmd(g *globals) *cobra.Command {
	var cases string
	var rate float64
	var markdown bool
	cmd := &cobra.Command{
		Use:   "scale [--cases VxR,...] [--json]",
		Short: "Split 1.moray in half under load on growing rings and tables, and tabulate the costs",
		Long: `Runs the demo's split (a lab of 2 shards and 2 routers, a filled bucket,
traffic through both routers, 1.moray split in half onto an empty 3.moray
with the logical strategy, every acknowledged write verified) once per
case, one after another on this machine, and prints one table:

  copy        rows/s and MB/s of the initial copy
  catch-up    the peak rate the origin decoded changes for the job's
              subscription (transactions/s, from pg_stat_replication_slots),
              the catch-up phase's time, and the load's write rate: a
              subscription that keeps up decodes at the origin's write rate
              and its catch-up phase ends at once
  write block freeze to the destination taking writes, as the job measured it
  flip        then the ring flip in etcd and the routers loading it; a
              write to a moved vnode waits (and retries) through both
  verify, cleanup, total   the job's phases
  router MB   the routers' peak resident memory (VmHWM)
  ring        the ring version's stored size in etcd, and how long the
              routers took to load the new version after the flip
  p99         the load's put and get latency over the whole run

Each case is VNODESxROWS. Cases run in the same invocation, so ratios
between rows are meaningful; absolute times depend on the machine.`,
		Example: `  reshard bench scale
  reshard bench scale --cases 1000x250000,1000000x250000 --json
  reshard bench scale --markdown > table.md`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cs, err := parseScaleCases(cases)
			if err != nil {
				return err
			}
			if rate < 1 || rate > 100_000 {
				return fmt.Errorf("--rate must be between 1 and 100000 operations/s, got %v", rate)
			}
			return withSignals(cmd, func(ctx context.Context) error {
				rep := scaleReport{Date: time.Now().UTC().Format("2006-01-02"), CPUs: runtime.NumCPU(), MemoryGB: memoryGB(), Rate: rate}
				for i, c := range cs {
					fmt.Fprintf(cmd.ErrOrStderr(), "\n=== case %d of %d: %d vnodes, %d rows\n", i+1, len(cs), c.Vnodes, c.Rows)
					row, err := runScaleCase(ctx, g, c, rate, cmd.ErrOrStderr())
					if err != nil {
						return fmt.Errorf("case %dx%d: %w", c.Vnodes, c.Rows, err)
					}
					rep.Rows = append(rep.Rows, *row)
				}
				switch {
				case g.json:
					return printJSON(cmd.OutOrStdout(), rep)
				case markdown:
					printScaleMarkdown(cmd.OutOrStdout(), rep)
				default:
					printScaleTable(cmd.OutOrStdout(), rep)
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&cases, "cases", defaultScaleCases, "cases to run, VNODESxROWS, comma-separated")
	cmd.Flags().Float64Var(&rate, "rate", 1000, "the load's operations/s through the routers during each split")
	cmd.Flags().BoolVar(&markdown, "markdown", false, "print the table as Markdown")
	return cmd
}

func runScaleCase(ctx context.Context, g *globals, c scaleCase, rate float64, progress io.Writer) (*scaleRow, error) {
	row := &scaleRow{scaleCase: c}
	var mu sync.Mutex
	var origin *pgx.Conn
	type sample struct {
		t    time.Time
		txns int64
	}
	var samples []sample
	sc := scenario{Strategy: "logical", Vnodes: c.Vnodes, Rows: c.Rows, Peers: 1, Rate: rate, Progress: progress}
	// The origin's decoded transactions, for the catch-up rate.
	sc.Sample = func(ctx context.Context, st *lab.State) {
		if origin == nil {
			sh, ok := st.Shard("1.moray")
			if !ok {
				return
			}
			conn, err := postgres.Connect(ctx, sh.Peers[0].DSN())
			if err != nil {
				return
			}
			origin = conn
		}
		if n, err := postgres.DecodedTransactions(ctx, origin); err == nil {
			mu.Lock()
			samples = append(samples, sample{time.Now(), n})
			mu.Unlock()
		}
	}
	sc.Measure = func(ctx context.Context, st *lab.State, cli *clientv3.Client, j *orchestrator.Job) error {
		for i := range st.RouterPorts {
			b, err := os.ReadFile(lab.RouterPIDFile(st.Dir, i))
			if err != nil {
				continue
			}
			if kb := procStatusKB(strings.TrimSpace(string(b)), "VmHWM"); float64(kb)/1024 > row.RouterPeakMB {
				row.RouterPeakMB = float64(kb) / 1024
			}
		}
		_, rv, err := etcd.NewRingStore(cli).Current(ctx)
		if err != nil {
			return err
		}
		row.RingBytes = rv.Size
		for _, u := range st.Routers {
			if s := perf.ScrapeGauge(ctx, u+"/metrics", "reshard_router_ring_load_seconds"); s*1000 > row.RingReloadMS {
				row.RingReloadMS = s * 1000
			}
		}
		return nil
	}
	r, err := runScenario(ctx, g, sc)
	if origin != nil {
		origin.Close(context.Background())
	}
	if err != nil {
		return nil, err
	}
	j := r.Job
	var moved, bytes int64
	for _, m := range j.Moves {
		moved += m.Rows
		bytes += m.Bytes
	}
	for _, p := range j.Phases {
		row.TotalSeconds += p.Seconds
		switch p.Name {
		case "copy":
			if p.Seconds > 0 {
				row.CopyRowsPerSec = float64(moved) / p.Seconds
				row.CopyMBPerSec = float64(bytes) / (1 << 20) / p.Seconds
			}
		case "catchup":
			row.CatchupSeconds = p.Seconds
		case "verify":
			row.VerifySeconds = p.Seconds
		case "cleanup":
			row.CleanupSeconds = p.Seconds
		}
	}
	// The peak rate over windows of at least a second; a job shorter than
	// that gets its whole span.
	if n := len(samples); n >= 2 && samples[n-1].t.Sub(samples[0].t) < time.Second {
		if dt := samples[n-1].t.Sub(samples[0].t).Seconds(); dt > 0 {
			row.CatchupPerSec = float64(samples[n-1].txns-samples[0].txns) / dt
		}
	}
	for i := range samples {
		for k := i + 1; k < len(samples); k++ {
			if dt := samples[k].t.Sub(samples[i].t).Seconds(); dt >= 1 {
				if rate := float64(samples[k].txns-samples[i].txns) / dt; rate > row.CatchupPerSec {
					row.CatchupPerSec = rate
				}
				break
			}
		}
	}
	row.WriteBlockMS = j.WriteBlockMS
	row.FlipMS = j.CutoverMS["ring"] + j.CutoverMS["routers"]
	row.CutoverMS = j.CutoverMS
	if r.Load.Seconds > 0 {
		row.LoadWritesPerSec = float64(r.Load.AckedWrites) / r.Load.Seconds
	}
	row.PutP99MS = r.Load.Latency["put"].P99
	row.GetP99MS = r.Load.Latency["get"].P99
	row.ClientErrors = r.Load.ClientErrors
	row.Missing, row.Stale, row.Misplaced = r.Report.Missing, r.Report.Stale, r.Report.Misplaced
	return row, nil
}

// procStatusKB reads a "kB" field of /proc/PID/status (0 if unreadable).
func procStatusKB(pid, field string) int64 { return procKB("/proc/"+pid+"/status", field) }

// procKB reads a "FIELD: N kB" line of a /proc file (0 if unreadable).
func procKB(path, field string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

func memoryGB() float64 {
	return float64(procKB("/proc/meminfo", "MemTotal")) / (1 << 20)
}

var scaleHeader = []string{"vnodes", "rows", "copy rows/s", "copy MB/s", "catch-up changes/s", "catch-up s", "load writes/s",
	"write block ms", "flip ms", "verify s", "cleanup s", "total s", "router MB", "ring KB", "ring reload ms", "put p99 ms", "get p99 ms", "errors", "missing/stale/misplaced"}

func scaleCells(r scaleRow) []string {
	return []string{
		strconv.Itoa(r.Vnodes), strconv.Itoa(r.Rows),
		fmt.Sprintf("%.0f", r.CopyRowsPerSec), fmt.Sprintf("%.1f", r.CopyMBPerSec),
		fmt.Sprintf("%.0f", r.CatchupPerSec), fmt.Sprintf("%.2f", r.CatchupSeconds), fmt.Sprintf("%.0f", r.LoadWritesPerSec),
		fmt.Sprintf("%.1f", r.WriteBlockMS), fmt.Sprintf("%.0f", r.FlipMS), fmt.Sprintf("%.2f", r.VerifySeconds), fmt.Sprintf("%.2f", r.CleanupSeconds),
		fmt.Sprintf("%.1f", r.TotalSeconds), fmt.Sprintf("%.0f", r.RouterPeakMB), fmt.Sprintf("%.1f", float64(r.RingBytes)/1024),
		fmt.Sprintf("%.1f", r.RingReloadMS), fmt.Sprintf("%.1f", r.PutP99MS), fmt.Sprintf("%.1f", r.GetP99MS),
		strconv.FormatInt(r.ClientErrors, 10), fmt.Sprintf("%d/%d/%d", r.Missing, r.Stale, r.Misplaced),
	}
}

func printScaleTable(w io.Writer, rep scaleReport) {
	fmt.Fprintf(w, "%s, %d CPUs, %.1f GB memory, load %.0f ops/s\n", rep.Date, rep.CPUs, rep.MemoryGB, rep.Rate)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(scaleHeader, "\t")+"\t")
	for _, r := range rep.Rows {
		fmt.Fprintln(tw, strings.Join(scaleCells(r), "\t")+"\t")
	}
	tw.Flush()
}

func printScaleMarkdown(w io.Writer, rep scaleReport) {
	fmt.Fprintf(w, "Measured %s on %d CPUs and %.1f GB of memory, load %.0f ops/s.\n\n", rep.Date, rep.CPUs, rep.MemoryGB, rep.Rate)
	fmt.Fprintln(w, "| "+strings.Join(scaleHeader, " | ")+" |")
	fmt.Fprintln(w, "|"+strings.Repeat("---|", len(scaleHeader)))
	for _, r := range rep.Rows {
		fmt.Fprintln(w, "| "+strings.Join(scaleCells(r), " | ")+" |")
	}
}
