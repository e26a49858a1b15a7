package shard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Moray's sql RPC runs a client's statement on a shard as it is: no bucket,
// no vnode, no routing. This file runs it as Moray 2.6.1 does (node-postgres
// 6 under it) and turns the rows into what Moray sends: objects whose values
// node-postgres's type parsers (pg-types 1.13, plus pg-parse-float for
// float and numeric) made of PostgreSQL's text output.

// ErrSQLTimeout: no row came within the sql RPC's options.timeout.
var ErrSQLTimeout = errors.New("query timeout")

// MorayStatement is the statement as Moray's PGClient.query sends it: line
// breaks removed, not replaced, and the first run of white space made one
// space. A "--" comment therefore runs to the end of the whole statement
// (MORAY-317), and libmanta writes its SQL for that.
func MorayStatement(stmt string) string {
	stmt = strings.NewReplacer("\r\n", "", "\n", "", "\r", "").Replace(stmt)
	if loc := jsSpaceRun.FindStringIndex(stmt); loc != nil {
		stmt = stmt[:loc[0]] + " " + stmt[loc[1]:]
	}
	return stmt
}

// jsSpaceRun is JavaScript's \s+: a run of its white space (jsSpace).
var jsSpaceRun = regexp.MustCompile("[" + regexp.QuoteMeta(jsSpace) + "]+")

// SQLParams turns the sql RPC's values into query parameters as
// node-postgres's prepareValue does: null stays NULL, an array becomes an
// array literal of quoted elements, an object its JSON.stringify text, and
// anything else its String(v).
func SQLParams(values []json.RawMessage) ([][]byte, error) {
	out := make([][]byte, len(values))
	for i, raw := range values {
		var v any
		d := json.NewDecoder(strings.NewReader(string(raw)))
		d.UseNumber()
		if err := d.Decode(&v); err != nil {
			return nil, fmt.Errorf("values[%d]: %w", i, err)
		}
		if v == nil {
			continue
		}
		s, err := prepareValue(v, raw)
		if err != nil {
			return nil, fmt.Errorf("values[%d]: %w", i, err)
		}
		out[i] = []byte(s)
	}
	return out, nil
}

func prepareValue(v any, raw json.RawMessage) (string, error) {
	switch x := v.(type) {
	case []any:
		var b strings.Builder
		b.WriteByte('{')
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			switch e := e.(type) {
			case nil:
				b.WriteString("NULL")
			case []any:
				s, _ := prepareValue(e, nil)
				b.WriteString(s)
			default:
				s, err := prepareValue(e, nil)
				if err != nil {
					return "", err
				}
				b.WriteByte('"')
				b.WriteString(strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s))
				b.WriteByte('"')
			}
		}
		b.WriteByte('}')
		return b.String(), nil
	case map[string]any:
		if raw == nil {
			var err error
			if raw, err = json.Marshal(x); err != nil {
				return "", err
			}
		}
		s, err := stringifyJSON(string(raw))
		return string(s), err
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return "", err
		}
		return jsNumber(f), nil
	case bool:
		return strconv.FormatBool(x), nil
	case string:
		return x, nil
	}
	return "", fmt.Errorf("unexpected JSON value %T", v)
}

// stringifyJSON is JSON.stringify(JSON.parse(text)) for any JSON text.
func stringifyJSON(text string) ([]byte, error) {
	st := getValueState()
	defer putValueState(st)
	p := valueParser[string]{in: text, st: st}
	p.out, p.members = st.out[:0], st.members[:0]
	p.skipSpace()
	err := p.value(0)
	p.skipSpace()
	if err == nil && p.pos != len(p.in) {
		err = p.fail("data after the JSON value")
	}
	out := append([]byte(nil), p.out...)
	st.out, st.members = p.out, p.members
	return out, err
}

