package perf

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/reshard/reshard/internal/quantile"
	"github.com/reshard/reshard/ring"
	"golang.org/x/time/rate"
)

// Write is one put a Writer sent: when it started, how long its answer
// took, the vnode of its key, and whether it failed.
type Write struct {
	Start   time.Time
	Took    time.Duration
	Vnode   uint32
	Failed  bool
	Retries int // the router's X-Reshard-Retries: attempts it made again
}

// Writer puts objects through routers at a steady rate and keeps every
// put's latency, so the latency of writes to moving vnodes during a
// cutover can be set against all the others.
type Writer struct {
	Routers     []string
	Bucket      string // exists
	Ring        *ring.Ring
	Rate        float64 // puts/s over all workers
	Concurrency int
	Keys        int

	mu     sync.Mutex
	writes []Write
}

// Run writes until ctx ends.
func (w *Writer) Run(ctx context.Context) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: w.Concurrency}, Timeout: time.Minute}
	defer client.CloseIdleConnections()
	lim := rate.NewLimiter(rate.Limit(w.Rate), max(1, int(w.Rate/100)))
	value := []byte(`{"size": 1024, "owner": "5884dd74-949a-40ec-8d13-dd3151897343", "type": "object"}`)
	var wg sync.WaitGroup
	for n := range w.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []Write
			for i := n; ; i += w.Concurrency {
				if lim.Wait(ctx) != nil {
					break
				}
				key := "w" + strconv.Itoa(i%w.Keys)
				router := w.Routers[i%len(w.Routers)]
				start := time.Now()
				retries, err := put(ctx, client, router+"/buckets/"+w.Bucket+"/objects/"+key, value)
				if ctx.Err() != nil {
					break
				}
				mine = append(mine, Write{Start: start, Took: time.Since(start), Vnode: w.Ring.LocateString(key).Vnode,
					Failed: err != nil, Retries: retries})
			}
			w.mu.Lock()
			w.writes = append(w.writes, mine...)
			w.mu.Unlock()
		}()
	}
	wg.Wait()
}

// put writes one object and returns how often the router retried it.
func put(ctx context.Context, c *http.Client, url string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	retries, _ := strconv.Atoi(resp.Header.Get("X-Reshard-Retries"))
	if resp.StatusCode != http.StatusOK {
		return retries, fmt.Errorf("PUT %s: HTTP %d", url, resp.StatusCode)
	}
	return retries, nil
}

// Writes is every put sent, once Run has returned.
func (w *Writer) Writes() []Write {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.writes)
}

// Cutover is one job's cutover as the clients met it: from the freeze to
// the routers serving the new ring, and the vnodes that moved.
type Cutover struct {
	Name     string // e.g. "split 3", "revert 3"
	From, To time.Time
	Moving   func(vnode uint32) bool
}

// CutoverLatency sets the latency of writes to moving vnodes that started
// inside a cutover against that of every write outside any cutover.
type CutoverLatency struct {
	During, Outside        int // writes
	DuringP50, DuringP99   float64
	DuringMax              float64
	OutsideP50, OutsideP99 float64
	Failed                 int
	// Of the writes that met a cutover: the router's retries, at the p50
	// and the most.
	RetriesP50, RetriesMax int
	// Slowest are the five slowest of them, as "cutover +start: took,
	// retries", to see where a long wait comes from.
	Slowest []string
}

// Latency sorts writes by cutover.
func Latency(writes []Write, cutovers []Cutover) CutoverLatency {
	var during, outside []time.Duration
	var retries []int
	type slow struct {
		w   Write
		cut Cutover
	}
	var slows []slow
	var res CutoverLatency
	for _, w := range writes {
		if w.Failed {
			res.Failed++
			continue
		}
		in := false
		moving := false
		var met Cutover
		for _, c := range cutovers {
			if !w.Start.Before(c.From) && w.Start.Before(c.To) {
				in = true
				if c.Moving(w.Vnode) {
					moving, met = true, c
				}
			}
		}
		switch {
		case moving:
			during = append(during, w.Took)
			retries = append(retries, w.Retries)
			slows = append(slows, slow{w, met})
		case !in:
			outside = append(outside, w.Took)
		}
	}
	slices.Sort(during)
	slices.Sort(outside)
	res.During, res.Outside = len(during), len(outside)
	res.DuringP50, res.DuringP99 = ms(quantile.Sorted(during, 0.5)), ms(quantile.Sorted(during, 0.99))
	if len(during) > 0 {
		res.DuringMax = ms(during[len(during)-1])
	}
	res.OutsideP50, res.OutsideP99 = ms(quantile.Sorted(outside, 0.5)), ms(quantile.Sorted(outside, 0.99))
	slices.SortFunc(slows, func(a, b slow) int { return int(b.w.Took - a.w.Took) })
	for _, x := range slows[:min(5, len(slows))] {
		res.Slowest = append(res.Slowest, fmt.Sprintf("%s (%.0f ms long) +%.0f ms: took %.0f ms, %d retries",
			x.cut.Name, ms(x.cut.To.Sub(x.cut.From)), ms(x.w.Start.Sub(x.cut.From)), ms(x.w.Took), x.w.Retries))
	}
	if len(retries) > 0 {
		slices.Sort(retries)
		res.RetriesP50, res.RetriesMax = retries[len(retries)/2], retries[len(retries)-1]
	}
	return res
}

// Percentiles is p50, p99 and the most of values, by nearest rank.
func Percentiles(values []float64) (p50, p99, most float64) {
	if len(values) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(values)
	slices.Sort(s)
	at := func(q float64) float64 { return s[min(max(int(q*float64(len(s))+0.5)-1, 0), len(s)-1)] }
	return at(0.5), at(0.99), s[len(s)-1]
}

// BlockResults are the write block's distribution over jobs at a ring's
// size, and what writes to the moving vnodes met.
func BlockResults(vnodes int, blocks, reverts []float64, lat CutoverLatency, writesPerSec float64) []Result {
	p50, p99, most := Percentiles(blocks)
	area := "write block"
	name := fmt.Sprintf("%d vnodes, %d splits", vnodes, len(blocks))
	// The write block is all added: without a move there is none. The
	// bound is the one the tests hold every job to.
	r := Overhead(area, name+": block p99", "no write block", "ms", p99, 0, 1000)
	r.Detail = fmt.Sprintf("p50 %.0f ms, p99 %.0f ms, max %.0f ms; load %.0f writes/s", p50, p99, most, writesPerSec)
	added := Overhead(area, name+": writes to moving vnodes, p99", "writes outside cutovers, p99", "ms", lat.DuringP99, lat.OutsideP99, 1000)
	added.Detail = fmt.Sprintf("%d writes met a cutover: p50 %.1f ms, max %.0f ms, the router's retries p50 %d, max %d; %d outside: p50 %.1f ms; %d failed",
		lat.During, lat.DuringP50, lat.DuringMax, lat.RetriesP50, lat.RetriesMax, lat.Outside, lat.OutsideP50, lat.Failed)
	b50, b99, bmost := Percentiles(reverts)
	back := Overhead(area, name+": the reverts' block p99", "no write block", "ms", b99, 0, 1000)
	back.Detail = fmt.Sprintf("p50 %.0f ms, p99 %.0f ms, max %.0f ms", b50, b99, bmost)
	return []Result{r, back, added}
}
