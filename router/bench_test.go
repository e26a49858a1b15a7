package router_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/fast"
	"github.com/reshard/reshard/shard"
)

// BenchmarkRouterVsDirect measures the same puts and gets through the
// router's HTTP API, through its Moray (Fast RPC) port, and with pgx
// straight to the shard, at the same concurrency, in one run. Run with:
//
//	go test -run '^$' -bench RouterVsDirect -benchtime 5s ./router/
func BenchmarkRouterVsDirect(b *testing.B) {
	e := setup(b, "")
	ctx := context.Background()
	e.do(b, "PUT", "/buckets/bench", `{}`)
	rg, _, err := etcd.NewRingStore(e.cli).Current(ctx)
	if err != nil {
		b.Fatal(err)
	}
	pools := map[string]*pgxpool.Pool{}
	for _, sh := range e.st.Shards {
		p, err := pgxpool.New(ctx, sh.Peers[0].DSN())
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		pools[sh.Name] = p
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	value := []byte(`{"size": 1024, "owner": "5884dd74-949a-40ec-8d13-dd3151897343"}`)
	const concurrency = 16
	// One Moray connection per client, as HTTP keeps one per client.
	addr := e.serveMoray(b)
	morays := make([]*fast.Client, concurrency)
	for i := range morays {
		morays[i] = dialFast(b, addr)
	}
	mvalue := json.RawMessage(value)
	noOpts := map[string]any{}
	type op func(i int64) error
	cases := []struct {
		name string
		run  op
	}{
		{"put/router", func(i int64) error {
			req, _ := http.NewRequest("PUT", fmt.Sprintf("%s/buckets/bench/objects/k%d", e.srv.URL, i%5000), bytes.NewReader(value))
			return send(client, req, 200)
		}},
		{"put/moray", func(i int64) error {
			_, err := morays[i%concurrency].Call(ctx, "putObject", "bench", fmt.Sprintf("k%d", i%5000), mvalue, noOpts)
			return err
		}},
		{"put/direct", func(i int64) error {
			key := fmt.Sprintf("k%d", i%5000)
			loc := rg.LocateString(key)
			_, err := shard.PutObject(ctx, pools[loc.Pnode], "bench", shard.BucketOptions{}, shard.Object{Key: key, Value: value, Vnode: int32(loc.Vnode)}, "")
			return err
		}},
		{"get/router", func(i int64) error {
			req, _ := http.NewRequest("GET", fmt.Sprintf("%s/buckets/bench/objects/k%d", e.srv.URL, i%5000), nil)
			return send(client, req, 200)
		}},
		{"get/moray", func(i int64) error {
			_, err := morays[i%concurrency].Call(ctx, "getObject", "bench", fmt.Sprintf("k%d", i%5000), noOpts)
			return err
		}},
		{"get/direct", func(i int64) error {
			key := fmt.Sprintf("k%d", i%5000)
			loc := rg.LocateString(key)
			_, err := shard.GetObject(ctx, pools[loc.Pnode], "bench", shard.BucketOptions{}, key, int32(loc.Vnode))
			return err
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var n atomic.Int64
			lat := make([][]time.Duration, concurrency)
			var wg sync.WaitGroup
			b.ResetTimer()
			for w := 0; w < concurrency; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := n.Add(1)
						if i > int64(b.N) {
							return
						}
						t0 := time.Now()
						if err := c.run(i); err != nil {
							b.Error(err)
							return
						}
						lat[w] = append(lat[w], time.Since(t0))
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			var all []time.Duration
			for _, l := range lat {
				all = append(all, l...)
			}
			sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
			if len(all) > 0 {
				b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}

func send(c *http.Client, req *http.Request, want int) error {
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: HTTP %d", req.Method, req.URL.Path, resp.StatusCode)
	}
	return nil
}

// BenchmarkRingSize measures gets through a router holding a 1,000-vnode
// ring and one holding a 1,000,000-vnode ring, side by side: rounds
// alternate between the two, so drift on a shared machine falls on both.
// Run with:
//
//	go test -run '^$' -bench RingSize -benchtime 20000x ./router/
func BenchmarkRingSize(b *testing.B) {
	type side struct {
		name string
		e    *env
		lat  []time.Duration
	}
	sides := []*side{{name: "1k", e: setupRing(b, "", 1000)}, {name: "1M", e: setupRing(b, "", 1_000_000)}}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	const keys, concurrency = 2000, 16
	for _, s := range sides {
		s.e.do(b, "PUT", "/buckets/bench", `{}`)
		for i := 0; i < keys; i++ {
			req, _ := http.NewRequest("PUT", fmt.Sprintf("%s/buckets/bench/objects/k%d", s.e.srv.URL, i), strings.NewReader(`{"size":1}`))
			if err := send(client, req, 200); err != nil {
				b.Fatal(err)
			}
		}
	}
	round := func(s *side, n int) {
		var next atomic.Int64
		var mu sync.Mutex
		var wg sync.WaitGroup
		for w := 0; w < concurrency; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Duration
				for {
					i := next.Add(1)
					if i > int64(n) {
						break
					}
					req, _ := http.NewRequest("GET", fmt.Sprintf("%s/buckets/bench/objects/k%d", s.e.srv.URL, i%keys), nil)
					t0 := time.Now()
					if err := send(client, req, 200); err != nil {
						b.Error(err)
						return
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				s.lat = append(s.lat, mine...)
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	b.ResetTimer()
	const per = 1000
	for done := 0; done < b.N; done += per {
		for i := range sides {
			// Alternate which side goes first.
			s := sides[(i+done/per)%2]
			round(s, per)
		}
	}
	b.StopTimer()
	p := func(l []time.Duration, q float64) float64 {
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
		return float64(l[int(float64(len(l)-1)*q)].Microseconds())
	}
	for _, s := range sides {
		b.ReportMetric(p(s.lat, 0.5), s.name+"-p50-µs")
		b.ReportMetric(p(s.lat, 0.99), s.name+"-p99-µs")
	}
	b.ReportMetric(p(sides[1].lat, 0.99)/p(sides[0].lat, 0.99), "p99-1M/1k")
}

// BenchmarkTriggerPut measures putObject through the Moray port into a
// bucket with libmanta's post trigger (recordDeleteLog), without the
// previous-metadata header (the trigger runs and writes nothing) and with
// it (it logs the old object in manta_delete_log), beside the same put
// into a bucket without triggers, in one run, and logs the ratios. Run:
//
//	go test -run '^$' -bench TriggerPut -benchtime 5s ./router/
func BenchmarkTriggerPut(b *testing.B) {
	e := setup(b, "")
	ctx := context.Background()
	src, err := os.ReadFile("../trigger/testdata/recordDeleteLog.js")
	if err != nil {
		b.Fatal(err)
	}
	addr := e.serveMoray(b)
	const concurrency = 16
	morays := make([]*fast.Client, concurrency)
	for i := range morays {
		morays[i] = dialFast(b, addr)
	}
	index := map[string]any{"objectId": map[string]any{"type": "string"}}
	for name, cfg := range map[string]map[string]any{
		"manta_delete_log": {"index": index},
		"plainbench":       {"index": index},
		"gcbench":          {"index": index, "post": []string{strings.TrimSpace(string(src))}},
	} {
		if _, err := morays[0].Call(ctx, "createBucket", name, cfg, map[string]any{}); err != nil {
			b.Fatal(err)
		}
	}
	value := func(i int64) json.RawMessage {
		return json.RawMessage(fmt.Sprintf(`{"objectId":"%d","owner":"5884dd74-949a-40ec-8d13-dd3151897343","size":1024}`, i))
	}
	put := func(bucket string, opts func(i int64) map[string]any) func(i int64) error {
		return func(i int64) error {
			_, err := morays[i%concurrency].Call(ctx, "putObject", bucket, fmt.Sprintf("k%d", i%5000), value(i), opts(i))
			return err
		}
	}
	none := func(int64) map[string]any { return map[string]any{} }
	withPrev := func(i int64) map[string]any {
		// A previous object of its own per put, so that no two log keys
		// (/OBJECTID/MS) collide.
		return map[string]any{"headers": map[string]any{"x-muskie-prev-metadata": map[string]any{"objectId": fmt.Sprintf("prev-%d", i), "key": "k"}}}
	}
	opsPerSec := map[string]float64{}
	for _, c := range []struct {
		name string
		run  func(i int64) error
	}{
		{"plain", put("plainbench", none)},
		{"trigger-no-header", put("gcbench", none)},
		{"trigger-logging", put("gcbench", withPrev)},
	} {
		b.Run(c.name, func(b *testing.B) {
			var n atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for w := 0; w < concurrency; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := n.Add(1); i <= int64(b.N); i = n.Add(1) {
						if err := c.run(i); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			opsPerSec[c.name] = float64(b.N) / b.Elapsed().Seconds()
			b.ReportMetric(opsPerSec[c.name], "ops/s")
		})
	}
	if p := opsPerSec["plain"]; p > 0 {
		b.Logf("throughput relative to a plain put: trigger without header %.2f, trigger logging %.2f",
			opsPerSec["trigger-no-header"]/p, opsPerSec["trigger-logging"]/p)
	}
}
