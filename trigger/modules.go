package trigger

import (
	"fmt"
	"math"
	"time"

	"github.com/dop251/goja"
)

// The only modules a trigger may require, as Moray's guardedRequire allows:
// "crc" (npm crc@0.2.1, which Moray bundles and whose crc32 makes Moray's
// etags) and "microtime" (npm microtime). Both are written here in Go from
// their documented behaviour.

// crcTables are crc@0.2.1's tables, made from their polynomials: CRC-16/ARC
// and Modbus (0xA001, LSB first), CRC-16/ZMODEM (0x1021, MSB first), FCS-16
// of PPP (0x8408, LSB first) and CRC-32 (0xEDB88320, LSB first). Its CRC-8
// table is linear but no plain CRC's: entry 1 is 0x1B, and each power of
// two is the one before shifted left, reduced by 0x63 when it overflows.
var crc8Tab, crcArcTab, crc16Tab, fcs16Tab, crc32Tab = func() (a, b, c, d, e [256]uint32) {
	var base [8]uint32
	for k, v := 0, uint32(0x1B); k < 8; k++ {
		base[k] = v
		if v <<= 1; v&0x100 != 0 {
			v = (v ^ 0x63) & 0xFF
		}
	}
	for i := uint32(0); i < 256; i++ {
		arc, z, f, r32 := i, i<<8, i, i
		for k := 0; k < 8; k++ {
			if i&(1<<k) != 0 {
				a[i] ^= base[k]
			}
			arc = lsbStep(arc, 0xA001)
			if z <<= 1; z&0x10000 != 0 {
				z = (z ^ 0x1021) & 0xFFFF
			}
			f = lsbStep(f, 0x8408)
			r32 = lsbStep(r32, 0xEDB88320)
		}
		b[i], c[i], d[i], e[i] = arc, z, f, r32
	}
	return
}()

func lsbStep(v, poly uint32) uint32 {
	if v&1 != 0 {
		return v>>1 ^ poly
	}
	return v >> 1
}

// codeUnits are the UTF-16 code units crc@0.2.1 reads with charCodeAt;
// every one of its string functions keeps only the low byte of each. A
// value that is not a string has no length there, so nothing is read.
func codeUnits(v goja.Value) []uint32 {
	s, ok := v.(goja.String)
	if !ok {
		return nil
	}
	out := make([]uint32, s.Length())
	for i := range out {
		out[i] = uint32(s.CharAt(i))
	}
	return out
}

// byteList reads an array-like of numbers, for crc's buffer functions.
func byteList(rt *goja.Runtime, v goja.Value) []uint32 {
	o, ok := v.(*goja.Object)
	if !ok {
		return nil
	}
	n := o.Get("length")
	if n == nil {
		return nil
	}
	out := make([]uint32, int(n.ToInteger()))
	for i := range out {
		out[i] = uint32(o.Get(fmt.Sprint(i)).ToInteger())
	}
	return out
}

func crcOf(units []uint32, init uint32, add func(crc, c uint32) uint32) uint32 {
	crc := init
	for _, c := range units {
		crc = add(crc, c)
	}
	return crc
}

var (
	crc8Add   = func(crc, c uint32) uint32 { return crc8Tab[(crc^c)&0xFF] }
	crcArcAdd = func(crc, c uint32) uint32 { return crcArcTab[(crc^c)&0xFF] ^ (crc>>8)&0xFF }
	crc16Add  = func(crc, c uint32) uint32 { return crc16Tab[((crc>>8)^c)&0xFF] ^ (crc<<8)&0xFFFF }
	fcs16Add  = func(crc, c uint32) uint32 { return fcs16Tab[(crc^c)&0xFF] ^ (crc>>8)&0xFF }
	crc32Add  = func(crc, c uint32) uint32 { return crc32Tab[(crc^c)&0xFF] ^ (crc>>8)&0xFFFFFF }
)

// crc32Of is crc32's result as JavaScript has it: crc ^ 0xFFFFFFFF is a
// signed 32-bit integer.
func crc32Of(units []uint32) int32 {
	return int32(crcOf(units, 0xFFFFFFFF, crc32Add) ^ 0xFFFFFFFF)
}

