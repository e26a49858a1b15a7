package orchestrator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/reshard/reshard/etcd"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/reshard/reshard"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/ring"
	"github.com/reshard/reshard/shard"
)

// Request is what an operator asks for (RFD 103's inputs).
type Request struct {
	From      string
	To        []string
	SplitHalf bool
	Vnodes    string // explicit list, e.g. "0, 106, 943, 689"
	DCMode    DCMode
	Servers   int
	Strategy  StrategyName // Logical when empty
	RateLimit int          // cleanup rows per second
	LagBytes  int64        // catch-up threshold
	// Provisioner creates the new peers of the physical strategy, e.g.
	// "lab:/tmp/lab"; see Orchestrator.Provisioners.
	Provisioner string
	// ZooKeeper is the ensemble ("HOST:PORT" each) where the dump lock is
	// also a znode; empty takes the pnodes' own. ZooKeeperPath is the
	// znode, DefaultZnodePath when empty.
	ZooKeeper     []string
	ZooKeeperPath string
	// WaitDumpLock starts a job even though another holder has the dump
	// lock znode now: the job waits for it at its dump-lock phase. Without
	// it, start refuses, as RFD 103 step 6 wants no dump running.
	WaitDumpLock bool
	// Complete says when the way back closes after the flip: "auto" (at
	// once, the default), "manual" or "after:DURATION" (see ParseComplete).
	Complete string
	// MaxXactAge is the oldest transaction on the origin a job starts
	// with: an older one would hold the freeze (DefaultMaxXactAge when 0).
	MaxXactAge time.Duration
	// SkipChecks names pre-flight checks (CheckKinds) to report but not
	// refuse on: the operator knows better (a disk that will grow).
	SkipChecks []string
	// CleanupPace, CleanupTarget and MaxReplicaLag set the cleanup's pace
	// (see pace.go): adaptive by default, within RateLimit.
	CleanupPace   string
	CleanupTarget time.Duration
	MaxReplicaLag int64
	// MaxSlotLag is the WAL budget of the job's slots; 0: a quarter of the
	// origin's free disk (see slotguard.go).
	MaxSlotLag int64
}

func (r *Request) check() error {
	if r.Strategy == "" {
		r.Strategy = Logical
	}
	if _, err := strategyOf(r.Strategy); err != nil {
		return err
	}
	if r.Complete == "" {
		r.Complete = CompleteAuto
	}
	if _, err := ParseComplete(r.Complete); err != nil {
		return err
	}
	switch r.CleanupPace {
	case "":
		r.CleanupPace = PaceAdaptive
	case PaceAdaptive, PaceFixed:
	default:
		return fmt.Errorf("--cleanup-pace %q: use %s or %s", r.CleanupPace, PaceAdaptive, PaceFixed)
	}
	if r.CleanupTarget < 0 || r.MaxReplicaLag < 0 || r.MaxSlotLag < 0 {
		return fmt.Errorf("--cleanup-target, --max-replica-lag and --max-slot-lag-bytes must not be negative")
	}
	for _, k := range r.SkipChecks {
		if !slices.Contains(CheckKinds, k) {
			return fmt.Errorf("--skip-check %q: use %s", k, strings.Join(CheckKinds, ", "))
		}
	}
	if r.DCMode != SingleDC && r.DCMode != TripleDC {
		return fmt.Errorf("--dc-mode must be %s or %s, got %q", SingleDC, TripleDC, r.DCMode)
	}
	if r.From == "" || len(r.To) == 0 {
		return fmt.Errorf("--from and at least one --to are required")
	}
	if r.SplitHalf == (r.Vnodes != "") {
		return fmt.Errorf("give exactly one of --split-half and --vnodes")
	}
	seen := map[string]bool{r.From: true}
	for _, t := range r.To {
		if seen[t] {
			return fmt.Errorf("pnode %s given twice (a destination must differ from the origin and the other destinations)", t)
		}
		seen[t] = true
	}
	if r.RateLimit <= 0 {
		return fmt.Errorf("--rate-limit must be positive, got %d", r.RateLimit)
	}
	if r.LagBytes <= 0 {
		r.LagBytes = 1 << 20
	}
	return nil
}

