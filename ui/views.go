package ui

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/reshard/reshard"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/orchestrator"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/ring"
	"github.com/reshard/reshard/shard"
)

// ringSpans is the resolution the ring is drawn at: a 1,000,000-vnode
// ring becomes 1,024 spans of 977 vnodes, each with its count per pnode.
const ringSpans = 1024

// historyKept is how many ring versions, newest, the page lists.
const historyKept = 50

// RingView is the current ring as the page draws it.
type RingView struct {
	Version   int64  `json:"version"`
	Vnodes    int    `json:"vnodes"`
	Algorithm string `json:"algorithm"`
	Stored    string `json:"stored"`
	ring.Census
}

// NewRingView draws r, version rv.
func NewRingView(r *ring.Ring, rv etcd.RingVersion) *RingView {
	return &RingView{Version: rv.Version, Vnodes: r.Vnodes(), Algorithm: r.Algorithm().String(), Stored: rv.Stored(), Census: r.Census(ringSpans)}
}

// VersionSummary is one ring version in the history: what it moved, when
// it is a delta (a whole ring says only that).
type VersionSummary struct {
	Version int64       `json:"version"`
	Time    time.Time   `json:"time"`
	Comment string      `json:"comment"`
	Stored  string      `json:"stored"`
	Pnodes  int         `json:"pnodes"`
	Moved   []MovedPart `json:"moved,omitempty"`
}

// MovedPart is the vnodes a version gave one pnode.
type MovedPart struct {
	To     string `json:"to"`
	Vnodes string `json:"vnodes"`
	Count  int    `json:"count"`
}

// summarizeHistory keeps the newest n versions, newest first.
func summarizeHistory(h []etcd.RingVersion, n int) []VersionSummary {
	out := []VersionSummary{}
	for i := len(h) - 1; i >= 0 && len(out) < n; i-- {
		v := h[i]
		s := VersionSummary{Version: v.Version, Time: v.Time, Comment: v.Comment, Stored: v.Stored(), Pnodes: v.Pnodes}
		if v.Delta != nil {
			for _, a := range v.Delta.Owners {
				s.Moved = append(s.Moved, MovedPart{To: a.Pnode, Vnodes: a.Vnodes, Count: ring.CountVnodes(a.Vnodes)})
			}
		}
		out = append(out, s)
	}
	return out
}

// JobSummary is what the page shows of a job: the record without the
// parts only the orchestrator reads (preflight details, row filters, new
// peers' addresses).
type JobSummary struct {
	ID           string                       `json:"id"`
	Strategy     string                       `json:"strategy"`
	State        orchestrator.State           `json:"state"`
	From         string                       `json:"from"`
	To           []string                     `json:"to"`
	Current      string                       `json:"current,omitempty"`
	Created      time.Time                    `json:"created"`
	Updated      time.Time                    `json:"updated"`
	Error        string                       `json:"error,omitempty"`
	Paused       string                       `json:"paused,omitempty"`
	Warnings     []string                     `json:"warnings,omitempty"`
	Phases       []orchestrator.Phase         `json:"phases"`
	Moves        []MoveSummary                `json:"moves"`
	Frozen       bool                         `json:"frozen"`
	WriteBlockMS float64                      `json:"write_block_ms,omitempty"`
	CutoverMS    map[string]float64           `json:"cutover_ms,omitempty"`
	RingBefore   int64                        `json:"ring_version_before"`
	RingAfter    int64                        `json:"ring_version_after,omitempty"`
	Complete     string                       `json:"complete,omitempty"`
	Revert       *orchestrator.Revert         `json:"revert,omitempty"`
	Estimate     []orchestrator.PhaseEstimate `json:"estimate,omitempty"`
}

// MoveSummary is a job's move without its row filter.
type MoveSummary struct {
	To     string `json:"to"`
	Vnodes string `json:"vnodes"`
	Count  int    `json:"count"`
	Rows   int64  `json:"rows"`
	Bytes  int64  `json:"bytes"`
}

func summarizeJob(j *orchestrator.Job) *JobSummary {
	s := &JobSummary{ID: j.ID, Strategy: string(j.Strategy), State: j.State, From: j.From, To: j.To, Current: j.Current,
		Created: j.Created, Updated: j.Updated, Error: j.Error, Paused: j.Paused, Warnings: j.Warnings, Phases: j.Phases,
		Frozen: j.Frozen, WriteBlockMS: j.WriteBlockMS, CutoverMS: j.CutoverMS, RingBefore: j.RingVersionBefore,
		RingAfter: j.RingVersionAfter, Complete: j.Complete, Revert: j.Revert, Estimate: j.Estimate}
	for _, m := range j.Moves {
		s.Moves = append(s.Moves, MoveSummary{To: m.To, Vnodes: m.Vnodes, Count: m.Count, Rows: m.Rows, Bytes: m.Bytes})
	}
	return s
}

