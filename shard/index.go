package shard

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
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
	var top map[string]json.RawMessage
	if err := json.Unmarshal([]byte(value), &top); err != nil {
		return nil, fmt.Errorf("value is not a JSON object: %w", err)
	}
	out := make([]any, len(fields))
	for i, f := range fields {
		raw, ok := top[f]
		if !ok {
			continue
		}
		var v any
		d := json.NewDecoder(strings.NewReader(string(raw)))
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
	return "", &IndexTypeError{Field: field, Type: typ}
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

// jsNumber is JavaScript's Number.prototype.toString(): the shortest
// digits that read back as f, in plain notation from 1e-6 up to 1e21.
func jsNumber(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	case f == 0:
		return "0"
	}
	sign := ""
	if f < 0 {
		sign, f = "-", -f
	}
	// digits and exponent n such that f = 0.digits × 10^n
	e := strconv.FormatFloat(f, 'e', -1, 64)
	mant, exp, _ := strings.Cut(e, "e")
	digits := strings.Replace(mant, ".", "", 1)
	x, _ := strconv.Atoi(exp)
	n := x + 1
	k := len(digits)
	switch {
	case k <= n && n <= 21:
		return sign + digits + strings.Repeat("0", n-k)
	case 0 < n && n <= 21:
		return sign + digits[:n] + "." + digits[n:]
	case -6 < n && n <= 0:
		return sign + "0." + strings.Repeat("0", -n) + digits
	}
	es := "+"
	if n-1 < 0 {
		es = "-"
	}
	m := digits[:1]
	if k > 1 {
		m += "." + digits[1:]
	}
	return sign + m + "e" + es + strconv.Itoa(abs(n-1))
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
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
// array in the value alone. The columns are PostgreSQL's to_json of each.
func readValue(opts BucketOptions, fields []string, stored string, cols [][]byte) ([]byte, error) {
	ms, err := members([]byte(stored))
	if err != nil {
		return nil, err
	}
	at := map[string]int{}
	out := ms[:0]
	for _, m := range ms {
		if m.key == "vnode" {
			continue
		}
		at[m.key] = len(out)
		out = append(out, m)
	}
	for i, f := range fields {
		col := cols[i]
		t := opts.Index[f].Type
		if col != nil && indexTypes[t].scalar == "" && t == "number" {
			col = jsonNumberish(col)
		} else if col != nil && t == "[number]" {
			var elems []json.RawMessage
			if json.Unmarshal(col, &elems) == nil {
				for j := range elems {
					elems[j] = jsonNumberish(elems[j])
				}
				col, _ = json.Marshal(elems)
			}
		}
		j, present := at[f]
		switch {
		case col == nil:
			if present && string(out[j].val) != "null" {
				out = append(out[:j], out[j+1:]...)
				for k, v := range at {
					if v > j {
						at[k] = v - 1
					}
				}
				delete(at, f)
			}
		case present && len(out[j].val) > 0 && out[j].val[0] == '[':
			if indexTypes[t].scalar != "" {
				out[j].val = col
			}
		case present:
			out[j].val = col
		default:
			at[f] = len(out)
			out = append(out, member{f, col})
		}
	}
	return []byte(emit(out)), nil
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
