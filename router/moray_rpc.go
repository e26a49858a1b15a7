package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/reshard/reshard"
	"github.com/reshard/reshard/shard"
)

// morayRPCs are the RPCs of Moray's API that the router serves, with the
// arguments the npm moray client sends.
var morayRPCs = map[string]func(ctx context.Context, r *Router, a rpcArgs, s *stream) error{
	"createBucket": morayCreateBucket, // [bucket, config, options]
	"getBucket":    morayGetBucket,    // [options, bucket] (or the older [bucket])
	"listBuckets":  morayListBuckets,  // [options]
	"updateBucket": morayUpdateBucket, // [bucket, config, options]
	"delBucket":    morayDelBucket,    // [bucket, options]
	"putObject":    morayPutObject,    // [bucket, key, value, options]
	"getObject":    morayGetObject,    // [bucket, key, options]
	"delObject":    morayDelObject,    // [bucket, key, options]
	"findObjects":  morayFindObjects,  // [bucket, filter, options]
	"batch":        morayBatch,        // [requests, options]
	"getTokens":    morayGetTokens,    // [options]
	"ping":         func(context.Context, *Router, rpcArgs, *stream) error { return nil },
	"version": func(_ context.Context, _ *Router, _ rpcArgs, s *stream) error {
		return s.write(map[string]int{"version": MorayVersion})
	},
}

// morayConfig is createBucket's and updateBucket's config argument.
type morayConfig struct {
	Index   json.RawMessage `json:"index"`
	Pre     json.RawMessage `json:"pre"`
	Post    json.RawMessage `json:"post"`
	Options json.RawMessage `json:"options"`
}

func bucketName(a rpcArgs, i int) (string, error) {
	name, err := a.str(i, "bucket", true)
	if err != nil {
		return "", err
	}
	if shard.ValidateBucket(name) != nil {
		// No such bucket can exist; Moray looks the name up and finds none.
		// createBucket and updateBucket check names first (validateMorayBucket).
		return "", bucketNotFound(name)
	}
	return name, nil
}

// bucketConfig reads a config and turns it into bucket options. electric-
// moray hashes "manta" and "manta_uploads" keys by directory, whoever
// created them, so the name decides the hashing.
func bucketConfig(a rpcArgs, name string) (shard.BucketOptions, int, error) {
	if me := validateMorayBucket(name, a.a[1]); me != nil {
		return shard.BucketOptions{}, 0, me
	}
	var cfg morayConfig
	if err := a.obj(1, "config", false, &cfg); err != nil {
		return shard.BucketOptions{}, 0, err
	}
	var index map[string]shard.Index
	if len(cfg.Index) > 0 && string(cfg.Index) != "null" {
		if jsonKind(cfg.Index) != "an object" {
			return shard.BucketOptions{}, 0, &MorayError{Name: "InvalidBucketConfigError", Message: "index must be an object"}
		}
		if json.Unmarshal(cfg.Index, &index) != nil {
			return shard.BucketOptions{}, 0, &MorayError{Name: "InvalidBucketConfigError", Message: "index must be an object"}
		}
	} else {
		cfg.Index = json.RawMessage("{}")
	}
	for f, ix := range index {
		if err := shard.ValidateIndex(f, ix); err != nil {
			return shard.BucketOptions{}, 0, &MorayError{Name: "InvalidIndexTypeError", Message: err.Error()}
		}
	}
	pre, post, err := triggerTexts(cfg.Pre, cfg.Post)
	if err != nil {
		return shard.BucketOptions{}, 0, err
	}
	if len(cfg.Options) == 0 || string(cfg.Options) == "null" {
		cfg.Options = json.RawMessage("{}")
	}
	if jsonKind(cfg.Options) != "an object" {
		return shard.BucketOptions{}, 0, invocation(a.rpc, "config.options must be an object with a numeric version")
	}
	// Moray stores options with version set: options.version || 0.
	options, version, err := shard.OptionsWithVersion(cfg.Options)
	if err != nil {
		return shard.BucketOptions{}, 0, invocation(a.rpc, "config.options must be an object with a numeric version")
	}
	indexText, err := shard.MorayValue(cfg.Index, nil)
	if err != nil {
		return shard.BucketOptions{}, 0, &MorayError{Name: "InvalidBucketConfigError", Message: "index must be an object"}
	}
	return shard.BucketOptions{
		HashDir:    name == "manta" || name == "testmanta",
		HashUpload: name == "manta_uploads",
		Index:      index,
		Config:     shard.Config{Index: indexText, Pre: pre, Post: post, Options: options},
	}.WithConfig(), int(version), nil
}

