package shard

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Search filters are the RFC 4515 strings that Moray's findObjects takes,
// as parsed by the ldap-filter/ldapjs packages Moray uses.

const (
	maxFilterLen   = 64 << 10
	maxFilterDepth = 100
)

type filterOp uint8

const (
	opAnd filterOp = iota + 1
	opOr
	opNot
	opEq
	opPresent
	opSubstr
	opGE
	opLE
	opApprox
	opExt // an extensible match, (attr:rule:=value)
)

var opText = [...]string{opAnd: "&", opOr: "|", opNot: "!", opEq: "=", opGE: ">=", opLE: "<=", opApprox: "~="}

// Filter is a parsed search filter.
type Filter struct {
	op       filterOp
	attr     string
	value    string // for =, >=, <= and ~=
	initial  string // the substring parts: initial*any*...*final
	any      []string
	final    string
	children []*Filter
	rule     string // an extensible match's rule
	hasStar  bool   // an extensible match's value holds an unescaped '*'
}

// ParseFilter parses an RFC 4515 filter string. Errors say what is wrong and at which byte offset.
func ParseFilter(s string) (*Filter, error) {
	if len(s) > maxFilterLen {
		return nil, fmt.Errorf("invalid filter: %d bytes long, over the limit of %d", len(s), maxFilterLen)
	}
	t := strings.TrimSpace(s)
	if t == "" {
		return nil, errors.New("invalid filter: empty")
	}
	lead := len(s) - len(strings.TrimLeftFunc(s, unicode.IsSpace))
	p := &parser{s: t, off: lead}
	if t[0] != '(' {
		// ldapjs wraps a bare "a=b" in parentheses; so do we, and map
		// offsets back to the caller's string.
		p.s = "(" + t + ")"
		p.off = lead - 1
		p.wrapped = true
	}
	f, err := p.filter(1)
	if err != nil {
		return nil, err
	}
	if p.i < len(p.s) {
		if p.wrapped {
			// The caller's own ")" closed the filter we wrapped.
			return nil, p.errf(p.i-1, `unbalanced ")"`)
		}
		return nil, p.errf(p.i, "unexpected %s after the end of the filter", p.found(p.i))
	}
	return f, nil
}

type parser struct {
	s       string
	i       int
	off     int // added to an index in s to give an offset in the input
	wrapped bool
}

func (p *parser) errf(i int, format string, a ...any) error {
	return fmt.Errorf("invalid filter: %s at offset %d", fmt.Sprintf(format, a...), p.off+i)
}

// found describes the byte at i for an error message; the parenthesis
// added around a bare filter is not the caller's, so it reads as the end.
func (p *parser) found(i int) string {
	if i >= len(p.s) || p.wrapped && i == len(p.s)-1 {
		return "end of filter"
	}
	r, n := utf8.DecodeRuneInString(p.s[i:])
	if r == utf8.RuneError && n == 1 {
		return fmt.Sprintf("byte %#02x", p.s[i])
	}
	return strconv.QuoteRune(r)
}

