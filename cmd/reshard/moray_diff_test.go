package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/reshard/reshard/perf"
	"github.com/reshard/reshard/postgres"
)

// The comparisons TestMorayDiff makes: answers (every RPC's answer), rows
// (every stored row, column by column), config (buckets_config) and ddl
// (columns, indexes, constraints, triggers, sequences). Any of them can be
// left out with -moray-diff-skip or RESHARD_MORAY_DIFF_SKIP, e.g. "ddl",
// while the layout is still being changed.
var morayDiffSkip = flag.String("moray-diff-skip", os.Getenv("RESHARD_MORAY_DIFF_SKIP"),
	"TestMorayDiff: comma-separated comparisons to leave out: answers, rows, config, ddl")

// TestMorayDiff is a differential test against the real Moray: the same
// requests go through reshard's router and through a reference Moray 2.6.1
// (standalone, from /work/shared/reference) into another database of the
// same PostgreSQL, and every answer, every stored row and the tables'
// definitions must be the same, as electric-moray in front of Moray would
// leave them.
//
// Environment:
//
//	RESHARD_REFERENCE          the reference kit (default ../../../shared/reference)
//	RESHARD_MORAY_DIFF_SKIP    comparisons to leave out (answers, rows, config, ddl)
//	RESHARD_MORAY_DIFF_OUT     file to write the full, untruncated report to
//	RESHARD_MORAY_DIFF_MTIME_MS  _mtime tolerance in ms (default 3000)
//	RESHARD_MORAY_DIFF_BATCH_VNODE=0  leave value.vnode off batch puts to Moray,
//	                           as electric-moray 1.2.2 does (its batch passes
//	                           requests through untouched). reshard's router
//	                           sets it on batch puts as on putObject: a row
//	                           without a vnode could not be moved by a reshard,
//	                           so by default the reference gets it too.
func TestMorayDiff(t *testing.T) {
	kit := referenceKit(t)
	client := morayClient(t)
	skip := map[string]bool{}
	for _, s := range strings.Split(*morayDiffSkip, ",") {
		if s = strings.TrimSpace(s); s != "" {
			if !contains([]string{"answers", "rows", "config", "ddl"}, s) {
				t.Fatalf("-moray-diff-skip: unknown comparison %q: use answers, rows, config or ddl", s)
			}
			skip[s] = true
		}
	}
	tol := int64(3000)
	if v, err := strconv.ParseInt(os.Getenv("RESHARD_MORAY_DIFF_MTIME_MS"), 10, 64); err == nil {
		tol = v
	}

	start := time.Now()
	l := labUp(t, "--shards", "1", "--peers", "1", "--routers", "1", "--vnodes", "256")
	if len(l.Moray) != 1 || len(l.Shards) != 1 {
		t.Fatalf("lab up: moray %v, shards %d", l.Moray, len(l.Shards))
	}
	port := l.Shards[0].Peers[0].Port
	reshardDSN := l.primary("1.moray")
	morayDSN := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/morayref?sslmode=disable", port)
	ref := startReferenceMoray(t, kit, fmt.Sprintf("postgres://moray@127.0.0.1:%d/morayref", port))
	t.Logf("lab and reference Moray up in %s", time.Since(start).Round(time.Millisecond))

	d := buildDiffOps(ringOf(t, l))
	res := runDiffJS(t, client, d, l.Moray[0], ref, os.Getenv("RESHARD_MORAY_DIFF_BATCH_VNODE") != "0")
	c := &differ{tol: tol}
	for _, tr := range res.Transform {
		c.add("transform", tr.Bucket+" "+strconv.Quote(shortKey(tr.Key)),
			"hashed key: router.HashKey (reshard) vs electric-moray's transform in Node (moray)", shortKey(tr.Go), shortKey(tr.Node))
	}
	if !skip["answers"] {
		answers := make([][2]diffAnswer, len(res.Results))
		for i, r := range res.Results {
			answers[i] = [2]diffAnswer{r.Reshard, r.Moray}
		}
		c.answers(d.ops, answers)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rs, err := postgres.Connect(ctx, reshardDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close(ctx)
	mo, err := postgres.Connect(ctx, morayDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer mo.Close(ctx)
	sides := [2]*pgx.Conn{rs, mo}
	var buckets []string
	for _, op := range d.ops {
		if op.Op == "createBucket" && !contains(buckets, op.Bucket) {
			buckets = append(buckets, op.Bucket)
		}
	}
	if !skip["rows"] {
		c.rows(ctx, t, sides, buckets)
	}
	if !skip["config"] {
		c.bucketsConfig(ctx, t, sides)
	}
	if !skip["ddl"] {
		c.ddl(ctx, t, sides)
	}

	for _, n := range c.notes {
		t.Log(n)
	}
	report := c.report(0)
	if path := os.Getenv("RESHARD_MORAY_DIFF_OUT"); path != "" {
		if err := os.WriteFile(path, []byte(c.report(-1)), 0o644); err != nil {
			t.Errorf("write %s: %v", path, err)
		}
	}
	t.Logf("%d ops compared in %s", len(d.ops), time.Since(start).Round(time.Millisecond))
	known, unknown := c.partition()
	for _, k := range known {
		t.Logf("known difference (%s): %s: %s", k.why, k.d.where, k.d.what)
	}
	if len(unknown) > 0 {
		c.diffs = unknown
		t.Errorf("%s", c.report(0))
	}
	_ = report
}

// stampedKey is a key libmanta's recordDeleteLog makes: "/OBJECTID/MS",
// with the time of the write in milliseconds.
var stampedKey = regexp.MustCompile(`^(/[^/]+/)([0-9]{10,})$`)

// alignStampedKeys gives a row of rb whose key is stamped the key of ra's
// row with the same object and a time within tol ms, so that delete-log
// rows written a few ms apart on the two sides are compared as one.
func alignStampedKeys(ra, rb *pgTable, tol int64) {
	taken := map[string]bool{}
	for i, k := range rb.keys {
		m := stampedKey.FindStringSubmatch(k)
		if m == nil || ra.rows[k] != nil {
			continue
		}
		tb, _ := strconv.ParseInt(m[2], 10, 64)
		for _, ka := range ra.keys {
			ma := stampedKey.FindStringSubmatch(ka)
			if ma == nil || ma[1] != m[1] || taken[ka] || rb.rows[ka] != nil {
				continue
			}
			if ta, _ := strconv.ParseInt(ma[2], 10, 64); abs(ta-tb) <= tol {
				taken[ka] = true
				if ki := slicesIndex(rb.cols, "_key"); ki >= 0 {
					key := ka
					rb.rows[k][ki] = &key
				}
				rb.rows[ka] = rb.rows[k]
				delete(rb.rows, k)
				rb.keys[i] = ka
				break
			}
		}
	}
}

// diffRun is what diff.js prints: each op's answer from both sides, and
// the keys whose electric-moray hashing Go and Node disagree on.
type diffRun struct {
	Results []struct {
		Reshard diffAnswer `json:"reshard"`
		Moray   diffAnswer `json:"moray"`
	} `json:"results"`
	Transform []struct {
		Bucket string `json:"bucket"`
		Key    string `json:"key"`
		Go     string `json:"go"`
		Node   string `json:"node"`
	} `json:"transform"`
}

// runDiffJS sends the ops to both sides through diff.js (the npm moray
// client, and a bare Fast client for raw ops) and returns the answers.
// batchVnode sets value.vnode on batch puts to the bare Moray too.
func runDiffJS(t *testing.T, client string, d *diffOps, reshardAddr, morayAddr string, batchVnode bool) diffRun {
	t.Helper()
	spec := map[string]any{"ops": d.ops, "batchVnode": batchVnode}
	opsFile := filepath.Join(t.TempDir(), "ops.json")
	if err := os.WriteFile(opsFile, jsonText(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", "diff.js", opsFile, reshardAddr, morayAddr)
	cmd.Dir = client
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("diff.js: %v\n%s", err, stderr.String())
	}
	var res diffRun
	if err := json.Unmarshal(out, &res); err != nil || len(res.Results) != len(d.ops) {
		t.Fatalf("diff.js printed %d results for %d ops (%v): %.2000s", len(res.Results), len(d.ops), err, out)
	}
	return res
}

// knownDifferences are differences the project has decided on or not yet
// built, each with the issue that tracks it. They are logged, not failed,
// so the test guards everything else; remove an entry once it is fixed,
// and the test then holds it.
var knownDifferences = []struct {
	where, what string // substrings of the difference's where and what
	why         string
}{}

type knownDiff struct {
	d   diffLine
	why string
}

// partition splits the differences into known and unknown ones.
func (c *differ) partition() (known []knownDiff, unknown []diffLine) {
next:
	for _, d := range c.diffs {
		for _, k := range knownDifferences {
			if strings.Contains(d.where, k.where) && strings.Contains(d.what, k.what) {
				known = append(known, knownDiff{d, k.why})
				continue next
			}
		}
		unknown = append(unknown, d)
	}
	return known, unknown
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// referenceKit finds the reference Moray kit, which lives outside the
// repository, or skips.
func referenceKit(t *testing.T) string {
	t.Helper()
	kit := os.Getenv("RESHARD_REFERENCE")
	if kit == "" {
		kit, _ = filepath.Abs("../../../shared/reference")
	}
	if _, err := os.Stat(filepath.Join(kit, "moray.sh")); err != nil {
		t.Skipf("no reference Moray kit at %s (set RESHARD_REFERENCE to the directory holding moray.sh)", kit)
	}
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed: the reference Moray needs Node.js and npm", tool)
		}
	}
	return kit
}

// startReferenceMoray runs the real Moray against pgURL (moray.sh creates
// the role and the database) and returns its address.
func startReferenceMoray(t *testing.T, kit, pgURL string) string {
	t.Helper()
	addr, _, stop, err := perf.StartMoray(context.Background(), kit, pgURL, t.TempDir(), 4)
	if err != nil {
		// The kit installs Moray from npm on first use: a machine that
		// cannot (no registry, no compiler) skips, as the npm client
		// tests do, unless the reference is required.
		if os.Getenv("RESHARD_REQUIRE_REFERENCE") == "" {
			t.Skipf("the reference Moray did not start (set RESHARD_REQUIRE_REFERENCE=1 to fail instead): %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Log(err)
		}
	})
	return addr
}

// diffAnswer is one side's answer to one op.
type diffAnswer struct {
	OK      bool            `json:"ok"`
	Data    json.RawMessage `json:"data"`
	Name    string          `json:"name"`
	Message string          `json:"message"`
}

// diffLine is one difference: which comparison, where, what, and each
// side's value.
type diffLine struct {
	group, where, what, reshard, moray string
}

type differ struct {
	tol   int64
	diffs []diffLine
	notes []string
}

func (c *differ) add(group, where, what, reshard, moray string) {
	c.diffs = append(c.diffs, diffLine{group, where, what, reshard, moray})
}

var diffGroups = []string{"transform", "answers", "rows", "config", "ddl"}

// report lists the differences by comparison, after a count of each kind.
// Differences that are the same but for where they are (the same field,
// the same two values) are listed once, with every place. Values longer
// than max runes are cut (max < 0: never).
func (c *differ) report(max int) string {
	if max == 0 {
		max = 300
	}
	count := map[string]int{}
	kinds := map[string]int{}
	var kindOrder []string
	for _, d := range c.diffs {
		count[d.group]++
		k := d.group + ": " + d.kind()
		if kinds[k] == 0 {
			kindOrder = append(kindOrder, k)
		}
		kinds[k]++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "reshard differs from Moray in %d ways:", len(c.diffs))
	for _, g := range diffGroups {
		if count[g] > 0 {
			fmt.Fprintf(&b, " %s %d", g, count[g])
		}
	}
	b.WriteString("\n\nBy kind:\n")
	for _, k := range kindOrder {
		fmt.Fprintf(&b, "  %4d  %s\n", kinds[k], k)
	}
	for _, g := range diffGroups {
		if count[g] == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n== %s (%d) ==\n", g, count[g])
		type folded struct {
			first  diffLine
			places []string
		}
		var list []*folded
		seen := map[[3]string]*folded{}
		for _, d := range c.diffs {
			if d.group != g {
				continue
			}
			id := [3]string{d.what, d.reshard, d.moray}
			if f, ok := seen[id]; ok {
				f.places = append(f.places, d.short())
				continue
			}
			f := &folded{first: d, places: []string{d.short()}}
			seen[id] = f
			list = append(list, f)
		}
		for _, f := range list {
			d := f.first
			where := d.where
			if len(f.places) > 1 {
				where = fmt.Sprintf("%d places: %s", len(f.places), strings.Join(f.places, "; "))
			}
			fmt.Fprintf(&b, "%s: %s\n    reshard: %s\n    moray:   %s\n", where, d.what, cut(d.reshard, max), cut(d.moray, max))
		}
	}
	return b.String()
}

// kind is what a difference is about, without where: the field, column
// or kind of schema object.
func (d diffLine) kind() string {
	w := d.what
	if i := strings.Index(w, "]."); strings.HasPrefix(w, "[") && i > 0 {
		w = w[i+2:]
	}
	switch d.group {
	case "answers":
		if strings.HasSuffix(w, " message") || w == "error name" || w == "one side failed" {
			return w
		}
		return "field " + w
	case "ddl":
		return strings.Fields(d.where)[0] + " " + w
	case "rows":
		if strings.HasPrefix(w, "_value") {
			return "_value"
		}
	}
	return w
}

// short is where without the op's description, for folded lists.
func (d diffLine) short() string {
	if i := strings.Index(d.where, " ("); d.group == "answers" && i > 0 {
		return d.where[:i]
	}
	return d.where
}

func cut(s string, max int) string {
	r := []rune(s)
	if max < 0 || len(r) <= max {
		return s
	}
	return string(r[:max]) + fmt.Sprintf("... (%d bytes)", len(s))
}

// shortKey abbreviates the test account's UUID, which makes most keys long.
func shortKey(k string) string { return strings.ReplaceAll(k, diffOwner, "~") }

func opWhere(i int, op diffOp) string {
	s := fmt.Sprintf("op %d %s", i, op.Op)
	if op.Bucket != "" {
		s += " " + op.Bucket
	}
	if op.Key != "" {
		s += " " + strconv.Quote(shortKey(op.Key))
	}
	if op.Filter != "" {
		s += " " + shortKey(op.Filter)
	}
	if op.Etag != "" {
		s += " etag=" + op.Etag
	}
	if op.Op == "batch" {
		var parts []string
		for _, r := range op.Requests {
			p := r.Operation + " " + r.Bucket + " " + strconv.Quote(shortKey(r.Key))
			if r.Etag != "" {
				p += " etag=" + r.Etag
			}
			parts = append(parts, p)
		}
		s += " [" + strings.Join(parts, ", ") + "]"
	}
	return s + " (" + op.Desc + ")"
}

func decodeJSON(raw []byte) any {
	if len(raw) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return string(raw)
	}
	return v
}

func show(v any) string {
	if v == nil {
		return "null"
	}
	if s, ok := v.(string); ok && strings.HasPrefix(s, "\x00") {
		return s[1:] // a note, not a value
	}
	if r, ok := v.(idRank); ok {
		b, _ := r.MarshalJSON()
		var s string
		json.Unmarshal(b, &s)
		return s
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
	return strings.TrimRight(b.String(), "\n")
}

// absent marks a field one side left out, as opposed to a JSON null.
const absent = "\x00(absent)"

// answers compares each op's two answers. The Moray side is made to look
// as electric-moray would return it: value.vnode is deleted from objects.
// _id values become ranks (the order in which ids were handed out), which
// is what two databases with the same history can share.
func (c *differ) answers(ops []diffOp, ans [][2]diffAnswer) {
	decoded := make([][2]any, len(ops))
	ids := [2]map[string][]int64{{}, {}}
	for i, op := range ops {
		for s := 0; s < 2; s++ {
			if !ans[i][s].OK {
				continue
			}
			v := decodeJSON(ans[i][s].Data)
			if s == 1 && (op.Op == "get" || op.Op == "find") {
				eachRecord(v, func(r map[string]any) {
					if val, ok := r["value"].(map[string]any); ok {
						delete(val, "vnode")
					}
				})
			}
			decoded[i][s] = v
		}
		// Only the ids of objects both sides returned for the same op, so
		// that one side's extra objects do not shift every rank after them.
		if ans[i][0].OK && ans[i][1].OK && (op.Op == "get" || op.Op == "find") {
			keys := [2]map[string]bool{{}, {}}
			for s := 0; s < 2; s++ {
				eachRecord(decoded[i][s], func(r map[string]any) { keys[s][fmt.Sprint(r["key"])] = true })
			}
			for s := 0; s < 2; s++ {
				eachRecord(decoded[i][s], func(r map[string]any) {
					n, ok := r["_id"].(json.Number)
					if !ok || !keys[1-s][fmt.Sprint(r["key"])] {
						return
					}
					id, _ := n.Int64()
					ids[s][op.Bucket] = append(ids[s][op.Bucket], id)
				})
			}
		}
	}
	ranks := [2]map[string]map[int64]int{{}, {}}
	for s := 0; s < 2; s++ {
		for b, list := range ids[s] {
			sort.Slice(list, func(i, j int) bool { return list[i] < list[j] })
			m := map[int64]int{}
			for _, id := range list {
				if _, ok := m[id]; !ok {
					m[id] = len(m) + 1
				}
			}
			ranks[s][b] = m
		}
	}
	for i, op := range ops {
		where := opWhere(i, op)
		a := ans[i]
		switch {
		case a[0].OK != a[1].OK:
			c.add("answers", where, "one side failed", describe(a[0], decoded[i][0]), describe(a[1], decoded[i][1]))
			continue
		case !a[0].OK:
			if a[0].Name != a[1].Name {
				c.add("answers", where, "error name", a[0].Name+": "+a[0].Message, a[1].Name+": "+a[1].Message)
			} else if a[0].Message != a[1].Message {
				c.add("answers", where, a[0].Name+" message", a[0].Message, a[1].Message)
			}
			continue
		}
		for s := 0; s < 2; s++ {
			eachRecord(decoded[i][s], func(r map[string]any) {
				if n, ok := r["_id"].(json.Number); ok {
					id, _ := n.Int64()
					r["_id"] = idRank{ranks[s][op.Bucket][id], id}
				}
			})
		}
		if op.Op == "find" {
			c.diffRecords(where, decoded[i][0], decoded[i][1])
			continue
		}
		c.diffJSON(where, "", decoded[i][0], decoded[i][1])
	}
}

// idRank stands for an _id in answers: equal when the ranks are.
type idRank struct {
	rank int // 0: the other side never returned the object
	raw  int64
}

func (r idRank) MarshalJSON() ([]byte, error) {
	if r.rank == 0 {
		return json.Marshal(fmt.Sprintf("_id %d (not ranked)", r.raw))
	}
	return json.Marshal(fmt.Sprintf("#%d (_id %d)", r.rank, r.raw))
}

func describe(a diffAnswer, v any) string {
	if a.OK {
		return "ok " + show(v)
	}
	return a.Name + ": " + a.Message
}

// eachRecord calls fn on an object record, or on each of a list of them.
func eachRecord(v any, fn func(map[string]any)) {
	switch v := v.(type) {
	case map[string]any:
		fn(v)
	case []any:
		for _, e := range v {
			if r, ok := e.(map[string]any); ok {
				fn(r)
			}
		}
	}
}

// diffRecords compares findObjects' answers: the keys in order, then each
// record.
func (c *differ) diffRecords(where string, a, b any) {
	keys := func(v any) (ks []string, m map[string]any) {
		ks, m = []string{}, map[string]any{}
		eachRecord(v, func(r map[string]any) {
			k := fmt.Sprint(r["key"])
			ks = append(ks, k)
			m[k] = r
		})
		return
	}
	ka, ma := keys(a)
	kb, mb := keys(b)
	if !reflect.DeepEqual(ka, kb) {
		c.add("answers", where, "keys found, in order", shortKey(show(ka)), shortKey(show(kb)))
	}
	for _, k := range ka {
		if r, ok := mb[k]; ok {
			c.diffJSON(where, "["+strconv.Quote(shortKey(k))+"]", ma[k], r)
		}
	}
}

// diffJSON reports every leaf where a and b differ. _mtime and mtime may
// differ by the tolerance: the two servers wrote at slightly different
// times.
func (c *differ) diffJSON(where, path string, a, b any) {
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			break
		}
		keys := unionKeys(av, bv)
		sort.Strings(keys)
		for _, k := range keys {
			x, inA := av[k]
			y, inB := bv[k]
			p := k
			if path != "" {
				p = path + "." + k
			}
			switch {
			case !inA:
				c.add("answers", where, p, absent, show(y))
			case !inB:
				c.add("answers", where, p, show(x), absent)
			case (k == "_mtime" || k == "mtime" && path == "") && c.closeNumbers(x, y):
			default:
				c.diffJSON(where, p, x, y)
			}
		}
		return
	case []any:
		bv, ok := b.([]any)
		if !ok || len(av) != len(bv) {
			break
		}
		for i := range av {
			c.diffJSON(where, fmt.Sprintf("%s[%d]", path, i), av[i], bv[i])
		}
		return
	}
	if ra, ok := a.(idRank); ok {
		if rb, ok := b.(idRank); ok && ra.rank == rb.rank && ra.rank != 0 {
			return
		}
	}
	if sa, ok := a.(string); ok {
		if sb, ok := b.(string); ok && updateEtag.MatchString(sa) && updateEtag.MatchString(sb) {
			return
		}
	}
	if !reflect.DeepEqual(a, b) {
		if path == "" {
			path = "answer"
		}
		c.add("answers", where, path, show(a), show(b))
	}
}

// updateEtag is the etag updateObjects gives the rows it changes: "u"
// and seven random hex digits, so two servers' never match. Any two
// such etags compare equal.
var updateEtag = regexp.MustCompile(`^u[0-9a-f]{7}$`)

func (c *differ) closeNumbers(x, y any) bool {
	a, ok1 := x.(json.Number)
	b, ok2 := y.(json.Number)
	if !ok1 || !ok2 {
		return false
	}
	ai, err1 := a.Int64()
	bi, err2 := b.Int64()
	return err1 == nil && err2 == nil && abs(ai-bi) <= c.tol
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// pgTable is a table's columns and rows, every value as PostgreSQL's text.
type pgTable struct {
	cols []string
	rows map[string][]*string // by _key, in cols order
	keys []string             // by _id
}

func regclass(name string) string { return `public.` + pgx.Identifier{name}.Sanitize() }

func tableExists(ctx context.Context, conn *pgx.Conn, name string) bool {
	var ok bool
	conn.QueryRow(ctx, `select to_regclass($1) is not null`, regclass(name)).Scan(&ok)
	return ok
}

func readTable(ctx context.Context, t *testing.T, conn *pgx.Conn, name string) *pgTable {
	t.Helper()
	tb := &pgTable{rows: map[string][]*string{}}
	rows, err := conn.Query(ctx, `select attname from pg_attribute
		where attrelid = to_regclass($1) and attnum > 0 and not attisdropped order by attnum`, regclass(name))
	if err != nil {
		t.Fatal(err)
	}
	tb.cols, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var sel []string
	for _, col := range tb.cols {
		sel = append(sel, pgx.Identifier{col}.Sanitize()+"::text")
	}
	rows, err = conn.Query(ctx, "select "+strings.Join(sel, ", ")+" from "+regclass(name))
	if err != nil {
		t.Fatal(err)
	}
	ki, ii := slicesIndex(tb.cols, "_key"), slicesIndex(tb.cols, "_id")
	ids := map[string]*big.Int{}
	for rows.Next() {
		vals := make([]*string, len(tb.cols))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		key := fmt.Sprint(len(tb.keys))
		if ki >= 0 && vals[ki] != nil {
			key = *vals[ki]
		}
		if _, dup := tb.rows[key]; dup {
			key += fmt.Sprintf(" (again, row %d)", len(tb.keys))
		}
		tb.rows[key] = vals
		tb.keys = append(tb.keys, key)
		id := new(big.Int)
		if ii >= 0 && vals[ii] != nil {
			id.SetString(*vals[ii], 10)
		}
		ids[key] = id
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	sort.SliceStable(tb.keys, func(i, j int) bool {
		if c := ids[tb.keys[i]].Cmp(ids[tb.keys[j]]); c != 0 {
			return c < 0
		}
		return tb.keys[i] < tb.keys[j]
	})
	return tb
}

func slicesIndex(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

func text(p *string) string {
	if p == nil {
		return "NULL"
	}
	return *p
}

// rows compares each bucket's stored rows column by column. _id is
// compared as a rank (the order the keys were inserted in), _mtime within
// the tolerance; the other tables Moray keeps (<bucket>_locking_serial)
// row for row.
func (c *differ) rows(ctx context.Context, t *testing.T, sides [2]*pgx.Conn, buckets []string) {
	for _, b := range buckets {
		ea, eb := tableExists(ctx, sides[0], b), tableExists(ctx, sides[1], b)
		if ea != eb {
			c.add("rows", b, "table", existence(ea), existence(eb))
		}
		if !ea || !eb {
			continue
		}
		ra, rb := readTable(ctx, t, sides[0], b), readTable(ctx, t, sides[1], b)
		alignStampedKeys(ra, rb, c.tol)
		c.compareTable(b, ra, rb)
	}
	var others []string
	rows, err := sides[1].Query(ctx, `select relname from pg_class
		where relnamespace = 'public'::regnamespace and relkind = 'r' order by relname`)
	if err != nil {
		t.Fatal(err)
	}
	names, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	for _, n := range names {
		if !contains(buckets, n) && n != "buckets_config" {
			others = append(others, n)
		}
	}
	for _, n := range others {
		if !tableExists(ctx, sides[0], n) {
			c.add("rows", n, "table", existence(false), existence(true))
			continue
		}
		var all [2][]string
		for s, conn := range sides {
			rows, err := conn.Query(ctx, "select t::text from "+regclass(n)+" t order by 1")
			if err != nil {
				t.Fatal(err)
			}
			all[s], _ = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		if !reflect.DeepEqual(all[0], all[1]) {
			c.add("rows", n, "rows", strings.Join(all[0], " "), strings.Join(all[1], " "))
		}
	}
}

func existence(ok bool) string {
	if ok {
		return "exists"
	}
	return "missing"
}

func (c *differ) compareTable(b string, ra, rb *pgTable) {
	// Columns pair by name, or failing that by name folded to lower case:
	// Moray's index columns are unquoted identifiers, which PostgreSQL
	// folds (objectId becomes objectid). The ddl comparison reports the
	// names; here the values are still worth comparing.
	pair := map[string]string{}
	var onlyA, onlyB []string
	for _, col := range ra.cols {
		if contains(rb.cols, col) {
			pair[col] = col
		}
	}
	for _, col := range ra.cols {
		if _, ok := pair[col]; ok {
			continue
		}
		for _, other := range rb.cols {
			if strings.EqualFold(col, other) && !contains(ra.cols, other) {
				pair[col] = other
			}
		}
		if _, ok := pair[col]; !ok {
			onlyA = append(onlyA, col)
		}
	}
	for _, col := range rb.cols {
		found := false
		for _, other := range pair {
			found = found || other == col
		}
		if !found {
			onlyB = append(onlyB, col)
		}
	}
	if len(onlyA)+len(onlyB) > 0 {
		c.add("rows", b, "columns not compared (on one side only)", strings.Join(onlyA, ", "), strings.Join(onlyB, ", "))
	}
	// Ranks among the keys both sides hold, so that a key one side lacks
	// does not shift every rank after it.
	both := func(tb *pgTable, other *pgTable) map[string]int {
		m := map[string]int{}
		for _, k := range tb.keys {
			if _, ok := other.rows[k]; ok {
				m[k] = len(m) + 1
			}
		}
		return m
	}
	ba, bb := both(ra, rb), both(rb, ra)
	for _, k := range ra.keys {
		if _, ok := rb.rows[k]; !ok {
			c.add("rows", b+" "+strconv.Quote(shortKey(k)), "row", "present: "+rowSummary(ra, k), "missing")
		}
	}
	for _, k := range rb.keys {
		if _, ok := ra.rows[k]; !ok {
			c.add("rows", b+" "+strconv.Quote(shortKey(k)), "row", "missing", "present: "+rowSummary(rb, k))
		}
	}
	for _, k := range ra.keys {
		vb, ok := rb.rows[k]
		if !ok {
			continue
		}
		va := ra.rows[k]
		where := b + " " + strconv.Quote(shortKey(k))
		for _, col := range ra.cols {
			other, ok := pair[col]
			if !ok {
				continue
			}
			x, y := va[slicesIndex(ra.cols, col)], vb[slicesIndex(rb.cols, other)]
			switch col {
			case "_id":
				if ba[k] != bb[k] {
					c.add("rows", where, "_id rank", fmt.Sprintf("#%d (_id %s)", ba[k], text(x)), fmt.Sprintf("#%d (_id %s)", bb[k], text(y)))
				}
				continue
			case "_etag":
				if x != nil && y != nil && updateEtag.MatchString(*x) && updateEtag.MatchString(*y) {
					continue
				}
			case "_mtime":
				if x != nil && y != nil {
					xi, err1 := strconv.ParseInt(*x, 10, 64)
					yi, err2 := strconv.ParseInt(*y, 10, 64)
					if err1 == nil && err2 == nil && abs(xi-yi) <= c.tol {
						continue
					}
				}
			}
			if text(x) == text(y) && (x == nil) == (y == nil) {
				continue
			}
			what := col
			if other != col {
				what += " / " + other
			}
			if col == "_value" && x != nil && y != nil {
				what += " " + jsonLikeness(*x, *y)
			}
			c.add("rows", where, what, text(x), text(y))
		}
	}
}

// jsonLikeness says how two JSON texts differ, since most _value
// differences are only of form or only the vnode electric-moray adds.
func jsonLikeness(x, y string) string {
	// As numbers, not number texts: 1e+21 and 1000000000000000000000 are
	// the same value written two ways.
	var a, b any
	json.Unmarshal([]byte(x), &a)
	json.Unmarshal([]byte(y), &b)
	if reflect.DeepEqual(a, b) {
		return "(same JSON, different text)"
	}
	ma, ok1 := a.(map[string]any)
	mb, ok2 := b.(map[string]any)
	if ok1 && ok2 {
		_, va := ma["vnode"]
		_, vb := mb["vnode"]
		delete(ma, "vnode")
		delete(mb, "vnode")
		if reflect.DeepEqual(ma, mb) && va != vb {
			if va {
				return "(JSON differs only in vnode: reshard has it)"
			}
			return "(JSON differs only in vnode: moray has it)"
		}
	}
	return "(different JSON)"
}

func rowSummary(tb *pgTable, k string) string {
	var parts []string
	for i, col := range tb.cols {
		if col == "_value" || col == "_key" {
			continue
		}
		parts = append(parts, col+"="+text(tb.rows[k][i]))
	}
	return strings.Join(parts, " ")
}

// bucketsConfig compares Moray's bucket registry, but for mtime.
func (c *differ) bucketsConfig(ctx context.Context, t *testing.T, sides [2]*pgx.Conn) {
	ea, eb := tableExists(ctx, sides[0], "buckets_config"), tableExists(ctx, sides[1], "buckets_config")
	if !ea || !eb {
		c.add("config", "buckets_config", "table", existence(ea), existence(eb))
		return
	}
	var tabs [2]*pgTable
	for s, conn := range sides {
		tabs[s] = &pgTable{rows: map[string][]*string{}}
		cols := []string{"name", "index", "pre", "post", "options"}
		var sel []string
		for _, col := range cols {
			sel = append(sel, pgx.Identifier{col}.Sanitize()+"::text")
		}
		rows, err := conn.Query(ctx, "select "+strings.Join(sel, ", ")+" from buckets_config order by name")
		if err != nil {
			c.add("config", "buckets_config", "columns name, index, pre, post, options", err.Error(), "present")
			return
		}
		for rows.Next() {
			vals := make([]*string, len(cols))
			ptrs := make([]any, len(vals))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			tabs[s].rows[text(vals[0])] = vals
			tabs[s].keys = append(tabs[s].keys, text(vals[0]))
		}
		tabs[s].cols = cols
	}
	for _, k := range tabs[1].keys {
		if _, ok := tabs[0].rows[k]; !ok {
			c.add("config", "buckets_config "+k, "row", "missing", "present")
		}
	}
	for _, k := range tabs[0].keys {
		vb, ok := tabs[1].rows[k]
		if !ok {
			c.add("config", "buckets_config "+k, "row", "present", "missing")
			continue
		}
		for i, col := range tabs[0].cols[1:] {
			x, y := tabs[0].rows[k][i+1], vb[i+1]
			if text(x) != text(y) {
				what := col
				if x != nil && y != nil && reflect.DeepEqual(decodeJSON([]byte(*x)), decodeJSON([]byte(*y))) {
					what += " (same JSON, different text)"
				}
				c.add("config", "buckets_config "+k, what, text(x), text(y))
			}
		}
	}
}

// ddlObject is one thing in the schema: a relation, a column, an index,
// a constraint, a trigger or a sequence, with its definition.
type ddlObject struct {
	kind, table, name, def string
	pos                    int // a column's position
}

// schemaObjects lists what a side's public schema holds. Functions are
// left out: Moray creates none.
func schemaObjects(ctx context.Context, t *testing.T, conn *pgx.Conn) map[string]ddlObject {
	t.Helper()
	out := map[string]ddlObject{}
	q := func(kind, sql string) {
		rows, err := conn.Query(ctx, sql)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		for rows.Next() {
			var o ddlObject
			if err := rows.Scan(&o.table, &o.name, &o.def, &o.pos); err != nil {
				t.Fatal(err)
			}
			o.kind = kind
			out[kind+" "+o.table+" "+o.name] = o
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
	}
	q("relation", `select c.relname, c.relname, format('kind %s, persistence %s, replica identity %s, options %s',
			c.relkind, c.relpersistence, c.relreplident, coalesce(c.reloptions::text, '-')), 0
		from pg_class c where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')`)
	q("column", `select c.relname, a.attname, format('%s%s%s%s%s', format_type(a.atttypid, a.atttypmod),
			case when a.attnotnull then ' NOT NULL' else '' end,
			coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), ''),
			case a.attgenerated when 's' then ' GENERATED STORED' else '' end,
			case a.attidentity when '' then '' else ' IDENTITY ' || a.attidentity::text end), a.attnum::int
		from pg_attribute a join pg_class c on c.oid = a.attrelid
		left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum and a.attgenerated = ''
		where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')
		  and a.attnum > 0 and not a.attisdropped`)
	q("index", `select tablename, indexname, indexdef, 0 from pg_indexes where schemaname = 'public'`)
	q("constraint", `select c.relname, k.conname, pg_get_constraintdef(k.oid), 0
		from pg_constraint k join pg_class c on c.oid = k.conrelid
		where c.relnamespace = 'public'::regnamespace`)
	q("trigger", `select c.relname, g.tgname, pg_get_triggerdef(g.oid), 0
		from pg_trigger g join pg_class c on c.oid = g.tgrelid
		where c.relnamespace = 'public'::regnamespace and not g.tgisinternal`)
	q("sequence", `select sequencename, sequencename, format('%s start %s increment %s min %s max %s cycle %s cache %s',
			data_type, start_value, increment_by, min_value, max_value, cycle, cache_size), 0
		from pg_sequences where schemaname = 'public'`)
	q("sequence owner", `select s.relname, s.relname, coalesce(c.relname || '.' || a.attname, 'none'), 0
		from pg_class s left join pg_depend d on d.objid = s.oid and d.deptype in ('a', 'i') and d.refobjsubid > 0
		left join pg_class c on c.oid = d.refobjid left join pg_attribute a on a.attrelid = c.oid and a.attnum = d.refobjsubid
		where s.relnamespace = 'public'::regnamespace and s.relkind = 'S'`)
	return out
}

// ddl compares the two schemas. reshard's own objects (named reshard_*)
// are allowed on its side and only logged; anything else only one side
// has is a difference, as is any definition that differs.
func (c *differ) ddl(ctx context.Context, t *testing.T, sides [2]*pgx.Conn) {
	a, b := schemaObjects(ctx, t, sides[0]), schemaObjects(ctx, t, sides[1])
	keys := unionKeys(a, b)
	// Relations first, then per table: columns in their order, then the rest.
	order := map[string]int{"relation": 0, "column": 1, "constraint": 2, "index": 3, "trigger": 4, "sequence": 5, "sequence owner": 6}
	obj := func(k string) ddlObject {
		if o, ok := a[k]; ok {
			return o
		}
		return b[k]
	}
	sort.Slice(keys, func(i, j int) bool {
		x, y := obj(keys[i]), obj(keys[j])
		if (x.kind == "relation") != (y.kind == "relation") {
			return x.kind == "relation"
		}
		if x.table != y.table {
			return x.table < y.table
		}
		if x.kind != y.kind {
			return order[x.kind] < order[y.kind]
		}
		if x.kind == "column" {
			return x.pos < y.pos
		}
		return x.name < y.name
	})
	relOn := func(m map[string]ddlObject, table string) bool {
		_, ok := m["relation "+table+" "+table]
		return ok
	}
	for _, k := range keys {
		o := obj(k)
		x, inA := a[k]
		y, inB := b[k]
		where := o.kind + " " + o.name
		if o.kind != "relation" && o.kind != "sequence" && o.kind != "sequence owner" {
			where = o.kind + " " + o.table + "." + o.name
		}
		switch {
		case inA && inB:
			if x.def != y.def {
				c.add("ddl", where, "definition", x.def, y.def)
			}
		case inA:
			if strings.HasPrefix(o.name, "reshard_") || strings.HasPrefix(o.table, "reshard_") {
				c.notes = append(c.notes, "reshard's own "+where+": "+x.def)
				continue
			}
			if o.kind != "relation" && !relOn(b, o.table) {
				continue // the table itself is reported
			}
			c.add("ddl", where, "only on reshard", x.def, "missing")
		case inB:
			if o.kind != "relation" && !relOn(a, o.table) {
				continue
			}
			c.add("ddl", where, "only on moray", "missing", y.def)
		}
	}
	// Column order matters to SELECT * and COPY, which dumps rely on.
	tables := map[string]bool{}
	for _, o := range b {
		if o.kind == "relation" && relOn(a, o.table) {
			tables[o.table] = true
		}
	}
	var names []string
	for n := range tables {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		ca, cb := columnOrder(a, n), columnOrder(b, n)
		if len(ca) > 0 && len(cb) > 0 && !reflect.DeepEqual(ca, cb) {
			c.add("ddl", "table "+n, "column order", strings.Join(ca, ", "), strings.Join(cb, ", "))
		}
	}
}

func columnOrder(m map[string]ddlObject, table string) []string {
	var cols []ddlObject
	for _, o := range m {
		if o.kind == "column" && o.table == table {
			cols = append(cols, o)
		}
	}
	sort.Slice(cols, func(i, j int) bool { return cols[i].pos < cols[j].pos })
	var names []string
	for _, o := range cols {
		names = append(names, o.name)
	}
	return names
}

// unionKeys lists the keys of a, then those only b has.
func unionKeys[V any](a, b map[string]V) []string {
	keys := make([]string, 0, len(a)+len(b))
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	return keys
}
