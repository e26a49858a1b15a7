package shard

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The value syntaxes of Moray's richer index types (date, daterange,
// numrange, uuid, ip, subnet, mac), read as Moray 2.6.1 reads them: its
// own regular expressions, V8's Date parser, and the ip6addr and macaddr
// packages. A value is turned into the text Moray sends PostgreSQL, so the
// column holds what Moray's would.

var (
	// Moray's patterns. The "." before the fraction is Moray's, unescaped:
	// it lets any character through, and the Date parser then refuses it.
	iso8601Pattern   = regexp.MustCompile(`^(?:[-+]00)?\d+-\d+-\d+T\d+:\d+:\d+(?:.\d+)?Z$`)
	dateRangePattern = regexp.MustCompile(`^([(\[])([\d:.TZ+-]+)?,([\d:.TZ+-]+)?([)\]])$`)
	numRangePattern  = regexp.MustCompile(`^[(\[](-?\d+(?:\.\d+)?)?,(-?\d+(?:\.\d+)?)?[)\]]$`)
	uuidPattern      = regexp.MustCompile(`^[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}$`)
	// The date-time form V8 reads: a four-digit year, or six digits with
	// a sign, and at least seconds (Moray's pattern requires them).
	esDateTime = regexp.MustCompile(`^(\d{4}|[+-]\d{6})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?Z$`)
)

var errValue = errors.New("invalid value")

var (
	leadingInt = regexp.MustCompile(`^[+-]?\d+`)
	jsDecimal  = regexp.MustCompile(`^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$`)
)

// parseISO8601 is Moray's: the value must match its pattern and parse as
// a JavaScript Date; the result is Date.prototype.toISOString of it.
func parseISO8601(s string) (string, error) {
	if !iso8601Pattern.MatchString(s) {
		return "", fmt.Errorf("%w: invalid ISO 8601 timestamp: %q", errValue, s)
	}
	t, ok := jsDateParse(s)
	if !ok {
		return "", fmt.Errorf("%w: Invalid time value", errValue)
	}
	return jsISOString(t), nil
}

// jsDateParse is V8's Date parsing of the ISO form: fields out of their
// range are refused, except that a day past the month's end rolls over
// and 24:00:00 is the next midnight, as Date.UTC does.
func jsDateParse(s string) (time.Time, bool) {
	m := esDateTime.FindStringSubmatch(s)
	if m == nil || m[1] == "-000000" {
		return time.Time{}, false
	}
	year, _ := strconv.Atoi(m[1])
	mon, _ := strconv.Atoi(m[2])
	day, _ := strconv.Atoi(m[3])
	hh, _ := strconv.Atoi(m[4])
	mm, _ := strconv.Atoi(m[5])
	ss, _ := strconv.Atoi(m[6])
	ms := 0
	if m[7] != "" {
		frac := (m[7] + "00")[:3]
		ms, _ = strconv.Atoi(frac)
	}
	if mon < 1 || mon > 12 || day < 1 || day > 31 || mm > 59 || ss > 59 || hh > 24 ||
		hh == 24 && (mm != 0 || ss != 0 || ms != 0) {
		return time.Time{}, false
	}
	t := time.Date(year, time.Month(mon), day, hh, mm, ss, ms*int(time.Millisecond), time.UTC)
	// ECMAScript's time values reach 8.64e15 ms either side of 1970.
	if ums := t.UnixMilli(); ums > 8.64e15 || ums < -8.64e15 {
		return time.Time{}, false
	}
	return t, true
}

// jsISOString is Date.prototype.toISOString.
func jsISOString(t time.Time) string {
	t = t.UTC()
	y := t.Year()
	var year string
	switch {
	case y >= 0 && y <= 9999:
		year = fmt.Sprintf("%04d", y)
	case y < 0:
		year = fmt.Sprintf("-%06d", -y)
	default:
		year = fmt.Sprintf("+%06d", y)
	}
	return fmt.Sprintf("%s-%02d-%02dT%02d:%02d:%02d.%03dZ", year, t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond()/int(time.Millisecond))
}

// parseDateRange is Moray's: each bound is an ISO 8601 time, rewritten
// as toISOString writes it.
func parseDateRange(s string) (string, error) {
	m := dateRangePattern.FindStringSubmatch(s)
	if m == nil {
		return "", fmt.Errorf("%w: invalid date range: %q", errValue, s)
	}
	lower, upper := "", ""
	var err error
	if m[2] != "" {
		if lower, err = parseISO8601(m[2]); err != nil {
			return "", err
		}
	}
	if m[3] != "" {
		if upper, err = parseISO8601(m[3]); err != nil {
			return "", err
		}
	}
	return m[1] + lower + "," + upper + m[4], nil
}

