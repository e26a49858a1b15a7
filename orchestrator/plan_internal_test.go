package orchestrator

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/reshard/reshard"
	"github.com/reshard/reshard/shard"
)

// rowsOf makes the per-vnode statistics the planning functions read.
func rowsOf(counts map[uint32]int64) map[uint32]shard.VnodeStat {
	out := map[uint32]shard.VnodeStat{}
	for v, n := range counts {
		out[v] = shard.VnodeStat{Vnode: int32(v), Rows: n}
	}
	return out
}

func TestSplitHalf(t *testing.T) {
	for _, c := range []struct {
		name  string
		owned []uint32
		rows  map[uint32]int64
		want  []uint32
	}{
		{"no rows: half the vnodes, in vnode order", []uint32{3, 1, 2, 0}, nil, []uint32{0, 1}},
		{"no rows, odd count rounds down", []uint32{0, 1, 2, 3, 4}, nil, []uint32{0, 1}},
		{"even rows", []uint32{0, 1, 2, 3}, map[uint32]int64{0: 10, 1: 10, 2: 10, 3: 10}, []uint32{0, 1}},
		{"heavy first vnode", []uint32{0, 1, 2, 3}, map[uint32]int64{0: 70, 1: 10, 2: 10, 3: 10}, []uint32{0}},
		{"heavy last vnode: all but it, never all", []uint32{0, 1, 2, 3}, map[uint32]int64{0: 1, 1: 1, 2: 1, 3: 97}, []uint32{0, 1, 2}},
		// Every prefix is as far from half as every other: the first wins.
		{"all rows in one vnode", []uint32{0, 1, 2, 3}, map[uint32]int64{2: 100}, []uint32{0}},
		{"all rows in the first vnode", []uint32{0, 1, 2, 3}, map[uint32]int64{0: 100}, []uint32{0}},
		{"two vnodes", []uint32{8, 4}, map[uint32]int64{8: 100}, []uint32{4}},
		{"sparse vnode ids", []uint32{900, 7, 4096, 31}, map[uint32]int64{7: 5, 31: 5, 900: 5, 4096: 5}, []uint32{7, 31}},
		// Plan refuses a single vnode ("nothing to split") on this empty answer.
		{"single vnode: none", []uint32{5}, map[uint32]int64{5: 100}, []uint32{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			owned := slices.Clone(c.owned)
			got := splitHalf(owned, rowsOf(c.rows))
			if !slices.Equal(got, c.want) {
				t.Errorf("splitHalf(%v, %v) = %v, want %v", c.owned, c.rows, got, c.want)
			}
			if !slices.Equal(owned, c.owned) {
				t.Errorf("splitHalf sorted its argument: %v", owned)
			}
		})
	}
	// Plan refuses an origin the ring maps no vnodes to before it splits;
	// splitHalf itself has no answer for none.
	t.Run("no vnodes panics", func(t *testing.T) {
		defer func() {
			if recover() == nil {
				t.Error("splitHalf(nil) did not panic")
			}
		}()
		splitHalf(nil, nil)
	})
}

