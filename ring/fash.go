package ring

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/reshard/reshard/internal/jsjson"
	"io"
	"math/big"
	"slices"
	"strconv"
	"strings"
)

type fashAlgorithm struct {
	NAME                string `json:"NAME"`
	MAX                 string `json:"MAX"`
	VNODE_HASH_INTERVAL string `json:"VNODE_HASH_INTERVAL"`
}

// ParseFash reads a ring in node-fash's serialized topology format
// ({"vnodes","pnodeToVnodeMap","algorithm","version"}), as fash serialize
// prints it. Pnode order and data values are kept so WriteFash gives the
// same bytes back.
func ParseFash(b []byte) (*Ring, error) {
	r, err := parseFash(b)
	if err != nil {
		return nil, fmt.Errorf("malformed node-fash ring: %w", err)
	}
	return r, nil
}

func parseFash(b []byte) (*Ring, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, fmt.Errorf("not a JSON object: %v", err)
	}
	for k := range top {
		switch k {
		case "vnodes", "pnodeToVnodeMap", "algorithm", "version":
		default:
			return nil, fmt.Errorf("unexpected field %q", k)
		}
	}
	for _, k := range []string{"vnodes", "pnodeToVnodeMap", "algorithm", "version"} {
		if _, ok := top[k]; !ok {
			return nil, fmt.Errorf("field %q is missing", k)
		}
	}
	var n json.Number
	// json.Number also takes "7" in quotes; node-fash asserts a number.
	if err := json.Unmarshal(top["vnodes"], &n); err != nil || top["vnodes"][0] == '"' {
		return nil, fmt.Errorf("vnodes is not a number")
	}
	count, err := strconv.Atoi(string(n))
	if err != nil {
		return nil, fmt.Errorf("vnodes %s is not a whole number", n)
	}
	if err := checkVnodeCount(count); err != nil {
		return nil, err
	}
	var alg fashAlgorithm
	if err := json.Unmarshal(top["algorithm"], &alg); err != nil {
		return nil, fmt.Errorf("algorithm: %v", err)
	}
	var version string
	if err := json.Unmarshal(top["version"], &version); err != nil {
		return nil, fmt.Errorf("version is not a string")
	}
	if err := checkFashVersion(version); err != nil {
		return nil, err
	}
	r, err := emptyRing(alg, count)
	if err != nil {
		return nil, err
	}
	r.fashVersion = version
	if err := r.readPnodeMap(top["pnodeToVnodeMap"]); err != nil {
		return nil, err
	}
	return r, nil
}

// emptyRing checks a node-fash algorithm object against the vnode count and
// returns a ring with no vnodes assigned yet.
func emptyRing(alg fashAlgorithm, count int) (*Ring, error) {
	algo, err := ParseAlgorithm(alg.NAME)
	if err != nil {
		return nil, fmt.Errorf("algorithm.NAME: %v", err)
	}
	r := &Ring{
		algo:   algo,
		n:      uint32(count),
		div:    newDivisor(algo, uint32(count)),
		owner:  newColumn(count),
		dataIx: newColumn(count),
		data:   []json.RawMessage{dataNull},
	}
	// node-fash's in-memory backend recomputes the interval from MAX while
	// its leveldb backend trusts the stored one; refuse a file on which the
	// two would disagree.
	max, ok := new(big.Int).SetString(alg.MAX, 16)
	want := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(algo.Bits())), big.NewInt(1))
	if !ok || max.Cmp(want) != 0 {
		return nil, fmt.Errorf("algorithm.MAX %q is not %s's maximum %s", alg.MAX, algo, algo.fashMax())
	}
	iv, ok := new(big.Int).SetString(alg.VNODE_HASH_INTERVAL, 16)
	if !ok || iv.Cmp(r.div.interval.big()) != 0 {
		return nil, fmt.Errorf("algorithm.VNODE_HASH_INTERVAL %q is not MAX/%d = %s", alg.VNODE_HASH_INTERVAL, count, r.div.hex())
	}
	if alg.NAME != algo.String() {
		return nil, fmt.Errorf("algorithm.NAME %q: node-fash writes %q", alg.NAME, algo.String())
	}
	r.fashMax, r.fashInterval = alg.MAX, alg.VNODE_HASH_INTERVAL
	return r, nil
}

func checkFashVersion(v string) error {
	parts := strings.Split(v, ".")
	want := strings.Split(FashVersion, ".")
	if len(parts) > len(want) {
		return fmt.Errorf("version %q is not compatible with node-fash %s", v, FashVersion)
	}
	for i, p := range parts {
		x, err := strconv.Atoi(p)
		if err != nil || x < 0 {
			return fmt.Errorf("version %q is not a dotted number", v)
		}
		w, _ := strconv.Atoi(want[i])
		if x != w {
			if x > w {
				return fmt.Errorf("version %q is newer than node-fash %s", v, FashVersion)
			}
			return nil
		}
	}
	return nil
}