func parseNumRange(s string) (string, error) {
	if !numRangePattern.MatchString(s) {
		return "", fmt.Errorf("%w: invalid numeric range: %q", errValue, s)
	}
	return s, nil
}

func parseUUID(s string) (string, error) {
	if !uuidPattern.MatchString(s) {
		return "", fmt.Errorf("%w: invalid uuid: %q", errValue, s)
	}
	return s, nil
}

// ipAddr is an ip6addr address: eight 16-bit fields, IPv4 held as
// IPv4-mapped IPv6, and how it was written, which its text follows.
type ipAddr struct {
	f            [8]uint16
	bare, mapped bool // written as a.b.c.d; written with a dotted quad
}

// parseIP is ip6addr.parse of a JSON value: a string, or a number as a
// 32-bit IPv4 address.
func parseIP(v any) (ipAddr, error) {
	switch x := v.(type) {
	case string:
		return parseIPString(x)
	case float64:
		if x != math.Floor(x) || x < 0 || x > 0xffffffff {
			return ipAddr{}, fmt.Errorf("%w: not a 32-bit integer", errValue)
		}
		n := uint32(x)
		return ipAddr{f: [8]uint16{5: 0xffff, 6: uint16(n >> 16), 7: uint16(n)}, bare: true, mapped: true}, nil
	}
	return ipAddr{}, fmt.Errorf("%w: only string|number allowed", errValue)
}

func parseIPString(in string) (ipAddr, error) {
	bad := func(why string) (ipAddr, error) {
		return ipAddr{}, fmt.Errorf("%w: %s: %s", errValue, in, why)
	}
	s := jsToLower(in)
	if utf16Len(s) > 40 {
		return bad("Input too long")
	}
	var v6, v4 []string
	exp := -1
	val := ""
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ':':
			if i+1 < len(s) && s[i+1] == ':' {
				if exp >= 0 {
					return bad("Multiple :: delimiters")
				}
				if val != "" {
					v6 = append(v6, val)
					val = ""
				}
				exp = len(v6)
				i++
			} else {
				if val == "" {
					return bad("illegal delimiter")
				}
				v6 = append(v6, val)
				val = ""
			}
		case '.':
			v4 = append(v4, val)
			val = ""
		default:
			val += string(c)
		}
	}
	if val != "" {
		if len(v4) != 0 {
			v4 = append(v4, val)
		} else {
			v6 = append(v6, val)
		}
	} else if exp != len(v6) || len(v4) > 0 {
		return bad("Cannot end with delimiter besides ::")
	}
	var a ipAddr
	if len(v4) == 0 {
		if len(v6) > 8 {
			return bad("Too many fields")
		} else if len(v6) < 8 && exp < 0 {
			return bad("Too few fields")
		}
	} else {
		if len(v4) != 4 {
			return bad("IPv4 portion must have 4 fields")
		}
		if len(v6) == 0 && exp < 0 {
			a.bare = true
			v6, exp = []string{"ffff"}, 0
		}
		if len(v6) > 6 {
			return bad("Too many fields")
		} else if len(v6) < 6 && exp < 0 {
			return bad("Too few fields")
		}
	}
	var nums []uint16
	for _, fld := range v6 {
		// Number('0x' + field): hex digits, trailing white space allowed.
		h := strings.TrimRight(fld, jsSpace)
		n, err := strconv.ParseUint(h, 16, 32)
		if h == "" || err != nil || strings.ContainsAny(h[:1], "+-") || n > 65535 {
			return bad("Invalid field value: " + fld)
		}
		nums = append(nums, uint16(n))
	}
	var quad []uint16
	for _, fld := range v4 {
		n, ok := dottedField(fld)
		if !ok {
			return bad("Invalid field value: " + fld)
		}
		quad = append(quad, n)
	}
	if len(quad) != 0 {
		nums = append(nums, quad[0]*256+quad[1], quad[2]*256+quad[3])
	}
	if len(nums) < 8 && exp >= 0 {
		full := append([]uint16(nil), nums[:exp]...)
		full = append(full, make([]uint16, 8-len(nums))...)
		nums = append(full, nums[exp:]...)
	}
	if len(nums) != 8 {
		return bad("Too many fields")
	}
	copy(a.f[:], nums)
	if len(quad) != 0 {
		if a.f != [8]uint16{5: 0xffff, 6: a.f[6], 7: a.f[7]} {
			return bad("invalid dotted-quad notation")
		}
		a.mapped = true
	}
	return a, nil
}

