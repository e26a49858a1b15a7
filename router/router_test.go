package router_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/lab"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/ring"
	"github.com/reshard/reshard/router"
	"github.com/reshard/reshard/shard"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(lab.SupervisorEnv); dir != "" {
		if err := lab.Supervise(dir); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type env struct {
	st  *lab.State
	cli *clientv3.Client
	srv *httptest.Server
	rt  *router.Router
}

// setup brings up a lab of two single-peer shards and a router in-process.
func setup(t testing.TB, token string) *env { return setupRing(t, token, 64) }

// setupRing is setup with a ring of the given size.
func setupRing(t testing.TB, token string, vnodes int) *env {
	t.Helper()
	ctx := context.Background()
	exe, _ := os.Executable()
	cfg := lab.Config{Dir: filepath.Join(t.TempDir(), "lab"), Shards: 2, Peers: 1, Vnodes: vnodes,
		Supervisor: []string{exe, "-test.run=^$"}}
	st, err := lab.Up(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Down(cfg.Dir) })
	return routerOn(t, st, token)
}

// routerOn starts a router in-process on a running lab.
func routerOn(t testing.TB, st *lab.State, token string) *env {
	t.Helper()
	ctx := context.Background()
	cli, err := etcd.Connect(ctx, st.EtcdURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	rt := router.New(router.Config{Etcd: cli, Name: "test", Token: token, RetryFor: 10 * time.Second, MaxBody: 4096})
	rctx, cancel := context.WithCancel(ctx)
	go rt.Run(rctx)
	t.Cleanup(cancel)
	srv := httptest.NewServer(rt.Handler())
	t.Cleanup(srv.Close)
	waitVersion(t, rt, st.RingVersion)
	return &env{st: st, cli: cli, srv: srv, rt: rt}
}

func waitVersion(t testing.TB, rt *router.Router, v int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for rt.RingVersion() < v {
		if time.Now().After(deadline) {
			t.Fatalf("router serves ring %d, want %d", rt.RingVersion(), v)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) do(t testing.TB, method, path, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func (e *env) primary(t *testing.T, pnode string) *pgx.Conn {
	t.Helper()
	sh, _ := e.st.Shard(pnode)
	conn, err := postgres.Connect(context.Background(), sh.Peers[0].DSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestRouterOperations(t *testing.T) {
	e := setup(t, "")
	if resp, body := e.do(t, "PUT", "/buckets/manta", `{"hash_dir":true}`); resp.StatusCode != 200 {
		t.Fatalf("create bucket: %d %s", resp.StatusCode, body)
	}
	if resp, _ := e.do(t, "PUT", "/buckets/manta", `{}`); resp.StatusCode != http.StatusConflict {
		t.Fatalf("recreate with other options: %d", resp.StatusCode)
	}
	resp, body := e.do(t, "PUT", "/buckets/manta/objects//u/stor/dir/a", `{"n":1}`)
	if resp.StatusCode != 200 {
		t.Fatalf("put: %d %s", resp.StatusCode, body)
	}
	etag := resp.Header.Get("ETag")
	// hash_dir: entries of one directory share a vnode.
	resp2, _ := e.do(t, "PUT", "/buckets/manta/objects//u/stor/dir/b", `{"n":2}`)
	if resp.Header.Get("X-Reshard-Vnode") != resp2.Header.Get("X-Reshard-Vnode") {
		t.Fatalf("same directory, different vnodes: %s %s", resp.Header.Get("X-Reshard-Vnode"), resp2.Header.Get("X-Reshard-Vnode"))
	}
	rg, _, err := etcd.NewRingStore(e.cli).Current(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	loc := rg.LocateString("/u/stor/dir")
	if resp.Header.Get("X-Reshard-Pnode") != loc.Pnode || resp.Header.Get("X-Reshard-Vnode") != strconv.Itoa(int(loc.Vnode)) {
		t.Fatalf("served by %s/%s, ring says %s/%d", resp.Header.Get("X-Reshard-Pnode"), resp.Header.Get("X-Reshard-Vnode"), loc.Pnode, loc.Vnode)
	}
	resp, body = e.do(t, "GET", "/buckets/manta/objects/%2Fu%2Fstor%2Fdir%2Fa", "")
	if resp.StatusCode != 200 || body != `{"n":1}` || resp.Header.Get("ETag") != etag {
		t.Fatalf("get: %d %q %s", resp.StatusCode, body, resp.Header.Get("ETag"))
	}
	if resp, _ := e.do(t, "PUT", "/buckets/manta/objects//u/stor/dir/a", `{"n":3}`, "If-Match", `"bogus"`); resp.StatusCode != http.StatusPreconditionFailed {
		t.Fatalf("conditional put with a wrong etag: %d", resp.StatusCode)
	}
	if resp, _ := e.do(t, "PUT", "/buckets/manta/objects//u/stor/dir/a", `{"n":3}`, "If-Match", etag); resp.StatusCode != 200 {
		t.Fatalf("conditional put: %d", resp.StatusCode)
	}
	resp, body = e.do(t, "GET", "/buckets/manta/objects?prefix=/u/stor/dir/&limit=10", "")
	var list struct{ Objects []shard.Object }
	if json.Unmarshal([]byte(body), &list); resp.StatusCode != 200 || len(list.Objects) != 2 || list.Objects[0].Key != "/u/stor/dir/a" {
		t.Fatalf("list: %d %s", resp.StatusCode, body)
	}
	if resp, _ := e.do(t, "DELETE", "/buckets/manta/objects//u/stor/dir/b", ""); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	if resp, _ := e.do(t, "GET", "/buckets/manta/objects//u/stor/dir/b", ""); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("get after delete: %d", resp.StatusCode)
	}
	for _, c := range []struct {
		method, path, body string
		want               int
	}{
		{"PUT", "/buckets/manta/objects/k", `{not json`, 400},
		{"PUT", "/buckets/manta/objects/k", `"` + strings.Repeat("x", 5000) + `"`, 413},
		{"PUT", "/buckets/x;drop/objects/k", `{}`, 400},
		{"PUT", "/buckets/nobucket/objects/k", `{}`, 404},
		{"GET", "/buckets/manta/objects/" + strings.Repeat("k", 2000), ``, 400},
		{"GET", "/buckets/manta/objects?limit=0", ``, 400},
		{"POST", "/buckets/manta/objects/k", `{}`, 405},
		{"GET", "/nothing", ``, 404},
	} {
		if resp, body := e.do(t, c.method, c.path, c.body); resp.StatusCode != c.want {
			t.Errorf("%s %.60s: %d %s, want %d", c.method, c.path, resp.StatusCode, body, c.want)
		}
	}
	if _, body := e.do(t, "GET", "/metrics", ""); !strings.Contains(body, `reshard_router_requests_total{code="200",op="put"}`) || !strings.Contains(body, "reshard_router_ring_version") {
		t.Fatal("metrics lack request counts or the ring version")
	}
}

func TestRouterToken(t *testing.T) {
	e := setup(t, "s3cret")
	if resp, _ := e.do(t, "PUT", "/buckets/manta", ``); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %d", resp.StatusCode)
	}
	if resp, _ := e.do(t, "PUT", "/buckets/manta", ``, "Authorization", "Bearer wrong"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", resp.StatusCode)
	}
	if resp, _ := e.do(t, "PUT", "/buckets/manta", ``, "Authorization", "Bearer s3cret"); resp.StatusCode != 200 {
		t.Fatalf("right token: %d", resp.StatusCode)
	}
}

// A vnode moves while a write to it waits: the write is fenced by the
// database, the router waits for the new ring, and the write lands on the
// new owner. The client sees one successful answer.
func TestRouterRetriesAcrossAMove(t *testing.T) {
	e := setup(t, "")
	ctx := context.Background()
	e.do(t, "PUT", "/buckets/manta", `{}`)
	resp, _ := e.do(t, "PUT", "/buckets/manta/objects/moving-key", `{"v":1}`)
	from := resp.Header.Get("X-Reshard-Pnode")
	vnode, _ := strconv.Atoi(resp.Header.Get("X-Reshard-Vnode"))
	to := "1.moray"
	if from == to {
		to = "2.moray"
	}
	src, dst := e.primary(t, from), e.primary(t, to)
	v := []int32{int32(vnode)}

	// Freeze on the origin: the database refuses any write to the vnode.
	if _, err := shard.SetWritable(ctx, src, v, false, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Exec(ctx, `insert into manta (_key, _value, _etag, _mtime, _vnode) values ('direct', '{}', 'e', 0, $1)`, vnode); !shard.IsFenced(err) {
		t.Fatalf("direct SQL insert into a frozen vnode: %v", err)
	}
	type result struct {
		resp *http.Response
		body string
	}
	done := make(chan result, 1)
	go func() {
		r, b := e.do(t, "PUT", "/buckets/manta/objects/moving-key", `{"v":2}`)
		done <- result{r, b}
	}()
	time.Sleep(300 * time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("write to a frozen vnode answered before the move: %d %s", r.resp.StatusCode, r.body)
	default:
	}
	// Copy the row, hand the vnode over, flip the ring, disown on the origin.
	if _, err := dst.Exec(ctx, `alter table manta disable trigger reshard_fence`); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Exec(ctx, `insert into manta (_key, _value, _etag, _mtime, _vnode) values ('moving-key', '{"v":1}', 'e1', 0, $1)`, vnode); err != nil {
		t.Fatal(err)
	}
	dst.Exec(ctx, `alter table manta enable trigger reshard_fence`)
	if err := shard.Own(ctx, dst, v, true, 2); err != nil {
		t.Fatal(err)
	}
	store := etcd.NewRingStore(e.cli)
	rv, err := store.Update(ctx, e.st.RingVersion, "move", func(r *ring.Ring) error { return r.Remap([]uint32{uint32(vnode)}, to) })
	if err != nil {
		t.Fatal(err)
	}
	if err := shard.Disown(ctx, src, v); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.resp.StatusCode != 200 || r.resp.Header.Get("X-Reshard-Pnode") != to || r.resp.Header.Get("X-Reshard-Retries") == "" {
		t.Fatalf("write across the move: %d %s pnode=%s retries=%s", r.resp.StatusCode, r.body,
			r.resp.Header.Get("X-Reshard-Pnode"), r.resp.Header.Get("X-Reshard-Retries"))
	}
	if e.rt.RingVersion() != rv.Version {
		t.Fatalf("router serves %d, want %d", e.rt.RingVersion(), rv.Version)
	}
	var val string
	if err := dst.QueryRow(ctx, `select _value from manta where _key = 'moving-key'`).Scan(&val); err != nil || val != fmt.Sprintf(`{"v":2,"vnode":%d}`, vnode) {
		t.Fatalf("new owner holds %q, %v", val, err)
	}
	// Reads follow too, and the origin's leftover row is never served.
	if resp, body := e.do(t, "GET", "/buckets/manta/objects/moving-key", ""); resp.StatusCode != 200 || body != `{"v":2}` {
		t.Fatalf("read after the move: %d %s", resp.StatusCode, body)
	}
	if _, err := shard.GetObject(ctx, src, "manta", shard.BucketOptions{}, "moving-key", int32(vnode)); !shard.IsFenced(err) {
		t.Fatalf("origin still answers reads for the moved vnode: %v", err)
	}
}

// A router whose ring is behind: the database fences the write, and once the
// router sees the new ring the write succeeds on the new owner.
func TestRouterPicksUpRingWithoutRestart(t *testing.T) {
	e := setup(t, "")
	ctx := context.Background()
	e.do(t, "PUT", "/buckets/manta", `{}`)
	resp, _ := e.do(t, "PUT", "/buckets/manta/objects/k1", `{}`)
	from := resp.Header.Get("X-Reshard-Pnode")
	vnode, _ := strconv.Atoi(resp.Header.Get("X-Reshard-Vnode"))
	to := map[string]string{"1.moray": "2.moray", "2.moray": "1.moray"}[from]
	if err := shard.Own(ctx, e.primary(t, to), []int32{int32(vnode)}, true, 2); err != nil {
		t.Fatal(err)
	}
	if err := shard.Disown(ctx, e.primary(t, from), []int32{int32(vnode)}); err != nil {
		t.Fatal(err)
	}
	// The ring is not flipped yet: the router's ring is now stale.
	done := make(chan *http.Response, 1)
	go func() {
		r, _ := e.do(t, "PUT", "/buckets/manta/objects/k1", `{"after":true}`)
		done <- r
	}()
	time.Sleep(200 * time.Millisecond)
	if _, err := etcd.NewRingStore(e.cli).Update(ctx, e.st.RingVersion, "move", func(r *ring.Ring) error {
		return r.Remap([]uint32{uint32(vnode)}, to)
	}); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.StatusCode != 200 || r.Header.Get("X-Reshard-Pnode") != to || r.Header.Get("X-Reshard-Ring-Version") != "2" {
		t.Fatalf("write with a stale ring: %d pnode=%s version=%s", r.StatusCode, r.Header.Get("X-Reshard-Pnode"), r.Header.Get("X-Reshard-Ring-Version"))
	}
}