// RunSQL runs a client's statement on one shard as Moray's sql RPC does: in
// a transaction of its own, by the simple query protocol when there are no
// values (so several statements may run, as libmanta's trigger setup needs),
// otherwise as one prepared statement with untyped text parameters. Each
// row goes to emit as Moray sends it. With timeout > 0, a statement that
// sends no row within it fails with ErrSQLTimeout, as Moray's row timer does.
//
// The connection is closed afterwards instead of going back to the pool:
// the statement may have changed its session (SET, search_path, LISTEN,
// temporary tables), and the shard's other work must not inherit that.
func RunSQL(ctx context.Context, pool *pgxpool.Pool, stmt string, values []json.RawMessage, timeout time.Duration, emit func(json.RawMessage) error) error {
	params, err := SQLParams(values)
	if err != nil {
		return err
	}
	c, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	conn := c.Hijack()
	defer conn.Close(context.WithoutCancel(ctx))
	pc := conn.PgConn()

	qctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var timedOut atomic.Bool
	var timer *time.Timer
	if timeout > 0 {
		timer = time.AfterFunc(timeout, func() { timedOut.Store(true); cancel() })
	}
	gotRow := func() {
		if timer != nil {
			timer.Stop()
		}
	}
	if _, err := pc.Exec(qctx, "BEGIN").ReadAll(); err != nil {
		return err
	}
	stmt = MorayStatement(stmt)
	if len(values) == 0 {
		mr := pc.Exec(qctx, stmt)
		for mr.NextResult() {
			if err := emitRows(mr.ResultReader(), gotRow, emit); err != nil {
				mr.Close()
				return sqlErr(err, timedOut.Load())
			}
		}
		err = mr.Close()
	} else {
		err = emitRows(pc.ExecParams(qctx, stmt, params, nil, nil, nil), gotRow, emit)
	}
	if err != nil {
		return sqlErr(err, timedOut.Load())
	}
	gotRow()
	_, err = pc.Exec(ctx, "COMMIT").ReadAll()
	return err
}

func sqlErr(err error, timedOut bool) error {
	if timedOut {
		return ErrSQLTimeout
	}
	return err
}

func emitRows(rr *pgconn.ResultReader, gotRow func(), emit func(json.RawMessage) error) error {
	fields := rr.FieldDescriptions()
	for rr.NextRow() {
		gotRow()
		row, err := rowJSON(fields, rr.Values())
		if err != nil {
			rr.Close()
			return err
		}
		if err := emit(row); err != nil {
			rr.Close()
			return err
		}
	}
	_, err := rr.Close()
	return err
}

// rowJSON is a row as node-postgres builds it, made JSON: one property
// per column in column order, a later column of the same name replacing
// the earlier one's value in its place.
func rowJSON(fields []pgconn.FieldDescription, values [][]byte) (json.RawMessage, error) {
	names := make([]string, 0, len(fields))
	vals := map[string][]byte{}
	for i, f := range fields {
		v, err := pgValueJSON(f.DataTypeOID, values[i])
		if err != nil {
			return nil, fmt.Errorf("column %q: %w", f.Name, err)
		}
		if _, ok := vals[f.Name]; !ok {
			names = append(names, f.Name)
		}
		vals[f.Name] = v
	}
	b := []byte{'{'}
	for i, n := range names {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSString(b, n)
		b = append(b, ':')
		b = append(b, vals[n]...)
	}
	return append(b, '}'), nil
}

// PostgreSQL type OIDs that pg-types parses.
const (
	oidBool        = 16
	oidBytea       = 17
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidOid         = 26
	oidJSON        = 114
	oidJSONArray   = 199
	oidFloat4      = 700
	oidFloat8      = 701
	oidNumeric     = 1700
	oidDate        = 1082
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidJSONB       = 3802
	oidJSONBArray  = 3807
)

// arrayElems maps an array type to its elements' type; textArrays are the
// array types pg-types reads as arrays of strings.
var arrayElems = map[uint32]uint32{
	1000: oidBool, 1001: oidBytea, 1005: oidInt2, 1007: oidInt4, 1028: oidOid, 1016: oidInt8,
	1021: oidFloat4, 1022: oidFloat8, 1231: oidNumeric, 1115: oidTimestamp, 1182: oidDate,
	1185: oidTimestamptz, oidJSONArray: oidJSON, oidJSONBArray: oidJSONB,
}

