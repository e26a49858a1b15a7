package shard

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Index columns hold what Moray's indexObject makes of a value's fields:
// each field is turned into text the way Moray's JavaScript turns it
// (String(v) for strings, parseFloat for numbers, "TRUE"/"FALSE" for
// booleans, '{a, b}' array literals for array types) and PostgreSQL casts
// that text to the column's type, as it does for Moray's parameters. A
// missing field leaves the column NULL; a boolean that is neither true
// nor false fails the write, as in Moray.

// IndexTypeError is Moray's InvalidIndexTypeError: a field that cannot be
// put in its index column.
type IndexTypeError struct {
	Field, Type string
	Value       string
}

func (e *IndexTypeError) Error() string {
	return fmt.Sprintf("index(%s) is of type %s", e.Field, e.Type)
}

// indexValues returns, for each of the bucket's index fields in fields
// order, the text to store (nil for NULL).
func indexValues(opts BucketOptions, fields []string, value string) ([]any, error) {
	if len(fields) == 0 {
		return nil, nil
	}
	// value is the codec's canonical text, so its top level splits
	// without decoding the whole object.
	top, err := topFields(value)
	if err != nil {
		return nil, err
	}
	out := make([]any, len(fields))
	for i, f := range fields {
		j := top.find(f)
		if j < 0 {
			continue
		}
		var v any
		d := json.NewDecoder(strings.NewReader(top[j].val))
		d.UseNumber()
		if err := d.Decode(&v); err != nil {
			return nil, err
		}
		if v == nil {
			continue
		}
		t := opts.Index[f].Type
		it := indexTypes[t]
		if it.scalar == "" {
			s, err := mapIndexValue(f, t, v, false)
			if err != nil {
				return nil, err
			}
			out[i] = s
			continue
		}
		elems, isArray := v.([]any)
		if !isArray {
			elems = []any{v}
		}
		parts := make([]string, len(elems))
		for j, e := range elems {
			s, err := mapIndexValue(f, it.scalar, e, true)
			if err != nil {
				return nil, err
			}
			parts[j] = s
		}
		out[i] = "{" + strings.Join(parts, ", ") + "}"
	}
	return out, nil
}

// arraySpecial are the characters that make Moray quote a string in an
// array literal.
var arraySpecial = regexp.MustCompile(`[",{}\\]`)

func mapIndexValue(field, typ string, v any, inArray bool) (string, error) {
	switch typ {
	case "string":
		s := jsString(v)
		if inArray && arraySpecial.MatchString(s) {
			s = `"` + arraySpecialEscape.Replace(s) + `"`
		}
		return s, nil
	case "number":
		if n, ok := v.(json.Number); ok {
			f, _ := strconv.ParseFloat(string(n), 64)
			return jsNumber(f), nil
		}
		if v == nil {
			return "NaN", nil
		}
		return jsNumber(jsParseFloat(jsString(v))), nil
	case "boolean":
		if v == nil {
			// null.toString() throws in Moray.
			return "", &IndexTypeError{Field: field, Type: typ, Value: "null"}
		}
		switch strings.ToUpper(jsString(v)) {
		case "TRUE":
			return "TRUE", nil
		case "FALSE":
			return "FALSE", nil
		}
		return "", &IndexTypeError{Field: field, Type: typ, Value: jsString(v)}
	}
	if v == nil {
		// Moray's parsers throw on null inside an array.
		return "", &IndexTypeError{Field: field, Type: typ, Value: "null"}
	}
	var s string
	var err error
	switch typ {
	case "date":
		s, err = parseISO8601(jsString(v))
	case "daterange":
		s, err = parseDateRange(jsString(v))
	case "numrange":
		s, err = parseNumRange(jsString(v))
	case "uuid":
		s, err = parseUUID(jsString(v))
	case "ip":
		var a ipAddr
		if a, err = parseIP(jsNumeric(v)); err == nil {
			s = a.String()
		}
	case "subnet":
		var c ipCIDR
		if c, err = parseCIDR(v); err == nil {
			s = c.String()
		}
	case "mac":
		var m uint64
		if m, err = parseMAC(jsNumeric(v)); err == nil {
			s = macString(m)
		}
	default:
		return "", &IndexTypeError{Field: field, Type: typ}
	}
	if err != nil {
		return "", &IndexTypeError{Field: field, Type: typ, Value: jsString(v)}
	}
	return s, nil
}

