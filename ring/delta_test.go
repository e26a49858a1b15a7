package ring

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"
)

func fileBytes(t testing.TB, r *Ring) []byte {
	t.Helper()
	b, err := r.MarshalFile()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Random edits of random rings: the delta Changes finds turns the old ring
// into the new one exactly, and applying it leaves the old ring as it was,
// though the two share pages.
func TestDeltaRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for round := 0; round < 200; round++ {
		n := []int{1, 7, pageLen - 1, pageLen, pageLen + 1, 3*pageLen + 17, 20000}[rng.Intn(7)]
		a := mustNew(t, SHA256, n, []string{"a", "b", "c"}[:1+rng.Intn(3)])
		before := fileBytes(t, a)
		b := a.Clone()
		for e := 0; e < 1+rng.Intn(4); e++ {
			var vs []uint32
			seen := map[uint32]bool{}
			for i := 0; i < 1+rng.Intn(n); i++ {
				if v := uint32(rng.Intn(n)); !seen[v] {
					seen[v] = true
					vs = append(vs, v)
				}
			}
			switch rng.Intn(3) {
			case 0:
				b.Remap(vs, fmt.Sprintf("p%d", rng.Intn(4)))
			case 1:
				b.SetData(vs, json.RawMessage([]string{`"ro"`, `1`, `{"x":1}`}[rng.Intn(3)]))
			case 2:
				// Move everything off one pnode and drop it.
				ps := b.Pnodes()
				if len(ps) > 1 {
					gone, keep := ps[rng.Intn(len(ps))], ""
					for _, p := range ps {
						if p != gone {
							keep = p
						}
					}
					if held, _ := b.VnodesOf(gone); len(held) > 0 {
						if err := b.Remap(held, keep); err != nil {
							t.Fatal(err)
						}
					}
					if err := b.RemovePnode(gone); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		d, err := Changes(a, b)
		if err != nil {
			t.Fatal(err)
		}
		// Through JSON, as etcd stores it.
		raw, _ := json.Marshal(d)
		var back Delta
		if err := json.Unmarshal(raw, &back); err != nil {
			t.Fatal(err)
		}
		got, err := a.Apply(&back)
		if err != nil {
			t.Fatalf("round %d: apply: %v", round, err)
		}
		if !got.Equal(b) || !bytes.Equal(fileBytes(t, got), fileBytes(t, b)) {
			t.Fatalf("round %d: applied delta %s differs from the edited ring", round, raw)
		}
		if !bytes.Equal(fileBytes(t, a), before) {
			t.Fatalf("round %d: applying a delta changed the ring it was applied to", round)
		}
		// Writing the result must not reach a either.
		vs, _ := got.VnodesOf(got.Pnodes()[0])
		if len(vs) > 0 && len(vs) < n {
			got.Remap(vs, "elsewhere")
		}
		if !bytes.Equal(fileBytes(t, a), before) {
			t.Fatalf("round %d: writing the applied ring changed its base", round)
		}
	}
}

// A ring written after it was cloned keeps its clone as it was, and the
// other way around.
func TestCloneSharesPagesUntilWritten(t *testing.T) {
	r := mustNew(t, SHA256, 3*pageLen, []string{"a", "b"})
	c := r.Clone()
	if err := r.Remap([]uint32{0, pageLen + 1}, "x"); err != nil {
		t.Fatal(err)
	}
	if p, _, _ := c.Vnode(0); p != "a" {
		t.Fatalf("clone's vnode 0 is on %s after the original was written", p)
	}
	if err := c.Remap([]uint32{2 * pageLen}, "y"); err != nil {
		t.Fatal(err)
	}
	if p, _, _ := r.Vnode(2 * pageLen); p != "a" {
		t.Fatalf("original's vnode %d is on %s after the clone was written", 2*pageLen, p)
	}
	c2 := c.Clone()
	c.Remap([]uint32{4}, "z")
	if p, _, _ := c2.Vnode(4); p != "a" {
		t.Fatalf("second clone sees its parent's later write: %s", p)
	}
}

// RemapDelta moves what Remap moves, reading only the lists.
func TestRemapDelta(t *testing.T) {
	r := mustNew(t, SHA256, 1_000_000, []string{"1.moray", "2.moray"})
	want := r.Clone()
	if err := want.Remap(mustList(t, "0-499998/2"), "3.moray"); err != nil {
		t.Fatal(err)
	}
	d := r.RemapDelta([]Assign{{Pnode: "3.moray", Vnodes: "0-499998/2"}})
	if d.Moved() != 250000 {
		t.Fatalf("moved %d", d.Moved())
	}
	got, err := r.Apply(d)
	if err != nil || !got.Equal(want) {
		t.Fatalf("apply: %v", err)
	}
	if raw, _ := json.Marshal(d); len(raw) > 100 {
		t.Fatalf("a split of a million-vnode ring is a %d-byte delta: %s", len(raw), raw)
	}
	back, err := got.Apply(got.RemapDelta([]Assign{{Pnode: "1.moray", Vnodes: "0-499998/2"}}))
	if err != nil {
		t.Fatal(err)
	}
	if back.VnodeCounts()["3.moray"] != 0 || back.VnodeCounts()["1.moray"] != 500000 {
		t.Fatalf("moving back: %v", back.VnodeCounts())
	}
}

// A bad delta is refused whole, and the ring stays as it was.
func TestApplyRejects(t *testing.T) {
	r := mustNew(t, SHA256, 100, []string{"a", "b"})
	before := fileBytes(t, r)
	for _, c := range []struct {
		d    Delta
		want string
	}{
		{Delta{}, "no pnodes"},
		{Delta{Pnodes: []string{"a", "a"}}, "duplicate pnode"},
		{Delta{Pnodes: []string{"a", ""}}, "pnode name is empty"},
		{Delta{Pnodes: []string{"a", "b"}, Owners: []Assign{{Pnode: "c", Vnodes: "1"}}}, "not in its pnode list"},
		{Delta{Pnodes: []string{"a", "b"}, Owners: []Assign{{Pnode: "a", Vnodes: "0-100"}}}, "unknown vnode 100"},
		{Delta{Pnodes: []string{"a", "b"}, Owners: []Assign{{Pnode: "a", Vnodes: "x"}}}, "bad vnode"},
		{Delta{Pnodes: []string{"a", "b"}, Owners: []Assign{{Pnode: "a", Vnodes: ""}}}, "empty vnode list"},
		{Delta{Pnodes: []string{"a"}}, "left on a pnode the delta removes"},
		{Delta{Pnodes: []string{"a", "b"}, Data: []Tag{{Value: json.RawMessage(`{`), Vnodes: "1"}}}, "not a JSON value"},
	} {
		if _, err := r.Apply(&c.d); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want %q", c.d, err, c.want)
		}
	}
	if !bytes.Equal(fileBytes(t, r), before) {
		t.Fatal("a refused delta changed the ring")
	}
}

// BenchmarkApplySplit applies a split of half of one pnode's vnodes at
// 1,000 and at 1,000,000 vnodes, side by side, and reports the ratio.
//
//	go test -run '^$' -bench ApplySplit ./ring/
func BenchmarkApplySplit(b *testing.B) {
	small := mustNew(b, SHA256, 1000, []string{"1.moray", "2.moray"})
	large := mustNew(b, SHA256, 1_000_000, []string{"1.moray", "2.moray"})
	ds := small.RemapDelta([]Assign{{Pnode: "3.moray", Vnodes: "0-498/2"}})
	dl := large.RemapDelta([]Assign{{Pnode: "3.moray", Vnodes: "0-499998/2"}})
	var ts, tl int64
	for i := 0; i < b.N; i++ {
		ts += timeNS(func() { small.Apply(ds) })
		tl += timeNS(func() { large.Apply(dl) })
	}
	b.ReportMetric(float64(ts)/float64(b.N)/1000, "1k-µs")
	b.ReportMetric(float64(tl)/float64(b.N)/1000, "1M-µs")
}

func timeNS(f func()) int64 {
	t0 := time.Now()
	f()
	return time.Since(t0).Nanoseconds()
}

// A census of a million-vnode ring after a split in half counts every
// vnode once, in the spans the move touched.
func TestCensus(t *testing.T) {
	r := mustNew(t, SHA256, 1_000_000, []string{"1.moray", "2.moray"})
	r, err := r.Apply(r.RemapDelta([]Assign{{Pnode: "3.moray", Vnodes: "0-499998/2"}}))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SetData(mustList(t, "999990-999999"), json.RawMessage(`"ro"`)); err != nil {
		t.Fatal(err)
	}
	c := r.Census(1000)
	if c.Per != 1000 || len(c.Grid) != 3 || len(c.Grid[0]) != 1000 || len(c.ReadOnly) != 1000 {
		t.Fatalf("shape: per %d, %d x %d", c.Per, len(c.Grid), len(c.Grid[0]))
	}
	if strings.Join(c.Pnodes, ",") != "1.moray,2.moray,3.moray" || c.Counts[0] != 250000 || c.Counts[1] != 500000 || c.Counts[2] != 250000 {
		t.Fatalf("counts %v %v", c.Pnodes, c.Counts)
	}
	// The first half's spans: 1.moray none, 3.moray half; the second half
	// the other way round.
	if c.Grid[0][10] != 0 || c.Grid[2][10] != 500 || c.Grid[0][900] != 500 || c.Grid[2][900] != 0 {
		t.Fatalf("spans 10 and 900: %d %d %d %d", c.Grid[0][10], c.Grid[2][10], c.Grid[0][900], c.Grid[2][900])
	}
	if c.ReadOnly[999] != 10 || c.ReadOnly[998] != 0 {
		t.Fatalf("read-only: %d %d", c.ReadOnly[999], c.ReadOnly[998])
	}
	small := mustNew(t, SHA256, 7, []string{"a"}).Census(1000)
	if small.Per != 1 || len(small.ReadOnly) != 7 {
		t.Fatalf("a 7-vnode ring: per %d, %d spans", small.Per, len(small.ReadOnly))
	}
}