var textArrays = map[uint32]bool{
	1014: true, 1015: true, 1008: true, 1009: true, 1040: true, 1041: true, 651: true,
	3907: true, 2951: true, 791: true, 1183: true, 1270: true,
}

// pgValueJSON is one column's text as node-postgres parses it, in JSON.
// Types pg-types has no parser for stay text, as there; so do interval,
// point, circle and Moray's tstzrange, whose JavaScript objects reshard
// does not rebuild (the difference is listed in the sql RPC's comment).
func pgValueJSON(oid uint32, text []byte) ([]byte, error) {
	if text == nil {
		return []byte("null"), nil
	}
	if elem, ok := arrayElems[oid]; ok {
		return arrayJSON(string(text), func(s string) ([]byte, error) { return scalarJSON(elem, s) })
	}
	if textArrays[oid] {
		return arrayJSON(string(text), func(s string) ([]byte, error) { return appendJSString(nil, s), nil })
	}
	return scalarJSON(oid, string(text))
}

func scalarJSON(oid uint32, s string) ([]byte, error) {
	switch oid {
	case oidBool:
		switch s {
		case "TRUE", "t", "true", "y", "yes", "on", "1":
			return []byte("true"), nil
		}
		return []byte("false"), nil
	case oidInt2, oidInt4, oidOid:
		return jsonNumber(jsParseFloat(strings.SplitN(s, ".", 2)[0])), nil
	case oidInt8:
		return appendJSString(nil, strings.TrimSpace(s)), nil
	case oidFloat4, oidFloat8, oidNumeric:
		return jsonNumber(jsParseFloat(s)), nil
	case oidJSON, oidJSONB:
		return stringifyJSON(s)
	case oidDate, oidTimestamp, oidTimestamptz:
		return dateJSON(s), nil
	case oidBytea:
		return byteaJSON(s)
	}
	return appendJSString(nil, s), nil
}

// jsonNumber is JSON.stringify of a number: NaN and the infinities are null.
func jsonNumber(f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null")
	}
	return appendJSNumber(nil, f)
}

// pgDate is PostgreSQL's ISO DateStyle output, as postgres-date reads it.
var pgDate = regexp.MustCompile(`^(\d{1,})-(\d{2})-(\d{2})(?: (\d{2}):(\d{2}):(\d{2})(\.\d{1,})?)?(?:([+-])(\d{2})(?::(\d{2}))?(?::(\d{2}))?)?( BC)?$`)

// dateJSON is a date or timestamp as JSON.stringify writes the JavaScript
// Date postgres-date makes of it: ISO 8601 in UTC to the millisecond. A
// timestamp without a zone is read as local time, and reshard, like the
// Morays Manta runs, takes local time to be UTC. Infinity and dates a Date
// cannot hold are null.
func dateJSON(s string) []byte {
	m := pgDate.FindStringSubmatch(s)
	if m == nil {
		return []byte("null")
	}
	num := func(i int) int {
		n, _ := strconv.Atoi(m[i])
		return n
	}
	year := num(1)
	if m[12] != "" {
		year = 1 - year
	}
	var ms int
	if m[7] != "" {
		f, _ := strconv.ParseFloat("0"+m[7], 64)
		ms = int(f * 1000)
	}
	t := time.Date(year, time.Month(num(2)), num(3), num(4), num(5), num(6), ms*int(time.Millisecond), time.UTC)
	if m[8] != "" {
		off := time.Duration(num(9))*time.Hour + time.Duration(num(10))*time.Minute + time.Duration(num(11))*time.Second
		if m[8] == "+" {
			off = -off
		}
		t = t.Add(off)
	}
	// A Date holds ±8.64e15 ms around 1970.
	if d := t.UnixMilli(); d > 8.64e15 || d < -8.64e15 {
		return []byte("null")
	}
	var b []byte
	switch y := t.Year(); {
	case y < 0:
		b = fmt.Appendf(b, "-%06d", -y)
	case y > 9999:
		b = fmt.Appendf(b, "+%06d", y)
	default:
		b = fmt.Appendf(b, "%04d", y)
	}
	b = fmt.Appendf(b, "-%02d-%02dT%02d:%02d:%02d.%03dZ", t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond()/int(time.Millisecond))
	return appendJSString(nil, string(b))
}

