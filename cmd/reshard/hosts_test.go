package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/lab"
	"github.com/reshard/reshard/orchestrator"
)

// Issue 19's short form: a lab of hosts (every peer, etcd member and
// router in its own network namespace) in three datacenters 5 ms apart,
// with a three-member etcd, one of whose members is cut off from every
// other host for the whole job. A logical split and then a physical one
// (its new peers are new hosts) run under load through two routers;
// clients see no errors and the ledger verifies. After heal the member
// serves again.
func TestSplitOnHosts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a lab of hosts needs root (network namespaces)")
	}
	const latency = 5 * time.Millisecond
	l := labUp(t, "--hosts", "--dcs", "3", "--dc-latency", latency.String(),
		"--shards", "2", "--peers", "1", "--routers", "2", "--vnodes", "256", "--etcd-members", "3")
	st, err := lab.Load(l.Dir)
	if err != nil {
		t.Fatal(err)
	}
	checkOwnHosts(t, st)
	checkLatency(t, st, latency)
	for _, r := range l.Routers {
		if strings.Contains(r, "127.0.0.1") {
			t.Fatalf("router %s is not on its host's address", r)
		}
	}
	l.addShard(t, "3.moray", "1")

	// Cut a member that does not lead, so the cluster keeps its leader
	// and a quorum of two: the routers and the orchestrator must ride on
	// the members they can reach.
	leader := etcdMembers(t, l)
	cut := "etcd-1"
	if leader == cut {
		cut = "etcd-2"
	}
	if out, stderr, ok := run(t, nil, "lab", "partition", "--dir", l.Dir, cut, "--from-all"); !ok || !strings.Contains(out, cut) {
		t.Fatalf("partition: %s %s", out, stderr)
	}
	rows := hostRows(t, l)
	if got := rows[cut].CutFrom; len(got) != 1 || got[0] != "all" {
		t.Fatalf("lab status --hosts shows %s cut from %v", cut, got)
	}
	// The cut is real: this machine no longer reaches the member.
	out, _, _ := run(t, nil, "lab", "status", "--dir", l.Dir, "--etcd", "--json")
	var ms []lab.EtcdMemberStatus
	json.Unmarshal([]byte(out), &ms)
	for _, m := range ms {
		if m.Answers == (m.Name == cut) {
			t.Fatalf("with %s cut off, lab status --etcd shows: %s", cut, out)
		}
	}

	ledger := filepath.Join(t.TempDir(), "ledger.jsonl")
	wait := startLoad(t, l, ledger, "30s")
	waitLedger(t, ledger, 300)
	out, stderr, ok := run(t, l.env(), "start", "--from", "1.moray", "--to", "3.moray", "--split-half", "--servers", "1",
		"--strategy", "logical", "--json")
	var j orchestrator.Job
	if !ok || json.Unmarshal([]byte(out), &j) != nil || j.State != orchestrator.Done {
		t.Fatalf("logical split with %s cut off: %s %s", cut, out, stderr)
	}
	blocks := []float64{j.WriteBlockMS}

	out, stderr, ok = run(t, l.env(), "start", "--from", "2.moray", "--to", "4.moray", "--split-half",
		"--dc-mode", "single", "--servers", "1", "--strategy", "physical", "--lab", l.Dir, "--json")
	if !ok || json.Unmarshal([]byte(out), &j) != nil || j.State != orchestrator.Done {
		t.Fatalf("physical split with %s cut off: %s %s", cut, out, stderr)
	}
	blocks = append(blocks, j.WriteBlockMS)
	// Every step of the write block crosses DCs (etcd's quorum, the
	// shards), so its length is measured here, and bounded only loosely:
	// the 1 s bound of a lab without latency does not apply.
	t.Logf("write block with %s between DCs: logical %.0f ms, physical %.0f ms (promotion %.0f ms)", latency, blocks[0], blocks[1], j.PromoteMS)
	for _, b := range blocks {
		if b <= 0 || b > 5000 {
			t.Fatalf("write blocks %v ms", blocks)
		}
	}
	sum := wait()
	if sum.ClientErrors != 0 || sum.AckedWrites == 0 {
		t.Fatalf("load: %+v", sum)
	}
	verifyLedger(t, l, ledger)

	// The physical split's new peer runs on the first spare host, made by
	// that host's agent, in the host's namespace.
	st, err = lab.Load(l.Dir)
	if err != nil {
		t.Fatal(err)
	}
	checkOwnHosts(t, st)
	if r := hostRows(t, l)[lab.SpareHostName(1)]; !strings.Contains(r.Runs, "agent, postgres 4.moray primary (4.moray-1)") {
		t.Fatalf("%s runs %q, want the physical split's new peer", lab.SpareHostName(1), r.Runs)
	}

	if out, stderr, ok := run(t, nil, "lab", "heal", "--dir", l.Dir); !ok || !strings.Contains(out, "healed: "+cut) {
		t.Fatalf("heal: %s %s", out, stderr)
	}
	if got := hostRows(t, l)[cut].CutFrom; len(got) != 0 {
		t.Fatalf("after heal %s is still cut from %v", cut, got)
	}
	etcdMembers(t, l)
}

