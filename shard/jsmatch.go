package shard

import (
	"encoding/json"
	"math"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf16"
)

// Moray's findObjects tests every row PostgreSQL found again, in
// JavaScript, with moray-filter's matches on the object's value (the
// index fields as node-postgres read their columns, and _id, _key, _etag,
// _mtime, _txn_snap and _count added): Matches is that test. It uses
// JavaScript's comparisons, so (n>=10) fails a NaN and ("5" <= 10) holds;
// the filter's value is read by the attribute's type as Moray's parse
// leaves it. Date, range and extensible range filters pass every row, as
// Moray's do (PostgreSQL alone decides them); ip, subnet and mac compare
// as addresses.

// jsUndefined is a field the value does not have.
type jsUndefined struct{}

// Matches reports whether Moray's JavaScript test passes the row whose
// value (as JavaScript holds it) is v.
func (f *Filter) Matches(opts BucketOptions, v map[string]any) bool {
	switch f.op {
	case opAnd:
		for _, k := range f.children {
			if !k.Matches(opts, v) {
				return false
			}
		}
		return true
	case opOr:
		for _, k := range f.children {
			if k.Matches(opts, v) {
				return true
			}
		}
		return false
	case opNot:
		return !f.children[0].Matches(opts, v)
	}
	typ := ""
	if ix, ok := opts.Index[f.attr]; ok && !opts.reindexing()[f.attr] {
		typ = ix.Type
	}
	tv := attrValue(v, f.attr)
	if f.op == opExt {
		switch f.rule {
		case "overlaps", "contains", "within":
			return true
		case "caseIgnoreMatch", "2.5.13.2":
			want := strings.ToLower(f.value)
			return testValues(tv, func(x any) bool {
				s, ok := x.(string)
				return ok && strings.ToLower(s) == want
			})
		case "caseIgnoreSubstringsMatch", "2.5.13.4":
			low := &Filter{op: opSubstr, initial: strings.ToLower(f.initial), final: strings.ToLower(f.final)}
			for _, a := range f.any {
				low.any = append(low.any, strings.ToLower(a))
			}
			if !f.hasStar {
				low = &Filter{op: opEq, value: strings.ToLower(f.value)}
			}
			return testValues(tv, func(x any) bool {
				s, ok := x.(string)
				if !ok {
					return false
				}
				if low.op == opEq {
					return s == low.value
				}
				return low.substrMatch(strings.ToLower(s))
			})
		}
		return false
	}
	switch scalarType(typ) {
	case "date", "daterange", "numrange":
		return true
	case "ip", "mac", "subnet":
		if f.op == opEq || f.op == opGE || f.op == opLE {
			return testValues(tv, func(x any) bool {
				c, ok := compareAddress(scalarType(typ), x, f.value)
				if !ok {
					return false
				}
				switch f.op {
				case opGE:
					return c >= 0
				case opLE:
					return c <= 0
				}
				return c == 0
			})
		}
	}
	switch f.op {
	case opPresent:
		_, undef := tv.(jsUndefined)
		return !undef && tv != nil
	case opSubstr:
		if _, undef := tv.(jsUndefined); undef || tv == nil {
			return false
		}
		return testValues(tv, func(x any) bool { return f.substrMatch(jsToString(x)) })
	}
	want := f.jsFilterValue(typ)
	return testValues(tv, func(x any) bool {
		switch f.op {
		case opGE:
			return jsLessEq(want, x)
		case opLE:
			return jsLessEq(x, want)
		}
		return jsStrictEqual(want, x)
	})
}

// jsFilterValue is the filter's value as Moray's parse leaves it.
func (f *Filter) jsFilterValue(typ string) any {
	switch f.attr {
	case "_id", "_txn_snap", "_mtime":
		if typ == "" {
			return jsParseFloat(f.value)
		}
	}
	switch scalarType(typ) {
	case "number":
		return jsParseFloat(f.value)
	case "boolean":
		return strings.EqualFold(f.value, "true")
	}
	return f.value
}

func compareAddress(typ string, x any, want string) (int, bool) {
	switch typ {
	case "ip":
		s, ok := x.(string)
		if !ok {
			return 0, false
		}
		a, err := parseIPString(s)
		b, err2 := parseIPString(want)
		if err != nil || err2 != nil {
			return 0, false
		}
		return compareIP(a, b), true
	case "subnet":
		a, err := parseCIDR(x)
		b, err2 := parseCIDR(want)
		if err != nil || err2 != nil {
			return 0, false
		}
		return compareCIDR(a, b), true
	}
	a, err := parseMAC(x)
	b, err2 := parseMACString(want)
	if err != nil || err2 != nil {
		return 0, false
	}
	switch {
	case a < b:
		return -1, true
	case a > b:
		return 1, true
	}
	return 0, true
}

// attrValue is moray-filter's getAttrValue: the field, or failing that
// the first whose name matches ignoring case.
func attrValue(v map[string]any, attr string) any {
	if x, ok := v[attr]; ok {
		return x
	}
	low := strings.ToLower(attr)
	for k, x := range v {
		if strings.ToLower(k) == low {
			return x
		}
	}
	return jsUndefined{}
}

// testValues tests each element of an array, or the value itself.
func testValues(tv any, rule func(any) bool) bool {
	if arr, ok := tv.([]any); ok {
		for _, x := range arr {
			if rule(x) {
				return true
			}
		}
		return false
	}
	return rule(tv)
}

