package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/fast"
	"github.com/reshard/reshard/orchestrator"
	"github.com/reshard/reshard/postgres"
)

// gatherBucketConfig indexes a field of every Moray index type, so that
// gathered finds sort on each; "color" is left unindexed, so a filter on
// it is Moray's JavaScript re-check alone.
const gatherBucketConfig = `{"index": {"s": {"type": "string"}, "n": {"type": "number", "unique": true},
	"m": {"type": "number"}, "b": {"type": "boolean"}, "tags": {"type": "[string]"},
	"nums": {"type": "[number]"}, "d": {"type": "date"}, "ip": {"type": "ip"},
	"net": {"type": "subnet"}, "mac": {"type": "mac"}, "u": {"type": "uuid"}}}`

// gatherValue is object i of the gathered-find tests: n is unique (and
// not in key order), every other field repeats, and some are missing, so
// sorts meet ties and NULLs.
func gatherValue(i int) json.RawMessage {
	strs := []string{"apple", "Banana", "banana", "cherry", "Äpfel", "zeta", "", "a b"}
	v := map[string]any{
		"n":     float64(i*37%97-40) + 0.25*float64(i%2),
		"b":     i%3 == 0,
		"tags":  []string{fmt.Sprintf("t%d", i%4), "x"},
		"nums":  []int{i % 3, i % 5},
		"d":     fmt.Sprintf("2020-01-%02dT00:00:00.000Z", i%9+1),
		"mac":   fmt.Sprintf("00:00:00:00:%02x:%02x", i%2, i*13%256),
		"u":     fmt.Sprintf("%08x-0000-4000-8000-%012x", i*2654435761%4294967296, i%7),
		"color": []string{"red", "blue", "green"}[i%3],
	}
	if i%11 != 0 {
		v["s"] = strs[i%len(strs)]
	}
	if i%7 != 0 {
		v["m"] = i % 5
	}
	if i%2 == 0 {
		v["ip"] = fmt.Sprintf("10.0.%d.%d", i%3, i)
		v["net"] = fmt.Sprintf("10.%d.0.0/16", i%6)
	} else {
		v["ip"] = fmt.Sprintf("fd00::%x", i%5)
		v["net"] = fmt.Sprintf("10.0.0.0/%d", 8+i%9)
	}
	if i%10 == 5 {
		v["tags"] = []string{"a"}
	}
	return jsonText(v)
}

// gatherCase is one gathered find and how to compare its answer.
type gatherCase struct {
	filter string
	opts   map[string]any
	// ties: the sort leaves ties, whose order Moray leaves to PostgreSQL;
	// only the sort values are compared in order, keys within a tie as
	// sets.
	ties []string
}

func gatherCases() []gatherCase {
	filters := []string{"(n>=-1000)", "(m>=1)", "(s=*)", "(&(n>=0)(d>=2020-01-04T00:00:00.000Z))", "(|(b=true)(m=2))", "(tags=t1)"}
	type sortSpec struct {
		sort any
		ties []string
	}
	so := func(pairs ...string) any {
		var out []any
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, map[string]any{"attribute": pairs[i], "order": pairs[i+1]})
		}
		if len(out) == 1 {
			return out[0]
		}
		return out
	}
	sorts := []sortSpec{
		{nil, nil},
		{so("n", "ASC"), nil}, {so("n", "DESC"), nil},
		{so("s", "ASC", "n", "ASC"), nil}, {so("s", "DESC", "n", "DESC"), nil},
		{so("m", "ASC", "n", "DESC"), nil}, {so("m", "DESC", "_key", "ASC"), nil},
		{so("b", "ASC", "n", "ASC"), nil}, {so("tags", "ASC", "n", "ASC"), nil},
		{so("nums", "DESC", "n", "ASC"), nil}, {so("d", "ASC", "n", "ASC"), nil},
		{so("ip", "ASC", "n", "ASC"), nil}, {so("net", "DESC", "n", "ASC"), nil},
		{so("mac", "ASC"), nil}, {so("u", "DESC"), nil}, {so("_key", "DESC"), nil},
		{so("m", "ASC"), []string{"m"}}, {so("s", "DESC", "b", "ASC"), []string{"s", "b"}},
	}
	pages := []map[string]any{
		{}, {"limit": 5}, {"limit": 7, "offset": 3}, {"offset": 70}, {"limit": 1000, "offset": 79},
		{"noLimit": true}, {"limit": 0}, {"limit": 9, "no_count": true}, {"limit": 1}, {"limit": 4, "offset": 10},
	}
	var out []gatherCase
	for fi, f := range filters {
		for si, s := range sorts {
			for j := 0; j < 3; j++ {
				o := map[string]any{}
				for k, v := range pages[(fi*3+si+j*4)%len(pages)] {
					o[k] = v
				}
				if s.sort != nil {
					o["sort"] = s.sort
				}
				out = append(out, gatherCase{filter: f, opts: o, ties: s.ties})
			}
		}
	}
	return out
}

