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
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/reshard/reshard/ring"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Ring keys. Each version's metadata is immutable under versions/. A full
// version's content (a gzipped ring file) lives in chunks under blobs/ID/;
// a delta version's content is the vnode ranges it changes from its base,
// held in its metadata, and checkpoints/V names a blob holding delta
// version V whole. current names the version routers use. Writers
// compare-and-swap current.
const (
	ringPrefix        = Prefix + "ring/"
	ringCurrentKey    = ringPrefix + "current"
	ringVersionDir    = ringPrefix + "versions/"
	ringBlobDir       = ringPrefix + "blobs/"
	ringCheckpointDir = ringPrefix + "checkpoints/"
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

// DefaultFullEvery is how many ring versions in a row may be deltas: the
// writer of the last one also stores it whole (a checkpoint), after it
// commits, so a router starting cold reads one whole ring and applies at
// most DefaultFullEvery-1 deltas, and no flip waits for a whole ring.
const DefaultFullEvery = 16

// DefaultMaxDelta is the largest delta stored as one; a change bigger than
// this (vnodes scattered one by one over a large ring) is stored whole.
const DefaultMaxDelta = 256 << 10

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
	RingBlob            // a full version's content; shared by rollbacks
	Size      int       `json:"size"` // gzipped bytes of a full version, JSON bytes of a delta

	// A delta version's ring is version Base's ring with Delta applied;
	// Depth counts the deltas since a version kept whole. Both are zero for
	// a full version.
	Base  int64       `json:"base,omitempty"`
	Depth int         `json:"depth,omitempty"`
	Delta *ring.Delta `json:"delta,omitempty"`
	// Checkpoint holds a delta version whole, once its writer stored it.
	// It is read from its own key, written after the version's record; a
	// rollback's record carries its target's.
	Checkpoint *RingBlob `json:"checkpoint,omitempty"`
}

// RingBlob is where a whole ring is kept: its gzipped ring file, in chunks.
type RingBlob struct {
	Blob   string `json:"blob,omitempty"`   // blobs/ID
	Chunks int    `json:"chunks,omitempty"` // number of chunks under the blob
	SHA256 string `json:"sha256,omitempty"` // of the gzipped bytes, checked on read
}

// Stored says how a version is kept: "full", "delta of N", or "delta of N,
// checkpoint" when it is also kept whole.
func (rv RingVersion) Stored() string {
	switch {
	case rv.Delta == nil:
		return "full"
	case rv.Checkpoint != nil:
		return fmt.Sprintf("delta of %d, checkpoint", rv.Base)
	}
	return fmt.Sprintf("delta of %d", rv.Base)
}

// whole is the blob that holds this version whole, if any.
func (rv RingVersion) whole() *RingBlob {
	if rv.Delta == nil {
		return &rv.RingBlob
	}
	return rv.Checkpoint
}

// RingStore keeps the versioned ring in etcd. It remembers the last few
// rings it read or wrote, so reading the next version, a delta of one of
// them, costs what the delta changes.
type RingStore struct {
	cli *clientv3.Client
	// ChunkSize is the largest value written per key; a ring whose gzipped
	// file is bigger is staged in several chunks before the version commits.
	ChunkSize int
	// FullEvery and MaxDelta decide when a change is stored whole rather
	// than as a delta (DefaultFullEvery, DefaultMaxDelta).
	FullEvery, MaxDelta int

	mu    sync.Mutex
	rings map[int64]*memo // by version
}

// memo is a ring version in memory, built the first time it is needed: a
// writer that stores a delta does not apply it unless it reads it back.
type memo struct {
	once  sync.Once
	build func() (*ring.Ring, error)
	ring  *ring.Ring // shared, never written
	err   error
}

func (m *memo) get() (*ring.Ring, error) {
	m.once.Do(func() { m.ring, m.err = m.build(); m.build = nil })
	return m.ring, m.err
}

// ringsKept bounds the store's memory of rings; pages the versions share
// are held once.
const ringsKept = 4

// NewRingStore returns a ring store backed by cli.
func NewRingStore(cli *clientv3.Client) *RingStore {
	return &RingStore{cli: cli, ChunkSize: DefaultRingChunkSize, FullEvery: DefaultFullEvery, MaxDelta: DefaultMaxDelta}
}

// remembered returns version v's ring if the store holds it.
func (s *RingStore) remembered(v int64) *ring.Ring {
	s.mu.Lock()
	m := s.rings[v]
	s.mu.Unlock()
	if m == nil {
		return nil
	}
	r, err := m.get()
	if err != nil {
		return nil // read it from etcd instead
	}
	return r
}

