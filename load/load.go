package load

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/reshard/reshard/internal/quantile"
	"golang.org/x/time/rate"
)

// Config says what traffic to generate.
type Config struct {
	Routers     []string
	Token       string
	Duration    time.Duration
	Rate        float64 // operations per second over all workers; 0: as fast as they go
	Keys        int     // distinct keys per bucket
	Buckets     int     // buckets load_0 ... load_{n-1}
	Concurrency int
	Ledger      io.Writer
	Progress    io.Writer // one line a second; nil for none
}

func (c *Config) validate() error {
	if len(c.Routers) == 0 {
		return fmt.Errorf("at least one --router is required")
	}
	for _, r := range c.Routers {
		if u, err := url.Parse(r); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("invalid router URL %q", r)
		}
	}
	switch {
	case c.Duration <= 0:
		return fmt.Errorf("--duration must be positive")
	case c.Rate < 0:
		return fmt.Errorf("--rate must be 0 (unlimited) or positive")
	case c.Keys < 1:
		return fmt.Errorf("--keys must be at least 1")
	case c.Buckets < 1 || c.Buckets > 100:
		return fmt.Errorf("--buckets must be between 1 and 100")
	case c.Concurrency < 1 || c.Concurrency > 1000:
		return fmt.Errorf("--concurrency must be between 1 and 1000")
	case c.Ledger == nil:
		return fmt.Errorf("a ledger is required")
	}
	return nil
}

// Summary is what a run did.
type Summary struct {
	Seconds      float64          `json:"seconds"`
	Ops          map[string]int64 `json:"ops"`
	AckedWrites  int64            `json:"acked_writes"`
	UnknownWrite int64            `json:"unknown_writes"`
	Errors       map[string]int64 `json:"errors"` // by kind: http_503, transport, ...
	ClientErrors int64            `json:"client_errors"`
	Failovers    int64            `json:"failovers"` // requests moved to another router before being sent
	// ErrorSamples is the first failure of each kind, as the client saw
	// it (the request, the time, and the answer or the transport error):
	// what to look for in the routers' logs.
	ErrorSamples map[string]string      `json:"error_samples,omitempty"`
	Latency      map[string]Percentiles `json:"latency_ms"`
}

// Percentiles of one operation's latency, in milliseconds.
type Percentiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

type stats struct {
	mu        sync.Mutex
	ops       map[string]int64
	errs      map[string]int64
	lat       map[string][]time.Duration
	acked     int64
	unknown   int64
	failovers atomic.Int64
	samples   map[string]string
}

func (s *stats) record(op string, d time.Duration, errKind string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ops[op]++
	if errKind != "" {
		s.errs[errKind]++
		return
	}
	s.lat[op] = append(s.lat[op], d)
}

// sample keeps the first failure of each kind.
func (s *stats) sample(kind, method, path string, answer []byte, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.samples[kind]; ok {
		return
	}
	if s.samples == nil {
		s.samples = map[string]string{}
	}
	what := strings.TrimSpace(string(answer))
	if err != nil {
		what = err.Error()
	}
	s.samples[kind] = fmt.Sprintf("%s %s %s: %s", time.Now().UTC().Format("15:04:05.000"), method, path, what)
}

