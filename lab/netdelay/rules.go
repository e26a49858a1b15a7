// Package netdelay adds real latency to real packets between lab hosts, each
// in its own network namespace, without tc netem (which this kernel lacks).
//
// An iptables rule in the receiving namespace's mangle PREROUTING chain sends
// the packets that come from a source to an NFQUEUE queue; a Delayer reading
// that queue holds each packet for a fixed delay and then accepts it. Each
// namespace delays what it receives, so 10 ms on each side of a link gives
// 20 ms of round trip, as `tc netem delay 10ms` on both ends would.
//
// The delay is added on ingress, not egress as netem is: a packet held in
// the sender's POSTROUTING still counts against its TCP socket's small-queue
// budget (TSQ allows about 1 ms of the pacing rate below the socket), so a
// 20 ms hold there throttles a bulk transfer to a few packets per round trip
// (2 MB took 4 s here). netem avoids that by orphaning the packets it holds,
// which a queue reader cannot do; a packet that has crossed the veth is
// already orphaned, so holding it on arrival costs the sender nothing.
//
// Usage, per namespace:
//
//	rules := []netdelay.Rule{{Queue: 1, From: []string{"10.2.0.0/16"}, Delay: 10 * time.Millisecond}}
//	err := netdelay.Install(ns, rules)
//	delayers, err := netdelay.OpenRules(ns, rules) // queues bound: ready
//	err = netdelay.RunAll(ctx, delayers)           // until ctx is done
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
// `iptables` is iptables-nft, the nf_tables backend. This kernel has both
// backends, and both queue packets (tried in a namespace: with no reader
// bound, each rule dropped a TCP SYN; note /proc/config.gz lists
// CONFIG_NFT_QUEUE as unset, yet the nft `queue` expression ran). Legacy is
// used because the xtables NFQUEUE target it drives is listed in
// /proc/net/ip_tables_targets, so it does not hang on that doubtful nft
// build. Other lab rules (partitions) should use the same backend: each
// backend lists only its own rules, so one backend keeps
// `iptables-legacy -S` a full picture of a namespace.
const IptablesCmd = "iptables-legacy"

// Rule delays the IPv4 packets that a namespace receives from From
// (addresses or CIDRs) by Delay, through NFQUEUE queue Queue. Rules of one
// namespace that share a queue must share the delay; queue numbers are per
// namespace, so every namespace may use the same ones.
type Rule struct {
	Queue uint16
	From  []string
	Delay time.Duration
}

// chain is where the rules go: PREROUTING sees every packet that arrives,
// whether for the namespace itself or to be forwarded, so a host and a
// router namespace are delayed alike (INPUT would miss forwarded packets).
const chain = "PREROUTING"

// ruleSpec is the rule after the chain name. --queue-bypass accepts packets
// while no Delayer is bound: a lab whose delayer died then shows a fast link,
// never a partition that no fault injection asked for.
func ruleSpec(src string, queue uint16) []string {
	return []string{"-s", src, "-j", "NFQUEUE", "--queue-num", strconv.Itoa(int(queue)), "--queue-bypass"}
}

func checkRules(ns string, rules []Rule) error {
	if ns == "" {
		// Never touch the root namespace's (or the caller's own) firewall.
		return errors.New("netdelay: no namespace given")
	}
	for _, r := range rules {
		if len(r.From) == 0 {
			return fmt.Errorf("netdelay: rule for queue %d has no source", r.Queue)
		}
		for _, d := range r.From {
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

// present reports whether the rule is in the chain: `iptables -C` exits 1
// for a rule that is not there, and otherwise for real errors.
func present(ns string, spec []string) (bool, error) {
	err := iptables(ns, append([]string{"-C", chain}, spec...)...)
	if err == nil {
		return true, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 {
		return false, nil
	}
	return false, err
}

// Install appends the rules' NFQUEUE rules to ns's mangle PREROUTING chain,
// skipping any already there, so installing twice is harmless.
func Install(ns string, rules []Rule) error {
	if err := checkRules(ns, rules); err != nil {
		return err
	}
	for _, r := range rules {
		for _, d := range r.From {
			spec := ruleSpec(d, r.Queue)
			ok, err := present(ns, spec)
			if err != nil {
				return err
			}
			if ok {
				continue
			}
			if err := iptables(ns, append([]string{"-A", chain}, spec...)...); err != nil {
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
		for _, d := range r.From {
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
				if err := iptables(ns, append([]string{"-D", chain}, spec...)...); err != nil {
					errs = append(errs, err)
					break
				}
			}
		}
	}
	return errors.Join(errs...)
}
