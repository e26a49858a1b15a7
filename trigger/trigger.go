// Package trigger runs Moray's bucket triggers: the JavaScript functions a
// bucket's config lists under "pre" and "post", which Moray 2.6.1 calls
// inside a write's transaction, pre before a put writes its row (it may
// change the key and the value) and post after a put or a delete. Manta's
// "manta" bucket has one: libmanta's recordDeleteLog, which logs an
// overwritten or deleted object for garbage collection.
//
// A trigger runs as Moray runs it (lib/objects/common.js evalTrigger):
// evaluated from its source text as "fn = SOURCE" in a context of its own,
// which has the language's builtins, Error, and a require that gives only
// "crc" and "microtime"; it is called as fn(req, cb) and the chain goes on
// when it calls cb, or stops at the first error it passes. req has the
// fields Moray gives (bucket, key, value, schema, headers, update, log, pg,
// and for post id), and req.pg.query(sql, args) runs on the write's own
// transaction, answering with node-postgres's events: 'row', then 'end',
// or 'error'. A trigger reaches nothing else: no filesystem, network,
// timers or process.
//
// Moray hangs a request whose trigger never calls back, and dies of a
// trigger that throws. Here both fail the write instead: a throw with the
// error thrown; a trigger that returned without calling back and has no
// query pending (so nothing can ever call it back) at once; and a chain
// still running after Timeout (10 s unless RESHARD_TRIGGER_TIMEOUT, a Go
// duration, says otherwise) is interrupted. Both of the last answer
// QueryTimeoutError.
package trigger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dop251/goja"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Error is an error a trigger chain fails a write with, named as Moray
// sends it to the client: the name and message of the error the trigger
// passed to its callback or threw. Err is the PostgreSQL error of a
// trigger's query, when the trigger passed that on.
type Error struct {
	Name, Message string
	Err           error
}

func (e *Error) Error() string { return e.Name + ": " + e.Message }
func (e *Error) Unwrap() error { return e.Err }

var timeout atomic.Int64

func init() {
	d := 10 * time.Second
	if v, err := time.ParseDuration(os.Getenv("RESHARD_TRIGGER_TIMEOUT")); err == nil && v > 0 {
		d = v
	}
	timeout.Store(int64(d))
}

// Timeout is how long a trigger chain may run, its queries included.
func Timeout() time.Duration { return time.Duration(timeout.Load()) }

// SetTimeout sets Timeout and returns the one it replaces.
func SetTimeout(d time.Duration) time.Duration { return time.Duration(timeout.Swap(int64(d))) }

// Set is a bucket's compiled triggers. It is safe for concurrent use: each
// run takes a runtime of its own from the set's pool.
type Set struct {
	pre, post []*goja.Program
	pool      sync.Pool // of *machine
}

// Empty reports whether the set has no trigger at all.
func (s *Set) Empty() bool { return s == nil || len(s.pre)+len(s.post) == 0 }

// HasPre reports whether the set has pre triggers.
func (s *Set) HasPre() bool { return s != nil && len(s.pre) > 0 }

// HasPost reports whether the set has post triggers.
func (s *Set) HasPost() bool { return s != nil && len(s.post) > 0 }

// sets caches compiled sets by their config texts, so a bucket's triggers
// are compiled once, not per request.
var sets struct {
	sync.Mutex
	m map[[2]string]*Set
}

// maxSets bounds the cache; past it the cache starts over.
const maxSets = 1024

// Load returns the compiled triggers of a buckets_config row's pre and
// post columns (JSON arrays of function sources, as Moray stores them).
func Load(pre, post string) (*Set, error) {
	if (pre == "" || pre == "[]") && (post == "" || post == "[]") {
		return nil, nil
	}
	k := [2]string{pre, post}
	sets.Lock()
	s := sets.m[k]
	sets.Unlock()
	if s != nil {
		return s, nil
	}
	s = &Set{}
	for i, col := range []string{pre, post} {
		var srcs []string
		if col != "" {
			if err := json.Unmarshal([]byte(col), &srcs); err != nil {
				return nil, fmt.Errorf("trigger sources %s: %w", col, err)
			}
		}
		for _, src := range srcs {
			p, err := goja.Compile("moray-trigger", "fn = "+src, false)
			if err != nil {
				return nil, fmt.Errorf("trigger %q: %w", src, err)
			}
			if i == 0 {
				s.pre = append(s.pre, p)
			} else {
				s.post = append(s.post, p)
			}
		}
	}
	// Evaluate once now, so a set that cannot run is refused at load.
	m, err := s.newMachine()
	if err != nil {
		return nil, err
	}
	s.pool.Put(m)
	sets.Lock()
	if sets.m == nil || len(sets.m) >= maxSets {
		sets.m = map[[2]string]*Set{}
	}
	sets.m[k] = s
	sets.Unlock()
	return s, nil
}

