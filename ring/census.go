package ring

import "slices"

// Census is a ring drawn at a resolution: the vnode space cut into
// Buckets equal spans, and how many vnodes of each span each pnode holds
// and how many are read-only. A dashboard draws a 1,000,000-vnode ring
// from it without a million cells.
type Census struct {
	Pnodes []string `json:"pnodes"` // sorted, as Pnodes returns them
	Counts []int    `json:"counts"` // vnodes each pnode holds
	// Per is the vnodes in a span: span b holds vnodes b*Per up to
	// (b+1)*Per-1, the last span fewer.
	Per      int     `json:"per"`
	Grid     [][]int `json:"grid"`      // [pnode][span]: vnodes held
	ReadOnly []int   `json:"read_only"` // [span]: vnodes whose data is "ro"
}

// Census counts the ring in at most buckets spans.
func (r *Ring) Census(buckets int) Census {
	n := int(r.n)
	buckets = max(1, min(buckets, n))
	per := (n + buckets - 1) / buckets
	buckets = (n + per - 1) / per
	c := Census{Pnodes: r.Pnodes(), Per: per, ReadOnly: make([]int, buckets)}
	row := make([]int, len(r.pnodes)) // ring index -> sorted index
	for i, p := range r.pnodes {
		row[i] = slices.Index(c.Pnodes, p)
	}
	c.Counts = make([]int, len(c.Pnodes))
	c.Grid = make([][]int, len(c.Pnodes))
	for i := range c.Grid {
		c.Grid[i] = make([]int, buckets)
	}
	for v, o := range r.owner.all() {
		c.Grid[row[o]][int(v)/per]++
	}
	for i := range c.Grid {
		for _, k := range c.Grid[i] {
			c.Counts[i] += k
		}
	}
	ro := -1
	for i, d := range r.data {
		if string(d) == `"ro"` {
			ro = i
		}
	}
	if ro >= 0 {
		for v, d := range r.dataIx.all() {
			if int(d) == ro {
				c.ReadOnly[int(v)/per]++
			}
		}
	}
	return c
}
