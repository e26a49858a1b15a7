package router

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/reshard/reshard"
	"github.com/reshard/reshard/shard"
	"github.com/reshard/reshard/trigger"
	"golang.org/x/sync/errgroup"
)

// Handler serves the HTTP/JSON API:
//
//	PUT    /buckets/{bucket}                 create a bucket on every shard (optional body: httpBucket)
//	PUT    /buckets/{bucket}/objects/{key}   write an object (JSON body; If-Match for a conditional write)
//	GET    /buckets/{bucket}/objects/{key}   read an object
//	DELETE /buckets/{bucket}/objects/{key}   delete an object (If-Match optional)
//	GET    /buckets/{bucket}/objects?prefix=P&limit=N   list objects in key order
//	GET    /healthz, /metrics
//
// Keys are the rest of the path, percent-decoded, so "/u/stor/a" is
// /buckets/manta/objects//u/stor/a or /buckets/manta/objects/%2Fu%2Fstor%2Fa.
// A client's mistake is a 4xx whose JSON body names it ({"code", "error"});
// PostgreSQL's own error text never reaches the client.
// Responses carry X-Reshard-Vnode, X-Reshard-Pnode, X-Reshard-Ring-Version.
// The mux is hand-written because http.ServeMux cleans paths, which would
// rewrite keys that contain "//".
func (r *Router) Handler() http.Handler {
	metricsH := promhttp.HandlerFor(r.metrics.reg, promhttp.HandlerOpts{})
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch req.URL.Path {
		case "/metrics":
			metricsH.ServeHTTP(w, req)
			return
		case "/healthz":
			writeJSON(w, http.StatusOK, map[string]any{"name": r.cfg.Name, "ring_version": r.RingVersion()})
			return
		}
		start := time.Now()
		rw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		op := r.serve(rw, req)
		code := strconv.Itoa(rw.code)
		r.metrics.requests.WithLabelValues(op, code).Inc()
		r.metrics.latency.WithLabelValues(op, code).Observe(time.Since(start).Seconds())
		if rw.code >= 500 {
			r.cfg.Log.Warn("request failed", "op", op, "code", rw.code, "path", req.URL.EscapedPath(), "err", rw.errMsg)
		} else if took := time.Since(start); took >= slowRequest {
			r.cfg.Log.Info("slow request", "op", op, "code", rw.code, "path", req.URL.EscapedPath(), "ms", took.Milliseconds(),
				"attempts", strings.Join(rw.trail, "; "))
		}
	})
}

// slowRequest is how long a request takes before the router logs it,
// with why each of its attempts failed (a move's cutover, a primary
// that went away).
const slowRequest = 500 * time.Millisecond

type statusWriter struct {
	http.ResponseWriter
	code   int
	errMsg string
	trail  []string // Served.Trail
}

func (s *statusWriter) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