// Plan validates a request against the registry, the ring and the shards,
// and says what the job would do. It changes nothing.
func (o *Orchestrator) Plan(ctx context.Context, req Request) (*Job, error) {
	if err := req.check(); err != nil {
		return nil, err
	}
	if err := reshard.ValidatePnodeName(req.From); err != nil {
		return nil, err
	}
	origin, err := o.reg.Pnode(ctx, req.From)
	if err != nil {
		return nil, fmt.Errorf("origin: %w", err)
	}
	strat, _ := strategyOf(req.Strategy)
	creates := strat.CreatesDestinations
	dests := make([]reshard.Pnode, len(req.To))
	for i, t := range req.To {
		if err := reshard.ValidatePnodeName(t); err != nil {
			return nil, err
		}
		dests[i], err = o.reg.Pnode(ctx, t)
		switch {
		case creates && err == nil:
			return nil, fmt.Errorf("destination %s is already registered; the %s strategy creates it from new peers of %s", t, req.Strategy, req.From)
		case creates && errors.Is(err, reshard.ErrNotFound):
		case err != nil:
			return nil, fmt.Errorf("destination: %w", err)
		}
	}
	if strat.Check != nil {
		if err := strat.Check(o, req); err != nil {
			return nil, err
		}
	}
	locks, err := o.store.PnodeLocks(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range append([]string{req.From}, req.To...) {
		if id, ok := locks[p]; ok {
			return nil, fmt.Errorf("pnode %s is in job %s; one job per pnode at a time", p, id)
		}
	}
	if err := checkServers(req, creates, dests); err != nil {
		return nil, err
	}
	zkServers, zkPath, err := dumpZnodeConfig(req, append([]reshard.Pnode{origin}, dests...))
	if err != nil {
		return nil, err
	}
	rg, rv, err := o.rings.Current(ctx)
	if err != nil {
		return nil, err
	}
	owned, err := rg.VnodesOf(req.From)
	if err != nil || len(owned) == 0 {
		return nil, fmt.Errorf("the ring maps no vnodes to %s", req.From)
	}
	for _, t := range req.To {
		if rg.PnodeVnodeCount(t) > 0 {
			return nil, fmt.Errorf("destination %s already owns %d vnodes in the ring", t, rg.PnodeVnodeCount(t))
		}
	}
	buckets, err := movableBuckets(ctx, o.buckets)
	if err != nil {
		return nil, err
	}

	oconn, err := connectPrimary(ctx, origin)
	if err != nil {
		return nil, err
	}
	defer oconn.Close(ctx)
	have, err := shard.Buckets(ctx, oconn)
	if err != nil {
		return nil, fmt.Errorf("origin %s: %w", req.From, err)
	}
	for _, b := range buckets {
		if _, ok := have[b]; !ok {
			return nil, fmt.Errorf("bucket %s is missing on the origin %s", b, req.From)
		}
	}
	for _, d := range dests {
		if creates {
			break
		}
		if err := checkEmpty(ctx, d); err != nil {
			return nil, err
		}
	}
	stats, err := shard.VnodeStats(ctx, oconn, buckets...)
	if err != nil {
		return nil, err
	}
	rows := map[uint32]shard.VnodeStat{}
	var originBytes int64
	for _, s := range stats {
		rows[uint32(s.Vnode)] = s
		originBytes += s.Bytes
	}

	var moving []uint32
	if req.SplitHalf {
		moving = splitHalf(owned, rows)
	} else {
		list, err := ring.ParseVnodeList(req.Vnodes, rg.Vnodes())
		if err != nil {
			return nil, err
		}
		ownedSet := map[uint32]bool{}
		for _, v := range owned {
			ownedSet[v] = true
		}
		for _, v := range list {
			if !ownedSet[v] {
				p, _, _ := rg.Vnode(v)
				return nil, fmt.Errorf("vnode %d is on %s, not on the origin %s", v, p, req.From)
			}
		}
		if len(list) == len(owned) {
			return nil, fmt.Errorf("that moves every vnode of %s; leave it at least one", req.From)
		}
		moving = list
	}
	if len(moving) == 0 {
		return nil, fmt.Errorf("%s has a single vnode: there is nothing to split", req.From)
	}
	slices.Sort(moving)
	job := &Job{
		ID: newJobID(), Strategy: req.Strategy, From: req.From, To: req.To, DCMode: req.DCMode,
		Servers: req.Servers, Buckets: buckets, RateLimit: req.RateLimit, LagBytes: req.LagBytes,
		Provisioner: req.Provisioner, RingVnodes: rg.Vnodes(),
		State: Pending, RingVersionBefore: rv.Version, Created: time.Now().UTC(),
		ZooKeeper: zkServers, ZooKeeperPath: zkPath, Complete: req.Complete, OriginBytes: originBytes,
		MaxSlotLagBytes: req.MaxSlotLag,
		CleanupPace:     req.CleanupPace, CleanupTargetMS: float64(req.CleanupTarget.Microseconds()) / 1000, MaxReplicaLag: req.MaxReplicaLag,
	}
	for i, part := range divide(moving, rows, len(req.To)) {
		m := Move{To: req.To[i], Vnodes: ring.FormatVnodeList(part), Count: len(part), Ranges: ranges(part, owned)}
		for _, v := range part {
			m.Rows += rows[v].Rows
			m.Bytes += rows[v].Bytes
		}
		job.Moves = append(job.Moves, m)
	}
	if n, err := shard.UnownedRows(ctx, oconn, buckets, job.AllRanges()); err != nil {
		return nil, err
	} else if n > 0 {
		return nil, fmt.Errorf("the origin %s holds %d rows of vnodes it does not own in the moving ranges (an earlier move not cleaned up)", req.From, n)
	}
	for _, p := range strat.Phases {
		job.Phases = append(job.Phases, Phase{Name: p.Name, State: Pending})
	}
	if err := o.checkZnode(ctx, job, req.WaitDumpLock); err != nil {
		return nil, err
	}
	if err := o.preflight(ctx, job, req.MaxXactAge, req.SkipChecks); err != nil {
		return nil, fmt.Errorf("pre-flight checks: %w", err)
	}
	return job, nil
}

// checkServers applies the RFD's rule: each destination pnode is 1 server in
// single-DC mode and 3 (one per DC) in triple-DC mode.
// When the strategy creates the destinations it makes exactly that many.
func checkServers(req Request, creates bool, dests []reshard.Pnode) error {
	per := req.DCMode.ServersPerPnode()
	want := per * len(req.To)
	if req.Servers != want {
		return fmt.Errorf("--servers %d does not fit %d destination pnode(s) in %s-DC mode: expected %d", req.Servers, len(req.To), req.DCMode, want)
	}
	if creates {
		return nil
	}
	got := 0
	for _, d := range dests {
		if per == 1 {
			got++
			continue
		}
		got += len(d.Peers)
	}
	if got != want {
		return fmt.Errorf("the destination pnodes have %d registered servers, %s-DC mode needs %d", got, req.DCMode, want)
	}
	return nil
}

// checkEmpty refuses a destination that holds rows or owns vnodes.
func checkEmpty(ctx context.Context, p reshard.Pnode) error {
	conn, err := connectPrimary(ctx, p)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	owned, err := shard.OwnedCount(ctx, conn)
	if err != nil && !postgres.IsUndefinedTable(err) {
		return fmt.Errorf("destination %s: %w", p.Name, err)
	}
	if owned > 0 {
		return fmt.Errorf("destination %s already owns %d vnodes", p.Name, owned)
	}
	bs, err := shard.Buckets(ctx, conn)
	if err != nil && !postgres.IsUndefinedTable(err) {
		return fmt.Errorf("destination %s: %w", p.Name, err)
	}
	for b := range bs {
		full, err := shard.HasRows(ctx, conn, b)
		if err != nil {
			return fmt.Errorf("destination %s: %w", p.Name, err)
		}
		if full {
			return fmt.Errorf("destination %s already holds rows in bucket %s", p.Name, b)
		}
	}
	return nil
}

func connectPrimary(ctx context.Context, p reshard.Pnode) (*pgx.Conn, error) {
	primary, err := p.Primary()
	if err != nil {
		return nil, err
	}
	return postgres.Connect(ctx, primary.DSN)
}

// splitHalf picks a prefix of the origin's vnodes, in vnode order, holding
// about half its rows: one contiguous range, so the row filter stays one
// range however many vnodes move. It never takes none or all of them.
func splitHalf(owned []uint32, rows map[uint32]shard.VnodeStat) []uint32 {
	vs := slices.Clone(owned)
	slices.Sort(vs)
	var total int64
	for _, v := range vs {
		total += rows[v].Rows
	}
	k := len(vs) / 2
	if total > 0 {
		var sum int64
		best := int64(-1)
		for i, v := range vs {
			sum += rows[v].Rows
			d := 2*sum - total
			if d < 0 {
				d = -d
			}
			if best < 0 || d < best {
				best, k = d, i+1
			}
		}
	}
	return vs[:min(max(k, 1), len(vs)-1)]
}

// divide splits moving vnodes into n contiguous parts of about equal rows.
func divide(moving []uint32, rows map[uint32]shard.VnodeStat, n int) [][]uint32 {
	if n == 1 {
		return [][]uint32{moving}
	}
	var total int64
	for _, v := range moving {
		total += rows[v].Rows + 1 // +1 so empty vnodes still spread
	}
	out := make([][]uint32, 0, n)
	start := 0
	var sum int64
	for i, v := range moving {
		sum += rows[v].Rows + 1
		left := len(moving) - i - 1
		if len(out) < n-1 && sum*int64(n) >= total*int64(len(out)+1) && left >= n-1-len(out) {
			out = append(out, moving[start:i+1])
			start = i + 1
		}
	}
	out = append(out, moving[start:])
	for len(out) < n {
		out = append(out, nil)
	}
	return out
}

// ranges writes moving as ranges over vnode ids that select exactly the
// moving vnodes among those the origin owns: the origin's tables hold only
// its own vnodes, so vnodes in a range that it does not own select nothing.
func ranges(moving, owned []uint32) []shard.Range {
	mv := map[uint32]bool{}
	for _, v := range moving {
		mv[v] = true
	}
	vs := slices.Clone(owned)
	slices.Sort(vs)
	var out []shard.Range
	in := false
	for _, v := range vs {
		switch {
		case mv[v] && !in:
			out = append(out, shard.Range{Lo: int32(v), Hi: int32(v)})
			in = true
		case mv[v]:
			out[len(out)-1].Hi = int32(v)
		default:
			in = false
		}
	}
	return out
}

func newJobID() string {
	b := make([]byte, 2)
	rand.Read(b)
	return "r" + time.Now().UTC().Format("20060102t150405") + hex.EncodeToString(b)
}

// movableBuckets lists, sorted, the buckets a job moves: all but the
// shard-local ones, whose rows stay on the shard that wrote them.
func movableBuckets(ctx context.Context, store *etcd.Buckets) ([]string, error) {
	all, err := store.All(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(all))
	for name, raw := range all {
		var o shard.BucketOptions
		if err := json.Unmarshal(raw, &o); err != nil {
			return nil, fmt.Errorf("bucket %s: %w", name, err)
		}
		if !o.ShardLocal {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out, nil
}