// checkOwnHosts asserts that every PostgreSQL peer runs in a network
// namespace of its own, not this machine's, and listens on its host's
// address.
func checkOwnHosts(t *testing.T, st *lab.State) {
	t.Helper()
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, sh := range st.AllShards() {
		for _, p := range sh.Peers {
			b, err := os.ReadFile(filepath.Join(p.DataDir, "postmaster.pid"))
			if err != nil {
				t.Fatalf("%s: %v", p.Name, err)
			}
			var pid int
			fmt.Sscanf(string(b), "%d", &pid)
			ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
			if err != nil {
				t.Fatalf("%s: %v", p.Name, err)
			}
			if ns == self || seen[ns] != "" || p.Addr == "" || !strings.Contains(p.DSN(), p.Addr) {
				t.Fatalf("%s (pid %d, %s, %s) does not run in a host of its own (this process: %s; %s has it too)",
					p.Name, pid, ns, p.DSN(), self, seen[ns])
			}
			seen[ns] = p.Name
		}
	}
}

func hostRows(t *testing.T, l *labInfo) map[string]lab.HostRow {
	t.Helper()
	out, stderr, ok := run(t, nil, "lab", "status", "--dir", l.Dir, "--hosts", "--json")
	var rows []lab.HostRow
	if !ok || json.Unmarshal([]byte(out), &rows) != nil {
		t.Fatalf("lab status --hosts: %s %s", out, stderr)
	}
	m := map[string]lab.HostRow{}
	for _, r := range rows {
		m[r.Name] = r
	}
	if m[lab.ControlHost].Addr == "" {
		t.Fatalf("lab status --hosts lacks this machine: %s", out)
	}
	return m
}

// checkLatency asserts that a connection from this machine (DC 1) to a
// peer in DC 1 is fast and one to a peer in another DC takes the round
// trip between DCs.
func checkLatency(t *testing.T, st *lab.State, latency time.Duration) {
	t.Helper()
	connect := func(p lab.Peer) time.Duration {
		var ds []time.Duration
		for i := 0; i < 7; i++ {
			start := time.Now()
			c, err := net.DialTimeout("tcp", net.JoinHostPort(p.Addr, strconv.Itoa(p.Port)), 3*time.Second)
			if err != nil {
				t.Fatalf("connect to %s: %v", p.Name, err)
			}
			ds = append(ds, time.Since(start))
			c.Close()
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)/2]
	}
	var near, far time.Duration
	for _, sh := range st.Shards {
		p := sh.Peers[0]
		h, _ := st.Host(p.Name)
		if h.DC == 1 && near == 0 {
			near = connect(p)
		}
		if h.DC != 1 && far == 0 {
			far = connect(p)
		}
	}
	t.Logf("connect: %s within DC 1, %s to another DC (%s each way)", near, far, latency)
	if near == 0 || far == 0 || near >= latency || far < 2*latency*8/10 || far > 2*latency+30*time.Millisecond {
		t.Fatalf("connect took %s within DC 1 and %s across DCs, with %s each way", near, far, latency)
	}
}
