package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reshard/reshard/etcd/etcdtest"
)

// run executes the CLI in-process and returns stdout and the error.
func runIn(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runIn(t, args...)
	if err != nil {
		t.Fatalf("reshard %s: %v", strings.Join(args, " "), err)
	}
	return out
}

type locateLine struct {
	Key   string          `json:"key"`
	Vnode uint32          `json:"vnode"`
	Pnode string          `json:"pnode"`
	Data  json.RawMessage `json:"data"`
}

func readLines(t *testing.T, s string) []locateLine {
	t.Helper()
	var out []locateLine
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l locateLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

// locate on a node-fash file and on our ring file answers like node-fash.
func TestRingLocateMatchesFashVectors(t *testing.T) {
	testdata := filepath.Join("..", "..", "ring", "testdata")
	b, err := os.ReadFile(filepath.Join(testdata, "sha256-remapped.vectors"))
	if err != nil {
		t.Fatal(err)
	}
	want := readLines(t, string(b))
	keys := []string{"ring", "locate", "--ring-file", filepath.Join(testdata, "sha256-remapped.fash.json"), "--"}
	for _, l := range want {
		keys = append(keys, l.Key)
	}
	ours := filepath.Join(t.TempDir(), "ring.json")
	mustRun(t, "ring", "import-fash", "--ring-file", ours, filepath.Join(testdata, "sha256-remapped.fash.json"))
	for _, file := range []string{keys[3], ours} {
		keys[3] = file
		got := readLines(t, mustRun(t, keys...))
		if len(got) != len(want) {
			t.Fatalf("%s: %d lines for %d keys", file, len(got), len(want))
		}
		for i := range want {
			if got[i].Key != want[i].Key || got[i].Vnode != want[i].Vnode || got[i].Pnode != want[i].Pnode || !bytes.Equal(got[i].Data, want[i].Data) {
				t.Fatalf("%s: got %+v, node-fash %+v", file, got[i], want[i])
			}
		}
	}
}

func TestRingCommandsAgainstEtcd(t *testing.T) {
	_, url := etcdtest.Start(t)
	e := func(args ...string) []string { return append([]string{"--etcd", url, "ring"}, args...) }
	mustRun(t, e("create", "--vnodes", "1024", "--pnode", "tcp://2.moray:2020,tcp://1.moray:2020")...)
	if _, err := runIn(t, e("create", "--vnodes", "8", "--pnode", "x")...); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second create: %v", err)
	}
	mustRun(t, e("add-data", "--vnodes", "0, 106, 943, 689", "--data", "ro")...)
	mustRun(t, e("remap-vnode", "--vnodes", "0, 106, 943, 689", "--pnode", "tcp://3.moray:2020")...)

	// Bad input fails with one line and stores nothing.
	for _, bad := range [][]string{
		{"remap-vnode", "--vnodes", "1024", "--pnode", "x"},
		{"remap-vnode", "--vnodes", "-1", "--pnode", "x"},
		{"remap-vnode", "--vnodes", "1,1", "--pnode", "x"},
		{"remap-vnode", "--vnodes", "0", "--pnode", "tcp://3.moray:2020"},
		{"add-data", "--vnodes", "abc", "--data", "ro"},
		{"remap-vnode", "--vnodes", "5", "--pnode", "x", "--expect-version", "1"},
		{"rollback", "99"},
	} {
		_, err := runIn(t, e(bad...)...)
		if err == nil || strings.Contains(err.Error(), "\n") {
			t.Fatalf("%v: error %q", bad, err)
		}
	}
	if _, err := runIn(t, e("remap-vnode", "--vnodes", "5", "--pnode", "x", "--expect-version", "1")...); err == nil || !strings.Contains(err.Error(), "ring version conflict") {
		t.Fatalf("stale --expect-version: %v", err)
	}
	var hist struct {
		Current  int64
		Versions []struct{ Version int64 }
	}
	json.Unmarshal([]byte(mustRun(t, e("history", "--json")...)), &hist)
	if hist.Current != 3 || len(hist.Versions) != 3 {
		t.Fatalf("history after bad input: %+v", hist)
	}

	var vn []locateLine
	vn = readLines(t, mustRun(t, e("get-vnode-pnode-and-data", "--vnodes", "943,1", "--json")...))
	if len(vn) != 2 || vn[0].Pnode != "tcp://3.moray:2020" || string(vn[0].Data) != `"ro"` || vn[1].Pnode != "tcp://2.moray:2020" {
		t.Fatalf("get-vnode-pnode-and-data: %+v", vn)
	}
	var groups []struct {
		Data   json.RawMessage
		Vnodes string
	}
	json.Unmarshal([]byte(mustRun(t, e("get-data-vnodes", "--json")...)), &groups)
	if len(groups) != 1 || groups[0].Vnodes != "0,106,689,943" {
		t.Fatalf("get-data-vnodes: %+v", groups)
	}
	var pv struct{ Count int }
	json.Unmarshal([]byte(mustRun(t, e("get-vnodes", "tcp://3.moray:2020", "--json")...)), &pv)
	if pv.Count != 4 {
		t.Fatalf("get-vnodes: %+v", pv)
	}
	diff := mustRun(t, e("diff", "1", "3")...)
	if !strings.Contains(diff, "+ pnode tcp://3.moray:2020") || !strings.Contains(diff, `data 1 -> "ro" on 4 vnodes: 0,106,689,943`) {
		t.Fatalf("diff:\n%s", diff)
	}
	// export-fash of version 1 then import gives back version 1's ring.
	dir := t.TempDir()
	mustRun(t, e("export-fash", "--version", "1", "--out", filepath.Join(dir, "v1.json"))...)
	mustRun(t, e("import-fash", filepath.Join(dir, "v1.json"))...)
	if d := mustRun(t, e("diff", "1", "4")...); d != "no differences\n" {
		t.Fatalf("import of exported v1 differs:\n%s", d)
	}
	mustRun(t, e("rollback", "3")...)
	loc := readLines(t, mustRun(t, e("locate", "k1", "")...))
	if len(loc) != 2 || loc[1].Key != "" {
		t.Fatalf("locate: %+v", loc)
	}
	if d := mustRun(t, e("diff", "3", "5")...); d != "no differences\n" {
		t.Fatalf("rollback to 3 differs:\n%s", d)
	}
}

