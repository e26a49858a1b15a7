package orchestrator

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/reshard/reshard/etcd"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// What clients feel is what the routers measure: each serves its request
// latency as a Prometheus histogram (reshard_router_request_seconds, every
// operation of both protocols). The adaptive cleanup reads it from every
// registered router once a second and takes the 99th percentile of the
// requests of the last few seconds, over all routers, as the foreground's
// p99 (as histogram_quantile does: linear within a bucket).

const (
	latencyMetric = "reshard_router_request_seconds"
	// foregroundWindow is how many one-second scrapes make the p99.
	foregroundWindow = 5
	// baselineWindow is how many make the p99 before the cleanup: twice
	// the requests, so a lucky quiet few seconds set the target less often.
	baselineWindow = 10
	// minForeground is the fewest requests in the window worth a p99;
	// with fewer the foreground is too quiet to be hurt, or to judge.
	minForeground = 50
)

// histogram is a latency histogram: requests by bucket upper bound.
type histogram map[float64]float64

// foreground follows the routers' latency histograms.
type foreground struct {
	cli    *clientv3.Client
	http   *http.Client
	last   map[string]histogram // per router URL, the last cumulative scrape
	window []histogram          // the last intervals' requests
}

func newForeground(cli *clientv3.Client) *foreground {
	return &foreground{cli: cli, http: &http.Client{Timeout: 500 * time.Millisecond}, last: map[string]histogram{}}
}

// scrape reads every registered router's histogram and adds the requests
// since the previous scrape to the window. A router that does not answer
// is left out of this interval.
func (f *foreground) scrape(ctx context.Context) {
	routers, err := etcd.Routers(ctx, f.cli)
	if err != nil {
		return
	}
	interval := histogram{}
	for _, rt := range routers {
		if rt.URL == "" {
			continue
		}
		h, err := f.read(ctx, rt.URL+"/metrics")
		if err != nil {
			continue
		}
		if prev, ok := f.last[rt.URL]; ok {
			for le, n := range h {
				if d := n - prev[le]; d > 0 { // a restarted router starts again at 0
					interval[le] += d
				}
			}
		}
		f.last[rt.URL] = h
	}
	f.window = append(f.window, interval)
	if len(f.window) > baselineWindow {
		f.window = f.window[1:]
	}
}

// read scrapes one router: the cumulative count per bucket bound, summed
// over operations and status codes.
func (f *foreground) read(ctx context.Context, url string) (histogram, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := f.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, err
	}
	h := histogram{}
	if fam, ok := families[latencyMetric]; ok {
		for _, m := range fam.GetMetric() {
			hist := m.GetHistogram()
			for _, b := range hist.GetBucket() {
				if !math.IsInf(b.GetUpperBound(), 1) {
					h[b.GetUpperBound()] += float64(b.GetCumulativeCount())
				}
			}
			h[math.Inf(1)] += float64(hist.GetSampleCount())
		}
	}
	return h, nil
}

// p99 is the window's 99th percentile and how many requests it is of.
func (f *foreground) p99() (time.Duration, int) { return f.p99Of(foregroundWindow) }

// p99Of is the p99 of the last n intervals.
func (f *foreground) p99Of(n int) (time.Duration, int) {
	sum := histogram{}
	for _, h := range f.window[max(len(f.window)-n, 0):] {
		for le, n := range h {
			sum[le] += n
		}
	}
	return quantileOf(sum, 0.99)
}

// quantileOf is the q-th quantile of a cumulative histogram, interpolated
// linearly within its bucket, and the number of observations.
func quantileOf(h histogram, q float64) (time.Duration, int) {
	bounds := make([]float64, 0, len(h))
	for le := range h {
		bounds = append(bounds, le)
	}
	slices.Sort(bounds)
	if len(bounds) == 0 {
		return 0, 0
	}
	total := h[bounds[len(bounds)-1]]
	if total <= 0 {
		return 0, 0
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for _, le := range bounds {
		n := h[le]
		if n >= rank {
			if math.IsInf(le, 1) {
				le = lower // past the last finite bound: report it
			}
			frac := 0.0
			if n > below {
				frac = (rank - below) / (n - below)
			}
			return time.Duration((lower + (le-lower)*frac) * float64(time.Second)), int(total)
		}
		lower, below = le, n
	}
	return time.Duration(lower * float64(time.Second)), int(total)
}
