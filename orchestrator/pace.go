package orchestrator

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/reshard/reshard/internal/quantile"
	"github.com/reshard/reshard/postgres"
)

// Cleanup deletes rows on shards that serve clients, so by default its
// pace follows the foreground instead of a fixed number of rows per
// second. What it holds is what clients feel: the routers' p99 over the
// last foregroundWindow seconds, read from their request histograms, to
// 1.25 times what it was just before the cleanup began (or
// --cleanup-target). With too little router traffic to tell, a probe
// commits a tiny transaction on the shard being cleaned every probeEvery
// (a transaction id, so the commit is written and waits for the sync
// standby, as a client's write does), and its 90th percentile over the
// last window is held instead, to 1.25 times and at least 1 ms more. (The
// 99th of a 2 s window of probes is its second-slowest: one scheduling
// hiccup would stop the cleanup.) The standbys' replay lag is held under
// --max-replica-lag too. The pace starts at a quarter of the job's
// --rate-limit, grows by a tenth of it each second while both hold, and
// halves when either is over twice in a row (additive increase,
// multiplicative decrease), within [minPace, --rate-limit].

// Pace modes (--cleanup-pace).
const (
	PaceAdaptive = "adaptive"
	PaceFixed    = "fixed"
)

const (
	probeEvery     = 50 * time.Millisecond
	probeWindow    = 2 * time.Second
	paceEvery      = time.Second
	baselineProbes = 40
	minPace        = 100.0
	// DefaultProbeSlack is the probe's allowed slowdown during the cleanup
	// when no target is given: at most 25% above before, and at least
	// probeFloor more, below which a probe's time is noise.
	DefaultProbeSlack = 1.25
	probeFloor        = time.Millisecond
	probeQuantile     = 0.90
	// DefaultMaxReplicaLag bounds the standbys' replay lag during cleanup.
	DefaultMaxReplicaLag = 16 << 20
)

// pacer sets the cleanup's pace on one shard.
type pacer struct {
	fixed  bool
	max    float64 // rows/s: the job's rate limit
	pace   float64
	target time.Duration // the probe's p90 allowed
	base   time.Duration // the probe's p90 before the cleanup
	maxLag int64
	why    string
	db     *pgxpool.Pool
	last   time.Time
	// fg, when set, is the routers' latency: the pace then holds the
	// foreground's p99 itself, and the probe does not run.
	fg   *foreground
	over bool // the last reading was over the target
	// settle is when the window holds only time after the last halving:
	// until then a reading still counts requests slowed before it (one
	// slow request stays in a 5 s window's p99 for five readings), and
	// judging it again would halve the pace for the same spike.
	settle time.Time
	// floor is since when the pace has been at minPace with the
	// foreground still over its target (see next).
	floor time.Time
	given time.Duration // --cleanup-target, if given
	log   *slog.Logger

	mu      sync.Mutex
	samples []probeSample
	stop    func()
}

type probeSample struct {
	at  time.Time
	lat time.Duration
}

// newPacer measures the shard's probe before the cleanup of rows rows and
// starts probing in the background; stop ends it. A fixed pace probes
// nothing, nor does a cleanup of under a second's work at --rate-limit.
func (r *run) newPacer(ctx context.Context, db *pgxpool.Pool, rows int64) (*pacer, error) {
	j := r.job
	p := &pacer{fixed: j.CleanupPace != PaceAdaptive, max: float64(max(j.RateLimit, 1)), db: db, maxLag: j.MaxReplicaLag, stop: func() {},
		log: r.o.log.With("job", j.ID), given: time.Duration(j.CleanupTargetMS * float64(time.Millisecond))}
	if p.maxLag <= 0 {
		p.maxLag = DefaultMaxReplicaLag
	}
	switch {
	case p.fixed:
		p.pace, p.why = p.max, fmt.Sprintf("fixed at --rate-limit %d rows/s", j.RateLimit)
		return p, nil
	case float64(rows) <= p.max:
		p.fixed, p.pace, p.why = true, p.max, fmt.Sprintf("%d rows: under a second's work at --rate-limit", rows)
		return p, nil
	}
	p.pace = max(p.max/4, minPace)
	p.why = "starting at a quarter of --rate-limit"
	p.last = time.Now()
	// The routers' own p99 when they serve enough requests to tell.
	fg := newForeground(r.o.cli)
	for i := 0; i <= baselineWindow; i++ {
		fg.scrape(ctx)
		if i < baselineWindow {
			if err := sleep(ctx, paceEvery); err != nil {
				return nil, err
			}
		}
	}
	if base, n := fg.p99Of(baselineWindow); n >= minForeground && base > 0 {
		p.fg = fg
		p.baseline(base)
		return p, nil
	}
	var base []time.Duration
	for range baselineProbes {
		d, err := probe(ctx, db)
		if err != nil {
			return nil, err
		}
		base = append(base, d)
		if err := sleep(ctx, probeEvery); err != nil {
			return nil, err
		}
	}
	p.baseline(quantile.Of(base, probeQuantile))
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	p.stop = func() { cancel(); <-done }
	go func() {
		defer close(done)
		for pctx.Err() == nil {
			if d, err := probe(pctx, db); err == nil {
				p.mu.Lock()
				p.samples = append(p.samples, probeSample{time.Now(), d})
				p.mu.Unlock()
			}
			sleep(pctx, probeEvery)
		}
	}()
	return p, nil
}