// Run creates the buckets, then drives traffic until the duration ends.
// Each key belongs to one worker, so writes to a key are never concurrent
// and the ledger's order is the key's true order.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	if err := cfg.validate(); err != nil {
		return Summary{}, err
	}
	st := &stats{ops: map[string]int64{}, errs: map[string]int64{}, lat: map[string][]time.Duration{}}
	c := &client{routers: cfg.Routers, token: cfg.Token, st: st, http: &http.Client{Timeout: 60 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Concurrency * 2}}}
	// Buckets are created through whichever router can do it: one that is
	// down or cut off from etcd must not stop the run.
	for b := 0; b < cfg.Buckets; b++ {
		var err error
		for range cfg.Routers {
			var code int
			code, _, _, err = c.do(ctx, http.MethodPut, "/buckets/"+bucketName(b), nil, "")
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("HTTP %d", code)
			}
			if err == nil {
				break
			}
		}
		if err != nil {
			return Summary{}, fmt.Errorf("create bucket %s: %w", bucketName(b), err)
		}
	}
	var limiter *rate.Limiter
	if cfg.Rate > 0 {
		limiter = rate.NewLimiter(rate.Limit(cfg.Rate), max(1, int(cfg.Rate/50)))
	}
	var ledgerMu sync.Mutex
	enc := json.NewEncoder(cfg.Ledger)
	writeLedger := func(e Entry) {
		ledgerMu.Lock()
		enc.Encode(e)
		ledgerMu.Unlock()
	}
	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	start := time.Now()
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		progress(runCtx, cfg.Progress, st, start)
	}()
	var wg sync.WaitGroup
	for w := 0; w < cfg.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			worker(runCtx, ctx, cfg, c, w, limiter, st, writeLedger)
		}()
	}
	wg.Wait()
	<-progressDone
	return st.summary(time.Since(start)), nil
}

func bucketName(i int) string { return fmt.Sprintf("load_%d", i) }

// worker runs operations until run ends. Requests run under ctx, not run:
// the end of the run stops new requests but lets those in flight finish,
// so every write that may have happened reaches the ledger.
func worker(run, ctx context.Context, cfg Config, c *client, w int, limiter *rate.Limiter, st *stats, ledger func(Entry)) {
	rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
	// Worker w owns keys w, w+C, w+2C, ... of every bucket.
	owned := (cfg.Keys - w + cfg.Concurrency - 1) / cfg.Concurrency
	if owned <= 0 {
		return
	}
	var seq int64
	// write sends a put or delete and records its outcome in the ledger.
	write := func(op, method, bucket, key, path string, body []byte, n int64) bool {
		t0 := time.Now()
		code, hdr, answer, err := c.do(ctx, method, path, body, "")
		d := time.Since(t0)
		if op == "delete" && code == http.StatusNotFound {
			code = http.StatusNoContent // already absent: the same end state
		}
		kind := errKind(code, err, ctx)
		if kind != "" && kind != "cancelled" {
			st.sample(kind, method, path, answer, err)
		}
		e := Entry{Time: time.Now().UnixNano(), Op: op, Bucket: bucket, Key: key, Seq: n}
		switch {
		case kind == "":
			e.Status, e.Etag = Acked, trimEtag(hdr.Get("ETag"))
			st.mu.Lock()
			st.acked++
			st.mu.Unlock()
		case kind == "cancelled" || ambiguous(code, err):
			e.Status = Unknown
			st.mu.Lock()
			st.unknown++
			st.mu.Unlock()
		}
		if e.Status != "" {
			ledger(e)
		}
		if kind == "cancelled" {
			return false
		}
		st.record(op, d, kind)
		return true
	}
	for run.Err() == nil {
		if limiter != nil && limiter.Wait(run) != nil {
			return
		}
		bucket := bucketName(rng.IntN(cfg.Buckets))
		k := w + cfg.Concurrency*rng.IntN(owned)
		// Directory-style keys, as Manta's are.
		key := fmt.Sprintf("/load/d%03d/k%07d", k%997, k)
		path := "/buckets/" + bucket + "/objects/" + url.PathEscape(key)
		switch p := rng.IntN(100); {
		case p < 50:
			seq++
			n := int64(w)<<32 | seq
			body, _ := json.Marshal(map[string]any{"key": key, "seq": n, "pad": "x"})
			if !write("put", http.MethodPut, bucket, key, path, body, n) {
				return
			}
		case p < 85:
			t0 := time.Now()
			code, _, answer, err := c.do(ctx, http.MethodGet, path, nil, "")
			if code == http.StatusNotFound {
				code = http.StatusOK
			}
			kind := errKind(code, err, ctx)
			if kind == "cancelled" {
				return
			}
			if kind != "" {
				st.sample(kind, http.MethodGet, path, answer, err)
			}
			st.record("get", time.Since(t0), kind)
		default:
			if !write("delete", http.MethodDelete, bucket, key, path, nil, 0) {
				return
			}
		}
	}
}

