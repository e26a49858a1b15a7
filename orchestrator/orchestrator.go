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

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/reshard/reshard"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/ring"
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
	// CrashAt makes the process SIGKILL itself at a crash point, "PHASE"
	// (its first point) or "PHASE:POINT", or at an arbitrary line after a
	// delay, "after:DURATION": how the tests kill it inside every phase.
	// Never set in production.
	CrashAt string
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
	return &Orchestrator{cli: cli, store: NewStore(cli), reg: etcd.NewRegistry(cli), rings: etcd.NewRingStore(cli),
		buckets: etcd.NewBuckets(cli), log: log, RouterWait: 30 * time.Second, SessionTTL: 5 * time.Second}
}

// Store is the job store.
func (o *Orchestrator) Store() *Store { return o.store }

// Start plans and records a job; Run then runs it.
func (o *Orchestrator) Start(ctx context.Context, req Request) (*Job, error) {
	j, err := o.Plan(ctx, req)
	if err != nil {
		return nil, err
	}
	if err := o.store.Create(ctx, j); err != nil {
		return nil, err
	}
	return j, nil
}

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

// run is one orchestrator's hold on one job.
type run struct {
	o       *Orchestrator
	job     *Job
	session *concurrency.Session
	phase   *Phase
	mu      sync.Mutex
	pools   map[string]*pgxpool.Pool
	zk      DumpZnode // the dump lock znode's session, once opened
	resumed bool      // the first phase of this run has been given out

	abortChecked time.Time
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
	mu := concurrency.NewMutex(session, jobMutexes+id)
	lctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	err = mu.Lock(lctx)
	cancel()
	if err != nil {
		o.log.Info("another orchestrator holds the job; waiting", "job", id)
		if err := mu.Lock(ctx); err != nil {
			return fmt.Errorf("wait for job %s: %w", id, err)
		}
	}
	defer mu.Unlock(context.Background())
	// Losing the session means another orchestrator may take the job: stop.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-session.Done():
			stop()
		case <-ctx.Done():
		}
	}()
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
	r := &run{o: o, job: j, session: session, pools: map[string]*pgxpool.Pool{}}
	defer r.closePools()
	defer r.closeZnode()
	switch j.State {
	case Done:
		return nil
	case Aborted:
		return ErrAborted
	}
	if asked, err := r.abortRequested(ctx); err != nil {
		return err
	} else if asked {
		if !j.FlipDone() {
			return r.abort(ctx)
		}
		o.log.Warn("abort ignored: the ring has flipped; finishing the job", "job", id)
		o.cli.Delete(ctx, abortPrefix+id)
	}
	j.State, j.Error = Running, ""
	if err := r.save(ctx); err != nil {
		return err
	}
	phases := strategyPhases(j.Strategy)
	for i := range j.Phases {
		ph := &j.Phases[i]
		if ph.State == Done {
			continue
		}
		fn, ok := phases[ph.Name]
		if !ok {
			return fmt.Errorf("job %s: unknown phase %s", j.ID, ph.Name)
		}
		fn = r.resumeHold(ph, fn)
		if err := r.runPhase(ctx, ph, fn); err != nil {
			if errors.Is(err, ErrAborted) {
				return r.abort(ctx)
			}
			j.State, j.Error = Failed, err.Error()
			r.save(context.WithoutCancel(ctx))
			return err
		}
	}
	j.State, j.Current = Done, ""
	if err := r.save(ctx); err != nil {
		return err
	}
	return o.store.ReleasePnodes(ctx, j)
}

