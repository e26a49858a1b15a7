package shard

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func vn(v int64) *int64 { return &v }

func fmtVnode(p *int64) string {
	if p == nil {
		return "nil"
	}
	return strconv.FormatInt(*p, 10)
}

// valueCases' expectations were printed by Node 20 (testdata/value.js), not
// worked out by hand.
var valueCases = []struct {
	name     string
	in       string
	vnode    *int64
	stored   string
	etag     string
	client   string
	vnodeCol *int64
}{
	{"etag vector: not the UTF-8 CRC", `{"s":"café ☃ 😀"}`, nil,
		`{"s":"café ☃ 😀"}`,
		"3D13E1FC", `{"s":"café ☃ 😀"}`, nil},
	{"vnode appended last", `{"owner":"u","key":"/u/stor/a"}`, vn(7),
		`{"owner":"u","key":"/u/stor/a","vnode":7}`,
		"BE391892", `{"owner":"u","key":"/u/stor/a"}`, vn(7)},
	{"vnode already first keeps its place", `{"vnode":1,"a":2}`, vn(7),
		`{"vnode":7,"a":2}`,
		"B16DF7B5", `{"a":2}`, vn(7)},
	{"vnode repeated", `{"a":0,"vnode":1,"b":2,"vnode":3}`, vn(12),
		`{"a":0,"vnode":12,"b":2}`,
		"FDBF41B4", `{"a":0,"b":2}`, vn(12)},
	{"no vnode", `{"b":1,"a":2}`, nil,
		`{"b":1,"a":2}`,
		"1103D252", `{"b":1,"a":2}`, nil},
	{"empty object", `{}`, vn(0),
		`{"vnode":0}`,
		"D6880A9C", `{}`, vn(0)},
	{"array indices first, ascending", `{"b":1,"a":2,"1":3,"0":4,"01":5,"-1":6,"4294967294":7,"4294967295":8,"1.0":9,"":10," 1":11}`, vn(7),
		`{"0":4,"1":3,"4294967294":7,"b":1,"a":2,"01":5,"-1":6,"4294967295":8,"1.0":9,"":10," 1":11,"vnode":7}`,
		"C37314CA", `{"0":4,"1":3,"4294967294":7,"b":1,"a":2,"01":5,"-1":6,"4294967295":8,"1.0":9,"":10," 1":11}`, vn(7)},
	{"index keys already in order", `{"0":1,"5":2,"x":3}`, vn(1),
		`{"0":1,"5":2,"x":3,"vnode":1}`,
		"41E8DA4B", `{"0":1,"5":2,"x":3}`, vn(1)},
	{"index key after another kind", `{"x":1,"2":2}`, vn(1),
		`{"2":2,"x":1,"vnode":1}`,
		"FB9642E8", `{"2":2,"x":1}`, vn(1)},
	{"escaped digits are an index", `{"a":1,"\u0031":2,"\u0030":3}`, vn(1),
		`{"0":3,"1":2,"a":1,"vnode":1}`,
		"54010440", `{"0":3,"1":2,"a":1}`, vn(1)},
	{"duplicate: last value, first place", `{"a":1,"b":2,"a":3}`, vn(1),
		`{"a":3,"b":2,"vnode":1}`,
		"842C195E", `{"a":3,"b":2}`, vn(1)},
	{"duplicate spelled differently", `{"é":1,"z":2,"\u00e9":3,"\u00E9":4}`, vn(1),
		`{"é":4,"z":2,"vnode":1}`,
		"F9A8D427", `{"é":4,"z":2}`, vn(1)},
	{"duplicate index key", `{"1":"x","0":"y","1":"z"}`, vn(1),
		`{"0":"y","1":"z","vnode":1}`,
		"C23F3E00", `{"0":"y","1":"z"}`, vn(1)},
	{"nested reorder", `{"a":{"2":1,"1":2,"x":3,"x":{"y":1,"9":0}},"b":[{"1":1,"0":0}]}`, vn(1),
		`{"a":{"1":2,"2":1,"x":{"9":0,"y":1}},"b":[{"0":0,"1":1}],"vnode":1}`,
		"2EB38C55", `{"a":{"1":2,"2":1,"x":{"9":0,"y":1}},"b":[{"0":0,"1":1}]}`, vn(1)},
	{"__proto__ is an ordinary key", `{"__proto__":1,"constructor":2,"toString":3}`, vn(1),
		`{"__proto__":1,"constructor":2,"toString":3,"vnode":1}`,
		"3907BF0F", `{"__proto__":1,"constructor":2,"toString":3}`, vn(1)},
	{"white space dropped", " \t\r\n{ \"a\" :\n[ 1 , 2 ] ,\t\"b\" : { } }\r\n", vn(1),
		`{"a":[1,2],"b":{},"vnode":1}`,
		"5B66C5AB", `{"a":[1,2],"b":{}}`, vn(1)},
	{"literals and empties", `{"t":true,"f":false,"n":null,"a":[],"o":{},"aa":[[]],"ao":[{}]}`, vn(1),
		`{"t":true,"f":false,"n":null,"a":[],"o":{},"aa":[[]],"ao":[{}],"vnode":1}`,
		"C0267C66", `{"t":true,"f":false,"n":null,"a":[],"o":{},"aa":[[]],"ao":[{}]}`, vn(1)},
	{"integers", `{"n":[0,-0,1,-1,123456789012345,1234567890123456,9007199254740993,12345678901234567890,999999999999999999999,1000000000000000000000,100000000000000000000]}`, vn(1),
		`{"n":[0,0,1,-1,123456789012345,1234567890123456,9007199254740992,12345678901234567000,1e+21,1e+21,100000000000000000000],"vnode":1}`,
		"A593321C", `{"n":[0,0,1,-1,123456789012345,1234567890123456,9007199254740992,12345678901234567000,1e+21,1e+21,100000000000000000000]}`, vn(1)},
	{"fractions and exponents", `{"n":[1.0,1E5,1e+2,1E-2,0e0,-0e-0,-0.0,0.1,0.5e1,123.456,1.5e300,4.35,0.000001,0.0000001,1.5e-7,-1.5e-7,100e-9,1e21,1e20,123456789012345678901234]}`, vn(1),
		`{"n":[1,100000,100,0.01,0,0,0,0.1,5,123.456,1.5e+300,4.35,0.000001,1e-7,1.5e-7,-1.5e-7,1e-7,1e+21,100000000000000000000,1.2345678901234569e+23],"vnode":1}`,
		"241E4C5C", `{"n":[1,100000,100,0.01,0,0,0,0.1,5,123.456,1.5e+300,4.35,0.000001,1e-7,1.5e-7,-1.5e-7,1e-7,1e+21,100000000000000000000,1.2345678901234569e+23]}`, vn(1)},
	{"range edges", `{"n":[1e400,-1e400,1e-400,-1e-400,5e-324,2.4703282292062328e-324,2.4703282292062327e-324,1.7976931348623157e308,1.7976931348623158e308,1.7976931348623159e308]}`, vn(1),
		`{"n":[null,null,0,0,5e-324,5e-324,0,1.7976931348623157e+308,1.7976931348623157e+308,null],"vnode":1}`,
		"7671636D", `{"n":[null,null,0,0,5e-324,5e-324,0,1.7976931348623157e+308,1.7976931348623157e+308,null]}`, vn(1)},
	{"long mantissa", `{"n":0.1000000000000000055511151231257827021181583404541015625000000001}`, vn(1),
		`{"n":0.1,"vnode":1}`,
		"C106368B", `{"n":0.1}`, vn(1)},
	{"escapes written back", `{"s":"\"\\\/\b\f\n\r\t\u0000\u0001\u001f\u0020\u007f\u0080"}`, vn(1),
		"{\"s\":\"\\\"\\\\/\\b\\f\\n\\r\\t\\u0000\\u0001\\u001f \x7f\u0080\",\"vnode\":1}",
		"738D7DF9", "{\"s\":\"\\\"\\\\/\\b\\f\\n\\r\\t\\u0000\\u0001\\u001f \x7f\u0080\"}", vn(1)},
	{"no html or line-separator escapes", "{\"s\":\"</script><&>\\u2028\\u2029\u2028\u2029\"}", vn(1),
		"{\"s\":\"</script><&>\u2028\u2029\u2028\u2029\",\"vnode\":1}",
		"B6B2F03B", "{\"s\":\"</script><&>\u2028\u2029\u2028\u2029\"}", vn(1)},
	{"escaped pairs join", `{"s":"\ud83d\ude00\uD83D\uDE00\ud800\udc00\udbff\udfff"}`, vn(1),
		"{\"s\":\"😀😀𐀀\U0010ffff\",\"vnode\":1}",
		"D3243157", "{\"s\":\"😀😀𐀀\U0010ffff\"}", vn(1)},
	{"lone surrogates", `{"s":"\ud800x\udc00\ud800\ud800\udc00\udbff","\udfff":1}`, vn(1),
		`{"s":"\ud800x\udc00\ud800𐀀\udbff","\udfff":1,"vnode":1}`,
		"33D22809", `{"s":"\ud800x\udc00\ud800𐀀\udbff","\udfff":1}`, vn(1)},
	{"lone high before a raw char", `{"s":"\ud83d😀\ud83d\n"}`, vn(1),
		`{"s":"\ud83d😀\ud83d\n","vnode":1}`,
		"6F75BA44", `{"s":"\ud83d😀\ud83d\n"}`, vn(1)},
	{"BMP escapes", `{"s":"\u00e9\u00E9\u2603\uFFFD\uFEFF\uffff\u0041"}`, vn(1),
		"{\"s\":\"éé☃�\ufeff\uffffA\",\"vnode\":1}",
		"9AE2E3CE", "{\"s\":\"éé☃�\ufeff\uffffA\"}", vn(1)},
	{"raw non-ASCII kept", "{\"s\":\"é☃😀\ufeff\x7f\"}", vn(1),
		"{\"s\":\"é☃😀\ufeff\x7f\",\"vnode\":1}",
		"86718E73", "{\"s\":\"é☃😀\ufeff\x7f\"}", vn(1)},
	{"ill-formed UTF-8 as Node decodes it", "{\"s\":\"\xe2\x82A|\xe0\x80\x80|\xed\xa0\x80|\xf0\x90\x80|\xf4\x90\x80\x80|\xc0\xaf|\x80\x80|\xff|\xf0\x9f\x98\"}", vn(1),
		"{\"s\":\"�A|���|���|�|����|��|��|�|�\",\"vnode\":1}",
		"BF929EDF", "{\"s\":\"�A|���|���|�|����|��|��|�|�\"}", vn(1)},
	{"ill-formed UTF-8 in a key", "{\"k\xff\":1,\"k�\":2}", vn(1),
		"{\"k�\":2,\"vnode\":1}",
		"62DBA906", "{\"k�\":2}", vn(1)},
	{"large vnode", `{"a":1}`, vn(9007199254740993),
		`{"a":1,"vnode":9007199254740992}`,
		"60D68752", `{"a":1}`, vn(9007199254740992)},
	{"largest vnode", `{"a":1}`, vn(9223372036854775807),
		`{"a":1,"vnode":9223372036854776000}`,
		"3AED1C36", `{"a":1}`, nil /* node: 9223372036854776000 */},
	{"negative vnode", `{"a":1}`, vn(-5),
		`{"a":1,"vnode":-5}`,
		"A7EE8661", `{"a":1}`, vn(-5)},
	{"vnode as a client string is replaced", `{"vnode":"x","a":1}`, vn(3),
		`{"vnode":3,"a":1}`,
		"1E0AAA8C", `{"a":1}`, vn(3)},
	{"vnode left as the client sent it", `{"vnode":"12"}`, nil,
		`{"vnode":"12"}`,
		"77CF22F0", `{}`, nil},
	{"vnode a fraction", `{"vnode":12.9}`, nil,
		`{"vnode":12.9}`,
		"FE30F1C2", `{}`, vn(12)},
	{"vnode in exponent form", `{"vnode":1.5e-7}`, nil,
		`{"vnode":1.5e-7}`,
		"425FCCE5", `{}`, vn(1)},
	{"vnode huge", `{"vnode":1e21}`, nil,
		`{"vnode":1e+21}`,
		"64567D60", `{}`, vn(1)},
	{"vnode beyond int64", `{"vnode":1e20}`, nil,
		`{"vnode":100000000000000000000}`,
		"4C71DD1E", `{}`, nil /* node: 100000000000000000000 */},
	{"vnode Infinity", `{"vnode":1e400}`, nil,
		`{"vnode":null}`,
		"F66239E3", `{}`, nil},
	{"vnode negative zero", `{"vnode":-0}`, nil,
		`{"vnode":0}`,
		"D6880A9C", `{}`, vn(0)},
	{"Manta object", `{"dirname":"/u/stor","key":"/u/stor/f","headers":{},"mtime":1700000000000,"name":"f","creator":"u","owner":"u","roles":[],"type":"object","contentLength":0,"contentMD5":"1B2M2Y8AsgTpgAmY7PhCfg==","contentType":"text/plain","etag":"e","objectId":"o","sharks":[{"datacenter":"dc","manta_storage_id":"1.stor"}]}`, vn(42),
		`{"dirname":"/u/stor","key":"/u/stor/f","headers":{},"mtime":1700000000000,"name":"f","creator":"u","owner":"u","roles":[],"type":"object","contentLength":0,"contentMD5":"1B2M2Y8AsgTpgAmY7PhCfg==","contentType":"text/plain","etag":"e","objectId":"o","sharks":[{"datacenter":"dc","manta_storage_id":"1.stor"}],"vnode":42}`,
		"D7A71CA7", `{"dirname":"/u/stor","key":"/u/stor/f","headers":{},"mtime":1700000000000,"name":"f","creator":"u","owner":"u","roles":[],"type":"object","contentLength":0,"contentMD5":"1B2M2Y8AsgTpgAmY7PhCfg==","contentType":"text/plain","etag":"e","objectId":"o","sharks":[{"datacenter":"dc","manta_storage_id":"1.stor"}]}`, vn(42)},
}