// jsNumeric turns a decoded JSON number into the float64 JavaScript has.
func jsNumeric(v any) any {
	if n, ok := v.(json.Number); ok {
		f, _ := strconv.ParseFloat(string(n), 64)
		return f
	}
	return v
}

var arraySpecialEscape = strings.NewReplacer(`"`, `\"`, `,`, `\,`, `{`, `\{`, `}`, `\}`, `\`, `\\`)

// jsString is JavaScript's String(v) for a decoded JSON value.
func jsString(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return x
	case bool:
		if x {
			return "true"
		}
		return "false"
	case json.Number:
		f, _ := strconv.ParseFloat(string(x), 64)
		return jsNumber(f)
	case []any:
		// Array.prototype.join: null and undefined elements are empty.
		parts := make([]string, len(x))
		for i, e := range x {
			if e != nil {
				parts[i] = jsString(e)
			}
		}
		return strings.Join(parts, ",")
	default:
		return "[object Object]"
	}
}

// jsNumber is JavaScript's String(f): JSON.stringify's digits, and the
// words for the values JSON has no digits for.
func jsNumber(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return string(appendJSNumber(nil, f))
}

// jsFloatPrefix is the longest prefix parseFloat reads.
var jsFloatPrefix = regexp.MustCompile(`^[+-]?(Infinity|[0-9]+\.?[0-9]*([eE][+-]?[0-9]+)?|\.[0-9]+([eE][+-]?[0-9]+)?)`)

// jsParseFloat is JavaScript's parseFloat.
func jsParseFloat(s string) float64 {
	s = strings.TrimLeft(s, " \t\n\v\f\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff")
	m := jsFloatPrefix.FindString(s)
	if m == "" {
		return math.NaN()
	}
	switch strings.TrimLeft(m, "+-") {
	case "Infinity":
		if m[0] == '-' {
			return math.Inf(-1)
		}
		return math.Inf(1)
	}
	// A prefix that ends in an exponent marker without digits is not one.
	f, err := strconv.ParseFloat(m, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return f
		}
		return math.NaN()
	}
	return f
}

// indexCast is the SQL that casts a text parameter to a field's column type.
func indexCast(p int, typ string) string {
	return fmt.Sprintf("$%d::text::%s", p, indexTypes[typ].pg)
}

// orderedFields lists a bucket's index fields in the order of its index
// object, which is the order Moray gives them columns and fills them in.
func orderedFields(opts BucketOptions) []string {
	if opts.Config.Index == "" {
		return sortedFields(opts.Index)
	}
	d := json.NewDecoder(strings.NewReader(opts.Config.Index))
	var out []string
	seen := map[string]bool{}
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return sortedFields(opts.Index)
	}
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return sortedFields(opts.Index)
		}
		k, _ := t.(string)
		var skip json.RawMessage
		if err := d.Decode(&skip); err != nil {
			return sortedFields(opts.Index)
		}
		if _, ok := opts.Index[k]; ok && !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	if len(out) != len(opts.Index) {
		return sortedFields(opts.Index)
	}
	return out
}

// indexReadSQL selects each index column as JSON, after the columns a
// read selects itself.
func indexReadSQL(fields []string) string {
	var b strings.Builder
	for _, f := range fields {
		b.WriteString(", to_json(")
		b.WriteString(column(f))
		b.WriteString(")")
	}
	return b.String()
}

// readValue is what a client reads for a stored row, as Moray's
// rowToObject and electric-moray make it: the stored value less "vnode",
// with each index field replaced by its column (as node-postgres parses
// it: numeric as a JavaScript number), or removed when the column is NULL
// (unless the value holds null), except that a scalar index leaves an
// array in the value alone, and a field still being reindexed (added by
// updateBucket, its column not yet filled in every row) is left as the
// value has it. The columns are PostgreSQL's to_json of each.
func readValue(opts BucketOptions, fields []string, stored string) func(cols [][]byte) ([]byte, error) {
	return func(cols [][]byte) ([]byte, error) {
		text, err := ClientValue(stored)
		if err != nil || len(fields) == 0 {
			return text, err
		}
		return mergeColumns(opts, fields, string(text), cols)
	}
}

// mergeColumns is a value text with the index columns merged in as
// readValue describes; reindexObjects stores what it gives (vnode kept).
func mergeColumns(opts BucketOptions, fields []string, text string, cols [][]byte) ([]byte, error) {
	reindexing := opts.reindexing()
	fs, err := topFields(text)
	if err != nil {
		return nil, err
	}
	for i, f := range fields {
		if reindexing[f] {
			continue
		}
		col := cols[i]
		t := opts.Index[f].Type
		if col != nil {
			if col, err = canonical(col, t); err != nil {
				return nil, err
			}
		}
		j := fs.find(f)
		switch {
		case col == nil:
			if j >= 0 && fs[j].val != "null" {
				fs = append(fs[:j], fs[j+1:]...)
			}
		case j >= 0 && strings.HasPrefix(fs[j].val, "["):
			if indexTypes[t].scalar != "" {
				fs[j].val = string(col)
			}
		case j >= 0:
			fs[j].val = string(col)
		default:
			fs = append(fs, field{quoted: quoteKey(f), key: f, val: string(col)})
		}
	}
	return []byte(fs.text()), nil
}

// canonical is a column's to_json as JSON.stringify would write the value
// node-postgres made of it.
func canonical(col []byte, typ string) ([]byte, error) {
	switch typ {
	case "number":
		col = jsonNumberish(col)
	case "[number]", "[date]":
		var elems []json.RawMessage
		if err := json.Unmarshal(col, &elems); err != nil {
			return nil, err
		}
		var err error
		for j := range elems {
			if string(elems[j]) == "null" {
				continue
			}
			if typ == "[number]" {
				elems[j] = jsonNumberish(elems[j])
			} else if elems[j], err = jsonDate(elems[j]); err != nil {
				return nil, err
			}
		}
		col, _ = json.Marshal(elems)
	case "date":
		var err error
		if col, err = jsonDate(col); err != nil {
			return nil, err
		}
	case "daterange":
		var text string
		if err := json.Unmarshal(col, &text); err != nil {
			return nil, err
		}
		fixed, err := fixupDateRange(text)
		if err != nil {
			return nil, err
		}
		col, _ = json.Marshal(fixed)
	}
	// Wrapped in an object, the codec writes it as JSON.stringify would.
	text, err := MorayValue(append(append([]byte(`{"v":`), col...), '}'), nil)
	if err != nil {
		return nil, err
	}
	return []byte(text[len(`{"v":`) : len(text)-1]), nil
}

// jsonDate is a timestamptz column's to_json as node-postgres reads it
// (a Date) and JSON.stringify writes it: toISOString, in milliseconds.
func jsonDate(raw []byte) ([]byte, error) {
	var text string
	if err := json.Unmarshal(raw, &text); err != nil {
		return nil, err
	}
	t, err := time.Parse(time.RFC3339Nano, text)
	if err != nil {
		return nil, fmt.Errorf("timestamp %q: %w", text, err)
	}
	return json.Marshal(jsISOString(t.Truncate(time.Millisecond)))
}

// pgRange is a tstzrange as PostgreSQL writes it, in the ISO DateStyle.
var pgRange = regexp.MustCompile(`^([(\[])(?:"([ \d:.TZ+-]+)")?,(?:"([ \d:.TZ+-]+)")?([)\]])$`)

// fixupDateRange is Moray's reading of a tstzrange: each bound rewritten
// as toISOString writes it. Moray fails on what its pattern does not
// take (an empty or infinite range), and so does this.
func fixupDateRange(text string) (string, error) {
	m := pgRange.FindStringSubmatch(text)
	if m == nil {
		return "", fmt.Errorf("invalid date range: %q", text)
	}
	bounds := [2]string{}
	for i, b := range []string{m[2], m[3]} {
		if b == "" {
			continue
		}
		t, err := parsePgTimestamp(b)
		if err != nil {
			return "", err
		}
		bounds[i] = jsISOString(t.Truncate(time.Millisecond))
	}
	return m[1] + bounds[0] + "," + bounds[1] + m[4], nil
}

// parsePgTimestamp reads a timestamptz in PostgreSQL's ISO output form.
func parsePgTimestamp(s string) (time.Time, error) {
	for _, layout := range []string{"2006-01-02 15:04:05.999999-07", "2006-01-02 15:04:05.999999-07:00", "2006-01-02 15:04:05.999999-07:00:00"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("invalid timestamp %q", s)
}

// jsonNumberish is a numeric column's JSON as JavaScript reads it:
// parseFloat of the digits, NaN and the infinities as null.
func jsonNumberish(raw []byte) []byte {
	s := string(raw)
	if len(s) > 0 && s[0] == '"' {
		return []byte("null") // to_json quotes NaN and the infinities
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return []byte("null")
	}
	return []byte(jsNumber(f))
}

// field is one top-level member of a canonical (JSON.stringify'd) object.
type field struct {
	quoted, key, val string
}

type fieldList []field

func (fs fieldList) find(key string) int {
	for i, f := range fs {
		if f.key == key {
			return i
		}
	}
	return -1
}

func (fs fieldList) text() string {
	var b strings.Builder
	b.WriteByte('{')
	for i, f := range fs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(f.quoted)
		b.WriteByte(':')
		b.WriteString(f.val)
	}
	b.WriteByte('}')
	return b.String()
}

// quoteKey writes a key as JSON.stringify does; index field names are
// plain ASCII (ValidateIndex), so no escape is ever needed.
func quoteKey(k string) string { return `"` + k + `"` }

// topFields splits a canonical object's text, as the codec writes it (no
// whitespace), into its top-level members, in order.
func topFields(text string) (fieldList, error) {
	if len(text) < 2 || text[0] != '{' || text[len(text)-1] != '}' {
		return nil, fmt.Errorf("%w: not an object", ErrBadValue)
	}
	var out fieldList
	i := 1
	for i < len(text)-1 {
		kEnd := stringEnd(text, i)
		if kEnd < 0 || kEnd >= len(text) || text[kEnd] != ':' {
			return nil, fmt.Errorf("%w: bad member at %d", ErrBadValue, i)
		}
		quoted := text[i:kEnd]
		key := quoted[1 : len(quoted)-1]
		if strings.IndexByte(key, '\\') >= 0 {
			if err := json.Unmarshal([]byte(quoted), &key); err != nil {
				return nil, err
			}
		}
		vStart := kEnd + 1
		vEnd := valueEnd(text, vStart)
		if vEnd < 0 {
			return nil, fmt.Errorf("%w: bad value at %d", ErrBadValue, vStart)
		}
		out = append(out, field{quoted: quoted, key: key, val: text[vStart:vEnd]})
		i = vEnd
		if i < len(text)-1 {
			if text[i] != ',' || i+1 >= len(text)-1 {
				return nil, fmt.Errorf("%w: expected ',' and a member at %d", ErrBadValue, i)
			}
			i++
		}
	}
	return out, nil
}

// stringEnd is the index just past the JSON string starting at i.
func stringEnd(s string, i int) int {
	if i >= len(s) || s[i] != '"' {
		return -1
	}
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// valueEnd is the index just past the JSON value starting at i.
func valueEnd(s string, i int) int {
	depth := 0
	for j := i; j < len(s); j++ {
		switch c := s[j]; c {
		case '"':
			e := stringEnd(s, j)
			if e < 0 {
				return -1
			}
			j = e - 1
			if depth == 0 {
				return e
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return j
			}
			depth--
			if depth == 0 {
				return j + 1
			}
		case ',':
			if depth == 0 {
				return j
			}
		}
	}
	if depth == 0 {
		return len(s)
	}
	return -1
}

// reindexing lists the fields of reindex_active, whose columns old rows
// have not filled yet.
func (o BucketOptions) reindexing() map[string]bool {
	if o.Config.ReindexActive == "" {
		return nil
	}
	var byVersion map[string][]string
	if json.Unmarshal([]byte(o.Config.ReindexActive), &byVersion) != nil {
		return nil
	}
	out := map[string]bool{}
	for _, fs := range byVersion {
		for _, f := range fs {
			out[f] = true
		}
	}
	return out
}
