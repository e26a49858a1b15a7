package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/reshard/reshard"
)

// State is the lab's record of what it runs, kept in DIR/lab.json. Every
// command reads it; `lab down` stops whatever it lists.
type State struct {
	Dir            string   `json:"dir"`
	DataRoot       string   `json:"data_root"`
	EtcdClientPort int      `json:"etcd_client_port"`
	EtcdPeerPort   int      `json:"etcd_peer_port"`
	EtcdURL        string   `json:"etcd"` // client URLs, comma-separated
	SupervisorPID  int      `json:"supervisor_pid"`
	Routers        []string `json:"routers"`
	RouterPorts    []int    `json:"router_ports"`
	Moray          []string `json:"moray"` // each router's Moray (Fast RPC) address, HOST:PORT
	MorayPorts     []int    `json:"moray_ports"`
	CrossShardFind string   `json:"cross_shard_find,omitempty"` // the routers' --cross-shard-find
	UI             string   `json:"ui,omitempty"`               // the dashboard's URL, when the lab serves one
	UIListen       string   `json:"ui_listen,omitempty"`        // HOST:PORT it listens on
	RingVersion    int64    `json:"ring_version"`
	Shards         []Shard  `json:"shards"`
	Ready          bool     `json:"ready"`

	// EtcdMembers is empty when the supervisor embeds the lab's one etcd
	// member (EtcdClientPort, EtcdPeerPort), else the members that run each
	// as its own process; EtcdURL then lists all their client URLs.
	EtcdMembers []EtcdMember `json:"etcd_members,omitempty"`

	// Network, Hosts and Partitions exist in a lab of hosts (`up --hosts`):
	// the bridge, every namespace, and the links cut between them.
	Network    *Network    `json:"network,omitempty"`
	Hosts      []Host      `json:"hosts,omitempty"`
	Partitions []Partition `json:"partitions,omitempty"`
	// RouterPlaces is where each router runs (empty: 127.0.0.1).
	RouterPlaces []Place `json:"router_places,omitempty"`
	// Agents are the spare hosts, each running a host agent (agents.go).
	Agents []AgentHost `json:"agents,omitempty"`
	// Disks are the small file systems mounted over peers' data
	// directories (`lab disk`); `lab down` unmounts them.
	Disks []Disk `json:"disks,omitempty"`
}

// routerPlace is where router i runs.
func (s *State) routerPlace(i int) Place {
	if i < len(s.RouterPlaces) {
		return s.RouterPlaces[i]
	}
	return Place{}
}

// RouterHostName names router i's host (0-based).
func RouterHostName(i int) string { return fmt.Sprintf("router-%d", i+1) }

// Shard is one lab pnode: a chain of peers, primary first.
type Shard struct {
	Name  string `json:"name"`
	Peers []Peer `json:"peers"`
}

// Peer is one PostgreSQL server of a lab shard.
type Peer struct {
	Name     string       `json:"name"`
	Role     reshard.Role `json:"role"`
	Port     int          `json:"port"`
	DataDir  string       `json:"data_dir"`
	Upstream string       `json:"upstream,omitempty"` // peer it streams from
	PID      int          `json:"pid"`
	Place
	// Agent is the host whose agent made the peer (a physical split's new
	// peer); empty for the lab's own.
	Agent string `json:"agent,omitempty"`
}

// DSN is how clients reach the peer. The lab listens on loopback or its
// own hosts only and trusts them, so the DSN holds no password.
func (p Peer) DSN() string { return p.dsn("moray") }

func (p Peer) dsn(database string) string {
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", net.JoinHostPort(p.host(), strconv.Itoa(p.Port)), database)
}

// Pnode is the shard as the registry records it.
func (s Shard) Pnode() reshard.Pnode {
	p := reshard.Pnode{Name: s.Name}
	for _, peer := range s.Peers {
		p.Peers = append(p.Peers, reshard.Peer{Name: peer.Name, Role: peer.Role, DSN: peer.DSN()})
	}
	return p
}

func statePath(dir string) string { return filepath.Join(dir, "lab.json") }

// ErrNoLab means DIR holds no lab.
var ErrNoLab = errors.New("no lab")

// Load reads DIR/lab.json.
func Load(dir string) (*State, error) {
	b, err := os.ReadFile(statePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w (run 'reshard lab up --dir %s')", dir, ErrNoLab, dir)
	}
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: corrupt lab state: %w", statePath(dir), err)
	}
	return &s, nil
}

// save writes the state atomically so a crash never leaves half a file.
func (s *State) save() error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := statePath(s.Dir) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, statePath(s.Dir))
}

// lock serializes commands that change the lab (up, add-shard, down).
func lock(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, "lab.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// Shard returns the named shard.
func (s *State) Shard(name string) (*Shard, bool) {
	for i := range s.Shards {
		if s.Shards[i].Name == name {
			return &s.Shards[i], true
		}
	}
	return nil, false
}

// withState runs fn on the state of the lab in dir under the lab lock, and
// saves it.
func withState(dir string, fn func(st *State, g *pg) error) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	unlock, err := lock(dir)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := Load(dir)
	if err != nil {
		return err
	}
	g, err := newPG(filepath.Join(dir, "logs"))
	if err != nil {
		return err
	}
	ferr := fn(st, g)
	if err := st.save(); err != nil {
		return err
	}
	return ferr
}

// findPeer finds a peer of any shard by name, the agents' peers included.
func (s *State) findPeer(name string) (Peer, bool) {
	for _, sh := range s.AllShards() {
		for _, p := range sh.Peers {
			if p.Name == name {
				return p, true
			}
		}
	}
	return Peer{}, false
}

// updatePeer records a peer of the lab's own shards as it now runs (its
// port and pid); an agent's peer is its agent's to record.
func (s *State) updatePeer(p Peer) {
	for i := range s.Shards {
		for j := range s.Shards[i].Peers {
			if s.Shards[i].Peers[j].Name == p.Name {
				s.Shards[i].Peers[j] = p
			}
		}
	}
}
