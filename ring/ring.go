// Package ring is a node-fash compatible consistent-hash ring: keys hash to
// vnodes exactly as node-fash 3.x computes, vnodes map to pnodes, and each
// vnode carries data (1 by default, 'ro' while read-only, or any JSON value).
//
// A ring of a million vnodes is held in two []uint16 arrays, and Locate does
// not allocate, so a router can hold the ring in memory and look up every
// request. A Ring is safe for concurrent lookups; mutate a Clone.
package ring

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"unicode/utf16"
	"unsafe"
)

// MaxVnodes bounds the vnode count; Manta runs rings of up to a million.
const MaxVnodes = 1 << 24

// MaxPnodes bounds the pnodes and distinct data values, which are stored as
// uint16 indexes per vnode.
const MaxPnodes = 1<<16 - 1

// FashVersion is the topology version node-fash 3.x writes.
const FashVersion = "2.1.0"

// dataNull is node-fash's DATA_NULL: the value of a vnode without data.
var dataNull = json.RawMessage("1")

// Ring maps keys to vnodes, vnodes to pnodes, and vnodes to data.
type Ring struct {
	algo   Algorithm
	n      uint32
	div    divisor
	pnodes []string // in node-fash's pnodeToVnodeMap order; never reordered
	owner  *column  // vnode -> index into pnodes
	dataIx *column  // vnode -> index into data
	data   []json.RawMessage

	// What a node-fash file said, kept so an import exports byte for byte.
	fashMax, fashInterval, fashVersion string
}

// Location is where a key lives.
type Location struct {
	Vnode uint32
	Pnode string
	Data  json.RawMessage // as stored: 1, "ro", ...; do not modify
}

// New creates a ring as node-fash's create does: pnodes are sorted and vnode
// v goes to sorted pnode v mod len(pnodes).
func New(algo Algorithm, vnodes int, pnodes []string) (*Ring, error) {
	if algo.Bits() == 0 {
		return nil, fmt.Errorf("unknown hash algorithm %d", algo)
	}
	if err := checkVnodeCount(vnodes); err != nil {
		return nil, err
	}
	if len(pnodes) == 0 {
		return nil, fmt.Errorf("a ring needs at least one pnode")
	}
	if len(pnodes) > MaxPnodes {
		return nil, fmt.Errorf("%d pnodes is more than the %d supported", len(pnodes), MaxPnodes)
	}
	sorted := slices.Clone(pnodes)
	slices.SortFunc(sorted, jsCompare)
	for i, p := range sorted {
		if err := checkPnodeName(p); err != nil {
			return nil, err
		}
		if i > 0 && sorted[i-1] == p {
			return nil, fmt.Errorf("duplicate pnode %q", p)
		}
	}
	r := &Ring{
		algo:   algo,
		n:      uint32(vnodes),
		div:    newDivisor(algo, uint32(vnodes)),
		pnodes: sorted,
		owner:  newColumn(vnodes),
		dataIx: newColumn(vnodes),
		data:   []json.RawMessage{dataNull},
	}
	for v := range uint32(vnodes) {
		r.owner.set(v, uint16(int(v)%len(sorted)))
	}
	return r, nil
}

func checkVnodeCount(n int) error {
	if n <= 0 {
		return fmt.Errorf("vnode count must be at least 1, got %d", n)
	}
	if n > MaxVnodes {
		return fmt.Errorf("vnode count %d is more than the %d supported", n, MaxVnodes)
	}
	return nil
}

// Pnode names are free-form in node-fash (Manta uses tcp://1.moray...:2020);
// only the empty name is refused since it cannot be addressed.
func checkPnodeName(p string) error {
	if p == "" {
		return fmt.Errorf("pnode name is empty")
	}
	return nil
}

// jsCompare orders strings as JavaScript's default sort does: by UTF-16 code
// units. It differs from byte order only around characters above U+FFFF.
func jsCompare(a, b string) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	if i == len(a) || i == len(b) {
		return len(a) - len(b)
	}
	// Back up to the start of the differing rune and compare UTF-16 units.
	for i > 0 && (a[i]&0xC0 == 0x80) {
		i--
	}
	ua := utf16.Encode([]rune(a[i:]))
	ub := utf16.Encode([]rune(b[i:]))
	return slices.Compare(ua, ub)
}

