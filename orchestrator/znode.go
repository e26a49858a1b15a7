package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/reshard/reshard"
	"github.com/reshard/reshard/etcd"
)

// DefaultZnodePath is where Manatee's dump job looks for the dump lock.
const DefaultZnodePath = "/pg_dump_lock"

// DumpZnode is the dump lock as Manta's own dumps see it: a persistent
// znode in ZooKeeper whose data names its holder (RFD 103 step 5). The
// etcd dump lock keeps reshard's own dumps off; this one keeps Manatee's.
type DumpZnode interface {
	// Acquire creates the znode with holder as its data. A node already
	// holding holder is success; one with other data is an error naming
	// that holder.
	Acquire(ctx context.Context, holder string) error
	// Release deletes the znode if its data is still holder, at the
	// version read, and reports whether it did.
	Release(ctx context.Context, holder string) (bool, error)
	// Holder reads the znode's data and when it was written; ok is false
	// when there is no znode.
	Holder(ctx context.Context) (holder string, since time.Time, ok bool, err error)
	Close()
}

// DumpZnodeDialer opens the dump lock znode at path on a ZooKeeper
// ensemble, with a session, or fails with one line.
type DumpZnodeDialer func(ctx context.Context, servers []string, path string) (DumpZnode, error)

// znodeHolder is what the job writes into the znode: its id, as an
// operator would type it (zkCli.sh create /pg_dump_lock NAME).
func (j *Job) znodeHolder() string { return j.ID }

// dumpZnodeConfig picks the ZooKeeper ensemble for a job: the request's,
// else the one its pnodes were registered with. Pnodes that name different
// ensembles are refused: the lock would keep dumps off only some of them.
func dumpZnodeConfig(req Request, pnodes []reshard.Pnode) ([]string, string, error) {
	servers := req.ZooKeeper
	if len(servers) == 0 {
		var from string
		for _, p := range pnodes {
			if len(p.ZooKeeper) == 0 {
				continue
			}
			if servers == nil {
				servers, from = p.ZooKeeper, p.Name
				continue
			}
			if !sameEnsemble(servers, p.ZooKeeper) {
				return nil, "", fmt.Errorf("pnodes %s and %s name different ZooKeeper ensembles (%s, %s): give --zookeeper",
					from, p.Name, strings.Join(servers, ","), strings.Join(p.ZooKeeper, ","))
			}
		}
	}
	path := req.ZooKeeperPath
	if len(servers) == 0 {
		if path != "" {
			return nil, "", fmt.Errorf("--zookeeper-path needs --zookeeper (or pnodes registered with --zookeeper)")
		}
		return nil, "", nil
	}
	if path == "" {
		path = DefaultZnodePath
	}
	return slices.Clone(servers), path, nil
}

func sameEnsemble(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

// dialZnode opens a job's znode, or says why not, in one line.
func (o *Orchestrator) dialZnode(ctx context.Context, servers []string, path string) (DumpZnode, error) {
	if o.DumpZnodes == nil {
		return nil, fmt.Errorf("this orchestrator has no ZooKeeper client for the dump lock on %s", strings.Join(servers, ","))
	}
	return o.DumpZnodes(ctx, servers, path)
}

// checkZnode is the plan's look at the ensemble: a job should not copy for
// hours and only then find ZooKeeper unreachable at its dump-lock phase.
// Another holder now (a Manatee dump running) refuses the start, unless
// wait says to start anyway and wait for it at the dump-lock phase.
func (o *Orchestrator) checkZnode(ctx context.Context, j *Job, wait bool) error {
	if len(j.ZooKeeper) == 0 {
		return nil
	}
	z, err := o.dialZnode(ctx, j.ZooKeeper, j.ZooKeeperPath)
	if err != nil {
		return err
	}
	defer z.Close()
	holder, since, held, err := z.Holder(ctx)
	if err != nil || !held || wait || holder == j.znodeHolder() {
		return err
	}
	return fmt.Errorf("the dump lock znode %s is held by %q since %s: a dump is running (RFD 103 step 6); start when it is done, or give --wait-dump-lock",
		j.ZooKeeperPath, holder, since.UTC().Format(time.RFC3339))
}

// znode is the run's session with the job's ensemble, opened when first
// needed and closed when the run ends.
func (r *run) znode(ctx context.Context) (DumpZnode, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.zk != nil {
		return r.zk, nil
	}
	z, err := r.o.dialZnode(ctx, r.job.ZooKeeper, r.job.ZooKeeperPath)
	if err != nil {
		return nil, err
	}
	r.zk = z
	return z, nil
}

func (r *run) closeZnode() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.zk != nil {
		r.zk.Close()
		r.zk = nil
	}
}

// holdDumpZnode takes the znode for the job, or finds it still the job's.
// It goes before the etcd lock: the znode outlives a dead orchestrator and
// the etcd lock does not, so taking them in this order never leaves a job
// that holds the etcd lock waiting on a resumed job that holds the znode.
func (r *run) holdDumpZnode(ctx context.Context) error {
	if len(r.job.ZooKeeper) == 0 {
		return nil
	}
	z, err := r.znode(ctx)
	if err != nil {
		return err
	}
	if err := z.Acquire(ctx, r.job.znodeHolder()); err != nil {
		return err
	}
	// ZooKeeper knows nothing of the fence. A stale run may just have
	// made the znode again after its successor finished and released it;
	// left there, it would keep Manatee's dumps off for good.
	if err := etcd.CheckFence(ctx, r.o.cli); err != nil {
		if errors.Is(err, etcd.ErrFenced) {
			r.dropStaleZnode(ctx, z)
		}
		return err
	}
	return nil
}

