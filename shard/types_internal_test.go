package shard

import "testing"

// The expected texts are what ip6addr 0.2.2, macaddr and V8's Date give
// for the same inputs (checked against Moray's own node_modules).
func TestMorayValueTexts(t *testing.T) {
	for _, c := range []struct {
		typ string
		in  any
		out string
	}{
		{"ip", "10.0.0.1", "10.0.0.1"},
		{"ip", "2001:DB8:0:0:1:0:0:1", "2001:db8::1:0:0:1"},
		{"ip", "::ffff:1.2.3.4", "::ffff:1.2.3.4"},
		{"ip", "1:0:2:3:4:5:6:7", "1::2:3:4:5:6:7"},
		{"ip", "::", "::"},
		{"ip", 167772161.0, "10.0.0.1"},
		{"subnet", "10.1.2.3/8", "10.0.0.0/8"},
		{"subnet", "fe80::1/64", "fe80::/64"},
		{"subnet", "::ffff:1.2.3.4/120", "::ffff:1.2.3.0/120"},
		{"mac", "AA:bb:cc:dd:ee:ff", "aa:bb:cc:dd:ee:ff"},
		{"mac", "a:b:c:d:e:f", "0a:0b:0c:0d:0e:0f"},
		{"mac", "01-02-03-04-05-06", "01:02:03:04:05:06"},
		{"mac", "aabbccddeeff", "aa:bb:cc:dd:ee:ff"},
		{"mac", 1.0, "00:00:00:00:00:01"},
		{"date", "2020-01-02T03:04:05Z", "2020-01-02T03:04:05.000Z"},
		{"date", "2021-02-30T24:00:00Z", "2021-03-03T00:00:00.000Z"},
		{"date", "2020-01-01T00:00:00.5Z", "2020-01-01T00:00:00.500Z"},
		{"date", "2020-01-01T00:00:00.1234567Z", "2020-01-01T00:00:00.123Z"},
		{"daterange", "(,2020-06-01T00:00:00Z]", "(,2020-06-01T00:00:00.000Z]"},
	} {
		got, err := mapIndexValue("f", c.typ, c.in, false)
		if err != nil || got != c.out {
			t.Errorf("%s %v: %q, %v; want %q", c.typ, c.in, got, err, c.out)
		}
	}
	for _, c := range []struct {
		typ string
		in  any
	}{
		{"ip", "10.0.0.256"}, {"ip", "1.2.3.4/8"}, {"ip", true}, {"ip", "1::2::3"}, {"ip", 1.5},
		{"subnet", "10.0.0.0"}, {"subnet", "10.0.0.0/33"}, {"subnet", 5.0},
		{"mac", "aa:bb:cc:dd:ee"}, {"mac", "aabbccddeeff00"}, {"mac", "aa:bb-cc:dd:ee:ff"},
		{"date", "2020-01-01"}, {"date", "2020-13-01T00:00:00Z"}, {"date", "2020-01-01T00:00:60Z"}, {"date", "2021-02-30T24:00:00.5Z"}, {"date", "2020-01-01T00:00:00,5Z"},
		{"uuid", "3F2504E0-4F89-41D3-9A0C-0305E82C3301"}, {"numrange", "1,2"}, {"daterange", "[2020-01-01,)"},
	} {
		if got, err := mapIndexValue("f", c.typ, c.in, false); err == nil {
			t.Errorf("%s %v: %q, want an IndexTypeError", c.typ, c.in, got)
		}
	}
}

// Moray's JavaScript test: NaN fails every comparison, strings and
// numbers compare as JavaScript compares them.
func TestMatchesJavaScript(t *testing.T) {
	opts := BucketOptions{Index: map[string]Index{"n": {Type: "number"}, "s": {Type: "string"}, "ip": {Type: "ip"}}}
	nan := map[string]any{"n": jsParseFloat("x")}
	for _, c := range []struct {
		filter string
		value  map[string]any
		want   bool
	}{
		{"(n>=10)", nan, false},
		{"(!(n>=10))", nan, true},
		{"(n>=10)", map[string]any{"n": 1e21}, true},
		{"(x>=5)", map[string]any{"x": 10.0}, true},
		{"(x=1)", map[string]any{"x": 1.0}, false},
		{"(s=*a)", map[string]any{"s": "ab"}, false},
		{"(s=a*)", map[string]any{"s": "ab"}, true},
		{"(S=ab)", map[string]any{"s": "ab"}, true},
		{"(ip>=10.0.0.5)", map[string]any{"ip": "10.0.0.20"}, true},
		{"(ip<=10.0.0.5)", map[string]any{"ip": "10.0.0.20"}, false},
		{"(s:caseIgnoreMatch:=AB)", map[string]any{"s": []any{"x", "aB"}}, true},
	} {
		f, err := ParseFilter(c.filter)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Matches(opts, c.value); got != c.want {
			t.Errorf("%s on %v: %v, want %v", c.filter, c.value, got, c.want)
		}
	}
}