func TestValueCases(t *testing.T) {
	for _, c := range valueCases {
		got, err := MorayValue([]byte(c.in), c.vnode)
		if err != nil {
			t.Errorf("%s: MorayValue(%q): %v", c.name, c.in, err)
			continue
		}
		if got != c.stored {
			t.Errorf("%s: MorayValue(%q)\n got %q\nwant %q", c.name, c.in, got, c.stored)
		}
		if e := MorayEtag(c.stored); e != c.etag {
			t.Errorf("%s: MorayEtag(%q) = %s, want %s", c.name, c.stored, e, c.etag)
		}
		if cv, err := ClientValue(c.stored); err != nil || string(cv) != c.client {
			t.Errorf("%s: ClientValue(%q) = %q, %v, want %q", c.name, c.stored, cv, err, c.client)
		}
		if v, err := ValueVnode(c.stored); err != nil || fmtVnode(v) != fmtVnode(c.vnodeCol) {
			t.Errorf("%s: ValueVnode(%q) = %s, %v, want %s", c.name, c.stored, fmtVnode(v), err, fmtVnode(c.vnodeCol))
		}
	}
}

func TestValueReadBack(t *testing.T) {
	// Text that MorayValue would not write (a row from elsewhere): the last
	// vnode counts and every copy goes. Expectations printed by Node.
	for _, c := range []struct {
		text, client string
		col          *int64
	}{
		{`{"vnode":1,"a":2,"vnode":2}`, `{"a":2}`, vn(2)},
		{` { "vnode" : "3", "\u0076node": 4.5 , "1":0}`, `{"1":0}`, vn(4)},
		{`{"a":{"vnode":1},"vnode":null}`, `{"a":{"vnode":1}}`, nil},
		{`{"b":[],"vnode":-12.5e1}`, `{"b":[]}`, vn(-125)},
	} {
		if got, err := ClientValue(c.text); err != nil || string(got) != c.client {
			t.Errorf("ClientValue(%q) = %q, %v, want %q", c.text, got, err, c.client)
		}
		if v, err := ValueVnode(c.text); err != nil || fmtVnode(v) != fmtVnode(c.col) {
			t.Errorf("ValueVnode(%q) = %s, %v, want %s", c.text, fmtVnode(v), err, fmtVnode(c.col))
		}
	}
}

