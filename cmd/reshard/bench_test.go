package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"testing"

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
				l := labUp(b, "--shards", "2", "--peers", "1", "--routers", "1")
				resp, body := httpDo(b, "PUT", l.Routers[0]+"/buckets/manta", `{}`)
				if resp.StatusCode != 200 {
					b.Fatalf("create bucket: %s", body)
				}
				origin := l.primary("1.moray")
				// Fill 1.moray's even vnodes straight through SQL (the fence
				// is off for the fill only).
				query[int](b, origin, `alter table manta disable trigger reshard_fence`)
				query[int](b, origin, fmt.Sprintf(`insert into manta (_key, _value, _etag, _mtime, _vnode)
					select '/bench/' || g, jsonb_build_object('owner', md5(g::text), 'size', g), md5(g::text), 0, (g %% 512) * 2
					from generate_series(1, %d) g`, rows))
				query[int](b, origin, `alter table manta enable trigger reshard_fence`)
				query[int](b, origin, `vacuum analyze manta`)
				extra := []string{"--strategy", strategy}
				if strategy == "logical" {
					l.addShard(b, "3.moray", "1")
				} else {
					extra = append(extra, "--lab", l.Dir)
				}
				dbSize := query[int64](b, origin, `select pg_database_size('moray')`)
				b.ResetTimer()
				out, stderr, ok := run(b, l.env(), append([]string{"start", "--from", "1.moray", "--to", "3.moray", "--split-half",
					"--servers", "1", "--rate-limit", "1000000", "--json"}, extra...)...)
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
