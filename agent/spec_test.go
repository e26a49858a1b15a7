package agent

import (
	"slices"
	"testing"
)

func TestParseSpec(t *testing.T) {
	for _, c := range []struct {
		spec  string
		hosts []string
		ok    bool
		bad   bool
	}{
		{"agents:", nil, true, false},
		{"agents:h1, h2,,h3", []string{"h1", "h2", "h3"}, true, false},
		{"agents:h1,../etc", nil, true, true},
		{"lab:/tmp/lab", nil, false, false},
	} {
		hosts, ok, err := ParseSpec(c.spec)
		if ok != c.ok || (err != nil) != c.bad || (!c.bad && !slices.Equal(hosts, c.hosts)) {
			t.Errorf("%q: %v %v %v", c.spec, hosts, ok, err)
		}
	}
	if got := Spec([]string{"h1", "h2"}); got != "agents:h1,h2" {
		t.Errorf("Spec: %q", got)
	}
}
