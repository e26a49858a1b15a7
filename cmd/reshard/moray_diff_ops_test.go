package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/reshard/reshard/ring"
	"github.com/reshard/reshard/router"
	"github.com/reshard/reshard/shard"
)

// diffOp is one request of TestMorayDiff, as diff.js reads it.
type diffOp struct {
	Op      string          `json:"op"` // createBucket getBucket put get del batch find
	Desc    string          `json:"desc"`
	Bucket  string          `json:"bucket,omitempty"`
	Key     string          `json:"key,omitempty"`
	Value   json.RawMessage `json:"value,omitempty"`
	Config  json.RawMessage `json:"config,omitempty"`
	Options json.RawMessage `json:"options,omitempty"`
	// Etag is resolved by diff.js on each side: "current" is the etag that
	// side last returned for the key, "wrong" one no object has, "null" is
	// JSON null (the object must not exist).
	Etag   string `json:"etag,omitempty"`
	Filter string `json:"filter,omitempty"`
	// Fields are a batch update request's fields.
	Fields    json.RawMessage `json:"fields,omitempty"`
	Operation string          `json:"operation,omitempty"` // batch requests: put or delete
	Requests  []diffOp        `json:"requests,omitempty"`
	// HashKey and Vnode are electric-moray's: the transformed key and the
	// vnode it hashes to, which the bare Moray side writes into value.vnode.
	HashKey *string `json:"hashKey,omitempty"`
	Vnode   *uint32 `json:"vnode,omitempty"`
	// Method and Args are a raw RPC, sent with the fast client itself:
	// "raw" ops compare the bare servers' answers (moray_diff_args_test.go),
	// "rpc" ops put electric-moray's part in front of Moray (moray_diff_bulk_test.go).
	Method string            `json:"method,omitempty"`
	Args   []json.RawMessage `json:"args,omitempty"`
}

// jsonObj builds a JSON object whose keys keep the order given, as a
// JavaScript object's do, so that the stored _value text is what a Manta
// client's JSON.stringify would send. Pairs alternate key and value; a
// json.RawMessage value is used as is, for numbers and escapes that Go
// cannot express (1e21, -0, lone surrogates).
func jsonObj(pairs ...any) json.RawMessage {
	var b bytes.Buffer
	b.WriteByte('{')
	for i := 0; i+1 < len(pairs); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(jsonText(pairs[i].(string)))
		b.WriteByte(':')
		b.Write(jsonText(pairs[i+1]))
	}
	b.WriteByte('}')
	return b.Bytes()
}

func jsonText(v any) []byte {
	if r, ok := v.(json.RawMessage); ok {
		return r
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err)
	}
	return bytes.TrimRight(b.Bytes(), "\n")
}

func raw(s string) json.RawMessage { return json.RawMessage(s) }

// diffOwner is the Manta account of the test's keys.
const diffOwner = "930896af-bf8c-48d4-885c-6573a94b1853"

// diffOps builds the requests. Keys hash as electric-moray hashes them, on
// the lab's ring.
type diffOps struct {
	r   *ring.Ring
	ops []diffOp
	// keys is every key an op touched, per bucket, in first-use order,
	// for the final getObject of each.
	keys    map[string][]string
	buckets []string
}

func (d *diffOps) locate(bucket, key string) (*string, *uint32) {
	opts := shard.BucketOptions{HashDir: bucket == "manta", HashUpload: bucket == "manta_uploads"}
	hk := router.HashKey(key, opts)
	v := d.r.VnodeOf([]byte(hk))
	return &hk, &v
}

func (d *diffOps) touch(bucket, key string) {
	if d.keys == nil {
		d.keys = map[string][]string{}
	}
	for _, k := range d.keys[bucket] {
		if k == key {
			return
		}
	}
	if _, ok := d.keys[bucket]; !ok {
		d.buckets = append(d.buckets, bucket)
	}
	d.keys[bucket] = append(d.keys[bucket], key)
}

func (d *diffOps) add(op diffOp) { d.ops = append(d.ops, op) }

func (d *diffOps) createBucket(desc, bucket string, config json.RawMessage) {
	d.add(diffOp{Op: "createBucket", Desc: desc, Bucket: bucket, Config: config})
}

func (d *diffOps) obj(op, desc, bucket, key string, value json.RawMessage, etag string) diffOp {
	hk, v := d.locate(bucket, key)
	d.touch(bucket, key)
	return diffOp{Op: op, Desc: desc, Bucket: bucket, Key: key, Value: value, Etag: etag, HashKey: hk, Vnode: v}
}

func (d *diffOps) put(desc, bucket, key string, value json.RawMessage, etag string) {
	d.add(d.obj("put", desc, bucket, key, value, etag))
}

func (d *diffOps) putOpts(desc, bucket, key string, value, options json.RawMessage) {
	o := d.obj("put", desc, bucket, key, value, "")
	o.Options = options
	d.add(o)
}

func (d *diffOps) delOpts(desc, bucket, key string, options json.RawMessage) {
	o := d.obj("del", desc, bucket, key, nil, "")
	o.Options = options
	d.add(o)
}

// recordDeleteLogSource is libmanta's post trigger, verbatim.
func recordDeleteLogSource() string {
	b, err := os.ReadFile("../../trigger/testdata/recordDeleteLog.js")
	if err != nil {
		panic(err)
	}
	return strings.TrimSpace(string(b))
}