// readPnodeMap streams pnodeToVnodeMap so pnode order is kept and a million
// vnodes do not become a million map entries.
func (r *Ring) readPnodeMap(raw json.RawMessage) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := expectDelim(dec, '{', "pnodeToVnodeMap"); err != nil {
		return err
	}
	assigned := make([]bool, r.n)
	pnodeIx := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return fmt.Errorf("pnodeToVnodeMap: %v", err)
		}
		p := t.(string)
		if err := checkPnodeName(p); err != nil {
			return fmt.Errorf("pnodeToVnodeMap: %v", err)
		}
		if pnodeIx[p] {
			return fmt.Errorf("pnodeToVnodeMap: duplicate pnode %q", p)
		}
		if len(r.pnodes) >= MaxPnodes {
			return fmt.Errorf("pnodeToVnodeMap: more than %d pnodes", MaxPnodes)
		}
		pnodeIx[p] = true
		ix := uint16(len(r.pnodes))
		r.pnodes = append(r.pnodes, p)
		if err := expectDelim(dec, '{', "pnode "+strconv.Quote(p)); err != nil {
			return err
		}
		for dec.More() {
			t, err := dec.Token()
			if err != nil {
				return fmt.Errorf("pnode %q: %v", p, err)
			}
			key := t.(string)
			v, err := strconv.ParseUint(key, 10, 32)
			if err != nil || strconv.FormatUint(v, 10) != key {
				return fmt.Errorf("pnode %q: vnode key %q is not a vnode number", p, key)
			}
			if v >= uint64(r.n) {
				return fmt.Errorf("pnode %q: %v", p, r.unknownVnode(uint32(v)))
			}
			if assigned[v] {
				return fmt.Errorf("vnode %d is assigned twice (again to pnode %q)", v, p)
			}
			assigned[v] = true
			var d json.RawMessage
			if err := dec.Decode(&d); err != nil {
				return fmt.Errorf("pnode %q vnode %d: %v", p, v, err)
			}
			if d, err = normalizeData(d); err != nil {
				return fmt.Errorf("pnode %q vnode %d: %v", p, v, err)
			}
			r.owner.set(uint32(v), ix)
			if !bytes.Equal(d, dataNull) {
				dx, err := r.dataIndex(d)
				if err != nil {
					return err
				}
				r.dataIx.set(uint32(v), dx)
			}
		}
		if _, err := dec.Token(); err != nil {
			return fmt.Errorf("pnode %q: %v", p, err)
		}
	}
	if len(r.pnodes) == 0 {
		return fmt.Errorf("pnodeToVnodeMap has no pnodes")
	}
	return checkAllAssigned(assigned)
}

func checkAllAssigned(assigned []bool) error {
	missing := 0
	first := -1
	for v, ok := range assigned {
		if !ok {
			if first < 0 {
				first = v
			}
			missing++
		}
	}
	if missing > 0 {
		return fmt.Errorf("%d vnodes belong to no pnode (first: vnode %d)", missing, first)
	}
	return nil
}

func expectDelim(dec *json.Decoder, d json.Delim, what string) error {
	t, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%s: %v", what, err)
	}
	if t != d {
		return fmt.Errorf("%s: want a JSON object, got %v", what, t)
	}
	return nil
}

// fashOrder is the order JSON.stringify prints pnodeToVnodeMap's keys in:
// array-index-like names ascending, then the others in insertion order.
func (r *Ring) fashOrder() []int {
	ix := make([]int, len(r.pnodes))
	for i := range ix {
		ix[i] = i
	}
	index := func(s string) (uint64, bool) {
		v, err := strconv.ParseUint(s, 10, 32)
		return v, err == nil && v < 1<<32-1 && strconv.FormatUint(v, 10) == s
	}
	slices.SortStableFunc(ix, func(a, b int) int {
		va, ia := index(r.pnodes[a])
		vb, ib := index(r.pnodes[b])
		switch {
		case ia && ib:
			return int(int64(va) - int64(vb))
		case ia:
			return -1
		case ib:
			return 1
		}
		return 0
	})
	return ix
}

// byPnode buckets the vnodes by owner in one pass, each bucket ascending.
func (r *Ring) byPnode() [][]uint32 {
	counts := make([]int, len(r.pnodes))
	for o := range r.owner.values() {
		counts[o]++
	}
	all := make([]uint32, r.n)
	out := make([][]uint32, len(r.pnodes))
	off := 0
	for i, c := range counts {
		out[i] = all[off : off : off+c]
		off += c
	}
	for v, o := range r.owner.all() {
		out[o] = append(out[o], v)
	}
	return out
}

func (r *Ring) fashAlgorithm() fashAlgorithm {
	a := fashAlgorithm{NAME: r.algo.String(), MAX: r.fashMax, VNODE_HASH_INTERVAL: r.fashInterval}
	if a.MAX == "" {
		a.MAX = r.algo.fashMax()
	}
	if a.VNODE_HASH_INTERVAL == "" {
		a.VNODE_HASH_INTERVAL = r.div.hex()
	}
	return a
}

// WriteFash writes the ring as node-fash's serialize() does, byte for byte.
func (r *Ring) WriteFash(w io.Writer) error {
	var b bytes.Buffer
	b.Grow(int(r.n) * 12)
	b.WriteString(`{"vnodes":`)
	b.WriteString(strconv.FormatUint(uint64(r.n), 10))
	b.WriteString(`,"pnodeToVnodeMap":{`)
	buckets := r.byPnode()
	for i, p := range r.fashOrder() {
		if i > 0 {
			b.WriteByte(',')
		}
		jsjson.String(&b, r.pnodes[p])
		b.WriteString(":{")
		for j, v := range buckets[p] {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteByte('"')
			b.WriteString(strconv.FormatUint(uint64(v), 10))
			b.WriteString(`":`)
			b.Write(r.data[r.dataIx.at(v)])
		}
		b.WriteByte('}')
	}
	a := r.fashAlgorithm()
	b.WriteString(`},"algorithm":{"NAME":`)
	jsjson.String(&b, a.NAME)
	b.WriteString(`,"MAX":`)
	jsjson.String(&b, a.MAX)
	b.WriteString(`,"VNODE_HASH_INTERVAL":`)
	jsjson.String(&b, a.VNODE_HASH_INTERVAL)
	b.WriteString(`},"version":`)
	v := r.fashVersion
	if v == "" {
		v = FashVersion
	}
	jsjson.String(&b, v)
	b.WriteByte('}')
	_, err := w.Write(b.Bytes())
	return err
}