// serve handles one API request and returns the operation's name for metrics.
func (r *Router) serve(w *statusWriter, req *http.Request) string {
	if r.cfg.Token != "" {
		got, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(r.cfg.Token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="reshard"`)
			apiError(w, http.StatusUnauthorized, "Unauthorized", "missing or wrong bearer token")
			return "auth"
		}
	}
	t, err := ParsePath(req.URL.EscapedPath(), r.cfg.MaxKey)
	if err != nil {
		var pe *pathError
		errors.As(err, &pe)
		apiError(w, pe.status, pe.code, pe.msg)
		return "unknown"
	}
	// Every request is bounded, so a router that cannot reach etcd or a
	// shard answers 503 rather than holding the client.
	ctx, cancel := context.WithTimeout(req.Context(), r.cfg.RetryFor+5*time.Second)
	defer cancel()
	switch {
	case t.Kind == "bucket" && req.Method == http.MethodPut:
		r.createBucket(ctx, w, req, t.Bucket)
		return "create_bucket"
	case t.Kind == "list" && req.Method == http.MethodGet:
		r.list(ctx, w, req, t.Bucket)
		return "list"
	case t.Kind == "object":
		switch req.Method {
		case http.MethodPut:
			r.put(ctx, w, req, t.Bucket, t.Key)
			return "put"
		case http.MethodGet:
			r.get(ctx, w, t.Bucket, t.Key)
			return "get"
		case http.MethodDelete:
			r.delete(ctx, w, req, t.Bucket, t.Key)
			return "delete"
		}
	}
	apiError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", req.Method+" is not allowed here")
	return "unknown"
}

// Target is what a request path names.
type Target struct {
	Kind   string // bucket, list or object
	Bucket string
	Key    string
}

type pathError struct {
	status    int
	code, msg string
}

func (e *pathError) Error() string { return e.msg }

// ParsePath reads an escaped request path: /buckets/B, /buckets/B/objects
// or /buckets/B/objects/KEY, where KEY is the percent-decoded rest.
func ParsePath(escaped string, maxKey int) (Target, error) {
	rest, ok := strings.CutPrefix(escaped, "/buckets/")
	if !ok {
		return Target{}, &pathError{http.StatusNotFound, "NotFound", "no such endpoint"}
	}
	bucket, rest, _ := strings.Cut(rest, "/")
	if err := shard.ValidateBucket(bucket); err != nil {
		return Target{}, &pathError{http.StatusBadRequest, "InvalidBucket", err.Error()}
	}
	switch {
	case rest == "":
		return Target{Kind: "bucket", Bucket: bucket}, nil
	case rest == "objects":
		return Target{Kind: "list", Bucket: bucket}, nil
	case strings.HasPrefix(rest, "objects/"):
		key, err := url.PathUnescape(rest[len("objects/"):])
		// PostgreSQL stores text as UTF-8 and refuses NUL and invalid
		// bytes: such a key is the client's error, said before any query.
		if err != nil || key == "" || len(key) > maxKey || strings.IndexByte(key, 0) >= 0 || !utf8.ValidString(key) {
			return Target{}, &pathError{http.StatusBadRequest, "InvalidKey",
				fmt.Sprintf("key must be 1 to %d bytes of percent-encoded UTF-8 text without NUL", maxKey)}
		}
		return Target{Kind: "object", Bucket: bucket, Key: key}, nil
	}
	return Target{}, &pathError{http.StatusNotFound, "NotFound", "no such endpoint"}
}

func (r *Router) readBody(w *statusWriter, req *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, r.cfg.MaxBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		apiError(w, http.StatusRequestEntityTooLarge, "TooLarge", fmt.Sprintf("body is over %d bytes", r.cfg.MaxBody))
		return nil, false
	}
	if err != nil {
		apiError(w, http.StatusBadRequest, "BadBody", "could not read the body")
		return nil, false
	}
	return body, true
}

// httpBucket is the bucket definition the HTTP API takes: how keys hash,
// Moray's indexes, and the triggers and options of Moray's config. The
// rest of a buckets_config row (the index text, mtime, reindex_active) is
// the server's to write, from these, so that it always matches the table.
type httpBucket struct {
	HashDir    bool                   `json:"hash_dir"`
	HashUpload bool                   `json:"hash_upload"`
	ShardLocal bool                   `json:"shard_local"`
	Index      map[string]shard.Index `json:"index"`
	Config     struct {
		Pre     string `json:"pre"`     // a JSON array of trigger sources
		Post    string `json:"post"`    // a JSON array of trigger sources
		Options string `json:"options"` // a JSON object, Moray's options
	} `json:"config"`
}

// options checks the definition and makes the bucket's options from it;
// the error says what the client got wrong.
func (b httpBucket) options() (shard.BucketOptions, error) {
	opts := shard.BucketOptions{HashDir: b.HashDir, HashUpload: b.HashUpload, ShardLocal: b.ShardLocal, Index: b.Index}
	for f, ix := range b.Index {
		if err := shard.ValidateIndex(f, ix); err != nil {
			return opts, err
		}
	}
	if b.Config.Options != "" {
		if !strings.HasPrefix(strings.TrimSpace(b.Config.Options), "{") {
			return opts, errors.New("config.options must be a JSON object")
		}
		text, _, err := shard.OptionsWithVersion([]byte(b.Config.Options))
		if err != nil {
			return opts, fmt.Errorf("config.options must be a JSON object with a numeric version: %w", err)
		}
		opts.Config.Options = text
	}
	opts.Config.Pre, opts.Config.Post = b.Config.Pre, b.Config.Post
	if err := httpTriggers(&opts); err != nil {
		return opts, err
	}
	return opts, nil
}

func (r *Router) createBucket(ctx context.Context, w *statusWriter, req *http.Request, bucket string) {
	body, ok := r.readBody(w, req)
	if !ok {
		return
	}
	var def httpBucket
	if len(strings.TrimSpace(string(body))) > 0 {
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&def); err != nil {
			apiError(w, http.StatusBadRequest, "BadBody", "bucket options must be JSON like {\"hash_dir\": true}")
			return
		}
	}
	opts, err := def.options()
	if err != nil {
		apiError(w, http.StatusBadRequest, "InvalidBucketConfig", err.Error())
		return
	}
	names, err := r.CreateBucket(ctx, bucket, opts, false)
	if err != nil {
		r.fail(w, err)
		return
	}
	if names == nil {
		names = []string{} // it existed already
	}
	writeJSON(w, http.StatusOK, map[string]any{"bucket": bucket, "options": opts, "pnodes": names})
}

func (r *Router) put(ctx context.Context, w *statusWriter, req *http.Request, bucket, key string) {
	body, ok := r.readBody(w, req)
	if !ok {
		return
	}
	if !json.Valid(body) {
		apiError(w, http.StatusBadRequest, "BadBody", "the object value must be JSON")
		return
	}
	ifMatch := unquoteEtag(req.Header.Get("If-Match"))
	bo, err := r.bucketOptions(ctx, bucket)
	if err != nil {
		r.fail(w, err)
		return
	}
	var o shard.Object
	s, err := r.route(ctx, "put", bucket, key, true, func(ctx context.Context, p *pgxpool.Pool, vnode int32) error {
		var err error
		o, err = shard.PutObject(ctx, p, bucket, bo, shard.Object{Key: key, Value: body, Vnode: vnode}, ifMatch)
		return err
	})
	served(w, s)
	if err != nil {
		r.fail(w, err)
		return
	}
	w.Header().Set("ETag", `"`+o.Etag+`"`)
	writeJSON(w, http.StatusOK, map[string]any{"key": key, "etag": o.Etag, "mtime": o.Mtime, "vnode": s.Vnode, "pnode": s.Pnode})
}

func (r *Router) get(ctx context.Context, w *statusWriter, bucket, key string) {
	bo, err := r.bucketOptions(ctx, bucket)
	if err != nil {
		r.fail(w, err)
		return
	}
	var o shard.Object
	s, err := r.route(ctx, "get", bucket, key, false, func(ctx context.Context, p *pgxpool.Pool, vnode int32) error {
		var err error
		o, err = shard.GetObject(ctx, p, bucket, bo, key, vnode)
		return err
	})
	served(w, s)
	if err != nil {
		r.fail(w, err)
		return
	}
	w.Header().Set("ETag", `"`+o.Etag+`"`)
	w.Header().Set("X-Reshard-Mtime", strconv.FormatInt(o.Mtime, 10))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(o.Value)
}

func (r *Router) delete(ctx context.Context, w *statusWriter, req *http.Request, bucket, key string) {
	ifMatch := unquoteEtag(req.Header.Get("If-Match"))
	bo, err := r.bucketOptions(ctx, bucket)
	if err != nil {
		r.fail(w, err)
		return
	}
	s, err := r.route(ctx, "delete", bucket, key, true, func(ctx context.Context, p *pgxpool.Pool, vnode int32) error {
		return shard.DeleteObjectOf(ctx, p, bucket, bo, shard.Object{Key: key, Vnode: vnode}, ifMatch)
	})
	served(w, s)
	if err != nil {
		r.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// list asks every pnode of the ring and merges the answers in key order.
func (r *Router) list(ctx context.Context, w *statusWriter, req *http.Request, bucket string) {
	q := req.URL.Query()
	prefix := q.Get("prefix")
	// PostgreSQL text is UTF-8 without NUL; such a prefix matches no key.
	if !utf8.ValidString(prefix) || strings.IndexByte(prefix, 0) >= 0 {
		apiError(w, http.StatusBadRequest, "InvalidPrefix", "prefix must be percent-encoded UTF-8 text without NUL")
		return
	}
	limit := 100
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			apiError(w, http.StatusBadRequest, "BadLimit", "limit must be 1 to 1000")
			return
		}
		limit = n
	}
	if _, err := r.bucketOptions(ctx, bucket); err != nil {
		r.fail(w, err)
		return
	}
	v := r.cur.Load()
	if v == nil {
		r.fail(w, ErrNoRing)
		return
	}
	pnodes := v.ring.Pnodes()
	parts := make([][]shard.Object, len(pnodes))
	g, gctx := errgroup.WithContext(ctx)
	for i, pn := range pnodes {
		g.Go(func() error {
			p, err := r.pool(gctx, pn)
			if err != nil {
				return err
			}
			parts[i], err = shard.ListObjects(gctx, p, bucket, prefix, limit)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		r.fail(w, err)
		return
	}
	var all []shard.Object
	for _, p := range parts {
		all = append(all, p...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Key < all[j].Key })
	// During a move a key can be on both sides for a moment; list it once.
	out := all[:0]
	for i, o := range all {
		if i > 0 && o.Key == all[i-1].Key {
			continue
		}
		out = append(out, o)
	}
	if len(out) > limit {
		out = out[:limit]
	}
	w.Header().Set("X-Reshard-Ring-Version", strconv.FormatInt(v.version, 10))
	writeJSON(w, http.StatusOK, map[string]any{"objects": out})
}

func served(w http.ResponseWriter, s Served) {
	if sw, ok := w.(*statusWriter); ok {
		sw.trail = s.Trail
	}
	if s.Pnode == "" {
		return
	}
	h := w.Header()
	h.Set("X-Reshard-Vnode", strconv.FormatUint(uint64(s.Vnode), 10))
	h.Set("X-Reshard-Pnode", s.Pnode)
	h.Set("X-Reshard-Ring-Version", strconv.FormatInt(s.RingVersion, 10))
	if s.Retries > 0 {
		h.Set("X-Reshard-Retries", strconv.Itoa(s.Retries))
	}
}

// fail maps an error to a status and code; its text never holds a DSN password.
func (r *Router) fail(w *statusWriter, err error) {
	w.errMsg = err.Error()
	var te *trigger.Error
	var ite *shard.IndexTypeError
	var bce *shard.BucketConfigError
	de, isDB := shard.AsDBError(err)
	switch {
	case errors.Is(err, shard.ErrObjectNotFound):
		apiError(w, http.StatusNotFound, "ObjectNotFound", "no such object")
	case errors.Is(err, shard.ErrEtagMismatch):
		apiError(w, http.StatusPreconditionFailed, "EtagConflict", "the object's etag does not match If-Match")
	case errors.Is(err, ErrBucketExists):
		apiError(w, http.StatusConflict, "BucketExists", "the bucket exists with other options; changing how keys hash would move every key")
	case errors.Is(err, ErrBucketsBusy):
		w.Header().Set("Retry-After", "10")
		apiError(w, http.StatusServiceUnavailable, "ReshardRunning", err.Error())
	case errors.Is(err, reshard.ErrNotFound):
		apiError(w, http.StatusNotFound, "NotFound", err.Error())
	case errors.Is(err, ErrOutcomeUnknown):
		apiError(w, http.StatusServiceUnavailable, "OutcomeUnknown", err.Error())
	case errors.Is(err, ErrStillFenced), errors.Is(err, ErrNoRing):
		w.Header().Set("Retry-After", "1")
		apiError(w, http.StatusServiceUnavailable, "Unavailable", err.Error())
	case errors.As(err, &te):
		// The bucket's own trigger refused the write, or ran too long.
		apiError(w, http.StatusUnprocessableEntity, te.Name, te.Message)
	case errors.As(err, &ite):
		apiError(w, http.StatusBadRequest, "InvalidIndexType", ite.Error())
	case errors.As(err, &bce):
		apiError(w, http.StatusBadRequest, "InvalidBucketConfig", bce.Message)
	case errors.Is(err, shard.ErrBadValue):
		apiError(w, http.StatusBadRequest, "BadBody", "the object value must be a JSON object: "+err.Error())
	case isDB && de.UniqueViolation():
		apiError(w, http.StatusConflict, "UniqueAttribute", uniqueError(de).Message)
	case isDB && de.RefusedValue():
		// PostgreSQL's own text names its internals; say what was wrong.
		apiError(w, http.StatusBadRequest, "InvalidValue", "a field of the object cannot be stored in its index column: "+
			"it holds a NUL character, a value out of the range of the column's type, or one too long to index")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		apiError(w, http.StatusServiceUnavailable, "Timeout", "the request timed out")
	default:
		apiError(w, http.StatusInternalServerError, "Internal", err.Error())
	}
}

func apiError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"code": code, "error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

func unquoteEtag(s string) string {
	s = strings.TrimSpace(s)
	if s == "*" {
		return s
	}
	return strings.Trim(strings.TrimPrefix(s, "W/"), `"`)
}