// gatherRecord is what the comparison reads of a found record.
type gatherRecord struct {
	Key   string                     `json:"key"`
	Value map[string]json.RawMessage `json:"value"`
	Etag  string                     `json:"_etag"`
	Count *int64                     `json:"_count"`
}

// compareGathered compares reshard's gathered answer with the reference
// Moray's: the same keys in the same order (within ties as sets, except
// a tie cut by the offset or the limit, whose members PostgreSQL picks),
// the same values and etags, and the same _count on every record.
func compareGathered(c gatherCase, got, want []gatherRecord) string {
	for i := range got {
		if len(want) > 0 && !sameCount(got[i].Count, want[0].Count) {
			return fmt.Sprintf("record %d: _count %v, want %v", i, ptrText(got[i].Count), ptrText(want[0].Count))
		}
	}
	if _, sorted := c.opts["sort"]; !sorted {
		// Moray's order is undefined, and so is which rows a limit or an
		// offset leaves: the same set when the answer is whole.
		limit := 1000
		if n, ok := c.opts["limit"].(int); ok && n > 0 {
			limit = n
		} else if c.opts["noLimit"] == true {
			limit = 1 << 30
		}
		if len(got) > limit {
			return fmt.Sprintf("%d records past the limit %d", len(got), limit)
		}
		if c.opts["offset"] == nil && len(want) > 0 && want[0].Count != nil && *want[0].Count <= int64(limit) {
			return sameSet(keysOf(got), keysOf(want))
		}
		if len(want) == 0 && len(got) > 0 && c.opts["offset"] == nil {
			return fmt.Sprintf("%d records, want none", len(got))
		}
		return ""
	}
	if len(got) != len(want) {
		return fmt.Sprintf("%d records, want %d (got %v, want %v)", len(got), len(want), keysOf(got), keysOf(want))
	}
	if c.ties == nil {
		for i := range got {
			if got[i].Key != want[i].Key {
				return fmt.Sprintf("record %d: key %s, want %s (got %v, want %v)", i, got[i].Key, want[i].Key, keysOf(got), keysOf(want))
			}
			if d := sameValue(got[i], want[i]); d != "" {
				return d
			}
		}
		return ""
	}
	tie := func(r gatherRecord) string {
		var parts []string
		for _, a := range c.ties {
			parts = append(parts, string(r.Value[a]))
		}
		return strings.Join(parts, "|")
	}
	for i := range got {
		if tie(got[i]) != tie(want[i]) {
			return fmt.Sprintf("record %d: sort values %s, want %s", i, tie(got[i]), tie(want[i]))
		}
	}
	for lo := 0; lo < len(got); {
		hi := lo
		for hi < len(got) && tie(got[hi]) == tie(got[lo]) {
			hi++
		}
		cut := (lo == 0 && c.opts["offset"] != nil) || hi == len(got)
		if !cut {
			if d := sameSet(keysOf(got[lo:hi]), keysOf(want[lo:hi])); d != "" {
				return fmt.Sprintf("tie %s: %s", tie(got[lo]), d)
			}
		}
		lo = hi
	}
	return ""
}

func sameCount(a, b *int64) bool {
	return (a == nil) == (b == nil) && (a == nil || *a == *b)
}

func ptrText(p *int64) string {
	if p == nil {
		return "absent"
	}
	return fmt.Sprint(*p)
}

func keysOf(rs []gatherRecord) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Key
	}
	return out
}