func bucketVersion(o shard.BucketOptions) int { return int(o.Version()) }

func bucketNotFound(name string) error {
	return &MorayError{Name: "BucketNotFoundError", Message: name + " does not exist"}
}

func morayCreateBucket(ctx context.Context, r *Router, a rpcArgs, s *stream) error {
	name, err := a.str(0, "bucket", true)
	if err != nil {
		return err
	}
	opts, _, err := bucketConfig(a, name)
	if err != nil {
		return err
	}
	if shard.ValidateBucket(name) != nil {
		// Moray's pattern allows upper case, which PostgreSQL would fold,
		// and reshard keeps its own tables' prefixes: Moray's error for
		// a name it refuses.
		return &MorayError{Name: "InvalidBucketNameError", Message: name + " is not a valid bucket name"}
	}
	_, err = r.CreateBucket(ctx, name, opts, true)
	if errors.Is(err, ErrBucketExists) {
		return &MorayError{Name: "BucketConflictError", Message: name + " was likely being concurrently updated"}
	}
	return err
}

func morayUpdateBucket(ctx context.Context, r *Router, a rpcArgs, s *stream) error {
	name, err := a.str(0, "bucket", true)
	if err != nil {
		return err
	}
	opts, version, err := bucketConfig(a, name)
	if err != nil {
		return err
	}
	old, err := r.bucketOptions(ctx, name, 0)
	if errors.Is(err, reshard.ErrNotFound) {
		return bucketNotFound(name)
	} else if err != nil {
		return err
	}
	if ov := bucketVersion(old); ov > version {
		return &MorayError{Name: "BucketVersionError", Message: fmt.Sprintf("%s has a newer version than %d (%d)", name, version, ov)}
	}
	err = r.UpdateBucket(ctx, name, opts)
	if errors.Is(err, reshard.ErrNotFound) {
		return bucketNotFound(name)
	}
	return err
}

func morayDelBucket(ctx context.Context, r *Router, a rpcArgs, s *stream) error {
	if name, _ := a.str(0, "bucket", true); contains(morayReservedBkt, name) {
		return &MorayError{Name: "InvalidBucketNameError", Message: name + " is not a valid bucket name"}
	}
	name, err := bucketName(a, 0)
	if err != nil {
		return err
	}
	err = r.DeleteBucket(ctx, name)
	if errors.Is(err, reshard.ErrNotFound) {
		return bucketNotFound(name)
	}
	return err
}

// bucketRecord is a bucket as Moray's getBucket sends it: index, pre, post
// and options as JSON text, which the client parses.
func bucketRecord(name string, o shard.BucketOptions) map[string]any {
	o = o.WithConfig()
	// Moray's loadBucket: row.options.version = row.options.version || 0,
	// for rows written without one (by HTTP clients, or before Moray did).
	if text, _, err := shard.OptionsWithVersion([]byte(o.Config.Options)); err == nil {
		o.Config.Options = text
	}
	return map[string]any{
		"name":    name,
		"index":   o.Config.Index,
		"pre":     o.Config.Pre,
		"post":    o.Config.Post,
		"options": o.Config.Options,
		"mtime":   o.Config.Mtime.UTC().Format("2006-01-02T15:04:05.000Z"),
	}
}

func morayGetBucket(ctx context.Context, r *Router, a rpcArgs, s *stream) error {
	name, err := bucketName(a, 1)
	if err != nil {
		return err
	}
	o, err := r.bucketOptions(ctx, name, 0)
	if errors.Is(err, reshard.ErrNotFound) {
		return bucketNotFound(name)
	} else if err != nil {
		return err
	}
	return s.write(bucketRecord(name, o))
}

func morayListBuckets(ctx context.Context, r *Router, a rpcArgs, s *stream) error {
	all, err := r.Buckets(ctx)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := s.write(bucketRecord(n, all[n])); err != nil {
			return err
		}
	}
	return nil
}

