package shard

import (
	"strings"
	"testing"
)

// topFields splits the codec's canonical text and joins back to the same
// bytes, keys decoded, whatever the values hold.
func TestTopFieldsRoundTrip(t *testing.T) {
	for _, raw := range []string{
		`{}`, `{"a":1}`, `{"1":true,"b":"x,y}","c":{"d":[1,{"e":"]"}]},"f":null}`,
		`{"q\"k":"v\\\"","s":"é 😀","n":-1.5e-7,"arr":[[],[[]],{}]}`,
		`{"vnode":3,"z":"\u0000\u001f"}`,
	} {
		text, err := MorayValue([]byte(raw), nil)
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		fs, err := topFields(text)
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		if fs.text() != text {
			t.Errorf("%s: split and joined as %s", text, fs.text())
		}
		if strings.Contains(raw, `"q\"k"`) && fs.find(`q"k`) != 0 {
			t.Errorf("%s: escaped key not decoded: %+v", text, fs)
		}
	}
	for _, bad := range []string{``, `[]`, `{"a"}`, `{"a":1,}`, `{"a":"x}`} {
		if _, err := topFields(bad); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}