// jsSpace is the white space JavaScript's Number() and trim() skip.
const jsSpace = " \t\n\v\f\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"

// dottedField is ip6addr's test of a dotted-quad field: Number(field)
// must equal parseInt(field, 10) and lie in 0..255.
func dottedField(fld string) (uint16, bool) {
	t := strings.Trim(fld, jsSpace)
	num := jsStringToNumber(fld)
	m := leadingInt.FindString(t)
	if m == "" || math.IsNaN(num) {
		return 0, false
	}
	pi, err := strconv.ParseFloat(m, 64)
	if err != nil || pi != num || num < 0 || num > 255 {
		return 0, false
	}
	return uint16(num), true
}

func (a ipAddr) isV4() bool {
	return a.f[0] == 0 && a.f[1] == 0 && a.f[2] == 0 && a.f[3] == 0 && a.f[4] == 0 && a.f[5] == 0xffff
}

// String is ip6addr's toString in its "auto" format.
func (a ipAddr) String() string {
	quad := func() string {
		return fmt.Sprintf("%d.%d.%d.%d", a.f[6]>>8, a.f[6]&0xff, a.f[7]>>8, a.f[7]&0xff)
	}
	switch {
	case a.bare:
		return quad()
	case a.mapped:
		return strings.Join(hexFields(a.f[:6]), ":") + ":" + quad()
	}
	return strings.Join(hexFields(a.f[:]), ":")
}

// hexFields is ip6addr's _arrayToHex with the longest run of zero
// fields (the first of equals, even a run of one) elided.
func hexFields(in []uint16) []string {
	elStart, elLen := -1, 0
	start, n := -1, 0
	for i, x := range in {
		if x == 0 {
			if start < 0 {
				start, n = i, 1
			} else {
				n++
			}
		} else if start >= 0 {
			if n > elLen {
				elStart, elLen = start, n
			}
			start = -1
		}
	}
	if start >= 0 && n > elLen {
		elStart, elLen = start, n
	}
	var out []string
	for i, x := range in {
		if elStart >= 0 {
			if i == elStart {
				if elLen == 8 {
					return []string{"::"}
				} else if elStart == 0 || elStart+elLen == len(in) {
					out = append(out, ":")
				} else {
					out = append(out, "")
				}
			}
			if i >= elStart && i < elStart+elLen {
				continue
			}
		}
		out = append(out, strconv.FormatUint(uint64(x), 16))
	}
	return out
}

func compareIP(a, b ipAddr) int {
	for i := range a.f {
		switch {
		case a.f[i] < b.f[i]:
			return -1
		case a.f[i] > b.f[i]:
			return 1
		}
	}
	return 0
}

// ipCIDR is an ip6addr CIDR: the network address and its prefix length
// in IPv6 bits.
type ipCIDR struct {
	addr   ipAddr
	prefix int
}

var cidrPattern = regexp.MustCompile(`^([a-fA-F0-9:.]+)/([0-9]+)$`)

// parseCIDR is ip6addr.createCIDR of a JSON value, which must be a string
// "<addr>/<prefix>"; the host bits are cleared.
func parseCIDR(v any) (ipCIDR, error) {
	s, ok := v.(string)
	if !ok {
		return ipCIDR{}, fmt.Errorf("%w: addr (string) is required", errValue)
	}
	m := cidrPattern.FindStringSubmatch(s)
	if m == nil {
		return ipCIDR{}, fmt.Errorf("%w: Invalid argument: <addr>/<prefix> expected", errValue)
	}
	a, err := parseIPString(m[1])
	if err != nil {
		return ipCIDR{}, err
	}
	// parseInt(...) | 0: digits past 32 bits wrap.
	p, _ := strconv.ParseFloat(m[2], 64)
	prefix := int(int32(uint32(math.Mod(p, 4294967296))))
	if math.IsInf(p, 0) {
		prefix = 0
	}
	if a.bare {
		prefix += 96
	}
	if prefix < 0 || prefix > 128 {
		return ipCIDR{}, fmt.Errorf("%w: Invalid prefix length", errValue)
	}
	bits := prefix
	for i := range a.f {
		switch {
		case bits >= 16:
			bits -= 16
		case bits > 0:
			a.f[i] &= 0xffff - (1<<(16-bits) - 1)
			bits = 0
		default:
			a.f[i] = 0
		}
	}
	return ipCIDR{addr: a, prefix: prefix}, nil
}