func (s *RingStore) remember(v int64, r *ring.Ring) {
	s.rememberBuild(v, func() (*ring.Ring, error) { return r, nil })
}

func (s *RingStore) rememberBuild(v int64, build func() (*ring.Ring, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rings == nil {
		s.rings = map[int64]*memo{}
	}
	s.rings[v] = &memo{build: build}
	for len(s.rings) > ringsKept {
		delete(s.rings, slices.Min(slices.Collect(maps.Keys(s.rings))))
	}
}

func versionKey(v int64) string    { return fmt.Sprintf("%s%020d", ringVersionDir, v) }
func checkpointKey(v int64) string { return fmt.Sprintf("%s%020d", ringCheckpointDir, v) }
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

// Current returns the ring in use and its version. The ring is shared:
// Clone it to change it.
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

// Version returns the metadata of one stored version, with its checkpoint
// if it has one (read in the same request).
func (s *RingStore) Version(ctx context.Context, v int64) (RingVersion, error) {
	resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(versionKey(v)), clientv3.OpGet(checkpointKey(v))).Commit()
	if err != nil {
		return RingVersion{}, fmt.Errorf("read ring version %d: %w", v, err)
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return RingVersion{}, fmt.Errorf("ring version %d does not exist", v)
	}
	var rv RingVersion
	if err := json.Unmarshal(kvs[0].Value, &rv); err != nil {
		return RingVersion{}, fmt.Errorf("ring version %d: corrupt record: %v", v, err)
	}
	if cp := resp.Responses[1].GetResponseRange().Kvs; len(cp) > 0 {
		rv.Checkpoint = new(RingBlob)
		if err := json.Unmarshal(cp[0].Value, rv.Checkpoint); err != nil {
			return RingVersion{}, fmt.Errorf("ring version %d: corrupt checkpoint: %v", v, err)
		}
	}
	return rv, nil
}

// Get returns a stored version of the ring. The ring is shared: Clone it to
// change it.
func (s *RingStore) Get(ctx context.Context, v int64) (*ring.Ring, RingVersion, error) {
	rv, err := s.Version(ctx, v)
	if err != nil {
		return nil, rv, err
	}
	r, err := s.content(ctx, rv)
	return r, rv, err
}

// content builds a version's ring: from memory, from its blob, or by
// applying its chain of deltas to the nearest ring in memory or to the
// full version the chain starts from.
func (s *RingStore) content(ctx context.Context, rv RingVersion) (*ring.Ring, error) {
	if r := s.remembered(rv.Version); r != nil {
		return r, nil
	}
	chain := []RingVersion{}
	var base *ring.Ring
	for cur := rv; ; {
		if b := cur.whole(); b != nil {
			r, err := s.readBlob(ctx, cur.Version, *b)
			if err != nil {
				return nil, err
			}
			base = r
			break
		}
		chain = append(chain, cur)
		if len(chain) > 1<<16 {
			return nil, fmt.Errorf("ring version %d: its chain of deltas does not end", rv.Version)
		}
		if r := s.remembered(cur.Base); r != nil {
			base = r
			break
		}
		next, err := s.Version(ctx, cur.Base)
		if err != nil {
			return nil, fmt.Errorf("ring version %d: %w", cur.Version, err)
		}
		cur = next
	}
	for i := len(chain) - 1; i >= 0; i-- {
		next, err := base.Apply(chain[i].Delta)
		if err != nil {
			return nil, fmt.Errorf("ring version %d: %v", chain[i].Version, err)
		}
		base = next
	}
	s.remember(rv.Version, base)
	return base, nil
}

