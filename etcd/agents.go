package etcd

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Host agents (package agent) keep their state under agentPrefix:
//
//	hosts/HOST       the agent's record, on its lease: gone when it dies
//	ops/HOST/ID      an operation a provisioner asks of HOST's agent
//	status/HOST/ID   that operation's status, written by the agent
//	peers/PEER       the host that runs PEER
//	busy/HOST        the peer HOST runs, so two jobs never pick one host
//
// The agent package owns the records' shape; this store keeps them.
const (
	agentPrefix       = Prefix + "agents/"
	agentHostPrefix   = agentPrefix + "hosts/"
	agentOpPrefix     = agentPrefix + "ops/"
	agentStatusPrefix = agentPrefix + "status/"
	agentPeerPrefix   = agentPrefix + "peers/"
	agentBusyPrefix   = agentPrefix + "busy/"
)

// Agents keeps host agents' records and operations in etcd.
type Agents struct{ cli *clientv3.Client }

// NewAgents returns the agents' store.
func NewAgents(cli *clientv3.Client) *Agents { return &Agents{cli: cli} }

// Client is the etcd client the store uses.
func (a *Agents) Client() *clientv3.Client { return a.cli }

// Register records host's agent on lease: the record goes when the agent
// stops renewing the lease.
func (a *Agents) Register(ctx context.Context, host string, lease clientv3.LeaseID, record any) error {
	b, err := json.Marshal(record)
	if err != nil {
		return err
	}
	_, err = a.cli.Put(ctx, agentHostPrefix+host, string(b), clientv3.WithLease(lease))
	return err
}

// Host returns host's agent record, or nil when no agent is registered.
func (a *Agents) Host(ctx context.Context, host string) ([]byte, error) {
	resp, err := a.cli.Get(ctx, agentHostPrefix+host)
	if err != nil || len(resp.Kvs) == 0 {
		return nil, err
	}
	return resp.Kvs[0].Value, nil
}

// Hosts returns every registered agent's record by host.
func (a *Agents) Hosts(ctx context.Context) (map[string][]byte, error) {
	return a.list(ctx, agentHostPrefix)
}

func (a *Agents) list(ctx context.Context, prefix string) (map[string][]byte, error) {
	resp, err := a.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), prefix)] = kv.Value
	}
	return out, nil
}

// PutOp asks host's agent for an operation, and returns the revision it
// was put at (to watch its status from). Under a job's fence (ctx), a
// stale orchestrator's request is refused here already.
func (a *Agents) PutOp(ctx context.Context, host, id string, record any) (int64, error) {
	b, err := json.Marshal(record)
	if err != nil {
		return 0, err
	}
	_, _, rev, err := txnAt(ctx, a.cli, nil, []clientv3.Op{clientv3.OpPut(agentOpPrefix+host+"/"+id, string(b))}, nil)
	return rev, err
}

// Ops returns host's operations by id, and the revision they were read at
// (to watch for new ones after it).
func (a *Agents) Ops(ctx context.Context, host string) (map[string][]byte, int64, error) {
	prefix := agentOpPrefix + host + "/"
	resp, err := a.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, err
	}
	out := map[string][]byte{}
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), prefix)] = kv.Value
	}
	return out, resp.Header.Revision, nil
}

// WatchOps delivers the id and record of each operation put for host
// after revision rev.
func (a *Agents) WatchOps(ctx context.Context, host string, rev int64) clientv3.WatchChan {
	return a.cli.Watch(clientv3.WithRequireLeader(ctx), agentOpPrefix+host+"/",
		clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithFilterDelete())
}

// OpID is the id of an operation key that WatchOps delivered.
func OpID(host string, key []byte) string {
	return strings.TrimPrefix(string(key), agentOpPrefix+host+"/")
}

// PutStatus records an operation's status.
func (a *Agents) PutStatus(ctx context.Context, host, id string, record any) error {
	b, err := json.Marshal(record)
	if err != nil {
		return err
	}
	_, err = a.cli.Put(ctx, agentStatusPrefix+host+"/"+id, string(b))
	return err
}