// runPhase runs one phase, retrying transient failures with backoff: a
// primary restarting or etcd blinking should pause a job, not fail it.
func (r *run) runPhase(ctx context.Context, ph *Phase, fn func(context.Context, *run) error) error {
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
	backoff := 500 * time.Millisecond
	deadline := time.Now().Add(3 * time.Minute)
	for {
		ph.Attempts++
		err := fn(ctx, r)
		if err == nil {
			// Counters of steps (rounds, routers) read as complete when done;
			// row counts stay as measured.
			if p := ph.Progress; p != nil && p.Unit != "rows" && p.Unit != "rows deleted" && p.Unit != "bytes behind" {
				p.Done = p.Total
			}
			end := time.Now().UTC()
			ph.State, ph.Ended, ph.Error = Done, &end, ""
			ph.Seconds = end.Sub(*ph.Started).Seconds()
			return r.save(ctx)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrAborted) {
			return err
		}
		if aborted, _ := r.abortRequested(ctx); aborted && !r.job.FlipDone() {
			return ErrAborted
		}
		var p permanent
		if errors.As(err, &p) || time.Now().After(deadline) {
			ph.State, ph.Error = Failed, err.Error()
			return fmt.Errorf("phase %s: %w", ph.Name, err)
		}
		ph.Error = "retrying: " + err.Error()
		r.o.log.Warn("phase failed; retrying", "job", r.job.ID, "phase", ph.Name, "err", err)
		r.save(ctx)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
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
func (r *run) progress(ctx context.Context, p Progress) {
	if r.phase == nil {
		return
	}
	prev := r.phase.Progress
	r.phase.Progress = &p
	if prev != nil && prev.Done == p.Done && prev.Total == p.Total && prev.Note == p.Note {
		return
	}
	r.save(ctx)
}

// crash kills this process at a named point when asked to: fault injection
// for the kill-and-resume tests.
func (r *run) crash(point string) {
	c := r.o.CrashAt
	if c == "" || r.phase == nil {
		return
	}
	if c == r.phase.Name || c == r.phase.Name+":"+point {
		r.o.log.Warn("crash point reached: killing this process", "phase", r.phase.Name, "point", point)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Hour)
	}
}

// Abort requests live under their own key: the running orchestrator owns
// the job record and would overwrite a flag set in it.
const abortPrefix = etcd.Prefix + "aborts/"

func (r *run) abortRequested(ctx context.Context) (bool, error) {
	resp, err := r.o.cli.Get(ctx, abortPrefix+r.job.ID)
	if err != nil {
		return false, err
	}
	return len(resp.Kvs) > 0, nil
}

// checkAbort returns ErrAborted when an abort was asked for before the ring
// flipped; long waits call it so an abort does not wait for them.
func (r *run) checkAbort(ctx context.Context) error {
	if r.job.FlipDone() || time.Since(r.abortChecked) < time.Second {
		return nil
	}
	r.abortChecked = time.Now()
	if asked, err := r.abortRequested(ctx); err == nil && asked {
		return ErrAborted
	}
	return nil
}

// pool returns a connection pool to a pnode's primary.
func (r *run) pool(ctx context.Context, pnode string) (*pgxpool.Pool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.pools[pnode]; p != nil {
		return p, nil
	}
	primary, err := r.o.reg.Primary(ctx, pnode)
	if err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(primary.DSN)
	if err != nil {
		return nil, fatal("pnode %s: invalid DSN %s", pnode, postgres.RedactDSN(primary.DSN))
	}
	cfg.MaxConns = 4
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

// primaryDSN is the DSN of a pnode's primary, for a subscription.
func (r *run) primaryDSN(ctx context.Context, pnode string) (string, error) {
	p, err := r.o.reg.Primary(ctx, pnode)
	return p.DSN, err
}

// holder is the job's name on the locks it takes.
func (j *Job) holder() string { return "job:" + j.ID }

// Abort asks a job to stop and undo itself. Before the ring flips it is
// undone completely; after, abort is refused: the job must finish.
func (o *Orchestrator) Abort(ctx context.Context, id string) error {
	j, err := o.store.Get(ctx, id)
	if err != nil {
		return err
	}
	switch {
	case j.State == Done || j.State == Aborted:
		return fmt.Errorf("job %s is already %s", id, j.State)
	case j.FlipDone():
		return fmt.Errorf("job %s has flipped the ring (version %d); it can only finish: run 'reshard resume %s'", id, j.RingVersionAfter, id)
	}
	if _, err := o.cli.Put(ctx, abortPrefix+id, time.Now().UTC().Format(time.RFC3339)); err != nil {
		return fmt.Errorf("request abort: %w", err)
	}
	// If no orchestrator runs the job, undo it here; if one does, it sees
	// the request and undoes it, and this waits for it to finish.
	err = o.Run(ctx, id)
	if errors.Is(err, ErrAborted) {
		return nil
	}
	if err == nil {
		return fmt.Errorf("job %s finished before the abort took effect", id)
	}
	return err
}

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
		l.ReadOnly = formatVnodes(ro)
	}
	return l, nil
}

func formatVnodes(vs []uint32) string { return ring.FormatVnodeList(vs) }
