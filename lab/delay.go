package lab

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/reshard/reshard/lab/netdelay"
)

// In a lab of datacenters every host runs a delayer: a process of its own
// (`lab delay`), so that killing it is a realistic fault, which holds each
// packet that arrives from another DC for the lab's latency. Its rules let
// packets through undelayed while no delayer reads them (netdelay's
// --queue-bypass): a dead delayer looks like a fast link, not a partition.

// delayRules are the rules of a host in DC dc: a packet from another DC
// waits the one-way latency; one from this machine, which counts as DC 1
// but is delayed nowhere, waits the round trip, so that a request and its
// answer between this machine and another DC take the same as between two
// hosts of different DCs.
func delayRules(n Network, dc int) []netdelay.Rule {
	if n.DCs <= 1 || dc == 0 {
		return nil
	}
	var from []string
	for d := 1; d <= n.DCs; d++ {
		if d != dc {
			from = append(from, n.dcCIDR(d))
		}
	}
	rules := []netdelay.Rule{{Queue: 1, From: from, Delay: n.Latency}}
	if dc != 1 {
		rules = append(rules, netdelay.Rule{Queue: 2, From: []string{n.Gateway() + "/32"}, Delay: 2 * n.Latency})
	}
	return rules
}

func delayerPIDFile(dir, host string) string {
	return filepath.Join(dir, "run", "delay-"+host+".pid")
}

func delayerReadyFile(dir, host string) string {
	return filepath.Join(dir, "run", "delay-"+host+".ready")
}

// startDelayer runs `lab delay` for host h, detached, and waits until its
// queues are bound.
func startDelayer(dir string, h Host) error {
	stopDelayer(dir, h.Name)
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "run"), 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "logs", "delay-"+h.Name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	ready := delayerReadyFile(dir, h.Name)
	os.Remove(ready)
	cmd := exec.Command(exe, "lab", "delay", "--dir", dir, "--host", h.Name)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start delayer: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	if err := os.WriteFile(delayerPIDFile(dir, h.Name), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		return err
	}
	deadline := time.After(20 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			return nil
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logf.Name())
			return fmt.Errorf("delayer exited: %s", lastLines(string(b), 3))
		case <-deadline:
			return fmt.Errorf("delayer not ready after 20s (see %s)", logf.Name())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// delayerPID is host's running delayer, or 0.
func delayerPID(dir, host string) int {
	return pidFromFile(delayerPIDFile(dir, host), "delay", host)
}

// stopDelayer stops host's delayer, which removes its rules as it goes.
func stopDelayer(dir, host string) {
	if pid := delayerPID(dir, host); pid != 0 {
		stopPID(pid, syscall.SIGTERM, 5*time.Second)
	}
	os.Remove(delayerPIDFile(dir, host))
	os.Remove(delayerReadyFile(dir, host))
}

// RunDelayer is `lab delay`: it delays the packets host receives from other
// DCs until SIGTERM or SIGINT, then lets held packets go and removes its
// rules.
func RunDelayer(dir, host string) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	st, err := Load(dir)
	if err != nil {
		return err
	}
	h, ok := st.Host(host)
	if !ok || st.Network == nil {
		return fmt.Errorf("no host %q in the lab in %s", host, dir)
	}
	rules := delayRules(*st.Network, h.DC)
	if len(rules) == 0 {
		return fmt.Errorf("host %s is in no datacenter of a lab of several", host)
	}
	if err := netdelay.Install(h.NS, rules); err != nil {
		return err
	}
	defer netdelay.Remove(h.NS, rules)
	delayers, err := netdelay.OpenRules(h.NS, rules)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := os.WriteFile(delayerReadyFile(dir, host), nil, 0o644); err != nil {
		return err
	}
	log.Info("delaying", "host", host, "dc", h.DC, "latency", st.Network.Latency)
	return netdelay.RunAll(ctx, delayers)
}
