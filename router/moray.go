package router

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/reshard/reshard/shard"
	"github.com/reshard/reshard/trigger"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/reshard/reshard/fast"
)

// MorayVersion is the Moray API version the version RPC reports; the npm
// moray client requires at least 2.
const MorayVersion = 2

// maxInFlight bounds the requests one connection may have running; past
// it the router stops reading from that connection until some finish.
const maxInFlight = 256

// ServeMoray serves Moray's Fast RPC protocol on l, as electric-moray does,
// until ctx ends. Both front ends share the router's core: the same ring,
// fence and bounded retry while a vnode moves.
func (r *Router) ServeMoray(ctx context.Context, l net.Listener) error {
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.serveFast(ctx, c)
		}()
	}
}

// fastConn is one client connection: requests run concurrently, replies
// are written whole under a lock so frames never interleave.
type fastConn struct {
	r   *Router
	c   net.Conn
	wmu sync.Mutex
	bw  *bufio.Writer

	mu      sync.Mutex
	pending map[uint32]bool
	// gone is closed when the client's side of the connection ends, which
	// ends its listen RPCs, as Moray's socket-end listener does.
	gone chan struct{}
}

func (r *Router) serveFast(ctx context.Context, c net.Conn) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fc := &fastConn{r: r, c: c, bw: bufio.NewWriterSize(c, 64<<10), pending: map[uint32]bool{}, gone: make(chan struct{})}
	go func() {
		<-ctx.Done()
		c.Close()
	}()
	sem := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(fc.gone) // before the wait: a listen ends only then
	dec := fast.NewDecoder(c)
	for {
		m, err := dec.Decode()
		if err != nil {
			var pe *fast.ProtocolError
			if errors.As(err, &pe) {
				// The stream cannot be resynchronized. Say why, to the
				// request if the header got that far, then hang up.
				r.cfg.Log.Warn("moray: protocol error; closing the connection", "remote", c.RemoteAddr().String(), "err", err)
				fc.send(&fast.Message{Version: fast.Version2, Status: fast.StatusError, MsgID: pe.MsgID,
					D: errorJSON(&MorayError{Name: "FastProtocolError", Message: pe.Error()})}, "")
			}
			return
		}
		switch m.Status {
		case fast.StatusError:
			continue // node-fast ignores requests to abort an RPC
		case fast.StatusEnd:
			fc.fail(m, &MorayError{Name: "FastProtocolError", Message: "unexpected END message from the client"})
			return
		}
		fc.mu.Lock()
		dup := fc.pending[m.MsgID]
		fc.pending[m.MsgID] = true
		fc.mu.Unlock()
		if dup {
			fc.fail(m, &MorayError{Name: "FastProtocolError", Message: fmt.Sprintf("message id %d is already in use by a running request", m.MsgID)})
			return
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer func() {
				fc.mu.Lock()
				delete(fc.pending, m.MsgID)
				fc.mu.Unlock()
				<-sem
				wg.Done()
			}()
			fc.handle(ctx, m)
		}()
	}
}

// send writes frames whole; a failed write closes the connection.
func (fc *fastConn) send(m *fast.Message, rpc string, more ...*fast.Message) {
	buf, err := fast.AppendFrame(nil, m)
	for _, n := range more {
		if err == nil {
			buf, err = fast.AppendFrame(buf, n)
		}
	}
	if err != nil {
		fc.r.cfg.Log.Error("moray: encode reply", "rpc", rpc, "err", err)
		fc.c.Close()
		return
	}
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	_, err = fc.bw.Write(buf)
	if err == nil {
		err = fc.bw.Flush()
	}
	if err != nil {
		fc.c.Close() // the reader sees it and ends the connection
	}
}

// reply builds a message answering req.
func reply(req *fast.Message, status fast.Status, d json.RawMessage) *fast.Message {
	return &fast.Message{Version: req.Version, CRC: req.CRC, Status: status, MsgID: req.MsgID,
		Meta: fast.Meta{Name: req.Meta.Name, UTS: time.Now().UnixMicro()}, D: d}
}

func (fc *fastConn) fail(req *fast.Message, e *MorayError) {
	fc.send(reply(req, fast.StatusError, errorJSON(e)), req.Meta.Name)
}

// stream sends a request's data messages; records are batched into frames
// of up to 100, as node-fast allows several per data message.
type stream struct {
	fc   *fastConn
	req  *fast.Message
	recs []json.RawMessage
	sent int
}