// Algorithm is the ring's hash.
func (r *Ring) Algorithm() Algorithm { return r.algo }

// Vnodes is the vnode count.
func (r *Ring) Vnodes() int { return int(r.n) }

// Pnodes returns the pnodes in sorted order, including any left without vnodes.
func (r *Ring) Pnodes() []string {
	out := slices.Clone(r.pnodes)
	slices.SortFunc(out, jsCompare)
	return out
}

// HasPnode reports whether p is in the ring.
func (r *Ring) HasPnode(p string) bool { return slices.Contains(r.pnodes, p) }

// VnodeCounts returns how many vnodes each pnode holds.
func (r *Ring) VnodeCounts() map[string]int {
	counts := make([]int, len(r.pnodes))
	for o := range r.owner.values() {
		counts[o]++
	}
	out := make(map[string]int, len(r.pnodes))
	for i, p := range r.pnodes {
		out[p] = counts[i]
	}
	return out
}

// VnodeOf returns the vnode key hashes to: floor(hash / VNODE_HASH_INTERVAL).
//
// node-fash throws for the few digests at the very top of the hash space
// that divide to the vnode count itself (at most vnodes out of 2^128
// digests); those are counted to the last vnode here.
func (r *Ring) VnodeOf(key []byte) uint32 {
	h := r.algo.digest(key)
	q := r.div.quotient(&h)
	if q >= uint64(r.n) {
		return r.n - 1
	}
	return uint32(q)
}

// Locate returns the vnode, pnode and data for key. It does not allocate.
func (r *Ring) Locate(key []byte) Location {
	v := r.VnodeOf(key)
	return Location{Vnode: v, Pnode: r.pnodes[r.owner.at(v)], Data: r.data[r.dataIx.at(v)]}
}

// LocateString is Locate for a string key, without copying it.
func (r *Ring) LocateString(key string) Location {
	return r.Locate(unsafe.Slice(unsafe.StringData(key), len(key)))
}

// Vnode returns the pnode and data of vnode v.
func (r *Ring) Vnode(v uint32) (pnode string, data json.RawMessage, err error) {
	if v >= r.n {
		return "", nil, r.unknownVnode(v)
	}
	return r.pnodes[r.owner.at(v)], r.data[r.dataIx.at(v)], nil
}

func (r *Ring) unknownVnode(v uint32) error {
	return fmt.Errorf("unknown vnode %d: the ring has vnodes 0-%d", v, r.n-1)
}

// VnodesOf returns the vnodes pnode p holds, ascending.
func (r *Ring) VnodesOf(p string) ([]uint32, error) {
	i := slices.Index(r.pnodes, p)
	if i < 0 {
		return nil, fmt.Errorf("pnode %q is not in the ring", p)
	}
	var out []uint32
	for v, o := range r.owner.all() {
		if int(o) == i {
			out = append(out, v)
		}
	}
	return out, nil
}

// DataVnodes returns the vnodes with data other than node-fash's default,
// ascending (what fash get-data-vnodes lists).
func (r *Ring) DataVnodes() []uint32 {
	var out []uint32
	for v, d := range r.dataIx.all() {
		if hasData(r.data[d]) {
			out = append(out, v)
		}
	}
	return out
}

// hasData mirrors node-fash's `data && data !== DATA_NULL`.
func hasData(d json.RawMessage) bool {
	switch string(d) {
	case "1", "null", "false", "0", `""`:
		return false
	}
	return true
}

func (r *Ring) checkVnodes(vnodes []uint32) error {
	if len(vnodes) == 0 {
		return fmt.Errorf("no vnodes given")
	}
	seen := make(map[uint32]bool, len(vnodes))
	for _, v := range vnodes {
		if v >= r.n {
			return r.unknownVnode(v)
		}
		if seen[v] {
			return fmt.Errorf("vnode %d given more than once", v)
		}
		seen[v] = true
	}
	return nil
}

