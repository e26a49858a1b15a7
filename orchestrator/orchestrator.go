package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/reshard/reshard"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/ring"
	"github.com/reshard/reshard/shard"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Orchestrator plans and runs jobs.
type Orchestrator struct {
	cli     *clientv3.Client
	store   *Store
	reg     *etcd.Registry
	rings   *etcd.RingStore
	buckets *etcd.Buckets
	log     *slog.Logger

	// OnUpdate, when set, sees the job each time it is saved.
	OnUpdate func(*Job)
	// CrashAt makes the process SIGKILL itself at a fault point, "PHASE"
	// (its first point) or "PHASE:POINT", or at an arbitrary line after a
	// delay, "after:DURATION": how the tests kill it inside every phase.
	// PauseAt makes it SIGSTOP itself at a point instead, as a process
	// paused past its lease would be; such a run also ignores the end of
	// its session, as a process whose check comes too late would, so that
	// only the fence stops it. Never set in production.
	CrashAt, PauseAt string
	// RouterWait bounds the wait for routers to serve a new ring.
	RouterWait time.Duration
	// Provisioners resolves a job's provisioner spec (e.g. "lab:/tmp/lab").
	Provisioners func(spec string) (reshard.Provisioner, error)
	// SessionTTL is the lease that holds the job and the dump lock: how
	// long a dead orchestrator keeps them before another can take over.
	SessionTTL time.Duration
	// DumpZnodes opens the dump lock's znode for jobs that name a
	// ZooKeeper ensemble.
	DumpZnodes DumpZnodeDialer
}

// New returns an orchestrator using cli.
func New(cli *clientv3.Client, log *slog.Logger) *Orchestrator {
	if log == nil {
		log = slog.Default()
	}
	return &Orchestrator{cli: cli, store: NewStore(cli), reg: etcd.NewRegistry(cli),
		rings: etcd.NewRingStore(cli), buckets: etcd.NewBuckets(cli), log: log,
		RouterWait: 30 * time.Second, SessionTTL: 5 * time.Second}
}

// Store is the job store.
func (o *Orchestrator) Store() *Store { return o.store }

// Start plans and records a job; Run then runs it. A job that fails a
// pre-flight check is not recorded: nothing has changed.
func (o *Orchestrator) Start(ctx context.Context, req Request) (*Job, error) {
	j, err := o.Plan(ctx, req)
	if err != nil {
		return nil, err
	}
	if err := FailedChecks(j); err != nil {
		return nil, err
	}
	if err := o.store.Create(ctx, j); err != nil {
		return nil, err
	}
	return j, nil
}

// Client is the etcd client the orchestrator keeps its jobs in.
func (o *Orchestrator) Client() *clientv3.Client { return o.cli }

func (o *Orchestrator) provisioner(spec string) (reshard.Provisioner, error) {
	if o.Provisioners == nil {
		return nil, fmt.Errorf("no provisioner for %q in this orchestrator", spec)
	}
	return o.Provisioners(spec)
}

// permanent marks an error that retrying will not fix.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

func fatal(format string, args ...any) error { return permanent{fmt.Errorf(format, args...)} }

// ErrAborted is returned by Run when the job was aborted.
var ErrAborted = errors.New("job aborted")

// ErrLostJob is returned by Run when another orchestrator took the job
// over: this one was paused or cut off past its lease. It stops at once
// and writes nothing more; the fence refused what it tried.
var ErrLostJob = errors.New("another orchestrator took the job over")

// lostJob reports whether err is a fence refusing this orchestrator.
func lostJob(err error) bool {
	return errors.Is(err, etcd.ErrFenced) || errors.Is(err, shard.ErrStaleToken) || errors.Is(err, ErrLostJob)
}

// run is one orchestrator's hold on one job.
type run struct {
	o       *Orchestrator
	job     *Job
	strat   *Strategy
	session *concurrency.Session
	// token is this hold's fencing token: every shard of the job refuses a
	// fenced step with a lower one, and the run's context carries the etcd
	// side of it (etcd.WithFence).
	token   reshard.FencingToken
	deaf    bool // fault injection: ignore the session's end (PauseAt)
	phase   *Phase
	mu      sync.Mutex
	pools   map[string]*pgxpool.Pool
	zk      DumpZnode // the dump lock znode's session, once opened
	resumed bool      // the first phase of this run has been given out

	abortChecked time.Time
	slots        slotGuard
}

