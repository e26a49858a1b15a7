package lab

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/reshard/reshard/lab/netdelay"
	"github.com/reshard/reshard/pgserver"
)

// With `lab up --hosts` every PostgreSQL peer, etcd member and router is a
// host of its own: a network namespace with one address on a bridge that
// the lab creates. Traffic between hosts crosses real (virtual) links, so a
// partition drops real packets. This machine's own namespace sits on the
// bridge as the host "control" (the bridge's address): the lab's commands,
// the orchestrator and the tests run there and reach every host.

// Place is where a lab process runs: a host's network namespace and
// address, or, both empty, this machine's namespace on 127.0.0.1.
type Place pgserver.Place

// host is the address the process listens on and is reached at.
func (p Place) host() string { return pgserver.Place(p).Host() }

// argv is the command line that runs argv in the place (pgserver.Place.Argv).
func (p Place) argv(cred *syscall.Credential, argv ...string) []string {
	return pgserver.Place(p).Argv(cred, argv...)
}

// command is exec.Command for argv in the place (pgserver.Place.Command).
func (p Place) command(cred *syscall.Credential, argv ...string) *exec.Cmd {
	return pgserver.Place(p).Command(cred, argv...)
}

const netnsDir = pgserver.NetnsDir

// ControlHost names this machine's own namespace among the hosts.
const ControlHost = "control"

// Network is the lab's bridge and its /24: 10.231.Subnet.0/24, with the
// bridge (this machine, the host "control") at .1.
//
// A lab of datacenters (DCs > 1) gives DC d the addresses 10.231.Subnet.64d
// to .64d+63, so that one CIDR names a DC, hosts added later included; a
// packet between two DCs is held Latency on arrival (netdelay), so each
// way between DCs takes Latency, as `tc netem delay` on every link would.
// This machine counts as a host of DC 1.
type Network struct {
	ID      string        `json:"id"` // from the lab's directory; part of every name the lab gives the kernel
	Bridge  string        `json:"bridge"`
	Subnet  int           `json:"subnet"`
	DCs     int           `json:"dcs,omitempty"`
	Latency time.Duration `json:"latency_ns,omitempty"` // one way, between two DCs
	// ControlNS names this machine's own network namespace, where the
	// bridge is, for lab commands run from a host.
	ControlNS string `json:"control_netns,omitempty"`
}

// dcCIDR is the addresses of DC d.
func (n Network) dcCIDR(d int) string { return fmt.Sprintf("10.231.%d.%d/26", n.Subnet, 64*d) }

// MaxDCs is how many datacenters a lab's addressing has room for.
const MaxDCs = 3

// Gateway is the bridge's address: this machine as the hosts see it.
func (n Network) Gateway() string { return fmt.Sprintf("10.231.%d.1", n.Subnet) }

// CIDR is the lab's subnet.
func (n Network) CIDR() string { return fmt.Sprintf("10.231.%d.0/24", n.Subnet) }

// labSubnets is every subnet a lab may use; PostgreSQL's pg_hba trusts it.
const labSubnets = "10.231.0.0/16"

// Host is one network namespace of the lab.
type Host struct {
	Name string `json:"name"`
	Place
	Veth string `json:"veth"`         // this machine's end of its link to the bridge
	DC   int    `json:"dc,omitempty"` // its datacenter, 1-based, in a lab of DCs
}

// dcOf places a host in a datacenter, spreading each kind over them: etcd
// member and router K in DC K, and peer K of shard S in DC S+K, so that a
// shard's primary, sync and async sit in three DCs (RFD 103's triple-DC
// mode) and the primaries of consecutive shards in different ones.
func dcOf(name string, dcs int) int {
	if dcs <= 1 {
		return 0
	}
	base, k := name, 1
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		if n, err := strconv.Atoi(name[i+1:]); err == nil {
			base, k = name[:i], n
		}
	}
	shard := 0
	if base != "etcd" && base != "router" {
		i := strings.IndexFunc(base, func(r rune) bool { return r < '0' || r > '9' })
		if i < 0 {
			i = len(base)
		}
		if n, err := strconv.Atoi(base[:i]); err == nil && n > 0 {
			shard = n - 1
		} else {
			h := fnv.New32a()
			h.Write([]byte(base))
			shard = int(h.Sum32() % uint32(dcs))
		}
	}
	return (shard+k-1)%dcs + 1
}