// objectArgs reads bucket and key, the first two arguments of the object RPCs.
func objectArgs(r *Router, a rpcArgs) (string, string, error) {
	bucket, err := bucketName(a, 0)
	if err != nil {
		return "", "", err
	}
	key, err := a.str(1, "key", true)
	if err != nil {
		return "", "", err
	}
	if len(key) > r.cfg.MaxKey {
		return "", "", invocation(a.rpc, "argument 2 (key) is %d bytes; the limit is %d", len(key), r.cfg.MaxKey)
	}
	return bucket, key, nil
}

// etagOption reads options.etag: absent means unconditional, null means
// the object must not exist yet, a string means it must have that etag.
func etagOption(a rpcArgs, i int) (string, error) {
	var opts map[string]json.RawMessage
	if err := a.obj(i, "options", true, &opts); err != nil {
		return "", err
	}
	return etagFrom(a.rpc, "options.etag", opts)
}

func etagFrom(rpc, what string, opts map[string]json.RawMessage) (string, error) {
	raw, ok := opts["etag"]
	if !ok {
		return "", nil
	}
	switch jsonKind(raw) {
	case "null":
		return shard.Absent, nil
	case "a string":
		var e string
		json.Unmarshal(raw, &e)
		if e == "" || e == shard.Absent {
			return "", invocation(rpc, "%s must be null or an etag, not %q", what, e)
		}
		return e, nil
	}
	return "", invocation(rpc, "%s must be null or a string, not %s", what, jsonKind(raw))
}

// etagConflict explains a failed conditional write as Moray does.
func etagConflict(bucket, key, expected string, err error) error {
	var ee *shard.EtagError
	actual := ""
	switch {
	case errors.As(err, &ee):
		actual = ee.Actual
		if actual == "" {
			actual = "null" // Moray's word for an object that is not there
		}
	case errors.Is(err, shard.ErrObjectNotFound) && expected != "":
		actual = "null"
	default:
		return err
	}
	if expected == shard.Absent {
		expected = "null"
	}
	return &MorayError{Name: "EtagConflictError",
		Message: fmt.Sprintf("%s::%s was expected to have etag %q, but was %q", bucket, key, expected, actual),
		Context: map[string]any{"bucket": bucket, "key": key, "expected": expected, "actual": actual}}
}

func objectNotFound(bucket, key string) error {
	return &MorayError{Name: "ObjectNotFoundError", Message: bucket + "::" + key + " does not exist"}
}

func morayBucketErr(bucket string, err error) error {
	if errors.Is(err, reshard.ErrNotFound) {
		return bucketNotFound(bucket)
	}
	return err
}

func morayPutObject(ctx context.Context, r *Router, a rpcArgs, s *stream) error {
	bucket, key, err := objectArgs(r, a)
	if err != nil {
		return err
	}
	if !a.has(2) || jsonKind(a.a[2]) != "an object" {
		k := "nothing"
		if len(a.a) > 2 {
			k = jsonKind(a.a[2])
		}
		return invocation(a.rpc, "argument 3 (value) must be an object, not %s", k)
	}
	if int64(len(a.a[2])) > r.cfg.MaxBody {
		return invocation(a.rpc, "argument 3 (value) is %d bytes; the limit is %d", len(a.a[2]), r.cfg.MaxBody)
	}
	ifMatch, err := etagOption(a, 3)
	if err != nil {
		return err
	}
	bo, err := r.bucketOptions(ctx, bucket)
	if err != nil {
		return morayBucketErr(bucket, err)
	}
	var o shard.Object
	_, err = r.route(ctx, "put", bucket, key, true, func(ctx context.Context, p *pgxpool.Pool, vnode int32) error {
		var err error
		o, err = shard.PutObject(ctx, p, bucket, bo, shard.Object{Key: key, Value: a.a[2], Vnode: vnode, Headers: optionHeaders(a.arg(3))}, ifMatch)
		return err
	})
	if err != nil {
		return etagConflict(bucket, key, ifMatch, morayBucketErr(bucket, err))
	}
	return s.write(map[string]string{"etag": o.Etag})
}

