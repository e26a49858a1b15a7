// Package ui is the operator's dashboard: one web page, served from the
// binary, that shows the ring, the shards, the routers and every job, kept
// live by etcd watches pushed to the page as server-sent events. It reads
// only, unless a request carries the bearer token; then it can revert,
// complete or abort a job.
package ui

import (
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/reshard/reshard"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/orchestrator"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/shard"
	clientv3 "go.etcd.io/etcd/client/v3"
)

//go:embed assets
var assets embed.FS

// Actions a request with the token may take on a job.
var actions = []string{"revert", "complete", "abort"}

// Config is what the dashboard needs.
type Config struct {
	Etcd *clientv3.Client
	// Token, when set, lets a request that carries it as a bearer token
	// take actions; without one the dashboard only reads.
	Token string
	// Act carries out an action on a job (the orchestrator's Revert,
	// Complete or Abort); it runs in the background, as long as it takes.
	Act func(ctx context.Context, action, job string) error
	// Sample is how often the peers and the routers' metrics are read.
	Sample time.Duration
	Log    *slog.Logger
}

// Server serves the dashboard.
type Server struct {
	cfg Config
	hub *hub
	ctx context.Context // the server's life, for actions that outlive their request
}

// New returns a dashboard; Run follows etcd.
func New(cfg Config) *Server {
	if cfg.Sample <= 0 {
		cfg.Sample = 2 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Server{cfg: cfg, hub: newHub(cfg), ctx: context.Background()}
}

// Run follows etcd until ctx ends.
func (s *Server) Run(ctx context.Context) {
	s.ctx = ctx
	s.hub.run(ctx)
}

// jobID is what a job id looks like: orchestrator ids are
// r20261130t101500ab12; this admits any safe etcd key segment.
var jobID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Handler is the dashboard's HTTP interface:
//
//	GET  /                          the page
//	GET  /api/state                 everything the page shows, as JSON
//	GET  /api/events                the same, then each change (server-sent events)
//	GET  /api/jobs/JOB              one job's whole record
//	GET  /api/vnode-stats?pnode=P   the pnode's vnodes by rows, most first (&top=N, 20)
//	POST /api/jobs/JOB/ACTION       revert, complete or abort; needs the bearer token
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets")
	files := http.FileServerFS(static)
	mux.Handle("GET /{$}", files)
	mux.Handle("GET /{file}", files)
	mux.HandleFunc("GET /api/state", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.hub.state()) })
	mux.HandleFunc("GET /api/events", s.events)
	mux.HandleFunc("GET /api/jobs/{id}", s.job)
	mux.HandleFunc("GET /api/vnode-stats", s.vnodeStats)
	mux.HandleFunc("POST /api/jobs/{id}/{action}", s.action)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		apiError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// events streams the state: first all of it ("state"), then each section
// as it changes, until the page goes away.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		apiError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	ch, done := s.hub.subscribe()
	defer done()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	send := func(name string, data []byte) bool {
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data); err != nil {
			return false
		}
		fl.Flush()
		return true
	}
	state, _ := json.Marshal(s.hub.state())
	if !send("state", state) {
		return
	}
	keep := time.NewTicker(15 * time.Second)
	defer keep.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-keep.C:
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			fl.Flush()
		case ev := <-ch:
			if ev.Name == "resync" {
				ev.Data, _ = json.Marshal(s.hub.state())
				ev.Name = "state"
			}
			if !send(ev.Name, ev.Data) {
				return
			}
		}
	}
}

func (s *Server) job(w http.ResponseWriter, r *http.Request) {
	if j := s.readJob(w, r); j != nil {
		writeJSON(w, http.StatusOK, j)
	}
}

// readJob reads the request's job, or answers why it cannot and returns
// nil.
func (s *Server) readJob(w http.ResponseWriter, r *http.Request) *orchestrator.Job {
	id := r.PathValue("id")
	if !jobID.MatchString(id) {
		apiError(w, http.StatusBadRequest, fmt.Sprintf("malformed job id %q", shorten(id)))
		return nil
	}
	var j orchestrator.Job
	if err := etcd.NewJobs(s.cfg.Etcd).Get(r.Context(), id, &j); err != nil {
		if errors.Is(err, reshard.ErrNotFound) {
			apiError(w, http.StatusNotFound, fmt.Sprintf("no job %s", id))
		} else {
			apiError(w, http.StatusBadGateway, err.Error())
		}
		return nil
	}
	return &j
}

