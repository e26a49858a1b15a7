package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/reshard/reshard/lab"
	"github.com/reshard/reshard/orchestrator"
)

func httpDo(t testing.TB, method, u, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// RFD 103 end to end with the physical strategy in triple-DC mode: a
// canary (step 2) created before the split is afterwards on the new shard
// only, at the vnode the ring says, and the new shard has a primary, a sync
// and an async, made by the agents of the hosts --peer-hosts names, in
// its order (the lab's spare hosts, as real hosts: no --lab). Too few
// hosts is a one-line refusal.
func TestPhysicalTripleDCWithCanary(t *testing.T) {
	l := labUp(t, "--shards", "2", "--peers", "1", "--routers", "1")
	router := l.Routers[0]
	if resp, body := httpDo(t, "PUT", router+"/buckets/manta", `{"hash_dir":true}`); resp.StatusCode != 200 {
		t.Fatalf("create bucket: %s", body)
	}
	// Step 2: a canary directory and a file in it, whose vnode is on 1.moray.
	var dir, file string
	var vnode int
	for i := 0; ; i++ {
		dir = fmt.Sprintf("/poseidon/stor/re-shard-canary-dir/2178ed56-%04d", i)
		out, _, _ := run(t, l.env(), "ring", "locate", dir)
		var loc struct {
			Vnode int
			Pnode string
		}
		json.Unmarshal([]byte(out), &loc)
		if loc.Pnode == "1.moray" && loc.Vnode != 0 && loc.Vnode != 106 {
			vnode = loc.Vnode
			break
		}
	}
	file = dir + "/test.txt"
	for _, k := range []string{dir, file} {
		if resp, body := httpDo(t, "PUT", router+"/buckets/manta/objects/"+url.PathEscape(k), `{"type":"canary"}`); resp.StatusCode != 200 {
			t.Fatalf("put %s: %s", k, body)
		}
	}
	split := []string{"start", "--from", "1.moray", "--to", "3.moray", "--vnodes", fmt.Sprintf("0, 106, %d", vnode),
		"--dc-mode", "triple", "--servers", "3", "--strategy", "physical"}
	_, stderr, ok := run(t, l.env(), append(split, "--peer-hosts", "spare-3,spare-2")...)
	if ok || !strings.Contains(stderr, "too few free agent hosts: 3 new peers need 3 hosts, --peer-hosts names 2") {
		t.Fatalf("split with two hosts for three peers: ok=%v %s", ok, stderr)
	}
	out, stderr, ok := run(t, l.env(), append(split, "--peer-hosts", "spare-3,spare-2,spare-1", "--json")...)
	var j orchestrator.Job
	if !ok || json.Unmarshal([]byte(out), &j) != nil || j.State != orchestrator.Done || j.Provisioner != "agents:spare-3,spare-2,spare-1" {
		t.Fatalf("physical split: %s %s", out, stderr)
	}
	checkWriteBlock(t, "physical", j.WriteBlockMS, j.PromoteMS)

	// The new shard's topology, read live from the servers.
	out, _, _ = run(t, nil, "lab", "status", "--dir", l.Dir, "--json")
	var rows []lab.PeerStatus
	json.Unmarshal([]byte(out), &rows)
	var got []string
	for _, r := range rows {
		if r.Shard == "3.moray" {
			got = append(got, fmt.Sprintf("%s %s on %s recovery=%v repl=%s", r.Peer, r.Role, r.Agent, r.InRecovery, r.Repl))
		}
	}
	want := []string{"3.moray-1 primary on spare-3 recovery=false repl=sync", "3.moray-2 sync on spare-2 recovery=true repl=async",
		"3.moray-3 async on spare-1 recovery=true repl=-"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("3.moray peers:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The canary: served from 3.moray, at its vnode, and only there.
	resp, body := httpDo(t, "GET", router+"/buckets/manta/objects/"+url.PathEscape(file), "")
	if resp.StatusCode != 200 || resp.Header.Get("X-Reshard-Pnode") != "3.moray" || resp.Header.Get("X-Reshard-Vnode") != fmt.Sprint(vnode) {
		t.Fatalf("canary: %d %s from %s/%s", resp.StatusCode, body, resp.Header.Get("X-Reshard-Pnode"), resp.Header.Get("X-Reshard-Vnode"))
	}
	for _, p := range []string{"1.moray", "2.moray", "3.moray"} {
		n := query[int64](t, pnodePrimary(t, l, p), `select count(*) from manta where _key = $1`, file)
		v := query[int64](t, pnodePrimary(t, l, p), `select coalesce(max(_vnode), -1) from manta where _key = $1`, file)
		if (p == "3.moray") != (n == 1) || (p == "3.moray" && v != int64(vnode)) {
			t.Errorf("%s holds %d canary rows (vnode %d)", p, n, v)
		}
	}
	dst := pnodePrimary(t, l, "3.moray")
	if n := query[int64](t, dst, `select count(*) from reshard_vnodes where writable`); n != 3 {
		t.Errorf("3.moray owns %d writable vnodes, want 3", n)
	}
	if n := query[int64](t, dst, `select count(*) from manta m where not exists (select 1 from reshard_vnodes v where v.vnode = m._vnode)`); n != 0 {
		t.Errorf("3.moray kept %d rows of vnodes it does not own", n)
	}
	// The sync standby really is synchronous for the new primary.
	if s := query[string](t, dst, `show synchronous_standby_names`); !strings.Contains(s, "3.moray-2") {
		t.Errorf("synchronous_standby_names on 3.moray-1: %q", s)
	}
	// Every agent host now runs a peer: no free one is left for another.
	_, stderr, ok = run(t, l.env(), "start", "--from", "1.moray", "--to", "4.moray", "--split-half", "--dc-mode", "single", "--servers", "1", "--strategy", "physical")
	if ok || strings.Count(strings.TrimSpace(stderr), "\n") > 0 || !strings.Contains(stderr, "too few free agent hosts: 1 new peers need 1, and 0 run no peer") {
		t.Fatalf("split with no free agent host: ok=%v %q", ok, stderr)
	}
}

// Abort of a physical job after its peer was promoted, before the flip:
// the new peers go, the pnode is unregistered, the origin writes again.
func TestPhysicalAbort(t *testing.T) {
	l := labUp(t, "--shards", "2", "--peers", "1", "--routers", "1", "--vnodes", "64")
	origin := l.primary("1.moray")
	owned := query[int64](t, origin, `select count(*) from reshard_vnodes`)
	_, stderr, _ := run(t, l.env(), "start", "--from", "1.moray", "--to", "3.moray", "--split-half", "--servers", "1",
		"--strategy", "physical", "--lab", l.Dir, "--crash-at", "catchup", "--lease-ttl", "2s")
	m := regexp.MustCompile(`job (\S+) created`).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatal(stderr)
	}
	// While the job catches up, lab status shows the new async peer
	// streaming from the origin's primary, as manatee-adm show would.
	out, _, _ := run(t, nil, "lab", "status", "--dir", l.Dir, "--json")
	var rows []lab.PeerStatus
	json.Unmarshal([]byte(out), &rows)
	seen := false
	for _, r := range rows {
		if r.Peer == "3.moray-1" {
			seen = r.Role == "async" && r.InRecovery && r.PG == "ok" && r.LagBytes != nil
		}
	}
	if !seen {
		t.Fatalf("lab status during catch-up: %s", out)
	}
	run(t, l.env(), "resume", m[1], "--crash-at", "register", "--lease-ttl", "2s")
	if st := jobState(t, l, m[1]); st.Current != "register" {
		t.Fatalf("after the second kill the job is in %s", st.Current)
	}
	if out, _, _ := run(t, nil, "lab", "status", "--dir", l.Dir); !strings.Contains(out, "3.moray-1") {
		t.Fatalf("no new peer before the abort:\n%s", out)
	}
	if _, stderr, ok := run(t, l.env(), "abort", m[1]); !ok {
		t.Fatalf("abort: %s", stderr)
	}
	if out, _, _ := run(t, nil, "lab", "status", "--dir", l.Dir); strings.Contains(out, "3.moray") {
		t.Fatalf("new peers left after the abort:\n%s", out)
	}
	if out, _, _ := run(t, l.env(), "pnode", "list"); strings.Contains(out, "3.moray") {
		t.Fatalf("3.moray still registered:\n%s", out)
	}
	if n := query[int64](t, origin, `select count(*) from reshard_vnodes where writable`); n != owned {
		t.Fatalf("origin owns %d writable vnodes, had %d", n, owned)
	}
	if resp, body := httpDo(t, "PUT", l.Routers[0]+"/buckets/manta", `{}`); resp.StatusCode != 200 {
		t.Fatalf("create bucket after abort: %s", body)
	}
	for i := 0; i < 20; i++ {
		if resp, body := httpDo(t, "PUT", fmt.Sprintf("%s/buckets/manta/objects/k%d", l.Routers[0], i), `{}`); resp.StatusCode != 200 {
			t.Fatalf("write after abort: %s", body)
		}
	}
}

func jobState(t testing.TB, l *labInfo, id string) *orchestrator.Job {
	t.Helper()
	out, _, _ := run(t, l.env(), "status", id, "--json")
	var v statusView
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Job == nil {
		t.Fatalf("status %s: %s", id, out)
	}
	return v.Job
}
