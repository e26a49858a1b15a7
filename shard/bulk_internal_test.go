package shard

import (
	"encoding/json"
	"testing"
)

// What Moray sends for a statement, node-postgres makes of values, and
// pg-types makes of PostgreSQL's text output; the differential test checks
// the same against the real Moray.
func TestSQLConversions(t *testing.T) {
	if got := MorayStatement("select 1\n  as x,\r\n\t2 -- c\n, 3"); got != "select 1  as x,\t2 -- c, 3" {
		t.Errorf("MorayStatement: %q", got)
	}
	params, err := SQLParams([]json.RawMessage{json.RawMessage(`[1,"a\"b\\c",null,[2]]`), json.RawMessage(`1e21`),
		json.RawMessage(`{"b":1.0,"a":"é"}`), json.RawMessage(`null`), json.RawMessage(`false`)})
	want := []string{`{"1","a\"b\\c",NULL,{"2"}}`, `1e+21`, `{"b":1,"a":"é"}`, "", "false"}
	if err != nil || len(params) != len(want) {
		t.Fatalf("SQLParams: %q %v", params, err)
	}
	for i, w := range want {
		if string(params[i]) != w || (w == "" && params[i] != nil) {
			t.Errorf("SQLParams[%d] = %q, want %q", i, params[i], w)
		}
	}
	for _, c := range []struct {
		oid  uint32
		text string
		want string
	}{
		{1007, `[0:1]={5,6}`, `[null,6]`},
		{1009, `[0:1]={a,b}`, `["[0:1]=a","b"]`},
		{1007, `{{1,2},{NULL,4}}`, `[[1,2],[null,4]]`},
		{1009, `{"a,b","c\"d",NULL,"NULL",""}`, `["a,b","c\"d",null,"NULL",""]`},
		{oidTimestamptz, `2020-01-02 03:04:05.678901+05:30`, `"2020-01-01T21:34:05.678Z"`},
		{oidDate, `0044-03-15 BC`, `"-000043-03-15T00:00:00.000Z"`},
		{oidDate, `infinity`, `null`},
		{oidNumeric, `NaN`, `null`},
		{oidInt8, `9007199254740993`, `"9007199254740993"`},
		{oidBytea, `\x00ff41`, `{"type":"Buffer","data":[0,255,65]}`},
		{oidJSONB, `{"b": 1.0, "a": [1e2]}`, `{"b":1,"a":[100]}`},
	} {
		got, err := pgValueJSON(c.oid, []byte(c.text))
		if err != nil || string(got) != c.want {
			t.Errorf("pgValueJSON(%d, %q) = %s %v, want %s", c.oid, c.text, got, err, c.want)
		}
	}
}