// Validate checks createBucket's or updateBucket's pre and post as Moray's
// validateBucket does, and returns the texts Moray stores for them: each
// element is made a string, evaluated as "fn = TEXT", and must give a
// function, whose source text (Function.prototype.toString) is stored.
func Validate(pre, post []json.RawMessage) (preSrc, postSrc []string, err error) {
	rt := newRuntime()
	timer := time.AfterFunc(Timeout(), func() { rt.Interrupt("trigger evaluation timed out") })
	defer timer.Stop()
	str, _ := goja.AssertFunction(rt.Get("String"))
	eval := func(list []json.RawMessage) ([]goja.Value, error) {
		var out []goja.Value
		for _, raw := range list {
			v, err := rt.RunString("(" + string(raw) + ")")
			if err != nil {
				return nil, err
			}
			text, err := str(goja.Undefined(), v)
			if err != nil {
				return nil, err
			}
			fn, err := rt.RunScript("moray-trigger", "fn = "+text.String())
			if err != nil {
				return nil, err
			}
			out = append(out, fn)
		}
		return out, nil
	}
	// Moray evaluates post before pre, and then checks post before pre.
	postFns, err := eval(post)
	if err == nil {
		var preFns []goja.Value
		if preFns, err = eval(pre); err == nil {
			if postSrc, err = sources("post", postFns); err == nil {
				preSrc, err = sources("pre", preFns)
			}
			return preSrc, postSrc, err
		}
	}
	var ie *goja.InterruptedError
	if errors.As(err, &ie) {
		return nil, nil, &Error{Name: "QueryTimeoutError", Message: "evaluating a trigger took longer than " + Timeout().String()}
	}
	return nil, nil, &Error{Name: "NotFunctionError", Message: "trigger not function must be [Function]"}
}

func sources(what string, fns []goja.Value) ([]string, error) {
	out := make([]string, 0, len(fns))
	for _, fn := range fns {
		if _, ok := goja.AssertFunction(fn); !ok {
			return nil, &Error{Name: "NotFunctionError", Message: what + " must be [Function]"}
		}
		out = append(out, fn.String())
	}
	return out, nil
}

// newRuntime is a context as Moray's vm.runInNewContext makes one: the
// builtins, Error, and require.
func newRuntime() *goja.Runtime {
	rt := goja.New()
	rt.Set("require", requireFunc(rt))
	return rt
}

// Request is what a chain's triggers see as req.
type Request struct {
	Bucket string
	Key    string
	// Value is the value's JSON text, as electric-moray hands it to Moray
	// (with its vnode); "" for a delete, whose triggers see no value. A
	// pre chain leaves the value its triggers made here.
	Value string
	// Schema is the bucket's index object, JSON (req.schema).
	Schema string
	// Headers is the write's options.headers, JSON; none is {}. Moray
	// gives pre triggers {} whatever the options say.
	Headers json.RawMessage
	// Update is whether the put replaces an object (always false on a
	// delete, as in Moray).
	Update bool
	// ID is, for a put's post chain, the _id an insert gave the row, which
	// Moray sets as value._id (nil on an update, where req.id is whatever
	// _id the value has); for a delete, the deleted row's _id.
	ID *int64
	// TxnSnap is a guaranteeOrder put's _txn_snap, which Moray sets on
	// the value after storing it, so post triggers see it.
	TxnSnap *int64
}

// RunPre runs the pre chain of a put, on tx, and leaves the key and value
// the triggers made in r.
func (s *Set) RunPre(ctx context.Context, tx pgx.Tx, r *Request) error {
	if !s.HasPre() {
		return nil
	}
	return s.run(ctx, tx, r, false)
}

// RunPost runs the post chain of a put or a delete, on tx.
func (s *Set) RunPost(ctx context.Context, tx pgx.Tx, r *Request) error {
	if !s.HasPost() {
		return nil
	}
	return s.run(ctx, tx, r, true)
}

func (s *Set) run(ctx context.Context, tx pgx.Tx, r *Request, post bool) error {
	m, _ := s.pool.Get().(*machine)
	if m == nil {
		var err error
		if m, err = s.newMachine(); err != nil {
			return err
		}
	}
	d := Timeout()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	timer := time.AfterFunc(d, func() { m.rt.Interrupt("timeout") })
	err := m.run(ctx, tx, r, post)
	if !timer.Stop() {
		// Interrupted, or about to be: this runtime's state is unknown.
		return err
	}
	m.rt.ClearInterrupt()
	s.pool.Put(m)
	return err
}

func pgError(err error) *pgconn.PgError {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe
	}
	return nil
}
