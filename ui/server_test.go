package ui_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/etcd/etcdtest"
	"github.com/reshard/reshard/orchestrator"
	"github.com/reshard/reshard/ring"
	"github.com/reshard/reshard/ui"
	clientv3 "go.etcd.io/etcd/client/v3"
)

type env struct {
	cli   *clientv3.Client
	srv   *httptest.Server
	acted atomic.Int32
}

func start(t *testing.T, token string) *env {
	t.Helper()
	cli, _ := etcdtest.Start(t)
	e := &env{cli: cli}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := ui.New(ui.Config{Etcd: cli, Token: token, Sample: 200 * time.Millisecond,
		Act: func(ctx context.Context, action, job string) error { e.acted.Add(1); return nil }})
	s.Run(ctx)
	e.srv = httptest.NewServer(s.Handler())
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) do(t *testing.T, method, path, token string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, e.srv.URL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

func putJob(t *testing.T, cli *clientv3.Client, j orchestrator.Job) {
	t.Helper()
	b, _ := json.Marshal(j)
	if _, err := cli.Put(context.Background(), etcd.JobPrefix+j.ID, string(b)); err != nil {
		t.Fatal(err)
	}
}

func revision(t *testing.T, cli *clientv3.Client) int64 {
	t.Helper()
	resp, err := cli.Get(context.Background(), "/")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// Every bad request gets one clear error and changes nothing in etcd.
func TestBadInputChangesNothing(t *testing.T) {
	e := start(t, "s3cret")
	putJob(t, e.cli, orchestrator.Job{ID: "r20261201t000000abcd", State: orchestrator.Running, From: "1.moray", To: []string{"3.moray"}})
	before := revision(t, e.cli)
	for _, c := range []struct {
		method, path, token string
		code                int
		want                string
	}{
		{"GET", "/api/jobs/nosuchjob", "", 404, "no job nosuchjob"},
		{"GET", "/api/jobs/bad%20id", "", 400, "malformed job id"},
		{"GET", "/api/jobs/" + strings.Repeat("x", 200), "", 400, "malformed job id"},
		{"GET", "/api/vnode-stats?pnode=", "", 400, "invalid pnode name"},
		{"GET", "/api/vnode-stats?pnode=9.moray", "", 404, "no pnode 9.moray"},
		{"GET", "/api/vnode-stats?pnode=1.moray&top=0", "", 400, "top: want a number"},
		{"GET", "/api/nothing", "", 404, "no such endpoint"},
		{"POST", "/api/jobs/r20261201t000000abcd/abort", "", 401, "missing or wrong bearer token"},
		{"POST", "/api/jobs/r20261201t000000abcd/abort", "wrong", 401, "missing or wrong bearer token"},
		{"POST", "/api/jobs/r20261201t000000abcd/explode", "s3cret", 400, "unknown action"},
		{"POST", "/api/jobs/bad%20id/abort", "s3cret", 400, "malformed job id"},
		{"POST", "/api/jobs/nosuchjob/abort", "s3cret", 404, "no job nosuchjob"},
		{"POST", "/api/jobs/r20261201t000000abcd/revert", "s3cret", 409, "has not flipped the ring"},
	} {
		code, body := e.do(t, c.method, c.path, c.token)
		msg, _ := body["error"].(string)
		if code != c.code || !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
			t.Errorf("%s %s: %d %q, want %d %q", c.method, c.path, code, msg, c.code, c.want)
		}
	}
	if after := revision(t, e.cli); after != before {
		t.Errorf("bad requests changed etcd: revision %d -> %d", before, after)
	}
	if n := e.acted.Load(); n != 0 {
		t.Errorf("bad requests took %d actions", n)
	}
	// The right token on a job that allows it starts the action.
	code, body := e.do(t, "POST", "/api/jobs/r20261201t000000abcd/abort", "s3cret")
	if code != 202 || body["state"] != "started" {
		t.Fatalf("abort: %d %v", code, body)
	}
	for deadline := time.Now().Add(5 * time.Second); e.acted.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the action did not run")
		}
	}
}

// Without a token the dashboard only reads: an action is refused outright.
func TestReadOnlyWithoutToken(t *testing.T) {
	e := start(t, "")
	putJob(t, e.cli, orchestrator.Job{ID: "r20261201t000000abcd", State: orchestrator.Running})
	if code, body := e.do(t, "POST", "/api/jobs/r20261201t000000abcd/abort", "anything"); code != 403 || !strings.Contains(body["error"].(string), "read-only") {
		t.Fatalf("action without a configured token: %d %v", code, body)
	}
	if code, body := e.do(t, "GET", "/api/state", ""); code != 200 || body["actions"] != false {
		t.Fatalf("state: %d %v", code, body["actions"])
	}
}