func TestValueEtagVector(t *testing.T) {
	// Moray's etag hashes UTF-16 code units, not bytes: a textbook CRC-32 of
	// the UTF-8 gives 43710C7D.
	if e := MorayEtag(`{"s":"café ☃ 😀"}`); e != "3D13E1FC" {
		t.Fatalf("etag %s, want 3D13E1FC", e)
	}
	if e := MorayEtag(""); e != "00000000" {
		t.Fatalf("etag of empty text %s, want 00000000", e)
	}
	// Long enough to cross MorayEtag's buffer several times, with astral
	// characters (two code units each) straddling its flushes.
	long := strings.Repeat("a😀é", 700)
	if e, want := MorayEtag(long), referenceEtag(long); e != want {
		t.Fatalf("long etag %s, want %s", e, want)
	}
}

// referenceEtag is the bit-at-a-time CRC over UTF-16 code units, to check
// MorayEtag's buffered, table-driven path.
func referenceEtag(s string) string {
	crc := uint32(0xFFFFFFFF)
	for _, r := range s {
		units := []rune{r}
		if r >= 0x10000 {
			r -= 0x10000
			units = []rune{0xD800 + r>>10, 0xDC00 + r&0x3FF}
		}
		for _, u := range units {
			crc ^= uint32(u & 0xFF)
			for k := 0; k < 8; k++ {
				if crc&1 != 0 {
					crc = crc>>1 ^ 0xEDB88320
				} else {
					crc >>= 1
				}
			}
		}
	}
	return fmt.Sprintf("%08X", ^crc)
}