// readBlob reads and checks version v's content, kept whole in b.
func (s *RingStore) readBlob(ctx context.Context, v int64, b RingBlob) (*ring.Ring, error) {
	resp, err := s.cli.Get(ctx, ringBlobDir+b.Blob+"/", clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("read ring version %d: %w", v, err)
	}
	if len(resp.Kvs) != b.Chunks {
		return nil, fmt.Errorf("ring version %d: %d of %d chunks present", v, len(resp.Kvs), b.Chunks)
	}
	var gz bytes.Buffer
	for _, kv := range resp.Kvs {
		gz.Write(kv.Value)
	}
	sum := sha256.Sum256(gz.Bytes())
	if hex.EncodeToString(sum[:]) != b.SHA256 {
		return nil, fmt.Errorf("ring version %d: content does not match its checksum", v)
	}
	zr, err := gzip.NewReader(&gz)
	if err != nil {
		return nil, fmt.Errorf("ring version %d: %v", v, err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("ring version %d: %v", v, err)
	}
	r, err := ring.ParseFile(raw)
	if err != nil {
		return nil, fmt.Errorf("ring version %d: %v", v, err)
	}
	s.remember(v, r)
	return r, nil
}

// Put stores r as the next version, whole, if the current version is still
// expected (0: no ring yet). Otherwise it changes nothing and returns an
// error wrapping ErrVersionConflict.
func (s *RingStore) Put(ctx context.Context, expected int64, r *ring.Ring, comment string) (RingVersion, error) {
	blob, size, ops, err := s.stageBlob(ctx, r)
	if err != nil {
		return RingVersion{}, fmt.Errorf("write ring version %d: %w", expected+1, err)
	}
	rv := RingVersion{
		Version: expected + 1, Parent: expected, Time: time.Now().UTC(), Comment: comment,
		Algorithm: r.Algorithm().String(), Vnodes: r.Vnodes(), Pnodes: len(r.Pnodes()),
		RingBlob: blob, Size: size,
	}
	if err := s.commit(ctx, expected, rv, ops); err != nil {
		s.dropBlob(blob.Blob)
		return RingVersion{}, err
	}
	s.remember(rv.Version, r.Clone())
	return rv, nil
}

// stageBlob encodes r whole under a new blob ID. A ring small enough for
// one request comes back as the operation that writes it, to commit with
// what refers to it; a bigger one is written in chunks now, visible only
// once something that refers to it commits, and dropped by the caller if
// nothing does.
func (s *RingStore) stageBlob(ctx context.Context, r *ring.Ring) (RingBlob, int, []clientv3.Op, error) {
	raw, err := r.MarshalFile()
	if err != nil {
		return RingBlob{}, 0, nil, err
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zw.Write(raw)
	if err := zw.Close(); err != nil {
		return RingBlob{}, 0, nil, err
	}
	sum := sha256.Sum256(gz.Bytes())
	b := RingBlob{Blob: newBlobID(), SHA256: hex.EncodeToString(sum[:])}
	chunk := s.ChunkSize
	if chunk <= 0 {
		chunk = DefaultRingChunkSize
	}
	var chunks []clientv3.Op
	for rest := gz.Bytes(); len(rest) > 0; {
		n := min(chunk, len(rest))
		chunks = append(chunks, clientv3.OpPut(chunkKey(b.Blob, len(chunks)), string(rest[:n])))
		rest = rest[n:]
	}
	b.Chunks = len(chunks)
	if len(chunks) == 1 {
		return b, gz.Len(), chunks, nil // the usual case: one transaction
	}
	for _, op := range chunks {
		if _, err := s.cli.Do(ctx, op); err != nil {
			s.dropBlob(b.Blob)
			return RingBlob{}, 0, nil, err
		}
	}
	return b, gz.Len(), nil, nil
}

// checkpoint stores delta version v's ring r whole, once: the next delta
// starts a new chain from it. Its content never changes, so any writer
// may store it, fenced or not, and a lost race only drops the loser's
// blob. It returns the blob that holds v whole, nil if another writer's
// did.
func (s *RingStore) checkpoint(ctx context.Context, v int64, r *ring.Ring) (*RingBlob, error) {
	blob, _, ops, err := s.stageBlob(ctx, r)
	if err != nil {
		return nil, err
	}
	meta, _ := json.Marshal(blob)
	resp, err := s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(checkpointKey(v)), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(versionKey(v)), ">", 0),
	).Then(append(ops, clientv3.OpPut(checkpointKey(v), string(meta)))...).Commit()
	if err != nil || !resp.Succeeded {
		s.dropBlob(blob.Blob)
		return nil, err
	}
	return &blob, nil
}

// PutDelta stores base with d applied as the next version, if base is
// still version rv and current; otherwise it changes nothing and returns an
// error wrapping ErrVersionConflict. It costs what d changes, not what the
// ring holds: a split's flip of a 1,000,000-vnode ring writes a few bytes.
func (s *RingStore) PutDelta(ctx context.Context, base *ring.Ring, rv RingVersion, d *ring.Delta, comment string) (RingVersion, error) {
	if err := base.CheckDelta(d); err != nil {
		return RingVersion{}, err
	}
	// Applied only when needed: to store it whole, or to read it back.
	return s.putChange(ctx, &memo{build: func() (*ring.Ring, error) { return base.Apply(d) }}, rv, d, comment)
}