// baseline sets what the foreground was without the cleanup, and the
// target from it: 1.25 times (and for the probe, at least probeFloor
// more), unless --cleanup-target names one.
func (p *pacer) baseline(base time.Duration) {
	p.base = base
	switch {
	case p.given > 0:
		p.target = p.given
	case p.fg != nil:
		p.target = time.Duration(float64(base) * DefaultProbeSlack)
	default:
		p.target = max(time.Duration(float64(base)*DefaultProbeSlack), base+probeFloor)
	}
}

// probe times one committed transaction that has a transaction id.
func probe(ctx context.Context, db *pgxpool.Pool) (time.Duration, error) {
	start := time.Now()
	_, err := db.Exec(ctx, `select txid_current()`)
	return time.Since(start), err
}

// adjust sets the pace anew once per paceEvery from the routers' p99 (or
// the probe's recent p90) and the standbys' lag, unless it is settling
// after a halving.
func (p *pacer) adjust(ctx context.Context) {
	if p.fixed || time.Since(p.last) < paceEvery {
		return
	}
	p.last = time.Now()
	if p.fg != nil {
		p.fg.scrape(ctx) // every second, settling or not: the window moves on
	}
	if p.last.Before(p.settle) {
		return
	}
	lag, err := postgres.StandbyLag(ctx, p.db)
	if err != nil {
		lag = 0
	}
	if p.fg != nil {
		p99, n := p.fg.p99()
		if n < minForeground {
			p99 = 0 // too quiet to be hurt, or to judge
		}
		p.next(p99, lag, "routers' p99", foregroundWindow*paceEvery)
		return
	}
	p.mu.Lock()
	cut := slices.IndexFunc(p.samples, func(s probeSample) bool { return time.Since(s.at) <= probeWindow })
	if cut < 0 {
		cut = len(p.samples)
	}
	p.samples = p.samples[cut:]
	lats := make([]time.Duration, len(p.samples))
	for i, s := range p.samples {
		lats[i] = s.lat
	}
	p.mu.Unlock()
	if len(lats) < 5 {
		return
	}
	p90 := quantile.Of(lats, probeQuantile)
	p.next(p90, lag, "probe p90", probeWindow)
	if p90 <= p.target && lag <= p.maxLag {
		p.why += fmt.Sprintf(" (%.2fx %s before)", float64(p.target)/float64(max(p.base, 1)), ms(p.base))
	}
}

// next sets the pace from a reading over a window of the given length.
// A foreground still over its target after a whole window at the least
// pace is slower on its own (the baseline was a lucky quiet moment, or the
// load changed): a cleanup of minPace rows/s does not make it so. That
// reading becomes the new baseline, so the cleanup is not held at its
// least pace for good.
func (p *pacer) next(measure time.Duration, lag int64, what string, window time.Duration) {
	was, now, rebased := p.pace, time.Now(), false
	p.pace, p.why, p.over = nextPace(p.pace, p.max, measure, p.target, lag, p.maxLag, what, p.over)
	switch {
	case p.pace < was:
		p.settle, p.over = now.Add(window), false
		p.why += fmt.Sprintf("; next look in %s", window)
	case was > minPace || p.pace > minPace || measure <= p.target || p.given > 0:
		p.floor = time.Time{}
	case p.floor.IsZero():
		p.floor = now
	case now.Sub(p.floor) >= window:
		p.baseline(measure)
		p.floor, p.over, rebased = time.Time{}, false, true
		p.why = fmt.Sprintf("new baseline: %s %s after %s at the least pace (the foreground is slower on its own); target %s",
			what, ms(measure), window, ms(p.target))
	}
	if p.log != nil && (p.pace < was || p.over || rebased) {
		p.log.Info("cleanup pace", "rows_per_s", int(p.pace), "why", p.why)
	}
}

// nextPace is the controller. When the measure (what says so) is over its
// target or the standbys lag over their bound, the pace holds the first
// time and halves (not under minPace) when it was over the time before
// too: a p99 of a few seconds' requests crosses a 25% margin now and then
// by chance alone. Otherwise it grows by a tenth of the maximum (not over
// it). over says whether this reading was over.
func nextPace(pace, maxPace float64, measure, target time.Duration, lag, maxLag int64, what string, overBefore bool) (float64, string, bool) {
	var why string
	switch {
	case measure > target:
		why = fmt.Sprintf("%s %s over target %s", what, ms(measure), ms(target))
	case lag > maxLag:
		why = fmt.Sprintf("standby replay lag %d bytes over %d", lag, maxLag)
	default:
		return min(pace+max(maxPace/10, minPace), maxPace), fmt.Sprintf("%s %s under target %s; standby lag %d bytes", what, ms(measure), ms(target), lag), false
	}
	if !overBefore {
		return pace, "holding: " + why, true
	}
	return max(pace/2, minPace), "halved: " + why, true
}

// batch is how many rows to delete next: a tenth of a second's worth.
func (p *pacer) batch() int { return int(min(max(p.pace/10, 50), 5000)) }

// note says the pace and why, for status.
func (p *pacer) note() string { return fmt.Sprintf("pace %.0f rows/s: %s", p.pace, p.why) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
