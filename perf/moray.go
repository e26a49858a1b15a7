package perf

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// morayGoal is issue 21's goal for reshard's Moray port: this many times
// the real Moray's throughput on the same database.
const morayGoal = 4.0

// StartMoray runs the real Moray with the reference kit's moray.sh against
// the PostgreSQL database at pgURL, with maxConns connections to it, its
// work files in dir. It returns Moray's address, its process and how to
// stop it.
func StartMoray(ctx context.Context, kit, pgURL, dir string, maxConns int) (addr string, pid int, stop func() error, err error) {
	env, stop, err := runKit(ctx, kit, "moray.sh", dir, "--pg-url", pgURL, "--pg-max-conns", strconv.Itoa(maxConns))
	if err != nil {
		return "", 0, nil, err
	}
	if env["MORAY_ADDR"] == "" {
		stop()
		return "", 0, nil, fmt.Errorf("moray.sh start printed no MORAY_ADDR")
	}
	pid, _ = strconv.Atoi(env["MORAY_PID"])
	return env["MORAY_ADDR"], pid, stop, nil
}

// Tier is the real Manta metadata tier the reference kit's tier.sh runs:
// electric-moray in front of two Morays, each with its own PostgreSQL.
type Tier struct {
	Addr string // electric-moray's
	// PIDs are electric-moray's and the Morays': the server side, whose
	// CPU time is counted.
	PIDs []int
}

// StartTier runs the real tier with its work files in dir, and returns
// how to stop it.
func StartTier(ctx context.Context, kit, dir string) (Tier, func() error, error) {
	env, stop, err := runKit(ctx, kit, "tier.sh", dir)
	if err != nil {
		return Tier{}, nil, err
	}
	t := Tier{Addr: env["EM_HOST"] + ":" + env["EM_PORT"]}
	if env["EM_HOST"] == "" || env["EM_PORT"] == "" {
		stop()
		return Tier{}, nil, fmt.Errorf("tier.sh start printed no EM_HOST/EM_PORT")
	}
	// tier.sh keeps its processes' ids in files under its work dir.
	for _, f := range []string{"run/electric-moray.pid", "moray1/moray.pid", "moray2/moray.pid"} {
		if b, err := os.ReadFile(filepath.Join(env["TIER_DIR"], f)); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				t.PIDs = append(t.PIDs, pid)
			}
		}
	}
	return t, stop, nil
}