func TestDivide(t *testing.T) {
	seq := func(lo, hi uint32) []uint32 {
		var out []uint32
		for v := lo; v <= hi; v++ {
			out = append(out, v)
		}
		return out
	}
	for _, c := range []struct {
		name   string
		moving []uint32
		rows   map[uint32]int64
		n      int
		want   [][]uint32
	}{
		{"one part is all", seq(0, 5), map[uint32]int64{0: 9}, 1, [][]uint32{seq(0, 5)}},
		{"no rows, two parts", seq(0, 5), nil, 2, [][]uint32{seq(0, 2), seq(3, 5)}},
		{"no rows, three parts", seq(0, 5), nil, 3, [][]uint32{seq(0, 1), seq(2, 3), seq(4, 5)}},
		{"by rows, not by count", seq(0, 5), map[uint32]int64{0: 10, 1: 10, 2: 10, 3: 10, 4: 200, 5: 10}, 2, [][]uint32{seq(0, 4), {5}}},
		{"heavy ends", seq(0, 3), map[uint32]int64{0: 150, 1: 50, 2: 50, 3: 150}, 2, [][]uint32{seq(0, 1), seq(2, 3)}},
		{"all rows in the first vnode", seq(0, 3), map[uint32]int64{0: 96}, 2, [][]uint32{{0}, seq(1, 3)}},
		// The last vnode would pass half the rows with none left for the
		// second part, so the first takes everything.
		{"all rows in the last vnode", seq(0, 3), map[uint32]int64{3: 96}, 2, [][]uint32{seq(0, 3), nil}},
		{"one vnode a part", seq(10, 12), nil, 3, [][]uint32{{10}, {11}, {12}}},
		// More parts than vnodes: no part can be cut while later parts
		// would be left none, so the first holds all and the rest are empty.
		{"more parts than vnodes", []uint32{7, 9}, nil, 3, [][]uint32{{7, 9}, nil, nil}},
		{"single vnode, two parts", []uint32{7}, map[uint32]int64{7: 10}, 2, [][]uint32{{7}, nil}},
		{"no vnodes", nil, nil, 2, [][]uint32{nil, nil}},
		{"no vnodes, one part", nil, nil, 1, [][]uint32{nil}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := divide(c.moving, rowsOf(c.rows), c.n)
			if len(got) != c.n {
				t.Fatalf("divide gave %d parts, want %d: %v", len(got), c.n, got)
			}
			for i := range got {
				if !slices.Equal(got[i], c.want[i]) {
					t.Errorf("divide(%v, %v, %d) = %v, want %v", c.moving, c.rows, c.n, got, c.want)
					break
				}
			}
			// The parts, in order, are the moving vnodes: nothing lost or doubled.
			if all := slices.Concat(got...); !slices.Equal(all, c.moving) {
				t.Errorf("parts %v do not add up to %v", got, c.moving)
			}
		})
	}
}

func TestRanges(t *testing.T) {
	for _, c := range []struct {
		name          string
		moving, owned []uint32
		want          []shard.Range
	}{
		{"one run", []uint32{1, 2, 3}, []uint32{0, 1, 2, 3, 4, 5}, []shard.Range{{Lo: 1, Hi: 3}}},
		{"two runs", []uint32{1, 3}, []uint32{0, 1, 2, 3}, []shard.Range{{Lo: 1, Hi: 1}, {Lo: 3, Hi: 3}}},
		// Vnode 2 is another shard's: the origin holds none of its rows, so
		// one range may span it.
		{"spans vnodes the origin does not own", []uint32{1, 3}, []uint32{1, 3, 5}, []shard.Range{{Lo: 1, Hi: 3}}},
		{"owned unsorted", []uint32{4, 3}, []uint32{5, 3, 1, 4}, []shard.Range{{Lo: 3, Hi: 4}}},
		{"single vnode", []uint32{7}, []uint32{7, 8}, []shard.Range{{Lo: 7, Hi: 7}}},
		{"all owned", []uint32{0, 1, 2}, []uint32{0, 1, 2}, []shard.Range{{Lo: 0, Hi: 2}}},
		{"first and last", []uint32{0, 9}, []uint32{0, 5, 9}, []shard.Range{{Lo: 0, Hi: 0}, {Lo: 9, Hi: 9}}},
		{"nothing moving", nil, []uint32{1, 2}, nil},
		{"moving vnodes not owned select nothing", []uint32{9}, []uint32{1, 2}, nil},
		{"no vnodes", nil, nil, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := ranges(c.moving, c.owned); !reflect.DeepEqual(got, c.want) {
				t.Errorf("ranges(%v, %v) = %v, want %v", c.moving, c.owned, got, c.want)
			}
		})
	}
}