// morayRecord is an object as Moray's getObject and findObjects send it.
type morayRecord struct {
	Bucket  string          `json:"bucket"`
	Key     string          `json:"key"`
	Value   json.RawMessage `json:"value"`
	ID      int64           `json:"_id"`
	Etag    string          `json:"_etag"`
	Mtime   int64           `json:"_mtime"`
	TxnSnap *int64          `json:"_txn_snap"`
	// Count is null on getObject and absent from a no_count find, as Moray sends them.
	Count json.RawMessage `json:"_count,omitempty"`
}

func record(bucket string, o shard.Object, count json.RawMessage) morayRecord {
	return morayRecord{Bucket: bucket, Key: o.Key, Value: o.Value, ID: o.ID, Etag: o.Etag, Mtime: o.Mtime, TxnSnap: o.TxnSnap, Count: count}
}

// handledOptions answers a client that asks (internalOpts.
// sendHandledOptions) which options the server honoured. Reads leave the
// fields being reindexed as the value has them, as Moray's do, and
// requireIndexes is checked against the filter.
func handledOptions(opts map[string]json.RawMessage, s *stream, handled ...string) error {
	var internal struct {
		SendHandledOptions bool `json:"sendHandledOptions"`
	}
	if raw, ok := opts["internalOpts"]; ok {
		json.Unmarshal(raw, &internal)
	}
	if !internal.SendHandledOptions {
		return nil
	}
	return s.write(map[string]any{"_handledOptions": handled})
}

func morayGetObject(ctx context.Context, r *Router, a rpcArgs, s *stream) error {
	bucket, key, err := objectArgs(r, a)
	if err != nil {
		return err
	}
	bo, err := r.bucketOptions(ctx, bucket)
	if err != nil {
		return morayBucketErr(bucket, err)
	}
	var o shard.Object
	_, err = r.route(ctx, "get", bucket, key, false, func(ctx context.Context, p *pgxpool.Pool, vnode int32) error {
		var err error
		o, err = shard.GetObject(ctx, p, bucket, bo, key, vnode)
		return err
	})
	if errors.Is(err, shard.ErrObjectNotFound) {
		return objectNotFound(bucket, key)
	}
	if err != nil {
		return morayBucketErr(bucket, err)
	}
	var opts map[string]json.RawMessage
	if err := a.obj(2, "options", true, &opts); err != nil {
		return err
	}
	if err := handledOptions(opts, s, "requireOnlineReindexing"); err != nil {
		return err
	}
	return s.write(record(bucket, o, json.RawMessage("null")))
}

func morayDelObject(ctx context.Context, r *Router, a rpcArgs, s *stream) error {
	bucket, key, err := objectArgs(r, a)
	if err != nil {
		return err
	}
	ifMatch, err := etagOption(a, 2)
	if err != nil {
		return err
	}
	if ifMatch == shard.Absent {
		ifMatch = "" // Moray takes a null etag on a delete as no condition
	}
	bo, err := r.bucketOptions(ctx, bucket)
	if err != nil {
		return morayBucketErr(bucket, err)
	}
	_, err = r.route(ctx, "delete", bucket, key, true, func(ctx context.Context, p *pgxpool.Pool, vnode int32) error {
		return shard.DeleteObjectOf(ctx, p, bucket, bo, shard.Object{Key: key, Vnode: vnode, Headers: optionHeaders(a.arg(2))}, ifMatch)
	})
	if errors.Is(err, shard.ErrObjectNotFound) {
		return objectNotFound(bucket, key)
	}
	if err != nil {
		return etagConflict(bucket, key, ifMatch, morayBucketErr(bucket, err))
	}
	return nil
}

// number reads a JSON number or numeric string, as Moray accepts both.
func number(a rpcArgs, what string, raw json.RawMessage) (int, error) {
	var f float64
	switch jsonKind(raw) {
	case "a number":
		json.Unmarshal(raw, &f)
	case "a string":
		var str string
		json.Unmarshal(raw, &str)
		n, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return 0, invocation(a.rpc, "%s must be a number, not %q", what, str)
		}
		f = n
	default:
		return 0, invocation(a.rpc, "%s must be a number, not %s", what, jsonKind(raw))
	}
	if f < 0 || f > 1<<31 || f != float64(int(f)) {
		return 0, invocation(a.rpc, "%s must be a whole number from 0 to 2^31, not %v", what, f)
	}
	return int(f), nil
}