func TestValueErrors(t *testing.T) {
	// Each of these is refused by JSON.parse or is not an object (checked
	// against Node by TestValueNode's "ERR" cases and by hand).
	for _, in := range []string{
		``, ` `, `[]`, `[1]`, `"s"`, `1`, `null`, `true`,
		`{`, `{"a":1`, `{"a":1}x`, `{"a":1}{}`, `{"a":1},`, `{"a":01}`, `{"a":-01}`, `{"a":1.}`, `{"a":.5}`,
		`{"a":-}`, `{"a":+1}`, `{"a":1e}`, `{"a":1e+}`, `{"a":0x10}`, `{"a":NaN}`, `{"a":Infinity}`,
		`{"a":-Infinity}`, `{"a":tru}`, `{"a":nul}`, `{"a":True}`, "{\"a\":\"\t\"}", "{\"a\":\"\x00\"}",
		"{\"a\":\"\n\"}", `{"a":"\x"}`, `{"a":"\u12"}`, `{"a":"\uZZZZ"}`, `{"a":"\U0041"}`, `{"a":"\'"}`,
		`{"a":"x`, `{"a":"\`, `{"a":1,}`, `{,}`, `{a:1}`, `{'a':1}`, `{"a" 1}`, `{"a":1 "b":2}`,
		`{"a":[1,]}`, `{"a":[,1]}`, `{"a":[1 2]}`, `{"a":}`, `{1:1}`, "\ufeff{}", "{}\u00a0", "\u00a0{}",
		"{}\x00", "\v{}", "{}\f",
	} {
		if s, err := MorayValue([]byte(in), vn(1)); err == nil {
			t.Errorf("MorayValue(%q) = %q, want an error", in, s)
		} else if !errors.Is(err, ErrBadValue) {
			t.Errorf("MorayValue(%q): %v does not wrap ErrBadValue", in, err)
		}
		if _, err := ClientValue(in); err == nil {
			t.Errorf("ClientValue(%q) succeeded", in)
		}
	}
}

func TestValueDepth(t *testing.T) {
	// Node 20 stringifies about 4170 levels before its stack runs out; values
	// deeper than maxValueDepth are refused, shallower ones kept.
	nest := func(d int) string { return `{"a":` + strings.Repeat("[", d) + strings.Repeat("]", d) + "}" }
	if _, err := MorayValue([]byte(nest(3000)), vn(1)); err != nil {
		t.Fatalf("3000 levels: %v", err)
	}
	if _, err := MorayValue([]byte(nest(5000)), vn(1)); err == nil {
		t.Fatal("5000 levels accepted; Node cannot store them")
	}
}

func TestValueWideObject(t *testing.T) {
	// Past linearDupLimit members repeated keys are found with a map; the
	// answer must not change. Node gave the expected text.
	var b strings.Builder
	b.WriteString("{")
	for i := 0; i < 40; i++ {
		fmt.Fprintf(&b, `"k%d":%d,`, i, i)
	}
	b.WriteString(`"k3":"x","7":1,"k39":"y","vnode":0,"k0":"z"}`)
	got, err := MorayValue([]byte(b.String()), vn(5))
	if err != nil {
		t.Fatal(err)
	}
	var w strings.Builder
	w.WriteString(`{"7":1,"k0":"z",`)
	for i := 1; i < 40; i++ {
		switch i {
		case 3:
			w.WriteString(`"k3":"x",`)
		case 39:
			w.WriteString(`"k39":"y",`)
		default:
			fmt.Fprintf(&w, `"k%d":%d,`, i, i)
		}
	}
	w.WriteString(`"vnode":5}`)
	if got != w.String() {
		t.Fatalf("got  %s\nwant %s", got, w.String())
	}
}

// valueGen writes random client values aimed at the conversion's corners:
// index-like and repeated keys, every kind of escape, ill-formed UTF-8,
// numbers of every spelling, nesting. It writes bytes, not Go values, so
// that what Node parses is exactly what MorayValue parses.
type valueGen struct {
	r *rand.Rand
	b []byte
}

func (g *valueGen) ws() {
	if g.r.IntN(5) != 0 {
		return
	}
	for n := g.r.IntN(3) + 1; n > 0; n-- {
		g.b = append(g.b, " \t\n\r"[g.r.IntN(4)])
	}
}

func (g *valueGen) object(depth int, top bool) {
	g.b = append(g.b, '{')
	n := g.r.IntN(7)
	switch {
	case depth > 3:
		n = g.r.IntN(3)
	case g.r.IntN(25) == 0:
		n = linearDupLimit - 2 + g.r.IntN(40) // around and past the map switch
	}
	var keys []string
	g.ws()
	for i := 0; i < n; i++ {
		if i > 0 {
			g.b = append(g.b, ',')
			g.ws()
		}
		k := g.key(keys, top)
		keys = append(keys, k)
		g.b = append(g.b, k...)
		g.ws()
		g.b = append(g.b, ':')
		g.ws()
		g.value(depth + 1)
		g.ws()
	}
	g.b = append(g.b, '}')
}

func (g *valueGen) array(depth int) {
	g.b = append(g.b, '[')
	g.ws()
	n := g.r.IntN(5)
	for i := 0; i < n; i++ {
		if i > 0 {
			g.b = append(g.b, ',')
			g.ws()
		}
		g.value(depth + 1)
		g.ws()
	}
	g.b = append(g.b, ']')
}

func (g *valueGen) value(depth int) {
	k := g.r.IntN(10)
	if depth > 6 && k >= 5 {
		k -= 5
	}
	switch k {
	case 0, 1:
		g.b = append(g.b, g.str(false)...)
	case 2, 3:
		g.b = append(g.b, g.number()...)
	case 4:
		g.b = append(g.b, []string{"true", "false", "null"}[g.r.IntN(3)]...)
	case 5, 6:
		g.object(depth, false)
	case 7:
		g.array(depth)
	default:
		if g.r.IntN(2) == 0 {
			g.b = append(g.b, g.str(false)...)
		} else {
			g.b = append(g.b, g.number()...)
		}
	}
}

var genIndexKeys = []string{`"0"`, `"1"`, `"2"`, `"9"`, `"10"`, `"100"`, `"4294967294"`, `"4294967295"`,
	`"4294967296"`, `"01"`, `"00"`, `"-1"`, `"-0"`, `"1.0"`, `"1e3"`, `" 1"`, `"007"`, `"\u0031"`, `"\u0032\u0033"`,
	`"99999999999"`, `""`}

func (g *valueGen) key(prev []string, top bool) string {
	switch g.r.IntN(12) {
	case 0, 1:
		if len(prev) > 0 {
			return prev[g.r.IntN(len(prev))]
		}
	case 2:
		if len(prev) > 0 {
			return g.respell(prev[g.r.IntN(len(prev))])
		}
	case 3, 4:
		return genIndexKeys[g.r.IntN(len(genIndexKeys))]
	case 5:
		return `"` + strconv.FormatUint(uint64(g.r.Uint32()>>g.r.IntN(32)), 10) + `"`
	case 6:
		if top {
			return []string{`"vnode"`, `"\u0076node"`, `"vnod\u0065"`}[g.r.IntN(3)]
		}
	case 7, 8:
		return `"` + []string{"a", "b", "c", "owner", "key", "x", "vnode", "__proto__", "é"}[g.r.IntN(9)] + `"`
	}
	return g.str(true)
}

// respell writes the same key another way, by escaping one bare ASCII
// letter (not one inside an escape).
func (g *valueGen) respell(k string) string {
	for i := 1; i < len(k)-1; i++ {
		switch c := k[i]; {
		case c == '\\' && k[i+1] == 'u':
			i += 5
		case c == '\\':
			i++
		case c >= 'a' && c <= 'z':
			return k[:i] + g.hex4(rune(c)) + k[i+1:]
		}
	}
	return k
}

// hex4 is a \u escape in random letter case.
func (g *valueGen) hex4(u rune) string {
	h := fmt.Sprintf(`\u%04x`, u)
	if g.r.IntN(2) == 0 {
		h = `\u` + strings.ToUpper(h[2:])
	}
	return h
}

var genRaw = []string{"é", "☃", "😀", "\u2028", "\u2029", "\uFFFD", "\uFEFF", "\u0080", "\U0010FFFF", "\x7f", "\u07ff", "\u0800"}

var genIllFormed = []string{"\xff", "\x80", "\xbf\x80", "\xc0\xaf", "\xc2", "\xe2\x82", "\xe0\x80\x80", "\xe0\xa0",
	"\xed\xa0\x80", "\xed\xbf\xbf", "\xf0\x9f\x98", "\xf0\x80\x80\x80", "\xf4\x90\x80\x80", "\xf5\x80", "\xf8\x88\x80\x80\x80"}

func (g *valueGen) str(key bool) string {
	var s strings.Builder
	s.WriteByte('"')
	n := g.r.IntN(8)
	if key {
		n = g.r.IntN(3)
	}
	for ; n > 0; n-- {
		switch g.r.IntN(16) {
		case 0, 1, 2, 3:
			for k := g.r.IntN(6) + 1; k > 0; k-- {
				s.WriteByte("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 _-."[g.r.IntN(46)])
			}
		case 4:
			s.WriteString([]string{`\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`}[g.r.IntN(8)])
		case 5:
			s.WriteString(g.hex4(rune(g.r.IntN(0x80))))
		case 6:
			s.WriteString(genRaw[g.r.IntN(len(genRaw))])
		case 7:
			u := rune(g.r.IntN(0x10000))
			if u >= 0xD800 && u < 0xE000 {
				u -= 0x800
			}
			s.WriteString(g.hex4(u))
		case 8:
			r := rune(0x10000 + g.r.IntN(0x100000))
			r -= 0x10000
			s.WriteString(g.hex4(0xD800 + r>>10))
			s.WriteString(g.hex4(0xDC00 + r&0x3FF))
		case 9:
			s.WriteString(g.hex4(rune(0xD800 + g.r.IntN(0x400))))
		case 10:
			s.WriteString(g.hex4(rune(0xDC00 + g.r.IntN(0x400))))
		case 11:
			// A high surrogate before something that does not complete it.
			s.WriteString(g.hex4(rune(0xD800 + g.r.IntN(0x400))))
			s.WriteString([]string{"😀", "x", `\n`, `\u0041`, `\ud83d\ude00`, `\udbff`, "\xed\xb0\x80"}[g.r.IntN(7)])
		case 12:
			s.WriteString(genIllFormed[g.r.IntN(len(genIllFormed))])
		case 13:
			for k := g.r.IntN(3) + 1; k > 0; k-- {
				s.WriteByte(byte(0x80 + g.r.IntN(0x80)))
			}
		case 14:
			s.WriteByte(" /<>&'`~{}[]:,#%"[g.r.IntN(16)])
		case 15:
			c := byte(0x20 + g.r.IntN(0x5F))
			if c == '"' || c == '\\' {
				c = '~'
			}
			s.WriteByte(c)
		}
	}
	s.WriteByte('"')
	return s.String()
}

