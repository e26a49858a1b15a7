package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"syscall"
	"time"

	"github.com/reshard/reshard"
	"github.com/reshard/reshard/agent"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/pgserver"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The lab's spare hosts each run a host agent ('reshard agent'), as a
// real deployment runs one on every host that may take a new peer: the
// physical strategy makes its new peers through them, so the lab tests the
// code path a deployment uses. The lab's own shards are made by the lab,
// as an operator's Manatee deployment made theirs; a peer an agent made is
// recorded under the agent's data root, where the lab finds it to show it
// (`lab status`), restart it and stop it (`lab down`).

// AgentHost is a spare host and its agent.
type AgentHost struct {
	Name string `json:"name"`
	Root string `json:"root"` // the agent's data root
	Place
}

// DefaultSpareHosts is enough for a triple-DC split of one pnode.
const DefaultSpareHosts = 3

// AgentPIDFile is where the supervisor records an agent's pid, so a fault
// test can kill one and `lab down` can stop it even if the supervisor died.
func AgentPIDFile(dir, host string) string {
	return filepath.Join(dir, "run", "agent-"+host+".pid")
}

// AgentSpec is the provisioner spec of a physical job in this lab: its
// agent hosts in order, each new peer on the first that runs none.
func (s *State) AgentSpec() string { return agent.Spec(s.AgentNames()) }

// AgentNames names the lab's agent hosts in order.
func (s *State) AgentNames() []string {
	names := make([]string, len(s.Agents))
	for i, a := range s.Agents {
		names[i] = a.Name
	}
	return names
}

// prepareAgents records the spare hosts' agents and makes their data
// roots, which the PostgreSQL user must be able to enter: pg_basebackup
// writes there as that user.
func (s *State) prepareAgents(n int, as runAs) error {
	base := filepath.Join(s.DataRoot, "agents")
	if err := os.MkdirAll(base, 0o700); err != nil {
		return err
	}
	if err := as.Chown(base); err != nil {
		return err
	}
	for i := 1; i <= n; i++ {
		a := AgentHost{Name: SpareHostName(i), Root: filepath.Join(base, SpareHostName(i))}
		if s.Network != nil {
			h, ok := s.Host(a.Name)
			if !ok {
				return fmt.Errorf("no host %s for its agent", a.Name)
			}
			a.Place = h.Place
		}
		if err := os.MkdirAll(a.Root, 0o700); err != nil {
			return err
		}
		if err := as.Chown(a.Root); err != nil {
			return err
		}
		s.Agents = append(s.Agents, a)
	}
	return s.save()
}

// command runs the agent of a where a is.
func (a AgentHost) command(exe, etcdURL string) *exec.Cmd {
	return a.Place.command(nil, exe, "agent", "--etcd", etcdURL, "--host", a.Name,
		"--addr", a.host(), "--data-root", a.Root, "--ttl", "5s")
}

// waitAgents waits until every agent of the lab is registered.
func waitAgents(ctx context.Context, cli *clientv3.Client, st *State) error {
	store := etcd.NewAgents(cli)
	deadline := time.Now().Add(60 * time.Second)
	for {
		hosts, err := store.Hosts(ctx)
		if err != nil {
			return err
		}
		missing := []string{}
		for _, a := range st.Agents {
			if _, ok := hosts[a.Name]; !ok {
				missing = append(missing, a.Name)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agents %v not registered after 60s (see %s/logs)", missing, st.Dir)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// agentPeers is every peer the lab's agents made, as lab peers, by pnode.
func (s *State) agentPeers() map[string][]Peer {
	out := map[string][]Peer{}
	for _, a := range s.Agents {
		peers, err := agent.LocalPeers(a.Root)
		if err != nil {
			continue // a record being written; the next look sees it
		}
		for _, lp := range peers {
			out[lp.Pnode] = append(out[lp.Pnode], Peer{Name: lp.Name, Role: lp.Role, Port: lp.Port,
				DataDir: lp.DataDir, Upstream: lp.Upstream, Place: a.Place, Agent: a.Name})
		}
	}
	for _, peers := range out {
		sort.Slice(peers, func(i, j int) bool {
			if ri, rj := roleOrder(peers[i].Role), roleOrder(peers[j].Role); ri != rj {
				return ri < rj
			}
			return peers[i].Name < peers[j].Name
		})
	}
	return out
}

func roleOrder(r reshard.Role) int {
	return slices.Index([]reshard.Role{reshard.RolePrimary, reshard.RoleSync, reshard.RoleAsync}, r)
}

// AllShards is the lab's shards with the peers its agents made: a shard
// the physical strategy created appears with its peers in Manatee's order.
func (s *State) AllShards() []Shard {
	out := slices.Clone(s.Shards)
	byAgent := s.agentPeers()
	var pnodes []string
	for pn := range byAgent {
		pnodes = append(pnodes, pn)
	}
	sort.Strings(pnodes)
	for _, pn := range pnodes {
		if i := slices.IndexFunc(out, func(sh Shard) bool { return sh.Name == pn }); i >= 0 {
			out[i].Peers = append(slices.Clone(out[i].Peers), byAgent[pn]...)
			continue
		}
		out = append(out, Shard{Name: pn, Peers: byAgent[pn]})
	}
	return out
}

// stopAgents stops the agents by pid, for a supervisor that was killed,
// and then the servers and base backups they left: a peer an agent made
// outlives it, as the lab's own peers outlive the supervisor.
func stopAgents(st *State, g *pg) {
	for _, a := range st.Agents {
		if pid := pidFromFile(AgentPIDFile(st.Dir, a.Name), "agent", a.Name); pid > 0 {
			stopPID(pid, syscall.SIGTERM, 10*time.Second)
		}
		os.Remove(AgentPIDFile(st.Dir, a.Name))
		pgserver.KillBackup(filepath.Join(a.Root, "basebackup.pid"))
	}
	for _, peers := range st.agentPeers() {
		for i := len(peers) - 1; i >= 0; i-- {
			g.stop(peers[i])
		}
	}
}