func TestCheckServers(t *testing.T) {
	withPeers := func(n int) reshard.Pnode {
		return reshard.Pnode{Name: "p", Peers: make([]reshard.Peer, n)}
	}
	for _, c := range []struct {
		name    string
		req     Request
		dests   []reshard.Pnode
		wantErr string
	}{
		{"single DC, one server a pnode", Request{DCMode: "single", To: []string{"a", "b"}, Servers: 2},
			[]reshard.Pnode{withPeers(1), withPeers(3)}, ""},
		{"single DC, servers do not fit", Request{DCMode: "single", To: []string{"a", "b"}, Servers: 3},
			[]reshard.Pnode{withPeers(1), withPeers(1)}, "--servers 3 does not fit 2 destination pnode(s) in single-DC mode: expected 2"},
		{"triple DC, three a pnode", Request{DCMode: "triple", To: []string{"a", "b"}, Servers: 6},
			[]reshard.Pnode{withPeers(3), withPeers(3)}, ""},
		{"triple DC, single-DC count", Request{DCMode: "triple", To: []string{"a"}, Servers: 1},
			[]reshard.Pnode{withPeers(3)}, "--servers 1 does not fit 1 destination pnode(s) in triple-DC mode: expected 3"},
		{"triple DC, too few registered peers", Request{DCMode: "triple", To: []string{"a", "b"}, Servers: 6},
			[]reshard.Pnode{withPeers(3), withPeers(2)}, "the destination pnodes have 5 registered servers, triple-DC mode needs 6"},
		{"triple DC, too many registered peers", Request{DCMode: "triple", To: []string{"a"}, Servers: 3},
			[]reshard.Pnode{withPeers(4)}, "the destination pnodes have 4 registered servers, triple-DC mode needs 3"},
		// The physical strategy creates the peers: none are registered yet.
		{"physical, triple DC, peers not yet made", Request{DCMode: "triple", Strategy: "physical", To: []string{"a"}, Servers: 3},
			[]reshard.Pnode{{Name: "a"}}, ""},
		{"physical still counts servers", Request{DCMode: "triple", Strategy: "physical", To: []string{"a"}, Servers: 2},
			[]reshard.Pnode{{Name: "a"}}, "--servers 2 does not fit 1 destination pnode(s) in triple-DC mode: expected 3"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := checkServers(c.req, CreatesDestinations(c.req.Strategy), c.dests)
			if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || err.Error() != c.wantErr) {
				t.Errorf("checkServers = %v, want %q", err, c.wantErr)
			}
		})
	}
}

func TestCheckRequest(t *testing.T) {
	valid := func() Request {
		return Request{From: "1.moray", To: []string{"2.moray"}, SplitHalf: true, DCMode: "single", Servers: 1, RateLimit: 1000}
	}
	for _, c := range []struct {
		name    string
		edit    func(*Request)
		wantErr string // a part of the error
	}{
		{"valid", func(*Request) {}, ""},
		{"physical", func(r *Request) { r.Strategy = "physical" }, ""},
		{"explicit vnodes", func(r *Request) { r.SplitHalf, r.Vnodes = false, "0, 106" }, ""},
		{"triple DC", func(r *Request) { r.DCMode, r.Servers = "triple", 3 }, ""},
		{"bad strategy", func(r *Request) { r.Strategy = "rsync" }, `--strategy "rsync": use logical or physical`},
		{"bad DC mode", func(r *Request) { r.DCMode = "double" }, `--dc-mode must be single or triple, got "double"`},
		{"no DC mode", func(r *Request) { r.DCMode = "" }, `--dc-mode must be single or triple, got ""`},
		{"missing --to", func(r *Request) { r.To = nil }, "--from and at least one --to are required"},
		{"missing --from", func(r *Request) { r.From = "" }, "--from and at least one --to are required"},
		{"split-half and vnodes", func(r *Request) { r.Vnodes = "1" }, "give exactly one of --split-half and --vnodes"},
		{"neither split-half nor vnodes", func(r *Request) { r.SplitHalf = false }, "give exactly one of --split-half and --vnodes"},
		{"duplicate destination", func(r *Request) { r.To = []string{"2.moray", "3.moray", "2.moray"} }, "pnode 2.moray given twice"},
		{"destination is the origin", func(r *Request) { r.To = []string{"1.moray"} }, "pnode 1.moray given twice"},
		{"zero rate limit", func(r *Request) { r.RateLimit = 0 }, "--rate-limit must be positive, got 0"},
		{"negative rate limit", func(r *Request) { r.RateLimit = -5 }, "--rate-limit must be positive, got -5"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := valid()
			c.edit(&r)
			err := r.check()
			if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Errorf("check = %v, want %q", err, c.wantErr)
			}
		})
	}
	// Defaults: the logical strategy and a 1 MiB catch-up threshold; a
	// threshold given stays.
	r := valid()
	if err := r.check(); err != nil || r.Strategy != "logical" || r.LagBytes != 1<<20 {
		t.Errorf("defaults: %v, strategy %q, lag %d", err, r.Strategy, r.LagBytes)
	}
	r = valid()
	r.LagBytes = 4096
	if err := r.check(); err != nil || r.LagBytes != 4096 {
		t.Errorf("a given lag threshold: %v, lag %d", err, r.LagBytes)
	}
	r = valid()
	r.LagBytes = -1
	if err := r.check(); err != nil || r.LagBytes != 1<<20 {
		t.Errorf("a negative lag threshold: %v, lag %d", err, r.LagBytes)
	}
}