var genNumbers = []string{"5e-324", "2.4703282292062328e-324", "2.4703282292062327e-324", "1.7976931348623157e308",
	"1.7976931348623158e308", "1.7976931348623159e308", "1e21", "1e20", "999999999999999999999", "0.000001",
	"0.0000001", "1e-7", "123e-20", "4.35", "0.1", "1e400", "1e-400", "9007199254740993", "9007199254740992",
	"18446744073709551616", "9223372036854775807", "0.30000000000000004", "1E+0", "0.5e1", "100e-9", "2e-7"}

func (g *valueGen) digits(n int, lead bool) string {
	var s strings.Builder
	for i := 0; i < n; i++ {
		d := g.r.IntN(10)
		if i == 0 && lead && d == 0 {
			d = 1 + g.r.IntN(9)
		}
		s.WriteByte(byte('0' + d))
	}
	return s.String()
}

func (g *valueGen) number() string {
	var s string
	switch g.r.IntN(11) {
	case 0:
		s = strconv.Itoa(g.r.IntN(201) - 100)
	case 1:
		s = []string{"0", "-0", "-0.0", "0e5", "-0E-3", "0.000"}[g.r.IntN(6)]
	case 2:
		s = g.digits(16+g.r.IntN(10), true)
	case 3:
		s = strconv.FormatInt(1<<53+int64(g.r.IntN(9))-4, 10)
	case 4:
		s = strconv.Itoa(g.r.IntN(100000)) + "." + g.digits(1+g.r.IntN(8), false)
	case 5:
		f := math.Float64frombits(g.r.Uint64())
		for math.IsNaN(f) || math.IsInf(f, 0) {
			f = math.Float64frombits(g.r.Uint64())
		}
		s = strconv.FormatFloat(f, "eg"[g.r.IntN(2)], -1, 64)
	case 6:
		s = g.digits(1, true)
		if g.r.IntN(2) == 0 {
			s += "." + g.digits(1+g.r.IntN(20), false)
		}
		s += []string{"e", "E", "e+", "e-", "E-"}[g.r.IntN(5)] + strconv.Itoa(g.r.IntN(420))
	case 7:
		s = genNumbers[g.r.IntN(len(genNumbers))]
	case 8:
		s = strconv.FormatFloat(g.r.Float64()*math.Pow10(g.r.IntN(50)-25), 'f', -1, 64)
	case 9:
		s = strconv.FormatInt(int64(g.r.Uint64()), 10)
	case 10:
		s = g.digits(1+g.r.IntN(20), true) + "." + g.digits(10+g.r.IntN(30), false)
	}
	if s[0] != '-' && g.r.IntN(4) == 0 {
		s = "-" + s
	}
	return s
}

