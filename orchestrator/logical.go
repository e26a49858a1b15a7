package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"time"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/ring"
	"github.com/reshard/reshard/shard"
)

func strategyPhases(strategy string) map[string]func(context.Context, *run) error {
	m := map[string]func(context.Context, *run) error{
		"validate":          validate,
		"prepare":           prepare,
		"replicate":         replicate,
		"copy":              copyPhase,
		"catchup":           catchup,
		"dump-lock":         dumpLock,
		"verify":            verifyPhase,
		"cutover":           cutover,
		"teardown":          teardown,
		"release-dump-lock": releaseDumpLock,
		"cleanup":           cleanup,
		"add-peers":         addPeers,
		"freeze":            freeze,
		"wait-replay":       waitReplay,
		"detach":            detach,
		"register":          register,
	}
	if strategy == "physical" {
		m["catchup"] = physicalCatchup
		m["cutover"] = physicalCutover
		m["cleanup"] = physicalCleanup
	}
	return m
}

// Replication objects are named after the job and the destination.
func pubName(j *Job, i int) string { return fmt.Sprintf("reshard_%s_%d", j.ID, i) }

// settleBuckets waits for bucket changes that started before the job took
// its pnodes (routers refuse any that start after), then takes the bucket
// list again: one created or deleted between the plan and the locks must
// be in, or out of, what the job copies.
func (r *run) settleBuckets(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		busy, err := etcd.BucketChanges(ctx, r.o.cli)
		if err != nil {
			return err
		}
		if len(busy) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bucket changes %v still in flight after 30 s", busy)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	names, err := movableBuckets(ctx, r.o.buckets)
	if err != nil {
		return err
	}
	if !slices.Equal(names, r.job.Buckets) {
		r.job.Warnings = append(r.job.Warnings, fmt.Sprintf("buckets changed while the job started: now %v", names))
		r.job.Buckets = names
		return r.save(ctx)
	}
	return nil
}

// moving lists a move's vnodes as int32 for the ownership functions.
func moving(m Move) ([]int32, error) {
	vs, err := ring.ParseVnodeList(m.Vnodes, 0)
	if err != nil {
		return nil, err
	}
	out := make([]int32, len(vs))
	for i, v := range vs {
		out[i] = int32(v)
	}
	return out, nil
}

func allMoving(j *Job) ([]int32, error) {
	var out []int32
	for _, m := range j.Moves {
		vs, err := moving(m)
		if err != nil {
			return nil, err
		}
		out = append(out, vs...)
	}
	return out, nil
}

// validate checks, at run time, that the ring still maps the moving vnodes
// to the origin: between plan and run an operator may have changed it.
func validate(ctx context.Context, r *run) error {
	j := r.job
	rg, rv, err := r.o.rings.Current(ctx)
	if err != nil {
		return err
	}
	vs, err := allMoving(j)
	if err != nil {
		return fatal("%v", err)
	}
	for _, v := range vs {
		p, _, err := rg.Vnode(uint32(v))
		if err != nil {
			return fatal("%v", err)
		}
		if p != j.From {
			return fatal("vnode %d is now on %s, not %s (ring version %d)", v, p, j.From, rv.Version)
		}
	}
	pnodes := j.Pnodes()
	if j.Strategy == "physical" {
		pnodes = pnodes[:1] // the destinations do not exist yet
	}
	for _, p := range pnodes {
		if _, err := r.pool(ctx, p); err != nil {
			return err
		}
	}
	r.crash("mid")
	return nil
}

// prepare gives each destination the schema, the buckets and ownership rows
// for its moving vnodes, not yet writable.
func prepare(ctx context.Context, r *run) error {
	j := r.job
	origin, err := r.pool(ctx, j.From)
	if err != nil {
		return err
	}
	if err := r.settleBuckets(ctx); err != nil {
		return err
	}
	opts, err := shard.Buckets(ctx, origin)
	if err != nil {
		return err
	}
	for _, m := range j.Moves {
		dst, err := r.pool(ctx, m.To)
		if err != nil {
			return err
		}
		if err := shard.Init(ctx, dst); err != nil {
			return err
		}
		for _, b := range j.Buckets {
			if err := shard.EnsureBucket(ctx, dst, b, opts[b]); err != nil {
				return err
			}
		}
		if err := shard.CopyUserTriggers(ctx, origin, dst, j.Buckets); err != nil {
			return err
		}
		r.crash("mid")
		vs, err := moving(m)
		if err != nil {
			return fatal("%v", err)
		}
		if err := shard.Own(ctx, dst, vs, false, j.RingVersionBefore); err != nil {
			return err
		}
	}
	return nil
}