// ShardStatus is one pnode as `manatee-adm show` prints it, with its size.
type ShardStatus struct {
	Name  string       `json:"name"`
	Peers []PeerStatus `json:"peers"`
	Rows  int64        `json:"rows"`  // estimated, from the planner's statistics
	Bytes int64        `json:"bytes"` // bucket tables, indexes and TOAST
	Error string       `json:"error,omitempty"`
}

// PeerStatus is one peer: its role, where it listens (never its DSN,
// which may hold a password), its WAL position and how far it trails the
// primary.
type PeerStatus struct {
	Name       string       `json:"name"`
	Role       reshard.Role `json:"role"`
	Addr       string       `json:"addr"`
	Up         bool         `json:"up"`
	InRecovery bool         `json:"in_recovery"`
	WAL        postgres.LSN `json:"wal"`
	Sync       string       `json:"sync,omitempty"` // its upstream's sync_state for it
	LagBytes   *uint64      `json:"lag_bytes,omitempty"`
	LagSeconds *float64     `json:"lag_seconds,omitempty"`
}

// peerAddr is host:port of a DSN, without user or password.
func peerAddr(dsn string) string {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return "?"
	}
	return fmt.Sprintf("%s:%d", cfg.Host, cfg.Port)
}

// peerConns keeps one connection per peer from one sample to the next, so
// sampling a fleet of hundreds of peers every few seconds does not open
// hundreds of connections each time. Only the sampler uses them, one
// goroutine per pnode, so no connection is used twice at once.
type peerConns struct {
	mu    sync.Mutex
	conns map[string]*pgx.Conn // by DSN
}

func (pc *peerConns) get(ctx context.Context, dsn string) (*pgx.Conn, error) {
	pc.mu.Lock()
	c := pc.conns[dsn]
	pc.mu.Unlock()
	if c != nil && !c.IsClosed() {
		return c, nil
	}
	c, err := postgres.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	pc.mu.Lock()
	if pc.conns == nil {
		pc.conns = map[string]*pgx.Conn{}
	}
	pc.conns[dsn] = c
	pc.mu.Unlock()
	return c, nil
}

// drop closes a connection that failed; the next sample connects again.
func (pc *peerConns) drop(dsn string) {
	pc.mu.Lock()
	c := pc.conns[dsn]
	delete(pc.conns, dsn)
	pc.mu.Unlock()
	if c != nil {
		c.Close(context.Background())
	}
}

// keep closes the connections of peers no longer registered (all, when
// none is given).
func (pc *peerConns) keep(pnodes []reshard.Pnode) {
	want := map[string]bool{}
	for _, p := range pnodes {
		for _, peer := range p.Peers {
			want[peer.DSN] = true
		}
	}
	pc.mu.Lock()
	var gone []string
	for dsn := range pc.conns {
		if !want[dsn] {
			gone = append(gone, dsn)
		}
	}
	pc.mu.Unlock()
	for _, dsn := range gone {
		pc.drop(dsn)
	}
}

// readShards reads every peer of every pnode at once, each within 2 s.
func readShards(ctx context.Context, pc *peerConns, pnodes []reshard.Pnode) []ShardStatus {
	pc.keep(pnodes)
	out := make([]ShardStatus, len(pnodes))
	var wg sync.WaitGroup
	for i, p := range pnodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = readShard(ctx, pc, p)
		}()
	}
	wg.Wait()
	return out
}

func readShard(ctx context.Context, pc *peerConns, p reshard.Pnode) ShardStatus {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s := ShardStatus{Name: p.Name}
	reps := map[string]*postgres.Replication{}
	var primaryWAL postgres.LSN
	for _, peer := range p.Peers {
		conn, err := pc.get(ctx, peer.DSN)
		if err != nil {
			continue
		}
		r, err := postgres.ReadReplication(ctx, conn)
		if err != nil {
			pc.drop(peer.DSN)
			continue
		}
		reps[peer.Name] = &r
		if !r.InRecovery && peer.Role == reshard.RolePrimary {
			primaryWAL = r.WAL
			if rows, bytes, err := shard.Footprint(ctx, conn); err == nil {
				s.Rows, s.Bytes = rows, bytes
			} else {
				s.Error = err.Error()
			}
		}
	}
	for _, peer := range p.Peers {
		ps := PeerStatus{Name: peer.Name, Role: peer.Role, Addr: peerAddr(peer.DSN)}
		if r := reps[peer.Name]; r != nil {
			ps.Up, ps.InRecovery, ps.WAL = true, r.InRecovery, r.WAL
			if peer.Role != reshard.RolePrimary && primaryWAL != 0 {
				var b uint64
				if primaryWAL > r.WAL {
					b = uint64(primaryWAL - r.WAL)
				}
				ps.LagBytes = &b
			}
		}
		// Whichever peer it streams from lists it by name.
		for _, up := range reps {
			for _, d := range up.Downstream {
				if d.Name == peer.Name {
					ps.Sync = d.SyncState
					if d.ReplayLag != nil {
						sec := d.ReplayLag.Seconds()
						ps.LagSeconds = &sec
					}
				}
			}
		}
		s.Peers = append(s.Peers, ps)
	}
	return s
}