// Run runs a job to its end, resuming where it stopped. Only one
// orchestrator holds a job at a time: a second one waits for the first.
func (o *Orchestrator) Run(ctx context.Context, id string) error {
	if _, err := o.store.Get(ctx, id); err != nil {
		return err
	}
	session, err := concurrency.NewSession(o.cli, concurrency.WithTTL(int(max(o.SessionTTL, 2*time.Second).Seconds())))
	if err != nil {
		return fmt.Errorf("etcd session: %w", err)
	}
	defer session.Close()
	fence, unlock, err := o.store.jobs.Hold(ctx, session, id, func() {
		o.log.Info("another orchestrator holds the job; waiting", "job", id)
	})
	if err != nil {
		return err
	}
	defer unlock()
	// From here every etcd write of the job is conditional on this hold.
	ctx = etcd.WithFence(ctx, fence)
	ctx = reshard.WithFencingToken(ctx, reshard.FencingToken{Job: id, Token: fence.Token})
	// Losing the session means another orchestrator may take the job: stop.
	// Correctness does not depend on noticing in time; the fence does that.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	deaf := o.PauseAt != ""
	if !deaf {
		go func() {
			select {
			case <-session.Done():
				stop()
			case <-ctx.Done():
			}
		}()
	}
	if d, ok := strings.CutPrefix(o.CrashAt, "after:"); ok {
		if delay, err := time.ParseDuration(d); err == nil {
			time.AfterFunc(delay, func() {
				o.log.Warn("crash delay reached: killing this process", "after", delay)
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
			})
		}
	}
	j, err := o.store.Get(ctx, id)
	if err != nil {
		return err
	}
	strat, err := strategyOf(j.Strategy)
	if err != nil {
		return fatal("job %s: %v", id, err)
	}
	r := &run{o: o, job: j, strat: strat, session: session, deaf: deaf, pools: map[string]*pgxpool.Pool{},
		token: reshard.FencingToken{Job: id, Token: fence.Token}}
	defer r.closePools()
	defer r.closeZnode()
	switch j.State {
	case Done, Reverted:
		return nil
	case Aborted:
		return ErrAborted
	}
	if err := r.claimShards(ctx); err != nil {
		if errors.Is(err, ErrAborted) && !j.FlipDone() {
			// A destination that cannot be claimed (down) must not turn
			// the abort into a false success: the origin, claimed first,
			// is undone, and the abort says what it could not reach.
			return r.stopped(r.abort(ctx))
		}
		return r.stopped(err)
	}
	if asked, err := o.store.jobs.Requested(ctx, etcd.Abort, id); err != nil {
		return err
	} else if asked {
		if !j.FlipDone() {
			return r.stopped(r.abort(ctx))
		}
		o.log.Warn("abort ignored: the ring has flipped; the job reverts or completes", "job", id)
		if err := o.store.jobs.ClearRequest(ctx, etcd.Abort, id); err != nil {
			return r.stopped(err)
		}
	}
	if j.wayBackOpen() {
		if asked, err := o.store.jobs.Requested(ctx, etcd.Revert, id); err != nil {
			return err
		} else if asked {
			if err := r.beginRevert(ctx); err != nil {
				return r.stopped(err)
			}
		}
	}
	j.State, j.Error = j.activeState(), ""
	if err := r.save(ctx); err != nil {
		return r.stopped(err)
	}
	// A revert adds phases as the loop runs, so the length is read anew.
	for i := 0; i < len(j.Phases); i++ {
		ph := &j.Phases[i]
		if ph.State == Done || ph.State == Skipped {
			continue
		}
		pf, ok := strat.phase(ph.Name)
		if !ok {
			return fmt.Errorf("job %s: strategy %s has no phase %s", j.ID, j.Strategy, ph.Name)
		}
		j.State = j.activeState()
		err := r.runPhase(ctx, ph, r.resumeHold(ph, pf.Run))
		switch {
		case err == nil:
			continue
		case errors.Is(err, errRevertAsked):
			if err := r.beginRevert(ctx); err != nil {
				return r.stopped(err)
			}
			continue
		case errors.Is(err, errAwaitDecision):
			// Nobody has decided: the job waits, flipped, with its way
			// back open and its pnodes held, for complete or revert.
			ph.State, j.State, j.Current = Waiting, Flipped, ph.Name
			return r.stopped(r.save(ctx))
		case errors.Is(err, ErrAborted):
			return r.stopped(r.abort(ctx))
		case lostJob(err) || r.sessionEnded():
			return r.stopped(err)
		}
		j.State, j.Error = Failed, err.Error()
		r.save(context.WithoutCancel(ctx))
		return err
	}
	j.State, j.Current = Done, ""
	if j.Revert != nil {
		j.State = Reverted
	}
	if err := r.save(ctx); err != nil {
		return r.stopped(err)
	}
	if err := o.store.ReleasePnodes(ctx, j); err != nil {
		return r.stopped(err)
	}
	for _, a := range []etcd.Action{etcd.Revert, etcd.Complete} {
		if err := o.store.jobs.ClearRequest(ctx, a, id); err != nil {
			return r.stopped(err)
		}
	}
	return nil
}