// replicate creates on the origin one publication per destination, filtered
// to its ranges, and the matching subscription on the destination.
func replicate(ctx context.Context, r *run) error {
	j := r.job
	origin, err := r.pool(ctx, j.From)
	if err != nil {
		return err
	}
	conninfo, err := r.primaryDSN(ctx, j.From)
	if err != nil {
		return err
	}
	for i, m := range j.Moves {
		name := pubName(j, i)
		if err := shard.CreatePublication(ctx, origin, name, j.Buckets, m.Ranges); err != nil {
			return err
		}
		r.crash("mid")
		dst, err := r.pool(ctx, m.To)
		if err != nil {
			return err
		}
		if err := shard.CreateSubscription(ctx, dst, name, conninfo, name); err != nil {
			return err
		}
	}
	return nil
}

// copyPhase waits for the initial copy, showing rows copied against the
// rows the plan counted.
func copyPhase(ctx context.Context, r *run) error {
	j := r.job
	var total int64
	for _, m := range j.Moves {
		total += m.Rows
	}
	start := time.Now()
	crashed := false
	for {
		ready, all, copied := 0, 0, int64(0)
		for i, m := range j.Moves {
			dst, err := r.pool(ctx, m.To)
			if err != nil {
				return err
			}
			rd, n, err := shard.SyncState(ctx, dst, pubName(j, i))
			if err != nil {
				return err
			}
			if n == 0 {
				return fmt.Errorf("subscription %s has no tables yet", pubName(j, i))
			}
			ready, all = ready+rd, all+n
			c, err := shard.RowCount(ctx, dst, j.Buckets, m.Ranges)
			if err != nil {
				return err
			}
			copied += c
		}
		p := Progress{Done: copied, Total: max(total, copied), Unit: "rows",
			Note: fmt.Sprintf("%d of %d tables streaming", ready, all)}
		if el := time.Since(start).Seconds(); el > 0.5 && copied > 0 {
			p.Rate = float64(copied) / el
			if p.Total > copied {
				p.ETASeconds = float64(p.Total-copied) / p.Rate
			}
		}
		r.progress(ctx, p)
		if !crashed {
			crashed = true
			r.crash("mid")
		}
		if ready == all {
			return nil
		}
		if err := r.pause(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// catchup waits until every slot's unconfirmed WAL is under the threshold.
func catchup(ctx context.Context, r *run) error {
	j := r.job
	origin, err := r.pool(ctx, j.From)
	if err != nil {
		return err
	}
	r.crash("mid")
	return r.waitLag(ctx, fmt.Sprintf("waiting for lag under %d bytes", j.LagBytes), func() (int64, error) {
		var worst int64
		for i := range j.Moves {
			lag, err := shard.SlotLag(ctx, origin, pubName(j, i))
			if err != nil {
				return 0, err
			}
			worst = max(worst, lag)
		}
		return worst, nil
	})
}

// waitLag polls the worst replication lag until it is within the job's
// threshold, showing it as progress.
func (r *run) waitLag(ctx context.Context, note string, worst func() (int64, error)) error {
	for {
		w, err := worst()
		if err != nil {
			return err
		}
		r.progress(ctx, Progress{Done: w, Total: r.job.LagBytes, Unit: "bytes behind", Note: note})
		if w <= r.job.LagBytes {
			return nil
		}
		if err := r.pause(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// dumpLock takes RFD 103's dump lock and waits for running dumps of the
// job's pnodes to end (steps 5 and 6).
func dumpLock(ctx context.Context, r *run) error {
	if err := r.holdDumpLock(ctx); err != nil {
		return err
	}
	r.crash("mid")
	for {
		dumps, err := etcd.RunningDumps(ctx, r.o.cli, r.job.Pnodes()...)
		if err != nil {
			return err
		}
		if len(dumps) == 0 {
			return nil
		}
		if err := r.checkAbort(ctx); err != nil {
			return err
		}
		r.progress(ctx, Progress{Done: 0, Total: int64(len(dumps)), Unit: "dumps", Note: fmt.Sprintf("waiting for %v", dumps)})
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
}

// holdDumpLock takes the dump lock on this orchestrator's lease, and its
// znode when the job names a ZooKeeper. Phases after dump-lock call it
// again, and a resumed run before its first phase (resumeHold), so a
// resumed job holds it anew.
func (r *run) holdDumpLock(ctx context.Context) error {
	if err := r.holdDumpZnode(ctx); err != nil {
		r.progress(ctx, Progress{Unit: "lock", Note: err.Error()})
		return err
	}
	err := etcd.AcquireDumpLock(ctx, r.o.cli, r.session.Lease(), r.job.holder())
	if errors.Is(err, etcd.ErrLockHeld) {
		r.progress(ctx, Progress{Unit: "lock", Note: err.Error()})
	}
	return err
}

// verifyPhase compares per-vnode row counts and checksums on both sides.
// Writes keep coming, so it compares at a marker: the origin's checksums in
// one snapshot, then a marker, and the destination's once the marker has
// arrived. Vnodes written in between differ; they are compared again, and
// any still different are compared exactly during the cutover, when frozen.
func verifyPhase(ctx context.Context, r *run) error {
	j := r.job
	if err := r.holdDumpLock(ctx); err != nil {
		return err
	}
	origin, err := r.pool(ctx, j.From)
	if err != nil {
		return err
	}
	var remaining []int32
	for i, m := range j.Moves {
		dst, err := r.pool(ctx, m.To)
		if err != nil {
			return err
		}
		rgs := m.Ranges
		for round := 1; round <= 3 && len(rgs) > 0; round++ {
			tx, err := origin.Begin(ctx)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "set transaction isolation level repeatable read"); err != nil {
				tx.Rollback(ctx)
				return err
			}
			src, err := shard.Checksums(ctx, tx, j.Buckets, rgs)
			tx.Rollback(ctx)
			if err != nil {
				return err
			}
			token := fmt.Sprintf("verify-%d-%d-%d", i, round, time.Now().UnixNano())
			if err := shard.PutMarker(ctx, origin, j.ID, token); err != nil {
				return err
			}
			if err := waitMarker(ctx, r, m.To, token); err != nil {
				return err
			}
			got, err := shard.Checksums(ctx, dst, j.Buckets, rgs)
			if err != nil {
				return err
			}
			bad := shard.Mismatches(src, got)
			r.progress(ctx, Progress{Done: int64(round), Total: 3, Unit: "rounds",
				Note: fmt.Sprintf("%s: %d vnodes differ while writes continue", m.To, len(bad))})
			rgs = vnodeRanges(bad)
			if round == 3 {
				remaining = append(remaining, bad...)
			}
		}
	}
	r.crash("mid")
	j.Mismatched = remaining
	return r.save(ctx)
}

func vnodeRanges(vs []int32) []shard.Range {
	out := make([]shard.Range, len(vs))
	for i, v := range vs {
		out[i] = shard.Range{Lo: v, Hi: v}
	}
	return out
}

// markFrozen records the start of the write block before the freeze, so
// that a crash during the freeze cannot make the block look shorter than
// it was: the time measured is never less than the time writes waited.
func (r *run) markFrozen(ctx context.Context) error {
	if r.job.Frozen {
		return nil
	}
	r.job.Frozen, r.job.FrozenAt = true, time.Now().UTC()
	return r.save(ctx)
}

// waitMarker waits until a destination has applied a marker.
func waitMarker(ctx context.Context, r *run, pnode, token string) error {
	dst, err := r.pool(ctx, pnode)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ok, err := shard.HasMarker(ctx, dst, r.job.ID, token)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s has not applied marker %s after 2 minutes", pnode, token)
		}
		if err := sleep(ctx, 2*time.Millisecond); err != nil {
			return err
		}
	}
}

// Cutover steps, recorded in job.Cutover as each finishes.
const (
	stepFreeze = iota + 1
	stepCaughtUp
	stepVerified
	stepSequences
	stepDisowned
	stepWritable
	stepRing
	stepRouters
)

// cutover moves ownership: freeze on the origin (which waits for writers
// inside the fence), wait until each destination has applied a marker
// written after the freeze, check the vnodes that differed, hand ownership
// over and publish the ring. The write block runs from the freeze to the
// destination becoming writable.
func cutover(ctx context.Context, r *run) error {
	j := r.job
	if err := r.holdDumpLock(ctx); err != nil {
		return err
	}
	origin, err := r.pool(ctx, j.From)
	if err != nil {
		return err
	}
	step := func(n int, fn func() error) error { return r.step(ctx, n, fn) }
	if err := step(stepFreeze, func() error {
		if err := r.markFrozen(ctx); err != nil {
			return err
		}
		_, err := shard.SetWritableRanges(ctx, origin, j.AllRanges(), false, j.RingVersionBefore)
		return err
	}); err != nil {
		return err
	}
	r.crash("frozen")
	if err := step(stepCaughtUp, func() error {
		token := "cutover"
		if err := shard.PutMarker(ctx, origin, j.ID, token); err != nil {
			return err
		}
		for _, m := range j.Moves {
			if err := waitMarker(ctx, r, m.To, token); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := step(stepVerified, func() error {
		if len(j.Mismatched) == 0 {
			return nil
		}
		rgs := vnodeRanges(j.Mismatched)
		src, err := shard.Checksums(ctx, origin, j.Buckets, rgs)
		if err != nil {
			return err
		}
		got := map[shard.BucketVnode]shard.Checksum{}
		for _, m := range j.Moves {
			dst, err := r.pool(ctx, m.To)
			if err != nil {
				return err
			}
			c, err := shard.Checksums(ctx, dst, j.Buckets, rgs)
			if err != nil {
				return err
			}
			for k, v := range c {
				got[k] = v
			}
		}
		if bad := shard.Mismatches(src, got); len(bad) > 0 {
			return fatal("vnodes %v differ between %s and the destination after the freeze; abort the job", bad, j.From)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := step(stepSequences, func() error {
		for _, m := range j.Moves {
			dst, err := r.pool(ctx, m.To)
			if err != nil {
				return err
			}
			if err := shard.SyncSequences(ctx, origin, dst, j.Buckets); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	return r.handOver(ctx, origin)
}

// stepNames name the cutover steps in CutoverMS and status.
var stepNames = map[int]string{stepFreeze: "freeze", stepCaughtUp: "caught-up", stepVerified: "recheck",
	stepSequences: "sequences", stepDisowned: "disown", stepWritable: "writable", stepRing: "ring", stepRouters: "routers"}

// step runs cutover step n unless a previous run finished it, and records
// it with the time its work took (the save that records it aside).
func (r *run) step(ctx context.Context, n int, fn func() error) error {
	if r.job.Cutover >= n {
		return nil
	}
	start := time.Now()
	if err := fn(); err != nil {
		return err
	}
	r.job.Cutover = n
	if r.job.CutoverMS == nil {
		r.job.CutoverMS = map[string]float64{}
	}
	r.job.CutoverMS[stepNames[n]] = float64(time.Since(start).Microseconds()) / 1000
	return r.save(ctx)
}

// handOver ends both strategies' cutovers. The origin stops serving the
// moving vnodes, reads included, before any destination takes a write, so
// no reader can see the old copy after a new write; then the destinations
// take writes (the write block ends), the ring flips and the routers follow.
func (r *run) handOver(ctx context.Context, origin shard.Querier) error {
	j := r.job
	if err := r.step(ctx, stepDisowned, func() error { return shard.DisownRanges(ctx, origin, j.AllRanges()) }); err != nil {
		return err
	}
	r.crash("disowned")
	if err := r.step(ctx, stepWritable, func() error {
		for _, m := range j.Moves {
			dst, err := r.pool(ctx, m.To)
			if err != nil {
				return err
			}
			if _, err := shard.SetWritableRanges(ctx, dst, m.Ranges, true, j.RingVersionBefore); err != nil {
				return err
			}
		}
		j.WriteBlockMS = float64(time.Since(j.FrozenAt).Microseconds()) / 1000
		return nil
	}); err != nil {
		return err
	}
	r.crash("writable")
	if err := r.step(ctx, stepRing, func() error { return r.flipRing(ctx) }); err != nil {
		return err
	}
	r.crash("flipped")
	return r.step(ctx, stepRouters, func() error { return r.waitRouters(ctx) })
}

// flipRing publishes the ring with the moved vnodes on their new pnodes. It
// is idempotent: a ring that already maps them there is left alone.
func (r *run) flipRing(ctx context.Context) error {
	j := r.job
	rg, rv, err := r.o.rings.Current(ctx)
	if err != nil {
		return err
	}
	done := true
	for _, m := range j.Moves {
		vs, _ := ring.ParseVnodeList(m.Vnodes, int(rg.Vnodes()))
		for _, v := range vs {
			p, _, err := rg.Vnode(v)
			if err != nil {
				return fatal("%v", err)
			}
			if p != m.To {
				done = false
			}
			if p != m.To && p != j.From {
				return fatal("vnode %d moved to %s outside this job", v, p)
			}
		}
	}
	if done {
		j.RingVersionAfter = rv.Version
		return nil
	}
	nv, err := r.o.rings.UpdateFrom(ctx, rg, rv, "reshard "+j.ID, func(next *ring.Ring) error {
		for _, m := range j.Moves {
			vs, _ := ring.ParseVnodeList(m.Vnodes, int(next.Vnodes()))
			var left []uint32
			for _, v := range vs {
				if p, _, _ := next.Vnode(v); p != m.To {
					left = append(left, v)
				}
			}
			if len(left) > 0 {
				if err := next.Remap(left, m.To); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	j.RingVersionAfter = nv.Version
	return nil
}

// waitRouters waits until every registered router serves the new ring. A
// router that does not is still safe (the fence refuses its writes); after
// RouterWait the job goes on and records a warning.
func (r *run) waitRouters(ctx context.Context) error {
	deadline := time.Now().Add(r.o.RouterWait)
	for {
		rs, err := etcd.Routers(ctx, r.o.cli)
		if err != nil {
			return err
		}
		var behind []string
		for _, rt := range rs {
			if rt.RingVersion < r.job.RingVersionAfter {
				behind = append(behind, rt.Name)
			}
		}
		if len(behind) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			r.job.Warnings = append(r.job.Warnings, fmt.Sprintf("routers %v did not report ring version %d within %s", behind, r.job.RingVersionAfter, r.o.RouterWait))
			return nil
		}
		r.progress(ctx, Progress{Done: int64(len(rs) - len(behind)), Total: int64(len(rs)), Unit: "routers"})
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// teardown drops the subscriptions, their slots and the publications.
func teardown(ctx context.Context, r *run) error {
	j := r.job
	origin, err := r.pool(ctx, j.From)
	if err != nil {
		return err
	}
	for i, m := range j.Moves {
		dst, err := r.pool(ctx, m.To)
		if err != nil {
			return err
		}
		if err := shard.DropSubscription(ctx, dst, pubName(j, i)); err != nil {
			return err
		}
		r.crash("mid")
		if err := shard.DropSlot(ctx, origin, pubName(j, i)); err != nil {
			return err
		}
		if err := shard.DropPublication(ctx, origin, pubName(j, i)); err != nil {
			return err
		}
		if err := shard.DropMarkers(ctx, dst, j.ID); err != nil {
			return err
		}
	}
	return shard.DropMarkers(ctx, origin, j.ID)
}

func releaseDumpLock(ctx context.Context, r *run) error {
	r.crash("mid")
	if err := etcd.ReleaseDumpLock(ctx, r.o.cli, r.job.holder()); err != nil {
		return err
	}
	return r.releaseDumpZnode(ctx)
}

// cleanup deletes the moved rows from the origin in batches, at most
// RateLimit rows a second, with progress.
func cleanup(ctx context.Context, r *run) error {
	j := r.job
	origin, err := r.pool(ctx, j.From)
	if err != nil {
		return err
	}
	left, err := shard.UnownedRows(ctx, origin, j.Buckets, j.AllRanges())
	if err != nil {
		return err
	}
	d := &deleter{r: r, total: left, start: time.Now()}
	return d.run(ctx, origin, j.Buckets, j.AllRanges())
}

// deleter deletes rows a shard no longer owns in rate-limited batches and
// reports progress over one or more shards.
type deleter struct {
	r       *run
	total   int64
	deleted int64
	start   time.Time
	crashed bool
}

func (d *deleter) run(ctx context.Context, q shard.Batcher, buckets []string, ranges []shard.Range) error {
	j := d.r.job
	batch := min(max(j.RateLimit/10, 100), 5000)
	for _, b := range buckets {
		for {
			t0 := time.Now()
			n, err := shard.DeleteBatch(ctx, q, b, ranges, batch)
			if err != nil {
				return err
			}
			d.deleted += n
			p := Progress{Done: d.deleted, Total: max(d.total, d.deleted), Unit: "rows deleted"}
			if el := time.Since(d.start).Seconds(); el > 0 {
				p.Rate = float64(d.deleted) / el
				if p.Rate > 0 && p.Total > p.Done {
					p.ETASeconds = float64(p.Total-p.Done) / p.Rate
				}
			}
			d.r.progress(ctx, p)
			if !d.crashed && n > 0 {
				d.crashed = true
				d.r.crash("mid")
			}
			if n == 0 {
				break
			}
			// Keep to the rate: a batch of n rows takes at least n/RateLimit.
			wait := time.Duration(float64(n)/float64(j.RateLimit)*float64(time.Second)) - time.Since(t0)
			if err := sleep(ctx, max(wait, 0)); err != nil {
				return err
			}
		}
	}
	return nil
}

// abort undoes a job that has not flipped the ring: the origin owns and
// serves its vnodes again, and nothing of the job is left on any side.
func (r *run) abort(ctx context.Context) error {
	j := r.job
	if j.FlipDone() {
		return fmt.Errorf("job %s has flipped the ring; it can only finish", j.ID)
	}
	j.State = Aborting
	r.save(ctx)
	if j.Strategy == "physical" {
		if err := r.undoPhysical(ctx); err != nil {
			return err
		}
		return r.finishAbort(ctx)
	}
	all, err := allMoving(j)
	if err != nil {
		return err
	}
	origin, err := r.pool(ctx, j.From)
	if err != nil {
		return err
	}
	// Give the origin its vnodes back first: writes resume at once.
	if err := shard.Own(ctx, origin, all, true, j.RingVersionBefore); err != nil {
		return err
	}
	j.Frozen = false
	for i, m := range j.Moves {
		dst, err := r.pool(ctx, m.To)
		if err != nil {
			return err
		}
		if err := shard.DropSubscription(ctx, dst, pubName(j, i)); err != nil {
			return err
		}
		if err := shard.DropSlot(ctx, origin, pubName(j, i)); err != nil {
			return err
		}
		if err := shard.DropPublication(ctx, origin, pubName(j, i)); err != nil {
			return err
		}
		vs, err := moving(m)
		if err != nil {
			return err
		}
		if err := shard.Disown(ctx, dst, vs); err != nil && !isUndefinedTable(err) {
			return err
		}
		for _, b := range j.Buckets {
			for {
				n, err := shard.DeleteAll(ctx, dst, b, m.Ranges, 5000)
				if err != nil && !isUndefinedTable(err) {
					return err
				}
				if n == 0 || err != nil {
					break
				}
			}
		}
		if err := shard.DropMarkers(ctx, dst, j.ID); err != nil && !isUndefinedTable(err) {
			return err
		}
	}
	if err := shard.DropMarkers(ctx, origin, j.ID); err != nil {
		return err
	}
	return r.finishAbort(ctx)
}

// finishAbort releases the job's locks and records it aborted.
func (r *run) finishAbort(ctx context.Context) error {
	j := r.job
	if err := etcd.ReleaseDumpLock(ctx, r.o.cli, j.holder()); err != nil {
		return err
	}
	if err := r.releaseDumpZnode(ctx); err != nil {
		return err
	}
	j.State, j.Current = Aborted, ""
	for i := range j.Phases {
		if j.Phases[i].State == Running {
			j.Phases[i].State = Aborted
		}
	}
	if err := r.save(ctx); err != nil {
		return err
	}
	if err := r.o.store.ReleasePnodes(ctx, j); err != nil {
		return err
	}
	if _, err := r.o.cli.Delete(ctx, abortPrefix+j.ID); err != nil {
		return err
	}
	return ErrAborted
}

// pause waits d between polls, returning early on an abort request.
func (r *run) pause(ctx context.Context, d time.Duration) error {
	if err := r.checkAbort(ctx); err != nil {
		return err
	}
	return sleep(ctx, d)
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