func (d *diffOps) get(desc, bucket, key string) {
	d.add(d.obj("get", desc, bucket, key, nil, ""))
}

func (d *diffOps) del(desc, bucket, key, etag string) {
	d.add(d.obj("del", desc, bucket, key, nil, etag))
}

func (d *diffOps) batch(desc string, reqs ...diffOp) {
	d.add(diffOp{Op: "batch", Desc: desc, Requests: reqs})
}

func (d *diffOps) bput(bucket, key string, value json.RawMessage, etag string) diffOp {
	o := d.obj("", "", bucket, key, value, etag)
	o.Op, o.Operation = "", "put"
	return o
}

func (d *diffOps) bdel(bucket, key, etag string) diffOp {
	o := d.obj("", "", bucket, key, nil, etag)
	o.Op, o.Operation = "", "delete"
	return o
}

func (d *diffOps) find(desc, bucket, filter string, options json.RawMessage) {
	d.add(diffOp{Op: "find", Desc: desc, Bucket: bucket, Filter: filter, Options: options})
}

func nodeDirname(key string) string {
	i := strings.LastIndex(strings.TrimRight(key, "/"), "/")
	switch {
	case i < 0:
		return "."
	case i == 0:
		return "/"
	}
	return key[:i]
}

func nodeBasename(key string) string {
	k := strings.TrimRight(key, "/")
	return k[strings.LastIndex(k, "/")+1:]
}

// mantaObject is an object's metadata as libmanta's createMetadata writes
// it, field for field and in its order; extra pairs are appended or, for a
// field already there, replace its value in place.
func mantaObject(key, objectID string, mtime int64, extra ...any) json.RawMessage {
	pairs := []any{
		"dirname", nodeDirname(key),
		"key", key,
		"headers", jsonObj("m-source", "diff"),
		"mtime", mtime,
		"name", nodeBasename(key),
		"creator", diffOwner,
		"owner", diffOwner,
		"roles", []string{},
		"type", "object",
		"contentLength", 5,
		"contentMD5", "XUFAKrxLKna5cZ2REBfFkg==",
		"contentType", "application/octet-stream",
		"etag", objectID,
		"objectId", objectID,
		"sharks", []any{
			jsonObj("datacenter", "us-east-1", "manta_storage_id", "1.stor.us-east.example.com"),
			jsonObj("datacenter", "us-east-2", "manta_storage_id", "3.stor.us-east.example.com"),
		},
	}
	return jsonObj(override(pairs, extra)...)
}

func mantaDir(key string, mtime int64, extra ...any) json.RawMessage {
	dirname := nodeDirname(key)
	if strings.HasSuffix(key, "/stor") && strings.Count(key, "/") == 2 {
		dirname = key
	}
	pairs := []any{
		"dirname", dirname,
		"key", key,
		"headers", jsonObj(),
		"mtime", mtime,
		"name", nodeBasename(key),
		"creator", diffOwner,
		"owner", diffOwner,
		"roles", []string{},
		"type", "directory",
	}
	return jsonObj(override(pairs, extra)...)
}

// override replaces fields of pairs by those of extra and appends the
// rest; a value of dropField removes the field.
func override(pairs, extra []any) []any {
	out := append([]any(nil), pairs...)
	for i := 0; i+1 < len(extra); i += 2 {
		found := false
		for j := 0; j+1 < len(out); j += 2 {
			if out[j] == extra[i] {
				out[j+1], found = extra[i+1], true
			}
		}
		if !found {
			out = append(out, extra[i], extra[i+1])
		}
	}
	kept := out[:0]
	for j := 0; j+1 < len(out); j += 2 {
		if _, drop := out[j+1].(dropMark); !drop {
			kept = append(kept, out[j], out[j+1])
		}
	}
	return kept
}

type dropMark struct{}

var dropField = dropMark{}