// mutate breaks a value the ways a client's bytes might be broken; Node
// decides which of the results are still JSON.
func (g *valueGen) mutate(b []byte) []byte {
	b = append([]byte(nil), b...)
	i := g.r.IntN(len(b))
	switch g.r.IntN(5) {
	case 0:
		return b[:i]
	case 1:
		return append(b[:i], b[i+1:]...)
	case 2:
		const junk = "{}[]\":,\\ \x00\t0-.eu\xff"
		b[i] = junk[g.r.IntN(len(junk))]
		return b
	case 3:
		const junk = "x,}] \x00"
		return append(b, junk[g.r.IntN(len(junk))])
	}
	return append([]byte([]string{"[", `"`, "\ufeff", "\u00a0", " ", "\v"}[g.r.IntN(6)]), b...)
}

// int64Col is Node's vnode column as ValueVnode reports it: nil when absent
// or beyond int64.
func int64Col(col string) string {
	if _, err := strconv.ParseInt(col, 10, 64); err != nil {
		return "nil"
	}
	return col
}

func TestValueNode(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not on PATH: this test compares MorayValue with Node's JSON.parse/JSON.stringify and needs Node 20")
	}
	if v, err := exec.Command(node, "--version").Output(); err == nil {
		t.Logf("node %s", bytes.TrimSpace(v))
	}
	const n = 4000
	g := &valueGen{r: rand.New(rand.NewPCG(20240601, 7))}
	inputs := make([][]byte, n)
	vnodes := make([]*int64, n)
	var file bytes.Buffer
	for i := range inputs {
		g.b = g.b[:0]
		g.ws()
		g.object(0, true)
		g.ws()
		in := append([]byte(nil), g.b...)
		if g.r.IntN(25) == 0 {
			in = g.mutate(in)
		}
		inputs[i] = in
		switch k := g.r.IntN(20); {
		case k < 14:
			vnodes[i] = vn(int64(g.r.IntN(1 << 20)))
		case k < 16:
			vnodes[i] = nil
		default:
			vnodes[i] = vn([]int64{-1, -4096, 1<<53 + 1, 1<<53 - 1, math.MaxInt64, math.MinInt64, 1 << 62, 0}[g.r.IntN(8)])
		}
		fmt.Fprintf(&file, "%s %s\n", base64.StdEncoding.EncodeToString(in), strings.Replace(fmtVnode(vnodes[i]), "nil", "-", 1))
	}
	path := filepath.Join(t.TempDir(), "values")
	if err := os.WriteFile(path, file.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, filepath.Join("testdata", "value.js"), path)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 64<<20)
	b64 := func(s string) string {
		d, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("node printed bad base64 %q", s)
		}
		return string(d)
	}
	i, failures, refused := 0, 0, 0
	fail := func(format string, args ...any) {
		failures++
		if failures <= 20 {
			t.Errorf("value %d %q (vnode %s): %s", i, inputs[i], fmtVnode(vnodes[i]), fmt.Sprintf(format, args...))
		}
	}
	for ; sc.Scan(); i++ {
		if i >= n {
			t.Fatal("node printed more lines than values")
		}
		got, err := MorayValue(inputs[i], vnodes[i])
		line := sc.Text()
		if line == "ERR" {
			refused++
			if err == nil {
				fail("Node refuses it, MorayValue gave %q", got)
			}
			continue
		}
		f := strings.Fields(line)
		if len(f) != 6 {
			t.Fatalf("node line %d: %q", i, line)
		}
		stored, etag, client, col := b64(f[0]), f[1], b64(f[2]), f[3]
		// Reading the client's own text checks ClientValue and ValueVnode on
		// repeated keys and odd spellings, which stored text never has.
		if c, err := ClientValue(string(inputs[i])); err != nil || string(c) != b64(f[4]) {
			fail("ClientValue of the input %q, %v; Node %q", c, err, b64(f[4]))
		}
		if v, err := ValueVnode(string(inputs[i])); err != nil || fmtVnode(v) != int64Col(f[5]) {
			fail("ValueVnode of the input %s, %v; Node's column %s", fmtVnode(v), err, f[5])
		}
		if err != nil {
			fail("MorayValue: %v; Node stored %q", err, stored)
			continue
		}
		if got != stored {
			fail("MorayValue\n got %q\nnode %q", got, stored)
			continue
		}
		if e := MorayEtag(got); e != etag {
			fail("MorayEtag %s, Node %s", e, etag)
		}
		if c, err := ClientValue(got); err != nil || string(c) != client {
			fail("ClientValue %q, %v; Node %q", c, err, client)
		}
		if v, err := ValueVnode(got); err != nil || fmtVnode(v) != int64Col(col) {
			fail("ValueVnode %s, %v; Node's column %s", fmtVnode(v), err, col)
		}
	}
	if i != n {
		t.Fatalf("node printed %d lines for %d values", i, n)
	}
	if failures > 0 {
		t.Errorf("%d of %d values differ from Node", failures, n)
	}
	t.Logf("%d values, %d refused by Node and by MorayValue", n, refused)
}

