package etcd

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/reshard/reshard/ring"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Ring keys. Each version's metadata is immutable under versions/; its
// content (a gzipped ring file) lives in chunks under blobs/ID/; current
// names the version routers use. Writers compare-and-swap current.
const (
	ringPrefix     = Prefix + "ring/"
	ringCurrentKey = ringPrefix + "current"
	ringVersionDir = ringPrefix + "versions/"
	ringBlobDir    = ringPrefix + "blobs/"
)

// DefaultRingChunkSize keeps each write well under etcd's default 1.5 MiB
// request limit (--max-request-bytes). Sizes measured with TestRingChunkedAndLarge
// and a one-off run: a round-robin 1M-vnode ring gzips to a few hundred
// bytes (one chunk, one transaction); 100k vnodes each on a random one of 50
// pnodes, the worst case for range encoding, is 262 KB (one chunk); 1M such
// vnodes over 100 pnodes is a 6.9 MB ring file, 2.8 MB gzipped, 3 chunks,
// written in ~0.3 s and read in ~0.25 s. Chunks of a version that never
// committed are deleted by the writer; only a writer that crashes between
// staging and commit leaves an unreferenced blob behind.
const DefaultRingChunkSize = 1 << 20

var (
	// ErrVersionConflict means another writer changed the ring first.
	ErrVersionConflict = errors.New("ring version conflict")
	// ErrNoRing means no ring has been stored yet.
	ErrNoRing = errors.New("no ring in etcd; create one with 'reshard ring create' or 'reshard ring import-fash'")
)

// RingVersion describes one stored version of the ring.
type RingVersion struct {
	Version   int64     `json:"version"`
	Parent    int64     `json:"parent"` // the version this one replaced; 0 for the first
	Time      time.Time `json:"time"`
	Comment   string    `json:"comment"`
	Algorithm string    `json:"algorithm"`
	Vnodes    int       `json:"vnodes"`
	Pnodes    int       `json:"pnodes"`
	Blob      string    `json:"blob"`   // blobs/ID holding the content; shared by rollbacks
	Chunks    int       `json:"chunks"` // number of chunks under the blob
	Size      int       `json:"size"`   // gzipped bytes
	SHA256    string    `json:"sha256"` // of the gzipped bytes, checked on read
}

// RingStore keeps the versioned ring in etcd.
type RingStore struct {
	cli *clientv3.Client
	// ChunkSize is the largest value written per key; a ring whose gzipped
	// file is bigger is staged in several chunks before the version commits.
	ChunkSize int
}

// NewRingStore returns a ring store backed by cli.
func NewRingStore(cli *clientv3.Client) *RingStore {
	return &RingStore{cli: cli, ChunkSize: DefaultRingChunkSize}
}

func versionKey(v int64) string { return fmt.Sprintf("%s%020d", ringVersionDir, v) }
func chunkKey(blob string, i int) string {
	return fmt.Sprintf("%s%s/%06d", ringBlobDir, blob, i)
}

