package shard

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// Filters on a bucket's typed columns compile as Moray 2.6.1's
// compileQuery compiles them (lib/objects/common.js): the value is read
// by the column's type (an unreadable one is InvalidQueryError), the
// column goes on the right of the operator, "=" on an array column is
// containment, the other comparisons are ANY, a scalar comparison adds
// "AND col IS NOT NULL", and the extensible filters overlaps, contains
// and within use the range and network operators of Moray's type table.
// Moray then tests each row again in JavaScript (Matches below), which
// is what makes, say, a NaN number fail ">=".

// FilterError is an error Moray gives a filter, with its name and message.
type FilterError struct{ Name, Message string }

func (e *FilterError) Error() string { return e.Message }

func (e *FilterError) Is(target error) bool { return target == ErrInvalidQuery }

func invalidQuery(f *Filter) error {
	return &FilterError{"InvalidQueryError", f.morayString() + " is an invalid filter"}
}

func notIndexed(bucket string, f *Filter) error {
	return &FilterError{"NotIndexedError", bucket + " does not have indexes that support " + f.morayString()}
}

// WhereClause compiles a filter text for a bucket: the boolean SQL over
// the bucket table's columns, its parameters (numbered from $1), and the
// parsed filter, whose Matches re-tests the rows found as Moray does.
func WhereClause(bucket string, opts BucketOptions, filter string) (string, []any, *Filter, error) {
	f, err := ParseFilter(filter)
	if err != nil {
		return "", nil, nil, err
	}
	var args []any
	where, err := f.compile(bucket, opts.IndexColumn, &args)
	if err != nil {
		return "", nil, nil, err
	}
	return where, args, f, nil
}

// morayEscape is moray-filter's escaping of a value in toString.
func morayEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '(', ')', '\\', '=':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// morayString is moray-filter's toString, which Moray's errors quote.
func (f *Filter) morayString() string {
	switch f.op {
	case opAnd, opOr, opNot:
		var b strings.Builder
		b.WriteString("(" + opText[f.op])
		for _, k := range f.children {
			b.WriteString(k.morayString())
		}
		return b.String() + ")"
	case opEq, opGE, opLE, opApprox:
		return "(" + f.attr + opText[f.op] + morayEscape(f.value) + ")"
	case opPresent:
		return "(" + f.attr + "=*)"
	case opSubstr:
		s := "(" + f.attr + "=" + morayEscape(f.initial) + "*"
		for _, a := range f.any {
			s += morayEscape(a) + "*"
		}
		return s + morayEscape(f.final) + ")"
	case opExt:
		return "(" + f.attr + ":" + f.rule + ":=" + f.value + ")"
	}
	return ""
}

// scalarType is the element type of an array type, or the type itself.
func scalarType(t string) string {
	if it, ok := indexTypes[t]; ok && it.scalar != "" {
		return it.scalar
	}
	return t
}

// filterValue reads a filter's value as Moray's parse does for a type,
// giving the text PostgreSQL is sent.
func filterValue(typ, v string) (string, error) {
	switch scalarType(typ) {
	case "boolean":
		switch strings.ToUpper(v) {
		case "TRUE":
			return "TRUE", nil
		case "FALSE":
			return "FALSE", nil
		}
		return "", errValue
	case "number":
		// parseFloat, unchecked: Moray sends NaN on, and its JavaScript
		// test then fails every row.
		return jsNumber(jsParseFloat(v)), nil
	case "date":
		return parseISO8601(v)
	case "daterange":
		return parseDateRange(v)
	case "numrange":
		return parseNumRange(v)
	case "uuid":
		return parseUUID(v)
	case "ip":
		a, err := parseIPString(v)
		return a.String(), err
	case "mac":
		m, err := parseMACString(v)
		return macString(m), err
	case "subnet":
		c, err := parseCIDR(v)
		return c.String(), err
	}
	return v, nil
}