// DefaultFindLimit is findObjects' limit when the client sets none, as Moray's.
const DefaultFindLimit = 1000

// findOptions reads findObjects' options.
func findOptions(a rpcArgs, opts map[string]json.RawMessage) (shard.FindOptions, error) {
	fo := shard.FindOptions{Limit: DefaultFindLimit}
	var err error
	// Moray: `if (o.limit) LIMIT o.limit; else if (!o.noLimit) LIMIT 1000`,
	// so a limit of 0 (but not "0") is no limit at all.
	raw, ok := opts["limit"]
	if jsTruthy(raw, ok) {
		if fo.Limit, err = number(a, "options.limit", raw); err != nil {
			return fo, err
		}
	} else if nl, ok := opts["noLimit"]; jsTruthy(nl, ok) {
		fo.NoLimit = true
	}
	if raw, ok := opts["offset"]; ok && jsonKind(raw) != "null" {
		if fo.Offset, err = number(a, "options.offset", raw); err != nil {
			return fo, err
		}
	}
	if raw, ok := opts["no_count"]; ok {
		json.Unmarshal(raw, &fo.NoCount)
	}
	if raw, ok := opts["sort"]; ok && jsonKind(raw) != "null" {
		type sortSpec struct {
			Attribute string `json:"attribute"`
			Order     string `json:"order"`
		}
		var specs []sortSpec
		switch jsonKind(raw) {
		case "an object":
			var one sortSpec
			if err := json.Unmarshal(raw, &one); err != nil {
				return fo, invocation(a.rpc, "options.sort: %s", describeJSONError(err))
			}
			specs = []sortSpec{one}
		case "an array":
			if err := json.Unmarshal(raw, &specs); err != nil {
				return fo, invocation(a.rpc, "options.sort: %s", describeJSONError(err))
			}
		default:
			return fo, invocation(a.rpc, "options.sort must be an object {attribute, order} or an array of them, not %s", jsonKind(raw))
		}
		for i, sp := range specs {
			if sp.Attribute == "" {
				return fo, invocation(a.rpc, "options.sort[%d].attribute must be a non-empty string", i)
			}
			desc := false
			switch sp.Order {
			case "", "ASC", "asc":
			case "DESC", "desc":
				desc = true
			default:
				return fo, invocation(a.rpc, "options.sort[%d].order must be ASC or DESC, not %q", i, sp.Order)
			}
			fo.Sort = append(fo.Sort, shard.Sort{Attribute: sp.Attribute, Desc: desc})
		}
	}
	return fo, nil
}