func trimEtag(s string) string { return string(bytes.Trim([]byte(s), `"`)) }

// errKind names a failed answer; "" is success.
func errKind(code int, err error, ctx context.Context) string {
	switch {
	case err != nil && ctx.Err() != nil:
		return "cancelled"
	case err != nil:
		return "transport"
	case code >= 200 && code < 300:
		return ""
	default:
		return "http_" + strconv.Itoa(code)
	}
}

// ambiguous: the write may have happened. A transport error after the
// request was sent, or the router saying the shard's outcome is unknown.
func ambiguous(code int, err error) bool {
	return err != nil || code == http.StatusServiceUnavailable || code >= 500
}

type client struct {
	routers []string
	token   string
	http    *http.Client
	next    atomic.Uint64
	st      *stats
}

// do sends a request to the routers in turn, and returns the start of
// the answer's body when it is an error. A request that never reached
// a router (connection refused: a router is down) goes to the next one, as
// a load balancer would; once sent, it is not resent.
func (c *client) do(ctx context.Context, method, path string, body []byte, ifMatch string) (int, http.Header, []byte, error) {
	var lastErr error
	first := int(c.next.Add(1))
	for i := 0; i < len(c.routers); i++ {
		base := c.routers[(first+i)%len(c.routers)]
		req, err := http.NewRequestWithContext(ctx, method, base+path, bytes.NewReader(body))
		if err != nil {
			return 0, nil, nil, err
		}
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		if ifMatch != "" {
			req.Header.Set("If-Match", ifMatch)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			var op *net.OpError
			// Not sent: any request may go elsewhere. Sent but no answer
			// (the router died): the load's requests are idempotent
			// (unconditional puts of one value, deletes, reads, each key
			// written by one worker at a time), so resending one cannot
			// change what the last acknowledged write is. A conditional
			// write would not be resent.
			if (errors.As(err, &op) && op.Op == "dial") || (ifMatch == "" && ctx.Err() == nil) {
				lastErr = err
				c.st.failovers.Add(1)
				continue
			}
			return 0, nil, nil, err
		}
		var answer []byte
		if resp.StatusCode >= 300 && resp.StatusCode != http.StatusNotFound {
			answer, _ = io.ReadAll(io.LimitReader(resp.Body, 512))
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header, answer, nil
	}
	return 0, nil, nil, lastErr
}

func progress(ctx context.Context, w io.Writer, st *stats, start time.Time) {
	if w == nil {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st.mu.Lock()
		var ops, errs int64
		for _, n := range st.ops {
			ops += n
		}
		for _, n := range st.errs {
			errs += n
		}
		acked := st.acked
		st.mu.Unlock()
		fmt.Fprintf(w, "load: %3.0fs  ops %d (%d/s)  acked writes %d  errors %d\n",
			time.Since(start).Seconds(), ops, ops-last, acked, errs)
		last = ops
	}
}

func (s *stats) summary(d time.Duration) Summary {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := Summary{Seconds: d.Seconds(), Ops: s.ops, Errors: s.errs, AckedWrites: s.acked, UnknownWrite: s.unknown,
		Latency: map[string]Percentiles{}, Failovers: s.failovers.Load(), ErrorSamples: s.samples}
	for _, n := range s.errs {
		out.ClientErrors += n
	}
	for op, ds := range s.lat {
		slices.Sort(ds)
		q := func(p float64) float64 { return float64(quantile.Sorted(ds, p).Microseconds()) / 1000 }
		out.Latency[op] = Percentiles{P50: q(0.50), P90: q(0.90), P99: q(0.99), Max: q(1)}
	}
	return out
}