// jsLine is JavaScript's "." in a regular expression: any character but
// a line terminator.
const jsLine = `[^\n\r\x{2028}\x{2029}]*`

// substrMatch is moray-filter's substring test: a regular expression
// anchored at the start by the initial part and at the end by the final.
func (f *Filter) substrMatch(s string) bool {
	re := ""
	if f.initial != "" {
		re += "^" + regexp.QuoteMeta(f.initial) + jsLine
	}
	for _, a := range f.any {
		re += regexp.QuoteMeta(a) + jsLine
	}
	if f.final != "" {
		re += regexp.QuoteMeta(f.final) + "$"
	}
	m, err := regexp.Compile(re)
	return err == nil && m.MatchString(s)
}

// jsStrictEqual is ===.
func jsStrictEqual(a, b any) bool {
	switch x := a.(type) {
	case float64:
		y, ok := b.(float64)
		return ok && x == y
	case string:
		y, ok := b.(string)
		return ok && x == y
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	}
	return false
}

// jsToPrimitive is ToPrimitive for the values JSON makes: arrays join,
// objects are "[object Object]".
func jsToPrimitive(v any) any {
	switch x := v.(type) {
	case []any, map[string]any:
		return jsString(toJSONish(x))
	}
	return v
}

// toJSONish turns the JavaScript values back into what jsString reads.
func toJSONish(v any) any {
	switch x := v.(type) {
	case float64:
		return json.Number(jsNumber(x))
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = toJSONish(e)
		}
		return out
	case jsUndefined:
		return nil
	}
	return v
}

func jsToString(v any) string {
	switch x := v.(type) {
	case float64:
		return jsNumber(x)
	case jsUndefined:
		return "undefined"
	}
	return jsString(toJSONish(v))
}

func jsToNumber(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case bool:
		if x {
			return 1
		}
		return 0
	case nil:
		return 0
	case string:
		return jsStringToNumber(x)
	}
	return math.NaN()
}

// jsLessEq is a <= b.
func jsLessEq(a, b any) bool {
	pa, pb := jsToPrimitive(a), jsToPrimitive(b)
	sa, aStr := pa.(string)
	sb, bStr := pb.(string)
	if aStr && bStr {
		return compareUTF16(sa, sb) <= 0
	}
	x, y := jsToNumber(pa), jsToNumber(pb)
	if math.IsNaN(x) || math.IsNaN(y) {
		return false
	}
	return x <= y
}

// compareUTF16 orders strings by UTF-16 code units, as JavaScript does.
func compareUTF16(a, b string) int {
	ua, ub := utf16.Encode([]rune(a)), utf16.Encode([]rune(b))
	for i := 0; i < len(ua) && i < len(ub); i++ {
		if ua[i] != ub[i] {
			if ua[i] < ub[i] {
				return -1
			}
			return 1
		}
	}
	return len(ua) - len(ub)
}

// jsRowValue is the value Moray's findObjects tests: the value read as
// the client gets it, JSON numbers as JavaScript numbers, numeric index
// columns holding NaN or an infinity as those (JSON writes them null),
// and the row's own fields.
func jsRowValue(opts BucketOptions, fields []string, value []byte, cols [][]byte, o Object, count *int64) (map[string]any, error) {
	d := json.NewDecoder(strings.NewReader(string(value)))
	d.UseNumber()
	var raw map[string]any
	if err := d.Decode(&raw); err != nil {
		return nil, err
	}
	v := fromJSON(raw).(map[string]any)
	reindexing := opts.reindexing()
	for i, f := range fields {
		t := opts.Index[f].Type
		if reindexing[f] || cols[i] == nil || (t != "number" && t != "[number]") {
			continue
		}
		cur, ok := v[f]
		if !ok {
			continue
		}
		if _, isArr := cur.([]any); isArr && t == "number" {
			continue
		}
		var colv any
		if json.Unmarshal(cols[i], &colv) != nil {
			continue
		}
		v[f] = fromJSON(numericSpecials(colv))
	}
	v["_id"] = float64(o.ID)
	if o.TxnSnap != nil {
		v["_txn_snap"] = float64(*o.TxnSnap)
	} else {
		v["_txn_snap"] = nil
	}
	v["_etag"] = o.Etag
	v["_key"] = o.Key
	v["_mtime"] = float64(o.Mtime)
	if count != nil {
		v["_count"] = float64(*count)
	} else {
		v["_count"] = jsUndefined{}
	}
	return v, nil
}

// numericSpecials reads to_json's quoted "NaN" and infinities of a
// numeric column as numbers.
func numericSpecials(v any) any {
	switch x := v.(type) {
	case string:
		switch x {
		case "NaN":
			return math.NaN()
		case "Infinity":
			return math.Inf(1)
		case "-Infinity":
			return math.Inf(-1)
		}
	case float64:
		return x
	case []any:
		for i := range x {
			x[i] = numericSpecials(x[i])
		}
	}
	return v
}

// fromJSON turns decoded JSON (numbers as json.Number) into JavaScript's
// values: numbers as float64.
func fromJSON(v any) any {
	switch x := v.(type) {
	case json.Number:
		f, _ := strconv.ParseFloat(string(x), 64)
		return f
	case []any:
		for i := range x {
			x[i] = fromJSON(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = fromJSON(x[k])
		}
	}
	return v
}