// hostNamePattern keeps host names to what the lab itself gives (peer
// names such as 1.moray-2, etcd-1, router-1).
var hostNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,39}$`)

// Host returns the named host.
func (s *State) Host(name string) (*Host, bool) {
	for i := range s.Hosts {
		if s.Hosts[i].Name == name {
			return &s.Hosts[i], true
		}
	}
	return nil, false
}

// networkID names a lab's kernel objects after its directory, so that labs
// side by side (tests run in parallel) never share one.
func networkID(dir string) string {
	h := sha256.Sum256([]byte(dir))
	return hex.EncodeToString(h[:])[:6]
}

// ip runs the ip command and folds its output into the error.
func (n *Network) ip(args ...string) error {
	out, err := n.ipCommand(args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ipCommand runs ip in this machine's own network namespace, where the
// bridge is, even from a process that runs on a host of the lab (a lab
// command given through `lab exec`). The lab names that namespace when it
// makes the bridge: this machine's init is not ours to look into.
func (n *Network) ipCommand(args ...string) *exec.Cmd {
	if n == nil || n.ControlNS == "" {
		return exec.Command("ip", args...)
	}
	return exec.Command("nsenter", append([]string{"--net=" + filepath.Join(netnsDir, n.ControlNS), "--", "ip"}, args...)...)
}

// ready reports whether the host's namespace and its link to the bridge
// exist, as addHost made them.
func (n *Network) ready(h Host) bool {
	if _, err := os.Stat(filepath.Join(netnsDir, h.NS)); err != nil {
		return false
	}
	return n.ipCommand("-n", h.NS, "addr", "show", "dev", "eth0").Run() == nil && n.ipCommand("link", "show", h.Veth).Run() == nil
}

// checkHostsPossible says plainly why this machine cannot run a lab of
// hosts, before anything is created.
func checkHostsPossible() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("--hosts needs root: it creates network namespaces, a bridge and veth links")
	}
	for _, tool := range []string{"ip", "nsenter", netdelay.IptablesCmd} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("--hosts needs %s on PATH (Debian packages iproute2, util-linux, iptables)", tool)
		}
	}
	return nil
}

// createNetwork creates the lab's bridge on the first free /24. A machine
// lock keeps two labs starting at once from taking the same one.
func createNetwork(dir string) (*Network, error) {
	unlock, err := machineLock("reshard-lab-net.lock")
	if err != nil {
		return nil, err
	}
	defer unlock()
	n := &Network{ID: networkID(dir)}
	n.Bridge = "rsb" + n.ID
	_ = n.ip("link", "del", n.Bridge) // left by a lab of this directory that was not taken down
	out, err := n.ipCommand("-4", "-o", "addr", "show").Output()
	if err != nil {
		return nil, fmt.Errorf("ip addr show: %w", err)
	}
	for n.Subnet = 1; n.Subnet < 255; n.Subnet++ {
		if !bytes.Contains(out, []byte(" "+n.Gateway()+"/")) {
			break
		}
	}
	if n.Subnet == 255 {
		return nil, fmt.Errorf("every lab subnet in %s is taken", labSubnets)
	}
	if err := n.ip("link", "add", n.Bridge, "type", "bridge"); err != nil {
		return nil, err
	}
	if err := n.ip("addr", "add", n.Gateway()+"/24", "dev", n.Bridge); err != nil {
		n.ip("link", "del", n.Bridge)
		return nil, err
	}
	if err := n.ip("link", "set", n.Bridge, "up"); err != nil {
		n.ip("link", "del", n.Bridge)
		return nil, err
	}
	control := "rs" + n.ID + "-" + ControlHost
	_ = n.ip("netns", "del", control)
	if err := n.ip("netns", "attach", control, strconv.Itoa(os.Getpid())); err != nil {
		n.ip("link", "del", n.Bridge)
		return nil, err
	}
	n.ControlNS = control
	return n, nil
}

// machineLock takes an exclusive lock shared by every lab on the machine.
func machineLock(name string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), name), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// addHost creates a host: a namespace linked to the bridge, with the next
// free address of the lab's subnet. The host is recorded in the state
// before the kernel objects exist, so that a failure leaves nothing that
// `lab down` does not know of.
func (s *State) addHost(name string) (*Host, error) {
	if s.Network == nil {
		return nil, fmt.Errorf("the lab in %s has no hosts (it was not started with --hosts)", s.Dir)
	}
	if !hostNamePattern.MatchString(name) || name == ControlHost {
		return nil, fmt.Errorf("bad host name %q", name)
	}
	if h, ok := s.Host(name); ok {
		if s.Network.ready(*h) {
			return h, nil
		}
		// Recorded by an attempt that failed half way: made again below.
		s.dropHost(name)
	}
	used := map[string]bool{}
	for _, h := range s.Hosts {
		used[h.Addr] = true
	}
	dc := dcOf(name, s.Network.DCs)
	first, last := 10, 254
	if dc > 0 {
		first, last = 64*dc, min(64*dc+63, 254)
	}
	k := first
	for ; k <= last && used[fmt.Sprintf("10.231.%d.%d", s.Network.Subnet, k)]; k++ {
	}
	if k > last {
		return nil, fmt.Errorf("the lab's subnet %s is full", s.Network.CIDR())
	}
	h := Host{Name: name, Veth: fmt.Sprintf("rs%s%03d", s.Network.ID, k), DC: dc,
		Place: Place{NS: "rs" + s.Network.ID + "-" + name, Addr: fmt.Sprintf("10.231.%d.%d", s.Network.Subnet, k)}}
	s.Hosts = append(s.Hosts, h)
	if err := s.save(); err != nil {
		return nil, err
	}
	s.removeHost(h) // leftovers of an earlier attempt
	inner := fmt.Sprintf("rp%s%03d", s.Network.ID, k)
	steps := [][]string{
		{"netns", "add", h.NS},
		{"link", "add", h.Veth, "type", "veth", "peer", "name", inner},
		{"link", "set", h.Veth, "master", s.Network.Bridge},
		{"link", "set", h.Veth, "up"},
		{"link", "set", inner, "netns", h.NS},
		{"-n", h.NS, "link", "set", inner, "name", "eth0"},
		{"-n", h.NS, "addr", "add", h.Addr + "/24", "dev", "eth0"},
		{"-n", h.NS, "link", "set", "eth0", "up"},
		{"-n", h.NS, "link", "set", "lo", "up"},
	}
	for _, step := range steps {
		if err := s.Network.ip(step...); err != nil {
			return nil, fmt.Errorf("host %s: %w", name, err)
		}
	}
	if s.Network.DCs > 1 {
		if err := startDelayer(s.Dir, h); err != nil {
			return nil, fmt.Errorf("host %s: %w", name, err)
		}
	}
	return &s.Hosts[len(s.Hosts)-1], nil
}

// placeHosts creates the lab's network and a host for every etcd member and
// router; peers get theirs as their shards are built.
func (s *State) placeHosts(dcs int, latency time.Duration, spares int) error {
	n, err := createNetwork(s.Dir)
	if err != nil {
		return err
	}
	if dcs > 1 {
		n.DCs, n.Latency = dcs, latency
	}
	s.Network = n
	if err := s.save(); err != nil {
		return err
	}
	for i := range s.EtcdMembers {
		h, err := s.addHost(s.EtcdMembers[i].Name)
		if err != nil {
			return err
		}
		s.EtcdMembers[i].Place = h.Place
	}
	s.RouterPlaces = nil
	for i := range s.RouterPorts {
		h, err := s.addHost(RouterHostName(i))
		if err != nil {
			return err
		}
		s.RouterPlaces = append(s.RouterPlaces, h.Place)
	}
	for i := 1; i <= spares; i++ {
		if _, err := s.addHost(SpareHostName(i)); err != nil {
			return err
		}
	}
	return s.save()
}

// SpareHostName names the i-th spare host (1-based).
func SpareHostName(i int) string { return fmt.Sprintf("spare-%d", i) }

// HostCommand is a command that runs argv on the named host (control: this
// machine), as root: what `lab exec` runs.
func (s *State) HostCommand(name string, argv ...string) (*exec.Cmd, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("no command to run")
	}
	if name == ControlHost {
		return exec.Command(argv[0], argv[1:]...), nil
	}
	h, ok := s.Host(name)
	if !ok {
		return nil, fmt.Errorf("no host %q in the lab (hosts: %s)", name, strings.Join(s.hostNames(), ", "))
	}
	return h.command(nil, argv...), nil
}

// removeHost deletes a host's namespace and link, after its delayer.
// Processes still inside keep the namespace alive, so callers stop them
// first.
func (s *State) removeHost(h Host) {
	stopDelayer(s.Dir, h.Name)
	if h.NS != "" {
		_ = s.Network.ip("netns", "del", h.NS)
	}
	if h.Veth != "" {
		_ = s.Network.ip("link", "del", h.Veth)
	}
}

// dropHost removes a host and forgets it.
func (s *State) dropHost(name string) {
	for i, h := range s.Hosts {
		if h.Name == name {
			s.removeHost(h)
			s.Hosts = append(s.Hosts[:i], s.Hosts[i+1:]...)
			var kept []Partition
			for _, p := range s.Partitions {
				if p.A != name && p.B != name {
					kept = append(kept, p)
				}
			}
			s.Partitions = kept
			return
		}
	}
}

// removeNetwork deletes every host and then the bridge.
func removeNetwork(s *State) {
	for _, h := range s.Hosts {
		s.removeHost(h)
	}
	if s.Network != nil {
		_ = s.Network.ip("link", "del", s.Network.Bridge)
		if s.Network.ControlNS != "" {
			// Only the name goes: this machine's namespace lives on.
			_ = exec.Command("ip", "netns", "del", s.Network.ControlNS).Run()
		}
	}
}

// HostRow is one row of `lab status --hosts`.
type HostRow struct {
	Name    string   `json:"name"`
	Addr    string   `json:"addr"`
	NetNS   string   `json:"netns,omitempty"`
	DC      int      `json:"dc,omitempty"`
	Runs    string   `json:"runs"`
	CutFrom []string `json:"cut_from"` // hosts it cannot reach; "all" for every one
}

// HostRows lists this machine (control) and every host, with what runs
// there and the links cut.
func HostRows(st *State) []HostRow {
	if st.Network == nil {
		return nil
	}
	runs := map[string]string{ControlHost: "lab commands, orchestrator, tests"}
	for _, a := range st.Agents {
		runs[a.Name] = "agent"
	}
	for _, sh := range st.AllShards() {
		for _, p := range sh.Peers {
			if p.Agent != "" {
				runs[p.Agent] = fmt.Sprintf("agent, postgres %s %s (%s)", sh.Name, p.Role, p.Name)
				continue
			}
			runs[p.Name] = fmt.Sprintf("postgres %s %s", sh.Name, p.Role)
		}
	}
	for _, m := range st.EtcdMembers {
		runs[m.Name] = "etcd member"
	}
	for i := range st.RouterPorts {
		runs[RouterHostName(i)] = "router"
	}
	for _, h := range st.Hosts {
		if strings.HasPrefix(h.Name, "spare-") && runs[h.Name] == "" {
			runs[h.Name] = "spare"
		}
	}
	control := HostRow{Name: ControlHost, Addr: st.Network.Gateway(), Runs: runs[ControlHost]}
	if st.Network.DCs > 1 {
		control.DC = 1
	}
	rows := []HostRow{control}
	for _, h := range st.Hosts {
		r := runs[h.Name]
		if r == "" {
			r = "-"
		}
		rows = append(rows, HostRow{Name: h.Name, Addr: h.Addr, NetNS: h.NS, DC: h.DC, Runs: r})
	}
	for i := range rows {
		rows[i].CutFrom = []string{}
		for _, p := range st.Partitions {
			switch {
			case p.A == rows[i].Name && p.B == "":
				rows[i].CutFrom = append(rows[i].CutFrom, "all")
			case p.A == rows[i].Name:
				rows[i].CutFrom = append(rows[i].CutFrom, p.B)
			case p.B == rows[i].Name:
				rows[i].CutFrom = append(rows[i].CutFrom, p.A)
			}
		}
	}
	return rows
}