func sameSet(a, b []string) string {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	if !slices.Equal(a, b) {
		return fmt.Sprintf("keys %v, want %v", a, b)
	}
	return ""
}

// sameValue compares the values less "vnode" (the bare Moray stores the
// vnode electric-moray writes into the value; reshard reads it off).
func sameValue(got, want gatherRecord) string {
	delete(got.Value, "vnode")
	delete(want.Value, "vnode")
	g, _ := json.Marshal(got.Value)
	w, _ := json.Marshal(want.Value)
	if !bytes.Equal(g, w) || got.Etag != want.Etag {
		return fmt.Sprintf("%s: value %s etag %s, want %s etag %s", got.Key, g, got.Etag, w, want.Etag)
	}
	return ""
}

// TestMorayGatherFind: findObjects with neither hashkey nor token, on a
// 2-shard lab whose routers gather, answers as one reference Moray
// holding the same rows: the same keys in the same order and the same
// _count, for sorts on every index type, ASC and DESC with NULLs, limits,
// offsets, noLimit, no_count, and a filter whose part only Moray's
// JavaScript re-check applies (so rows it drops still count toward the
// limit, as in Moray).
func TestMorayGatherFind(t *testing.T) {
	kit := referenceKit(t)
	client := morayClient(t)
	l := labUp(t, "--shards", "2", "--peers", "1", "--routers", "1", "--vnodes", "256", "--cross-shard-find", "gather")
	port := l.Shards[0].Peers[0].Port
	ref := startReferenceMoray(t, kit, fmt.Sprintf("postgres://moray@127.0.0.1:%d/morayref", port))

	const objects = 80
	d := &diffOps{r: ringOf(t, l)}
	d.createBucket("gather bucket", "gather", raw(gatherBucketConfig))
	for i := 0; i < objects; i++ {
		d.put("gather object", "gather", fmt.Sprintf("k%02d", i), gatherValue(i), "")
	}
	puts := len(d.ops)
	cases := gatherCases()
	for _, c := range cases {
		d.find("gathered", "gather", c.filter, jsonText(c.opts))
	}
	results := runDiffJS(t, client, d, l.Moray[0], ref, true).Results
	for i := 0; i < puts; i++ {
		if !results[i].Reshard.OK || !results[i].Moray.OK {
			t.Fatalf("op %d (%s): reshard %+v, moray %+v", i, d.ops[i].Desc, results[i].Reshard, results[i].Moray)
		}
	}
	for _, sh := range l.Shards {
		if n := query[int64](t, sh.Peers[0].DSN, "select count(*) from gather"); n == 0 || n == objects {
			t.Fatalf("shard %s holds %d of the %d rows: the test needs rows on both shards", sh.Name, n, objects)
		}
	}
	failed := 0
	for i, c := range cases {
		r := results[puts+i]
		where := fmt.Sprintf("findObjects %s %s", c.filter, jsonText(c.opts))
		if r.Reshard.OK != r.Moray.OK || r.Reshard.Name != r.Moray.Name {
			t.Errorf("%s: reshard %+v, moray %+v", where, r.Reshard, r.Moray)
			failed++
			continue
		}
		var got, want []gatherRecord
		if err := json.Unmarshal(r.Reshard.Data, &got); err != nil && r.Reshard.OK {
			t.Fatalf("%s: reshard's records: %v", where, err)
		}
		if err := json.Unmarshal(r.Moray.Data, &want); err != nil && r.Moray.OK {
			t.Fatalf("%s: moray's records: %v", where, err)
		}
		if d := compareGathered(c, got, want); d != "" {
			t.Errorf("%s: %s", where, d)
			failed++
		}
		if failed > 20 {
			t.Fatal("too many differences")
		}
	}
	t.Logf("%d gathered finds compared with the reference Moray", len(cases))
}

