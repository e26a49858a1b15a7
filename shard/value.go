package shard

// Moray (Node.js) keeps an object's value as the text JSON.stringify makes
// of what JSON.parse made of the client's request, after electric-moray set
// value.vnode, and its etag is a CRC of that text. Clients compare etags and
// read _value rows directly, so a row written here must match Moray's byte
// for byte: the same property order, number spelling and string escapes as
// V8, not merely equivalent JSON. This file reproduces that round trip in one
// pass over the input, writing the output as it reads, without building a
// tree of Go values.

import (
	"cmp"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"strconv"
	"sync"
)

// ErrBadValue is wrapped by every error of MorayValue, ClientValue and
// ValueVnode: the input is not a JSON object that Moray would store.
var ErrBadValue = errors.New("bad moray value")

type valueError struct {
	off int
	msg string
}

func (e *valueError) Error() string {
	return fmt.Sprintf("moray value: %s at offset %d", e.msg, e.off)
}

func (e *valueError) Unwrap() error { return ErrBadValue }

// maxValueDepth is below the nesting at which Node 20's JSON.stringify runs
// out of stack (about 4170 levels with the default stack, less inside Moray's
// deeper call stack): Moray fails on such values, so refusing them here is
// the only answer that cannot disagree with a stored row. It also bounds the
// recursion below.
const maxValueDepth = 4000

// MorayValue returns the _value text for a value a client sent (raw JSON that
// must be an object): JSON.stringify(JSON.parse(raw)) after `v.vnode = *vnode`
// when vnode != nil. Invalid UTF-8 in raw is read as Node reads the wire, one
// U+FFFD per maximal ill-formed subsequence.
func MorayValue(raw []byte, vnode *int64) (string, error) {
	st := getValueState()
	defer putValueState(st)
	p := valueParser[[]byte]{in: raw, st: st}
	if vnode != nil {
		p.mode, p.vnode = topSetVnode, *vnode
	}
	if err := p.run(); err != nil {
		return "", err
	}
	return string(p.out), nil
}

// ClientValue is what a client reads back through electric-moray for a stored
// _value text: JSON.parse(text), delete .vnode, JSON.stringify.
func ClientValue(text string) ([]byte, error) {
	st := getValueState()
	defer putValueState(st)
	p := valueParser[string]{in: text, st: st, mode: topDropVnode}
	if err := p.run(); err != nil {
		return nil, err
	}
	return append([]byte(nil), p.out...), nil
}

// ValueVnode returns the top-level "vnode" property of a stored _value text
// as Moray's number index would put it in its column: parseInt(String(v), 10),
// which keeps the integer digits of the number's JavaScript spelling. It is
// nil when the property is absent, not a number (a string, null, an overflow
// that JSON.parse made Infinity) or outside int64.
func ValueVnode(text string) (*int64, error) {
	st := getValueState()
	defer putValueState(st)
	p := valueParser[string]{in: text, st: st, mode: topFindVnode}
	if err := p.run(); err != nil {
		return nil, err
	}
	if !p.found {
		return nil, nil
	}
	return parseIntPrefix(p.foundVal[:p.foundLen]), nil
}

// MorayEtag is Moray's etag of a _value text: npm crc@0.2.1's crc32, which
// feeds the table only the low byte of each UTF-16 code unit of the string
// (not its UTF-8 bytes), printed as 8 uppercase hex digits.
func MorayEtag(text string) string {
	// The low bytes are gathered in a buffer so that crc32.Update (which uses
	// the CPU's carry-less multiply) does the hashing. The buffer is pooled:
	// Update's dispatch makes a stack array escape.
	bp := etagBufs.Get().(*[512]byte)
	defer etagBufs.Put(bp)
	buf := bp[:]
	var crc uint32
	n := 0
	for i := 0; i < len(text); {
		if n > len(buf)-2 {
			crc = crc32.Update(crc, crc32.IEEETable, buf[:n])
			n = 0
		}
		if c := text[i]; c < 0x80 {
			j := i + 1
			for j < len(text) && j-i < len(buf)-n && text[j] < 0x80 {
				j++
			}
			n += copy(buf[n:], text[i:j])
			i = j
			continue
		}
		r, size, _ := decodeUTF8(text, i)
		i += size
		if r < 0x10000 {
			buf[n] = byte(r)
			n++
		} else {
			r -= 0x10000
			buf[n], buf[n+1] = byte(0xD800+r>>10), byte(0xDC00+r&0x3FF)
			n += 2
		}
	}
	crc = crc32.Update(crc, crc32.IEEETable, buf[:n])
	const hex = "0123456789ABCDEF"
	var out [8]byte
	for i := 7; i >= 0; i-- {
		out[i] = hex[crc&0xF]
		crc >>= 4
	}
	return string(out[:])
}

