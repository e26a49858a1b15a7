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
	return withState(dir, func(st *State, _ *pg) error {
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
			argv := h.argv(nil, append([]string{netdelay.IptablesCmd, "-w"}, r...)...)
			if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
				return fmt.Errorf("host %s: %s: %v: %s", name, strings.Join(r, " "), err, strings.TrimSpace(string(out)))
			}
		}
	}
	return nil
}