// buildDiffOps is the request sequence: the buckets libmanta creates plus
// three of the test's own, then Manta-shaped writes with the awkward
// values Manta meets, conditional writes, batches, and a read of every key.
func buildDiffOps(r *ring.Ring) *diffOps {
	d := &diffOps{r: r}
	ix := func(pairs ...string) json.RawMessage {
		var p []any
		for i := 0; i+1 < len(pairs); i += 2 {
			p = append(p, pairs[i], jsonObj("type", pairs[i+1]))
		}
		return jsonObj(p...)
	}

	// libmanta's setupMantaBuckets. The "manta" bucket carries libmanta's
	// post trigger there (recordDeleteLog); here triggers get a bucket of
	// their own, diff_triggers, so that a server refusing them does not
	// lose every manta write below.
	d.createBucket("libmanta manta", "manta", jsonObj(
		"index", ix("dirname", "string", "name", "string", "owner", "string", "objectId", "string", "type", "string"),
		"options", jsonObj("version", 2)))
	d.createBucket("libmanta manta_uploads", "manta_uploads", jsonObj(
		"index", ix("finalizingType", "string", "uploadId", "string"),
		"options", jsonObj("version", 1)))
	d.createBucket("libmanta manta_delete_log", "manta_delete_log", jsonObj(
		"index", ix("objectId", "string"),
		"options", jsonObj("version", 1)))
	d.createBucket("libmanta manta_fastdelete_queue", "manta_fastdelete_queue", jsonObj(
		"options", jsonObj("version", 1)))
	d.createBucket("libmanta manta_directory_counts", "manta_directory_counts", jsonObj(
		"index", ix("entries", "number"),
		"options", jsonObj("version", 1)))
	d.createBucket("every index type reshard supports, and a unique one", "diff_types", jsonObj(
		"index", jsonObj(
			"s", jsonObj("type", "string"),
			"n", jsonObj("type", "number"),
			"b", jsonObj("type", "boolean"),
			"sa", jsonObj("type", "[string]"),
			"na", jsonObj("type", "[number]"),
			"ba", jsonObj("type", "[boolean]"),
			"u", jsonObj("type", "string", "unique", true)),
		"options", jsonObj("version", 3)))
	d.createBucket("guaranteeOrder (_txn_snap), no version", "diff_ordered", jsonObj(
		"index", ix("name", "string"),
		"options", jsonObj("guaranteeOrder", true)))
	d.createBucket("pre and post triggers, as libmanta's manta bucket has", "diff_triggers", jsonObj(
		"index", ix("name", "string"),
		"pre", []string{"function diffPre(req, cb) { req.value.pre = true; cb(); }"},
		"post", []string{"function diffPost(req, cb) { cb(); }"},
		"options", jsonObj("version", 1)))
	// libmanta's recordDeleteLog, verbatim, as the manta bucket's post
	// trigger; and triggers that fail in each way Moray answers.
	d.createBucket("libmanta's post trigger (recordDeleteLog)", "diff_gc", jsonObj(
		"index", ix("dirname", "string", "name", "string", "owner", "string", "objectId", "string", "type", "string"),
		"post", []string{recordDeleteLogSource()},
		"options", jsonObj("version", 2)))
	d.createBucket("a pre trigger that fails", "diff_trig_err", jsonObj(
		"pre", []string{"function (req, cb) { var e = new Error('no ' + req.key + ' ' + req.update); e.name = 'PreSaysNo'; cb(e); }"}))
	d.createBucket("a pre trigger that requires fs", "diff_trig_fs", jsonObj(
		"pre", []string{"function (req, cb) { try { require('fs'); } catch (e) { cb(e); return; } cb(); }"}))
	d.createBucket("a post trigger whose query fails", "diff_trig_sql", jsonObj(
		"post", []string{"function (req, cb) { req.pg.query('select * from nowhere where x = $1', [req.key]).once('error', cb).once('end', function () { cb(); }); }"}))
	d.createBucket("triggers that see the request and change the value", "diff_trig_req", jsonObj(
		"index", ix("n", "number"),
		"pre", []string{"function (req, cb) { req.value.n = (req.value.n || 0) + 1; req.value.seen = [req.bucket, req.key, req.update, req.headers, req.schema]; cb(); }"},
		"post", []string{`function (req, cb) {
			var q = req.pg.query('insert into diff_trig_log (_key, _value, _etag, _mtime) values ($1, $2, $3, $4)',
				[req.key + '#' + (req.value ? req.value.n : 'deleted'), JSON.stringify([req.bucket, typeof (req.id), req.update, req.headers, req.value]), 'E', 0]);
			q.on('error', cb);
			q.on('end', function () { cb(); });
		}`}))
	d.createBucket("what diff_trig_req's post trigger writes", "diff_trig_log", jsonObj())
	d.createBucket("a trigger that is no function", "diff_trig_bad", jsonObj("post", []any{"1"}))
	d.createBucket("a trigger that does not compile", "diff_trig_bad", jsonObj("pre", []any{"function ("}))
	d.createBucket("every other index type Moray has", "diff_moretypes", jsonObj(
		"index", ix("d", "date", "ip", "ip", "r", "numrange", "dr", "daterange", "mac", "mac", "sn", "subnet",
			"id", "uuid", "da", "[date]", "ipa", "[ip]", "maca", "[mac]", "sna", "[subnet]")))
	d.createBucket("index entry without a type", "diff_badindex2", jsonObj("index", jsonObj("a", jsonObj("unique", true))))
	d.createBucket("index entry with another property", "diff_badindex3", jsonObj("index", jsonObj("a", jsonObj("type", "string", "x", 1))))
	d.createBucket("index type not a string", "diff_badindex4", jsonObj("index", jsonObj("a", jsonObj("type", 5))))
	d.createBucket("index unique not a boolean", "diff_badindex5", jsonObj("index", jsonObj("a", jsonObj("type", "string", "unique", "yes"))))
	d.createBucket("index entry not an object", "diff_badindex6", jsonObj("index", jsonObj("a", "string")))
	d.createBucket("no [uuid] type", "diff_badindex7", jsonObj("index", ix("a", "[uuid]")))
	d.createBucket("bad index name after a bad type", "diff_badindex8", jsonObj("index", ix("9a", "string", "b", "nope")))
	d.createBucket("bad index name", "diff_badindex9", jsonObj("index", ix("9a", "string")))
	d.createBucket("again: conflict", "manta", jsonObj("index", ix("dirname", "string")))
	d.createBucket("bad name", "Bad-Name", jsonObj())
	d.createBucket("bad index type", "diff_badindex", jsonObj("index", ix("a", "ipaddr")))
	for _, b := range []string{"manta", "manta_uploads", "manta_delete_log", "manta_fastdelete_queue",
		"manta_directory_counts", "diff_types", "diff_ordered", "diff_triggers", "diff_gc", "diff_trig_req", "diff_moretypes", "nosuchbucket"} {
		d.add(diffOp{Op: "getBucket", Desc: "getBucket", Bucket: b})
	}

	root := "/" + diffOwner + "/stor"
	dir := root + "/photos"
	oid := func(n int) string { return fmt.Sprintf("0b1e3f2a-7c4d-4e5f-8a9b-%012d", n) }
	t0 := int64(1700000000000)

	// Directories and objects, as muskie writes them.
	d.put("account root directory (hashes itself)", "manta", root, mantaDir(root, t0), "")
	d.put("directory", "manta", dir, mantaDir(dir, t0+1), "")
	d.put("object", "manta", dir+"/cat.jpg", mantaObject(dir+"/cat.jpg", oid(1), t0+2, "contentType", "image/jpeg"), "")
	d.put("non-ASCII key and headers, emoji", "manta", dir+"/héllo wörld 🎉.txt", mantaObject(dir+"/héllo wörld 🎉.txt", oid(2), t0+3,
		"contentType", "text/plain; charset=utf-8",
		"headers", jsonObj("m-title", "Ünïcödé ✓ 😀 \"quoted\" \\ back", "m-note", "line1\nline2\ttab\x01 \u2028 </script> \u007f")), "")
	d.put("CJK directory and key", "manta", dir+"/日本語/ファイル.txt", mantaObject(dir+"/日本語/ファイル.txt", oid(3), t0+4), "")
	d.put("quotes and percent in the key", "manta", root+`/it's 100% "quoted".txt`, mantaObject(root+`/it's 100% "quoted".txt`, oid(4), t0+5), "")
	d.put("arrays and a number in string indexes", "manta", dir+"/odd-index", mantaObject(dir+"/odd-index", oid(5), t0+6,
		"owner", []string{diffOwner, "b,c"}, "type", 42, "name", []any{}), "")
	d.put("index fields missing", "manta", dir+"/missing-fields", jsonObj("key", dir+"/missing-fields", "type", "object", "sharks", []any{}), "")
	d.put("index fields null", "manta", dir+"/null-fields", mantaObject(dir+"/null-fields", oid(6), t0+7,
		"objectId", nil, "name", nil, "headers", nil), "")
	d.put("boolean, empty string and object in string indexes", "manta", dir+"/bool-str", mantaObject(dir+"/bool-str", oid(7), t0+8,
		"type", true, "name", "", "objectId", jsonObj("a", 1)), "")
	d.put("key outside any account", "manta", "/x", jsonObj("dirname", "/", "key", "/x", "type", "object"), "")
	d.put("key without a slash", "manta", "plainkey", jsonObj("name", "plainkey"), "")
	d.put("key with a trailing slash", "manta", dir+"/", mantaDir(dir+"/", t0+9), "")
	d.put("key with a double slash", "manta", root+"//double", mantaObject(root+"//double", oid(8), t0+10), "")
	d.put("link (createdFrom)", "manta", dir+"/link", mantaObject(dir+"/link", oid(1), t0+11, "createdFrom", dir+"/cat.jpg", "headers", dropField), "")
	d.get("read back", "manta", dir+"/cat.jpg")
	d.get("read back", "manta", dir+"/héllo wörld 🎉.txt")

	// Overwrites, then conditional writes.
	d.put("overwrite: new objectId and sharks", "manta", dir+"/cat.jpg", mantaObject(dir+"/cat.jpg", oid(9), t0+20,
		"contentType", "image/jpeg", "sharks", []any{jsonObj("datacenter", "us-east-3", "manta_storage_id", "5.stor.us-east.example.com")}), "")
	d.put("overwrite dropping index fields", "manta", dir+"/link", jsonObj("key", dir+"/link", "type", "object"), "")
	d.get("read back", "manta", dir+"/link")
	d.put("etag current", "manta", dir+"/cat.jpg", mantaObject(dir+"/cat.jpg", oid(10), t0+21), "current")
	d.put("etag wrong", "manta", dir+"/cat.jpg", mantaObject(dir+"/cat.jpg", oid(11), t0+22), "wrong")
	d.put("etag null on an absent key", "manta", dir+"/new1", mantaObject(dir+"/new1", oid(12), t0+23), "null")
	d.put("etag null on an existing key", "manta", dir+"/cat.jpg", mantaObject(dir+"/cat.jpg", oid(13), t0+24), "null")
	d.put("etag on an absent key", "manta", dir+"/new2", mantaObject(dir+"/new2", oid(14), t0+25), "wrong")
	d.get("read back", "manta", dir+"/cat.jpg")

	// Deletes.
	d.del("plain", "manta", dir+"/missing-fields", "")
	d.del("etag current", "manta", dir+"/null-fields", "current")
	d.del("etag wrong", "manta", dir+"/bool-str", "wrong")
	d.del("etag null on an existing key", "manta", dir+"/bool-str", "null")
	d.del("missing key", "manta", dir+"/nope", "")
	d.del("missing bucket", "nosuchbucket", "k", "")
	d.get("missing bucket", "nosuchbucket", "k")
	d.put("missing bucket", "nosuchbucket", "k", jsonObj("a", 1), "")
	d.get("after delete", "manta", dir+"/missing-fields")

	// Batches: electric-moray takes them when every key transforms alike.
	d.batch("puts and a delete in one directory",
		d.bput("manta", dir+"/b1", mantaObject(dir+"/b1", oid(20), t0+30), ""),
		d.bput("manta", dir+"/b2", mantaObject(dir+"/b2", oid(21), t0+31), "null"),
		d.bdel("manta", dir+"/new1", ""))
	d.batch("a wrong etag rolls the batch back",
		d.bput("manta", dir+"/b3", mantaObject(dir+"/b3", oid(22), t0+32), ""),
		d.bput("manta", dir+"/b1", mantaObject(dir+"/b1", oid(23), t0+33), "wrong"))
	d.batch("delete of a missing key rolls the batch back",
		d.bput("manta", dir+"/b5", mantaObject(dir+"/b5", oid(24), t0+34), ""),
		d.bdel("manta", dir+"/ghost", ""))
	d.batch("etag current on put and delete",
		d.bput("manta", dir+"/b2", mantaObject(dir+"/b2", oid(25), t0+35), "current"),
		d.bdel("manta", dir+"/b1", "current"),
		d.bput("manta", dir+"/b4", mantaObject(dir+"/b4", oid(26), t0+36), ""))
	upload := "8f2c1d7e-55a0-4c11-9b3e-2f6a7d9c0e41"
	d.put("multipart upload record", "manta_uploads", upload+":"+dir+"/big.bin", jsonObj(
		"uploadId", upload, "objectPath", dir+"/big.bin", "owner", diffOwner, "state", "created", "partsDirectory", root+"/uploads/8f2"), "")
	d.batch("MPU commit: manta put and manta_uploads update, one directory",
		d.bput("manta", dir+"/big.bin", mantaObject(dir+"/big.bin", oid(27), t0+37, "upload", jsonObj("id", upload, "parts", []string{"p1", "p2"})), "null"),
		d.bput("manta_uploads", upload+":"+dir+"/big.bin", jsonObj(
			"uploadId", upload, "objectPath", dir+"/big.bin", "owner", diffOwner, "state", "done", "finalizingType", "commit"), "current"))
	for _, k := range []string{"b1", "b2", "b3", "b4", "b5", "new1", "big.bin"} {
		d.get("after the batches", "manta", dir+"/"+k)
	}

	// The other libmanta buckets.
	d.put("delete log record", "manta_delete_log", "/"+oid(1)+"/1700000000123", mantaObject(dir+"/cat.jpg", oid(1), t0), "")
	d.put("delete log record without objectId", "manta_delete_log", "/"+oid(2)+"/1700000000456", jsonObj("key", dir+"/x"), "")
	d.put("fastdelete queue record", "manta_fastdelete_queue", oid(3), mantaObject(dir+"/日本語/ファイル.txt", oid(3), t0), "")
	d.put("directory count", "manta_directory_counts", dir, jsonObj("entries", 3), "")
	d.put("directory count as a string", "manta_directory_counts", root, jsonObj("entries", "7"), "")
	d.put("directory count not a number", "manta_directory_counts", root+"/nan", jsonObj("entries", "seven"), "")
	d.put("directory count negative float", "manta_directory_counts", root+"/neg", jsonObj("entries", raw("-1.50")), "")

	// Every index type, with values of the wrong shape.
	d.put("typed fields", "diff_types", "t1", jsonObj("s", "alpha", "n", 42, "b", true, "sa", []string{"a", "b"},
		"na", []any{1, 2.5}, "ba", []bool{true, false}, "u", "u1"), "")
	d.put("numbers and booleans as strings", "diff_types", "t2", jsonObj("s", 7, "n", "42", "na", []any{"1", 2}, "b", "true",
		"ba", []any{"false", true}, "u", "u2"), "")
	d.put("scalars for array indexes", "diff_types", "t3", jsonObj("sa", "single", "na", 3, "ba", false), "")
	d.put("arrays for scalar indexes", "diff_types", "t4", jsonObj("s", []string{"x", "y"}, "n", []int{1, 2}, "b", []bool{true}), "")
	d.put("nulls", "diff_types", "t5", jsonObj("s", nil, "n", nil, "b", nil, "sa", nil, "na", nil, "ba", nil, "u", nil), "")
	d.put("no index field", "diff_types", "t6", jsonObj("other", "x"), "")
	d.put("number index, not a number", "diff_types", "t7", jsonObj("n", "abc"), "")
	d.put("boolean index, not a boolean", "diff_types", "t8", jsonObj("b", "yes"), "")
	d.put("array elements needing escapes", "diff_types", "t9", jsonObj("sa", []string{"with,comma", `quo"te`, "{brace}", `back\slash`, "", "ñ 😀", "NULL"}), "")
	d.put("empty arrays", "diff_types", "t10", jsonObj("sa", []any{}, "na", []any{}, "ba", []any{}), "")
	d.put("unique value taken", "diff_types", "t11", jsonObj("u", "u1"), "")
	d.put("objects in index fields", "diff_types", "t12", jsonObj("s", jsonObj("a", 1), "n", jsonObj(), "extra", jsonObj("deep", []any{1, jsonObj("x", nil)})), "")
	d.put("number formats", "diff_types", "t13", jsonObj("n", raw("1e21"), "na", raw("[0.1,-0,1.50,9007199254740993]"),
		"f", raw("1e-7"), "big", raw("123456789012345678901234567890"), "neg", raw("-0.0")), "")
	d.put("lone surrogate in a plain field", "diff_types", "t14", jsonObj("text", raw(`"a\ud800b"`), "s", "ok"), "")
	d.put("emoji key", "diff_types", "ключ-🔑", jsonObj("s", "🔑", "sa", []string{"é", "😀"}), "")
	d.put("value with its own vnode field", "diff_types", "t16", jsonObj("vnode", "mine", "s", "v"), "")
	d.put("boolean in number index, number in boolean index", "diff_types", "t17", jsonObj("n", true, "b", 1), "")
	d.put("empty object", "diff_types", "t18", jsonObj(), "")
	d.put("overwrite with other types", "diff_types", "t1", jsonObj("s", "beta", "n", -3.25, "b", false, "sa", []string{"c"}, "u", "u3"), "")
	d.put("overwrite dropping fields", "diff_types", "t2", jsonObj("s", "only"), "")
	// What PostgreSQL refuses, Moray passes on as node-postgres names it.
	d.put("NUL in an indexed string", "diff_types", "t19", jsonObj("s", "a\x00b"), "")
	d.put("NUL in a key", "diff_types", "t\x00", jsonObj("s", "x"), "")
	// Letters PostgreSQL cannot compress, so the index entry is as long.
	noise := make([]byte, 3000)
	for i, x := 0, uint32(2463534242); i < len(noise); i++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		noise[i] = 'a' + byte(x%26)
	}
	d.put("indexed string too long to index", "diff_types", "t20", jsonObj("s", string(noise)), "")
	d.find("NUL in a filter's value for a column", "diff_types", `(s=a\00)`, jsonObj("hashkey", "t1"))
	d.find("JSON-ish value for an unindexed field", "diff_types", "(other={1,2})", jsonObj("hashkey", "t1"))
	d.batch("etag null on an absent key, and a delete, same key",
		d.bput("diff_types", "t20", jsonObj("s", "batch", "n", 1, "u", "u20"), "null"))
	d.batch("delete",
		d.bdel("diff_types", "t6", "current"))

	// guaranteeOrder: _txn_snap.
	d.put("first", "diff_ordered", "o1", jsonObj("name", "one"), "")
	d.put("second", "diff_ordered", "o2", jsonObj("name", "two"), "")
	d.put("overwrite", "diff_ordered", "o1", jsonObj("name", "one again"), "")
	d.put("etag wrong", "diff_ordered", "o2", jsonObj("name", "nope"), "wrong")
	d.batch("one put", d.bput("diff_ordered", "o3", jsonObj("name", "three"), ""))
	d.del("delete", "diff_ordered", "o2", "")

	d.put("into a bucket with triggers", "diff_triggers", "k1", jsonObj("name", "trig"), "")
	d.put("overwrite in a bucket with triggers", "diff_triggers", "k1", jsonObj("name", "trig2"), "current")
	d.put("etag wrong in a bucket with triggers", "diff_triggers", "k1", jsonObj("name", "trig3"), "wrong")
	d.put("etag null, new key, bucket with triggers", "diff_triggers", "k2", jsonObj("name", "n"), "null")
	d.del("delete in a bucket with triggers", "diff_triggers", "k2", "")

	// libmanta's delete log: an overwrite or delete whose request carries
	// the previous metadata logs the old object, in manta_delete_log or,
	// with snaplinks disabled, manta_fastdelete_queue.
	gc := dir + "/gc"
	prevMD := func(n int) json.RawMessage { return mantaObject(gc, oid(n), t0+int64(n)) }
	hdr := func(pairs ...any) json.RawMessage { return jsonObj("headers", jsonObj(pairs...)) }
	d.put("first write: no previous metadata", "diff_gc", gc, prevMD(40), "")
	d.putOpts("overwrite with previous metadata: logged", "diff_gc", gc, prevMD(41), hdr("x-muskie-prev-metadata", prevMD(40)))
	d.putOpts("overwrite of the same object: not logged", "diff_gc", gc, prevMD(41), hdr("x-muskie-prev-metadata", prevMD(41)))
	d.putOpts("snaplinks disabled: fastdelete queue", "diff_gc", gc, prevMD(42), hdr("x-muskie-prev-metadata", prevMD(41), "x-muskie-snaplinks-disabled", true))
	d.putOpts("previous metadata without objectId: not logged", "diff_gc", gc+"2", prevMD(43), hdr("x-muskie-prev-metadata", jsonObj("key", gc)))
	d.delOpts("delete with previous metadata: logged", "diff_gc", gc, hdr("x-muskie-prev-metadata", prevMD(42)))
	d.delOpts("delete of a missing key: nothing logged", "diff_gc", gc, hdr("x-muskie-prev-metadata", prevMD(42)))
	b1 := d.bput("diff_gc", gc+"3", prevMD(44), "")
	b1.Options = hdr("x-muskie-prev-metadata", prevMD(43))
	b2 := d.bdel("diff_gc", gc+"3", "")
	b2.Options = hdr("x-muskie-prev-metadata", prevMD(43), "x-muskie-snaplinks-disabled", true)
	d.batch("batch put and delete of one key, with previous metadata", b1, b2)

	// Triggers that fail, and what they see.
	d.put("pre trigger error", "diff_trig_err", "e1", jsonObj("a", 1), "")
	d.put("pre trigger requires fs", "diff_trig_fs", "f1", jsonObj("a", 1), "")
	d.put("post trigger query error", "diff_trig_sql", "s1", jsonObj("a", 1), "")
	d.batch("batch with a failing post trigger rolls back", d.bput("diff_trig_sql", "s2", jsonObj("a", 1), ""))
	d.putOpts("pre and post see the request", "diff_trig_req", "r1", jsonObj("n", 1, "x", "y"), hdr("h", "v"))
	d.putOpts("again: an update", "diff_trig_req", "r1", jsonObj("n", 5), hdr("h", []int{1}))
	d.delOpts("a delete's post", "diff_trig_req", "r1", hdr("why", "gone"))
	d.batch("batch put, headers from the request", func() diffOp {
		o := d.bput("diff_trig_req", "r2", jsonObj("n", 2), "")
		o.Options = hdr("per", "request")
		return o
	}())
	d.get("read back", "diff_trig_req", "r2")

	// The other index types: values Moray takes, normalizes or refuses.
	mt := "diff_moretypes"
	d.put("every type", mt, "m1", jsonObj("d", "2020-01-02T03:04:05Z", "ip", "10.0.0.1", "r", "[1,5)", "dr", "[2020-01-01T00:00:00Z,2021-01-01T00:00:00Z)",
		"mac", "AA:bb:cc:dd:ee:ff", "sn", "10.1.2.3/8", "id", "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
		"da", []string{"2020-01-01T00:00:00.123456Z", "2019-12-31T23:59:59Z"}, "ipa", []string{"192.168.0.1", "fe80::1"},
		"maca", []string{"01-02-03-04-05-06"}, "sna", []string{"192.168.0.0/16", "fd00::/8"}), "")
	d.put("other values", mt, "m2", jsonObj("d", "2021-02-30T24:00:00Z", "ip", "2001:DB8:0:0:1:0:0:1", "r", "(,10]", "dr", "(,2020-06-01T00:00:00Z]",
		"mac", "a:b:c:d:e:f", "sn", "fe80::1/64", "id", "00000000-0000-0000-0000-000000000000", "da", "2022-01-01T00:00:00Z", "ipa", "::ffff:1.2.3.4",
		"maca", 1, "sna", "0.0.0.0/0"), "")
	d.put("numbers for ip and mac", mt, "m3", jsonObj("ip", 167772161, "mac", 281474976710655, "r", "[-1.5,2.25]"), "")
	d.put("nulls and absent", mt, "m4", jsonObj("d", nil, "ip", nil, "da", nil, "other", 1), "")
	d.put("empty arrays", mt, "m5", jsonObj("da", []any{}, "ipa", []any{}, "maca", []any{}, "sna", []any{}), "")
	for _, bad := range []struct {
		field string
		val   any
	}{
		{"d", "2020-01-01"}, {"d", "2020-13-01T00:00:00Z"}, {"d", 1577836800000}, {"d", "2020-01-01T00:00:00+01:00"},
		{"ip", "10.0.0.256"}, {"ip", "1.2.3.4/8"}, {"ip", true}, {"r", "[1,x)"}, {"r", "1,2"}, {"dr", "[2020-01-01,)"},
		{"mac", "aa:bb:cc:dd:ee"}, {"mac", "aabbccddeeff00"}, {"sn", "10.0.0.0"}, {"sn", "10.0.0.0/33"}, {"sn", 5},
		{"id", "3F2504E0-4F89-41D3-9A0C-0305E82C3301"}, {"id", "nope"}, {"da", []any{"2020-01-01T00:00:00Z", "x"}},
		{"ipa", []any{"1.2.3.4", nil}}, {"sna", []any{"10.0.0.0/8", "bad"}},
	} {
		d.put(fmt.Sprintf("invalid %s %v", bad.field, bad.val), mt, "bad", jsonObj(bad.field, bad.val), "")
	}
	d.put("ip sort and compare", mt, "m6", jsonObj("ip", "10.0.0.20", "mac", "00:00:00:00:00:01", "sn", "10.0.0.0/24", "d", "1999-01-01T00:00:00Z", "id", "ffffffff-0000-0000-0000-000000000000"), "")

	// Every operator on the other types, matching and not, and bad values.
	mf := func(filter string) {
		d.find(filter, mt, filter, jsonObj("hashkey", "m1", "sort", jsonObj("attribute", "_id", "order", "ASC")))
	}
	for _, f := range []string{
		"(d=2020-01-02T03:04:05Z)", "(d=2020-01-02T03:04:05.000Z)", "(d>=2020-01-01T00:00:00Z)", "(d<=2020-01-01T00:00:00Z)", "(d=*)",
		"(d=nope)", "(d:within:=[2020-01-01T00:00:00Z,2020-12-31T00:00:00Z])", "(d:within:=bad)", "(!(d=2020-01-02T03:04:05Z))",
		"(da=2020-01-01T00:00:00.123Z)", "(da>=2021-06-01T00:00:00Z)", "(da:within:=[2019-01-01T00:00:00Z,2019-12-31T23:59:59Z])",
		"(ip=10.0.0.1)", "(ip>=10.0.0.5)", "(ip<=10.0.0.5)", "(ip=10.0.0.256)", "(ip:within:=10.0.0.0/8)", "(ip:within:=10.0.0.0/33)", "(ip=2001:db8::1:0:0:1)",
		"(ipa=fe80::1)", "(ipa=1.2.3.4)", "(ipa=::ffff:1.2.3.4)", "(ipa:within:=192.168.0.0/16)", "(ipa>=10.0.0.0)",
		"(r:overlaps:=[4,6])", "(r:contains:=3)", "(r:contains:=x)", "(r=[1,5))", "(r:within:=[1,2])",
		"(dr:overlaps:=[2020-03-01T00:00:00Z,2020-04-01T00:00:00Z])", "(dr:contains:=2020-06-01T00:00:00Z)",
		"(mac=aa:bb:cc:dd:ee:ff)", "(mac=AABBCCDDEEFF)", "(mac>=00:00:00:00:00:02)", "(mac<=0a:0b:0c:0d:0e:0f)", "(mac=zz)",
		"(maca=01:02:03:04:05:06)", "(maca=00:00:00:00:00:01)",
		"(sn=10.0.0.0/8)", "(sn:contains:=10.9.9.9)", "(sn>=10.0.0.0/16)", "(sn=10.0.0.0)", "(sna:contains:=fd00::5)", "(sna=0.0.0.0/0)",
		"(id=3f2504e0-4f89-41d3-9a0c-0305e82c3301)", "(id>=a0000000-0000-0000-0000-000000000000)", "(id=NOPE)",
		"(mac:overlaps:=x)", "(other:within:=[1,2])", "(&(ip=*)(!(mac=aa:bb:cc:dd:ee:ff)))", "(|(ip=10.0.0.1)(mac=0a:0b:0c:0d:0e:0f))",
		"(ip=10.0.0.*)", "(ipa=1*)",
	} {
		mf(f)
	}
	for _, attr := range []string{"d", "ip", "mac", "sn", "id", "r", "dr"} {
		d.find("sort by "+attr, mt, "(_id>=0)", jsonObj("hashkey", "m1", "sort", []any{jsonObj("attribute", attr, "order", "DESC"), jsonObj("attribute", "_id", "order", "ASC")}))
	}
	// Strings, numbers and booleans: JavaScript's test after PostgreSQL's.
	tf := func(filter string) {
		d.find(filter, "diff_types", filter, jsonObj("hashkey", "t1", "sort", jsonObj("attribute", "_id", "order", "ASC")))
	}
	for _, f := range []string{
		"(n<=0)", "(n=abc)", "(n=42abc)", "(na>=2)", "(na=2.5)", "(b=TRUE)", "(b=yes)", "(ba=false)", "(s=*a)", "(s=a*a)", "(s=al_ha)",
		"(s:caseIgnoreMatch:=ALPHA)", "(s:caseIgnoreMatch:=BETA)", "(s:caseIgnoreSubstringsMatch:=*ET*)", "(sa:caseIgnoreMatch:=C)",
		"(!(sa=c))", "(!(n>=0))", "(s>=b)", "(n:within:=[0,100])", "(s:within:=[0,1])",
	} {
		tf(f)
	}

	// Reads: findObjects as Manta lists a directory, and by each index type.
	// Sorted by _id where the order is otherwise unspecified, so that the
	// keys found can be compared in order.
	hk := func(key string) json.RawMessage {
		return jsonObj("hashkey", key, "sort", jsonObj("attribute", "_id", "order", "ASC"))
	}
	d.find("ls", "manta", "(dirname="+dir+")", jsonObj("hashkey", dir, "sort", jsonObj("attribute", "name", "order", "ASC"), "limit", 100))
	d.find("ls with a name filter", "manta", "(&(dirname="+dir+")(name=b*))", jsonObj("hashkey", dir, "sort", jsonObj("attribute", "name", "order", "DESC")))
	d.find("number range", "diff_types", "(n>=10)", jsonObj("hashkey", "t1", "sort", jsonObj("attribute", "_id", "order", "ASC")))
	d.find("string array", "diff_types", "(sa=a)", hk("t1"))
	d.find("boolean", "diff_types", "(b=true)", hk("t1"))
	d.find("presence", "diff_types", "(u=*)", jsonObj("hashkey", "t1", "sort", jsonObj("attribute", "u", "order", "ASC")))
	d.find("no_count", "diff_ordered", "(name=*)", jsonObj("hashkey", "o1", "no_count", true, "sort", jsonObj("attribute", "_id", "order", "ASC")))

	d.bulkOps()

	// Finally every key, as it stands.
	for _, b := range append([]string(nil), d.buckets...) {
		for _, k := range append([]string(nil), d.keys[b]...) {
			d.get("final", b, k)
		}
	}
	d.argCases()
	return d
}