func (s *stream) write(v any) error {
	b, err := marshal(v)
	if err != nil {
		return err
	}
	s.recs = append(s.recs, b)
	if len(s.recs) >= 100 {
		s.flush()
	}
	return nil
}

func (s *stream) flush() {
	if len(s.recs) == 0 {
		return
	}
	s.fc.send(reply(s.req, fast.StatusData, joinArray(s.recs)), s.req.Meta.Name)
	s.sent += len(s.recs)
	s.recs = s.recs[:0]
}

func (s *stream) end() {
	last := reply(s.req, fast.StatusEnd, json.RawMessage("[]"))
	if len(s.recs) > 0 {
		s.fc.send(reply(s.req, fast.StatusData, joinArray(s.recs)), s.req.Meta.Name, last)
		s.sent += len(s.recs)
		s.recs = nil
		return
	}
	s.fc.send(last, s.req.Meta.Name)
}

func joinArray(items []json.RawMessage) json.RawMessage {
	n := 2
	for _, it := range items {
		n += len(it) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i, it := range items {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, it...)
	}
	return append(b, ']')
}

// marshal is json.Marshal without HTML escaping, as JSON.stringify writes.
func marshal(v any) (json.RawMessage, error) {
	if raw, ok := v.(json.RawMessage); ok {
		return raw, nil
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return json.RawMessage(strings.TrimSuffix(b.String(), "\n")), nil
}

// handle runs one RPC. Every request gets an answer: data and end, or one
// error, within RetryFor plus a margin.
func (fc *fastConn) handle(ctx context.Context, req *fast.Message) {
	start := time.Now()
	name := req.Meta.Name
	var cancel context.CancelFunc
	if name == "listen" {
		// listen runs until unlisten or the client goes.
		ctx, cancel = context.WithCancel(ctx)
	} else {
		ctx, cancel = context.WithTimeout(ctx, fc.r.cfg.RetryFor+5*time.Second)
	}
	defer cancel()
	s := &stream{fc: fc, req: req}
	var err error
	h, ok := morayRPCs[name]
	if !ok {
		err = &MorayError{Name: "FastError", Message: fmt.Sprintf("unsupported RPC method: %q", name)}
		name = "unknown"
	} else {
		var args []json.RawMessage
		if json.Unmarshal(req.D, &args) != nil {
			err = &MorayError{Name: "FastError", Message: "RPC request is not well-formed: d must be an array"}
		} else if me := checkMorayArgs(name, args); me != nil {
			err = me
		} else {
			err = h(ctx, fc.r, rpcArgs{rpc: name, a: args}, s)
		}
	}
	code := "ok"
	if err != nil {
		me := toMorayError(err)
		code = me.Name
		if me.Name == "InternalError" {
			fc.r.cfg.Log.Warn("moray request failed", "rpc", name, "err", err.Error())
		}
		fc.fail(req, me)
	} else {
		s.end()
	}
	op := "moray_" + name
	fc.r.metrics.requests.WithLabelValues(op, code).Inc()
	fc.r.metrics.latency.WithLabelValues(op, code).Observe(time.Since(start).Seconds())
}

// MorayError is an error as Moray sends it: a name clients match on
// (ObjectNotFoundError, EtagConflictError, ...) and a message.
type MorayError struct {
	Name    string
	Message string
	Context map[string]any
	Errors  []*MorayError // a MultiError's parts
}

func (e *MorayError) Error() string { return e.Name + ": " + e.Message }

func errorJSON(e *MorayError) json.RawMessage {
	ctx := e.Context
	if ctx == nil {
		ctx = map[string]any{}
	}
	// node-fast writes an error's fields in this order.
	out := struct {
		Name      string            `json:"name"`
		Message   string            `json:"message"`
		Context   map[string]any    `json:"context"`
		Info      map[string]any    `json:"info"`
		ASEErrors []json.RawMessage `json:"ase_errors,omitempty"`
	}{Name: e.Name, Message: e.Message, Context: ctx, Info: map[string]any{}}
	for _, p := range e.Errors {
		out.ASEErrors = append(out.ASEErrors, errorJSON(p))
	}
	b, _ := marshal(out)
	return b
}

func invocation(rpc, format string, a ...any) error {
	return &MorayError{Name: "InvocationError", Message: rpc + ": " + fmt.Sprintf(format, a...)}
}

// toMorayError names an error the way Moray clients expect.
func toMorayError(err error) *MorayError {
	var me *MorayError
	var se ShardErrors
	var ite *shard.IndexTypeError
	var te *trigger.Error
	var bce *shard.BucketConfigError
	de, isDB := shard.AsDBError(err)
	switch {
	case errors.As(err, &se):
		// First: ShardErrors unwraps to its parts, each named here.
		out := &MorayError{Name: "MultiError"}
		for _, e := range se.Unwrap() {
			out.Errors = append(out.Errors, toMorayError(e))
		}
		// verror's MultiError: "first of 1 error", "first of 2 errors".
		plural := "s"
		if len(se) == 1 {
			plural = ""
		}
		out.Message = "first of " + strconv.Itoa(len(se)) + " error" + plural + ": " + out.Errors[0].Message
		return out
	case errors.As(err, &me):
		return me
	case errors.Is(err, ErrStillFenced):
		return &MorayError{Name: "ReadOnlyError", Message: err.Error()}
	case errors.Is(err, ErrBucketsBusy):
		return &MorayError{Name: "ReadOnlyError", Message: err.Error()}
	case errors.Is(err, ErrNoRing):
		return &MorayError{Name: "NoDatabaseError", Message: err.Error()}
	case errors.Is(err, ErrOutcomeUnknown):
		return &MorayError{Name: "InternalError", Message: err.Error()}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return &MorayError{Name: "QueryTimeoutError", Message: "the request timed out"}
	case isDB:
		// As Moray's pgError: a unique violation, "Invalid SQL", or
		// PostgreSQL's error passed through as node-postgres names it.
		return morayDBError(de)
	case errors.As(err, &te):
		// A trigger's error, named as the trigger named it.
		return &MorayError{Name: te.Name, Message: te.Message}
	case errors.As(err, &ite):
		return &MorayError{Name: "InvalidIndexTypeError", Message: ite.Error()}
	case errors.As(err, &bce):
		return &MorayError{Name: "InvalidBucketConfigError", Message: bce.Message}
	case errors.Is(err, shard.ErrBadValue):
		// Past the checks of the arguments: a value nested deeper than
		// Moray's JSON.stringify can go.
		return &MorayError{Name: "InvocationError", Message: "value is not an object Moray can store: " + err.Error()}
	case errors.Is(err, io.EOF):
		return &MorayError{Name: "NoDatabaseError", Message: err.Error()}
	}
	return &MorayError{Name: "InternalError", Message: err.Error()}
}

// uniqueError is Moray's UniqueAttributeError for a unique violation.
func uniqueError(de *shard.DBError) *MorayError {
	if column, value, ok := de.DuplicateKey(); ok {
		return &MorayError{Name: "UniqueAttributeError", Message: fmt.Sprintf("%q is a unique attribute; value %q already exists", column, value)}
	}
	return &MorayError{Name: "UniqueAttributeError", Message: fmt.Sprintf("a unique attribute's value already exists (%s)", de.Constraint)}
}

// rpcArgs reads an RPC's positional arguments, with errors that say which
// argument is wrong and why.
type rpcArgs struct {
	rpc string
	a   []json.RawMessage
}

func (a rpcArgs) has(i int) bool {
	return i < len(a.a) && string(a.a[i]) != "null"
}

func (a rpcArgs) str(i int, what string, nonEmpty bool) (string, error) {
	var s string
	if i >= len(a.a) {
		return "", invocation(a.rpc, "argument %d (%s) is missing: expected a string", i+1, what)
	}
	if err := json.Unmarshal(a.a[i], &s); err != nil || (len(a.a[i]) > 0 && a.a[i][0] != '"') {
		return "", invocation(a.rpc, "argument %d (%s) must be a string, not %s", i+1, what, jsonKind(a.a[i]))
	}
	if nonEmpty && s == "" {
		return "", invocation(a.rpc, "argument %d (%s) must not be empty", i+1, what)
	}
	return s, nil
}

// obj decodes an object argument; a missing optional one decodes as {}.
func (a rpcArgs) obj(i int, what string, optional bool, v any) error {
	if !a.has(i) {
		if optional {
			return nil
		}
		return invocation(a.rpc, "argument %d (%s) is missing: expected an object", i+1, what)
	}
	if k := jsonKind(a.a[i]); k != "an object" {
		return invocation(a.rpc, "argument %d (%s) must be an object, not %s", i+1, what, k)
	}
	if err := json.Unmarshal(a.a[i], v); err != nil {
		return invocation(a.rpc, "argument %d (%s): %s", i+1, what, describeJSONError(err))
	}
	return nil
}

func jsonKind(b json.RawMessage) string {
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "nothing"
	}
	switch s[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

func describeJSONError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %q must be %s, not a %s", te.Field, te.Type.String(), te.Value)
	}
	return err.Error()
}