func TestRingFileRejectsBadInputUntouched(t *testing.T) {
	f := filepath.Join(t.TempDir(), "r.json")
	mustRun(t, "ring", "create", "--ring-file", f, "--vnodes", "100", "--pnode", "a,b")
	before, _ := os.ReadFile(f)
	for _, bad := range [][]string{
		{"create", "--vnodes", "0", "--pnode", "a", "--force"},
		{"create", "--vnodes", "10", "--pnode", "a,a", "--force"},
		{"create", "--vnodes", "10", "--pnode", "a"},
		{"remap-vnode", "--vnodes", "0-100", "--pnode", "c"},
		{"add-data", "--vnodes", "3-1", "--data", "ro"},
		{"history"},
	} {
		if _, err := runIn(t, append([]string{"ring", "--ring-file", f}, bad...)...); err == nil {
			t.Fatalf("%v succeeded", bad)
		}
	}
	after, _ := os.ReadFile(f)
	if !bytes.Equal(before, after) {
		t.Fatal("bad input changed the ring file")
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"vnodes":2,"pnodeToVnodeMap":{"a":{"0":1}},"algorithm":{"NAME":"sha256"},"version":"2.1.0"}`), 0o644)
	if _, err := runIn(t, "ring", "locate", "--ring-file", bad, "k"); err == nil || !strings.Contains(err.Error(), "malformed node-fash ring") {
		t.Fatalf("malformed fash file: %v", err)
	}
}

// hashDir hashes every file in dir, to prove a command left it alone.
func hashDir(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = sha256.Sum256(b)
	}
	return out
}

// tarGz packs dir as `tar -czf out -C parent hash_ring` does.
func tarGz(t *testing.T, dir, out string) {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "hash_ring/", Typeflag: tar.TypeDir, Mode: 0o755})
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		tw.WriteHeader(&tar.Header{Name: "hash_ring/" + e.Name(), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b))})
		tw.Write(b)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
}

// export-fash --leveldb writes electric-moray's layout; locate and
// import-fash read it (and its hash_ring.tar.gz) without changing it, and
// the round trip gives node-fash's file back byte for byte.
func TestRingLevelDBCommands(t *testing.T) {
	testdata := filepath.Join("..", "..", "ring", "testdata")
	fashFile := filepath.Join(testdata, "ldb-md5-1024.fash.json")
	b, err := os.ReadFile(filepath.Join(testdata, "ldb-md5-1024.vectors"))
	if err != nil {
		t.Fatal(err)
	}
	want := readLines(t, string(b))
	tmp := t.TempDir()
	ldb := filepath.Join(tmp, "hash_ring")
	mustRun(t, "ring", "export-fash", "--ring-file", fashFile, "--leveldb", ldb)
	if _, err := runIn(t, "ring", "export-fash", "--ring-file", fashFile, "--leveldb", ldb); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("export into a non-empty directory: %v", err)
	}
	image := filepath.Join(tmp, "hash_ring.tar.gz")
	tarGz(t, ldb, image)
	before := hashDir(t, ldb)

	imported := filepath.Join(tmp, "imported.json")
	mustRun(t, "ring", "import-fash", "--ring-file", imported, ldb)
	fromImage := filepath.Join(tmp, "from-image.json")
	mustRun(t, "ring", "import-fash", "--ring-file", fromImage, image)
	for _, file := range []string{ldb, image, imported, fromImage} {
		args := []string{"ring", "locate", "--ring-file", file, "--"}
		for _, l := range want {
			args = append(args, l.Key)
		}
		got := readLines(t, mustRun(t, args...))
		if len(got) != len(want) {
			t.Fatalf("%s: %d lines for %d keys", file, len(got), len(want))
		}
		for i := range want {
			if got[i].Vnode != want[i].Vnode || got[i].Pnode != want[i].Pnode || !bytes.Equal(got[i].Data, want[i].Data) {
				t.Fatalf("%s: got %+v, node-fash %+v", file, got[i], want[i])
			}
		}
	}
	orig, _ := os.ReadFile(fashFile)
	for _, file := range []string{ldb, imported, fromImage} {
		if out := mustRun(t, "ring", "export-fash", "--ring-file", file); out != string(orig) {
			t.Fatalf("%s: export-fash differs from node-fash's file", file)
		}
	}
	if _, err := runIn(t, "ring", "remap-vnode", "--ring-file", ldb, "--vnodes", "0", "--pnode", "x"); err == nil || !strings.Contains(err.Error(), "only reads") {
		t.Fatalf("remap-vnode on a LevelDB ring: %v", err)
	}
	after := hashDir(t, ldb)
	if len(after) != len(before) {
		t.Fatalf("commands changed the LevelDB file list: %d files, then %d", len(before), len(after))
	}
	for name, h := range before {
		if after[name] != h {
			t.Fatalf("commands changed %s in the LevelDB ring", name)
		}
	}
}
