package lab

import (
	"fmt"
	"os/exec"
	"strings"

	"github.com/reshard/reshard/lab/netdelay"
)

// Partition cuts the link between hosts A and B: each drops every packet
// to or from the other, established connections included, as a switch
// that fails does. B empty cuts A off from every other host and from this
// machine.
type Partition struct {
	A string `json:"a"`
	B string `json:"b,omitempty"`
}

func (p Partition) String() string {
	if p.B == "" {
		return p.A + " from all"
	}
	return p.A + " | " + p.B
}

// iptablesCommand is netdelay's: each iptables backend lists only its own
// rules, so the lab makes every rule (partitions, latency) with one.
func iptablesCommand() string { return netdelay.IptablesCmd }

// Cut partitions hosts a and b (b "" for every other host) in the lab in
// dir. The rules sit in the namespaces of the hosts cut, never in this
// machine's own.
func Cut(dir, a, b string) (Partition, error) {
	p := Partition{A: a, B: b}
	err := withNetwork(dir, func(st *State) error {
		if err := st.checkPartition(p); err != nil {
			return err
		}
		for _, q := range st.Partitions {
			if q == p || (q.A == p.B && q.B == p.A) {
				return nil
			}
		}
		st.Partitions = append(st.Partitions, p)
		if err := st.save(); err != nil {
			return err
		}
		return st.applyPartitions(p.A, p.B)
	})
	return p, err
}

// Heal restores links: between a and b, every link of a when b is "",
// every link in the lab when both are "". It returns the partitions healed.
func Heal(dir, a, b string) ([]Partition, error) {
	var healed []Partition
	err := withNetwork(dir, func(st *State) error {
		var kept []Partition
		touched := map[string]bool{}
		for _, p := range st.Partitions {
			match := a == "" ||
				(b == "" && (p.A == a || p.B == a)) ||
				(p.A == a && p.B == b) || (p.A == b && p.B == a)
			if !match {
				kept = append(kept, p)
				continue
			}
			healed = append(healed, p)
			touched[p.A], touched[p.B] = true, true
		}
		if a != "" && len(healed) == 0 {
			what := a
			if b != "" {
				what = a + " and " + b
			}
			return fmt.Errorf("no partition of %s to heal (partitions: %v)", what, st.Partitions)
		}
		st.Partitions = kept
		if err := st.save(); err != nil {
			return err
		}
		var names []string
		for n := range touched {
			names = append(names, n)
		}
		return st.applyPartitions(names...)
	})
	return healed, err
}

func withNetwork(dir string, fn func(st *State) error) error {
	return Provisioner{Dir: dir}.withState(func(st *State, _ *pg) error {
		if st.Network == nil {
			return fmt.Errorf("the lab in %s has no hosts to partition: start it with 'reshard lab up --hosts'", st.Dir)
		}
		return fn(st)
	})
}

// checkPartition refuses unknown hosts and a partition of this machine
// from everything (it would cut the lab's own commands off).
func (s *State) checkPartition(p Partition) error {
	if p.A == p.B {
		return fmt.Errorf("cannot partition %s from itself", p.A)
	}
	for _, n := range []string{p.A, p.B} {
		if n == "" || n == ControlHost {
			continue
		}
		if _, ok := s.Host(n); !ok {
			return fmt.Errorf("no host %q in the lab (hosts: %s)", n, strings.Join(s.hostNames(), ", "))
		}
	}
	if p.A == ControlHost && p.B == "" {
		return fmt.Errorf("cannot cut %s (this machine) from all: name the hosts to cut it from", ControlHost)
	}
	return nil
}

func (s *State) hostNames() []string {
	out := []string{ControlHost}
	for _, h := range s.Hosts {
		out = append(out, h.Name)
	}
	return out
}

// addrOf is a host's address; control's is the bridge's.
func (s *State) addrOf(name string) string {
	if name == ControlHost {
		return s.Network.Gateway()
	}
	if h, ok := s.Host(name); ok {
		return h.Addr
	}
	return ""
}

// applyPartitions rewrites the filter rules of the named hosts from the
// recorded partitions: their INPUT and OUTPUT chains are the lab's alone.
func (s *State) applyPartitions(names ...string) error {
	for _, name := range names {
		h, ok := s.Host(name)
		if !ok {
			continue // control, or "" (from all): the rules sit in the other host
		}
		rules := [][]string{{"-F", "INPUT"}, {"-F", "OUTPUT"}}
		for _, p := range s.Partitions {
			switch {
			case p.A == name && p.B == "":
				rules = append(rules, []string{"-A", "INPUT", "!", "-i", "lo", "-j", "DROP"},
					[]string{"-A", "OUTPUT", "!", "-o", "lo", "-j", "DROP"})
			case p.A == name || p.B == name:
				other := p.B
				if p.B == name {
					other = p.A
				}
				if other == "" {
					continue
				}
				addr := s.addrOf(other)
				rules = append(rules, []string{"-A", "INPUT", "-s", addr, "-j", "DROP"},
					[]string{"-A", "OUTPUT", "-d", addr, "-j", "DROP"})
			}
		}
		for _, r := range rules {
			argv := h.argv(nil, append([]string{iptablesCommand(), "-w"}, r...)...)
			if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
				return fmt.Errorf("host %s: %s: %v: %s", name, strings.Join(r, " "), err, strings.TrimSpace(string(out)))
			}
		}
	}
	return nil
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
	for _, sh := range st.Shards {
		for _, p := range sh.Peers {
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
