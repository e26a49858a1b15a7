package ring

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Move is a set of vnodes that changed pnode.
type Move struct {
	From   string   `json:"from"`
	To     string   `json:"to"`
	Vnodes []uint32 `json:"-"`
	List   string   `json:"vnodes"` // FormatVnodeList(Vnodes)
}

// DataChange is a set of vnodes whose data changed from one value to another.
type DataChange struct {
	From   json.RawMessage `json:"from"`
	To     json.RawMessage `json:"to"`
	Vnodes []uint32        `json:"-"`
	List   string          `json:"vnodes"`
}

// Diff is what changed between two rings.
type Diff struct {
	AddedPnodes   []string     `json:"addedPnodes"`
	RemovedPnodes []string     `json:"removedPnodes"`
	Moves         []Move       `json:"moves"`
	Data          []DataChange `json:"data"`
}

// Empty reports whether the rings are the same.
func (d Diff) Empty() bool {
	return len(d.AddedPnodes)+len(d.RemovedPnodes)+len(d.Moves)+len(d.Data) == 0
}

// Compare lists what changed from ring a to ring b. Rings with different
// algorithms or vnode counts hash keys differently and are not comparable.
func Compare(a, b *Ring) (Diff, error) {
	if a.algo != b.algo || a.n != b.n {
		return Diff{}, fmt.Errorf("rings are not comparable: %s/%d vnodes vs %s/%d vnodes", a.algo, a.n, b.algo, b.n)
	}
	d := Diff{AddedPnodes: []string{}, RemovedPnodes: []string{}, Moves: []Move{}, Data: []DataChange{}}
	for _, p := range b.Pnodes() {
		if !a.HasPnode(p) {
			d.AddedPnodes = append(d.AddedPnodes, p)
		}
	}
	for _, p := range a.Pnodes() {
		if !b.HasPnode(p) {
			d.RemovedPnodes = append(d.RemovedPnodes, p)
		}
	}
	moves := map[[2]uint16]int{}
	datas := map[[2]uint16]int{}
	for v := range a.n {
		oa, ob := a.owner.at(v), b.owner.at(v)
		pa, pb := a.pnodes[oa], b.pnodes[ob]
		if pa != pb {
			k := [2]uint16{oa, ob}
			i, ok := moves[k]
			if !ok {
				i = len(d.Moves)
				moves[k] = i
				d.Moves = append(d.Moves, Move{From: pa, To: pb})
			}
			d.Moves[i].Vnodes = append(d.Moves[i].Vnodes, v)
		}
		xa, xb := a.dataIx.at(v), b.dataIx.at(v)
		da, db := a.data[xa], b.data[xb]
		if !bytes.Equal(da, db) {
			k := [2]uint16{xa, xb}
			i, ok := datas[k]
			if !ok {
				i = len(d.Data)
				datas[k] = i
				d.Data = append(d.Data, DataChange{From: da, To: db})
			}
			d.Data[i].Vnodes = append(d.Data[i].Vnodes, v)
		}
	}
	for i := range d.Moves {
		d.Moves[i].List = FormatVnodeList(d.Moves[i].Vnodes)
	}
	for i := range d.Data {
		d.Data[i].List = FormatVnodeList(d.Data[i].Vnodes)
	}
	slices.SortFunc(d.Moves, func(x, y Move) int {
		return strings.Compare(x.From+"\x00"+x.To, y.From+"\x00"+y.To)
	})
	return d, nil
}

// PnodeVnodeCount is how many vnodes pnode p holds (0 if absent).
func (r *Ring) PnodeVnodeCount(p string) int {
	i := slices.Index(r.pnodes, p)
	if i < 0 {
		return 0
	}
	n := 0
	for o := range r.owner.values() {
		if int(o) == i {
			n++
		}
	}
	return n
}