// putChange stores next, which is version rv's ring changed by d, as a
// delta of rv, or whole when d is large; every FullEvery-th delta in a row
// is also stored whole after it commits.
func (s *RingStore) putChange(ctx context.Context, next *memo, rv RingVersion, d *ring.Delta, comment string) (RingVersion, error) {
	raw, err := json.Marshal(d)
	if err != nil {
		return RingVersion{}, err
	}
	fullEvery, maxDelta := s.FullEvery, s.MaxDelta
	if fullEvery <= 0 {
		fullEvery = DefaultFullEvery
	}
	if maxDelta <= 0 {
		maxDelta = DefaultMaxDelta
	}
	if len(raw) > maxDelta {
		r, err := next.get()
		if err != nil {
			return RingVersion{}, err
		}
		return s.Put(ctx, rv.Version, r, comment)
	}
	depth := rv.Depth + 1
	if rv.whole() != nil {
		depth = 1
	}
	nv := RingVersion{
		Version: rv.Version + 1, Parent: rv.Version, Time: time.Now().UTC(), Comment: comment,
		Algorithm: rv.Algorithm, Vnodes: rv.Vnodes, Pnodes: len(d.Pnodes),
		Size: len(raw), Base: rv.Version, Depth: depth, Delta: d,
	}
	if err := s.commit(ctx, rv.Version, nv, nil); err != nil {
		return RingVersion{}, err
	}
	s.rememberBuild(nv.Version, next.get)
	if depth >= fullEvery {
		// After the commit: routers already load the delta while this
		// stores the ring whole. If it fails, the next writer's chain is
		// one longer and it tries again.
		if r, err := next.get(); err == nil {
			nv.Checkpoint, _ = s.checkpoint(ctx, nv.Version, r)
		}
	}
	return nv, nil
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
	next := r.Clone()
	if err := change(next); err != nil {
		return RingVersion{}, err
	}
	d, err := ring.Changes(r, next)
	if err != nil {
		return s.Put(ctx, rv.Version, next, comment)
	}
	return s.putChange(ctx, &memo{build: func() (*ring.Ring, error) { return next, nil }}, rv, d, comment)
}

// History lists every stored version, oldest first.
func (s *RingStore) History(ctx context.Context) ([]RingVersion, error) {
	return s.history(ctx, 0)
}

// Recent lists the newest n versions, oldest first: a dashboard's history,
// read without every version a long-lived ring has had.
func (s *RingStore) Recent(ctx context.Context, n int) ([]RingVersion, error) {
	return s.history(ctx, max(n, 1))
}

// history lists the newest n versions (every one when n is 0), oldest
// first, each with its checkpoint if it has one.
func (s *RingStore) history(ctx context.Context, n int) ([]RingVersion, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend)}
	if n > 0 {
		opts = append(opts, clientv3.WithLimit(int64(n)))
	}
	resp, err := s.cli.Get(ctx, ringVersionDir, opts...)
	if err != nil {
		return nil, fmt.Errorf("list ring versions: %w", err)
	}
	out := make([]RingVersion, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		rv := &out[len(out)-1-i]
		if err := json.Unmarshal(kv.Value, rv); err != nil {
			return nil, fmt.Errorf("ring version key %s: corrupt record: %v", kv.Key, err)
		}
	}
	if len(out) == 0 {
		return out, nil
	}
	// The checkpoints of the versions listed: keys sort as the versions do.
	cps, err := s.cli.Get(ctx, checkpointKey(out[0].Version), clientv3.WithRange(checkpointKey(out[len(out)-1].Version+1)))
	if err != nil {
		return nil, fmt.Errorf("list ring checkpoints: %w", err)
	}
	checkpoints := map[string][]byte{}
	for _, kv := range cps.Kvs {
		checkpoints[string(kv.Key)] = kv.Value
	}
	for i := range out {
		if cp, ok := checkpoints[checkpointKey(out[i].Version)]; ok {
			out[i].Checkpoint = new(RingBlob)
			if err := json.Unmarshal(cp, out[i].Checkpoint); err != nil {
				return nil, fmt.Errorf("ring version %d: corrupt checkpoint: %v", out[i].Version, err)
			}
		}
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
	r, old, err := s.Get(ctx, to) // reads it whole, so a damaged version is refused
	if err != nil {
		return RingVersion{}, err
	}
	rv := old // a full version shares its blob; a delta, its base and delta
	rv.Version, rv.Parent, rv.Time = cur+1, cur, time.Now().UTC()
	rv.Comment = fmt.Sprintf("rollback to version %d", to)
	if err := s.commit(ctx, cur, rv, nil); err != nil {
		return RingVersion{}, err
	}
	s.remember(rv.Version, r)
	return rv, nil
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
