package ring

// node-fash 3.0.1 keeps a ring in LevelDB (lib/backend/leveldb.js) with
// utf8 keys and JSON values (levelup's valueEncoding 'json', so every value
// is JSON.stringify of what fash put):
//
//	VNODE_COUNT           vnode count, a number        createNewRing putVnodeCount,
//	                                                   deserialize putVnodeCount
//	/VNODE/<v>            owning pnode, a string       allocateVnodeImpl, deserialize
//	                                                   allocateVnodes, remapVnode
//	                                                   addNewMapping; read by getNode
//	/PNODE/<p>/<v>        vnode v's data (1 if none)   allocateVnodeImpl (LVAL_NULL),
//	                                                   deserialize allocateVnodes,
//	                                                   addData setData, remapVnode
//	                                                   (moves it; delOldMapping deletes
//	                                                   the old key); read by getNode
//	/PNODE/<p>            p's vnodes, a number array   writePnodeKeys, deserialize,
//	                                                   remapVnode; [] for a new pnode
//	/PNODE                pnode names, an array        writePnodeKeys (sorted),
//	                                                   deserialize (topology order),
//	                                                   remapVnode appends, removePnode
//	VNODE_DATA            vnodes with data, an array   writeVnodeDataArray ([]),
//	                                                   deserialize (vnodes as strings!),
//	                                                   addData (numbers)
//	ALGORITHM             {NAME, MAX, VNODE_HASH_INTERVAL as bignum toString(16)}
//	VERSION               fash.VERSION, "2.1.0"
//	COMPLETE              1, written last; loadFromDb refuses a ring without it
//
// Lookups (getNode) read only /VNODE/<v> and /PNODE/<owner>/<v>, so those
// two decide routing here too; /PNODE gives the pnode order, and the
// derived lists (/PNODE/<p>, VNODE_DATA) are rewritten by WriteLevelDB.
// testdata/ldb-*.leveldb.jsonl.gz were recorded from leveldb.js itself.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/reshard/reshard/internal/jsjson"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/util"
)

// Formats Load tells apart besides FormatRing and FormatFash.
const (
	FormatLevelDB = "leveldb"          // node-fash LevelDB ring directory
	FormatImage   = "hash_ring.tar.gz" // Manta's HASH_RING_IMAGE tarball
)

// maxImageBytes bounds what an image may unpack to; a million-vnode ring
// is about 100 MB, so anything near this is not a ring.
const maxImageBytes = 4 << 30

// ReadLevelDB reads a node-fash LevelDB ring directory. The directory is
// opened read-only and no file in it is created or changed.
func ReadLevelDB(dir string) (*Ring, error) {
	// goleveldb creates LOCK when it is missing, even read-only; an
	// operator's ring always has one, so its absence means a wrong path.
	if _, err := os.Stat(filepath.Join(dir, "LOCK")); err != nil {
		return nil, fmt.Errorf("%s is not a LevelDB directory (no LOCK file)", dir)
	}
	db, err := leveldb.OpenFile(dir, &opt.Options{ReadOnly: true, ErrorIfMissing: true})
	if err != nil {
		return nil, fmt.Errorf("open LevelDB ring %s: %v", dir, err)
	}
	defer db.Close()
	r, err := readFashDB(db)
	if err != nil {
		return nil, fmt.Errorf("malformed node-fash LevelDB ring %s: %w", dir, err)
	}
	return r, nil
}