// startElectricMoray runs the reference kit's whole tier (the real
// electric-moray 1.2.2 in front of one real Moray) on free ports, and
// returns electric-moray's address.
func startElectricMoray(t *testing.T, kit string) string {
	t.Helper()
	free := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	dir, err := os.MkdirTemp("", "reshard-tier-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755) // user postgres runs the tier's PostgreSQL in it
	t.Cleanup(func() { os.RemoveAll(dir) })
	// A DNS address of its own, so that another tier's does not clash.
	env := append(os.Environ(), "TIER_SHARDS=1", "TIER_RING_VNODES=1000",
		fmt.Sprintf("TIER_DNS_IP=127.0.%d.%d", 100+os.Getpid()%100, 2+os.Getpid()%250),
		fmt.Sprintf("TIER_PG_PORT_BASE=%d", free()-1), fmt.Sprintf("TIER_MORAY_PORT_BASE=%d", free()-1),
		fmt.Sprintf("TIER_MORAY_MON_BASE=%d", free()-1), fmt.Sprintf("TIER_EM_PORT=%d", free()),
		fmt.Sprintf("TIER_EM_MONITOR_PORT=%d", free()), fmt.Sprintf("TIER_EM_STATUS_PORT=%d", free()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(kit, "tier.sh"), "start", "--dir", dir)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	t.Cleanup(func() {
		stop := exec.Command("bash", filepath.Join(kit, "tier.sh"), "stop", "--dir", dir)
		stop.Env = env
		if out, err := stop.CombinedOutput(); err != nil {
			t.Logf("tier.sh stop: %v: %s", err, out)
		}
	})
	if err != nil {
		if os.Getenv("RESHARD_REQUIRE_REFERENCE") == "" {
			t.Skipf("the reference tier did not start (set RESHARD_REQUIRE_REFERENCE=1 to fail instead): %v\n%s", err, stderr.String())
		}
		t.Fatalf("tier.sh start: %v\n%s", err, stderr.String())
	}
	vars := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			vars[k] = v
		}
	}
	if vars["EM_PORT"] == "" {
		t.Fatalf("tier.sh start printed no EM_PORT: %s", out)
	}
	return vars["EM_HOST"] + ":" + vars["EM_PORT"]
}

// rawAnswer sends one findObjects frame and returns the answer's frame.
func rawAnswer(t *testing.T, addr string, args json.RawMessage) *fast.Message {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	req := &fast.Message{Version: fast.Version2, Status: fast.StatusData, MsgID: 7,
		Meta: fast.Meta{Name: "findObjects", UTS: time.Now().UnixMicro()}, D: args}
	if err := fast.Encode(conn, req); err != nil {
		t.Fatal(err)
	}
	m, err := fast.NewDecoder(conn).Decode()
	if err != nil {
		t.Fatalf("%s: %v", addr, err)
	}
	return m
}

// TestCrossShardFindRefuse: by default the router refuses a findObjects
// naming neither hashkey nor token with the very frame electric-moray
// sends (but for its clock): the same status, message id, RPC name and
// error object, byte for byte, before it looks at the bucket or the filter.
func TestCrossShardFindRefuse(t *testing.T) {
	kit := referenceKit(t)
	em := startElectricMoray(t, kit)
	l := labUp(t, "--shards", "1", "--peers", "1", "--routers", "1", "--vnodes", "64")
	for _, args := range []string{
		`["nosuchbucket", "(k=v)", {}]`,
		`["nosuchbucket", "not a filter", {"limit": 5}]`,
		`["b", "(k=v)", {"hashkey": "", "token": null}]`,
		`["b", "(k=v)", {"hashkey": false, "token": 0, "sort": {"attribute": "k"}}]`,
	} {
		want := rawAnswer(t, em, json.RawMessage(args))
		got := rawAnswer(t, l.Moray[0], json.RawMessage(args))
		if want.Status != fast.StatusError || !strings.Contains(string(want.D), "Invalid search request") {
			t.Fatalf("%s: electric-moray answered %v %s", args, want.Status, want.D)
		}
		if got.Status != want.Status || got.MsgID != want.MsgID || got.Meta.Name != want.Meta.Name || got.Version != want.Version || !bytes.Equal(got.D, want.D) {
			t.Errorf("%s:\nreshard:         %v %d %s v%d %s\nelectric-moray:  %v %d %s v%d %s", args,
				got.Status, got.MsgID, got.Meta.Name, got.Version, got.D, want.Status, want.MsgID, want.Meta.Name, want.Version, want.D)
		}
	}
}

