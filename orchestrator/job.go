// Package orchestrator runs reshard jobs: RFD 103's runbook as persisted,
// idempotent phases in etcd. A killed orchestrator resumes where it
// stopped; every phase is safe to run twice.
package orchestrator

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/reshard/reshard"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/shard"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// State of a job or a phase.
type State string

const (
	Pending  State = "pending"
	Running  State = "running"
	Done     State = "done"
	Failed   State = "failed"
	Aborted  State = "aborted"
	Aborting State = "aborting"
	// After the flip the way back stays open until the job completes or
	// reverts (see wayback.go).
	Flipped    State = "flipped"    // waiting for 'reshard complete' or 'reshard revert'
	Completing State = "completing" // closing the way back, then the cleanup
	Reverting  State = "reverting"  // going back to the origin
	Reverted   State = "reverted"   // back on the origin, nothing of the job left
	// Phase states only: a phase waiting for an operator's decision, and
	// one a revert left out.
	Waiting State = "waiting"
	Skipped State = "skipped"
)

// DCMode is RFD 103's datacenter layout of a pnode: one server, or three
// (one per datacenter).
type DCMode string

const (
	SingleDC DCMode = "single"
	TripleDC DCMode = "triple"
)

// ServersPerPnode is how many servers (peers) each pnode has in the mode.
func (m DCMode) ServersPerPnode() int {
	if m == TripleDC {
		return 3
	}
	return 1
}

// Progress of a long phase.
type Progress struct {
	Done       int64   `json:"done"`
	Total      int64   `json:"total"`
	Unit       string  `json:"unit"`
	Rate       float64 `json:"rate,omitempty"` // units per second
	ETASeconds float64 `json:"eta_seconds,omitempty"`
	Note       string  `json:"note,omitempty"`
}

// Phase is one step of a job.
type Phase struct {
	Name     string     `json:"name"`
	State    State      `json:"state"`
	Started  *time.Time `json:"started,omitempty"`
	Ended    *time.Time `json:"ended,omitempty"`
	Seconds  float64    `json:"seconds"`
	Attempts int        `json:"attempts,omitempty"`
	Progress *Progress  `json:"progress,omitempty"`
	Error    string     `json:"error,omitempty"`
}

// Move is the part of a job that goes to one destination.
type Move struct {
	To     string        `json:"to"`
	Vnodes string        `json:"vnodes"` // compact list: "0-510/2,7"
	Count  int           `json:"count"`
	Ranges []shard.Range `json:"ranges"` // the row filter: ranges over the origin's vnodes
	Rows   int64         `json:"rows"`
	Bytes  int64         `json:"bytes"`
}

// Job is a reshard: the vnodes of one pnode moving to others.
type Job struct {
	ID        string       `json:"id"`
	Strategy  StrategyName `json:"strategy"`
	From      string       `json:"from"`
	To        []string     `json:"to"`
	DCMode    DCMode       `json:"dc_mode"`
	Servers   int          `json:"servers"`
	Moves     []Move       `json:"moves"`
	Buckets   []string     `json:"buckets"`
	RateLimit int          `json:"rate_limit"` // rows per second deleted in cleanup, at most
	// CleanupPace is PaceAdaptive (the default: the pace follows the
	// foreground, see pace.go) or PaceFixed (RateLimit throughout; also a
	// job recorded before the pace could adapt).
	CleanupPace     string    `json:"cleanup_pace,omitempty"`
	CleanupTargetMS float64   `json:"cleanup_target_ms,omitempty"` // the foreground latency to hold; 0: 1.25x before
	MaxReplicaLag   int64     `json:"max_replica_lag,omitempty"`
	LagBytes        int64     `json:"lag_threshold_bytes"`
	State           State     `json:"state"`
	Phases          []Phase   `json:"phases"`
	Current         string    `json:"current,omitempty"`
	Created         time.Time `json:"created"`
	Updated         time.Time `json:"updated"`
	Error           string    `json:"error,omitempty"`

	RingVersionBefore int64 `json:"ring_version_before"`
	RingVersionAfter  int64 `json:"ring_version_after,omitempty"`
	// Cutover records the last cutover step finished, so a resumed cutover
	// never repeats a step whose effect a later step built on.
	Cutover      int       `json:"cutover_step"`
	Frozen       bool      `json:"frozen"`
	FrozenAt     time.Time `json:"frozen_at,omitempty"`
	WriteBlockMS float64   `json:"write_block_ms,omitempty"`
	// PromoteMS is the part of the write block that PostgreSQL spent
	// promoting the new primaries (the physical strategy): a new timeline,
	// its history file and the copy of the last WAL segment, which no
	// change of ours makes shorter.
	PromoteMS float64 `json:"promote_ms,omitempty"`
	// CutoverMS is how long each cutover step took, by name, so the write
	// block can be read step by step.
	CutoverMS  map[string]float64 `json:"cutover_ms,omitempty"`
	Mismatched []int32            `json:"mismatched,omitempty"` // vnodes to check again, exactly, while frozen
	// SubscriptionOIDs is each move's subscription's oid on its
	// destination (logical strategy): its table-sync slots on the origin
	// are named after it, and an abort must drop them even when the
	// destination cannot be asked.
	SubscriptionOIDs map[int]uint32 `json:"subscription_oids,omitempty"`
	Warnings         []string       `json:"warnings,omitempty"`
	RingVnodes       int            `json:"ring_vnodes"`
	// Physical strategy: who creates peers, the peers created for each new
	// pnode, and the origin's WAL position right after the freeze.
	Provisioner string                    `json:"provisioner,omitempty"`
	NewPeers    map[string][]reshard.Peer `json:"new_peers,omitempty"`
	FreezeLSN   string                    `json:"freeze_lsn,omitempty"`
	// ZooKeeper, when set, is the ensemble where the dump lock is also
	// taken as the znode ZooKeeperPath, for Manatee's dump job to see. It
	// is kept here so a resumed job uses the same one.
	ZooKeeper     []string `json:"zookeeper,omitempty"`
	ZooKeeperPath string   `json:"zookeeper_path,omitempty"`

	// Complete says when the way back closes after the flip: "auto",
	// "manual" or "after:DURATION" (see ParseComplete).
	Complete  string    `json:"complete,omitempty"`
	FlippedAt time.Time `json:"flipped_at,omitzero"`
	// BackLSN is each move's destination WAL position before it took
	// writes: the way back streams what the destination wrote after it.
	BackLSN map[int]string `json:"back_lsn,omitempty"`
	// WayBackClosed says why the way back was closed before the job
	// completed (its slot's WAL, see slotguard.go): it can only complete.
	WayBackClosed string `json:"way_back_closed,omitempty"`
	// Revert, once asked for, records the way back taken.
	Revert *Revert `json:"revert,omitempty"`
	// OriginBytes is the size of the origin's rows the plan counted, all
	// vnodes; each Move's Bytes is its share.
	OriginBytes int64 `json:"origin_bytes,omitempty"`
	// MaxSlotLagBytes is the WAL budget of the job's slots (slotguard.go).
	MaxSlotLagBytes int64 `json:"max_slot_lag_bytes,omitempty"`
	// Paused says why the job waits for its slots to drain, while it does.
	Paused string `json:"paused,omitempty"`
	// Preflight is what was checked before the job started, and Estimate
	// how long each phase should take.
	Preflight []Check         `json:"preflight,omitempty"`
	Estimate  []PhaseEstimate `json:"estimate,omitempty"`
}

