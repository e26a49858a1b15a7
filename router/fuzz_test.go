package router_test

import (
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/reshard/reshard/router"
	"github.com/reshard/reshard/shard"
)

// FuzzParsePath: any path either fails cleanly or names a valid bucket and
// a key within limits that escapes and parses back to itself.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"/buckets/manta", "/buckets/manta/objects", "/buckets/manta/objects//u/stor/a",
		"/buckets/manta/objects/%2Fu%2Fstor%2Fa", "/buckets/x;drop/objects/k", "/buckets/manta/objects/%00",
		"/buckets/manta/objects/%ff%fe", "/buckets/manta/objects/%zz", "/buckets//objects/k", "/nothing", "/buckets/manta/objects/ü ✓"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		tg, err := router.ParsePath(path, 1024)
		if err != nil {
			return
		}
		if shard.ValidateBucket(tg.Bucket) != nil {
			t.Fatalf("%q: accepted bucket %q", path, tg.Bucket)
		}
		if tg.Kind != "object" {
			return
		}
		if tg.Key == "" || len(tg.Key) > 1024 || strings.IndexByte(tg.Key, 0) >= 0 || !utf8.ValidString(tg.Key) {
			t.Fatalf("%q: accepted key %q", path, tg.Key)
		}
		again, err := router.ParsePath("/buckets/"+tg.Bucket+"/objects/"+url.PathEscape(tg.Key), 1024)
		if err != nil || again != tg {
			t.Fatalf("%q: key %q does not round-trip: %+v %v", path, tg.Key, again, err)
		}
	})
}

// A key that is not UTF-8 is the client's error: PostgreSQL would refuse it
// with its own text, which must not reach the client.
func TestParsePathRefusesInvalidUTF8(t *testing.T) {
	for _, p := range []string{"/buckets/t1/objects/%ff%fe", "/buckets/t1/objects/a%c3", "/buckets/t1/objects/%ed%a0%80"} {
		if _, err := router.ParsePath(p, 1024); err == nil || !strings.Contains(err.Error(), "UTF-8") {
			t.Errorf("%s: %v", p, err)
		}
	}
	if tg, err := router.ParsePath("/buckets/t1/objects/%c3%a9", 1024); err != nil || tg.Key != "é" {
		t.Errorf("a UTF-8 key: %+v %v", tg, err)
	}
}
