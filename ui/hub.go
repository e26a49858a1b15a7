package ui

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/reshard/reshard"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/orchestrator"
)

// event is one server-sent event: a section of the state that changed.
type event struct {
	Name string
	Data []byte // JSON
}

// hub holds the dashboard's state, kept current by etcd watches (ring,
// jobs, routers, registry, locks) and by sampling what etcd does not hold
// (the peers' WAL positions, the routers' metrics), and fans each change
// out to the pages connected.
type hub struct {
	cfg Config

	mu      sync.Mutex
	ring    *RingView
	history []VersionSummary
	jobs    map[string]*JobSummary
	routers map[string]etcd.RouterInfo
	pnodes  map[string]reshard.Pnode
	locks   map[string]string
	shards  []ShardStatus
	stats   map[string]RouterStats
	subs    map[chan event]struct{}
	wakeCh  chan struct{} // the registry changed: sample now
	peers   peerConns     // the sampler's connections
}

func newHub(cfg Config) *hub {
	return &hub{cfg: cfg, jobs: map[string]*JobSummary{}, routers: map[string]etcd.RouterInfo{},
		pnodes: map[string]reshard.Pnode{}, locks: map[string]string{}, stats: map[string]RouterStats{},
		subs: map[chan event]struct{}{}, wakeCh: make(chan struct{}, 1)}
}

// run follows etcd until ctx ends.
func (h *hub) run(ctx context.Context) {
	go h.followRing(ctx)
	go h.follow(ctx, etcd.JobPrefix, h.applyJobs)
	go h.follow(ctx, etcd.RouterPrefix, h.applyRouters)
	go h.follow(ctx, etcd.PnodePrefix, h.applyPnodes)
	go h.follow(ctx, etcd.LockPrefix, h.applyLocks)
	go h.sample(ctx)
}

func (h *hub) follow(ctx context.Context, prefix string, apply func(etcd.WatchBatch)) {
	for b := range etcd.WatchPrefix(ctx, h.cfg.Etcd, prefix) {
		apply(b)
	}
}

