package shard

import (
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// testColumn stands in for a bucket's schema: a few indexed columns of
// each type, and every other attribute in _value as JSON.
func testColumn(attr string) Column {
	switch attr {
	case "name", "dirname", "type":
		return Column{Expr: `"` + attr + `"`, Type: "string"}
	case "_key":
		return Column{Expr: "_key", Type: "string"}
	case "size":
		return Column{Expr: `"size"`, Type: "number"}
	case "ok":
		return Column{Expr: `"ok"`, Type: "boolean"}
	case "tags":
		return Column{Expr: `"tags"`, Type: "[string]"}
	case "nums":
		return Column{Expr: `"nums"`, Type: "[number]"}
	case "flags":
		return Column{Expr: `"flags"`, Type: "[boolean]"}
	case "bad":
		return Column{Expr: `"bad"`, Type: "uuid"}
	case "none":
		return Column{}
	}
	return Column{Expr: "(_value->'" + attr + "')", Type: "json"}
}

var validFilters = []struct {
	in, str, sql string
	args         []any
}{
	{`(&(dirname=/a/stor)(type=object))`, `(&(dirname=/a/stor)(type=object))`, `("dirname" = $1 AND "type" = $2)`, []any{"/a/stor", "object"}},
	{" \t(name=foo)\n ", `(name=foo)`, `"name" = $1`, []any{"foo"}},
	{`name=foo`, `(name=foo)`, `"name" = $1`, []any{"foo"}},
	{` &(name=a)(type=b) `, `(&(name=a)(type=b))`, `("name" = $1 AND "type" = $2)`, []any{"a", "b"}},
	{`(&(name=a))`, `(&(name=a))`, `("name" = $1)`, []any{"a"}},
	{`(|(name=a)(name=b)(name=c))`, `(|(name=a)(name=b)(name=c))`, `("name" = $1 OR "name" = $2 OR "name" = $3)`, []any{"a", "b", "c"}},
	{`(!(type=dir))`, `(!(type=dir))`, `(NOT COALESCE("type" = $1, false))`, []any{"dir"}},
	{`(!(!(name=a)))`, `(!(!(name=a)))`, `(NOT COALESCE((NOT COALESCE("name" = $1, false)), false))`, []any{"a"}},
	{`(&(|(name=a)(!(size>=2)))(_key=k))`, `(&(|(name=a)(!(size>=2)))(_key=k))`,
		`(("name" = $1 OR (NOT COALESCE("size" >= $2::numeric, false))) AND _key = $3)`, []any{"a", "2", "k"}},

	// Presence and substrings.
	{`(name=*)`, `(name=*)`, `"name" IS NOT NULL`, nil},
	{`(name=**)`, `(name=*)`, `"name" IS NOT NULL`, nil},
	{`(name=a*b*c)`, `(name=a*b*c)`, `"name" LIKE $1`, []any{"a%b%c"}},
	{`(name=*b*)`, `(name=*b*)`, `"name" LIKE $1`, []any{"%b%"}},
	{`(name=a*)`, `(name=a*)`, `"name" LIKE $1`, []any{"a%"}},
	{`(name=*a)`, `(name=*a)`, `"name" LIKE $1`, []any{"%a"}},
	{`(name=a**b)`, `(name=a*b)`, `"name" LIKE $1`, []any{"a%b"}},
	{`(name=*x**y*)`, `(name=*x*y*)`, `"name" LIKE $1`, []any{"%x%y%"}},
	{`(name=50%*)`, `(name=50%*)`, `"name" LIKE $1`, []any{`50\%%`}},
	{`(name=a_b\5c*)`, `(name=a_b\5c*)`, `"name" LIKE $1`, []any{`a\_b\\%`}},
	{`(name=\2a*)`, `(name=\2a*)`, `"name" LIKE $1`, []any{`*%`}},

	// Comparisons and values.
	{`(name>=m)`, `(name>=m)`, `"name" >= $1`, []any{"m"}},
	{`(name<=m)`, `(name<=m)`, `"name" <= $1`, []any{"m"}},
	{`(name~=foo)`, `(name~=foo)`, `"name" = $1`, []any{"foo"}},
	{`(name=)`, `(name=)`, `"name" = $1`, []any{""}},
	{`(name=a b)`, `(name=a b)`, `"name" = $1`, []any{"a b"}},
	{`(name=a\2ab)`, `(name=a\2ab)`, `"name" = $1`, []any{"a*b"}},
	{`(name=a\5c)`, `(name=a\5c)`, `"name" = $1`, []any{`a\`}},
	{`(name=\28x\29)`, `(name=\28x\29)`, `"name" = $1`, []any{"(x)"}},
	{`(name=\2A\5C)`, `(name=\2a\5c)`, `"name" = $1`, []any{`*\`}},
	{`(name=caf\c3\a9)`, `(name=café)`, `"name" = $1`, []any{"café"}},
	{`(name=a'; drop table x; --)`, `(name=a'; drop table x; --)`, `"name" = $1`, []any{"a'; drop table x; --"}},
	{"(name=tab\there)", `(name=tab\09here)`, `"name" = $1`, []any{"tab\there"}},
	{`(name>=a*b)`, `(name>=a\2ab)`, `"name" >= $1`, []any{"a*b"}},
	{`(name~=*)`, `(name~=\2a)`, `"name" = $1`, []any{"*"}},

	// Numbers and booleans.
	{`(size=10)`, `(size=10)`, `"size" = $1::numeric`, []any{"10"}},
	{`(size>=-1.5e3)`, `(size>=-1.5e3)`, `"size" >= $1::numeric`, []any{"-1.5e3"}},
	{`(size<=.5)`, `(size<=.5)`, `"size" <= $1::numeric`, []any{".5"}},
	{`(size=123456789012345678901234567890)`, `(size=123456789012345678901234567890)`, `"size" = $1::numeric`, []any{"123456789012345678901234567890"}},
	{`(size=*)`, `(size=*)`, `"size" IS NOT NULL`, nil},
	{`(size=1*)`, `(size=1*)`, `"size"::text LIKE $1`, []any{"1%"}},
	{`(ok=true)`, `(ok=true)`, `"ok" = $1::boolean`, []any{"true"}},
	{`(ok~=false)`, `(ok~=false)`, `"ok" = $1::boolean`, []any{"false"}},
	{`(ok=*)`, `(ok=*)`, `"ok" IS NOT NULL`, nil},

	// Arrays.
	{`(tags=a)`, `(tags=a)`, `$1 = ANY("tags")`, []any{"a"}},
	{`(nums=3)`, `(nums=3)`, `$1::numeric = ANY("nums")`, []any{"3"}},
	{`(flags=true)`, `(flags=true)`, `$1::boolean = ANY("flags")`, []any{"true"}},
	{`(tags>=m)`, `(tags>=m)`, `EXISTS (SELECT 1 FROM unnest("tags") AS x(v) WHERE v >= $1)`, []any{"m"}},
	{`(nums<=3)`, `(nums<=3)`, `EXISTS (SELECT 1 FROM unnest("nums") AS x(v) WHERE v <= $1::numeric)`, []any{"3"}},
	{`(tags=*x*)`, `(tags=*x*)`, `EXISTS (SELECT 1 FROM unnest("tags") AS x(v) WHERE v LIKE $1)`, []any{"%x%"}},
	{`(nums=1*)`, `(nums=1*)`, `EXISTS (SELECT 1 FROM unnest("nums") AS x(v) WHERE v::text LIKE $1)`, []any{"1%"}},
	{`(tags=*)`, `(tags=*)`, `"tags" IS NOT NULL`, nil},
	{`(flags=*)`, `(flags=*)`, `"flags" IS NOT NULL`, nil},

	// Unindexed attributes, in _value.
	{`(x=1)`, `(x=1)`, `(((_value->'x') #>> '{}') = $1 OR (_value->'x') @> jsonb_build_array($2::text))`, []any{"1", "1"}},
	{`(x=*)`, `(x=*)`, `((_value->'x') IS NOT NULL AND (_value->'x') <> 'null'::jsonb)`, nil},
	{`(x>=b)`, `(x>=b)`, `((_value->'x') #>> '{}') >= $1`, []any{"b"}},
	{`(x<=b)`, `(x<=b)`, `((_value->'x') #>> '{}') <= $1`, []any{"b"}},
	{`(x=a*)`, `(x=a*)`, `((_value->'x') #>> '{}') LIKE $1`, []any{"a%"}},
	{`(!(x=*))`, `(!(x=*))`, `(NOT COALESCE(((_value->'x') IS NOT NULL AND (_value->'x') <> 'null'::jsonb), false))`, nil},
	{`(A-b.c_9=v)`, `(A-b.c_9=v)`, `(((_value->'A-b.c_9') #>> '{}') = $1 OR (_value->'A-b.c_9') @> jsonb_build_array($2::text))`, []any{"v", "v"}},
}

func TestFilterValid(t *testing.T) {
	for _, c := range validFilters {
		f, err := ParseFilter(c.in)
		if err != nil {
			t.Errorf("ParseFilter(%q): %v", c.in, err)
			continue
		}
		if got := f.String(); got != c.str {
			t.Errorf("ParseFilter(%q).String() = %q, want %q", c.in, got, c.str)
		}
		again, err := ParseFilter(f.String())
		if err != nil || !reflect.DeepEqual(again, f) {
			t.Errorf("%q does not round-trip through %q: %v", c.in, f.String(), err)
		}
		var args []any
		sql, err := f.SQL(testColumn, &args)
		if err != nil {
			t.Errorf("%q: SQL: %v", c.in, err)
			continue
		}
		if sql != c.sql || !reflect.DeepEqual(args, c.args) {
			t.Errorf("%q: SQL = %s %q\nwant %s %q", c.in, sql, args, c.sql, c.args)
		}
	}
}

func TestFilterEscapes(t *testing.T) {
	for in, want := range map[string]string{
		`(name=a\2ab)`:   "a*b",
		`(name=a\5c)`:    `a\`,
		`(name=\28x\29)`: "(x)",
		`(name=\00)`:     "\x00",
		`(name=\2a)`:     "*",
	} {
		f, err := ParseFilter(in)
		if err != nil {
			t.Fatalf("ParseFilter(%q): %v", in, err)
		}
		if f.op != opEq || f.value != want {
			t.Errorf("ParseFilter(%q) = op %d value %q, want equality with %q", in, f.op, f.value, want)
		}
	}
}

func TestFilterSubstringParts(t *testing.T) {
	f, err := ParseFilter(`(name=a\2a*b**c\29*d)`)
	if err != nil {
		t.Fatal(err)
	}
	if f.op != opSubstr || f.initial != "a*" || !slices.Equal(f.any, []string{"b", "c)"}) || f.final != "d" {
		t.Errorf("got %+v", f)
	}
}

var invalidFilters = []struct{ in, err string }{
	{``, "empty"},
	{" \t\n", "empty"},
	{`(`, `unexpected end of filter, missing ")" at offset 1`},
	{`()`, `expected an attribute name, "&", "|" or "!", found ')' at offset 1`},
	{`(name=foo`, `in the value of "name", missing ")" at offset 9`},
	{`(name=foo))`, `unexpected ')' after the end of the filter at offset 10`},
	{`(name=foo)(x=y)`, `unexpected '(' after the end of the filter at offset 10`},
	{`(a=b) x`, `unexpected ' ' after the end of the filter at offset 5`},
	{`  name=a)`, `unbalanced ")" at offset 8`},
	{`a=b)(c=d`, `unbalanced ")" at offset 3`},
	{`(&)`, `'&' needs at least one filter, found ')' at offset 2`},
	{`(|)`, `'|' needs at least one filter, found ')' at offset 2`},
	{`(&`, `'&' needs at least one filter, found end of filter at offset 2`},
	{`(!)`, `"!" needs a filter, found ')' at offset 2`},
	{`(!a=b)`, `"!" needs a filter, found 'a' at offset 2`},
	{`(!(a=b)(c=d))`, `"!" takes exactly one filter: expected ")", found '(' at offset 7`},
	{`(&(a=b)x)`, `expected "(" or ")" in '&', found 'x' at offset 7`},
	{`(&(a=b)`, `expected "(" or ")" in '&', found end of filter at offset 7`},
	{`(=foo)`, `missing attribute name at offset 1`},
	{`(na me=foo)`, `expected "=", ">=", "<=" or "~=" after attribute "na", found ' ' at offset 3`},
	{`(name>foo)`, `after attribute "name", found '>' at offset 5`},
	{`(name!=foo)`, `after attribute "name", found '!' at offset 5`},
	{"(a=b\xff", `in the value of "a", missing ")" at offset 5`},
	{"(a\xff=b)", `after attribute "a", found byte 0xff at offset 2`},
	{`(a~b)`, `after attribute "a", found '~' at offset 2`},
	{`(cn;lang-en=x)`, `after attribute "cn", found ';' at offset 3`},
	{`(naïve=x)`, `after attribute "na", found 'ï' at offset 3`},
	{`name`, `after attribute "name", found end of filter at offset 4`},
	{`(name=fo(o)`, `unescaped "(" in the value of "name" (write it as \28) at offset 8`},
	{`(name=foo\)`, `bad escape in the value of "name": "\" must be followed by two hex digits at offset 9`},
	{`(name=foo\2)`, `bad escape in the value of "name"`},
	{`(name=foo\zz)`, `bad escape in the value of "name"`},
	{`(name=foo\2g)`, `bad escape in the value of "name"`},
	{`(name=\`, `bad escape in the value of "name"`},
	{`name=\`, `bad escape in the value of "name": "\" must be followed by two hex digits at offset 5`},
	{`(cn:caseExactMatch:=x)`, `extensible match (attr:rule:=value) is not supported at offset 3`},
	{`(cn:=x)`, `not supported at offset 3`},
	{`(:dn:2.4.6:=x)`, `not supported at offset 1`},
	{strings.Repeat("(!", 100) + "(a=b)" + strings.Repeat(")", 100), `nested more than 100 deep at offset 200`},
	{strings.Repeat("(&", 1000), `nested more than 100 deep`},
	{"(a=" + strings.Repeat("x", maxFilterLen) + ")", `65540 bytes long, over the limit of 65536`},
}

func TestFilterInvalid(t *testing.T) {
	for _, c := range invalidFilters {
		f, err := ParseFilter(c.in)
		if err == nil {
			t.Errorf("ParseFilter(%q) = %s, want an error", c.in, f)
			continue
		}
		if !strings.HasPrefix(err.Error(), "invalid filter: ") || !strings.Contains(err.Error(), c.err) {
			t.Errorf("ParseFilter(%q): %v\nwant it to mention %q", c.in, err, c.err)
		}
	}
}

func TestFilterLimits(t *testing.T) {
	deep := strings.Repeat("(!", 99) + "(a=b)" + strings.Repeat(")", 99)
	f, err := ParseFilter(deep)
	if err != nil {
		t.Fatalf("99 nested '!': %v", err)
	}
	if _, err := f.SQL(testColumn, new([]any)); err != nil {
		t.Fatal(err)
	}
	wide := "(|" + strings.Repeat("(a=b)", (maxFilterLen-3)/5) + ")"
	if _, err := ParseFilter(wide); err != nil {
		t.Fatalf("%d bytes: %v", len(wide), err)
	}
}

func TestFilterSQLErrors(t *testing.T) {
	for _, c := range []struct{ in, err string }{
		{`(size=abc)`, `attribute "size" is a number, but "abc" is not`},
		{`(size=)`, `attribute "size" is a number, but "" is not`},
		{`(size=NaN)`, `"NaN" is not`},
		{`(size=Inf)`, `"Inf" is not`},
		{`(size=-infinity)`, `"-infinity" is not`},
		{`(size=1e400)`, `"1e400" is not`},
		{`(size=0e1001)`, `"0e1001" is not`},
		{`(size=0x10)`, `"0x10" is not`},
		{`(size=1_0)`, `"1_0" is not`},
		{`(size= 1)`, `" 1" is not`},
		{`(size=1.)`, ""}, // valid: PostgreSQL's numeric reads "1." too
		{`(size=.)`, `"." is not`},
		{`(size=1e)`, `"1e" is not`},
		{`(size>=x)`, `"x" is not`},
		{`(nums=abc)`, `attribute "nums" is a number, but "abc" is not`},
		{`(nums<=x)`, `attribute "nums" is a number, but "x" is not`},
		{`(ok=yes)`, `attribute "ok" is boolean, but "yes" is neither true nor false`},
		{`(ok=TRUE)`, `"TRUE" is neither`},
		{`(flags=1)`, `attribute "flags" is boolean, but "1" is neither`},
		{`(ok>=true)`, `attribute "ok" is boolean and cannot be compared`},
		{`(flags<=true)`, `attribute "flags" is boolean and cannot be compared`},
		{`(ok=t*)`, `attribute "ok" is boolean and cannot match a substring`},
		{`(flags=*t*)`, `attribute "flags" is boolean and cannot match a substring`},
		{`(bad=1)`, `attribute "bad" has unknown column type "uuid"`},
		{`(none=1)`, `no column for attribute "none"`},
		{`(name=\00)`, `the value for "name" holds a NUL byte`},
		{`(name=a*\00)`, `the value for "name" holds a NUL byte`},
		{`(name=\ff)`, `the value for "name" is not valid UTF-8`},
		{`(&(name=a)(!(size=x)))`, `"x" is not`},
	} {
		f, err := ParseFilter(c.in)
		if err != nil {
			t.Fatalf("ParseFilter(%q): %v", c.in, err)
		}
		args := []any{"queued"}
		sql, err := f.SQL(testColumn, &args)
		if c.err == "" {
			if err != nil {
				t.Errorf("%q: %v", c.in, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%q: SQL = %s, want an error", c.in, sql)
			continue
		}
		if !strings.HasPrefix(err.Error(), "invalid query: ") || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%q: %v\nwant it to mention %q", c.in, err, c.err)
		}
		if !reflect.DeepEqual(args, []any{"queued"}) {
			t.Errorf("%q: failed SQL left args %q", c.in, args)
		}
	}
	for _, typ := range []string{"", "text", "[json]", "[string", "string]", "[]"} {
		f, _ := ParseFilter(`(a=1)`)
		if _, err := f.SQL(func(string) Column { return Column{Expr: "a", Type: typ} }, new([]any)); err == nil {
			t.Errorf("type %q: no error", typ)
		}
	}
	var zero Filter
	if _, err := zero.SQL(testColumn, new([]any)); err == nil {
		t.Error("zero Filter compiled")
	}
}

// The caller may have queued parameters (e.g. the vnode) already.
func TestFilterSQLQueuedArgs(t *testing.T) {
	f, err := ParseFilter(`(&(dirname=/a)(|(size>=5)(tags=x)))`)
	if err != nil {
		t.Fatal(err)
	}
	args := []any{int32(7), "b"}
	sql, err := f.SQL(testColumn, &args)
	if err != nil {
		t.Fatal(err)
	}
	if want := `("dirname" = $3 AND ("size" >= $4::numeric OR $5 = ANY("tags")))`; sql != want {
		t.Errorf("SQL = %s, want %s", sql, want)
	}
	if want := []any{int32(7), "b", "/a", "5", "x"}; !reflect.DeepEqual(args, want) {
		t.Errorf("args = %q, want %q", args, want)
	}
}

func TestFilterAttributes(t *testing.T) {
	f, err := ParseFilter(`(&(b=1)(a=2)(|(b=3)(c=*)(!(a>=x))))`)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.Attributes(), []string{"a", "b", "c"}; !slices.Equal(got, want) {
		t.Errorf("Attributes() = %q, want %q", got, want)
	}
}

var (
	placeholder = regexp.MustCompile(`\$[0-9]+`)
	// Everything an all-"string" compilation may write besides its
	// placeholders and the resolver's expression: no room for a value.
	sqlWords = regexp.MustCompile(`\$[0-9]+|"c"|\b(AND|OR|NOT|COALESCE|false|IS|NULL|LIKE)\b|[()=<>, ]`)
)

// checkPlaceholders checks that the SQL numbers one placeholder per
// argument added, in order, after the queued ones.
func checkPlaceholders(t *testing.T, sql string, args []any, queued int) {
	t.Helper()
	ps := placeholder.FindAllString(sql, -1)
	if len(ps) != len(args)-queued {
		t.Fatalf("%s: %d placeholders, %d args added", sql, len(ps), len(args)-queued)
	}
	for i, p := range ps {
		if p != "$"+strconv.Itoa(queued+i+1) {
			t.Fatalf("%s: placeholder %d is %s", sql, i, p)
		}
		if _, ok := args[queued+i].(string); !ok {
			t.Fatalf("%s: arg %d is %T", sql, queued+i, args[queued+i])
		}
	}
}

func FuzzParseFilter(f *testing.F) {
	for _, c := range validFilters {
		f.Add(c.in)
	}
	for _, c := range invalidFilters {
		if len(c.in) < 1000 {
			f.Add(c.in)
		}
	}
	types := []string{"string", "number", "boolean", "[string]", "[number]", "[boolean]", "json"}
	f.Fuzz(func(t *testing.T, s string) {
		flt, err := ParseFilter(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "invalid filter: ") {
				t.Fatalf("ParseFilter(%q): %v", s, err)
			}
			return
		}
		out := flt.String()
		// Escaping can grow a filter at the size limit past it.
		if len(out) <= maxFilterLen {
			again, err := ParseFilter(out)
			if err != nil {
				t.Fatalf("ParseFilter(%q) = %q, which does not parse: %v", s, out, err)
			}
			if again.String() != out || !reflect.DeepEqual(again, flt) {
				t.Fatalf("ParseFilter(%q) = %q, which parses to %q", s, out, again)
			}
		}
		attrs := flt.Attributes()
		if len(attrs) == 0 || !slices.IsSorted(attrs) || len(slices.Compact(slices.Clone(attrs))) != len(attrs) {
			t.Fatalf("%q: Attributes() = %q", s, attrs)
		}
		for _, typ := range types {
			args := []any{"queued"}
			sql, err := flt.SQL(func(string) Column { return Column{Expr: `"c"`, Type: typ} }, &args)
			if err != nil {
				if len(args) != 1 {
					t.Fatalf("%q as %s: failed SQL left args %q", s, typ, args)
				}
				continue
			}
			checkPlaceholders(t, sql, args, 1)
			if typ == "string" {
				if rest := sqlWords.ReplaceAllString(sql, ""); rest != "" {
					t.Fatalf("%q: SQL %s has %q besides placeholders", s, sql, rest)
				}
			}
		}
	})
}