var etagBufs = sync.Pool{New: func() any { return new([512]byte) }}

type topMode uint8

const (
	topKeep topMode = iota
	topSetVnode
	topDropVnode
	topFindVnode
)

// member is one property of the object being read. Offsets are into the
// output buffer, where the property has already been written: reordering is
// then a matter of moving finished byte ranges, and keys compare as their
// output spelling, which is a one-to-one encoding of the UTF-16 key.
type member struct {
	// The quoted key is out[k0:k1] and the value out[k1+1:v1].
	k0, k1, v1 int
	sig        uint64 // the key's length and first bytes: most unequal keys differ here
	dup        int    // index within the object of the first member with this key, or -1
	slot       int    // position in the rewrite's entry list (first occurrences only)
	index      uint32 // the key as an array index, when isIdx
	isIdx      bool
}

// entry is a property of a rewritten object: the key of its first
// occurrence with the value of its last.
type entry struct {
	key, val int
	index    uint32
	isIdx    bool
}

// valueState holds the buffers of one conversion; it is pooled because every
// write through the router makes one.
type valueState struct {
	out     []byte
	members []member
	entries []entry
	scratch []byte
}

var valueStates = sync.Pool{New: func() any { return new(valueState) }}

func getValueState() *valueState {
	st := valueStates.Get().(*valueState)
	st.out, st.members = st.out[:0], st.members[:0]
	return st
}

func putValueState(st *valueState) {
	// An occasional huge value should not pin its buffers for ever.
	if cap(st.out) > 1<<20 || cap(st.scratch) > 1<<20 || cap(st.members) > 1<<14 {
		return
	}
	valueStates.Put(st)
}

// valueParser reads JSON from in and writes what JSON.stringify would make of
// it to out. It is generic so that []byte requests and string rows are
// both read in place.
type valueParser[T string | []byte] struct {
	in  T
	pos int
	// out is the output being written. It lives here, on the caller's stack,
	// rather than in st, because every append stores the slice back and a
	// store into a heap object costs a GC write barrier.
	out     []byte
	members []member // likewise; a stack, each open object's members above its parent's
	st      *valueState
	mode    topMode
	vnode   int64

	// topFindVnode's result: the output spelling of the last top-level vnode.
	found    bool
	foundVal [32]byte
	foundLen int
}

func (p *valueParser[T]) fail(msg string) error {
	return &valueError{off: p.pos, msg: msg}
}

func (p *valueParser[T]) run() error {
	p.out, p.members = p.st.out[:0], p.st.members[:0]
	defer func() { p.st.out, p.st.members = p.out, p.members }()
	p.skipSpace()
	if p.pos >= len(p.in) || p.in[p.pos] != '{' {
		// Moray's put takes only objects; other JSON is refused like invalid JSON.
		return p.fail("not a JSON object")
	}
	if err := p.object(0); err != nil {
		return err
	}
	p.skipSpace()
	if p.pos != len(p.in) {
		return p.fail("data after the JSON object")
	}
	return nil
}

