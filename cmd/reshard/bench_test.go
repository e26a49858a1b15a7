package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reshard/reshard/internal/quantile"
	"github.com/reshard/reshard/orchestrator"
)

// BenchmarkStrategies splits the same data with each strategy, in one run:
// a lab of two shards, ROWS rows on 1.moray (default 1,000,000), half moving.
//
//	go test -run '^$' -bench Strategies -benchtime 1x -timeout 30m ./cmd/reshard/
func BenchmarkStrategies(b *testing.B) {
	rows := 1_000_000
	if s := os.Getenv("RESHARD_BENCH_ROWS"); s != "" {
		rows, _ = strconv.Atoi(s)
	}
	type result struct {
		strategy                     string
		total, writeBlock            float64
		copied, originLeft, destLeft int64
		originRows, destRows, phases string
	}
	var results []result
	for _, strategy := range []string{"logical", "physical"} {
		b.Run(strategy, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				l, origin := benchLab(b, rows, "--peers", "1")
				extra := []string{"--strategy", strategy}
				if strategy == "logical" {
					l.addShard(b, "3.moray", "1")
				} else {
					extra = append(extra, "--lab", l.Dir)
				}
				dbSize := query[int64](b, origin, `select pg_database_size('moray')`)
				b.ResetTimer()
				out, stderr, ok := run(b, l.env(), append([]string{"start", "--from", "1.moray", "--to", "3.moray", "--split-half",
					"--servers", "1", "--rate-limit", "1000000", "--cleanup-pace", "fixed", "--json"}, extra...)...)
				b.StopTimer()
				var j orchestrator.Job
				if !ok || json.Unmarshal([]byte(out), &j) != nil || j.State != orchestrator.Done {
					b.Fatalf("%s: %s %s", strategy, out, stderr)
				}
				dst := pnodePrimary(b, l, "3.moray")
				r := result{strategy: strategy, writeBlock: j.WriteBlockMS}
				for _, p := range j.Phases {
					r.total += p.Seconds
					r.phases += fmt.Sprintf("%s %.1fs, ", p.Name, p.Seconds)
				}
				if strategy == "logical" {
					r.copied = j.Moves[0].Bytes
				} else {
					r.copied = dbSize
				}
				r.originLeft = query[int64](b, origin, `select pg_table_size('manta')`)
				r.destLeft = query[int64](b, dst, `select pg_table_size('manta')`)
				r.originRows = fmt.Sprint(query[int64](b, origin, `select count(*) from manta`))
				r.destRows = fmt.Sprint(query[int64](b, dst, `select count(*) from manta`))
				b.ReportMetric(r.total, "job-s")
				b.ReportMetric(r.writeBlock, "write-block-ms")
				b.ReportMetric(float64(r.copied)/(1<<20), "copied-MiB")
				results = append(results, r)
			}
		})
	}
	b.Logf("%d rows on 1.moray, half moving to 3.moray", rows)
	b.Logf("| strategy | job total | write block | bytes copied | origin table after cleanup | new shard table after cleanup |")
	b.Logf("|---|---|---|---|---|---|")
	for _, r := range results {
		b.Logf("| %s | %.1f s | %.0f ms | %s | %s (%s rows) | %s (%s rows) |", r.strategy, r.total, r.writeBlock,
			humanBytes(r.copied), humanBytes(r.originLeft), r.originRows, humanBytes(r.destLeft), r.destRows)
	}
	for _, r := range results {
		b.Logf("%s phases: %s", r.strategy, r.phases)
	}
}