// dropStaleZnode releases the znode a stale run took, unless the job's
// record says its current holder is inside the dump lock's span and so
// holds the znode itself (the record only moves forward: once it is past
// the span, no holder needs the znode again).
func (r *run) dropStaleZnode(ctx context.Context, z DumpZnode) {
	ctx = context.WithoutCancel(ctx)
	cur, err := r.o.store.Get(ctx, r.job.ID)
	if err != nil {
		return
	}
	lock, release := cur.phase("dump-lock"), cur.phase("release-dump-lock")
	inside := lock != nil && lock.State != Pending && release != nil && release.State != Done &&
		cur.State != Aborted && cur.State != Done
	if inside {
		return
	}
	if _, err := z.Release(ctx, r.job.znodeHolder()); err == nil {
		r.o.log.Warn("released the dump lock znode this stale run had taken again", "job", r.job.ID)
	}
}

// releaseDumpZnode deletes the znode if it is still the job's. Only a job
// whose dump-lock phase has started can have made it, so an abort before
// then needs no ZooKeeper at all.
func (r *run) releaseDumpZnode(ctx context.Context) error {
	j := r.job
	if len(j.ZooKeeper) == 0 {
		return nil
	}
	if ph := j.phase("dump-lock"); ph == nil || ph.State == Pending {
		return nil
	}
	z, err := r.znode(ctx)
	if err != nil {
		return err
	}
	deleted, err := z.Release(ctx, j.znodeHolder())
	if err != nil {
		return err
	}
	if !deleted {
		r.o.log.Info("dump lock znode not ours or gone; left as it is", "job", j.ID, "path", j.ZooKeeperPath)
	}
	return nil
}

// insideDumpLock reports whether a phase runs while the job holds the dump
// lock: after dump-lock is done and before release-dump-lock, or the same
// pair of a revert.
func (j *Job) insideDumpLock(name string) bool {
	at := slices.IndexFunc(j.Phases, func(p Phase) bool { return p.Name == name })
	for _, prefix := range []string{"", "revert-"} {
		lock := slices.IndexFunc(j.Phases, func(p Phase) bool { return p.Name == prefix+"dump-lock" })
		release := slices.IndexFunc(j.Phases, func(p Phase) bool { return p.Name == prefix+"release-dump-lock" })
		if lock >= 0 && release > lock && at > lock && at < release && j.Phases[lock].State == Done {
			return true
		}
	}
	return false
}

// resumeHold makes the first phase a run starts with take the dump lock
// again when the job is inside the lock's span: the etcd lock went with
// the dead orchestrator's lease, and someone may have taken the znode by
// hand meanwhile. Later phases in the same run hold it already.
func (r *run) resumeHold(ph *Phase, fn func(context.Context, *run) error) func(context.Context, *run) error {
	first := !r.resumed
	r.resumed = true
	if !first || !r.job.insideDumpLock(ph.Name) {
		return fn
	}
	return func(ctx context.Context, r *run) error {
		if err := r.holdDumpLock(ctx); err != nil {
			return err
		}
		return fn(ctx, r)
	}
}

// ZnodeLock is the dump lock znode as `reshard locks` shows it.
type ZnodeLock struct {
	Servers string    `json:"servers"`
	Path    string    `json:"path"`
	Jobs    []string  `json:"jobs"` // the unfinished jobs configured with it
	Holder  *string   `json:"holder"`
	Since   time.Time `json:"since,omitzero"`
	Error   string    `json:"error,omitempty"`
}

// ZnodeLocks reads the dump lock znode of every ensemble that an
// unfinished job names. An ensemble that does not answer is reported, not
// fatal: the other locks are still worth showing.
func (o *Orchestrator) ZnodeLocks(ctx context.Context) ([]ZnodeLock, error) {
	jobs, err := o.store.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []ZnodeLock
	index := map[string]int{}
	for _, j := range jobs {
		if len(j.ZooKeeper) == 0 || j.State == Done || j.State == Aborted {
			continue
		}
		key := strings.Join(j.ZooKeeper, ",") + j.ZooKeeperPath
		if i, ok := index[key]; ok {
			out[i].Jobs = append(out[i].Jobs, j.ID)
			continue
		}
		index[key] = len(out)
		out = append(out, ZnodeLock{Servers: strings.Join(j.ZooKeeper, ","), Path: j.ZooKeeperPath, Jobs: []string{j.ID}})
	}
	for i := range out {
		zl := &out[i]
		zctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		z, err := o.dialZnode(zctx, strings.Split(zl.Servers, ","), zl.Path)
		if err == nil {
			var h string
			var ok bool
			h, zl.Since, ok, err = z.Holder(zctx)
			if ok {
				zl.Holder = &h
			}
			z.Close()
		}
		cancel()
		if err != nil {
			zl.Error = err.Error()
		}
	}
	return out, nil
}