func FuzzMorayValue(f *testing.F) {
	for _, c := range valueCases {
		f.Add([]byte(c.in), int64(7), c.vnode != nil)
	}
	f.Add([]byte(`{"a":[1,{"2":3,"1":4,"2":5}],"a":null,"vnode":"v"}`), int64(-3), true)
	f.Add([]byte(`{"\ud800":"\udc00\ud800\udc00","1e3":1e3}`), int64(1<<53), false)
	f.Fuzz(func(t *testing.T, raw []byte, vnode int64, set bool) {
		var vp *int64
		if set {
			vp = &vnode
		}
		s, err := MorayValue(raw, vp)
		if err != nil {
			// Too deep needs at least 2*maxValueDepth bytes of brackets.
			if json.Valid(raw) && len(raw) < 2*maxValueDepth && bytes.TrimLeft(raw, " \t\r\n")[0] == '{' {
				t.Fatalf("MorayValue refused JSON object %q: %v", raw, err)
			}
			return
		}
		if !json.Valid(raw) {
			t.Fatalf("MorayValue accepted invalid JSON %q", raw)
		}
		if !utf8.ValidString(s) || !json.Valid([]byte(s)) {
			t.Fatalf("MorayValue(%q) = %q, not valid UTF-8 JSON", raw, s)
		}
		if again, err := MorayValue([]byte(s), vp); err != nil || again != s {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", raw, s, again, err)
		}
		if set {
			if again, err := MorayValue([]byte(s), nil); err != nil || again != s {
				t.Fatalf("vnode not kept: %q -> %q, %v", s, again, err)
			}
			if vnode >= -1<<53 && vnode <= 1<<53 {
				if v, err := ValueVnode(s); err != nil || v == nil || *v != vnode {
					t.Fatalf("ValueVnode(%q) = %s, %v, want %d", s, fmtVnode(v), err, vnode)
				}
			}
		}
		if e, want := MorayEtag(s), referenceEtag(s); e != want {
			t.Fatalf("MorayEtag(%q) = %s, want %s", s, e, want)
		}
		c, err := ClientValue(s)
		if err != nil {
			t.Fatalf("ClientValue(%q): %v", s, err)
		}
		dec := json.NewDecoder(bytes.NewReader(c))
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			t.Fatalf("ClientValue(%q) = %q, not an object", s, c)
		}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				t.Fatal(err)
			}
			if k == "vnode" {
				t.Fatalf("ClientValue(%q) = %q kept vnode", s, c)
			}
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				t.Fatal(err)
			}
		}
		if again, err := ClientValue(string(c)); err != nil || string(again) != string(c) {
			t.Fatalf("ClientValue not idempotent: %q -> %q, %v", c, again, err)
		}
	})
}

