package shard

import (
	"errors"
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
	// Typed columns compile as Moray's compileQuery; unindexed fields are
	// read from _value as JSON.
	{"(&(dirname=/a/stor)(type=object))", "(&(dirname=/a/stor)(type=object))", "(($1::text::TEXT = \"dirname\" AND \"dirname\" IS NOT NULL) AND ($2::text::TEXT = \"type\" AND \"type\" IS NOT NULL))", []any{"/a/stor", "object"}},
	{" \t(name=foo)\n ", "(name=foo)", "($1::text::TEXT = \"name\" AND \"name\" IS NOT NULL)", []any{"foo"}},
	{"name=foo", "(name=foo)", "($1::text::TEXT = \"name\" AND \"name\" IS NOT NULL)", []any{"foo"}},
	{" &(name=a)(type=b) ", "(&(name=a)(type=b))", "(($1::text::TEXT = \"name\" AND \"name\" IS NOT NULL) AND ($2::text::TEXT = \"type\" AND \"type\" IS NOT NULL))", []any{"a", "b"}},
	{"(&(name=a))", "(&(name=a))", "(($1::text::TEXT = \"name\" AND \"name\" IS NOT NULL))", []any{"a"}},
	{"(|(name=a)(name=b)(name=c))", "(|(name=a)(name=b)(name=c))", "(($1::text::TEXT = \"name\" AND \"name\" IS NOT NULL) OR ($2::text::TEXT = \"name\" AND \"name\" IS NOT NULL) OR ($3::text::TEXT = \"name\" AND \"name\" IS NOT NULL))", []any{"a", "b", "c"}},
	{"(!(type=dir))", "(!(type=dir))", "(NOT ($1::text::TEXT = \"type\" AND \"type\" IS NOT NULL))", []any{"dir"}},
	{"(!(!(name=a)))", "(!(!(name=a)))", "(NOT (NOT ($1::text::TEXT = \"name\" AND \"name\" IS NOT NULL)))", []any{"a"}},
	{"(&(|(name=a)(!(size>=2)))(_key=k))", "(&(|(name=a)(!(size>=2)))(_key=k))", "((($1::text::TEXT = \"name\" AND \"name\" IS NOT NULL) OR (NOT ($2::text::NUMERIC <= \"size\" AND \"size\" IS NOT NULL))) AND ($3::text::TEXT = _key AND _key IS NOT NULL))", []any{"a", "2", "k"}},
	{"(name=*)", "(name=*)", "\"name\" IS NOT NULL", nil},
	{"(name=**)", "(name=*)", "\"name\" IS NOT NULL", nil},
	{"(name=a*b*c)", "(name=a*b*c)", "(\"name\" LIKE $1::text AND \"name\" IS NOT NULL)", []any{"a%%b%%c%"}},
	{"(name=*b*)", "(name=*b*)", "(\"name\" LIKE $1::text AND \"name\" IS NOT NULL)", []any{"%b%"}},
	{"(name=a*)", "(name=a*)", "(\"name\" LIKE $1::text AND \"name\" IS NOT NULL)", []any{"a%"}},
	{"(name=*a)", "(name=*a)", "(\"name\" LIKE $1::text AND \"name\" IS NOT NULL)", []any{"%a%"}},
	{"(name=a**b)", "(name=a*b)", "(\"name\" LIKE $1::text AND \"name\" IS NOT NULL)", []any{"a%%b%"}},
	{"(name=*x**y*)", "(name=*x*y*)", "(\"name\" LIKE $1::text AND \"name\" IS NOT NULL)", []any{"%x%%y%"}},
	{"(name=50%*)", "(name=50%*)", "(\"name\" LIKE $1::text AND \"name\" IS NOT NULL)", []any{"50%%"}},
	{"(name=a_b\\5c*)", "(name=a_b\\5c*)", "(\"name\" LIKE $1::text AND \"name\" IS NOT NULL)", []any{"a_b\\%"}},
	{"(name=\\2a*)", "(name=\\2a*)", "(\"name\" LIKE $1::text AND \"name\" IS NOT NULL)", []any{"*%"}},
	{"(name>=m)", "(name>=m)", "($1::text::TEXT <= \"name\" AND \"name\" IS NOT NULL)", []any{"m"}},
	{"(name<=m)", "(name<=m)", "($1::text::TEXT >= \"name\" AND \"name\" IS NOT NULL)", []any{"m"}},
	{"(name~=foo)", "(name~=foo)", "($1::text::TEXT = \"name\" AND \"name\" IS NOT NULL)", []any{"foo"}},
	{"(name=)", "(name=)", "($1::text::TEXT = \"name\" AND \"name\" IS NOT NULL)", []any{""}},
	{"(name=a b)", "(name=a b)", "($1::text::TEXT = \"name\" AND \"name\" IS NOT NULL)", []any{"a b"}},
	{"(name=a\\2ab)", "(name=a\\2ab)", "($1::text::TEXT = \"name\" AND \"name\" IS NOT NULL)", []any{"a*b"}},
	{"(name=a\\5c)", "(name=a\\5c)", "($1::text::TEXT = \"name\" AND \"name\" IS NOT NULL)", []any{"a\\"}},
	{"(name=\\28x\\29)", "(name=\\28x\\29)", "($1::text::TEXT = \"name\" AND \"name\" IS NOT NULL)", []any{"(x)"}},
	{"(name=\\2A\\5C)", "(name=\\2a\\5c)", "($1::text::TEXT = \"name\" AND \"name\" IS NOT NULL)", []any{"*\\"}},
	{"(name=caf\\c3\\a9)", "(name=café)", "($1::text::TEXT = \"name\" AND \"name\" IS NOT NULL)", []any{"café"}},
	{"(name=a'; drop table x; --)", "(name=a'; drop table x; --)", "($1::text::TEXT = \"name\" AND \"name\" IS NOT NULL)", []any{"a'; drop table x; --"}},
	{"(name=tab\there)", "(name=tab\\09here)", "($1::text::TEXT = \"name\" AND \"name\" IS NOT NULL)", []any{"tab\there"}},
	{"(name>=a*b)", "(name>=a\\2ab)", "($1::text::TEXT <= \"name\" AND \"name\" IS NOT NULL)", []any{"a*b"}},
	{"(name~=*)", "(name~=\\2a)", "($1::text::TEXT = \"name\" AND \"name\" IS NOT NULL)", []any{"*"}},
	{"(size=10)", "(size=10)", "($1::text::NUMERIC = \"size\" AND \"size\" IS NOT NULL)", []any{"10"}},
	{"(size>=-1.5e3)", "(size>=-1.5e3)", "($1::text::NUMERIC <= \"size\" AND \"size\" IS NOT NULL)", []any{"-1500"}},
	{"(size<=.5)", "(size<=.5)", "($1::text::NUMERIC >= \"size\" AND \"size\" IS NOT NULL)", []any{"0.5"}},
	{"(size=123456789012345678901234567890)", "(size=123456789012345678901234567890)", "($1::text::NUMERIC = \"size\" AND \"size\" IS NOT NULL)", []any{"1.2345678901234568e+29"}},
	{"(size=*)", "(size=*)", "\"size\" IS NOT NULL", nil},
	{"(size=1*)", "(size=1*)", "(\"size\" LIKE $1::text AND \"size\" IS NOT NULL)", []any{"1%"}},
	{"(ok=true)", "(ok=true)", "($1::text::BOOLEAN = \"ok\" AND \"ok\" IS NOT NULL)", []any{"TRUE"}},
	{"(ok~=false)", "(ok~=false)", "($1::text::BOOLEAN = \"ok\" AND \"ok\" IS NOT NULL)", []any{"FALSE"}},
	{"(ok=*)", "(ok=*)", "\"ok\" IS NOT NULL", nil},
	{"(tags=a)", "(tags=a)", "(\"tags\" @> ARRAY[$1::text::TEXT])", []any{"a"}},
	{"(nums=3)", "(nums=3)", "(\"nums\" @> ARRAY[$1::text::NUMERIC])", []any{"3"}},
	{"(flags=true)", "(flags=true)", "(\"flags\" @> ARRAY[$1::text::BOOLEAN])", []any{"TRUE"}},
	{"(tags>=m)", "(tags>=m)", "($1::text::TEXT <= ANY(\"tags\"))", []any{"m"}},
	{"(nums<=3)", "(nums<=3)", "($1::text::NUMERIC >= ANY(\"nums\"))", []any{"3"}},
	{"(tags=*)", "(tags=*)", "\"tags\" IS NOT NULL", nil},
	{"(flags=*)", "(flags=*)", "\"flags\" IS NOT NULL", nil},
	{"(x=1)", "(x=1)", "COALESCE((((_value->'x') #>> '{}') = $1 OR (_value->'x') @> jsonb_build_array($2::text)), false)", []any{"1", "1"}},
	{"(x=*)", "(x=*)", "COALESCE(((_value->'x') IS NOT NULL AND (_value->'x') <> 'null'::jsonb), false)", nil},
	{"(x>=b)", "(x>=b)", "COALESCE(((_value->'x') #>> '{}') >= $1, false)", []any{"b"}},
	{"(x<=b)", "(x<=b)", "COALESCE(((_value->'x') #>> '{}') <= $1, false)", []any{"b"}},
	{"(x=a*)", "(x=a*)", "COALESCE(((_value->'x') #>> '{}') LIKE $1, false)", []any{"a%"}},
	{"(!(x=*))", "(!(x=*))", "(NOT COALESCE(((_value->'x') IS NOT NULL AND (_value->'x') <> 'null'::jsonb), false))", nil},
	{"(A-b.c_9=v)", "(A-b.c_9=v)", "COALESCE((((_value->'A-b.c_9') #>> '{}') = $1 OR (_value->'A-b.c_9') @> jsonb_build_array($2::text)), false)", []any{"v", "v"}},
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
	{`(cn:=x)`, `missing := in ext filter at offset 6`},
	{`(cn:rule)`, `missing := in ext filter`},
	{`(:dn:2.4.6:=x)`, `missing attribute name at offset 1`},
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
	// Moray's errors name the filter (the leaf) and nothing else; a
	// number that does not parse is NaN, which no row matches.
	for _, c := range []struct{ in, err string }{
		{`(size=abc)`, ""},
		{`(size=1.)`, ""},
		{`(ok=TRUE)`, ""},
		{`(ok=yes)`, `(ok=yes) is an invalid filter`},
		{`(flags=1)`, `(flags=1) is an invalid filter`},
		{`(flags=*t*)`, `(flags=*t*) is an invalid filter`},
		{`(tags=*x*)`, ` does not have indexes that support (tags=*x*)`},
		{`(bad=1)`, `(bad=1) is an invalid filter`},
		{`(bad=3f2504e0-4f89-41d3-9a0c-0305e82c3301)`, ""},
		// A NUL for a string column goes to PostgreSQL, whose refusal
		// Moray passes on; for a date or an address Moray refuses it.
		{`(name=\00)`, ""},
		{`(name=a*\00)`, ""},
		{`(bad=\00)`, `is an invalid filter`},
		{`(name=\ff)`, `is an invalid filter`},
		{`(&(name=a)(!(ok=x)))`, `(ok=x) is an invalid filter`},
		{`(name:overlaps:=x)`, `(name:overlaps:=x) is an invalid filter`},
		{`(x:within:=[1,2])`, ` does not have indexes that support (x:within:=[1,2])`},
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
		if !strings.Contains(err.Error(), c.err) || !errors.Is(err, ErrInvalidQuery) {
			t.Errorf("%q: %v\nwant it to mention %q", c.in, err, c.err)
		}
		if !reflect.DeepEqual(args, []any{"queued"}) {
			t.Errorf("%q: failed SQL left args %q", c.in, args)
		}
	}
	for _, typ := range []string{"text", "[json]", "[string", "string]", "[]"} {
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
	if want := `(($3::text::TEXT = "dirname" AND "dirname" IS NOT NULL) AND (($4::text::NUMERIC <= "size" AND "size" IS NOT NULL) OR ("tags" @> ARRAY[$5::text::TEXT])))`; sql != want {
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
	sqlWords = regexp.MustCompile(`\$[0-9]+|"c"|::text|::TEXT|\b(AND|OR|NOT|COALESCE|false|IS|NULL|LIKE|ILIKE|ANY|ARRAY)\b|@>|[()=<>, \[\]]`)
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
