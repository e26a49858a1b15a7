package perf

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/ring"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ringGoal is issue 21's goal for ring versions: a flip, and a router's
// reload of it, cost at 1,000,000 vnodes at most twice what they cost at
// 1,000 (a Quicker ratio of 0.5).
const ringGoal = 0.5

// RingSide is a lab at one ring size: its etcd, its routers, and the move
// a split of its origin in half makes.
type RingSide struct {
	Vnodes   int
	Etcd     *clientv3.Client
	Routers  []string // base URLs, for /metrics
	Transfer ring.Transfer
}

// RingFlips is what FlipRing measured, in ms per flip.
type RingFlips struct {
	Flip  []float64 // reading the ring, checking the move, storing it
	Serve []float64 // from the flip's start until every router serves it
	Load  []float64 // each router's load of it, as its metric reports
	// Checkpoints are the flips that also stored the ring whole after
	// their commit (every etcd.DefaultFullEvery-th); Flip holds them too.
	Checkpoints []float64
	Bytes       int // stored size of the last version
}

// FlipRing moves side's transfer n times, forward then back, as a split's
// cutover and its revert do (read the current ring, check where the vnodes
// are, store the change), waits after each until every router reports it
// serves the new version, and reads the load time each router's metric
// gives. s is the flipper's store, kept across calls as an orchestrator
// keeps its own for a job: it remembers the ring it last wrote.
func FlipRing(ctx context.Context, s *etcd.RingStore, side RingSide, n int) (RingFlips, error) {
	var res RingFlips
	for i := 0; i < n; i++ {
		t := side.Transfer
		if i%2 == 1 {
			t.From, t.To = t.To, t.From
		}
		start := time.Now()
		rg, rv, err := s.Current(ctx)
		if err != nil {
			return res, err
		}
		d, err := rg.TransferDelta([]ring.Transfer{t})
		if err != nil {
			return res, err
		}
		if d == nil {
			return res, fmt.Errorf("flip %d: vnodes %s are on %s already", i, t.Vnodes, t.To)
		}
		nv, err := s.PutDelta(ctx, rg, rv, d, fmt.Sprintf("bench compare: flip %d", i))
		if err != nil {
			return res, err
		}
		flip := ms(time.Since(start))
		res.Flip = append(res.Flip, flip)
		if nv.Checkpoint != nil {
			res.Checkpoints = append(res.Checkpoints, flip)
		}
		res.Bytes = nv.Size
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = etcd.WaitRoutersServe(wctx, side.Etcd, nv.Version, len(side.Routers))
		cancel()
		if err != nil {
			return res, fmt.Errorf("flip %d: routers serving ring version %d: %w", i, nv.Version, err)
		}
		res.Serve = append(res.Serve, ms(time.Since(start)))
		for _, u := range side.Routers {
			res.Load = append(res.Load, 1000*ScrapeGauge(ctx, u+"/metrics", "reshard_router_ring_load_seconds"))
		}
	}
	return res, nil
}