func getJSON(db *leveldb.DB, key string, v any) error {
	b, err := db.Get([]byte(key), nil)
	if errors.Is(err, leveldb.ErrNotFound) {
		return fmt.Errorf("key %s is missing", key)
	}
	if err != nil {
		return fmt.Errorf("key %s: %v", key, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("key %s: %v", key, err)
	}
	return nil
}

func readFashDB(db *leveldb.DB) (*Ring, error) {
	var complete json.RawMessage
	if err := getJSON(db, "COMPLETE", &complete); err != nil {
		return nil, fmt.Errorf("%v: node-fash did not finish writing this ring", err)
	}
	var version string
	if err := getJSON(db, "VERSION", &version); err != nil {
		return nil, err
	}
	if err := checkFashVersion(version); err != nil {
		return nil, err
	}
	var count int
	if err := getJSON(db, "VNODE_COUNT", &count); err != nil {
		return nil, err
	}
	if err := checkVnodeCount(count); err != nil {
		return nil, err
	}
	var alg fashAlgorithm
	if err := getJSON(db, "ALGORITHM", &alg); err != nil {
		return nil, err
	}
	r, err := emptyRing(alg, count)
	if err != nil {
		return nil, err
	}
	r.fashVersion = version
	var pnodes []string
	if err := getJSON(db, "/PNODE", &pnodes); err != nil {
		return nil, err
	}
	pnodeIx := map[string]uint16{}
	addPnode := func(p string) (uint16, error) {
		if err := checkPnodeName(p); err != nil {
			return 0, err
		}
		if len(r.pnodes) >= MaxPnodes {
			return 0, fmt.Errorf("more than %d pnodes", MaxPnodes)
		}
		ix := uint16(len(r.pnodes))
		pnodeIx[p] = ix
		r.pnodes = append(r.pnodes, p)
		return ix, nil
	}
	for _, p := range pnodes {
		if _, dup := pnodeIx[p]; dup {
			return nil, fmt.Errorf("/PNODE lists pnode %q twice", p)
		}
		if _, err := addPnode(p); err != nil {
			return nil, fmt.Errorf("/PNODE: %v", err)
		}
	}

	// One pass over /VNODE/ and one over /PNODE/ instead of two million
	// point reads; /VNODE/ values repeat, so each is decoded once.
	assigned := make([]bool, r.n)
	byValue := map[string]uint16{}
	it := db.NewIterator(util.BytesPrefix([]byte("/VNODE/")), nil)
	for it.Next() {
		k := it.Key()
		v, ok := parseVnodeKey(k[len("/VNODE/"):], r.n)
		if !ok {
			it.Release()
			return nil, fmt.Errorf("unexpected key %q: not a vnode of a %d-vnode ring", k, r.n)
		}
		ix, seen := byValue[string(it.Value())]
		if !seen {
			var p string
			if err := json.Unmarshal(it.Value(), &p); err != nil {
				it.Release()
				return nil, fmt.Errorf("key %s: value %q is not a pnode name", k, it.Value())
			}
			if ix, seen = pnodeIx[p]; !seen {
				// getNode routes to it even though /PNODE omits it.
				if ix, err = addPnode(p); err != nil {
					it.Release()
					return nil, fmt.Errorf("key %s: %v", k, err)
				}
			}
			byValue[string(it.Value())] = ix
		}
		r.owner.set(v, ix)
		assigned[v] = true
	}
	it.Release()
	if err := it.Error(); err != nil {
		return nil, err
	}
	if err := checkAllAssigned(assigned); err != nil {
		return nil, fmt.Errorf("/VNODE: %v", err)
	}

	hasData := make([]bool, r.n)
	it = db.NewIterator(util.BytesPrefix([]byte("/PNODE/")), nil)
	for it.Next() {
		rest := it.Key()[len("/PNODE/"):]
		slash := bytes.LastIndexByte(rest, '/')
		if slash < 0 {
			continue // /PNODE/<p> without '/' in p: a derived vnode list
		}
		v, ok := parseVnodeKey(rest[slash+1:], r.n)
		// Pnode names contain '/' (tcp://...), so /PNODE/<p> can look like
		// /PNODE/<q>/<v>; only the owner's key holds routing data.
		if !ok || hasData[v] || r.pnodes[r.owner.at(v)] != string(rest[:slash]) {
			continue
		}
		hasData[v] = true
		val := it.Value()
		if bytes.Equal(val, dataNull) {
			continue
		}
		d, err := normalizeData(val)
		if err != nil {
			it.Release()
			return nil, fmt.Errorf("key %s: %v", it.Key(), err)
		}
		dx, err := r.dataIndex(d)
		if err != nil {
			it.Release()
			return nil, err
		}
		r.dataIx.set(v, dx)
	}
	it.Release()
	if err := it.Error(); err != nil {
		return nil, err
	}
	for v, ok := range hasData {
		if !ok {
			return nil, fmt.Errorf("key /PNODE/%s/%d is missing: node-fash cannot look up vnode %d", r.pnodes[r.owner.at(uint32(v))], v, v)
		}
	}
	return r, nil
}

// parseVnodeKey accepts the decimal form sprintf('%d') writes.
func parseVnodeKey(b []byte, n uint32) (uint32, bool) {
	if len(b) == 0 || len(b) > 10 || (b[0] == '0' && len(b) > 1) {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return uint32(v), v < uint64(n)
}

// WriteLevelDB writes the ring as a node-fash LevelDB ring directory that
// electric-moray can load. dir must be missing or empty. Lists are written
// as node-fash's deserialize does, except that VNODE_DATA holds numbers as
// addData writes them; COMPLETE goes last so a cut-short write is refused.
func (r *Ring) WriteLevelDB(dir string) error {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return fmt.Errorf("%s is not empty: refusing to write a LevelDB ring into it", dir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	db, err := leveldb.OpenFile(dir, &opt.Options{ErrorIfExist: true, Compression: opt.NoCompression})
	if err != nil {
		return fmt.Errorf("create LevelDB ring %s: %v", dir, err)
	}
	if err := r.writeFashDB(db); err != nil {
		db.Close()
		return fmt.Errorf("write LevelDB ring %s: %v", dir, err)
	}
	// Flush everything into tables, leaving an empty journal: a large
	// ring left in the journal alone sometimes failed to replay when
	// opened read-only (goleveldb returned EOF for a 100,000-vnode ring).
	if err := db.CompactRange(util.Range{}); err != nil {
		db.Close()
		return fmt.Errorf("write LevelDB ring %s: %v", dir, err)
	}
	return db.Close()
}

func (r *Ring) writeFashDB(db *leveldb.DB) error {
	quoted := make([][]byte, len(r.pnodes))
	for i, p := range r.pnodes {
		var b bytes.Buffer
		jsjson.String(&b, p)
		quoted[i] = b.Bytes()
	}
	batch := new(leveldb.Batch)
	var key []byte
	for v := uint32(0); v < r.n; v++ {
		o := r.owner.at(v)
		key = strconv.AppendUint(append(key[:0], "/VNODE/"...), uint64(v), 10)
		batch.Put(key, quoted[o])
		key = append(append(key[:0], "/PNODE/"...), r.pnodes[o]...)
		key = strconv.AppendUint(append(key, '/'), uint64(v), 10)
		batch.Put(key, r.data[r.dataIx.at(v)])
		if batch.Len() >= 20000 {
			if err := db.Write(batch, nil); err != nil {
				return err
			}
			batch.Reset()
		}
	}
	var dataVnodes []uint32
	for v, d := range r.dataIx.all() {
		if !bytes.Equal(r.data[d], dataNull) { // deserialize's `!== LVAL_NULL`
			dataVnodes = append(dataVnodes, v)
		}
	}
	for i, vs := range r.byPnode() {
		batch.Put([]byte("/PNODE/"+r.pnodes[i]), numberArray(vs))
	}
	var b bytes.Buffer
	b.WriteByte('[')
	for i := range r.pnodes {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(quoted[i])
	}
	b.WriteByte(']')
	batch.Put([]byte("/PNODE"), b.Bytes())
	batch.Put([]byte("VNODE_DATA"), numberArray(dataVnodes))
	batch.Put([]byte("VNODE_COUNT"), []byte(strconv.FormatUint(uint64(r.n), 10)))
	a := r.fashAlgorithm()
	b.Reset()
	b.WriteString(`{"NAME":`)
	jsjson.String(&b, a.NAME)
	b.WriteString(`,"MAX":`)
	jsjson.String(&b, a.MAX)
	b.WriteString(`,"VNODE_HASH_INTERVAL":`)
	jsjson.String(&b, a.VNODE_HASH_INTERVAL)
	b.WriteByte('}')
	batch.Put([]byte("ALGORITHM"), b.Bytes())
	v := r.fashVersion
	if v == "" {
		v = FashVersion
	}
	b.Reset()
	jsjson.String(&b, v)
	batch.Put([]byte("VERSION"), b.Bytes())
	if err := db.Write(batch, &opt.WriteOptions{Sync: true}); err != nil {
		return err
	}
	return db.Put([]byte("COMPLETE"), []byte("1"), &opt.WriteOptions{Sync: true})
}

func numberArray(vs []uint32) []byte {
	b := make([]byte, 0, 2+len(vs)*7)
	b = append(b, '[')
	for i, v := range vs {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(v), 10)
	}
	return append(b, ']')
}

// ReadImage reads the ring in a hash_ring.tar.gz image (RFD 103 step 8:
// `tar -czf IMAGE.tar.gz -C /var/tmp hash_ring`). It unpacks into a
// temporary directory that is removed afterwards.
func ReadImage(path string) (*Ring, error) {
	tmp, err := os.MkdirTemp("", "reshard-hash-ring-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if err := extractImage(path, tmp); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	dir := filepath.Join(tmp, "hash_ring")
	if _, err := os.Stat(filepath.Join(dir, "CURRENT")); err != nil {
		dir = tmp // also take a tarball of the directory's contents
		if _, err := os.Stat(filepath.Join(dir, "CURRENT")); err != nil {
			return nil, fmt.Errorf("%s: no LevelDB ring in the image: want hash_ring/CURRENT", path)
		}
	}
	// Our own copy, so a missing LOCK may be created.
	if f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDONLY, 0o644); err == nil {
		f.Close()
	}
	r, err := ReadLevelDB(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return r, nil
}

func extractImage(path, dst string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		return fmt.Errorf("not a gzip file: %v", err)
	}
	tr := tar.NewReader(zr)
	var total int64
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("not a tar archive: %v", err)
		}
		name := filepath.FromSlash(h.Name)
		if !filepath.IsLocal(name) {
			if filepath.Clean(name) == "." {
				continue // "./" itself
			}
			return fmt.Errorf("entry %q points outside the image", h.Name)
		}
		target := filepath.Join(dst, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			total += h.Size
			if total > maxImageBytes {
				return fmt.Errorf("unpacks to more than %d bytes: not a ring image", int64(maxImageBytes))
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, io.LimitReader(tr, h.Size))
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("entry %q: %v", h.Name, err)
			}
		case tar.TypeXGlobalHeader:
		default:
			return fmt.Errorf("entry %q is a link or device; a ring image holds only files", h.Name)
		}
	}
}