// runKit runs one of the reference kit's scripts' start with its work
// files in dir, and returns the KEY=VALUE lines it printed and how to stop
// what it started.
func runKit(ctx context.Context, kit, name, dir string, args ...string) (map[string]string, func() error, error) {
	script := filepath.Join(kit, name)
	if _, err := os.Stat(script); err != nil {
		return nil, nil, fmt.Errorf("no reference kit: %w", err)
	}
	// The first use installs with npm, which can take minutes.
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{script, "start", "--dir", dir}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, runErr := cmd.Output()
	stop := func() error {
		if b, err := exec.Command("bash", script, "stop", "--dir", dir).CombinedOutput(); err != nil {
			return fmt.Errorf("%s stop: %v: %s", name, err, strings.TrimSpace(string(b)))
		}
		return nil
	}
	if runErr != nil {
		stop()
		return nil, nil, fmt.Errorf("%s start: %v: %s", name, runErr, lastLines(stderr.String(), 5))
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	return env, stop, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// MorayClient runs test/moray/bench.js, the npm moray client's loop.
type MorayClient struct {
	Dir string // test/moray, with node_modules installed
}

// node runs bench.js and returns what it printed and the CPU time it
// used, in seconds.
func (m MorayClient) node(ctx context.Context, args ...string) ([]byte, float64, error) {
	cmd := exec.CommandContext(ctx, "node", append([]string{"bench.js"}, args...)...)
	cmd.Dir = m.Dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, 0, fmt.Errorf("node bench.js %s: %v: %s", strings.Join(args, " "), err, lastLines(stderr.String(), 5))
	}
	ps := cmd.ProcessState
	return out, (ps.UserTime() + ps.SystemTime()).Seconds(), nil
}

// Usable says why the client cannot run here, or "" if it can.
func (m MorayClient) Usable() string {
	if _, err := exec.LookPath("node"); err != nil {
		return "Node.js is not installed"
	}
	if _, err := os.Stat(filepath.Join(m.Dir, "node_modules", "moray", "package.json")); err != nil {
		return "the npm moray client is not installed in " + m.Dir + " (npm ci there)"
	}
	return ""
}

// MorayServer is one side of CompareMoray: a Moray protocol server.
type MorayServer struct {
	Addr string
	PIDs []int // its processes, whose CPU time is counted as the server's
}

// procs names the server's processes for ReadCPU.
func (m MorayServer) procs() map[string]int {
	out := map[string]int{}
	for i, pid := range m.PIDs {
		out[fmt.Sprintf("server%d", i)] = pid
	}
	return out
}

// MorayComparison is what CompareMoray compares, and how it is labelled.
type MorayComparison struct {
	Area, Against string // "moray", "the real Moray"
	Ours, Theirs  MorayServer
}

// CompareMoray measures putObject, getObject and findObjects through the
// npm moray client against ours (reshard's Moray port) and theirs (the
// real Moray, or the real tier), each in its own bucket, in alternating
// rounds; and the CPU each request cost the client, the server and the
// rest of the machine.
func CompareMoray(ctx context.Context, client MorayClient, mc MorayComparison, req Request) ([]Result, error) {
	sides := []struct {
		name   string
		srv    MorayServer
		bucket string
	}{{"reshard", mc.Ours, "perf_moray_reshard"}, {"Moray", mc.Theirs, "perf_moray_real"}}
	args := func(addr, bucket, op string) []string {
		return []string{addr, bucket, op, fmt.Sprint(req.Per.Seconds()), strconv.Itoa(req.Concurrency), strconv.Itoa(req.Keys)}
	}
	for _, s := range sides {
		if _, _, err := client.node(ctx, args(s.srv.Addr, s.bucket, "setup")...); err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
	}
	var out []Result
	for _, op := range []string{"put", "get", "find"} {
		st := map[string]*Stats{}
		cpu := map[string]*CPU{}
		for range req.Rounds {
			for _, s := range sides {
				before := ReadCPU(s.srv.procs())
				b, clientCPU, err := client.node(ctx, args(s.srv.Addr, s.bucket, op)...)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", s.name, err)
				}
				used := ReadCPU(s.srv.procs()).Sub(before)
				for k, v := range used.Procs {
					delete(used.Procs, k)
					used.Procs["server"] += v
				}
				used.Procs["client"] = clientCPU
				if cpu[s.name] == nil {
					cpu[s.name] = &CPU{Procs: map[string]float64{}}
				}
				cpu[s.name].add(used)
				var r Stats
				if err := json.Unmarshal(b, &r); err != nil {
					return nil, fmt.Errorf("%s: bench.js printed %q: %w", s.name, b, err)
				}
				if r.Errors > 0 {
					return nil, fmt.Errorf("%s %s: %d errors, the first: %s", s.name, op, r.Errors, r.FirstError)
				}
				st[s.name] = st[s.name].add(r)
			}
		}
		o, t := st["reshard"], st["Moray"]
		name := map[string]string{"put": "putObject", "get": "getObject", "find": "findObjects"}[op]
		r := Faster(mc.Area, name, mc.Against, "ops/s", o.OpsPerSec, t.OpsPerSec, morayGoal)
		r.Detail = fmt.Sprintf("p50 %.2f / %.2f ms; CPU per request %s / %s", o.P50MS, t.P50MS,
			cpuPerOp(cpu["reshard"], o.Ops), cpuPerOp(cpu["Moray"], t.Ops))
		out = append(out, r, Overhead(mc.Area, name+", p99", mc.Against, "ms", o.P99MS, t.P99MS, 0))
	}
	return out, nil
}

// add sums rounds: ops and seconds add up; of the percentiles, each
// round's worst is kept (the rounds' latencies are not all here).
func (s *Stats) add(r Stats) *Stats {
	if s == nil {
		s = &Stats{}
	}
	s.Ops += r.Ops
	s.Seconds += r.Seconds
	if s.Seconds > 0 {
		s.OpsPerSec = float64(s.Ops) / s.Seconds
	}
	s.P50MS = max(s.P50MS, r.P50MS)
	s.P99MS = max(s.P99MS, r.P99MS)
	return s
}

// cpuPerOp says where a request's CPU time went: the client (bench.js,
// all of it, its start included), the server, and the rest of the
// machine (PostgreSQL, the kernel's work for all of them).
func cpuPerOp(c *CPU, ops int64) string {
	if c == nil || ops == 0 {
		return "?"
	}
	per := func(s float64) float64 { return s / float64(ops) * 1e6 }
	return fmt.Sprintf("%.0f µs (client %.0f, server %.0f, rest %.0f)", per(c.Machine), per(c.Procs["client"]), per(c.Procs["server"]),
		per(c.Machine-c.Procs["client"]-c.Procs["server"]))
}
