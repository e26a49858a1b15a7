// Package netdelay adds real latency to real packets between lab hosts, each
// in its own network namespace, without tc netem (which this kernel lacks).
//
// An iptables rule in the sending namespace's mangle POSTROUTING chain sends
// the packets bound for a destination to an NFQUEUE queue; a Delayer reading
// that queue holds each packet for a fixed delay and then accepts it. Delay
// is added on egress, so 10 ms on each side of a link gives 20 ms of round
// trip, as `tc netem delay 10ms` on both ends would.
//
// Usage, per namespace:
//
//	rules := []netdelay.Rule{{Queue: 1, Dst: []string{"10.2.0.0/16"}, Delay: 10 * time.Millisecond}}
//	err := netdelay.Install(ns, rules)
//	err = netdelay.RunAll(ctx, ns, rules) // until ctx is done
//	err = netdelay.Remove(ns, rules)
package netdelay

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// IptablesCmd is the iptables used for the rules. Debian 12's plain
// `iptables` is the nf_tables backend, and this kernel is built without
// CONFIG_NFT_QUEUE: iptables-nft turns -j NFQUEUE into a native nft `queue`
// expression, which such a kernel cannot run. The legacy xtables NFQUEUE
// target is built in (see /proc/net/ip_tables_targets), so the legacy
// backend is the one that works on every kernel with NFQUEUE at all.
const IptablesCmd = "iptables-legacy"

// Rule delays the IPv4 packets that a namespace sends to Dst (addresses or
// CIDRs) by Delay, through NFQUEUE queue Queue. Rules of one namespace that
// share a queue must share the delay; queue numbers are per namespace.
type Rule struct {
	Queue uint16
	Dst   []string
	Delay time.Duration
}

// ruleSpec is the rule after the chain name. POSTROUTING sees both what the
// namespace sends itself and what it forwards, after routing, so a host
// and a router namespace are delayed alike (OUTPUT would miss forwarded
// packets). --queue-bypass accepts packets while no Delayer is bound: a lab
// whose delayer died then shows a fast link, never a partition that no
// fault injection asked for.
func ruleSpec(dst string, queue uint16) []string {
	return []string{"-d", dst, "-j", "NFQUEUE", "--queue-num", strconv.Itoa(int(queue)), "--queue-bypass"}
}

func checkRules(ns string, rules []Rule) error {
	if ns == "" {
		// Never touch the root namespace's (or the caller's own) firewall.
		return errors.New("netdelay: no namespace given")
	}
	for _, r := range rules {
		if len(r.Dst) == 0 {
			return fmt.Errorf("netdelay: rule for queue %d has no destination", r.Queue)
		}
		for _, d := range r.Dst {
			if p, err := netip.ParsePrefix(d); err == nil && p.Addr().Is4() {
				continue
			}
			if a, err := netip.ParseAddr(d); err == nil && a.Is4() {
				continue
			}
			return fmt.Errorf("netdelay: %q is not an IPv4 address or CIDR", d)
		}
	}
	return nil
}

// iptables runs IptablesCmd in namespace ns on the mangle table. -w waits
// for the xtables lock, which is one file shared by every namespace.
func iptables(ns string, args ...string) error {
	full := append([]string{"netns", "exec", ns, IptablesCmd, "-w", "-t", "mangle"}, args...)
	out, err := exec.Command("ip", full...).CombinedOutput()
	if err != nil {
		return &iptablesError{args: args, out: strings.TrimSpace(string(out)), err: err}
	}
	return nil
}

type iptablesError struct {
	args []string
	out  string
	err  error
}

func (e *iptablesError) Error() string {
	return fmt.Sprintf("netdelay: %s %s: %v: %s", IptablesCmd, strings.Join(e.args, " "), e.err, e.out)
}

func (e *iptablesError) Unwrap() error { return e.err }

// present reports whether the rule is in POSTROUTING: `iptables -C` exits 1
// for a rule that is not there, and otherwise for real errors.
func present(ns string, spec []string) (bool, error) {
	err := iptables(ns, append([]string{"-C", "POSTROUTING"}, spec...)...)
	if err == nil {
		return true, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 {
		return false, nil
	}
	return false, err
}

// Install appends the rules' NFQUEUE rules to ns's mangle POSTROUTING chain,
// skipping any already there, so installing twice is harmless.
func Install(ns string, rules []Rule) error {
	if err := checkRules(ns, rules); err != nil {
		return err
	}
	for _, r := range rules {
		for _, d := range r.Dst {
			spec := ruleSpec(d, r.Queue)
			ok, err := present(ns, spec)
			if err != nil {
				return err
			}
			if ok {
				continue
			}
			if err := iptables(ns, append([]string{"-A", "POSTROUTING"}, spec...)...); err != nil {
				return err
			}
		}
	}
	return nil
}

// Remove deletes the rules' NFQUEUE rules from ns (every copy of each), and
// goes on past failures so that a cleanup removes all it can.
func Remove(ns string, rules []Rule) error {
	if err := checkRules(ns, rules); err != nil {
		return err
	}
	var errs []error
	for _, r := range rules {
		for _, d := range r.Dst {
			spec := ruleSpec(d, r.Queue)
			for {
				ok, err := present(ns, spec)
				if err != nil {
					errs = append(errs, err)
					break
				}
				if !ok {
					break
				}
				if err := iptables(ns, append([]string{"-D", "POSTROUTING"}, spec...)...); err != nil {
					errs = append(errs, err)
					break
				}
			}
		}
	}
	return errors.Join(errs...)
}