// CurrentVersion returns the version number in use, or 0 if there is no ring.
func (s *RingStore) CurrentVersion(ctx context.Context) (int64, error) {
	resp, err := s.cli.Get(ctx, ringCurrentKey)
	if err != nil {
		return 0, fmt.Errorf("read current ring version: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	return parseVersion(resp.Kvs[0].Value)
}

func parseVersion(b []byte) (int64, error) {
	v, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("corrupt ring version %q in %s", b, ringCurrentKey)
	}
	return v, nil
}

// Current returns the ring in use and its version.
func (s *RingStore) Current(ctx context.Context) (*ring.Ring, RingVersion, error) {
	v, err := s.CurrentVersion(ctx)
	if err != nil {
		return nil, RingVersion{}, err
	}
	if v == 0 {
		return nil, RingVersion{}, ErrNoRing
	}
	return s.Get(ctx, v)
}

// Version returns the metadata of one stored version.
func (s *RingStore) Version(ctx context.Context, v int64) (RingVersion, error) {
	resp, err := s.cli.Get(ctx, versionKey(v))
	if err != nil {
		return RingVersion{}, fmt.Errorf("read ring version %d: %w", v, err)
	}
	if len(resp.Kvs) == 0 {
		return RingVersion{}, fmt.Errorf("ring version %d does not exist", v)
	}
	var rv RingVersion
	if err := json.Unmarshal(resp.Kvs[0].Value, &rv); err != nil {
		return RingVersion{}, fmt.Errorf("ring version %d: corrupt record: %v", v, err)
	}
	return rv, nil
}

// Get returns a stored version of the ring.
func (s *RingStore) Get(ctx context.Context, v int64) (*ring.Ring, RingVersion, error) {
	rv, err := s.Version(ctx, v)
	if err != nil {
		return nil, rv, err
	}
	resp, err := s.cli.Get(ctx, ringBlobDir+rv.Blob+"/", clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, rv, fmt.Errorf("read ring version %d: %w", v, err)
	}
	if len(resp.Kvs) != rv.Chunks {
		return nil, rv, fmt.Errorf("ring version %d: %d of %d chunks present", v, len(resp.Kvs), rv.Chunks)
	}
	var gz bytes.Buffer
	for _, kv := range resp.Kvs {
		gz.Write(kv.Value)
	}
	sum := sha256.Sum256(gz.Bytes())
	if hex.EncodeToString(sum[:]) != rv.SHA256 {
		return nil, rv, fmt.Errorf("ring version %d: content does not match its checksum", v)
	}
	zr, err := gzip.NewReader(&gz)
	if err != nil {
		return nil, rv, fmt.Errorf("ring version %d: %v", v, err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return nil, rv, fmt.Errorf("ring version %d: %v", v, err)
	}
	r, err := ring.ParseFile(raw)
	if err != nil {
		return nil, rv, fmt.Errorf("ring version %d: %v", v, err)
	}
	return r, rv, nil
}

// Put stores r as the next version if the current version is still
// expected (0: no ring yet). Otherwise it changes nothing and returns an
// error wrapping ErrVersionConflict.
func (s *RingStore) Put(ctx context.Context, expected int64, r *ring.Ring, comment string) (RingVersion, error) {
	raw, err := r.MarshalFile()
	if err != nil {
		return RingVersion{}, err
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zw.Write(raw)
	if err := zw.Close(); err != nil {
		return RingVersion{}, err
	}
	sum := sha256.Sum256(gz.Bytes())
	rv := RingVersion{
		Version: expected + 1, Parent: expected, Time: time.Now().UTC(), Comment: comment,
		Algorithm: r.Algorithm().String(), Vnodes: r.Vnodes(), Pnodes: len(r.Pnodes()),
		Blob: newBlobID(), Size: gz.Len(), SHA256: hex.EncodeToString(sum[:]),
	}
	chunk := s.ChunkSize
	if chunk <= 0 {
		chunk = DefaultRingChunkSize
	}
	var chunks []clientv3.Op
	for b := gz.Bytes(); len(b) > 0; {
		n := min(chunk, len(b))
		chunks = append(chunks, clientv3.OpPut(chunkKey(rv.Blob, len(chunks)), string(b[:n])))
		b = b[n:]
	}
	rv.Chunks = len(chunks)
	if len(chunks) == 1 {
		// The usual case: content and version commit in one transaction.
		return rv, s.commit(ctx, expected, rv, chunks)
	}
	// Too big for one request: stage the chunks under a blob ID nobody else
	// uses; they become visible only when the version record commits.
	for _, op := range chunks {
		if _, err := s.cli.Do(ctx, op); err != nil {
			s.dropBlob(rv.Blob)
			return RingVersion{}, fmt.Errorf("write ring version %d: %w", rv.Version, err)
		}
	}
	if err := s.commit(ctx, expected, rv, nil); err != nil {
		s.dropBlob(rv.Blob)
		return RingVersion{}, err
	}
	return rv, nil
}

// commit writes the version record and moves current to it, atomically and
// only if current is still at rv.Parent.
func (s *RingStore) commit(ctx context.Context, expected int64, rv RingVersion, extra []clientv3.Op) error {
	meta, err := json.Marshal(rv)
	if err != nil {
		return err
	}
	cond := clientv3.Compare(clientv3.Value(ringCurrentKey), "=", strconv.FormatInt(expected, 10))
	if expected == 0 {
		cond = clientv3.Compare(clientv3.CreateRevision(ringCurrentKey), "=", 0)
	}
	ops := append([]clientv3.Op{
		clientv3.OpPut(ringCurrentKey, strconv.FormatInt(rv.Version, 10)),
		clientv3.OpPut(versionKey(rv.Version), string(meta)),
	}, extra...)
	ok, res, err := txn(ctx, s.cli, []clientv3.Cmp{cond, clientv3.Compare(clientv3.CreateRevision(versionKey(rv.Version)), "=", 0)},
		ops, []clientv3.Op{clientv3.OpGet(ringCurrentKey)})
	if err != nil {
		return fmt.Errorf("write ring version %d: %w", rv.Version, err)
	}
	if !ok {
		now := "none"
		if kvs := res[0].GetResponseRange().Kvs; len(kvs) > 0 {
			now = string(kvs[0].Value)
		}
		return fmt.Errorf("%w: expected version %d but the ring is now at version %s; re-read it and retry", ErrVersionConflict, expected, now)
	}
	return nil
}

// dropBlob removes chunks a failed write staged; it runs on its own
// context because the caller's may be what failed.
func (s *RingStore) dropBlob(blob string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.cli.Delete(ctx, ringBlobDir+blob+"/", clientv3.WithPrefix())
}

func newBlobID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Update applies change to a copy of the current ring and stores the result
// as a new version. If expected is not 0 the current version must be it
// (the version the operator looked at); either way a concurrent writer makes
// this fail with ErrVersionConflict instead of overwriting its change.
func (s *RingStore) Update(ctx context.Context, expected int64, comment string, change func(*ring.Ring) error) (RingVersion, error) {
	r, rv, err := s.Current(ctx)
	if err != nil {
		return RingVersion{}, err
	}
	if expected != 0 && rv.Version != expected {
		return RingVersion{}, fmt.Errorf("%w: expected version %d but the ring is at version %d", ErrVersionConflict, expected, rv.Version)
	}
	return s.UpdateFrom(ctx, r, rv, comment, change)
}

// UpdateFrom is Update for a caller that has just read the current ring:
// it changes a copy of r and stores it only if rv is still current, which
// spares reading and decoding a large ring twice.
func (s *RingStore) UpdateFrom(ctx context.Context, r *ring.Ring, rv RingVersion, comment string, change func(*ring.Ring) error) (RingVersion, error) {
	r = r.Clone()
	if err := change(r); err != nil {
		return RingVersion{}, err
	}
	return s.Put(ctx, rv.Version, r, comment)
}

// History lists every stored version, oldest first.
func (s *RingStore) History(ctx context.Context) ([]RingVersion, error) {
	resp, err := s.cli.Get(ctx, ringVersionDir, clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("list ring versions: %w", err)
	}
	out := make([]RingVersion, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var rv RingVersion
		if err := json.Unmarshal(kv.Value, &rv); err != nil {
			return nil, fmt.Errorf("ring version key %s: corrupt record: %v", kv.Key, err)
		}
		out = append(out, rv)
	}
	return out, nil
}

// Rollback makes the content of version to the new current version. The
// content is shared, not copied. expected works as in Update.
func (s *RingStore) Rollback(ctx context.Context, to, expected int64) (RingVersion, error) {
	cur, err := s.CurrentVersion(ctx)
	if err != nil {
		return RingVersion{}, err
	}
	if cur == 0 {
		return RingVersion{}, ErrNoRing
	}
	if expected != 0 && cur != expected {
		return RingVersion{}, fmt.Errorf("%w: expected version %d but the ring is at version %d", ErrVersionConflict, expected, cur)
	}
	if to == cur {
		return RingVersion{}, fmt.Errorf("version %d is already the current ring", to)
	}
	_, old, err := s.Get(ctx, to) // reads it whole, so a damaged version is refused
	if err != nil {
		return RingVersion{}, err
	}
	rv := old
	rv.Version, rv.Parent, rv.Time = cur+1, cur, time.Now().UTC()
	rv.Comment = fmt.Sprintf("rollback to version %d", to)
	return rv, s.commit(ctx, cur, rv, nil)
}

// RingUpdate is one ring version delivered by Watch.
type RingUpdate struct {
	Ring    *ring.Ring
	Version RingVersion
	Err     error // set when a version could not be read; the watch goes on
	// Load is how long reading and decoding this version took, from the
	// watch event to the ring in memory.
	Load time.Duration
}

// Watch delivers the current ring (if any) and then every new version as it
// is committed, until ctx ends.
func (s *RingStore) Watch(ctx context.Context) <-chan RingUpdate {
	out := make(chan RingUpdate, 16)
	go func() {
		defer close(out)
		send := func(u RingUpdate) bool {
			select {
			case out <- u:
				return true
			case <-ctx.Done():
				return false
			}
		}
		resp, err := s.cli.Get(ctx, ringCurrentKey)
		if err != nil {
			send(RingUpdate{Err: fmt.Errorf("watch ring: %w", err)})
			return
		}
		if len(resp.Kvs) > 0 {
			if !send(s.load(ctx, resp.Kvs[0].Value)) {
				return
			}
		}
		wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), ringCurrentKey, clientv3.WithRev(resp.Header.Revision+1))
		for wr := range wch {
			if err := wr.Err(); err != nil {
				send(RingUpdate{Err: fmt.Errorf("watch ring: %w", err)})
				return
			}
			for _, ev := range wr.Events {
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				if !send(s.load(ctx, ev.Kv.Value)) {
					return
				}
			}
		}
	}()
	return out
}

func (s *RingStore) load(ctx context.Context, value []byte) RingUpdate {
	start := time.Now()
	v, err := parseVersion(value)
	if err != nil {
		return RingUpdate{Err: err}
	}
	r, rv, err := s.Get(ctx, v)
	return RingUpdate{Ring: r, Version: rv, Err: err, Load: time.Since(start)}
}

// InUse reports whether the current ring maps any vnode to pnode; it fits
// Registry.InUse so a pnode still serving vnodes cannot be unregistered.
func (s *RingStore) InUse(ctx context.Context, pnode string) (bool, error) {
	r, _, err := s.Current(ctx)
	if errors.Is(err, ErrNoRing) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return r.PnodeVnodeCount(pnode) > 0, nil
}

// RingInUse returns a Registry.InUse backed by the ring stored through cli.
func RingInUse(cli *clientv3.Client) func(ctx context.Context, pnode string) (bool, error) {
	return NewRingStore(cli).InUse
}
