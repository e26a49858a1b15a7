package ring

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Load reads a ring from path in any format reshard knows: a node-fash
// LevelDB directory, a hash_ring.tar.gz image, a node-fash serialized ring
// or reshard's ring file. It returns the format found.
func Load(path string) (*Ring, string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, "", err
	}
	if st.IsDir() {
		r, err := ReadLevelDB(path)
		return r, FormatLevelDB, err
	}
	if isGzip(path) {
		r, err := ReadImage(path)
		return r, FormatImage, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	format, err := Detect(b)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %v", path, err)
	}
	r, err := Parse(b)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %v", path, err)
	}
	return r, format, nil
}

func isGzip(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var magic [2]byte
	_, err = io.ReadFull(f, magic[:])
	return err == nil && magic == [2]byte{0x1f, 0x8b}
}

// Save writes the ring to path as format: FormatRing (reshard's ring file)
// or FormatFash (node-fash's serialized ring, as 'fash serialize' writes
// it). node-fash's LevelDB rings are written with WriteLevelDB instead.
//
// The file is replaced atomically, so a failed write never leaves a
// half-written ring for a router or an operator to load; an existing file
// keeps its permissions.
func (r *Ring) Save(path, format string) error {
	var b bytes.Buffer
	var err error
	switch format {
	case FormatFash:
		err = r.WriteFash(&b)
	case FormatRing:
		err = r.WriteFile(&b)
	default:
		return fmt.Errorf("ring: cannot save a ring as %q: only as %q or %q", format, FormatRing, FormatFash)
	}
	if err != nil {
		return err
	}
	return replaceFile(path, b.Bytes())
}

// replaceFile writes b to a temporary file next to path and renames it over
// path, keeping path's permissions (0644 for a new file).
func replaceFile(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ring-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	mode := os.FileMode(0o644)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	if err := os.Chmod(tmp.Name(), mode); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