// byteaJSON is a Node Buffer made JSON: {"type":"Buffer","data":[bytes]}.
func byteaJSON(s string) ([]byte, error) {
	var data []byte
	if hexText, ok := strings.CutPrefix(s, `\x`); ok {
		for i := 0; i+1 < len(hexText); i += 2 {
			n, err := strconv.ParseUint(hexText[i:i+2], 16, 8)
			if err != nil {
				return nil, fmt.Errorf("bytea: %w", err)
			}
			data = append(data, byte(n))
		}
	} else {
		// The escape format: \\ and \ooo octal.
		for i := 0; i < len(s); i++ {
			if s[i] == '\\' && i+1 < len(s) && s[i+1] == '\\' {
				data, i = append(data, '\\'), i+1
			} else if s[i] == '\\' && i+3 < len(s) {
				n, err := strconv.ParseUint(s[i+1:i+4], 8, 8)
				if err != nil {
					return nil, fmt.Errorf("bytea: %w", err)
				}
				data, i = append(data, byte(n)), i+3
			} else {
				data = append(data, s[i])
			}
		}
	}
	b := []byte(`{"type":"Buffer","data":[`)
	for i, c := range data {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(c), 10)
	}
	return append(b, "]}"...), nil
}

// arrayJSON reads a PostgreSQL array literal as postgres-array does:
// nested braces are nested arrays, an unquoted NULL is null, and each
// other element goes through elem.
func arrayJSON(s string, elem func(string) ([]byte, error)) ([]byte, error) {
	// postgres-array does not know dimension decorations ([0:1]={5,6}):
	// what comes before the first brace starts the first element, unless
	// a nested array opens first.
	var pending string
	if i := strings.IndexByte(s, '{'); i > 0 {
		pending, s = s[:i], s[i:]
	}
	out := []byte{}
	depth := 0
	first := true
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '{':
			if !first {
				out = append(out, ',')
			}
			out = append(out, '[')
			depth++
			first = true
			if depth > 1 {
				pending = ""
			}
		case c == '}':
			out = append(out, ']')
			depth--
			first = false
		case c == ',':
		default:
			var text string
			quoted := c == '"'
			if quoted {
				var b strings.Builder
				for i++; i < len(s) && s[i] != '"'; i++ {
					if s[i] == '\\' && i+1 < len(s) {
						i++
					}
					b.WriteByte(s[i])
				}
				text = b.String()
			} else {
				j := i
				for j < len(s) && s[j] != ',' && s[j] != '}' {
					j++
				}
				text, i = s[i:j], j-1
			}
			if !first {
				out = append(out, ',')
			}
			first = false
			text, pending = pending+text, ""
			if !quoted && text == "NULL" {
				out = append(out, "null"...)
				continue
			}
			v, err := elem(text)
			if err != nil {
				return nil, err
			}
			out = append(out, v...)
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("malformed array literal %q", s)
	}
	return out, nil
}

// appendJSString appends s as JSON.stringify quotes a string.
func appendJSString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			b = append(b, `\"`...)
		case c == '\\':
			b = append(b, `\\`...)
		case c == '\n':
			b = append(b, `\n`...)
		case c == '\r':
			b = append(b, `\r`...)
		case c == '\t':
			b = append(b, `\t`...)
		case c == '\b':
			b = append(b, `\b`...)
		case c == '\f':
			b = append(b, `\f`...)
		case c < 0x20:
			b = fmt.Appendf(b, `\u%04x`, c)
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