func (p *parser) filter(depth int) (*Filter, error) {
	if p.i >= len(p.s) || p.s[p.i] != '(' {
		return nil, p.errf(p.i, `expected "(", found %s`, p.found(p.i))
	}
	// The parser, String and SQL all recurse; the bound keeps them off
	// the stack limit whatever the input.
	if depth > maxFilterDepth {
		return nil, p.errf(p.i, "filter nested more than %d deep", maxFilterDepth)
	}
	p.i++
	if p.i >= len(p.s) {
		return nil, p.errf(p.i, `unexpected end of filter, missing ")"`)
	}
	var f *Filter
	switch c := p.s[p.i]; c {
	case '&', '|':
		p.i++
		f = &Filter{op: opAnd}
		if c == '|' {
			f.op = opOr
		}
		for p.i < len(p.s) && p.s[p.i] == '(' {
			k, err := p.filter(depth + 1)
			if err != nil {
				return nil, err
			}
			f.children = append(f.children, k)
		}
		if len(f.children) == 0 {
			return nil, p.errf(p.i, `%q needs at least one filter, found %s`, c, p.found(p.i))
		}
		if p.i >= len(p.s) || p.s[p.i] != ')' {
			return nil, p.errf(p.i, `expected "(" or ")" in %q, found %s`, c, p.found(p.i))
		}
	case '!':
		p.i++
		if p.i >= len(p.s) || p.s[p.i] != '(' {
			return nil, p.errf(p.i, `"!" needs a filter, found %s`, p.found(p.i))
		}
		k, err := p.filter(depth + 1)
		if err != nil {
			return nil, err
		}
		f = &Filter{op: opNot, children: []*Filter{k}}
		if p.i >= len(p.s) || p.s[p.i] != ')' {
			return nil, p.errf(p.i, `"!" takes exactly one filter: expected ")", found %s`, p.found(p.i))
		}
	default:
		var err error
		if f, err = p.item(); err != nil {
			return nil, err
		}
	}
	p.i++ // the ')' checked above
	return f, nil
}

func isAttrByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// item parses a simple filter after its '(' and up to its ')'.
func (p *parser) item() (*Filter, error) {
	a := p.i
	for p.i < len(p.s) && isAttrByte(p.s[p.i]) {
		p.i++
	}
	attr := p.s[a:p.i]
	f := &Filter{attr: attr}
	switch c, next := p.at(p.i), p.at(p.i+1); {
	case c == ':':
		// (attr:rule:=value) or (attr:dn:rule:=value), as moray-filter
		// reads them.
		f.op = opExt
		p.i++
		r := p.i
		for p.i < len(p.s) && p.s[p.i] != ':' && p.s[p.i] != ')' {
			p.i++
		}
		f.rule = p.s[r:p.i]
		if strings.EqualFold(f.rule, "dn") && p.at(p.i) == ':' {
			p.i++
			r = p.i
			for p.i < len(p.s) && p.s[p.i] != ':' && p.s[p.i] != ')' {
				p.i++
			}
			f.rule = p.s[r:p.i]
		}
		if p.at(p.i) != ':' || p.at(p.i+1) != '=' || f.rule == "" {
			return nil, p.errf(p.i, "missing := in ext filter")
		}
		p.i += 2
	case c == '=':
		f.op = opEq
		p.i++
	case c == '>' && next == '=':
		f.op = opGE
		p.i += 2
	case c == '<' && next == '=':
		f.op = opLE
		p.i += 2
	case c == '~' && next == '=':
		f.op = opApprox
		p.i += 2
	case attr == "":
		return nil, p.errf(p.i, `expected an attribute name, "&", "|" or "!", found %s`, p.found(p.i))
	default:
		return nil, p.errf(p.i, `expected "=", ">=", "<=" or "~=" after attribute %q, found %s`, attr, p.found(p.i))
	}
	if attr == "" {
		return nil, p.errf(a, "missing attribute name")
	}

	// Only '=' gives '*' a meaning; ldapjs takes it literally elsewhere.
	var parts []string
	var v strings.Builder
	for {
		if p.i >= len(p.s) {
			return nil, p.errf(p.i, `unexpected end of filter in the value of %q, missing ")"`, attr)
		}
		c := p.s[p.i]
		if c == ')' {
			break
		}
		switch {
		case c == '(':
			return nil, p.errf(p.i, `unescaped "(" in the value of %q (write it as \28)`, attr)
		case c == '\\':
			if p.i+2 >= len(p.s) || !isHex(p.s[p.i+1]) || !isHex(p.s[p.i+2]) {
				return nil, p.errf(p.i, `bad escape in the value of %q: "\" must be followed by two hex digits`, attr)
			}
			v.WriteByte(unhex(p.s[p.i+1])<<4 | unhex(p.s[p.i+2]))
			p.i += 3
			continue
		case c == '*' && f.op == opEq:
			parts = append(parts, v.String())
			v.Reset()
		case c == '*' && f.op == opExt:
			// The value stays whole, and splits too, for
			// caseIgnoreSubstringsMatch.
			f.hasStar = true
			f.value += v.String() + "*"
			parts = append(parts, v.String())
			v.Reset()
		default:
			v.WriteByte(c)
		}
		p.i++
	}
	parts = append(parts, v.String())

	if f.op == opExt {
		f.value += v.String()
		if f.hasStar {
			f.initial, f.final = parts[0], v.String()
			for _, s := range parts[1:] {
				if s != "" {
					f.any = append(f.any, s)
				}
			}
		}
		return f, nil
	}
	if len(parts) == 1 {
		f.value = parts[0]
	} else {
		f.op = opSubstr
		f.initial, f.final = parts[0], parts[len(parts)-1]
		// An empty middle part ("a**b") constrains nothing; dropping it
		// keeps one form per meaning, so String round-trips.
		for _, s := range parts[1 : len(parts)-1] {
			if s != "" {
				f.any = append(f.any, s)
			}
		}
		if f.initial == "" && f.final == "" && len(f.any) == 0 {
			f.op = opPresent
		}
	}
	return f, nil
}