// followRing keeps the ring's picture and history at the current version.
func (h *hub) followRing(ctx context.Context) {
	rings := etcd.NewRingStore(h.cfg.Etcd)
	for ctx.Err() == nil {
		for u := range rings.Watch(ctx) {
			if u.Err != nil {
				if !errors.Is(u.Err, etcd.ErrNoRing) {
					h.cfg.Log.Warn("dashboard: ring watch", "err", u.Err)
				}
				continue
			}
			view := NewRingView(u.Ring, u.Version)
			hist, err := rings.Recent(ctx, historyKept)
			if err != nil {
				h.cfg.Log.Warn("dashboard: ring history", "err", err)
			}
			h.mu.Lock()
			h.ring, h.history = view, summarizeHistory(hist, historyKept)
			h.mu.Unlock()
			h.publish("ring", view)
			h.publish("history", h.snapshotHistory())
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (h *hub) applyJobs(b etcd.WatchBatch) {
	h.mu.Lock()
	if b.Reset {
		h.jobs = map[string]*JobSummary{}
	}
	var changed []*JobSummary
	var gone []string
	for _, c := range b.Changes {
		if c.Value == nil {
			delete(h.jobs, c.Key)
			gone = append(gone, c.Key)
			continue
		}
		var j orchestrator.Job
		if err := json.Unmarshal(c.Value, &j); err != nil {
			h.cfg.Log.Warn("dashboard: job record", "job", c.Key, "err", err)
			continue
		}
		s := summarizeJob(&j)
		h.jobs[c.Key] = s
		changed = append(changed, s)
	}
	h.mu.Unlock()
	if b.Reset {
		h.publish("jobs", h.snapshotJobs())
		return
	}
	for _, s := range changed {
		h.publish("job", s)
	}
	for _, id := range gone {
		h.publish("job-gone", map[string]string{"id": id})
	}
}

func (h *hub) applyRouters(b etcd.WatchBatch) {
	h.mu.Lock()
	h.routers = applyJSON(h.routers, b)
	h.mu.Unlock()
	h.publish("routers", h.snapshotRouters())
}

func (h *hub) applyPnodes(b etcd.WatchBatch) {
	h.mu.Lock()
	h.pnodes = applyJSON(h.pnodes, b)
	h.mu.Unlock()
	h.wake()
}

// applyJSON applies a batch of JSON records to m, by key; a record that
// does not decode is left out.
func applyJSON[T any](m map[string]T, b etcd.WatchBatch) map[string]T {
	if b.Reset {
		m = map[string]T{}
	}
	for _, c := range b.Changes {
		var v T
		if c.Value == nil || json.Unmarshal(c.Value, &v) != nil {
			delete(m, c.Key)
			continue
		}
		m[c.Key] = v
	}
	return m
}

func (h *hub) applyLocks(b etcd.WatchBatch) {
	h.mu.Lock()
	if b.Reset {
		h.locks = map[string]string{}
	}
	for _, c := range b.Changes {
		if c.Value == nil {
			delete(h.locks, c.Key)
		} else {
			h.locks[c.Key] = string(c.Value)
		}
	}
	h.mu.Unlock()
	h.publish("locks", h.snapshotLocks())
}

// sample reads the peers and the routers' metrics every Sample while a page
// is connected (and once at the start, for /api/state), and publishes
// them: each read opens a connection to every peer.
func (h *hub) sample(ctx context.Context) {
	t := time.NewTicker(h.cfg.Sample)
	defer t.Stop()
	defer h.peers.keep(nil)
	for first := true; ; first = false {
		h.mu.Lock()
		idle := len(h.subs) == 0 && !first
		h.mu.Unlock()
		if idle {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				continue
			case <-h.wakeCh:
			}
		}
		h.mu.Lock()
		pnodes := make([]reshard.Pnode, 0, len(h.pnodes))
		for _, p := range h.pnodes {
			pnodes = append(pnodes, p)
		}
		routers := make([]etcd.RouterInfo, 0, len(h.routers))
		for _, r := range h.routers {
			routers = append(routers, r)
		}
		prev := h.stats
		h.mu.Unlock()
		sort.Slice(pnodes, func(i, j int) bool { return pnodes[i].Name < pnodes[j].Name })
		shards := readShards(ctx, &h.peers, pnodes)
		stats := readRouterStats(ctx, routers, prev)
		h.mu.Lock()
		h.shards, h.stats = shards, stats
		h.mu.Unlock()
		h.publish("shards", shards)
		h.publish("routers", h.snapshotRouters())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-h.wakeCh:
		}
	}
}

// wake makes the sampler read now (the registry changed).
func (h *hub) wake() {
	select {
	case h.wakeCh <- struct{}{}:
	default:
	}
}

// subscribe registers a page; the returned channel gets every event from
// now on, after a snapshot of everything.
func (h *hub) subscribe() (chan event, func()) {
	ch := make(chan event, 64)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	h.wake() // fresh peers and metrics for the page
	return ch, func() {
		h.mu.Lock()
		delete(h.subs, ch)
		h.mu.Unlock()
	}
}

// publish sends a section to every page. A page too slow to take it
// misses it and gets the whole state again (a "resync" event).
func (h *hub) publish(name string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		h.cfg.Log.Warn("dashboard: encode", "event", name, "err", err)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- event{Name: name, Data: b}:
		default:
			select {
			case ch <- event{Name: "resync", Data: []byte("{}")}:
			default:
			}
		}
	}
}

// State is everything the page shows, as /api/state returns it and the
// events stream starts with.
type State struct {
	Time    time.Time         `json:"time"`
	Ring    *RingView         `json:"ring"`
	History []VersionSummary  `json:"history"`
	Jobs    []*JobSummary     `json:"jobs"`
	Routers []RouterRow       `json:"routers"`
	Shards  []ShardStatus     `json:"shards"`
	Locks   map[string]string `json:"locks"`
	Actions bool              `json:"actions"` // the server takes revert/complete/abort (with the token)
}

func (h *hub) state() State {
	return State{Time: time.Now().UTC(), Ring: h.snapshotRing(), History: h.snapshotHistory(), Jobs: h.snapshotJobs(),
		Routers: h.snapshotRouters(), Shards: h.snapshotShards(), Locks: h.snapshotLocks(), Actions: h.cfg.Token != "" && h.cfg.Act != nil}
}

func (h *hub) snapshotRing() *RingView {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ring
}

func (h *hub) snapshotHistory() []VersionSummary {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.history
}

// snapshotJobs lists every job, newest first.
func (h *hub) snapshotJobs() []*JobSummary {
	h.mu.Lock()
	out := make([]*JobSummary, 0, len(h.jobs))
	for _, j := range h.jobs {
		out = append(out, j)
	}
	h.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].ID > out[j].ID
	})
	return out
}

func (h *hub) snapshotRouters() []RouterRow {
	h.mu.Lock()
	out := make([]RouterRow, 0, len(h.routers))
	for _, ri := range h.routers {
		out = append(out, RouterRow{RouterInfo: ri, Stats: h.stats[ri.Name]})
	}
	h.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (h *hub) snapshotShards() []ShardStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.shards
}

func (h *hub) snapshotLocks() map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]string, len(h.locks))
	for k, v := range h.locks {
		out[k] = strings.TrimSpace(v) // the page shortens long holders
	}
	return out
}
