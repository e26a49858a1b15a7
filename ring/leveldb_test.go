package ring

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/syndtr/goleveldb/leveldb"
)

// LevelDB rings recorded from node-fash's leveldb.js (make-leveldb-vectors.js).
var levelDBRings = []string{"ldb-sha256-10", "ldb-md5-1024", "ldb-sha1-100000", "ldb-sha256-deser"}

// readRecords reads a NAME.leveldb.jsonl.gz: [key, value] per line.
func readRecords(t testing.TB, name string) [][2]string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name+".leveldb.jsonl.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]string
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 8<<20)
	for sc.Scan() {
		var kv [2]string
		if err := json.Unmarshal(sc.Bytes(), &kv); err != nil {
			t.Fatal(err)
		}
		out = append(out, kv)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// writeRecords stores records verbatim in a new LevelDB directory.
func writeRecords(t testing.TB, dir string, recs [][2]string) {
	t.Helper()
	db, err := leveldb.OpenFile(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := new(leveldb.Batch)
	for _, kv := range recs {
		b.Put([]byte(kv[0]), []byte(kv[1]))
	}
	if err := db.Write(b, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// dumpRecords reads every record of a LevelDB directory.
func dumpRecords(t testing.TB, dir string) map[string]string {
	t.Helper()
	db, err := leveldb.OpenFile(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string]string{}
	it := db.NewIterator(nil, nil)
	for it.Next() {
		out[string(it.Key())] = string(it.Value())
	}
	it.Release()
	if err := it.Error(); err != nil {
		t.Fatal(err)
	}
	return out
}

// snapshot hashes every file under dir, to prove a read changed nothing.
func snapshot(t testing.TB, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[p] = sha256.Sum256(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func readLevelDBUnchanged(t testing.TB, dir string) *Ring {
	t.Helper()
	before := snapshot(t, dir)
	r, err := ReadLevelDB(dir)
	if err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, dir)
	if len(before) != len(after) {
		t.Fatalf("reading %s changed its file list: %d files before, %d after", dir, len(before), len(after))
	}
	for p, h := range before {
		if after[p] != h {
			t.Fatalf("reading %s changed %s", dir, p)
		}
	}
	return r
}

// Rings in the layout node-fash's leveldb.js wrote route every key as
// node-fash does, export to the JSON node-fash's serialize() prints for the
// same operations, and are not touched by the import.
func TestLevelDBFixturesMatchFash(t *testing.T) {
	for _, name := range levelDBRings {
		t.Run(name, func(t *testing.T) {
			want, vs := readVectors(t, name)
			dir := t.TempDir()
			writeRecords(t, dir, readRecords(t, name))
			r := readLevelDBUnchanged(t, dir)
			checkVectors(t, name, r, vs)
			if got := fashBytes(t, r); !bytes.Equal(got, want) {
				t.Fatalf("export-fash differs from node-fash serialize():\n%.300s\n%.300s", got, want)
			}
		})
	}
}

// What WriteLevelDB writes is what leveldb.js wrote: the routing keys and
// metadata byte for byte, the derived vnode lists as the same sets.
func TestWriteLevelDBMatchesFashLayout(t *testing.T) {
	for _, name := range levelDBRings {
		t.Run(name, func(t *testing.T) {
			b, _ := readVectors(t, name)
			r, err := ParseFash(b)
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(t.TempDir(), "ring")
			if err := r.WriteLevelDB(dir); err != nil {
				t.Fatal(err)
			}
			got := dumpRecords(t, dir)
			want := readRecords(t, name)
			if len(got) != len(want) {
				t.Fatalf("%d records, node-fash wrote %d", len(got), len(want))
			}
			for _, kv := range want {
				k, w := kv[0], kv[1]
				g, ok := got[k]
				if !ok {
					t.Fatalf("key %q missing", k)
				}
				if k == "VNODE_DATA" || (strings.HasPrefix(k, "/PNODE/") && strings.HasPrefix(w, "[")) {
					if !slices.Equal(numberSet(t, g), numberSet(t, w)) {
						t.Fatalf("key %q: %s, node-fash %s", k, g, w)
					}
				} else if g != w {
					t.Fatalf("key %q: %s, node-fash %s", k, g, w)
				}
			}
		})
	}
}

// numberSet reads a list of vnodes, numbers or (from deserialize) strings.
func numberSet(t testing.TB, s string) []string {
	t.Helper()
	var xs []json.RawMessage
	if err := json.Unmarshal([]byte(s), &xs); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = strings.Trim(string(x), `"`)
	}
	slices.Sort(out)
	return out
}

// export then import gives the same ring, down to pnode order, data values
// and the node-fash file bytes.
func TestLevelDBRoundTrip(t *testing.T) {
	rings := map[string]*Ring{}
	for _, name := range append(vectorRings, levelDBRings...) {
		b, _ := readVectors(t, name)
		r, err := ParseFash(b)
		if err != nil {
			t.Fatal(err)
		}
		rings[name] = r
	}
	r := mustNew(t, MD5, 5000, []string{"b", "a", "ü/x", `q"uote`})
	for _, step := range []error{
		r.Remap(mustList(t, "0-99, 4000"), "tcp://new:2020"),
		r.SetData(mustList(t, "0-9"), json.RawMessage(`"ro"`)),
		r.SetData(mustList(t, "10"), json.RawMessage(`{"a":[1,2.5,null],"b":"\u00e9"}`)),
		r.SetData(mustList(t, "11"), json.RawMessage(`-3`)),
		r.SetData(mustList(t, "12"), json.RawMessage(`true`)),
		r.Remap(mustList(t, "1-4999/2"), "a"),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	rings["built"] = r
	for name, r := range rings {
		dir := filepath.Join(t.TempDir(), "ring")
		if err := r.WriteLevelDB(dir); err != nil {
			t.Fatal(err)
		}
		got := readLevelDBUnchanged(t, dir)
		if !got.Equal(r) {
			t.Fatalf("%s: ring changed in a LevelDB round trip", name)
		}
		if !slices.Equal(got.pnodes, r.pnodes) {
			t.Fatalf("%s: pnode order %q, want %q", name, got.pnodes, r.pnodes)
		}
		// Data values may be listed in another order; what each vnode
		// carries is compared by Equal and the fash bytes.
		if !slices.Equal(got.DataVnodes(), r.DataVnodes()) {
			t.Fatalf("%s: data vnodes differ after a LevelDB round trip", name)
		}
		if !bytes.Equal(fashBytes(t, got), fashBytes(t, r)) {
			t.Fatalf("%s: node-fash export differs after a LevelDB round trip", name)
		}
	}
}

func TestWriteLevelDBRefusesNonEmptyDir(t *testing.T) {
	r := mustNew(t, SHA256, 10, []string{"a"})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)
	if err := r.WriteLevelDB(dir); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("wrote into a non-empty directory: %v", err)
	}
	if after := snapshot(t, dir); len(after) != len(before) {
		t.Fatal("refused write still created files")
	}
	if err := r.WriteLevelDB(t.TempDir()); err != nil {
		t.Fatalf("empty directory: %v", err)
	}
}

// Broken rings are refused with a message naming what is wrong.
func TestReadLevelDBRejects(t *testing.T) {
	base := readRecords(t, "ldb-sha256-10")
	without := func(key string) [][2]string {
		var out [][2]string
		for _, kv := range base {
			if kv[0] != key {
				out = append(out, kv)
			}
		}
		return out
	}
	with := func(key, val string) [][2]string {
		return append(without(key), [2]string{key, val})
	}
	p1 := "tcp://1.moray.emy-11.joyent.us:2020"
	for _, c := range []struct {
		name string
		recs [][2]string
		want string
	}{
		{"incomplete", without("COMPLETE"), "COMPLETE is missing"},
		{"no vnode", without("/VNODE/5"), "1 vnodes belong to no pnode (first: vnode 5)"},
		{"no data key", without("/PNODE/" + p1 + "/3"), "/PNODE/" + p1 + "/3 is missing"},
		{"stray vnode", with("/VNODE/10", `"a"`), `unexpected key "/VNODE/10"`},
		{"bad count", with("VNODE_COUNT", "0"), "vnode count must be at least 1"},
		{"bad interval", with("ALGORITHM", `{"NAME":"sha256","MAX":"FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF","VNODE_HASH_INTERVAL":"1"}`), "VNODE_HASH_INTERVAL"},
		{"future version", with("VERSION", `"3.0.0"`), "newer than node-fash"},
		{"bad data", with("/PNODE/"+p1+"/3", "{"), "not a JSON value"},
		{"dup pnode", with("/PNODE", `["a","a"]`), "twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeRecords(t, dir, c.recs)
			_, err := ReadLevelDB(dir)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
	if _, err := ReadLevelDB(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no LOCK file") {
		t.Fatalf("empty directory: %v", err)
	}
}

type tarEntry struct {
	name string
	typ  byte
	body string
}

func writeTarGz(t testing.TB, path string, entries []tarEntry) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body))}
		if e.typ == tar.TypeDir {
			h.Mode, h.Size = 0o755, 0
		}
		if e.typ == tar.TypeSymlink {
			h.Linkname, h.Size = "/etc/passwd", 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	f.Close()
}

// dirEntries packs a directory as `tar -czf X -C parent hash_ring` does.
func dirEntries(t testing.TB, dir, prefix string) []tarEntry {
	t.Helper()
	out := []tarEntry{{name: prefix + "/", typ: tar.TypeDir}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tarEntry{name: prefix + "/" + e.Name(), typ: tar.TypeReg, body: string(b)})
	}
	return out
}

func TestReadImage(t *testing.T) {
	b, vs := readVectors(t, "ldb-md5-1024")
	want, err := ParseFash(b)
	if err != nil {
		t.Fatal(err)
	}
	ldb := filepath.Join(t.TempDir(), "hash_ring")
	if err := want.WriteLevelDB(ldb); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	good := filepath.Join(tmp, "hash_ring.tar.gz")
	entries := dirEntries(t, ldb, "hash_ring")
	writeTarGz(t, good, entries)
	for _, path := range []string{good} {
		r, format, err := Load(path)
		if err != nil || format != FormatImage {
			t.Fatalf("Load image: %v %q", err, format)
		}
		if !r.Equal(want) {
			t.Fatal("image ring differs")
		}
		checkVectors(t, "image", r, vs)
	}
	r, format, err := Load(ldb)
	if err != nil || format != FormatLevelDB || !r.Equal(want) {
		t.Fatalf("Load directory: %v %q", err, format)
	}

	for _, c := range []struct {
		name    string
		entries []tarEntry
		want    string
	}{
		{"escape", append(slices.Clone(entries), tarEntry{name: "../evil", typ: tar.TypeReg, body: "x"}), "outside the image"},
		{"absolute", append(slices.Clone(entries), tarEntry{name: "/tmp/evil", typ: tar.TypeReg, body: "x"}), "outside the image"},
		{"symlink", append(slices.Clone(entries), tarEntry{name: "hash_ring/link", typ: tar.TypeSymlink}), "link or device"},
		{"no ring", []tarEntry{{name: "other/", typ: tar.TypeDir}, {name: "other/x", typ: tar.TypeReg, body: "x"}}, "no LevelDB ring"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(tmp, c.name+".tar.gz")
			writeTarGz(t, p, c.entries)
			_, err := ReadImage(p)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(tmp), "evil")); err == nil {
		t.Fatal("an entry escaped the extraction directory")
	}
}

// A production-size ring: 1,000,000 vnodes written and imported in seconds.
func TestLevelDBMillionVnodes(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 1M-vnode LevelDB ring")
	}
	r := mustNew(t, SHA256, 1000000, shards)
	if err := r.Remap(mustList(t, "0, 106, 943, 689, 5000-5999"), "tcp://3.moray.emy-11.joyent.us:2020"); err != nil {
		t.Fatal(err)
	}
	if err := r.SetData(mustList(t, "7000-7999"), json.RawMessage(`"ro"`)); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "hash_ring")
	start := time.Now()
	if err := r.WriteLevelDB(dir); err != nil {
		t.Fatal(err)
	}
	wrote := time.Since(start)
	start = time.Now()
	got, err := ReadLevelDB(dir)
	if err != nil {
		t.Fatal(err)
	}
	read := time.Since(start)
	start = time.Now()
	loc := got.LocateString("/poseidon/stor/foo.txt")
	located := time.Since(start)
	want := r.LocateString("/poseidon/stor/foo.txt")
	if !got.Equal(r) || loc.Vnode != want.Vnode || loc.Pnode != want.Pnode || !bytes.Equal(loc.Data, want.Data) {
		t.Fatal("1M-vnode ring changed in a LevelDB round trip")
	}
	var size int64
	for p := range snapshot(t, dir) {
		st, _ := os.Stat(p)
		size += st.Size()
	}
	t.Logf("1M vnodes: export %v, import %v, locate %v, %d MB on disk", wrote.Round(time.Millisecond), read.Round(time.Millisecond), located, size>>20)
	if read > time.Minute {
		t.Errorf("importing 1M vnodes took %v", read)
	}
}