// hexDigits prints the low n bytes of ToInt32(v) as upper-case hex, as
// hex8, hex16 and hex32 do.
func hexDigits(v goja.Value, n int) string {
	s := fmt.Sprintf("%08X", uint32(toInt32(v.ToFloat())))
	return s[8-2*n:]
}

// toInt32 is ECMAScript's ToInt32.
func toInt32(f float64) int32 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	m := math.Mod(math.Trunc(f), 1<<32)
	if m < 0 {
		m += 1 << 32
	}
	return int32(uint32(m))
}

func newCRCModule(rt *goja.Runtime) *goja.Object {
	m := rt.NewObject()
	str := func(init uint32, add func(crc, c uint32) uint32, final uint32) func(goja.Value) int64 {
		return func(v goja.Value) int64 { return int64(crcOf(codeUnits(v), init, add) ^ final) }
	}
	m.Set("crc8", str(0, crc8Add, 0))
	m.Set("crcArc", str(0, crcArcAdd, 0))
	m.Set("crcModbusString", str(0xFFFF, crcArcAdd, 0))
	m.Set("crcModbusHex", func(v goja.Value) int64 { return int64(crcOf(byteList(rt, v), 0xFFFF, crcArcAdd)) })
	m.Set("crc16", str(0, crc16Add, 0))
	m.Set("fcs16", str(0xFFFF, fcs16Add, 0xFFFF))
	m.Set("crc32", func(v goja.Value) int64 { return int64(crc32Of(codeUnits(v))) })
	m.Set("hex8", func(v goja.Value) string { return hexDigits(v, 1) })
	m.Set("hex16", func(v goja.Value) string { return hexDigits(v, 2) })
	m.Set("hex32", func(v goja.Value) string { return hexDigits(v, 4) })
	buf := rt.NewObject()
	buf.Set("crc8", func(v goja.Value) int64 { return int64(crcOf(byteList(rt, v), 0, crc8Add)) })
	buf.Set("crc16", func(v goja.Value) int64 { return int64(crcOf(byteList(rt, v), 0, crc16Add)) })
	buf.Set("crc32", func(v goja.Value) int64 {
		return int64(int32(crcOf(byteList(rt, v), 0xFFFFFFFF, crc32Add) ^ 0xFFFFFFFF))
	})
	m.Set("buffer", buf)
	return m
}

// newMicrotimeModule is npm microtime: the time in microseconds.
func newMicrotimeModule(rt *goja.Runtime) *goja.Object {
	m := rt.NewObject()
	m.Set("now", func() float64 { return float64(time.Now().UnixMicro()) })
	m.Set("nowDouble", func() float64 { return float64(time.Now().UnixMicro()) / 1e6 })
	m.Set("nowStruct", func() []any {
		us := time.Now().UnixMicro()
		return []any{us / 1e6, us % 1e6}
	})
	return m
}

// requireFunc is the require a trigger sees: Moray's guardedRequire, which
// throws InvalidRequireError for any module but crc and microtime.
func requireFunc(rt *goja.Runtime) func(goja.FunctionCall) goja.Value {
	modules := map[string]*goja.Object{"crc": newCRCModule(rt), "microtime": newMicrotimeModule(rt)}
	return func(call goja.FunctionCall) goja.Value {
		name := call.Argument(0)
		if m, ok := modules[name.String()]; ok && isString(name) {
			return m
		}
		panic(newError(rt, "InvalidRequireError", `"`+name.String()+`" is not a permitted module`))
	}
}

func isString(v goja.Value) bool {
	_, ok := v.(goja.String)
	return ok
}

// newError makes an Error of the runtime with Moray's name for it.
func newError(rt *goja.Runtime, name, message string) *goja.Object {
	ctor := rt.Get("Error")
	e, err := rt.New(ctor, rt.ToValue(message))
	if err != nil {
		panic(err)
	}
	e.Set("name", name)
	return e
}
