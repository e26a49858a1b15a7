package ring

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ParseVnodeList parses a vnode list as operators write it: numbers and
// ranges separated by commas and/or spaces, e.g. "0, 106, 943, 689",
// "0-99" or "0-999996/4" (every 4th vnode, as FormatVnodeList prints
// round-robin assignments). Each vnode must be below count (when count > 0)
// and appear once; the result is in the order given.
func ParseVnodeList(s string, count int) ([]uint32, error) {
	fields := vnodeFields(s)
	if len(fields) == 0 {
		return nil, fmt.Errorf("empty vnode list")
	}
	var out []uint32
	// Duplicates are found with a bitmap, grown as needed up to the largest
	// ring (2 MB): a 1,000,000-vnode list is parsed whenever a router loads
	// a ring, and a map made that 70 ms. Ids past the largest ring, only
	// possible without a ring size, go to a map.
	var seen []uint64
	if count > 0 {
		seen = make([]uint64, (count+63)/64)
	}
	var far map[uint64]bool
	add := func(v uint64) error {
		if count > 0 && v >= uint64(count) {
			return fmt.Errorf("unknown vnode %d: the ring has vnodes 0-%d", v, count-1)
		}
		dup := false
		if v < MaxVnodes {
			if w := int(v / 64); w >= len(seen) {
				seen = append(seen, make([]uint64, w+1-len(seen))...)
			}
			dup = seen[v/64]&(1<<(v%64)) != 0
			seen[v/64] |= 1 << (v % 64)
		} else {
			if far == nil {
				far = map[uint64]bool{}
			}
			dup, far[v] = far[v], true
		}
		if dup {
			return fmt.Errorf("vnode %d given more than once", v)
		}
		out = append(out, uint32(v))
		return nil
	}
	for _, f := range fields {
		lo, hi, step, err := parseVnodeRange(f)
		if err != nil {
			return nil, err
		}
		if count > 0 && hi >= uint64(count) {
			return nil, fmt.Errorf("unknown vnode %d in %q: the ring has vnodes 0-%d", hi, f, count-1)
		}
		if (hi-lo)/step >= MaxVnodes {
			return nil, fmt.Errorf("vnode range %q is longer than the largest ring", f)
		}
		for v := lo; v <= hi; v += step {
			if err := add(v); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func parseVnodeRange(f string) (lo, hi, step uint64, err error) {
	bad := func(why string) (uint64, uint64, uint64, error) {
		return 0, 0, 0, fmt.Errorf("bad vnode %q: %s", f, why)
	}
	if strings.HasPrefix(f, "-") {
		return bad("vnodes are not negative")
	}
	step = 1
	body := f
	if a, b, ok := strings.Cut(f, "/"); ok {
		body = a
		if step, err = parseVnodeNumber(b); err != nil || step == 0 {
			return bad("the step after '/' must be a positive number")
		}
		if !strings.Contains(a, "-") {
			return bad("a step needs a range, as in 0-99/4")
		}
	}
	a, b, isRange := strings.Cut(body, "-")
	if lo, err = parseVnodeNumber(a); err != nil {
		return bad("want a number, a range A-B or A-B/STEP")
	}
	hi = lo
	if isRange {
		if hi, err = parseVnodeNumber(b); err != nil {
			return bad("want a number, a range A-B or A-B/STEP")
		}
		if hi < lo {
			return bad("the range ends before it starts")
		}
	}
	return lo, hi, step, nil
}

func parseVnodeNumber(s string) (uint64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("not a number")
	}
	return strconv.ParseUint(s, 10, 32)
}

// FormatVnodeList prints vnodes as a compact list ParseVnodeList reads back:
// runs become A-B, arithmetic progressions of 3 or more become A-B/STEP, so a
// million round-robin vnodes print as one range per pnode.
func FormatVnodeList(vnodes []uint32) string {
	vs := slices.Clone(vnodes)
	slices.Sort(vs)
	vs = slices.Compact(vs)
	var b strings.Builder
	for i := 0; i < len(vs); {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		j := i
		if i+1 < len(vs) {
			step := vs[i+1] - vs[i]
			j = i + 1
			for j+1 < len(vs) && vs[j+1]-vs[j] == step {
				j++
			}
			if step != 1 && j-i < 2 {
				j = i // two values with a gap read better as "a,b"
			}
			b.WriteString(strconv.FormatUint(uint64(vs[i]), 10))
			if j > i {
				b.WriteByte('-')
				b.WriteString(strconv.FormatUint(uint64(vs[j]), 10))
				if step != 1 {
					b.WriteByte('/')
					b.WriteString(strconv.FormatUint(uint64(step), 10))
				}
			}
		} else {
			b.WriteString(strconv.FormatUint(uint64(vs[i]), 10))
		}
		i = j + 1
	}
	return b.String()
}