// TestGatherFindDuringSplit runs gathered finds without pause while
// 1.moray is split onto 3.moray: while a moving vnode's rows are on both
// shards, and across the cutover, every find still answers each row
// exactly once, in order, with the right _count.
func TestGatherFindDuringSplit(t *testing.T) {
	l := labUp(t, "--shards", "2", "--peers", "1", "--routers", "1", "--vnodes", "512", "--cross-shard-find", "gather")
	dst := l.addShard(t, "3.moray", "1")
	ctx := context.Background()
	c, err := fast.Dial(ctx, l.Moray[0])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Call(ctx, "createBucket", "gather", raw(`{"index": {"n": {"type": "number"}}}`), map[string]any{}); err != nil {
		t.Fatal(err)
	}
	const objects = 400
	want := make([]string, objects)
	for i := range want {
		want[i] = fmt.Sprintf("k%03d", i)
		if _, err := c.Call(ctx, "putObject", "gather", want[i], map[string]any{"n": i}, map[string]any{}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(opts map[string]any, sorted bool) string {
		recs, err := c.Call(ctx, "findObjects", "gather", "(n>=0)", opts)
		if err != nil {
			return err.Error()
		}
		var got []gatherRecord
		for _, r := range recs {
			var g gatherRecord
			if err := json.Unmarshal(r, &g); err != nil {
				return err.Error()
			}
			if g.Count == nil || *g.Count != objects {
				return fmt.Sprintf("_count %s, want %d", ptrText(g.Count), objects)
			}
			got = append(got, g)
		}
		keys := keysOf(got)
		if !sorted {
			slices.Sort(keys)
		}
		if !slices.Equal(keys, want) {
			return fmt.Sprintf("%d records, want %d (first %v)", len(keys), objects, keys[:min(5, len(keys))])
		}
		return ""
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	var finds, withRows int
	var failures []string
	dconn, err := postgres.Connect(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer dconn.Close(ctx)
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			var n int64
			if dconn.QueryRow(ctx, "select count(*) from gather").Scan(&n) == nil && n > 0 {
				withRows++
			}
			for _, o := range []struct {
				opts   map[string]any
				sorted bool
			}{
				{map[string]any{"sort": map[string]any{"attribute": "n", "order": "ASC"}}, true},
				{map[string]any{"noLimit": true}, false},
			} {
				if d := check(o.opts, o.sorted); d != "" {
					failures = append(failures, fmt.Sprintf("find %d: %s", finds, d))
				}
				finds++
			}
		}
	}()
	j := splitHalf(t, l, "1.moray", "3.moray")
	close(stop)
	<-done
	if j.State != orchestrator.Done {
		t.Fatalf("job %s: %s", j.ID, j.State)
	}
	if len(failures) > 0 {
		t.Fatalf("%d of %d gathered finds during the split were wrong: %v", len(failures), finds, failures[:min(10, len(failures))])
	}
	if d := check(map[string]any{"sort": map[string]any{"attribute": "n", "order": "ASC"}}, true); d != "" {
		t.Fatalf("after the split: %s", d)
	}
	if n := query[int64](t, dst, "select count(*) from gather"); n == 0 {
		t.Fatal("the split moved no rows onto 3.moray")
	}
	if finds < 20 || withRows == 0 {
		t.Fatalf("%d finds during the split, %d of them while 3.moray held rows: too few to tell", finds, withRows)
	}
	t.Logf("%d gathered finds during the split, all right; %d rounds while 3.moray held rows", finds, withRows)
}

// TestCrossShardFindFlag: a mode other than refuse or gather is refused
// up front, by the router and by lab up, and the help names both.
func TestCrossShardFindFlag(t *testing.T) {
	for _, args := range [][]string{
		{"router", "--cross-shard-find", "scatter"},
		{"lab", "up", "--dir", filepath.Join(t.TempDir(), "lab"), "--cross-shard-find", "scatter"},
	} {
		_, stderr, ok := run(t, nil, args...)
		if ok || !strings.Contains(stderr, `--cross-shard-find must be refuse or gather, not "scatter"`) {
			t.Errorf("%v: ok=%v, stderr %q", args, ok, stderr)
		}
	}
	out, _, _ := run(t, nil, "router", "--help")
	for _, s := range []string{"refuse  (default)", "gather  run the find on every shard", "Invalid search request"} {
		if !strings.Contains(out, s) {
			t.Errorf("router --help does not say %q", s)
		}
	}
}