// typedSQL is compileQuery's SQL for one filter on a typed column.
func (f *Filter) typedSQL(bucket string, col Column, args *[]any) (string, error) {
	for _, v := range append([]string{f.value, f.initial, f.final}, f.any...) {
		if !utf8.ValidString(v) {
			return "", invalidQuery(f)
		}
		// Moray's parsers refuse a NUL in a date, an address or a range;
		// a number with one is NaN; a string column's value Moray sends
		// as it is, and PostgreSQL's refusal of the NUL is the answer.
		if strings.IndexByte(v, 0) >= 0 && scalarType(col.Type) != "string" && scalarType(col.Type) != "number" {
			return "", invalidQuery(f)
		}
	}
	it, ok := indexTypes[col.Type]
	if !ok {
		return "", invalidQuery(f)
	}
	array := it.scalar != ""
	e := col.Expr
	arg := func(v, typ string) string {
		*args = append(*args, v)
		return "$" + strconv.Itoa(len(*args)) + "::text::" + indexTypes[scalarType(typ)].pg
	}
	compare := func(op string) (string, error) {
		v, err := filterValue(col.Type, f.value)
		if err != nil {
			return "", invalidQuery(f)
		}
		switch {
		case array && op == "=":
			return "(" + e + " @> ARRAY[" + arg(v, col.Type) + "])", nil
		case array:
			return "(" + arg(v, col.Type) + " " + op + " ANY(" + e + "))", nil
		}
		return "(" + arg(v, col.Type) + " " + op + " " + e + " AND " + e + " IS NOT NULL)", nil
	}
	like := func(op string, initial string, any []string, final string) (string, error) {
		// Moray reads every part by the type before it refuses an array.
		for _, part := range append([]string{initial, final}, any...) {
			if _, err := filterValue(col.Type, part); part != "" && err != nil {
				return "", invalidQuery(f)
			}
		}
		if array {
			return "", notIndexed(bucket, f)
		}
		// Moray's pattern, which its JavaScript test then narrows: the
		// parts unescaped, and a '%' after the final part too.
		var p strings.Builder
		for _, part := range []struct {
			s, pre, post string
		}{{initial, "", "%"}} {
			if part.s != "" {
				v, err := filterValue(col.Type, part.s)
				if err != nil {
					return "", invalidQuery(f)
				}
				p.WriteString(v + part.post)
			}
		}
		for _, a := range any {
			v, err := filterValue(col.Type, a)
			if err != nil {
				return "", invalidQuery(f)
			}
			p.WriteString("%" + v + "%")
		}
		if final != "" {
			v, err := filterValue(col.Type, final)
			if err != nil {
				return "", invalidQuery(f)
			}
			p.WriteString("%" + v + "%")
		}
		*args = append(*args, p.String())
		return "(" + e + " " + op + " $" + strconv.Itoa(len(*args)) + "::text AND " + e + " IS NOT NULL)", nil
	}
	switch f.op {
	case opPresent:
		return e + " IS NOT NULL", nil
	case opEq, opApprox:
		return compare("=")
	case opGE:
		return compare("<=")
	case opLE:
		return compare(">=")
	case opSubstr:
		return like("LIKE", f.initial, f.any, f.final)
	case opExt:
		switch f.rule {
		case "overlaps", "contains", "within":
			x, ok := extOps[col.Type][f.rule]
			if !ok {
				return "", invalidQuery(f)
			}
			v, err := filterValue(x.valueType, f.value)
			if err != nil {
				return "", invalidQuery(f)
			}
			if array {
				return "(" + arg(v, x.valueType) + " " + x.op + " ANY(" + e + "))", nil
			}
			return "(" + arg(v, x.valueType) + " " + x.op + " " + e + ")", nil
		case "caseIgnoreMatch", "2.5.13.2":
			return compare("ILIKE")
		case "caseIgnoreSubstringsMatch", "2.5.13.4":
			if !f.hasStar {
				// moray-filter reads a value without '*' as equality.
				return compare("ILIKE")
			}
			low := func(s string) string { return strings.ToLower(s) }
			any := make([]string, len(f.any))
			for i, a := range f.any {
				any[i] = low(a)
			}
			return like("ILIKE", low(f.initial), any, low(f.final))
		}
		return "", notIndexed(bucket, f)
	}
	return "", invalidQuery(f)
}

// unindexedExtSQL: Moray's range filters need an index; its case-blind
// matches on a field without one leave the test to JavaScript.
func (f *Filter) unindexedExtSQL(bucket string) (string, error) {
	switch f.rule {
	case "caseIgnoreMatch", "2.5.13.2", "caseIgnoreSubstringsMatch", "2.5.13.4":
		return "true", nil
	}
	return "", notIndexed(bucket, f)
}