// benchValue is a Manta directory entry's value of about 1 KB, the common case
// on the router's write path.
var benchValue = []byte(`{"dirname":"/4d6e3a9e-8b4f-4c1e-9f0a-2b7c5d1e3f40/stor/logs/webapi/2024/01/02/03",` +
	`"key":"/4d6e3a9e-8b4f-4c1e-9f0a-2b7c5d1e3f40/stor/logs/webapi/2024/01/02/03/c3f1a2b4.log",` +
	`"headers":{"m-source":"webapi","access-control-allow-origin":"*","cache-control":"no-cache","durability-level":"2"},` +
	`"mtime":1704164400123,"name":"c3f1a2b4.log","creator":"4d6e3a9e-8b4f-4c1e-9f0a-2b7c5d1e3f40",` +
	`"owner":"4d6e3a9e-8b4f-4c1e-9f0a-2b7c5d1e3f40","roles":["0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",` +
	`"1a2b3c4d-5e6f-7081-92a3-b4c5d6e7f809"],"type":"object","contentLength":104857600,` +
	`"contentMD5":"rL0Y20zC+Fzt72VPzMSk2A==","contentType":"application/x-ndjson",` +
	`"etag":"7f6e5d4c-3b2a-1908-f7e6-d5c4b3a29180","objectId":"7f6e5d4c-3b2a-1908-f7e6-d5c4b3a29180",` +
	`"sharks":[{"datacenter":"us-east-1","manta_storage_id":"1.stor.us-east.joyent.us"},` +
	`{"datacenter":"us-east-2","manta_storage_id":"3.stor.us-east.joyent.us"},` +
	`{"datacenter":"us-east-3","manta_storage_id":"7.stor.us-east.joyent.us"}],` +
	`"upload":{"id":"a0b1c2d3-e4f5-4607-8819-2a3b4c5d6e7f","state":"done","partsMD5":"1B2M2Y8AsgTpgAmY7PhCfg=="},` +
	`"vnode":1234}`)

func BenchmarkMorayValue(b *testing.B) {
	vnode := int64(98765)
	b.Run("reshard", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(benchValue)))
		for b.Loop() {
			if _, err := MorayValue(benchValue, &vnode); err != nil {
				b.Fatal(err)
			}
		}
	})
	// What muskie sends: the same object before any vnode was put in it, so
	// the vnode is appended and nothing is rewritten.
	fresh := bytes.Replace(benchValue, []byte(`,"vnode":1234`), nil, 1)
	b.Run("reshard-novnode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(fresh)))
		for b.Loop() {
			if _, err := MorayValue(fresh, &vnode); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reshard+etag", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(benchValue)))
		for b.Loop() {
			s, err := MorayValue(benchValue, &vnode)
			if err != nil {
				b.Fatal(err)
			}
			_ = MorayEtag(s)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		// Unmarshal into any and Marshal back: not even the right answer
		// (Go sorts keys and escapes <>&), only the cost to beat.
		b.ReportAllocs()
		b.SetBytes(int64(len(benchValue)))
		for b.Loop() {
			var v any
			if err := json.Unmarshal(benchValue, &v); err != nil {
				b.Fatal(err)
			}
			v.(map[string]any)["vnode"] = float64(vnode)
			if _, err := json.Marshal(v); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkClientValue(b *testing.B) {
	text, err := MorayValue(benchValue, vn(98765))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		if _, err := ClientValue(text); err != nil {
			b.Fatal(err)
		}
	}
}