// CompareRing flips small's and large's split n times each, their flips
// interleaved so drift on the machine falls on both, first as deltas and
// then as whole rings, and compares the large ring's costs with the small
// one's, and deltas with whole rings at the large size.
func CompareRing(ctx context.Context, small, large RingSide, n int, progress func(string)) ([]Result, error) {
	type run struct {
		side  RingSide
		store *etcd.RingStore
		got   RingFlips
	}
	var runs []*run
	for _, whole := range []bool{false, true} {
		for _, side := range []RingSide{small, large} {
			s := etcd.NewRingStore(side.Etcd)
			if whole {
				s.MaxDelta = 1 // every delta is too large: stored whole, as before deltas
			}
			runs = append(runs, &run{side: side, store: s})
		}
	}
	const batch = 2 // flips per turn: forward and back, so each turn ends where it began
	// Deltas first, then whole rings: a whole ring's reload leaves the
	// routers collecting garbage for a while, which would fall on the
	// deltas' figures if the two alternated.
	for _, pair := range [][]*run{runs[:2], runs[2:]} {
		for done := 0; done < n; done += batch {
			for k := range pair {
				r := pair[(k+done/batch)%2] // alternate which size goes first
				f, err := FlipRing(ctx, r.store, r.side, batch)
				if err != nil {
					return nil, fmt.Errorf("%d vnodes: %w", r.side.Vnodes, err)
				}
				r.got.Flip = append(r.got.Flip, f.Flip...)
				r.got.Serve = append(r.got.Serve, f.Serve...)
				r.got.Load = append(r.got.Load, f.Load...)
				r.got.Checkpoints = append(r.got.Checkpoints, f.Checkpoints...)
				r.got.Bytes = f.Bytes
			}
			if progress != nil && (done+batch)%16 == 0 {
				progress(fmt.Sprintf("%s: %d of %d flips at each size", map[bool]string{false: "deltas", true: "whole rings"}[pair[0].store.MaxDelta == 1], done+batch, n))
			}
		}
	}
	sm, lg, smWhole, lgWhole := runs[0].got, runs[1].got, runs[2].got, runs[3].got
	size := func(v int) string { return HumanCount(v) + " vnodes" }
	detail := func(a, b []float64, what string) string {
		a50, a99, amax := Percentiles(a)
		b50, b99, bmax := Percentiles(b)
		return fmt.Sprintf("%s p50/p99/max %.2f/%.2f/%.2f ms against %.2f/%.2f/%.2f ms, %d each", what, a50, a99, amax, b50, b99, bmax, len(a))
	}
	p50 := func(v []float64) float64 { p, _, _ := Percentiles(v); return p }
	var out []Result
	r := Quicker("ring", "flip, "+size(large.Vnodes), "the same at "+size(small.Vnodes), "ms", p50(lg.Flip), p50(sm.Flip), ringGoal)
	r.Detail = detail(lg.Flip, sm.Flip, "flips") + fmt.Sprintf("; stored as deltas of %d and %d bytes", lg.Bytes, sm.Bytes)
	if len(lg.Checkpoints) > 0 {
		c50, _, _ := Percentiles(lg.Checkpoints)
		r.Detail += fmt.Sprintf("; %d of them also stored the ring whole after the commit, p50 %.1f ms", len(lg.Checkpoints), c50)
	}
	out = append(out, r)
	r = Quicker("ring", "router reload, "+size(large.Vnodes), "the same at "+size(small.Vnodes), "ms", p50(lg.Load), p50(sm.Load), ringGoal)
	r.Detail = detail(lg.Load, sm.Load, "reloads (each router's reshard_router_ring_load_seconds)")
	out = append(out, r)
	r = Quicker("ring", "flip until every router serves it, "+size(large.Vnodes), "the same at "+size(small.Vnodes), "ms", p50(lg.Serve), p50(sm.Serve), ringGoal)
	r.Detail = detail(lg.Serve, sm.Serve, "")
	out = append(out, r)
	r = Quicker("ring", "flip, "+size(large.Vnodes)+", as a delta", "stored whole, as before deltas", "ms", p50(lg.Flip), p50(lgWhole.Flip), 0)
	r.Detail = detail(lg.Flip, lgWhole.Flip, "flips") + fmt.Sprintf("; %d bytes against %d", lg.Bytes, lgWhole.Bytes)
	out = append(out, r)
	r = Quicker("ring", "router reload, "+size(large.Vnodes)+", of a delta", "of a whole ring, as before deltas", "ms", p50(lg.Load), p50(lgWhole.Load), 0)
	r.Detail = detail(lg.Load, lgWhole.Load, "reloads") + fmt.Sprintf("; at %s: whole rings flip in %.2f ms, reload in %.2f ms", size(small.Vnodes), p50(smWhole.Flip), p50(smWhole.Load))
	out = append(out, r)
	return out, nil
}

// HumanCount writes 1000000 as 1M and 20000 as 20k.
func HumanCount(n int) string {
	switch {
	case n >= 1_000_000 && n%100_000 == 0:
		return strconv.FormatFloat(float64(n)/1e6, 'f', -1, 64) + "M"
	case n >= 1000 && n%100 == 0:
		return strconv.FormatFloat(float64(n)/1e3, 'f', -1, 64) + "k"
	}
	return strconv.Itoa(n)
}

// ScrapeGauge reads one unlabeled gauge from a Prometheus text page; 0 if
// it cannot.
func ScrapeGauge(ctx context.Context, url, name string) float64 {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}