// The event stream starts with the whole state and then pushes each
// change: a new ring version, a job's record, a router's report.
func TestEventsFollowEtcd(t *testing.T) {
	e := start(t, "")
	ctx := context.Background()
	rings := etcd.NewRingStore(e.cli)
	rg, err := ring.New(ring.SHA256, 1_000_000, []string{"1.moray", "2.moray"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rings.Put(ctx, 0, rg, "create"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(e.srv.URL + "/api/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	events := readEvents(resp.Body)
	next := func(name string) json.RawMessage {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatalf("stream ended waiting for %s", name)
				}
				if ev.name == name {
					return ev.data
				}
			case <-deadline:
				t.Fatalf("no %s event", name)
			}
		}
	}
	var st ui.State
	if err := json.Unmarshal(next("state"), &st); err != nil {
		t.Fatal(err)
	}
	// The first state may come before the ring watch delivered version 1.
	var view ui.RingView
	if st.Ring != nil {
		view = *st.Ring
	} else {
		json.Unmarshal(next("ring"), &view)
	}
	if view.Version != 1 || view.Vnodes != 1_000_000 || len(view.Grid) != 2 || len(view.Grid[0]) != 1024 {
		t.Fatalf("ring view: version %d, %d vnodes, %d rows", view.Version, view.Vnodes, len(view.Grid))
	}
	// A split of half of 1.moray: the next ring event draws 3.moray in the
	// first half's spans.
	cur, rv, _ := rings.Current(ctx)
	d, err := cur.TransferDelta([]ring.Transfer{{From: "1.moray", To: "3.moray", Vnodes: "0-499998/2"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rings.PutDelta(ctx, cur, rv, d, "split"); err != nil {
		t.Fatal(err)
	}
	for view.Version != 2 {
		json.Unmarshal(next("ring"), &view)
	}
	if view.Pnodes[2] != "3.moray" || view.Grid[2][0] == 0 || view.Grid[2][1000] != 0 || view.Grid[0][0] != 0 {
		t.Fatalf("after the split: %v, 3.moray span 0 %d, span 1000 %d; 1.moray span 0 %d", view.Pnodes, view.Grid[2][0], view.Grid[2][1000], view.Grid[0][0])
	}
	var hist []ui.VersionSummary
	json.Unmarshal(next("history"), &hist)
	if len(hist) != 2 || hist[0].Version != 2 || len(hist[0].Moved) != 1 || hist[0].Moved[0].Count != 250000 || hist[0].Moved[0].To != "3.moray" {
		t.Fatalf("history: %+v", hist)
	}
	putJob(t, e.cli, orchestrator.Job{ID: "r20261201t000000abcd", State: orchestrator.Running, Phases: []orchestrator.Phase{{Name: "copy", State: orchestrator.Running,
		Progress: &orchestrator.Progress{Done: 5, Total: 10, Unit: "rows"}}}})
	var job ui.JobSummary
	json.Unmarshal(next("job"), &job)
	if job.ID != "r20261201t000000abcd" || len(job.Phases) != 1 || job.Phases[0].Progress.Done != 5 {
		t.Fatalf("job event: %+v", job)
	}
	lease := etcd.NewRouterLease(e.cli, etcd.RouterInfo{Name: "router-1", URL: "http://127.0.0.1:1"}, 10*time.Second)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go lease.Run(rctx, func(error) {})
	for deadline := time.Now().Add(10 * time.Second); ; {
		if err := lease.SetRingVersion(ctx, 2); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("router lease not up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for {
		var rows []ui.RouterRow
		json.Unmarshal(next("routers"), &rows)
		if len(rows) == 1 && rows[0].Name == "router-1" && rows[0].RingVersion == 2 {
			if rows[0].Stats.Up {
				t.Fatalf("a router that does not answer is up: %+v", rows[0].Stats)
			}
			break
		}
	}
}

type sse struct {
	name string
	data json.RawMessage
}

func readEvents(r io.Reader) <-chan sse {
	out := make(chan sse, 64)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		var ev sse
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = json.RawMessage(strings.TrimPrefix(line, "data: "))
			case line == "" && ev.name != "":
				out <- ev
				ev = sse{}
			}
		}
	}()
	return out
}
