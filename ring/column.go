package ring

import (
	"iter"
	"slices"
	"sync/atomic"
)

// A column holds one uint16 per vnode in fixed-size pages that clones
// share until one of them writes: a router applying a ring version that
// moves half of a 1,000,000-vnode ring copies the pages the move touches,
// not the whole 4 MB ring, so loading a version costs what it changes.
const (
	pageBits = 12
	pageLen  = 1 << pageBits
)

type column struct {
	pages [][]uint16
	mine  []bool   // pages this column may write in place
	spare []uint16 // room for pages about to be copied, in one allocation
	// lent is set by clone: every page is shared from then on, and the next
	// write copies the pages it touches. Clones may run concurrently with
	// each other and with lookups; writes need the column to themselves.
	lent atomic.Bool
}

func newColumn(n int) *column {
	c := &column{pages: make([][]uint16, (n+pageLen-1)/pageLen)}
	c.mine = make([]bool, len(c.pages))
	for p := range c.pages {
		c.pages[p] = make([]uint16, min(pageLen, n-p*pageLen))
		c.mine[p] = true
	}
	return c
}

func (c *column) at(v uint32) uint16 { return c.pages[v>>pageBits][v&(pageLen-1)] }

// page returns page p ready to be written.
func (c *column) page(p int) []uint16 {
	if c.lent.Load() {
		clear(c.mine)
		c.lent.Store(false)
	}
	if !c.mine[p] {
		old := c.pages[p]
		var pg []uint16
		if len(c.spare) >= len(old) {
			pg, c.spare = c.spare[:len(old):len(old)], c.spare[len(old):]
			copy(pg, old)
		} else {
			pg = slices.Clone(old)
		}
		c.pages[p] = pg
		c.mine[p] = true
	}
	return c.pages[p]
}

// reserve makes room, in one allocation, for the shared pages from vnode
// lo to hi that a write is about to copy: a move spread over many pages
// costs one allocation, not one per page.
func (c *column) reserve(lo, hi uint32) {
	if c.lent.Load() {
		clear(c.mine)
		c.lent.Store(false)
	}
	n := 0
	for p := lo >> pageBits; p <= hi>>pageBits; p++ {
		if !c.mine[p] {
			n++
		}
	}
	if n > 1 {
		c.spare = make([]uint16, n*pageLen)
	}
}

func (c *column) set(v uint32, x uint16) { c.page(int(v >> pageBits))[v&(pageLen-1)] = x }

// setRange sets every step-th vnode from lo to hi (inclusive) to x, a page
// at a time.
func (c *column) setRange(lo, hi, step uint32, x uint16) {
	c.reserve(lo, hi)
	defer func() { c.spare = nil }()
	for v := int(lo); v <= int(hi); {
		p := v >> pageBits
		pg := c.page(p)
		base := p << pageBits
		end := min(int(hi)-base, len(pg)-1)
		i := v - base
		for ; i <= end; i += int(step) {
			pg[i] = x
		}
		v = base + i
	}
}

// matchRange counts, among every step-th vnode from lo to hi (inclusive),
// those whose value is a, those whose value is b (when b differs from a),
// and the others. It counts with comparisons, not a table: a table's
// increments of one counter wait on each other.
func (c *column) matchRange(lo, hi, step uint32, a, b uint16) (na, nb, other int) {
	for v := int(lo); v <= int(hi); {
		p := v >> pageBits
		pg := c.pages[p]
		base := p << pageBits
		end := min(int(hi)-base, len(pg)-1)
		i := v - base
		for ; i <= end; i += int(step) {
			x := pg[i]
			switch {
			case x == a:
				na++
			case x == b:
				nb++
			default:
				other++
			}
		}
		v = base + i
	}
	return na, nb, other
}

// mapAll replaces every value x with f(x).
func (c *column) mapAll(f func(uint16) uint16) {
	for p := range c.pages {
		pg := c.page(p)
		for i, x := range pg {
			pg[i] = f(x)
		}
	}
}

// all yields each vnode and its value in vnode order.
func (c *column) all() iter.Seq2[uint32, uint16] {
	return func(yield func(uint32, uint16) bool) {
		for p, pg := range c.pages {
			base := uint32(p) << pageBits
			for i, x := range pg {
				if !yield(base+uint32(i), x) {
					return
				}
			}
		}
	}
}

// values yields every value, in vnode order.
func (c *column) values() iter.Seq[uint16] {
	return func(yield func(uint16) bool) {
		for _, pg := range c.pages {
			for _, x := range pg {
				if !yield(x) {
					return
				}
			}
		}
	}
}

// clone returns a column sharing every page; neither writes them in place
// after this.
func (c *column) clone() *column {
	c.lent.Store(true)
	return &column{pages: slices.Clone(c.pages), mine: make([]bool, len(c.pages))}
}