// BenchmarkCleanupForeground puts the foreground's p99 during a cleanup
// against the p99 just before it, with the cleanup at today's fixed
// 20,000 rows/s and at the adaptive pace, in one run. A lab of two shards
// whose origin has a sync standby; ROWS rows on 1.moray (default 300,000),
// half of them moving and deleted by the cleanup; clients write and read
// through the router at a steady rate throughout. The goal: the adaptive
// cleanup keeps p99 within +25%.
//
//	go test -run '^$' -bench CleanupForeground -benchtime 1x -timeout 30m ./cmd/reshard/
func BenchmarkCleanupForeground(b *testing.B) {
	rows := 300_000
	if s := os.Getenv("RESHARD_BENCH_ROWS"); s != "" {
		rows, _ = strconv.Atoi(s)
	}
	type result struct {
		pace             string
		before, during   time.Duration
		cleanup          float64
		deleted, samples int
	}
	var results []result
	for _, pace := range []string{orchestrator.PaceFixed, orchestrator.PaceAdaptive} {
		b.Run(pace, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				l, _ := benchLab(b, rows, "--peers", "2", "--spare-hosts", "0")
				l.addShard(b, "3.moray", "1")
				out, stderr, ok := run(b, l.env(), "start", "--from", "1.moray", "--to", "3.moray", "--split-half", "--servers", "1",
					"--complete", "manual", "--cleanup-pace", pace, "--json")
				var j orchestrator.Job
				if !ok || json.Unmarshal([]byte(out), &j) != nil || j.State != orchestrator.Flipped {
					b.Fatalf("start: %s %s", out, stderr)
				}
				fg := startForeground(l.Routers[0], 200)
				time.Sleep(6 * time.Second)
				b.ResetTimer()
				out, stderr, ok = run(b, l.env(), "complete", j.ID, "--json")
				b.StopTimer()
				samples := fg.stop()
				if !ok || json.Unmarshal([]byte(out), &j) != nil || j.State != orchestrator.Done {
					b.Fatalf("complete: %s %s", out, stderr)
				}
				for _, line := range strings.Split(stderr, "\n") {
					if strings.Contains(line, "cleanup pace") {
						b.Log(line)
					}
				}
				cl := j.Phases[slices.IndexFunc(j.Phases, func(p orchestrator.Phase) bool { return p.Name == "cleanup" })]
				before := latencies(samples, cl.Started.Add(-5*time.Second), *cl.Started)
				during := latencies(samples, *cl.Started, *cl.Ended)
				if len(before) < 100 || len(during) < 100 || fg.errors() > 0 {
					b.Fatalf("foreground: %d samples before, %d during, %d errors", len(before), len(during), fg.errors())
				}
				results = append(results, result{pace: pace, before: quantile.Of(before, 0.99), during: quantile.Of(during, 0.99),
					cleanup: cl.Seconds, deleted: int(cl.Progress.Done), samples: len(during)})
				r := results[len(results)-1]
				b.ReportMetric(float64(r.during)/float64(r.before), "p99-during/before")
				b.ReportMetric(r.cleanup, "cleanup-s")
			}
		})
	}
	b.Logf("\n%-9s %12s %12s %8s %10s %8s", "pace", "p99 before", "p99 during", "ratio", "cleanup", "rows")
	for _, r := range results {
		b.Logf("%-9s %12s %12s %7.2fx %9.1fs %8d", r.pace, r.before.Round(10*time.Microsecond), r.during.Round(10*time.Microsecond),
			float64(r.during)/float64(r.before), r.cleanup, r.deleted)
	}
}

// benchLab is a lab of two shards and one router, with rows rows in the
// manta bucket on 1.moray's even vnodes, written straight through SQL (the
// fence is off for the fill only). It returns the lab and 1.moray's DSN.
func benchLab(b *testing.B, rows int, args ...string) (*labInfo, string) {
	l := labUp(b, append([]string{"--shards", "2", "--routers", "1"}, args...)...)
	if resp, body := httpDo(b, "PUT", l.Routers[0]+"/buckets/manta", `{}`); resp.StatusCode != 200 {
		b.Fatalf("create bucket: %s", body)
	}
	origin := l.primary("1.moray")
	query[int](b, origin, `alter table manta disable trigger reshard_fence`)
	query[int](b, origin, fmt.Sprintf(`insert into manta (_key, _value, _etag, _mtime, _vnode)
		select '/bench/' || g, jsonb_build_object('owner', md5(g::text), 'size', g), left(md5(g::text), 8), 0, (g %% 512) * 2
		from generate_series(1, %d) g`, rows))
	query[int](b, origin, `alter table manta enable trigger reshard_fence`)
	query[int](b, origin, `vacuum analyze manta`)
	return l, origin
}

// foreground is a steady client load through one router: alternating
// writes and reads of its own keys, each request's start and latency kept.
type foreground struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	samples []latencySample
	errs    atomic.Int64
}

type latencySample struct {
	at  time.Time
	lat time.Duration
}

func startForeground(router string, perSecond int) *foreground {
	ctx, cancel := context.WithCancel(context.Background())
	f := &foreground{cancel: cancel}
	client := &http.Client{Timeout: 10 * time.Second}
	for w := range 4 {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			tick := time.NewTicker(time.Duration(4 * float64(time.Second) / float64(perSecond)))
			defer tick.Stop()
			for n := 0; ctx.Err() == nil; n++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				key := url.PathEscape(fmt.Sprintf("/fg/%d/%d", w, n%500))
				method, body := "PUT", fmt.Sprintf(`{"n": %d}`, n)
				if n%2 == 1 {
					method, body = "GET", ""
				}
				req, _ := http.NewRequestWithContext(ctx, method, router+"/buckets/manta/objects/"+key, strings.NewReader(body))
				start := time.Now()
				resp, err := client.Do(req)
				lat := time.Since(start)
				if err != nil {
					if ctx.Err() == nil {
						f.errs.Add(1)
					}
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode >= 500 {
					f.errs.Add(1)
				}
				f.mu.Lock()
				f.samples = append(f.samples, latencySample{start, lat})
				f.mu.Unlock()
			}
		}()
	}
	return f
}

func (f *foreground) stop() []latencySample {
	f.cancel()
	f.wg.Wait()
	return f.samples
}

func (f *foreground) errors() int64 { return f.errs.Load() }

// latencies are the samples that started in [from, to).
func latencies(s []latencySample, from, to time.Time) []time.Duration {
	var out []time.Duration
	for _, x := range s {
		if !x.at.Before(from) && x.at.Before(to) {
			out = append(out, x.lat)
		}
	}
	return out
}