func (s *Server) vnodeStats(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("pnode")
	if err := reshard.ValidatePnodeName(name); err != nil {
		apiError(w, http.StatusBadRequest, err.Error())
		return
	}
	top, err := parseCount(r.URL.Query().Get("top"), 20, 10000)
	if err != nil {
		apiError(w, http.StatusBadRequest, "top: "+err.Error())
		return
	}
	p, err := etcd.NewRegistry(s.cfg.Etcd).Pnode(r.Context(), name)
	if errors.Is(err, reshard.ErrNotFound) {
		apiError(w, http.StatusNotFound, fmt.Sprintf("no pnode %s", name))
		return
	}
	if err != nil {
		apiError(w, http.StatusBadGateway, err.Error())
		return
	}
	primary, err := p.Primary()
	if err != nil {
		apiError(w, http.StatusConflict, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	conn, err := postgres.Connect(ctx, primary.DSN)
	if err != nil {
		apiError(w, http.StatusBadGateway, fmt.Sprintf("%s: cannot reach its primary %s", name, peerAddr(primary.DSN)))
		return
	}
	defer conn.Close(context.Background())
	stats, err := shard.VnodeStats(ctx, conn)
	if err != nil {
		apiError(w, http.StatusBadGateway, fmt.Sprintf("%s: %v", name, err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"pnode": name, "vnodes": len(stats), "top": stats[:min(top, len(stats))]})
}

// action takes revert, complete or abort on a job for a request that holds
// the token. It answers 202 once the action has started; the job's own
// record shows how it goes.
func (s *Server) action(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Token == "" || s.cfg.Act == nil {
		apiError(w, http.StatusForbidden, "this dashboard is read-only: start it with --token-file to take actions")
		return
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.Token)) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="reshard"`)
		apiError(w, http.StatusUnauthorized, "missing or wrong bearer token")
		return
	}
	id, action := r.PathValue("id"), r.PathValue("action")
	if !jobID.MatchString(id) {
		apiError(w, http.StatusBadRequest, fmt.Sprintf("malformed job id %q", shorten(id)))
		return
	}
	known := false
	for _, a := range actions {
		known = known || a == action
	}
	if !known {
		apiError(w, http.StatusBadRequest, fmt.Sprintf("unknown action %q: want %s", shorten(action), strings.Join(actions, ", ")))
		return
	}
	j := s.readJob(w, r)
	if j == nil {
		return
	}
	if why := refuse(j, action); why != "" {
		apiError(w, http.StatusConflict, why)
		return
	}
	s.cfg.Log.Info("dashboard: action", "job", id, "action", action)
	go func() {
		if err := s.cfg.Act(s.ctx, action, id); err != nil {
			s.cfg.Log.Warn("dashboard: action failed", "job", id, "action", action, "err", err)
			s.hub.publish("action", map[string]string{"job": id, "action": action, "error": err.Error()})
			return
		}
		s.hub.publish("action", map[string]string{"job": id, "action": action, "done": "yes"})
	}()
	writeJSON(w, http.StatusAccepted, map[string]string{"job": id, "action": action, "state": "started"})
}

// refuse says why a job cannot take an action now, as the orchestrator
// would, so that a refused request changes nothing and says so at once.
func refuse(j *orchestrator.Job, action string) string {
	switch action {
	case "abort":
		switch {
		case j.State == orchestrator.Done || j.State == orchestrator.Aborted || j.State == orchestrator.Reverted:
			return fmt.Sprintf("job %s is already %s", j.ID, j.State)
		case j.FlipDone():
			return fmt.Sprintf("job %s has flipped the ring (version %d): revert goes back, complete finishes it", j.ID, j.RingVersionAfter)
		}
	case "revert", "complete":
		if !j.FlipDone() {
			return fmt.Sprintf("job %s has not flipped the ring yet: only abort applies", j.ID)
		}
		if j.State == orchestrator.Done || j.State == orchestrator.Reverted || j.State == orchestrator.Aborted {
			return fmt.Sprintf("job %s is already %s", j.ID, j.State)
		}
	}
	return ""
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func apiError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// shorten keeps a bad value in an error to one short line.
func shorten(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' {
			return '?'
		}
		return r
	}, s)
	if len(s) > 64 {
		return s[:61] + "..."
	}
	return s
}
