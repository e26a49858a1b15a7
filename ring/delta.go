package ring

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Delta is what one ring changes from another, as vnode lists in
// FormatVnodeList's ranges. A split that moves half of a 1,000,000-vnode
// ring is a few bytes as a delta and megabytes as a whole ring, so ring
// versions are stored, sent and applied as deltas where they are small.
type Delta struct {
	// Pnodes is every pnode of the ring after the change, in the ring's
	// own order (node-fash's pnodeToVnodeMap order, which exports keep).
	Pnodes []string `json:"pnodes"`
	// Owners lists the vnodes that moved, by the pnode they moved to.
	Owners []Assign `json:"owners,omitempty"`
	// Data lists the vnodes whose data changed, by their new value.
	Data []Tag `json:"data,omitempty"`
}

// Assign gives the vnodes in a list to a pnode.
type Assign struct {
	Pnode  string `json:"pnode"`
	Vnodes string `json:"vnodes"`
}

// Tag gives the vnodes in a list a data value.
type Tag struct {
	Value  json.RawMessage `json:"value"`
	Vnodes string          `json:"vnodes"`
}

// Moved counts the vnodes whose pnode the delta changes (at most; a vnode
// already on its pnode is counted too).
func (d *Delta) Moved() int {
	n := 0
	for _, a := range d.Owners {
		n += CountVnodes(a.Vnodes)
	}
	return n
}

// RemapDelta is the delta that moves each list's vnodes to its pnode,
// adding pnodes the ring does not have yet, as Remap does. It costs what
// the lists cost to read, not what the ring holds.
func (r *Ring) RemapDelta(assign []Assign) *Delta {
	pnodes := slices.Clone(r.pnodes)
	for _, a := range assign {
		if !slices.Contains(pnodes, a.Pnode) {
			pnodes = append(pnodes, a.Pnode)
		}
	}
	return &Delta{Pnodes: pnodes, Owners: slices.Clone(assign)}
}

// Transfer moves the vnodes in a list from one pnode to another.
type Transfer struct {
	From, To string
	Vnodes   string
}

// TransferDelta is the delta that makes each transfer's vnodes the To
// pnode's. Every vnode must be on its From or its To pnode already; if all
// are on their To pnode there is nothing to do and the delta is nil. It
// reads only the vnodes the lists name, a page at a time.
func (r *Ring) TransferDelta(ts []Transfer) (*Delta, error) {
	assign := make([]Assign, 0, len(ts))
	done := true
	for _, t := range ts {
		if err := checkRanges(t.Vnodes, r.n); err != nil {
			return nil, fmt.Errorf("vnodes for %s: %v", t.To, err)
		}
		// A pnode not in the ring matches no vnode.
		from, to := uint16(gone), uint16(gone)
		if i := slices.Index(r.pnodes, t.From); i >= 0 {
			from = uint16(i)
		}
		if i := slices.Index(r.pnodes, t.To); i >= 0 {
			to = uint16(i)
		}
		var onTo, other int
		eachRange(t.Vnodes, func(lo, hi, step uint32) {
			nt, _, no := r.owner.matchRange(lo, hi, step, to, from)
			onTo, other = onTo+nt, other+no
		})
		if other > 0 {
			vs, err := ParseVnodeList(t.Vnodes, int(r.n))
			if err != nil {
				return nil, fmt.Errorf("vnodes for %s: %v", t.To, err)
			}
			for _, v := range vs {
				if p := r.pnodes[r.owner.at(v)]; p != t.From && p != t.To {
					return nil, fmt.Errorf("vnode %d is on %s, neither %s nor %s", v, p, t.From, t.To)
				}
			}
		}
		done = done && onTo > 0 && other == 0 && onTo == CountVnodes(t.Vnodes)
		assign = append(assign, Assign{Pnode: t.To, Vnodes: t.Vnodes})
	}
	if done {
		return nil, nil
	}
	return r.RemapDelta(assign), nil
}

// CountVnodes is how many vnodes a list names, read by its ranges (a
// well-formed list: what does not parse counts nothing).
func CountVnodes(list string) int {
	n := 0
	eachRange(list, func(lo, hi, step uint32) { n += int((hi-lo)/step) + 1 })
	return n
}

// Changes returns the delta that turns ring a into ring b. It reads every
// vnode of both; rings with different hashes or vnode counts have none.
func Changes(a, b *Ring) (*Delta, error) {
	if a.algo != b.algo || a.n != b.n {
		return nil, fmt.Errorf("rings are not comparable: %s/%d vnodes vs %s/%d vnodes", a.algo, a.n, b.algo, b.n)
	}
	owners := make([][]uint32, len(b.pnodes))
	datas := make([][]uint32, len(b.data))
	for v := range a.n {
		if ob := b.owner.at(v); a.pnodes[a.owner.at(v)] != b.pnodes[ob] {
			owners[ob] = append(owners[ob], v)
		}
		if xb := b.dataIx.at(v); string(a.data[a.dataIx.at(v)]) != string(b.data[xb]) {
			datas[xb] = append(datas[xb], v)
		}
	}
	d := &Delta{Pnodes: slices.Clone(b.pnodes)}
	for i, vs := range owners {
		if len(vs) > 0 {
			d.Owners = append(d.Owners, Assign{Pnode: b.pnodes[i], Vnodes: FormatVnodeList(vs)})
		}
	}
	for i, vs := range datas {
		if len(vs) > 0 {
			d.Data = append(d.Data, Tag{Value: b.data[i], Vnodes: FormatVnodeList(vs)})
		}
	}
	return d, nil
}

