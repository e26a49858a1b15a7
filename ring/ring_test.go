package ring

import (
	"bufio"
	"bytes"
	"encoding/json"
	"math/big"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// vector is one line node-fash's getNode produced (testdata/fash/make-vectors.js).
type vector struct {
	Key   string          `json:"key"`
	Vnode uint32          `json:"vnode"`
	Pnode string          `json:"pnode"`
	Data  json.RawMessage `json:"data"`
}

var vectorRings = []string{"sha256", "md5", "sha1", "sha256-3", "md5-7", "sha256-remapped"}

func readVectors(t testing.TB, name string) ([]byte, []vector) {
	t.Helper()
	ring, err := os.ReadFile(filepath.Join("testdata", name+".fash.json"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join("testdata", name+".vectors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var vs []vector
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var v vector
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(vs) < 500 {
		t.Fatalf("%s: only %d vectors", name, len(vs))
	}
	return ring, vs
}

func checkVectors(t *testing.T, name string, r *Ring, vs []vector) {
	t.Helper()
	for _, v := range vs {
		got := r.LocateString(v.Key)
		if got.Vnode != v.Vnode || got.Pnode != v.Pnode || !bytes.Equal(got.Data, v.Data) {
			t.Fatalf("%s: key %q: got vnode %d pnode %s data %s; node-fash says vnode %d pnode %s data %s",
				name, v.Key, got.Vnode, got.Pnode, got.Data, v.Vnode, v.Pnode, v.Data)
		}
	}
}

// Every key routes as node-fash routes it, from a fash file and from our
// own file format, and export-fash gives fash's bytes back.
func TestFashVectors(t *testing.T) {
	for _, name := range vectorRings {
		t.Run(name, func(t *testing.T) {
			raw, vs := readVectors(t, name)
			r, err := Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			checkVectors(t, name, r, vs)
			var out bytes.Buffer
			if err := r.WriteFash(&out); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), raw) {
				t.Fatalf("export-fash differs from node-fash's serialize:\n got %.300s\nwant %.300s", out.Bytes(), raw)
			}
			ours, err := r.MarshalFile()
			if err != nil {
				t.Fatal(err)
			}
			r2, err := Parse(ours)
			if err != nil {
				t.Fatal(err)
			}
			if !r2.Equal(r) {
				t.Fatal("ring file round trip changed the ring")
			}
			checkVectors(t, name+" via ring file", r2, vs)
			out.Reset()
			r2.WriteFash(&out)
			if !bytes.Equal(out.Bytes(), raw) {
				t.Fatal("fash -> ring file -> fash is not lossless")
			}
		})
	}
}

var shards = []string{
	"tcp://2.moray.emy-11.joyent.us:2020",
	"tcp://1.moray.emy-11.joyent.us:2020",
	"tcp://10.moray.emy-11.joyent.us:2020",
}

func mustNew(t testing.TB, a Algorithm, n int, pnodes []string) *Ring {
	t.Helper()
	r, err := New(a, n, pnodes)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func fashBytes(t testing.TB, r *Ring) []byte {
	var b bytes.Buffer
	if err := r.WriteFash(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// New assigns vnodes exactly as fash create does (sorted pnodes, round robin).
func TestCreateMatchesFash(t *testing.T) {
	cases := map[string]*Ring{
		"sha256":   mustNew(t, SHA256, 1000, shards),
		"md5":      mustNew(t, MD5, 97, shards[:2]),
		"sha1":     mustNew(t, SHA1, 4096, append(append([]string{}, shards...), "a", "Z")),
		"sha256-3": mustNew(t, SHA256, 3, []string{"b", "a"}),
		"md5-7":    mustNew(t, MD5, 7, []string{"only"}),
	}
	for name, r := range cases {
		want, vs := readVectors(t, name)
		if got := fashBytes(t, r); !bytes.Equal(got, want) {
			t.Errorf("%s: created ring differs from fash create:\n got %.200s\nwant %.200s", name, got, want)
		}
		checkVectors(t, name, r, vs)
	}
}

// The RFD 103 flow done with our API gives the ring fash produced.
func TestRemapFlowMatchesFash(t *testing.T) {
	want, vs := readVectors(t, "sha256-remapped")
	r := mustNew(t, SHA256, 1024, shards)
	const newShard = "tcp://3.moray.emy-11.joyent.us:2020"
	steps := []func() error{
		func() error { return r.SetData(mustList(t, "0, 106, 943, 689"), json.RawMessage(`"ro"`)) },
		func() error { return r.SetData([]uint32{5}, json.RawMessage(`"ro"`)) },
		func() error { return r.Remap(mustList(t, "0, 106, 943, 689"), newShard) },
		func() error { return r.Remap(mustList(t, "1-3"), newShard) },
		func() error {
			return r.SetData([]uint32{7}, json.RawMessage(`{"state": "moving", "to": "tcp://3.moray.emy-11.joyent.us:2020"}`))
		},
		func() error { return r.SetData([]uint32{8}, json.RawMessage(`2`)) },
		func() error { return r.SetData([]uint32{9}, json.RawMessage(`"blue"`)) },
		func() error { return r.SetData([]uint32{10}, json.RawMessage(`[1,"two",null]`)) },
		func() error { return r.SetData([]uint32{106}, json.RawMessage(`null`)) },
	}
	for i, s := range steps {
		if err := s(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if got := fashBytes(t, r); !bytes.Equal(got, want) {
		t.Fatalf("remapped ring differs from fash's:\n got %.400s\nwant %.400s", got, want)
	}
	checkVectors(t, "remapped", r, vs)
	if got, want := FormatVnodeList(r.DataVnodes()), "0,5,7-10,689,943"; got != want {
		t.Errorf("data vnodes %s, want %s", got, want)
	}
}

func mustList(t testing.TB, s string) []uint32 {
	vs, err := ParseVnodeList(s, 0)
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

// The fixed-width division agrees with math/big on random and extreme digests.
func TestQuotientMatchesBig(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, a := range []Algorithm{SHA256, MD5, SHA1} {
		max := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(a.Bits())), big.NewInt(1))
		for _, n := range []uint32{1, 2, 3, 7, 97, 1000, 1024, 100000, 1000000, 999983, MaxVnodes} {
			d := newDivisor(a, n)
			iv := new(big.Int).Div(max, big.NewInt(int64(n)))
			if d.interval.big().Cmp(iv) != 0 {
				t.Fatalf("%s/%d: interval %s, want %s", a, n, d.hex(), iv.Text(16))
			}
			check := func(h u256) {
				want := new(big.Int).Div(h.big(), iv)
				if got := d.quotient(&h); want.Cmp(new(big.Int).SetUint64(got)) != 0 {
					t.Fatalf("%s/%d: %s / interval = %d, want %s", a, n, h.big().Text(16), got, want)
				}
			}
			// Exact multiples of the interval and their neighbours are where
			// an estimate that is off by one shows.
			for i := 0; i < 200; i++ {
				k := new(big.Int).Rand(rng, big.NewInt(int64(n)+1))
				m := new(big.Int).Mul(k, iv)
				for _, delta := range []int64{-1, 0, 1} {
					x := new(big.Int).Add(m, big.NewInt(delta))
					if x.Sign() >= 0 && x.Cmp(max) <= 0 {
						h, _ := fromBig(x)
						check(h)
					}
				}
				h, _ := fromBig(new(big.Int).Rand(rng, new(big.Int).Add(max, big.NewInt(1))))
				check(h)
			}
			h, _ := fromBig(max)
			check(h)
			check(u256{})
		}
	}
}

// A lookup allocates nothing, whatever the key's length.
func TestLocateDoesNotAllocate(t *testing.T) {
	for _, a := range []Algorithm{SHA256, MD5, SHA1} {
		r := mustNew(t, a, 1000000, shards)
		long := strings.Repeat("x", 4096)
		var sink Location
		allocs := testing.AllocsPerRun(1000, func() {
			sink = r.LocateString("/5d3f2b8e-4f6e/stor/a.log")
			sink = r.LocateString(long)
			sink = r.Locate([]byte("bytes key"))
		})
		if allocs != 0 {
			t.Errorf("%s: Locate allocates %.1f times per run", a, allocs)
		}
		if sink.Pnode == "" {
			t.Fatal("no pnode")
		}
	}
}

func TestNewRejects(t *testing.T) {
	cases := []struct {
		n      int
		pnodes []string
		want   string
	}{
		{0, shards, "vnode count must be at least 1"},
		{-5, shards, "vnode count must be at least 1"},
		{MaxVnodes + 1, shards, "more than"},
		{10, nil, "at least one pnode"},
		{10, []string{"a", "b", "a"}, `duplicate pnode "a"`},
		{10, []string{"a", ""}, "pnode name is empty"},
	}
	for _, c := range cases {
		_, err := New(SHA256, c.n, c.pnodes)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%d, %q): error %v, want %q", c.n, c.pnodes, err, c.want)
		}
	}
	if _, err := ParseAlgorithm("crc32"); err == nil {
		t.Error("crc32 accepted")
	}
	for _, s := range []string{"sha256", "SHA-256", "sha-1", "MD5"} {
		if _, err := ParseAlgorithm(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
}

// Failed mutations leave the ring exactly as it was.
func TestMutationsRejectAndLeaveRingAlone(t *testing.T) {
	r := mustNew(t, SHA256, 100, shards)
	before := r.Clone()
	errs := []error{
		r.Remap([]uint32{1, 100}, "new"),
		r.Remap([]uint32{4, 4}, "new"),
		r.Remap([]uint32{0, 2}, shards[1]), // vnode 0 already there
		r.Remap(nil, "new"),
		r.Remap([]uint32{1}, ""),
		r.SetData([]uint32{1, 200}, json.RawMessage(`"ro"`)),
		r.SetData([]uint32{1}, json.RawMessage(`ro`)),
		r.RemovePnode(shards[0]),
		r.RemovePnode("absent"),
	}
	for i, err := range errs {
		if err == nil {
			t.Errorf("mutation %d succeeded", i)
		}
	}
	if !r.Equal(before) || r.HasPnode("new") {
		t.Fatal("a failed mutation changed the ring")
	}
	// Moving every vnode off a pnode lets it be removed.
	vs, _ := r.VnodesOf(shards[2])
	if err := r.Remap(vs, "new"); err != nil {
		t.Fatal(err)
	}
	if err := r.RemovePnode(shards[2]); err != nil {
		t.Fatal(err)
	}
	if got := r.VnodeCounts(); got["new"] != len(vs) || len(got) != 3 {
		t.Fatalf("counts after remove: %v", got)
	}
	if p, _, _ := r.Vnode(vs[0]); p != "new" {
		t.Fatalf("vnode %d on %s", vs[0], p)
	}
}

func TestParseRejectsMalformed(t *testing.T) {
	good, _ := readVectors(t, "md5-7")
	var top map[string]any
	json.Unmarshal(good, &top)
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		json.Unmarshal(good, &m)
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	pmap := func(m map[string]any) map[string]any { return m["pnodeToVnodeMap"].(map[string]any) }
	cases := map[string]struct {
		in   []byte
		want string
	}{
		"not json":       {[]byte(`{"vnodes":`), "not JSON"},
		"not a ring":     {[]byte(`{"a":1}`), "not a ring"},
		"zero vnodes":    {edit(func(m map[string]any) { m["vnodes"] = 0 }), "vnode count must be at least 1"},
		"string vnodes":  {edit(func(m map[string]any) { m["vnodes"] = "7" }), "vnodes is not a number"},
		"fraction":       {edit(func(m map[string]any) { m["vnodes"] = 7.5 }), "not a whole number"},
		"unknown vnode":  {edit(func(m map[string]any) { pmap(m)["only"].(map[string]any)["7"] = 1 }), "unknown vnode 7"},
		"odd vnode key":  {edit(func(m map[string]any) { pmap(m)["only"].(map[string]any)["07"] = 1 }), `vnode key "07"`},
		"missing vnode":  {edit(func(m map[string]any) { delete(pmap(m)["only"].(map[string]any), "3") }), "1 vnodes belong to no pnode (first: vnode 3)"},
		"assigned twice": {edit(func(m map[string]any) { pmap(m)["other"] = map[string]any{"2": 1} }), "vnode 2 is assigned twice"},
		"bad MAX":        {edit(func(m map[string]any) { m["algorithm"].(map[string]any)["MAX"] = "FF" }), "algorithm.MAX"},
		"bad interval":   {edit(func(m map[string]any) { m["algorithm"].(map[string]any)["VNODE_HASH_INTERVAL"] = "10" }), "VNODE_HASH_INTERVAL"},
		"bad algorithm":  {edit(func(m map[string]any) { m["algorithm"].(map[string]any)["NAME"] = "crc" }), "unknown hash algorithm"},
		"newer version":  {edit(func(m map[string]any) { m["version"] = "3.0.0" }), "newer than node-fash"},
		"no version":     {edit(func(m map[string]any) { delete(m, "version") }), `field "version" is missing`},
		"extra field":    {edit(func(m map[string]any) { m["extra"] = 1 }), `unexpected field "extra"`},
		"pnode not obj":  {edit(func(m map[string]any) { pmap(m)["x"] = 3 }), "want a JSON object"},
	}
	for name, c := range cases {
		_, err := Parse(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error is not one line: %q", name, err)
		}
	}
	// The duplicate-key case cannot be built through a Go map.
	dup := []byte(`{"vnodes":2,"pnodeToVnodeMap":{"a":{"0":1},"a":{"1":1}},"algorithm":{"NAME":"md5","MAX":"FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF","VNODE_HASH_INTERVAL":"7fffffffffffffffffffffffffffffff"},"version":"2.1.0"}`)
	if _, err := Parse(dup); err == nil || !strings.Contains(err.Error(), `duplicate pnode "a"`) {
		t.Errorf("duplicate pnode: %v", err)
	}
}

func TestRingFileRejectsMalformed(t *testing.T) {
	base := `{"format":"reshard-ring/1","algorithm":"sha256","vnodes":10,"pnodes":[%s]%s}`
	cases := map[string]struct{ pnodes, data, want string }{
		"missing":     {`{"name":"a","vnodes":"0-8"}`, ``, "1 vnodes belong to no pnode (first: vnode 9)"},
		"twice":       {`{"name":"a","vnodes":"0-9"},{"name":"b","vnodes":"9"}`, ``, "vnode 9 is assigned twice"},
		"unknown":     {`{"name":"a","vnodes":"0-10"}`, ``, "unknown vnode 10"},
		"dup pnode":   {`{"name":"a","vnodes":"0-4"},{"name":"a","vnodes":"5-9"}`, ``, `duplicate pnode "a"`},
		"bad data":    {`{"name":"a","vnodes":"0-9"}`, `,"data":[{"value":"ro","vnodes":"3,x"}]`, `bad vnode "x"`},
		"two data":    {`{"name":"a","vnodes":"0-9"}`, `,"data":[{"value":"ro","vnodes":"3"},{"value":2,"vnodes":"3"}]`, "vnode 3 has two data values"},
		"extra field": {`{"name":"a","vnodes":"0-9","x":1}`, ``, "unknown field"},
	}
	for name, c := range cases {
		in := strings.Replace(strings.Replace(base, "%s", c.pnodes, 1), "%s", c.data, 1)
		_, err := Parse([]byte(in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", name, err, c.want)
		}
	}
	ok := strings.Replace(strings.Replace(base, "%s", `{"name":"a","vnodes":"0-9/3"},{"name":"b","vnodes":"1-7/3,2-8/3"}`, 1), "%s", `,"data":[{"value":"ro","vnodes":"3"}]`, 1)
	r, err := Parse([]byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	if p, d, _ := r.Vnode(3); p != "a" || string(d) != `"ro"` {
		t.Fatalf("vnode 3: %s %s", p, d)
	}
}

func TestVnodeLists(t *testing.T) {
	good := map[string]string{
		"0, 106, 943, 689": "0,106,689,943",
		"0-99":             "0-99",
		"5 3,4":            "3-5",
		"0-12/4 1":         "0-1,4-12/4",
		"7":                "7",
		"2,4":              "2,4",
	}
	for in, want := range good {
		vs, err := ParseVnodeList(in, 1000)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if got := FormatVnodeList(vs); got != want {
			t.Errorf("%q formats as %q, want %q", in, got, want)
		}
	}
	bad := map[string]string{
		"":         "empty vnode list",
		"-1":       "not negative",
		"1000":     "unknown vnode 1000",
		"5-1":      "ends before it starts",
		"1,x":      `bad vnode "x"`,
		"1.5":      `bad vnode "1.5"`,
		"3,3":      "vnode 3 given more than once",
		"0-10/0":   "step",
		"4/2":      "a step needs a range",
		"990-1005": "unknown vnode 1005",
	}
	for in, want := range bad {
		_, err := ParseVnodeList(in, 1000)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", in, err, want)
		}
	}
	// Round-robin rings print one progression per pnode.
	r := mustNew(t, SHA256, 1000000, shards)
	vs, _ := r.VnodesOf(shards[2]) // "tcp://10..." sorts second
	if got := FormatVnodeList(vs); got != "1-999997/3" {
		t.Errorf("round robin pnode: %s", got)
	}
}

// A million-vnode ring stays small in our format and round-trips both formats.
func TestMillionVnodeRing(t *testing.T) {
	r := mustNew(t, SHA256, 1000000, shards)
	r.Remap(mustList(t, "0, 106, 943, 689, 5000-5999"), "tcp://3.moray.emy-11.joyent.us:2020")
	r.SetData(mustList(t, "7000-7999"), json.RawMessage(`"ro"`))
	b, err := r.MarshalFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 4096 {
		t.Errorf("ring file of 1M vnodes is %d bytes", len(b))
	}
	r2, err := Parse(b)
	if err != nil || !r2.Equal(r) {
		t.Fatalf("ring file round trip: %v", err)
	}
	f := fashBytes(t, r)
	r3, err := Parse(f)
	if err != nil || !r3.Equal(r) {
		t.Fatalf("fash round trip: %v", err)
	}
	if !bytes.Equal(fashBytes(t, r3), f) {
		t.Fatal("fash export not stable")
	}
}

func BenchmarkLocate(b *testing.B) {
	for _, a := range []Algorithm{SHA256, MD5, SHA1} {
		b.Run(a.String(), func(b *testing.B) {
			r := mustNew(b, a, 1000000, shards)
			key := "/5d3f2b8e-4f6e-4a6f-9d5e-1c2b3a4d5e6f/stor/logs/a.log"
			b.ReportAllocs()
			for b.Loop() {
				_ = r.LocateString(key)
			}
		})
	}
}

func TestCompare(t *testing.T) {
	a := mustNew(t, SHA256, 1000, shards)
	b := a.Clone()
	if d, _ := Compare(a, b); !d.Empty() {
		t.Fatalf("clone differs: %+v", d)
	}
	b.Remap(mustList(t, "0, 106, 943, 689"), "new")
	b.SetData(mustList(t, "1-3"), json.RawMessage(`"ro"`))
	d, err := Compare(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.AddedPnodes) != 1 || d.AddedPnodes[0] != "new" || len(d.RemovedPnodes) != 0 {
		t.Fatalf("pnodes: %+v", d)
	}
	moved := 0
	for _, m := range d.Moves {
		if m.To != "new" {
			t.Fatalf("move to %s", m.To)
		}
		moved += len(m.Vnodes)
	}
	if moved != 4 || len(d.Data) != 1 || d.Data[0].List != "1-3" || string(d.Data[0].To) != `"ro"` {
		t.Fatalf("diff %+v", d)
	}
	if a.PnodeVnodeCount("new") != 0 || b.PnodeVnodeCount("new") != 4 {
		t.Fatal("PnodeVnodeCount")
	}
	if _, err := Compare(a, mustNew(t, MD5, 1000, shards)); err == nil {
		t.Fatal("md5 and sha256 rings compared")
	}
}

// BenchmarkLocateKeys looks up a key file against a ring file; bench.js
// runs it on the ring and keys it timed node-fash with. Without those
// files it uses a generated million-vnode ring.
func BenchmarkLocateKeys(b *testing.B) {
	var r *Ring
	var keys []string
	if path := os.Getenv("RESHARD_BENCH_RING"); path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		if r, err = Parse(raw); err != nil {
			b.Fatal(err)
		}
		kb, err := os.ReadFile(os.Getenv("RESHARD_BENCH_KEYS"))
		if err != nil {
			b.Fatal(err)
		}
		keys = strings.Split(strings.TrimSuffix(string(kb), "\n"), "\n")
	} else {
		r = mustNew(b, SHA256, 1000000, shards)
		for i := range 100000 {
			keys = append(keys, "/owner-"+strings.Repeat("x", i%40)+"/stor/object-"+string(rune('a'+i%26)))
		}
	}
	var sum uint64
	for _, k := range keys {
		sum += uint64(r.LocateString(k).Vnode)
	}
	if want := os.Getenv("RESHARD_BENCH_VNODESUM"); want != "" && want != strconv.FormatUint(sum, 10) {
		b.Fatalf("vnode sum %d, node-fash %s: routing differs", sum, want)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for _, k := range keys {
			_ = r.LocateString(k)
		}
	}
	b.ReportMetric(float64(len(keys))*float64(b.N)/b.Elapsed().Seconds(), "keys/s")
}