// sessionEnded reports whether this run's etcd session (its lease) is
// gone: another orchestrator may hold the job now.
func (r *run) sessionEnded() bool {
	if r.deaf {
		return false
	}
	select {
	case <-r.session.Done():
		return true
	default:
		return false
	}
}

// stopped turns a fence's refusal, or the end of the session, into
// ErrLostJob, logged once: the process stops working on the job without
// another write (a "failed" record would be false: the job goes on).
func (r *run) stopped(err error) error {
	if err != nil && (lostJob(err) || r.sessionEnded()) {
		r.o.log.Warn("stopping: another orchestrator took the job over", "job", r.job.ID, "token", r.token.Token, "err", err)
		return fmt.Errorf("job %s: %w (%v)", r.job.ID, ErrLostJob, err)
	}
	return err
}

// claimShards records this run's token on every shard of the job before
// it does anything, so from now on a previous holder's fenced steps are
// refused everywhere, whichever shard it would touch next.
func (r *run) claimShards(ctx context.Context) error {
	return r.retry(ctx, "claim the job's shards", func() error {
		for _, pnode := range r.job.Pnodes() {
			db, err := r.claimable(ctx, pnode)
			if err != nil {
				return err
			}
			if db == nil {
				continue
			}
			if err := shard.Claim(ctx, db, r.token); err != nil {
				return fmt.Errorf("claim %s: %w", pnode, err)
			}
		}
		return nil
	})
}

// claimable returns a pnode's primary to claim, or nil for a destination
// the strategy has not created yet (its peers, still standbys of the
// origin, see the origin's claim by replication).
func (r *run) claimable(ctx context.Context, pnode string) (*pgxpool.Pool, error) {
	if _, err := r.o.reg.Pnode(ctx, pnode); errors.Is(err, reshard.ErrNotFound) && r.strat.CreatesDestinations && pnode != r.job.From {
		// Not registered: not made yet, or removed by a revert.
		peers := r.job.NewPeers[pnode]
		if len(peers) == 0 || peers[0].Role != reshard.RolePrimary || r.job.Revert != nil {
			return nil, nil
		}
		return r.peerPool(ctx, pnode, peers[0])
	} else if err != nil {
		return nil, err
	}
	return r.pool(ctx, pnode)
}