// CheckDelta reports whether d applies to r, without applying it: what
// Apply would refuse, short of a pnode it removes that keeps vnodes.
func (r *Ring) CheckDelta(d *Delta) error {
	_, err := r.prepare(d)
	return err
}

// plan is a checked delta, ready to apply to the ring it was checked on.
type plan struct {
	index    map[string]uint16 // pnode -> index after
	renumber []uint16          // index before -> index after; gone if dropped
	same     bool              // renumber is the identity
	values   []json.RawMessage // d.Data's values, normalized
}

// gone marks a pnode a delta drops.
const gone = 0xFFFF

func (r *Ring) prepare(d *Delta) (plan, error) {
	if len(d.Pnodes) == 0 {
		return plan{}, fmt.Errorf("ring delta: no pnodes")
	}
	if len(d.Pnodes) > MaxPnodes {
		return plan{}, fmt.Errorf("ring delta: %d pnodes is more than the %d supported", len(d.Pnodes), MaxPnodes)
	}
	index := make(map[string]uint16, len(d.Pnodes))
	for i, p := range d.Pnodes {
		if err := checkPnodeName(p); err != nil {
			return plan{}, fmt.Errorf("ring delta: %v", err)
		}
		if _, dup := index[p]; dup {
			return plan{}, fmt.Errorf("ring delta: duplicate pnode %q", p)
		}
		index[p] = uint16(i)
	}
	renumber := make([]uint16, len(r.pnodes))
	same := true
	for i, p := range r.pnodes {
		ix, ok := index[p]
		if !ok {
			ix = gone
		}
		renumber[i] = ix
		same = same && ix == uint16(i)
	}
	for _, a := range d.Owners {
		if _, ok := index[a.Pnode]; !ok {
			return plan{}, fmt.Errorf("ring delta: vnodes %s go to pnode %q, which is not in its pnode list", shorten(a.Vnodes), a.Pnode)
		}
		if err := checkRanges(a.Vnodes, r.n); err != nil {
			return plan{}, fmt.Errorf("ring delta: pnode %q: %v", a.Pnode, err)
		}
	}
	values := make([]json.RawMessage, len(d.Data))
	for i, t := range d.Data {
		v, err := normalizeData(t.Value)
		if err != nil {
			return plan{}, fmt.Errorf("ring delta: %v", err)
		}
		if !hasData(v) {
			v = dataNull
		}
		values[i] = v
		if err := checkRanges(t.Vnodes, r.n); err != nil {
			return plan{}, fmt.Errorf("ring delta: data %s: %v", v, err)
		}
	}
	return plan{index: index, renumber: renumber, same: same, values: values}, nil
}

// Apply returns a new ring: r with d applied. r does not change. Pages of
// the ring the delta does not touch are shared with r, so applying a delta
// costs what it moves. Nothing is returned on error.
func (r *Ring) Apply(d *Delta) (*Ring, error) {
	pl, err := r.prepare(d)
	if err != nil {
		return nil, err
	}
	index, renumber, same, values := pl.index, pl.renumber, pl.same, pl.values
	c := r.Clone()
	c.pnodes = slices.Clone(d.Pnodes)
	if !same {
		// Pnodes were dropped or reordered: renumber every vnode. Only
		// removing a pnode does this, and it is rare.
		c.owner.mapAll(func(o uint16) uint16 { return renumber[o] })
	}
	for _, a := range d.Owners {
		ix := index[a.Pnode]
		eachRange(a.Vnodes, func(lo, hi, step uint32) { c.owner.setRange(lo, hi, step, ix) })
	}
	if !same {
		for v, o := range c.owner.all() {
			if o == gone {
				return nil, fmt.Errorf("ring delta: vnode %d is left on a pnode the delta removes", v)
			}
		}
	}
	if len(d.Data) > 0 {
		for i, t := range d.Data {
			ix, err := c.dataIndex(values[i])
			if err != nil {
				return nil, err
			}
			eachRange(t.Vnodes, func(lo, hi, step uint32) { c.dataIx.setRange(lo, hi, step, ix) })
		}
		c.gcData()
	}
	return c, nil
}

// checkRanges checks that every vnode in list is below n, reading only its
// ranges.
func checkRanges(list string, n uint32) error {
	if strings.TrimSpace(list) == "" {
		return fmt.Errorf("empty vnode list")
	}
	for _, f := range vnodeFields(list) {
		_, hi, _, err := parseVnodeRange(f)
		if err != nil {
			return err
		}
		if hi >= uint64(n) {
			return fmt.Errorf("unknown vnode %d in %q: the ring has vnodes 0-%d", hi, f, n-1)
		}
	}
	return nil
}

// eachRange calls fn with each range of a list checkRanges accepted.
func eachRange(list string, fn func(lo, hi, step uint32)) {
	for _, f := range vnodeFields(list) {
		if lo, hi, step, err := parseVnodeRange(f); err == nil {
			fn(uint32(lo), uint32(hi), uint32(step))
		}
	}
}

func vnodeFields(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
}

// shorten keeps an error about a long vnode list to one line.
func shorten(list string) string {
	if len(list) > 60 {
		return list[:57] + "..."
	}
	return list
}
