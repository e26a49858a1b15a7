package perf

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/reshard/reshard/fast"
	"github.com/reshard/reshard/ring"
	"github.com/reshard/reshard/shard"
)

// RouterTarget is a running router and the shards behind it.
type RouterTarget struct {
	HTTP   string            // the router's base URL
	Moray  string            // the router's Moray (Fast RPC) address
	Shards map[string]string // pnode name: its primary's DSN
	Ring   *ring.Ring
	// PoolSize is the router's connections to each shard; pgx straight to
	// the shards gets as many.
	PoolSize int32
	// RouterPID is the router's process, whose CPU time is counted.
	RouterPID int
}

// Request is how a comparison of request loops is run.
type Request struct {
	Concurrency int
	Rounds      int
	Per         time.Duration
	Keys        int
}

// routerBucket is the bucket the router comparison writes and reads.
const routerBucket = "perf_router"

// The goals of issue 21, as ratios to pgx straight to the shard.
const (
	routerGetGoal = 0.70
	routerPutGoal = 0.90
	routerP99Goal = 1.0 // ms added at the p99
)

// CompareRouter measures gets and puts of one small object through the
// router's HTTP API and its Moray port against the same statements sent
// with pgx straight to the shard that owns the key (shard.GetObject and
// shard.PutObject: the fence check and the read or write in one round
// trip, as the router sends them). Every side has the same requests in
// flight; the client runs in this process on every side.
func CompareRouter(ctx context.Context, t RouterTarget, req Request) ([]Result, error) {
	pools := map[string]*pgxpool.Pool{}
	defer func() {
		for _, p := range pools {
			p.Close()
		}
	}()
	for name, dsn := range t.Shards {
		cfg, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			return nil, err
		}
		cfg.MaxConns = t.PoolSize
		p, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return nil, err
		}
		pools[name] = p
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: req.Concurrency}}
	defer client.CloseIdleConnections()
	if err := httpSend(ctx, client, "PUT", t.HTTP+"/buckets/"+routerBucket, []byte(`{}`)); err != nil {
		return nil, fmt.Errorf("create bucket: %w", err)
	}
	morays := make([]*fast.Client, req.Concurrency)
	for i := range morays {
		c, err := fast.Dial(ctx, t.Moray)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		morays[i] = c
	}
	value := []byte(`{"size": 1024, "owner": "5884dd74-949a-40ec-8d13-dd3151897343", "type": "object"}`)
	keys := make([]string, req.Keys)
	locs := make([]ring.Location, req.Keys)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
		locs[i] = t.Ring.LocateString(keys[i])
	}
	direct := func(i int64) (*pgxpool.Pool, string, int32) {
		k := int(i % int64(len(keys)))
		return pools[locs[k].Pnode], keys[k], int32(locs[k].Vnode)
	}
	putDirect := func(ctx context.Context, _ int, i int64) error {
		p, key, vnode := direct(i)
		_, err := shard.PutObject(ctx, p, routerBucket, shard.BucketOptions{}, shard.Object{Key: key, Value: value, Vnode: vnode}, "")
		return err
	}
	// Every key exists before the gets, written the direct way.
	for i := range keys {
		if err := putDirect(ctx, 0, int64(i)); err != nil {
			return nil, fmt.Errorf("fill: %w", err)
		}
	}
	url := func(i int64) string {
		return t.HTTP + "/buckets/" + routerBucket + "/objects/" + keys[i%int64(len(keys))]
	}
	noOpts := map[string]any{}
	raw := json.RawMessage(value)
	gets := []Side{
		{"gets, HTTP", func(ctx context.Context, _ int, i int64) error { return httpSend(ctx, client, "GET", url(i), nil) }},
		{"gets, Moray port", func(ctx context.Context, w int, i int64) error {
			_, err := morays[w].Call(ctx, "getObject", routerBucket, keys[i%int64(len(keys))], noOpts)
			return err
		}},
		{"gets, pgx", func(ctx context.Context, _ int, i int64) error {
			p, key, vnode := direct(i)
			_, err := shard.GetObject(ctx, p, routerBucket, shard.BucketOptions{}, key, vnode)
			return err
		}},
	}
	puts := []Side{
		{"puts, HTTP", func(ctx context.Context, _ int, i int64) error { return httpSend(ctx, client, "PUT", url(i), value) }},
		{"puts, Moray port", func(ctx context.Context, w int, i int64) error {
			_, err := morays[w].Call(ctx, "putObject", routerBucket, keys[i%int64(len(keys))], raw, noOpts)
			return err
		}},
		{"puts, pgx", putDirect},
	}
	var out []Result
	for _, group := range []struct {
		sides []Side
		goal  float64
	}{{gets, routerGetGoal}, {puts, routerPutGoal}} {
		st, err := Alternate(ctx, group.sides, req.Concurrency, req.Rounds, req.Per, map[string]int{"router": t.RouterPID, "client": os.Getpid()})
		if err != nil {
			return nil, err
		}
		base := st[group.sides[2].Name]
		if err := failed(group.sides, st); err != nil {
			return nil, err
		}
		for _, s := range group.sides[:2] {
			ours := st[s.Name]
			r := Faster("router", s.Name, "pgx to the shard", "ops/s", ours.OpsPerSec, base.OpsPerSec, group.goal)
			r.Detail = fmt.Sprintf("p50 %.2f / %.2f ms, p99 %.2f / %.2f ms; CPU per request %s / %s",
				ours.P50MS, base.P50MS, ours.P99MS, base.P99MS, cpuSplit(ours.CPUPerOp), cpuSplit(base.CPUPerOp))
			out = append(out, r, Overhead("router", s.Name+", p99", "pgx to the shard", "ms", ours.P99MS, base.P99MS, routerP99Goal))
		}
	}
	return out, nil
}

// failed is an error naming the first side that had errors: a comparison
// of failing requests measures nothing.
func failed(sides []Side, st map[string]*Stats) error {
	for _, s := range sides {
		if n := st[s.Name].Errors; n > 0 {
			return fmt.Errorf("%s: %d errors, the first: %s", s.Name, n, st[s.Name].FirstError)
		}
	}
	return nil
}

func httpSend(ctx context.Context, c *http.Client, method, url string, body []byte) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: HTTP %d: %.200s", method, url, resp.StatusCode, b)
	}
	return nil
}

// cpuSplit says where a request's CPU time went: the client (this
// process), the router, and the rest of the machine (PostgreSQL, the
// kernel's work for all of them, anything else running).
func cpuSplit(per map[string]float64) string {
	rest := per["machine"] - per["client"] - per["router"]
	return fmt.Sprintf("%.0f µs (client %.0f, router %.0f, rest %.0f)", per["machine"], per["client"], per["router"], rest)
}
