package ring

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/big"
	"math/bits"
	"strings"
)

// Algorithm is the hash node-fash applies to a key.
type Algorithm uint8

const (
	SHA256 Algorithm = iota + 1
	MD5
	SHA1
)

// ParseAlgorithm accepts the spellings node-fash's create accepts
// (sha256, sha-256, SHA256, SHA-256, ...); case does not matter.
func ParseAlgorithm(s string) (Algorithm, error) {
	switch strings.ReplaceAll(strings.ToLower(s), "-", "") {
	case "sha256":
		return SHA256, nil
	case "md5":
		return MD5, nil
	case "sha1":
		return SHA1, nil
	}
	return 0, fmt.Errorf("unknown hash algorithm %q: use sha256, sha1 or md5", s)
}

// String is the NAME node-fash writes in a serialized ring.
func (a Algorithm) String() string {
	switch a {
	case SHA256:
		return "sha256"
	case MD5:
		return "md5"
	case SHA1:
		return "sha1"
	}
	return fmt.Sprintf("algorithm(%d)", uint8(a))
}

// Bits is the digest size; node-fash's MAX is 2^Bits-1.
func (a Algorithm) Bits() int {
	switch a {
	case SHA256:
		return 256
	case MD5:
		return 128
	case SHA1:
		return 160
	}
	return 0
}

// fashMax is MAX as node-fash's ALGORITHMS table spells it.
func (a Algorithm) fashMax() string { return strings.Repeat("F", a.Bits()/4) }

// u256 is an unsigned integer of up to 256 bits, least significant word first.
// Digests are at most 256 bits, so fixed-width words avoid math/big's
// allocations on the lookup path.
type u256 [4]uint64

// digest hashes key and returns the digest as the big-endian integer
// node-fash builds from its hex form.
func (a Algorithm) digest(key []byte) u256 {
	var h u256
	switch a {
	case SHA256:
		d := sha256.Sum256(key)
		h[3] = binary.BigEndian.Uint64(d[0:])
		h[2] = binary.BigEndian.Uint64(d[8:])
		h[1] = binary.BigEndian.Uint64(d[16:])
		h[0] = binary.BigEndian.Uint64(d[24:])
	case MD5:
		d := md5.Sum(key)
		h[1] = binary.BigEndian.Uint64(d[0:])
		h[0] = binary.BigEndian.Uint64(d[8:])
	case SHA1:
		d := sha1.Sum(key)
		h[2] = uint64(binary.BigEndian.Uint32(d[0:]))
		h[1] = binary.BigEndian.Uint64(d[4:])
		h[0] = binary.BigEndian.Uint64(d[12:])
	}
	return h
}

func (x *u256) bitLen() int {
	for i := 3; i >= 0; i-- {
		if x[i] != 0 {
			return i*64 + bits.Len64(x[i])
		}
	}
	return 0
}

// word returns the 64 bits of x starting at bit k.
func (x *u256) word(k int) uint64 {
	i, s := k/64, uint(k%64)
	var lo, hi uint64
	if i < 4 {
		lo = x[i]
	}
	if i+1 < 4 {
		hi = x[i+1]
	}
	if s == 0 {
		return lo
	}
	return lo>>s | hi<<(64-s)
}

func (x *u256) big() *big.Int {
	b := make([]byte, 32)
	for i := 0; i < 4; i++ {
		binary.BigEndian.PutUint64(b[24-8*i:], x[i])
	}
	return new(big.Int).SetBytes(b)
}

func fromBig(b *big.Int) (u256, bool) {
	var x u256
	if b.Sign() < 0 || b.BitLen() > 256 {
		return x, false
	}
	buf := b.FillBytes(make([]byte, 32))
	for i := 0; i < 4; i++ {
		x[i] = binary.BigEndian.Uint64(buf[24-8*i:])
	}
	return x, true
}

// divisor holds VNODE_HASH_INTERVAL = floor(MAX / vnodes) and what is needed
// to divide a digest by it without math/big.
type divisor struct {
	interval u256
	shift    int    // bitLen(interval) - 64
	top      uint64 // interval >> shift; its top bit is set
}

// newDivisor computes node-fash's interval for a vnode count: bignum
// MAX.div(vnodes), which truncates.
func newDivisor(a Algorithm, vnodes uint32) divisor {
	max := new(big.Int).Lsh(big.NewInt(1), uint(a.Bits()))
	max.Sub(max, big.NewInt(1))
	iv, _ := fromBig(max.Div(max, big.NewInt(int64(vnodes))))
	d := divisor{interval: iv, shift: iv.bitLen() - 64}
	d.top = iv.word(d.shift)
	return d
}

// quotient returns floor(h / interval), which is node-fash's vnode.
//
// An estimate from the top 64 bits of the interval is exact or one too big
// (the interval has at least 64 significant bits and the quotient is tiny
// next to 2^63), so one multiply-and-compare settles it.
func (d *divisor) quotient(h *u256) uint64 {
	hi, lo := h.word(d.shift+64), h.word(d.shift)
	if hi >= d.top { // cannot happen for vnodes < 2^32; keep Div64 from panicking
		return ^uint64(0)
	}
	q, _ := bits.Div64(hi, lo, d.top)
	if q == 0 {
		return 0
	}
	// p = interval * q, 320 bits; if p > h the estimate was one too big.
	var p [5]uint64
	var carry uint64
	for i := 0; i < 4; i++ {
		ph, pl := bits.Mul64(d.interval[i], q)
		var c uint64
		p[i], c = bits.Add64(pl, carry, 0)
		carry = ph + c
	}
	p[4] = carry
	if p[4] != 0 {
		return q - 1
	}
	for i := 3; i >= 0; i-- {
		if p[i] != h[i] {
			if p[i] > h[i] {
				return q - 1
			}
			return q
		}
	}
	return q
}

// hex is the interval as bignum's toString(16) prints it: lower case,
// padded with one zero to whole bytes (node-fash files show "02a3a0fd...").
func (d *divisor) hex() string {
	s := d.interval.big().Text(16)
	if len(s)%2 == 1 {
		s = "0" + s
	}
	return s
}