// RouterRow is a registered router and what its metrics say.
type RouterRow struct {
	etcd.RouterInfo
	Stats RouterStats `json:"stats"`
}

// RouterStats is read from a router's /metrics: totals since it started,
// and rates over the last sample.
type RouterStats struct {
	Up          bool      `json:"up"`
	Requests    float64   `json:"requests"`
	Errors      float64   `json:"errors"` // HTTP 5xx and Moray InternalError
	Retries     float64   `json:"retries"`
	RequestRate float64   `json:"request_rate"`
	ErrorRate   float64   `json:"error_rate"`
	RetryRate   float64   `json:"retry_rate"`
	P99MS       float64   `json:"p99_ms"` // over every request since it started, from the histogram
	RingVersion float64   `json:"ring_version"`
	RingLoadMS  float64   `json:"ring_load_ms"`
	At          time.Time `json:"at"`
}

// readRouterStats scrapes every router at once, each within 2 s.
func readRouterStats(ctx context.Context, routers []etcd.RouterInfo, prev map[string]RouterStats) map[string]RouterStats {
	out := map[string]RouterStats{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, ri := range routers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := scrapeRouter(ctx, ri.URL)
			if p, ok := prev[ri.Name]; ok && st.Up && p.Up {
				if dt := st.At.Sub(p.At).Seconds(); dt > 0 {
					st.RequestRate = math.Max(0, st.Requests-p.Requests) / dt
					st.ErrorRate = math.Max(0, st.Errors-p.Errors) / dt
					st.RetryRate = math.Max(0, st.Retries-p.Retries) / dt
				}
			}
			mu.Lock()
			out[ri.Name] = st
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

var scrapeClient = &http.Client{Timeout: 2 * time.Second}

func scrapeRouter(ctx context.Context, url string) RouterStats {
	st := RouterStats{At: time.Now()}
	if url == "" {
		return st
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(url, "/")+"/metrics", nil)
	if err != nil {
		return st
	}
	resp, err := scrapeClient.Do(req)
	if err != nil {
		return st
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return st
	}
	st.Up = true
	if f := fams["reshard_router_requests_total"]; f != nil {
		for _, m := range f.Metric {
			n := m.GetCounter().GetValue()
			st.Requests += n
			for _, l := range m.Label {
				if l.GetName() == "code" && (strings.HasPrefix(l.GetValue(), "5") || l.GetValue() == "InternalError") {
					st.Errors += n
				}
			}
		}
	}
	if f := fams["reshard_router_retries_total"]; f != nil {
		for _, m := range f.Metric {
			st.Retries += m.GetCounter().GetValue()
		}
	}
	if f := fams["reshard_router_request_seconds"]; f != nil {
		// Every series' buckets summed: the p99 of all requests.
		bounds := map[float64]uint64{}
		var total uint64
		for _, m := range f.Metric {
			h := m.GetHistogram()
			total += h.GetSampleCount()
			for _, b := range h.Bucket {
				bounds[b.GetUpperBound()] += b.GetCumulativeCount()
			}
		}
		les := make([]float64, 0, len(bounds))
		for le := range bounds {
			les = append(les, le)
		}
		sort.Float64s(les)
		for _, le := range les {
			if total > 0 && float64(bounds[le]) >= 0.99*float64(total) {
				st.P99MS = le * 1000
				break
			}
		}
	}
	if f := fams["reshard_router_ring_version"]; f != nil && len(f.Metric) > 0 {
		st.RingVersion = f.Metric[0].GetGauge().GetValue()
	}
	if f := fams["reshard_router_ring_load_seconds"]; f != nil && len(f.Metric) > 0 {
		st.RingLoadMS = f.Metric[0].GetGauge().GetValue() * 1000
	}
	return st
}

// parseCount reads a count given to the API: a number from 1 to most, def
// when absent.
func parseCount(s string, def, most int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > most {
		return 0, fmt.Errorf("want a number from 1 to %d, got %q", most, s)
	}
	return n, nil
}
