package ring

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// Save writes what Load reads back, in the format asked for, and keeps an
// existing file's permissions.
func TestSaveLoadRoundTrip(t *testing.T) {
	want := mustNew(t, MD5, 64, []string{"1.moray", "2.moray"})
	if err := want.SetData([]uint32{3, 7}, json.RawMessage(`"ro"`)); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, format := range []string{FormatRing, FormatFash} {
		path := filepath.Join(dir, format+".json")
		if err := want.Save(path, format); err != nil {
			t.Fatalf("Save %s: %v", format, err)
		}
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o644 {
			t.Fatalf("Save %s: new file's mode %v, %v; want 0644", format, st.Mode().Perm(), err)
		}
		r, got, err := Load(path)
		if err != nil || got != format || !r.Equal(want) {
			t.Fatalf("Load %s: format %q, %v, equal %v", format, got, err, err == nil && r.Equal(want))
		}
		if err := os.Chmod(path, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := want.Save(path, format); err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("Save %s over a 0600 file left mode %v, %v", format, st.Mode().Perm(), err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 2 {
		t.Fatalf("Save left temporary files: %v %v", entries, err)
	}
	if err := want.Save(filepath.Join(dir, "x"), FormatLevelDB); err == nil {
		t.Fatal("Save as leveldb: want an error (WriteLevelDB writes those)")
	}
}