func (p *parser) at(i int) byte {
	if i < len(p.s) {
		return p.s[i]
	}
	return 0
}

// String renders the filter back in RFC 4515 form (normalized, values escaped), so Parse(f.String()) == f.
func (f *Filter) String() string {
	if f == nil || f.op == 0 {
		return ""
	}
	var b strings.Builder
	f.write(&b)
	return b.String()
}

func (f *Filter) write(b *strings.Builder) {
	b.WriteByte('(')
	switch f.op {
	case opAnd, opOr, opNot:
		b.WriteString(opText[f.op])
		for _, k := range f.children {
			k.write(b)
		}
	case opEq, opGE, opLE, opApprox:
		b.WriteString(f.attr)
		b.WriteString(opText[f.op])
		escapeValue(b, f.value)
	case opExt:
		b.WriteString(f.attr)
		b.WriteString(":" + f.rule + ":=")
		if f.hasStar {
			// The stars are the value's own, unescaped.
			parts := strings.Split(f.value, "*")
			for i, s := range parts {
				if i > 0 {
					b.WriteByte('*')
				}
				escapeValue(b, s)
			}
		} else {
			escapeValue(b, f.value)
		}
	case opPresent:
		b.WriteString(f.attr)
		b.WriteString("=*")
	case opSubstr:
		b.WriteString(f.attr)
		b.WriteByte('=')
		escapeValue(b, f.initial)
		b.WriteByte('*')
		for _, s := range f.any {
			escapeValue(b, s)
			b.WriteByte('*')
		}
		escapeValue(b, f.final)
	}
	b.WriteByte(')')
}

// escapeValue escapes what RFC 4515 requires, and also control bytes and
// invalid UTF-8 so that a filter in a log line stays readable.
func escapeValue(b *strings.Builder, s string) {
	const hex = "0123456789abcdef"
	for i := 0; i < len(s); {
		c := s[i]
		r, n := utf8.DecodeRuneInString(s[i:])
		if c == '*' || c == '(' || c == ')' || c == '\\' || c < 0x20 || c == 0x7f || r == utf8.RuneError && n == 1 {
			b.WriteByte('\\')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
			i++
			continue
		}
		b.WriteString(s[i : i+n])
		i += n
	}
}