func (c ipCIDR) String() string {
	p := c.prefix
	if c.addr.bare {
		p -= 96
	}
	return c.addr.String() + "/" + strconv.Itoa(p)
}

// compareCIDR is ip6addr's: by network address, then the shorter prefix
// (the larger network) first... as its own code has it: b.prefix - a.prefix.
func compareCIDR(a, b ipCIDR) int {
	if c := compareIP(a.addr, b.addr); c != 0 {
		return c
	}
	return b.prefix - a.prefix
}

// parseMAC is macaddr.parse of a JSON value: a string of six octets
// separated by ':' or '-' (or twelve hex digits), or a 48-bit number.
func parseMAC(v any) (uint64, error) {
	switch x := v.(type) {
	case float64:
		if x != math.Floor(x) || x < 0 || x > 0xffffffffffff {
			return 0, fmt.Errorf("%w: Value must be 48-bit", errValue)
		}
		return uint64(x), nil
	case string:
		return parseMACString(x)
	}
	return 0, fmt.Errorf("%w: not a MAC address", errValue)
}

func parseMACString(in string) (uint64, error) {
	s := jsToLower(in)
	var value uint64
	pos := 0
	octet := ""
	var sep byte
	issep := func(c byte) bool {
		if sep != 0 {
			return c == sep
		}
		if c == ':' || c == '-' {
			sep = c
			return true
		}
		return false
	}
	process := func() error {
		switch {
		case octet == "":
			return fmt.Errorf("%w: expected to find a hexadecimal number", errValue)
		case len(octet) > 2:
			return fmt.Errorf("%w: too many hexadecimal digits in %q", errValue, octet)
		case pos < 6:
			n, _ := strconv.ParseUint(octet, 16, 8)
			value = value*0x100 + n
			pos++
			octet = ""
			return nil
		}
		return fmt.Errorf("%w: too many octets in MAC address", errValue)
	}
	var last byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		last = c
		switch {
		case issep(c):
			if err := process(); err != nil {
				return 0, err
			}
		case '0' <= c && c <= '9' || 'a' <= c && c <= 'f':
			octet += string(c)
		default:
			return 0, fmt.Errorf("%w: unrecognized character", errValue)
		}
	}
	if len(s) > 0 && issep(last) {
		return 0, fmt.Errorf("%w: trailing separator in MAC address", errValue)
	}
	if pos == 0 {
		if len(octet) != 12 {
			return 0, fmt.Errorf("%w: MAC address is too short", errValue)
		}
		n, _ := strconv.ParseUint(octet, 16, 64)
		return n, nil
	}
	if err := process(); err != nil {
		return 0, err
	}
	if pos != 6 {
		return 0, fmt.Errorf("%w: too few octets in MAC address", errValue)
	}
	return value, nil
}

func macString(v uint64) string {
	b := make([]string, 6)
	for i := range b {
		b[i] = fmt.Sprintf("%02x", (v>>(8*(5-i)))&0xff)
	}
	return strings.Join(b, ":")
}

// jsToLower is String.prototype.toLowerCase for the ASCII these parsers
// accept; other characters make the value invalid anyway.
func jsToLower(s string) string { return strings.ToLower(s) }

func utf16Len(s string) int {
	n := 0
	for _, r := range s {
		n++
		if r >= 0x10000 {
			n++
		}
	}
	return n
}

// jsStringToNumber is JavaScript's Number(string).
func jsStringToNumber(s string) float64 {
	t := strings.Trim(s, jsSpace)
	if t == "" {
		return 0
	}
	if len(t) > 2 && t[0] == '0' {
		base := 0
		switch t[1] {
		case 'x', 'X':
			base = 16
		case 'o', 'O':
			base = 8
		case 'b', 'B':
			base = 2
		}
		if base != 0 {
			n, err := strconv.ParseUint(t[2:], base, 64)
			if err != nil || strings.ContainsAny(t[2:3], "+-_") || strings.Contains(t, "_") {
				return math.NaN()
			}
			return float64(n)
		}
	}
	switch t {
	case "Infinity", "+Infinity":
		return math.Inf(1)
	case "-Infinity":
		return math.Inf(-1)
	}
	if !jsDecimal.MatchString(t) {
		return math.NaN()
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return f
		}
		return math.NaN()
	}
	return f
}