// retry runs fn until it succeeds, retrying transient failures with
// backoff for up to three minutes: a primary restarting or etcd blinking
// should pause a job, not fail it; a server down for longer fails it,
// saying for how long. A fence's refusal, an abort and a permanent error
// end it at once.
func (r *run) retry(ctx context.Context, what string, fn func() error) error {
	const limit = 3 * time.Minute
	backoff := 500 * time.Millisecond
	var failing time.Time // since when the attempts fail
	for {
		began := time.Now()
		err := fn()
		if err == nil || lostJob(err) || errors.Is(err, ErrAborted) || decided(err) {
			return err
		}
		// The three minutes count from the first failure in a row, not
		// from the phase's start: an attempt that ran for a while (an
		// hour's copy) made progress before it failed.
		if failing.IsZero() || time.Since(began) > time.Minute {
			failing, backoff = time.Now(), 500*time.Millisecond
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if aborted, _ := r.o.store.jobs.Requested(ctx, etcd.Abort, r.job.ID); aborted && !r.job.FlipDone() {
			return ErrAborted
		}
		var p permanent
		if errors.As(err, &p) || errors.Is(err, reshard.ErrDiskFull) {
			return err
		}
		if d := time.Since(failing); d > limit {
			return fmt.Errorf("still failing after %s: %w", d.Round(time.Second), err)
		}
		r.o.log.Warn(what+" failed; retrying", "job", r.job.ID, "err", err)
		if r.phase != nil && r.phase.State == Running {
			r.phase.Error = "retrying: " + err.Error()
			if err := r.save(ctx); lostJob(err) {
				return err
			}
		}
		if err := sleep(ctx, backoff); err != nil {
			return err
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// runPhase runs one phase through retry and records its outcome. Before
// the flip an abort asked for meanwhile is taken up first: a phase can be
// too short to poll for it (a small copy).
func (r *run) runPhase(ctx context.Context, ph *Phase, fn func(context.Context, *run) error) error {
	if !r.job.FlipDone() {
		if asked, err := r.o.store.jobs.Requested(ctx, etcd.Abort, r.job.ID); err == nil && asked {
			return ErrAborted
		}
	}
	now := time.Now().UTC()
	if ph.Started == nil {
		ph.Started = &now
	}
	ph.State, ph.Error = Running, ""
	r.job.Current = ph.Name
	r.phase = ph
	if err := r.save(ctx); err != nil {
		return err
	}
	if err := r.waitSlotsDrain(ctx); err != nil {
		return err
	}
	err := r.retry(ctx, "phase "+ph.Name, func() error {
		ph.Attempts++
		return fn(ctx, r)
	})
	switch {
	case err == nil:
		// Counters of steps (rounds, routers) read as complete when done;
		// row counts stay as measured.
		if p := ph.Progress; p != nil && p.Unit != "rows" && p.Unit != "rows deleted" && p.Unit != "bytes behind" {
			p.Done = p.Total
		}
		end := time.Now().UTC()
		ph.State, ph.Ended, ph.Error = Done, &end, ""
		ph.Seconds = end.Sub(*ph.Started).Seconds()
		return r.save(ctx)
	case errors.Is(err, ErrAborted), lostJob(err), decided(err), ctx.Err() != nil:
		return err
	default:
		ph.State, ph.Error = Failed, err.Error()
		return fmt.Errorf("phase %s: %w", ph.Name, err)
	}
}

func (r *run) save(ctx context.Context) error {
	if r.phase != nil && r.phase.Started != nil && r.phase.State == Running {
		r.phase.Seconds = time.Since(*r.phase.Started).Seconds()
	}
	if err := r.o.store.Save(ctx, r.job); err != nil {
		return err
	}
	if r.o.OnUpdate != nil {
		r.o.OnUpdate(r.job)
	}
	return nil
}

// progress records a long phase's progress, at most a few times a second.
func (r *run) progress(ctx context.Context, p Progress) error {
	if r.phase == nil {
		return nil
	}
	prev := r.phase.Progress
	r.phase.Progress = &p
	if prev != nil && prev.Done == p.Done && prev.Total == p.Total && prev.Note == p.Note {
		return nil
	}
	if err := r.save(ctx); lostJob(err) {
		return err
	}
	return nil
}

// crash kills or pauses this process at a fault point when asked to:
// fault injection for the kill-and-resume and pause-past-lease tests.
func (r *run) crash(point Point) {
	if r.phase == nil {
		return
	}
	at := func(spec string) bool {
		return spec != "" && (spec == r.phase.Name || spec == r.phase.Name+":"+string(point))
	}
	if at(r.o.PauseAt) {
		r.o.log.Warn("pause point reached: stopping this process", "phase", r.phase.Name, "point", point)
		r.o.PauseAt = "" // once: after SIGCONT the process carries on
		syscall.Kill(os.Getpid(), syscall.SIGSTOP)
	}
	if at(r.o.CrashAt) {
		r.o.log.Warn("crash point reached: killing this process", "phase", r.phase.Name, "point", point)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Hour)
	}
}

// pool returns a connection pool to a pnode's primary.
func (r *run) pool(ctx context.Context, pnode string) (*pgxpool.Pool, error) {
	primary, err := r.o.reg.Primary(ctx, pnode)
	if err != nil {
		return nil, err
	}
	return r.peerPool(ctx, pnode, primary)
}

// peerPool returns a pool to one peer, kept by pnode name. A transaction
// left idle, as a paused orchestrator's would be, is ended by the server
// within seconds, so it cannot hold a fence's lock against the successor.
func (r *run) peerPool(ctx context.Context, pnode string, peer reshard.Peer) (*pgxpool.Pool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.pools[pnode]; p != nil {
		return p, nil
	}
	cfg, err := pgxpool.ParseConfig(peer.DSN)
	if err != nil {
		return nil, fatal("pnode %s: invalid DSN %s", pnode, postgres.RedactDSN(peer.DSN))
	}
	cfg.MaxConns = 4
	cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = "10s"
	p, err := pgxpool.NewWithConfig(context.WithoutCancel(ctx), cfg)
	if err != nil {
		return nil, err
	}
	r.pools[pnode] = p
	return p, nil
}

func (r *run) closePools() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.pools {
		p.Close()
	}
}

// fenced runs fn on a pnode's primary in a transaction that the shard
// lets through only while this run's token is the job's newest.
func (r *run) fenced(ctx context.Context, pnode string, fn func(tx pgx.Tx) error) error {
	db, err := r.pool(ctx, pnode)
	if err != nil {
		return err
	}
	return shard.Fenced(ctx, db, r.token, fn)
}

// primaryDSN is the DSN of a pnode's primary, for a subscription.
func (r *run) primaryDSN(ctx context.Context, pnode string) (string, error) {
	p, err := r.o.reg.Primary(ctx, pnode)
	return p.DSN, err
}

// holder is the job's name on the locks it takes.
func (j *Job) holder() string { return "job:" + j.ID }

// Jobs lists every job.
func (o *Orchestrator) Jobs(ctx context.Context) ([]*Job, error) { return o.store.List(ctx) }

// Get reads one job.
func (o *Orchestrator) Get(ctx context.Context, id string) (*Job, error) { return o.store.Get(ctx, id) }

// Locks is the lock state the RFD asks status to show.
type Locks struct {
	DumpLock *etcd.LockInfo    `json:"dump_lock"`
	Dumps    []string          `json:"running_dumps"`
	Pnodes   map[string]string `json:"pnode_locks"`
	ReadOnly string            `json:"read_only_vnodes"` // vnodes with data "ro" in the ring
}

// Locks reads the locks.
func (o *Orchestrator) Locks(ctx context.Context) (Locks, error) {
	var l Locks
	var err error
	if l.DumpLock, err = etcd.DumpLock(ctx, o.cli); err != nil {
		return l, err
	}
	if l.Dumps, err = etcd.RunningDumps(ctx, o.cli); err != nil {
		return l, err
	}
	if l.Pnodes, err = o.store.PnodeLocks(ctx); err != nil {
		return l, err
	}
	if rg, _, err := o.rings.Current(ctx); err == nil {
		var ro []uint32
		for _, v := range rg.DataVnodes() {
			if _, d, _ := rg.Vnode(v); string(d) == `"ro"` {
				ro = append(ro, v)
			}
		}
		l.ReadOnly = ring.FormatVnodeList(ro)
	}
	return l, nil
}