// morayFindObjects runs a filter on one shard, chosen as electric-moray
// requires: by options.hashkey (hashed as given, not transformed) or by
// options.token (a pnode from getTokens). A find naming neither is
// refused as electric-moray refuses it, or, with Config.CrossShardFind
// gather, run on every shard (gatherFind).
func morayFindObjects(ctx context.Context, r *Router, a rpcArgs, s *stream) error {
	var opts map[string]json.RawMessage
	if err := a.obj(2, "options", true, &opts); err != nil {
		return err
	}
	// electric-moray refuses a find it cannot route before it looks at
	// the bucket or the filter; gathering it asks every shard instead.
	hk, hasHK := opts["hashkey"]
	tk, hasTK := opts["token"]
	gathered := !jsTruthy(hk, hasHK) && !jsTruthy(tk, hasTK)
	if gathered && r.cfg.CrossShardFind != CrossShardGather {
		return refusedFind
	}
	bucket, err := bucketName(a, 0)
	if err != nil {
		return err
	}
	text, err := a.str(1, "filter", true)
	if err != nil {
		return err
	}
	f, err := shard.ParseFilter(text)
	if err != nil {
		// Moray's message names the filter, not what is wrong with it.
		return &MorayError{Name: "InvalidQueryError", Message: text + " is an invalid filter"}
	}
	fo, err := findOptions(a, opts)
	if err != nil {
		return err
	}
	var hashkey, token string
	var requireIndexes bool
	for k, v := range map[string]*string{"hashkey": &hashkey, "token": &token} {
		if raw, ok := opts[k]; ok && jsonKind(raw) != "null" {
			if jsonKind(raw) != "a string" {
				return invocation(a.rpc, "options.%s must be a string, not %s", k, jsonKind(raw))
			}
			json.Unmarshal(raw, v)
		}
	}
	if raw, ok := opts["requireIndexes"]; ok {
		json.Unmarshal(raw, &requireIndexes)
	}
	bo, err := r.bucketOptions(ctx, bucket, 2*time.Second)
	if err != nil {
		return morayBucketErr(bucket, err)
	}
	if requireIndexes {
		var unindexed []string
		for _, attr := range f.Attributes() {
			if bo.IndexColumn(attr).Type == "json" {
				unindexed = append(unindexed, attr)
			}
		}
		if len(unindexed) > 0 {
			return &MorayError{Name: "NotIndexedError", Message: fmt.Sprintf("%s does not have indexes that support %s. Unindexed fields: %q", bucket, text, unindexed)}
		}
	}
	if err := handledOptions(opts, s, "requireIndexes", "requireOnlineReindexing"); err != nil {
		return err
	}
	if gathered {
		return r.gatherFind(ctx, bucket, text, bo, f, fo, s)
	}
	var recs []shard.Record
	if token != "" {
		v := r.cur.Load()
		if v == nil {
			return ErrNoRing
		}
		known := false
		for _, pn := range v.ring.Pnodes() {
			known = known || pn == token
		}
		if !known {
			return invocation(a.rpc, "Invalid Token %s: getTokens lists the valid ones", token)
		}
		p, err := r.pool(ctx, token)
		if err != nil {
			return err
		}
		if recs, err = shard.FindObjects(ctx, p, bucket, bo, f, fo); err != nil {
			return findError(bucket, text, err)
		}
	} else {
		_, err = r.routeHash(ctx, "find", hashkey, false, func(ctx context.Context, p *pgxpool.Pool, vnode int32) error {
			fo.CheckVnode, fo.Vnode = true, vnode
			var err error
			recs, err = shard.FindObjects(ctx, p, bucket, bo, f, fo)
			return err
		})
		if err != nil {
			return findError(bucket, text, err)
		}
	}
	for i := range recs {
		var count json.RawMessage
		if !fo.NoCount {
			count = strconv.AppendInt(nil, recs[i].Count, 10)
		}
		if err := s.write(record(bucket, recs[i].Object, count)); err != nil {
			return err
		}
	}
	return nil
}

func findError(bucket, filter string, err error) error {
	var fe *shard.FilterError
	if errors.As(err, &fe) {
		return &MorayError{Name: fe.Name, Message: fe.Message}
	}
	if errors.Is(err, shard.ErrInvalidQuery) {
		return &MorayError{Name: "InvalidQueryError", Message: fmt.Sprintf("%s is an invalid filter: %s", filter, strings.TrimPrefix(err.Error(), "invalid query: "))}
	}
	de, ok := shard.AsDBError(err)
	if ok && de.UndefinedTable() {
		return bucketNotFound(bucket)
	}
	if ok && de.NulInText() {
		// A NUL in a filter's value for a column: Moray sends it, and
		// passes PostgreSQL's refusal on (lib/pg.js pgError).
		return &MorayError{Name: "error", Message: de.Message}
	}
	if ok && de.RefusedQuery() {
		// Moray's message, without PostgreSQL's words for what it refused.
		return &MorayError{Name: "InvalidQueryError", Message: fmt.Sprintf("%s is an invalid filter", filter)}
	}
	return err
}

