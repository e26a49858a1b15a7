package router_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/fast"
	"github.com/reshard/reshard/router"
	"github.com/reshard/reshard/shard"
)

// serveMoray starts the env's router on a Moray port.
func (e *env) serveMoray(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.rt.ServeMoray(ctx, l); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return l.Addr().String()
}

func dialFast(t testing.TB, addr string) *fast.Client {
	t.Helper()
	c, err := fast.Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func remoteName(err error) string {
	var re *fast.RemoteError
	if errors.As(err, &re) {
		return re.Name
	}
	return ""
}

// Every request gets an answer in the framing it came in; a frame the
// server cannot read gets an error and a closed connection, never a hang.
func TestMorayProtocol(t *testing.T) {
	e := setup(t, "")
	addr := e.serveMoray(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := dialFast(t, addr)
	if out, err := c.Call(ctx, "ping", map[string]any{}); err != nil || len(out) != 0 {
		t.Fatalf("ping: %s %v", out, err)
	}
	out, err := c.Call(ctx, "version", map[string]any{})
	if err != nil || len(out) != 1 || string(out[0]) != `{"version":2}` {
		t.Fatalf("version: %s %v", out, err)
	}
	if _, err := c.Call(ctx, "noSuchRPC"); remoteName(err) != "FastError" || !strings.Contains(err.Error(), "noSuchRPC") {
		t.Fatalf("unknown RPC: %v", err)
	}
	for _, bad := range []struct {
		rpc  string
		args []any
		want string
	}{
		{"putObject", []any{"manta", 7, map[string]any{}, map[string]any{}}, `putObject expects "key" (args[1]) to be a nonempty string: key should be string`},
		{"putObject", []any{"manta", "/k", []any{}, map[string]any{}}, `putObject expects "value" (args[2]) to be an object: value should be object`},
		{"putObject", []any{"manta", "/k", map[string]any{}, map[string]any{"etag": 5}}, `options.etag should be null,string`},
		{"getObject", []any{"manta"}, "getObject expects 3 arguments"},
		{"findObjects", []any{"manta", "(a=b)", map[string]any{"hashkey": "x", "sort": "name"}}, "options.sort should be array, options.sort should be object, options.sort should match some schema in anyOf"},
		{"findObjects", []any{"manta", "(a=b)", map[string]any{"hashkey": "x", "limit": -1}}, "options.limit should be >= 0"},
		{"batch", []any{map[string]any{}}, "batch expects 2 arguments"},
		{"batch", []any{map[string]any{}, map[string]any{}}, `batch expects "requests" (args[0]) to be an array of valid request objects: requests should be array`},
		{"createBucket", []any{"b", "config"}, "createBucket expects 3 arguments"},
		{"createBucket", []any{"b", "config", map[string]any{}}, `createBucket expects "config" (args[1]) to be an object: config should be object`},
	} {
		_, err := c.Call(ctx, bad.rpc, bad.args...)
		if remoteName(err) != "InvocationError" || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s%v: %v, want InvocationError %q", bad.rpc, bad.args, err, bad.want)
		}
	}
	// A version 1 request with the old CRC is answered the same way.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := &fast.Message{Version: fast.Version1, CRC: fast.CRCOld, Status: fast.StatusData, MsgID: 77,
		Meta: fast.Meta{Name: "version"}, D: json.RawMessage(`[{}]`)}
	if err := fast.Encode(conn, req); err != nil {
		t.Fatal(err)
	}
	dec := fast.NewDecoder(conn)
	for _, want := range []fast.Status{fast.StatusData, fast.StatusEnd} {
		m, err := dec.Decode()
		if err != nil || m.Status != want || m.MsgID != 77 || m.Version != fast.Version1 || m.CRC != fast.CRCOld || m.Meta.Name != "version" {
			t.Fatalf("reply to a v1 request: %+v %v", m, err)
		}
	}
	// A frame with a bad CRC: an error for its message id, then the end.
	frame, _ := fast.AppendFrame(nil, &fast.Message{Version: fast.Version2, Status: fast.StatusData, MsgID: 78,
		Meta: fast.Meta{Name: "ping"}, D: json.RawMessage(`[{}]`)})
	binary.BigEndian.PutUint32(frame[7:], 0xbeef)
	conn.Write(frame)
	m, err := dec.Decode()
	if err != nil || m.Status != fast.StatusError || m.MsgID != 78 || !strings.Contains(string(m.D), "FastProtocolError") {
		t.Fatalf("reply to a bad CRC: %+v %v", m, err)
	}
	if _, err := dec.Decode(); !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("after a bad frame the connection should close, got %v", err)
	}
	// An END message from a client is a protocol error too.
	c2 := dialFast(t, addr)
	conn2, _ := net.Dial("tcp", addr)
	defer conn2.Close()
	conn2.SetDeadline(time.Now().Add(10 * time.Second))
	fast.Encode(conn2, &fast.Message{Version: fast.Version2, Status: fast.StatusEnd, MsgID: 3, D: json.RawMessage(`[]`)})
	dec2 := fast.NewDecoder(conn2)
	if m, err := dec2.Decode(); err != nil || m.Status != fast.StatusError || !strings.Contains(string(m.D), "END") {
		t.Fatalf("reply to END: %+v %v", m, err)
	}
	// Other connections are unaffected.
	if _, err := c2.Call(ctx, "ping", map[string]any{}); err != nil {
		t.Fatal(err)
	}
}