// skipSpace skips the four characters JSON.parse takes as white space; it
// rejects others JavaScript knows (a BOM, U+00A0), as V8 does.
func (p *valueParser[T]) skipSpace() {
	for p.pos < len(p.in) {
		switch p.in[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *valueParser[T]) value(depth int) error {
	if p.pos >= len(p.in) {
		return p.fail("unexpected end of JSON")
	}
	switch c := p.in[p.pos]; {
	case c == '{':
		return p.object(depth)
	case c == '[':
		return p.array(depth)
	case c == '"':
		return p.str()
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	}
	return p.fail("unexpected character")
}

func (p *valueParser[T]) literal(word string) error {
	if len(p.in)-p.pos < len(word) || string(p.in[p.pos:p.pos+len(word)]) != word {
		return p.fail("invalid literal")
	}
	p.out = append(p.out, word...)
	p.pos += len(word)
	return nil
}

func (p *valueParser[T]) array(depth int) error {
	if depth >= maxValueDepth {
		return p.fail("nested too deeply")
	}
	p.out = append(p.out, '[')
	p.pos++
	p.skipSpace()
	if p.pos < len(p.in) && p.in[p.pos] == ']' {
		p.pos++
		p.out = append(p.out, ']')
		return nil
	}
	for {
		p.skipSpace()
		if err := p.value(depth + 1); err != nil {
			return err
		}
		p.skipSpace()
		if p.pos >= len(p.in) {
			return p.fail("unterminated array")
		}
		switch p.in[p.pos] {
		case ',':
			p.out = append(p.out, ',')
			p.pos++
		case ']':
			p.out = append(p.out, ']')
			p.pos++
			return nil
		default:
			return p.fail("expected , or ] in array")
		}
	}
}

// objectOrder notices, as members arrive, whether an object's output can
// stay in arrival order: JavaScript lists array-index keys first, ascending,
// and keeps a repeated key where it first appeared.
type objectOrder struct {
	lastIdx  uint32
	anyIdx   bool
	anyOther bool
	rewrite  bool
	seen     map[string]int // first occurrence of each key, once the object is large
}

// linearDupLimit is the member count up to which a repeated key is looked
// for by scanning; Manta's objects stay below it, so only unusually wide
// objects pay for a map.
const linearDupLimit = 32

func (p *valueParser[T]) object(depth int) error {
	if depth >= maxValueDepth {
		return p.fail("nested too deeply")
	}
	start := len(p.out)
	p.out = append(p.out, '{')
	p.pos++
	base := len(p.members)
	var ord objectOrder
	p.skipSpace()
	if p.pos < len(p.in) && p.in[p.pos] == '}' {
		p.pos++
	} else {
		for {
			p.skipSpace()
			if p.pos >= len(p.in) || p.in[p.pos] != '"' {
				return p.fail("expected a property name")
			}
			k0 := len(p.out)
			if err := p.str(); err != nil {
				return err
			}
			k1 := len(p.out)
			p.skipSpace()
			if p.pos >= len(p.in) || p.in[p.pos] != ':' {
				return p.fail("expected : after a property name")
			}
			p.pos++
			p.out = append(p.out, ':')
			p.skipSpace()
			if err := p.value(depth + 1); err != nil {
				return err
			}
			p.addMember(base, k0, k1, &ord)
			p.skipSpace()
			if p.pos >= len(p.in) {
				return p.fail("unterminated object")
			}
			if c := p.in[p.pos]; c == ',' {
				p.out = append(p.out, ',')
				p.pos++
				continue
			} else if c == '}' {
				p.pos++
				break
			}
			return p.fail("expected , or } in object")
		}
	}
	drop := false
	if depth == 0 {
		switch p.mode {
		case topSetVnode:
			// electric-moray's assignment comes after the parse, so it is one
			// more member: an existing vnode keeps its place, as a repeated
			// key does.
			if len(p.members) > base {
				p.out = append(p.out, ',')
			}
			k0 := len(p.out)
			p.out = append(p.out, `"vnode"`...)
			k1 := len(p.out)
			p.out = append(p.out, ':')
			p.out = appendJSNumber(p.out, float64(p.vnode))
			p.addMember(base, k0, k1, &ord)
		case topDropVnode:
			for _, m := range p.members[base:] {
				if string(p.out[m.k0:m.k1]) == `"vnode"` {
					drop, ord.rewrite = true, true
					break
				}
			}
		case topFindVnode:
			for _, m := range p.members[base:] {
				if string(p.out[m.k0:m.k1]) == `"vnode"` {
					v := p.out[m.k1+1 : m.v1]
					p.found = true
					p.foundLen = copy(p.foundVal[:], v)
					if len(v) > len(p.foundVal) || !isNumberStart(v[0]) {
						p.foundLen = 0 // not a number; parseIntPrefix gives nil
					}
				}
			}
		}
	}
	if ord.rewrite {
		p.rewrite(start, base, drop)
	}
	p.out = append(p.out, '}')
	p.members = p.members[:base]
	return nil
}

// addMember records the member just written to the output (its value ends
// at the end of the buffer) and whether it breaks arrival order.
func (p *valueParser[T]) addMember(base, k0, k1 int, ord *objectOrder) {
	key := p.out[k0:k1]
	m := member{k0: k0, k1: k1, v1: len(p.out), dup: -1, sig: keySig(key)}
	m.index, m.isIdx = arrayIndex(key)
	n := len(p.members) - base
	if ord.seen == nil && n < linearDupLimit {
		for i, o := range p.members[base:] {
			if o.sig == m.sig && string(p.out[o.k0:o.k1]) == string(key) {
				m.dup = i
				break
			}
		}
	} else {
		if ord.seen == nil {
			ord.seen = make(map[string]int, 2*n)
			for i, o := range p.members[base:] {
				if o.dup < 0 {
					ord.seen[string(p.out[o.k0:o.k1])] = i
				}
			}
		}
		if i, ok := ord.seen[string(key)]; ok {
			m.dup = i
		} else {
			ord.seen[string(key)] = n
		}
	}
	switch {
	case m.dup >= 0:
		ord.rewrite = true
	case m.isIdx:
		if ord.anyOther || ord.anyIdx && m.index < ord.lastIdx {
			ord.rewrite = true
		}
		ord.anyIdx, ord.lastIdx = true, m.index
	default:
		ord.anyOther = true
	}
	p.members = append(p.members, m)
}

// keySig packs a quoted key's length with up to its first 7 bytes after the
// quote.
func keySig(quoted []byte) uint64 {
	sig := uint64(len(quoted)) << 56
	k := quoted[1:min(len(quoted), 8)]
	for i, c := range k {
		sig |= uint64(c) << (8 * i)
	}
	return sig
}

// rewrite puts the members of the object opened at out[start] into
// JavaScript's order, each key once with its last value, dropping the vnode
// key if drop. The object's members are all written, so their bytes are
// copied aside and laid down again.
func (p *valueParser[T]) rewrite(start, base int, drop bool) {
	st := p.st
	ms := p.members[base:]
	entries := st.entries[:0]
	nIdx := 0
	for i := range ms {
		if d := ms[i].dup; d >= 0 {
			if s := ms[d].slot; s >= 0 {
				entries[s].val = i
			}
			continue
		}
		if drop && string(p.out[ms[i].k0:ms[i].k1]) == `"vnode"` {
			ms[i].slot = -1
			continue
		}
		ms[i].slot = len(entries)
		entries = append(entries, entry{key: i, val: i, index: ms[i].index, isIdx: ms[i].isIdx})
		if ms[i].isIdx {
			nIdx++
		}
	}
	if nIdx > 0 {
		// Array-index keys first, ascending (they are distinct now); the
		// others keep their order. The entries are partitioned into the
		// spare tail of the same slice.
		n := len(entries)
		for _, e := range entries[:n] {
			if e.isIdx {
				entries = append(entries, e)
			}
		}
		for _, e := range entries[:n] {
			if !e.isIdx {
				entries = append(entries, e)
			}
		}
		slices.SortFunc(entries[n:n+nIdx], func(a, b entry) int { return cmp.Compare(a.index, b.index) })
		st.entries = entries[:0]
		entries = entries[n:]
	} else {
		st.entries = entries[:0]
	}
	// Members already where they belong, with their own values, stay put:
	// commonly all but a vnode or a repeated key near the end.
	keep := 0
	for keep < len(entries) && entries[keep].key == keep && entries[keep].val == keep {
		keep++
	}
	off := start + 1
	if keep > 0 {
		off = ms[keep-1].v1
	}
	// The remaining entries only refer to members from keep on, which all
	// lie after off.
	st.scratch = append(st.scratch[:0], p.out[off:]...)
	out := p.out[:off]
	for i, e := range entries[keep:] {
		if keep+i > 0 {
			out = append(out, ',')
		}
		k, v := ms[e.key], ms[e.val]
		out = append(out, st.scratch[k.k0-off:k.k1-off]...)
		out = append(out, st.scratch[v.k1-off:v.v1-off]...)
	}
	p.out = out
}

// arrayIndex reports whether a quoted key (as written to the output) is a
// canonical array index, "0" to "4294967294", which V8 keeps apart from other
// keys and lists first.
func arrayIndex(quoted []byte) (uint32, bool) {
	k := quoted[1 : len(quoted)-1]
	if len(k) == 0 || len(k) > 10 || k[0] < '0' || k[0] > '9' || k[0] == '0' && len(k) > 1 {
		return 0, false
	}
	var v uint64
	for _, c := range k {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	if v > 4294967294 {
		return 0, false
	}
	return uint32(v), true
}

func (p *valueParser[T]) number() error {
	start := p.pos
	in := p.in
	if in[p.pos] == '-' {
		p.pos++
	}
	if p.pos >= len(in) {
		return p.fail("no number after minus sign")
	}
	switch c := in[p.pos]; {
	case c == '0':
		p.pos++
	case c >= '1' && c <= '9':
		for p.pos < len(in) && in[p.pos] >= '0' && in[p.pos] <= '9' {
			p.pos++
		}
	default:
		return p.fail("no number after minus sign")
	}
	intEnd := p.pos
	if p.pos < len(in) && in[p.pos] == '.' {
		p.pos++
		d := p.pos
		for p.pos < len(in) && in[p.pos] >= '0' && in[p.pos] <= '9' {
			p.pos++
		}
		if p.pos == d {
			return p.fail("unterminated fractional number")
		}
	}
	if p.pos < len(in) && (in[p.pos] == 'e' || in[p.pos] == 'E') {
		p.pos++
		if p.pos < len(in) && (in[p.pos] == '+' || in[p.pos] == '-') {
			p.pos++
		}
		d := p.pos
		for p.pos < len(in) && in[p.pos] >= '0' && in[p.pos] <= '9' {
			p.pos++
		}
		if p.pos == d {
			return p.fail("exponent part is missing a number")
		}
	}
	tok := in[start:p.pos]
	// An integer of at most 15 digits is exact in a double and JavaScript
	// prints it back unchanged, so the common case skips the float round trip.
	digits := intEnd - start
	if in[start] == '-' {
		digits--
	}
	if p.pos == intEnd && digits <= 15 {
		if string(tok) == "-0" {
			p.out = append(p.out, '0')
		} else {
			p.out = append(p.out, tok...)
		}
		return nil
	}
	// The grammar was checked above, so the only error left is ErrRange, and
	// then f is the ±Inf (or ±0) JSON.parse gives too.
	f, _ := strconv.ParseFloat(string(tok), 64)
	p.out = appendJSNumber(p.out, f)
	return nil
}

// appendJSNumber appends JavaScript's Number::toString of f as
// JSON.stringify writes it: the shortest digits that round-trip (which
// strconv finds too), laid out by ECMAScript's rules, and null for the
// non-finite values JSON cannot hold.
func appendJSNumber(out []byte, f float64) []byte {
	if f != f || f > 1.7976931348623157e308 || f < -1.7976931348623157e308 {
		return append(out, "null"...)
	}
	if f == 0 {
		return append(out, '0') // and -0, which JavaScript prints as 0
	}
	var buf [32]byte
	b := strconv.AppendFloat(buf[:0], f, 'e', -1, 64) // -d.ddde±dd
	if b[0] == '-' {
		out = append(out, '-')
		b = b[1:]
	}
	var dbuf [24]byte
	digits := append(dbuf[:0], b[0])
	i := 1
	if b[1] == '.' {
		for i = 2; b[i] != 'e'; i++ {
			digits = append(digits, b[i])
		}
	}
	exp := 0
	neg := b[i+1] == '-'
	for _, c := range b[i+2:] {
		exp = exp*10 + int(c-'0')
	}
	if neg {
		exp = -exp
	}
	k, n := len(digits), exp+1 // the value is 0.digits × 10^n
	switch {
	case k <= n && n <= 21:
		out = append(out, digits...)
		for ; k < n; k++ {
			out = append(out, '0')
		}
	case 0 < n && n <= 21:
		out = append(out, digits[:n]...)
		out = append(out, '.')
		out = append(out, digits[n:]...)
	case -6 < n && n <= 0:
		out = append(out, '0', '.')
		for ; n < 0; n++ {
			out = append(out, '0')
		}
		out = append(out, digits...)
	default:
		out = append(out, digits[0])
		if k > 1 {
			out = append(out, '.')
			out = append(out, digits[1:]...)
		}
		out = append(out, 'e')
		if n-1 < 0 {
			out = append(out, '-')
		} else {
			out = append(out, '+')
		}
		out = strconv.AppendInt(out, int64(abs(n-1)), 10)
	}
	return out
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

func isNumberStart(c byte) bool { return c == '-' || c >= '0' && c <= '9' }

// parseIntPrefix is parseInt(s, 10) for the JavaScript spelling of a finite
// number: the sign and the digits before any '.' or 'e'. node-postgres sends
// the result as String(n), whose digits are these same digits, so they are
// what the column holds.
func parseIntPrefix(s []byte) *int64 {
	if len(s) == 0 {
		return nil
	}
	neg := s[0] == '-'
	if neg {
		s = s[1:]
	}
	var v uint64
	n := 0
	for ; n < len(s) && s[n] >= '0' && s[n] <= '9'; n++ {
		if v > (1<<63)/10 {
			return nil
		}
		v = v*10 + uint64(s[n]-'0')
		if v > 1<<63 || !neg && v > 1<<63-1 {
			return nil
		}
	}
	if n == 0 {
		return nil
	}
	r := int64(v) // 1<<63 wraps to MinInt64, which is right when neg
	if neg {
		r = -r
	}
	return &r
}

// str reads a JSON string and writes it as JSON.stringify would: escapes for
// '"', '\\', and code units below 0x20 (the short forms where JSON has them),
// and for lone surrogates (well-formed JSON.stringify); everything else,
// '/' and U+2028 included, is written as UTF-8. A lone surrogate can only
// come from a \u escape (UTF-8 cannot carry one), and it pairs only with an
// escape right after it, so it is settled by looking ahead one escape rather
// than by holding UTF-16 text.
func (p *valueParser[T]) str() error {
	in := p.in
	out := p.out
	out = append(out, '"')
	p.pos++
	for {
		run := p.pos
		for p.pos+8 <= len(in) && plainWord(load64(in, p.pos)) {
			p.pos += 8
		}
		for p.pos < len(in) && plainASCII[in[p.pos]] {
			p.pos++
		}
		out = append(out, in[run:p.pos]...)
		if p.pos >= len(in) {
			p.out = out
			return p.fail("unterminated string")
		}
		c := in[p.pos]
		switch {
		case c == '"':
			p.pos++
			p.out = append(out, '"')
			return nil
		case c < 0x20:
			p.out = out
			return p.fail("bad control character in string literal")
		case c >= 0x80:
			if _, size, ok := decodeUTF8(in, p.pos); ok {
				out = append(out, in[p.pos:p.pos+size]...)
				p.pos += size
			} else {
				out = append(out, "\uFFFD"...)
				p.pos += size
			}
			continue
		}
		// A backslash.
		if p.pos+1 >= len(in) {
			p.out = out
			return p.fail("unterminated string")
		}
		e := in[p.pos+1]
		p.pos += 2
		switch e {
		case '"':
			out = append(out, '\\', '"')
		case '\\':
			out = append(out, '\\', '\\')
		case '/':
			out = append(out, '/')
		case 'b':
			out = append(out, '\\', 'b')
		case 'f':
			out = append(out, '\\', 'f')
		case 'n':
			out = append(out, '\\', 'n')
		case 'r':
			out = append(out, '\\', 'r')
		case 't':
			out = append(out, '\\', 't')
		case 'u':
			u, ok := p.hex4(p.pos)
			if !ok {
				p.out = out
				return p.fail("bad Unicode escape")
			}
			p.pos += 4
			if u >= 0xD800 && u < 0xDC00 && p.pos+6 <= len(in) && in[p.pos] == '\\' && in[p.pos+1] == 'u' {
				if lo, ok := p.hex4(p.pos + 2); ok && lo >= 0xDC00 && lo < 0xE000 {
					p.pos += 6
					out = appendRune(out, 0x10000+(u-0xD800)<<10+(lo-0xDC00))
					continue
				}
			}
			out = appendCodeUnit(out, u)
		default:
			p.pos--
			p.out = out
			return p.fail("bad escaped character")
		}
	}
}

// plainASCII marks the bytes a string copies through unchanged: printable
// ASCII other than '"' and '\\'.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// load64 reads 8 bytes little-endian; the compiler makes it one load.
func load64[T string | []byte](s T, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// plainWord reports whether all 8 bytes of w are plainASCII, so that the
// common run of ordinary text is skipped a word at a time. Each term flags a
// byte >= 0x80, < 0x20, equal to '"' or equal to '\\' (the usual "has a zero
// byte" trick, exact as a yes/no answer).
func plainWord(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	q := w ^ (ones * '"')
	b := w ^ (ones * '\\')
	return (w|(w-ones*0x20)|(q-ones)&^q|(b-ones)&^b)&highs == 0
}

func (p *valueParser[T]) hex4(i int) (rune, bool) {
	if i+4 > len(p.in) {
		return 0, false
	}
	var u rune
	for k := i; k < i+4; k++ {
		switch c := p.in[k]; {
		case c >= '0' && c <= '9':
			u = u<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			u = u<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			u = u<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return u, true
}

// appendCodeUnit writes one UTF-16 code unit from a \u escape as
// JSON.stringify writes it.
func appendCodeUnit(out []byte, u rune) []byte {
	const hex = "0123456789abcdef"
	switch {
	case u == '"':
		return append(out, '\\', '"')
	case u == '\\':
		return append(out, '\\', '\\')
	case u == '\b':
		return append(out, '\\', 'b')
	case u == '\f':
		return append(out, '\\', 'f')
	case u == '\n':
		return append(out, '\\', 'n')
	case u == '\r':
		return append(out, '\\', 'r')
	case u == '\t':
		return append(out, '\\', 't')
	case u < 0x20, u >= 0xD800 && u < 0xE000:
		return append(out, '\\', 'u', hex[u>>12], hex[u>>8&0xF], hex[u>>4&0xF], hex[u&0xF])
	}
	return appendRune(out, u)
}

func appendRune(out []byte, r rune) []byte {
	switch {
	case r < 0x80:
		return append(out, byte(r))
	case r < 0x800:
		return append(out, 0xC0|byte(r>>6), 0x80|byte(r)&0x3F)
	case r < 0x10000:
		return append(out, 0xE0|byte(r>>12), 0x80|byte(r>>6)&0x3F, 0x80|byte(r)&0x3F)
	}
	return append(out, 0xF0|byte(r>>18), 0x80|byte(r>>12)&0x3F, 0x80|byte(r>>6)&0x3F, 0x80|byte(r)&0x3F)
}

// decodeUTF8 decodes the sequence at s[i] (s[i] >= 0x80) the way Node turns
// bytes into a string (the WHATWG decoder): a well-formed sequence gives its
// code point, and each maximal prefix of one that is not well formed gives
// U+FFFD and ok false. (utf8.DecodeRune would give one U+FFFD per byte.)
func decodeUTF8[T string | []byte](s T, i int) (r rune, size int, ok bool) {
	c := s[i]
	var need int
	lo, hi := byte(0x80), byte(0xBF)
	switch {
	case c >= 0xC2 && c <= 0xDF:
		need, r = 1, rune(c&0x1F)
	case c >= 0xE0 && c <= 0xEF:
		need, r = 2, rune(c&0x0F)
		if c == 0xE0 {
			lo = 0xA0
		} else if c == 0xED {
			hi = 0x9F
		}
	case c >= 0xF0 && c <= 0xF4:
		need, r = 3, rune(c&0x07)
		if c == 0xF0 {
			lo = 0x90
		} else if c == 0xF4 {
			hi = 0x8F
		}
	default:
		return 0xFFFD, 1, false
	}
	for k := 1; k <= need; k++ {
		if i+k >= len(s) || s[i+k] < lo || s[i+k] > hi {
			return 0xFFFD, k, false
		}
		r = r<<6 | rune(s[i+k]&0x3F)
		lo, hi = 0x80, 0xBF
	}
	return r, need + 1, true
}