// Revert records a revert's cutover, step by step, as the forward one is
// recorded in the job.
type Revert struct {
	Requested    time.Time          `json:"requested"`
	Cutover      int                `json:"cutover_step"`
	Frozen       bool               `json:"frozen"`
	FrozenAt     time.Time          `json:"frozen_at,omitzero"`
	WriteBlockMS float64            `json:"write_block_ms,omitempty"`
	CutoverMS    map[string]float64 `json:"cutover_ms,omitempty"`
	RingVersion  int64              `json:"ring_version,omitempty"`
}

// phase returns the named phase.
func (j *Job) phase(name string) *Phase {
	for i := range j.Phases {
		if j.Phases[i].Name == name {
			return &j.Phases[i]
		}
	}
	return nil
}

// FlipDone reports whether the ring already sends the moved vnodes to their
// new pnodes; after that a job can only go forward.
func (j *Job) FlipDone() bool { return j.RingVersionAfter != 0 }

// AllRanges is every moving range.
func (j *Job) AllRanges() []shard.Range {
	var out []shard.Range
	for _, m := range j.Moves {
		out = append(out, m.Ranges...)
	}
	return out
}

// Pnodes lists the origin and destinations.
func (j *Job) Pnodes() []string { return append([]string{j.From}, j.To...) }

// Store keeps job records through etcd's job store.
type Store struct{ jobs *etcd.Jobs }

// NewStore returns the job store.
func NewStore(cli *clientv3.Client) *Store { return &Store{jobs: etcd.NewJobs(cli)} }

// Create stores a new job and locks its pnodes in one transaction, so two
// jobs can never touch the same pnode.
func (s *Store) Create(ctx context.Context, j *Job) error {
	return s.jobs.Create(ctx, j.ID, j, j.Pnodes())
}

// Save writes the job back. Under the fence of a run it is refused once
// another orchestrator holds the job.
func (s *Store) Save(ctx context.Context, j *Job) error {
	j.Updated = time.Now().UTC()
	return s.jobs.Save(ctx, j.ID, j)
}

// Get reads one job.
func (s *Store) Get(ctx context.Context, id string) (*Job, error) {
	var j Job
	if err := s.jobs.Get(ctx, id, &j); err != nil {
		return nil, err
	}
	return &j, nil
}

// List reads every job, newest first.
func (s *Store) List(ctx context.Context) ([]*Job, error) {
	raw, err := s.jobs.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*Job, 0, len(raw))
	for _, b := range raw {
		var j Job
		if err := json.Unmarshal(b, &j); err != nil {
			return nil, fmt.Errorf("job record: %w", err)
		}
		out = append(out, &j)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Created.After(out[b].Created) })
	return out, nil
}

// ReleasePnodes frees the job's pnodes for other jobs.
func (s *Store) ReleasePnodes(ctx context.Context, j *Job) error {
	return s.jobs.ReleasePnodes(ctx, j.ID, j.Pnodes())
}

// PnodeLocks maps each locked pnode to the job holding it.
func (s *Store) PnodeLocks(ctx context.Context) (map[string]string, error) {
	return etcd.PnodeLocks(ctx, s.jobs.Client())
}
