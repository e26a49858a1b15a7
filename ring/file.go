package ring

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// FileFormat names reshard's own ring file format.
const FileFormat = "reshard-ring/1"

// file is reshard's ring file: each pnode's vnodes and each data value's
// vnodes as FormatVnodeList ranges, so a million round-robin vnodes take a
// line per pnode instead of a JSON key per vnode.
type file struct {
	Format    string      `json:"format"`
	Algorithm string      `json:"algorithm"`
	Vnodes    int         `json:"vnodes"`
	Pnodes    []filePnode `json:"pnodes"`
	Data      []fileData  `json:"data,omitempty"`
	// Fash keeps a node-fash import's algorithm strings and version so
	// export-fash reproduces the original bytes.
	Fash *fileFash `json:"fash,omitempty"`
}

type filePnode struct {
	Name   string `json:"name"`
	Vnodes string `json:"vnodes"`
}

type fileData struct {
	Value  json.RawMessage `json:"value"`
	Vnodes string          `json:"vnodes"`
}

type fileFash struct {
	MAX                 string `json:"MAX"`
	VNODE_HASH_INTERVAL string `json:"VNODE_HASH_INTERVAL"`
	Version             string `json:"version"`
}

// MarshalFile encodes the ring in reshard's ring file format.
func (r *Ring) MarshalFile() ([]byte, error) {
	f := file{Format: FileFormat, Algorithm: r.algo.String(), Vnodes: int(r.n)}
	buckets := r.byPnode()
	for i, p := range r.pnodes { // insertion order, so export-fash order survives
		f.Pnodes = append(f.Pnodes, filePnode{Name: p, Vnodes: FormatVnodeList(buckets[i])})
	}
	dataVnodes := make([][]uint32, len(r.data))
	for v, d := range r.dataIx.all() {
		if d != 0 {
			dataVnodes[d] = append(dataVnodes[d], v)
		}
	}
	for d := 1; d < len(r.data); d++ {
		if len(dataVnodes[d]) > 0 {
			f.Data = append(f.Data, fileData{Value: r.data[d], Vnodes: FormatVnodeList(dataVnodes[d])})
		}
	}
	if r.fashMax != "" || r.fashVersion != "" {
		a := r.fashAlgorithm()
		f.Fash = &fileFash{MAX: a.MAX, VNODE_HASH_INTERVAL: a.VNODE_HASH_INTERVAL, Version: r.fashVersion}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", " ")
	if err := enc.Encode(f); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// WriteFile writes the ring in reshard's ring file format.
func (r *Ring) WriteFile(w io.Writer) error {
	b, err := r.MarshalFile()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// ParseFile reads reshard's ring file format.
func ParseFile(b []byte) (*Ring, error) {
	r, err := parseFile(b)
	if err != nil {
		return nil, fmt.Errorf("malformed ring file: %w", err)
	}
	return r, nil
}

func parseFile(b []byte) (*Ring, error) {
	var f file
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, err
	}
	if f.Format != FileFormat {
		return nil, fmt.Errorf("format %q is not %q", f.Format, FileFormat)
	}
	if err := checkVnodeCount(f.Vnodes); err != nil {
		return nil, err
	}
	algo, err := ParseAlgorithm(f.Algorithm)
	if err != nil {
		return nil, err
	}
	div := newDivisor(algo, uint32(f.Vnodes))
	alg := fashAlgorithm{NAME: algo.String(), MAX: algo.fashMax(), VNODE_HASH_INTERVAL: div.hex()}
	if f.Fash != nil {
		alg.MAX, alg.VNODE_HASH_INTERVAL = f.Fash.MAX, f.Fash.VNODE_HASH_INTERVAL
		if f.Fash.Version != "" {
			if err := checkFashVersion(f.Fash.Version); err != nil {
				return nil, err
			}
		}
	}
	r, err := emptyRing(alg, f.Vnodes)
	if err != nil {
		return nil, err
	}
	if f.Fash == nil {
		r.fashMax, r.fashInterval = "", ""
	} else {
		r.fashVersion = f.Fash.Version
	}
	if len(f.Pnodes) == 0 {
		return nil, fmt.Errorf("no pnodes")
	}
	if len(f.Pnodes) > MaxPnodes {
		return nil, fmt.Errorf("more than %d pnodes", MaxPnodes)
	}
	assigned := make([]bool, r.n)
	names := map[string]bool{}
	for i, p := range f.Pnodes {
		if err := checkPnodeName(p.Name); err != nil {
			return nil, err
		}
		if names[p.Name] {
			return nil, fmt.Errorf("duplicate pnode %q", p.Name)
		}
		names[p.Name] = true
		r.pnodes = append(r.pnodes, p.Name)
		if strings.TrimSpace(p.Vnodes) == "" {
			continue // a pnode whose vnodes were all remapped away
		}
		vs, err := ParseVnodeList(p.Vnodes, f.Vnodes)
		if err != nil {
			return nil, fmt.Errorf("pnode %q: %v", p.Name, err)
		}
		for _, v := range vs {
			if assigned[v] {
				return nil, fmt.Errorf("vnode %d is assigned twice (again to pnode %q)", v, p.Name)
			}
			assigned[v] = true
			r.owner.set(v, uint16(i))
		}
	}
	if err := checkAllAssigned(assigned); err != nil {
		return nil, err
	}
	tagged := make([]bool, r.n)
	for _, d := range f.Data {
		val, err := normalizeData(d.Value)
		if err != nil {
			return nil, err
		}
		vs, err := ParseVnodeList(d.Vnodes, f.Vnodes)
		if err != nil {
			return nil, fmt.Errorf("data %s: %v", val, err)
		}
		ix, err := r.dataIndex(val)
		if err != nil {
			return nil, err
		}
		for _, v := range vs {
			if tagged[v] {
				return nil, fmt.Errorf("vnode %d has two data values", v)
			}
			tagged[v] = true
			r.dataIx.set(v, ix)
		}
	}
	r.gcData()
	return r, nil
}

// Formats Detect tells apart.
const (
	FormatRing = "ring" // reshard's ring file
	FormatFash = "fash" // node-fash serialized topology
)

// Detect tells which kind of ring file b holds.
func Detect(b []byte) (string, error) {
	var probe struct {
		Format          *string         `json:"format"`
		PnodeToVnodeMap json.RawMessage `json:"pnodeToVnodeMap"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return "", fmt.Errorf("ring is not JSON: %v", err)
	}
	switch {
	case probe.Format != nil:
		return FormatRing, nil
	case probe.PnodeToVnodeMap != nil:
		return FormatFash, nil
	}
	return "", fmt.Errorf("not a ring: neither a reshard ring file (\"format\") nor a node-fash ring (\"pnodeToVnodeMap\")")
}

// Parse reads either reshard's ring file or a node-fash serialized ring.
func Parse(b []byte) (*Ring, error) {
	f, err := Detect(b)
	if err != nil {
		return nil, err
	}
	if f == FormatFash {
		return ParseFash(b)
	}
	return ParseFile(b)
}