// Status returns an operation's status, nil when there is none yet.
func (a *Agents) Status(ctx context.Context, host, id string) ([]byte, error) {
	resp, err := a.cli.Get(ctx, agentStatusPrefix+host+"/"+id)
	if err != nil || len(resp.Kvs) == 0 {
		return nil, err
	}
	return resp.Kvs[0].Value, nil
}

// WatchStatus delivers every change of an operation's status after
// revision rev (its PutOp's). A watch from "now" would miss a status the
// agent wrote while the watch was being set up, and its asker would learn
// of it only at its next poll: in a write block, a second lost.
func (a *Agents) WatchStatus(ctx context.Context, host, id string, rev int64) clientv3.WatchChan {
	return a.cli.Watch(clientv3.WithRequireLeader(ctx), agentStatusPrefix+host+"/"+id, clientv3.WithRev(rev+1))
}

// DeleteOp forgets an operation and its status once its asker has read it.
func (a *Agents) DeleteOp(ctx context.Context, host, id string) error {
	_, err := a.cli.Txn(ctx).Then(clientv3.OpDelete(agentOpPrefix+host+"/"+id),
		clientv3.OpDelete(agentStatusPrefix+host+"/"+id)).Commit()
	return err
}

// Assign records that host runs peer, if peer has no host yet and host no
// peer. It reports whether it did; either way it returns peer's host.
func (a *Agents) Assign(ctx context.Context, peer, host string) (bool, string, error) {
	ok, resps, err := txn(ctx, a.cli,
		[]clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(agentPeerPrefix+peer), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(agentBusyPrefix+host), "=", 0),
		},
		[]clientv3.Op{clientv3.OpPut(agentPeerPrefix+peer, host), clientv3.OpPut(agentBusyPrefix+host, peer)},
		[]clientv3.Op{clientv3.OpGet(agentPeerPrefix + peer)})
	if err != nil {
		return false, "", fmt.Errorf("assign peer %s to host %s: %w", peer, host, err)
	}
	if ok {
		return true, host, nil
	}
	if kvs := resps[0].GetResponseRange().Kvs; len(kvs) > 0 {
		return false, string(kvs[0].Value), nil
	}
	return false, "", nil
}

// HostOf returns the host that runs peer ("" when none).
func (a *Agents) HostOf(ctx context.Context, peer string) (string, error) {
	resp, err := a.cli.Get(ctx, agentPeerPrefix+peer)
	if err != nil || len(resp.Kvs) == 0 {
		return "", err
	}
	return string(resp.Kvs[0].Value), nil
}

// Busy returns the peer each busy host runs.
func (a *Agents) Busy(ctx context.Context) (map[string]string, error) {
	m, err := a.list(ctx, agentBusyPrefix)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for h, p := range m {
		out[h] = string(p)
	}
	return out, nil
}

// Unassign frees peer's host after the peer was removed.
func (a *Agents) Unassign(ctx context.Context, peer, host string) error {
	_, _, err := txn(ctx, a.cli,
		[]clientv3.Cmp{clientv3.Compare(clientv3.Value(agentBusyPrefix+host), "=", peer)},
		[]clientv3.Op{clientv3.OpDelete(agentPeerPrefix + peer), clientv3.OpDelete(agentBusyPrefix + host)},
		[]clientv3.Op{clientv3.OpDelete(agentPeerPrefix + peer)})
	return err
}

// FreeHosts returns the registered hosts that run no peer, sorted.
func (a *Agents) FreeHosts(ctx context.Context) ([]string, error) {
	hosts, err := a.Hosts(ctx)
	if err != nil {
		return nil, err
	}
	busy, err := a.Busy(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for h := range hosts {
		if busy[h] == "" {
			out = append(out, h)
		}
	}
	sort.Strings(out)
	return out, nil
}