// The Moray and HTTP front ends share the buckets, the ring and the data.
func TestMorayAndHTTPShareData(t *testing.T) {
	e := setup(t, "")
	addr := e.serveMoray(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := dialFast(t, addr)
	cfg := map[string]any{"index": map[string]any{"dirname": map[string]any{"type": "string"}}}
	if _, err := c.Call(ctx, "createBucket", "manta", cfg, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(ctx, "createBucket", "manta", cfg, map[string]any{}); remoteName(err) != "BucketConflictError" {
		t.Fatalf("second createBucket: %v", err)
	}
	key := "/acct/stor/dir/obj"
	out, err := c.Call(ctx, "putObject", "manta", key, map[string]any{"dirname": "/acct/stor/dir", "n": 1}, map[string]any{})
	if err != nil || len(out) != 1 {
		t.Fatalf("putObject: %s %v", out, err)
	}
	var put struct{ Etag string }
	json.Unmarshal(out[0], &put)
	// The same object through HTTP, on the vnode of its directory.
	resp, body := e.do(t, "GET", "/buckets/manta/objects/"+strings.ReplaceAll(key, "/", "%2F"), "")
	if resp.StatusCode != 200 || resp.Header.Get("ETag") != `"`+put.Etag+`"` {
		t.Fatalf("HTTP get of a Moray put: %d %s %s", resp.StatusCode, resp.Header.Get("ETag"), body)
	}
	rg, _, err := etcd.NewRingStore(e.cli).Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := rg.LocateString(router.HashKey(key, shard.BucketOptions{HashDir: true}))
	if resp.Header.Get("X-Reshard-Vnode") != strconv.Itoa(int(want.Vnode)) || want.Vnode != rg.LocateString("/acct/stor/dir").Vnode {
		t.Fatalf("served from vnode %s, the directory hashes to %d", resp.Header.Get("X-Reshard-Vnode"), want.Vnode)
	}
	out, err = c.Call(ctx, "findObjects", "manta", "(dirname=/acct/stor/dir)", map[string]any{"hashkey": "/acct/stor/dir"})
	if err != nil || len(out) != 1 || !strings.Contains(string(out[0]), `"_count":1`) {
		t.Fatalf("findObjects: %s %v", out, err)
	}
	// A bucket change waits while a reshard holds pnodes.
	if _, err := e.cli.Put(ctx, "/reshard/locks/pnode/1.moray", "job-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(ctx, "updateBucket", "manta", cfg, map[string]any{}); remoteName(err) != "ReadOnlyError" || !strings.Contains(err.Error(), "job-1") {
		t.Fatalf("updateBucket during a reshard: %v", err)
	}
	e.cli.Delete(ctx, "/reshard/locks/pnode/1.moray")
	if _, err := c.Call(ctx, "updateBucket", "manta", cfg, map[string]any{}); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkMorayVsHTTPVsDirect is in bench_test.go (BenchmarkRouterVsDirect).

func TestHashKeyMatchesElectricMoray(t *testing.T) {
	dir := shard.BucketOptions{HashDir: true}
	up := shard.BucketOptions{HashUpload: true}
	// Node's path.dirname, as electric-moray uses it, on the awkward cases.
	for key, want := range map[string]string{
		"/a/b/":     "/a",
		"a//b":      "a/",
		"/x":        "/",
		"a":         "a", // dirname "." hashes the key itself
		"/":         "/",
		"/a//":      "/",
		"///a//b//": "///a/",
		"/a/./b":    "/a/.",
		"/u/stor/x": "/u/stor",
		"/a3829ca2-0966-60ce-9dc3-e4e9060f0950/stor":   "/a3829ca2-0966-60ce-9dc3-e4e9060f0950/stor",
		"/a3829ca2-0966-60ce-9dc3-e4e9060f0950/stor/o": "/a3829ca2-0966-60ce-9dc3-e4e9060f0950/stor",
		"/a3829ca2-0966-60ce-9dc3-e4e9060f0950/public": "/a3829ca2-0966-60ce-9dc3-e4e9060f0950",
	} {
		if got := router.HashKey(key, dir); got != want {
			t.Errorf("manta %q hashes %q, electric-moray %q", key, got, want)
		}
	}
	for key, want := range map[string]string{
		"0b9b5a80:/acct/uploads/a/b": "/acct/uploads/a",
		"id:/x:y/z":                  "/x:y",
		"nocolon":                    "nocolon",
		"id:rel":                     "rel",
	} {
		if got := router.HashKey(key, up); got != want {
			t.Errorf("manta_uploads %q hashes %q, electric-moray %q", key, got, want)
		}
	}
	if got := router.HashKey("/a/b", shard.BucketOptions{}); got != "/a/b" {
		t.Errorf("a plain bucket hashes %q", got)
	}
}
