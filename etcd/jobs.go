package etcd

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/reshard/reshard"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Job records live under JobPrefix, one JSON value per job; the
// orchestrator owns their shape. A job's pnodes are locked under
// PnodeLockPrefix for as long as it runs, its orchestrators take turns
// through a lock under jobLockPrefix, and an operator's request (abort,
// revert, complete) waits under abortPrefix or requestPrefix (the running
// orchestrator owns the record and would overwrite a flag set in it).
const (
	JobPrefix     = Prefix + "jobs/"
	jobLockPrefix = Prefix + "joblocks/"
	abortPrefix   = Prefix + "aborts/"
	requestPrefix = Prefix + "requests/"
)

// Jobs keeps job records in etcd.
type Jobs struct{ cli *clientv3.Client }

// NewJobs returns the job store.
func NewJobs(cli *clientv3.Client) *Jobs { return &Jobs{cli: cli} }

// ErrPnodeBusy means a pnode is already in a job.
type ErrPnodeBusy struct{ Pnode, Job string }

func (e ErrPnodeBusy) Error() string {
	return fmt.Sprintf("pnode %s is in job %s; one job per pnode at a time", e.Pnode, e.Job)
}

// Create stores a new job record and locks its pnodes in one transaction,
// so two jobs can never touch the same pnode.
func (s *Jobs) Create(ctx context.Context, id string, record any, pnodes []string) error {
	b, err := json.Marshal(record)
	if err != nil {
		return err
	}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(JobPrefix+id), "=", 0)}
	ops := []clientv3.Op{clientv3.OpPut(JobPrefix+id, string(b))}
	for _, p := range pnodes {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(PnodeLockPrefix+p), "=", 0))
		ops = append(ops, clientv3.OpPut(PnodeLockPrefix+p, id))
	}
	ok, _, err := txn(ctx, s.cli, cmps, ops, nil)
	if err != nil {
		return fmt.Errorf("create job: %w", err)
	}
	if ok {
		return nil
	}
	holders, _ := PnodeLocks(ctx, s.cli)
	for _, p := range pnodes {
		if h, ok := holders[p]; ok {
			return ErrPnodeBusy{Pnode: p, Job: h}
		}
	}
	return fmt.Errorf("job %s: %w", id, reshard.ErrExists)
}

// Save writes a job record back; under a fence (WithFence) it fails with
// ErrFenced once another orchestrator holds the job.
func (s *Jobs) Save(ctx context.Context, id string, record any) error {
	b, err := json.Marshal(record)
	if err != nil {
		return err
	}
	if err := do(ctx, s.cli, clientv3.OpPut(JobPrefix+id, string(b))); err != nil {
		return fmt.Errorf("save job %s: %w", id, err)
	}
	return nil
}

// Get reads one job record into record.
func (s *Jobs) Get(ctx context.Context, id string, record any) error {
	resp, err := s.cli.Get(ctx, JobPrefix+id)
	if err != nil {
		return fmt.Errorf("read job %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return fmt.Errorf("job %s: %w", id, reshard.ErrNotFound)
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, record); err != nil {
		return fmt.Errorf("job %s: corrupt record: %w", id, err)
	}
	return nil
}

// List returns every job record.
func (s *Jobs) List(ctx context.Context) ([]json.RawMessage, error) {
	resp, err := s.cli.Get(ctx, JobPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	out := make([]json.RawMessage, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		out[i] = kv.Value
	}
	return out, nil
}

// ReleasePnodes frees the job's pnodes for other jobs.
func (s *Jobs) ReleasePnodes(ctx context.Context, id string, pnodes []string) error {
	for _, p := range pnodes {
		if _, _, err := txn(ctx, s.cli, []clientv3.Cmp{clientv3.Compare(clientv3.Value(PnodeLockPrefix+p), "=", id)},
			[]clientv3.Op{clientv3.OpDelete(PnodeLockPrefix + p)}, nil); err != nil {
			return err
		}
	}
	return nil
}

// Action is what an operator asks of a job that an orchestrator may be
// running: the request waits in etcd until the running one takes it up.
type Action string

const (
	// Abort undoes a job that has not flipped the ring.
	Abort Action = "abort"
	// Revert takes a flipped job's way back: the ring flips back.
	Revert Action = "revert"
	// Complete closes a flipped job's way back and cleans up.
	Complete Action = "complete"
)

// requestKey is where a request of the action waits. Abort requests keep
// the key they always had.
func requestKey(a Action, id string) string {
	if a == Abort {
		return abortPrefix + id
	}
	return requestPrefix + string(a) + "/" + id
}

// Request asks whoever runs the job to carry out the action.
func (s *Jobs) Request(ctx context.Context, a Action, id string) error {
	if _, err := s.cli.Put(ctx, requestKey(a, id), time.Now().UTC().Format(time.RFC3339)); err != nil {
		return fmt.Errorf("request %s: %w", a, err)
	}
	return nil
}

// Requested reports whether the action was asked of the job.
func (s *Jobs) Requested(ctx context.Context, a Action, id string) (bool, error) {
	resp, err := s.cli.Get(ctx, requestKey(a, id), clientv3.WithCountOnly())
	if err != nil {
		return false, err
	}
	return resp.Count > 0, nil
}

// ClearRequest removes a request that has been dealt with.
func (s *Jobs) ClearRequest(ctx context.Context, a Action, id string) error {
	return do(ctx, s.cli, clientv3.OpDelete(requestKey(a, id)))
}

// Hold takes the job's lock on session, waiting while another orchestrator
// has it (calling waiting once), and returns the fence for this hold.
func (s *Jobs) Hold(ctx context.Context, session *concurrency.Session, id string, waiting func()) (Fence, func(), error) {
	mu := concurrency.NewMutex(session, jobLockPrefix+id)
	if err := mu.TryLock(ctx); err != nil {
		if err != concurrency.ErrLocked {
			return Fence{}, nil, fmt.Errorf("lock job %s: %w", id, err)
		}
		if waiting != nil {
			waiting()
		}
		if err := mu.Lock(ctx); err != nil {
			return Fence{}, nil, fmt.Errorf("wait for job %s: %w", id, err)
		}
	}
	unlock := func() { mu.Unlock(context.Background()) }
	resp, err := s.cli.Get(ctx, mu.Key())
	if err != nil || len(resp.Kvs) == 0 {
		unlock()
		if err == nil {
			err = fmt.Errorf("the lock's key is gone (session expired)")
		}
		return Fence{}, nil, fmt.Errorf("lock job %s: %w", id, err)
	}
	return Fence{Key: mu.Key(), Token: resp.Kvs[0].CreateRevision}, unlock, nil
}

// Client is the etcd client the store uses.
func (s *Jobs) Client() *clientv3.Client { return s.cli }