// Attributes lists the distinct attribute names the filter uses, sorted.
func (f *Filter) Attributes() []string {
	var out []string
	var walk func(*Filter)
	walk = func(f *Filter) {
		if f.attr != "" {
			out = append(out, f.attr)
		}
		for _, k := range f.children {
			walk(k)
		}
	}
	if f != nil {
		walk(f)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Column says how an attribute is stored in a bucket table. SQL may follow
// Expr with ::text, so it should be a column or a parenthesized expression.
type Column struct {
	Expr string // SQL expression, already quoted/safe, e.g. `"dirname"`, `_key`, `(_value->'x')`
	Type string // "string", "number", "boolean", "[string]", "[number]", "[boolean]" or "json"
}

// SQL compiles the filter into a boolean SQL expression. resolve maps an attribute
// name to its column; args receives the parameter values and placeholders are
// numbered $len(*args)+1 onward, so the caller may have queued parameters already.
func (f *Filter) SQL(resolve func(attr string) Column, args *[]any) (string, error) {
	return f.compile("", resolve, args)
}

// compile is SQL for a bucket, whose name Moray's NotIndexedError names.
func (f *Filter) compile(bucket string, resolve func(attr string) Column, args *[]any) (string, error) {
	if f == nil || f.op == 0 {
		return "", errors.New("invalid query: empty filter")
	}
	if resolve == nil || args == nil {
		return "", errors.New("invalid query: SQL needs a resolver and an argument list")
	}
	n := len(*args)
	var b strings.Builder
	c := &compiler{bucket: bucket, resolve: resolve, args: args}
	if err := f.sql(&b, c); err != nil {
		// The caller may reuse args; drop what a failed compile queued.
		clear((*args)[n:])
		*args = (*args)[:n]
		return "", err
	}
	return b.String(), nil
}

type compiler struct {
	bucket  string
	resolve func(string) Column
	args    *[]any
}

func (f *Filter) sql(b *strings.Builder, c *compiler) error {
	switch f.op {
	case opAnd, opOr:
		sep := " AND "
		if f.op == opOr {
			sep = " OR "
		}
		b.WriteByte('(')
		for i, k := range f.children {
			if i > 0 {
				b.WriteString(sep)
			}
			if err := k.sql(b, c); err != nil {
				return err
			}
		}
		b.WriteByte(')')
		return nil
	case opNot:
		// As Moray's: typed leaves say false, not NULL, where Moray's
		// do (a missing field fails "=", so (!(type=dir)) matches it),
		// and NULL where Moray's do (an array or range operator on a
		// missing field), which NOT keeps NULL.
		b.WriteString("(NOT ")
		if err := f.children[0].sql(b, c); err != nil {
			return err
		}
		b.WriteString(")")
		return nil
	}
	col := c.resolve(f.attr)
	var s string
	var err error
	switch {
	case col.Type != "json" && col.Expr != "":
		s, err = f.typedSQL(c.bucket, col, c.args)
	case f.op == opExt:
		s, err = f.unindexedExtSQL(c.bucket)
	default:
		if s, err = f.leafSQL(col, c.args); err == nil {
			// Two-valued, as a JavaScript test of the field is.
			s = "COALESCE(" + s + ", false)"
		}
	}
	if err != nil {
		return err
	}
	b.WriteString(s)
	return nil
}

func (f *Filter) leafSQL(col Column, args *[]any) (string, error) {
	if col.Expr == "" {
		return "", fmt.Errorf("invalid query: no column for attribute %q", f.attr)
	}
	elem, array := strings.CutPrefix(col.Type, "[")
	if array {
		var ok bool
		if elem, ok = strings.CutSuffix(elem, "]"); !ok || elem == "json" {
			elem = "?"
		}
	}
	var cast string
	switch elem {
	case "string", "json":
	case "number":
		cast = "::numeric"
	case "boolean":
		cast = "::boolean"
	default:
		return "", fmt.Errorf("invalid query: attribute %q has unknown column type %q", f.attr, col.Type)
	}
	for _, v := range append([]string{f.value, f.initial, f.final}, f.any...) {
		if strings.IndexByte(v, 0) >= 0 {
			return "", fmt.Errorf("invalid query: the value for %q holds a NUL byte, which PostgreSQL text cannot", f.attr)
		}
		if !utf8.ValidString(v) {
			return "", fmt.Errorf("invalid query: the value for %q is not valid UTF-8", f.attr)
		}
	}
	e := col.Expr
	arg := func(v string) string {
		*args = append(*args, v)
		return "$" + strconv.Itoa(len(*args))
	}
	// unnest tests one element of an array column.
	unnest := func(cond string) string {
		return "EXISTS (SELECT 1 FROM unnest(" + e + ") AS x(v) WHERE " + cond + ")"
	}

	switch f.op {
	case opPresent:
		if elem == "json" {
			return "(" + e + " IS NOT NULL AND " + e + " <> 'null'::jsonb)", nil
		}
		return e + " IS NOT NULL", nil

	case opEq, opApprox:
		if err := checkValue(f.attr, elem, f.value); err != nil {
			return "", err
		}
		switch {
		case elem == "json":
			// A JSON array matches when it holds the value, as a Moray
			// array field does.
			return "((" + e + " #>> '{}') = " + arg(f.value) + " OR " + e + " @> jsonb_build_array(" + arg(f.value) + "::text))", nil
		case array:
			return arg(f.value) + cast + " = ANY(" + e + ")", nil
		}
		return e + " = " + arg(f.value) + cast, nil

	case opGE, opLE:
		if elem == "boolean" {
			return "", fmt.Errorf("invalid query: attribute %q is boolean and cannot be compared with >= or <=", f.attr)
		}
		if err := checkValue(f.attr, elem, f.value); err != nil {
			return "", err
		}
		cmp := " >= "
		if f.op == opLE {
			cmp = " <= "
		}
		switch {
		case elem == "json":
			return "(" + e + " #>> '{}')" + cmp + arg(f.value), nil
		case array:
			return unnest("v" + cmp + arg(f.value) + cast), nil
		}
		return e + cmp + arg(f.value) + cast, nil

	case opSubstr:
		if elem == "boolean" {
			return "", fmt.Errorf("invalid query: attribute %q is boolean and cannot match a substring", f.attr)
		}
		var lhs string
		switch {
		case elem == "json":
			lhs = "(" + e + " #>> '{}')"
		case array && elem == "number":
			lhs = "v::text"
		case array:
			lhs = "v"
		case elem == "number":
			lhs = e + "::text"
		default:
			lhs = e
		}
		s := lhs + " LIKE " + arg(f.likePattern())
		if array {
			s = unnest(s)
		}
		return s, nil
	}
	return "", fmt.Errorf("invalid query: bad filter operation %d", f.op)
}

var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// likePattern is the substring filter as a LIKE pattern; backslash is
// PostgreSQL's default LIKE escape.
func (f *Filter) likePattern() string {
	var b strings.Builder
	b.WriteString(likeEscaper.Replace(f.initial))
	b.WriteByte('%')
	for _, s := range f.any {
		b.WriteString(likeEscaper.Replace(s))
		b.WriteByte('%')
	}
	b.WriteString(likeEscaper.Replace(f.final))
	return b.String()
}

// checkValue rejects a value its column's type cannot hold, which
// PostgreSQL would otherwise report as a failed cast mid-query.
func checkValue(attr, typ, v string) error {
	switch typ {
	case "number":
		if !isDecimal(v) {
			return fmt.Errorf("invalid query: attribute %q is a number, but %q is not", attr, v)
		}
	case "boolean":
		if v != "true" && v != "false" {
			return fmt.Errorf("invalid query: attribute %q is boolean, but %q is neither true nor false", attr, v)
		}
	}
	return nil
}

// isDecimal accepts the plain decimal numbers that both strconv.ParseFloat
// and PostgreSQL's numeric read the same way: no hex, underscores, NaN or
// Inf, and an exponent within numeric's ±1000.
func isDecimal(s string) bool {
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	digits := 0
	for ; i < len(s) && '0' <= s[i] && s[i] <= '9'; i++ {
		digits++
	}
	if i < len(s) && s[i] == '.' {
		for i++; i < len(s) && '0' <= s[i] && s[i] <= '9'; i++ {
			digits++
		}
	}
	if digits == 0 {
		return false
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		exp := 0
		start := i
		for ; i < len(s) && '0' <= s[i] && s[i] <= '9'; i++ {
			if exp = exp*10 + int(s[i]-'0'); exp > 1000 {
				return false
			}
		}
		if i == start {
			return false
		}
	}
	if i != len(s) {
		return false
	}
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}