// morayBatch runs puts and deletes in one transaction. As electric-moray
// requires, every request's key must transform to the same hash key, so
// one vnode, and so one shard, holds them all.
func morayBatch(ctx context.Context, r *Router, a rpcArgs, s *stream) error {
	if !a.has(0) || jsonKind(a.a[0]) != "an array" {
		k := "nothing"
		if len(a.a) > 0 {
			k = jsonKind(a.a[0])
		}
		return invocation(a.rpc, "argument 1 (requests) must be an array, not %s", k)
	}
	var raws []json.RawMessage
	json.Unmarshal(a.a[0], &raws)
	if len(raws) == 0 {
		return invocation(a.rpc, "argument 1 (requests) must hold at least one request")
	}
	ops := make([]shard.Op, len(raws))
	hk, keyed := "", false
	for i, raw := range raws {
		what := fmt.Sprintf("requests[%d]", i)
		if jsonKind(raw) != "an object" {
			return invocation(a.rpc, "%s must be an object, not %s", what, jsonKind(raw))
		}
		var req map[string]json.RawMessage
		json.Unmarshal(raw, &req)
		sub := rpcArgs{rpc: a.rpc, a: []json.RawMessage{req["bucket"], req["key"]}}
		bucket, err := sub.str(0, what+".bucket", true)
		if err != nil {
			return invocation(a.rpc, "%s.bucket must be a non-empty string", what)
		}
		if shard.ValidateBucket(bucket) != nil {
			return &MorayError{Name: "InvalidBucketNameError", Message: bucket + " is not a valid bucket name"}
		}
		op := "put"
		if raw, ok := req["operation"]; ok && jsonKind(raw) != "null" {
			json.Unmarshal(raw, &op)
		}
		if op == "update" || op == "deleteMany" {
			if ops[i], err = batchBulk(ctx, r, a, req, bucket, op); err != nil {
				return err
			}
			continue
		}
		key, err := sub.str(1, what+".key", true)
		if err != nil || len(key) > r.cfg.MaxKey {
			return invocation(a.rpc, "%s.key must be a string of 1 to %d bytes", what, r.cfg.MaxKey)
		}
		var ropts map[string]json.RawMessage
		if raw, ok := req["options"]; ok && jsonKind(raw) == "an object" {
			json.Unmarshal(raw, &ropts)
		}
		ifMatch, err := etagFrom(a.rpc, what+".options.etag", ropts)
		if err != nil {
			return err
		}
		headers := optionHeaders(req["options"])
		if headers == nil {
			headers = optionHeaders(a.arg(1)) // Moray merges the batch's options in
		}
		ops[i] = shard.Op{Bucket: bucket, IfMatch: ifMatch, Object: shard.Object{Key: key, Headers: headers}}
		switch op {
		case "put":
			if jsonKind(req["value"]) != "an object" {
				return invocation(a.rpc, "%s.value must be an object, not %s", what, jsonKind(req["value"]))
			}
			ops[i].Object.Value = req["value"]
		case "delete":
			ops[i].Delete = true
			if ifMatch == shard.Absent {
				ops[i].IfMatch = "" // no condition, as on delObject
			}
		default:
			return invocation(a.rpc, "%s.operation %q is not supported: use put or delete", what, op)
		}
		bo, err := r.bucketOptions(ctx, bucket)
		if err != nil {
			return morayBucketErr(bucket, err)
		}
		ops[i].Options = bo
		k := HashKey(key, bo)
		if !keyed {
			hk, keyed = k, true
		} else if k != hk {
			return invocation(a.rpc, "all requests must transform to the same key: %s hashes %q, the first request %q", what, k, hk)
		}
	}
	for _, op := range ops {
		if op.Bulk != nil {
			return batchWithBulk(ctx, r, ops, hk, keyed, s)
		}
	}
	_, err := r.routeHash(ctx, "batch", hk, true, func(ctx context.Context, p *pgxpool.Pool, vnode int32) error {
		for i := range ops {
			ops[i].Object.Vnode = vnode
		}
		_, err := shard.Batch(ctx, p, ops)
		return err
	})
	if err != nil {
		var be *shard.BatchError
		if errors.As(err, &be) {
			op := ops[be.Index]
			if op.Delete && errors.Is(be.Err, shard.ErrObjectNotFound) {
				return objectNotFound(op.Bucket, op.Object.Key)
			}
			return etagConflict(op.Bucket, op.Object.Key, op.IfMatch, be.Err)
		}
		return err
	}
	// Moray lists every request, a delete without an etag.
	etags := []map[string]string{}
	for _, op := range ops {
		e := map[string]string{"bucket": op.Bucket, "key": op.Object.Key}
		if !op.Delete {
			e["etag"] = op.Object.Etag
		}
		etags = append(etags, e)
	}
	return s.write(map[string]any{"etags": etags})
}

// morayGetTokens lists the pnodes of the ring, which findObjects takes as
// options.token to search one shard.
func morayGetTokens(ctx context.Context, r *Router, a rpcArgs, s *stream) error {
	v := r.cur.Load()
	if v == nil {
		return ErrNoRing
	}
	return s.write(v.ring.Pnodes())
}