// Remap moves vnodes to pnode p, creating p if it is new, as fash
// remap-vnode does; their data moves with them. Nothing changes on error.
func (r *Ring) Remap(vnodes []uint32, p string) error {
	if err := checkPnodeName(p); err != nil {
		return err
	}
	if err := r.checkVnodes(vnodes); err != nil {
		return err
	}
	idx := slices.Index(r.pnodes, p)
	if idx >= 0 {
		for _, v := range vnodes {
			if int(r.owner.at(v)) == idx {
				return fmt.Errorf("vnode %d already belongs to pnode %q", v, p)
			}
		}
	} else {
		if len(r.pnodes) >= MaxPnodes {
			return fmt.Errorf("the ring already has %d pnodes, the most supported", MaxPnodes)
		}
		r.pnodes = append(r.pnodes, p)
		idx = len(r.pnodes) - 1
	}
	for _, v := range vnodes {
		r.owner.set(v, uint16(idx))
	}
	return nil
}

// SetData sets the data of vnodes, overwriting what was there, as fash
// add-data does. A JSON false, 0, "" or null resets to the default 1.
func (r *Ring) SetData(vnodes []uint32, data json.RawMessage) error {
	d, err := normalizeData(data)
	if err != nil {
		return err
	}
	if err := r.checkVnodes(vnodes); err != nil {
		return err
	}
	if !hasData(d) {
		d = dataNull
	}
	ix, err := r.dataIndex(d)
	if err != nil {
		return err
	}
	for _, v := range vnodes {
		r.dataIx.set(v, ix)
	}
	r.gcData()
	return nil
}

// normalizeData checks data is one JSON value and compacts it, so equal
// values compare equal byte for byte.
func normalizeData(data json.RawMessage) (json.RawMessage, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, data); err != nil || !json.Valid(data) {
		return nil, fmt.Errorf("vnode data %q is not a JSON value", data)
	}
	return json.RawMessage(buf.Bytes()), nil
}

func (r *Ring) dataIndex(d json.RawMessage) (uint16, error) {
	for i, x := range r.data {
		if bytes.Equal(x, d) {
			return uint16(i), nil
		}
	}
	if len(r.data) >= MaxPnodes {
		return 0, fmt.Errorf("the ring already has %d distinct data values, the most supported", MaxPnodes)
	}
	r.data = append(r.data, d)
	return uint16(len(r.data) - 1), nil
}

// gcData drops data values no vnode uses any more, keeping index 0 as 1.
func (r *Ring) gcData() {
	used := make([]bool, len(r.data))
	used[0] = true
	for d := range r.dataIx.values() {
		used[d] = true
	}
	if !slices.Contains(used, false) {
		return
	}
	remap := make([]uint16, len(r.data))
	var kept []json.RawMessage
	for i, u := range used {
		if u {
			remap[i] = uint16(len(kept))
			kept = append(kept, r.data[i])
		}
	}
	r.dataIx.mapAll(func(d uint16) uint16 { return remap[d] })
	r.data = kept
}

// RemovePnode drops a pnode that no longer holds vnodes (fash remove-pnode).
func (r *Ring) RemovePnode(p string) error {
	i := slices.Index(r.pnodes, p)
	if i < 0 {
		return fmt.Errorf("pnode %q is not in the ring", p)
	}
	for o := range r.owner.values() {
		if int(o) == i {
			return fmt.Errorf("pnode %q still holds vnodes; remap them first", p)
		}
	}
	r.pnodes = slices.Delete(r.pnodes, i, i+1)
	r.owner.mapAll(func(o uint16) uint16 {
		if int(o) > i {
			return o - 1
		}
		return o
	})
	return nil
}

// Clone returns an independent copy to mutate.
func (r *Ring) Clone() *Ring {
	c := *r
	c.pnodes = slices.Clone(r.pnodes)
	c.owner = r.owner.clone()
	c.dataIx = r.dataIx.clone()
	c.data = slices.Clone(r.data)
	return &c
}

// Equal reports whether two rings route and tag every vnode the same way.
func (r *Ring) Equal(o *Ring) bool {
	if r.algo != o.algo || r.n != o.n || len(r.pnodes) != len(o.pnodes) {
		return false
	}
	for _, p := range r.pnodes {
		if !o.HasPnode(p) {
			return false
		}
	}
	for v := range r.n {
		if r.pnodes[r.owner.at(v)] != o.pnodes[o.owner.at(v)] ||
			!bytes.Equal(r.data[r.dataIx.at(v)], o.data[o.dataIx.at(v)]) {
			return false
		}
	}
	return true
}
