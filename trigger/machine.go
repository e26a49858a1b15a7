package trigger

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/dop251/goja"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// support is the JavaScript the runtime needs besides the triggers: the
// event emitter pg.query answers with (node's EventEmitter interface, as
// node-postgres's query object and Moray's wrapper are emitters), a bunyan
// logger that logs nothing, and node-postgres's conversion of query
// arguments to parameter texts (prepareValue). It is an expression, so it
// leaves no global a trigger could see.
const support = `(function () {
	function Emitter() { this._events = {}; }
	Emitter.prototype.on = function (name, fn) {
		if (typeof (fn) !== 'function') {
			throw new TypeError('The "listener" argument must be of type Function');
		}
		(this._events[name] = this._events[name] || []).push(fn);
		return this;
	};
	Emitter.prototype.addListener = Emitter.prototype.on;
	Emitter.prototype.once = function (name, fn) {
		var self = this;
		function wrapped() {
			self.removeListener(name, wrapped);
			return fn.apply(this, arguments);
		}
		wrapped.listener = fn;
		return this.on(name, wrapped);
	};
	Emitter.prototype.removeListener = function (name, fn) {
		var list = this._events[name] || [];
		for (var i = list.length - 1; i >= 0; i--) {
			if (list[i] === fn || list[i].listener === fn) {
				list.splice(i, 1);
				break;
			}
		}
		return this;
	};
	Emitter.prototype.off = Emitter.prototype.removeListener;
	Emitter.prototype.removeAllListeners = function (name) {
		if (name === undefined) {
			this._events = {};
		} else {
			delete this._events[name];
		}
		return this;
	};
	Emitter.prototype.listeners = function (name) {
		return (this._events[name] || []).map(function (f) { return f.listener || f; });
	};
	Emitter.prototype.listenerCount = function (name) {
		return (this._events[name] || []).length;
	};
	Emitter.prototype.emit = function (name) {
		var list = (this._events[name] || []).slice();
		var args = Array.prototype.slice.call(arguments, 1);
		if (name === 'error' && list.length === 0) {
			throw args[0]; // as node's EventEmitter does
		}
		for (var i = 0; i < list.length; i++) {
			list[i].apply(this, args);
		}
		return list.length > 0;
	};

	var log = {};
	['trace', 'debug', 'info', 'warn', 'error', 'fatal'].forEach(function (level) {
		log[level] = function () { return arguments.length === 0 ? false : undefined; };
	});
	log.child = function () { return log; };
	log.level = function () { return 30; };

	function pad(n, w) {
		var s = String(n);
		while (s.length < w) {
			s = '0' + s;
		}
		return s;
	}
	function dateText(d) {
		var off = -d.getTimezoneOffset();
		var sign = off < 0 ? '-' : '+';
		off = Math.abs(off);
		return pad(d.getFullYear(), 4) + '-' + pad(d.getMonth() + 1, 2) + '-' + pad(d.getDate(), 2) +
			'T' + pad(d.getHours(), 2) + ':' + pad(d.getMinutes(), 2) + ':' + pad(d.getSeconds(), 2) +
			'.' + pad(d.getMilliseconds(), 3) + sign + pad(Math.floor(off / 60), 2) + ':' + pad(off % 60, 2);
	}
	function arrayText(a) {
		return '{' + a.map(function (v) {
			if (v === null || v === undefined) {
				return 'NULL';
			}
			if (Array.isArray(v)) {
				return arrayText(v);
			}
			return '"' + String(param(v)).replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"';
		}).join(',') + '}';
	}
	function param(v) {
		if (v instanceof Date) {
			return dateText(v);
		}
		if (Array.isArray(v)) {
			return arrayText(v);
		}
		if (v === null || v === undefined) {
			return null;
		}
		if (typeof (v) === 'object') {
			if (typeof (v.toPostgres) === 'function') {
				return param(v.toPostgres(param));
			}
			return JSON.stringify(v);
		}
		return v.toString();
	}
	function params(args) {
		return (args || []).map(param);
	}
	return ({Emitter: Emitter, log: log, params: params});
})()`

var supportProgram = goja.MustCompile("moray-trigger-support", support, false)

// machine is one runtime with a set's triggers evaluated in it. Only one
// goroutine uses it at a time.
type machine struct {
	rt        *goja.Runtime
	pre, post []goja.Value // the trigger functions
	emitter   goja.Value   // the Emitter constructor
	log       goja.Value
	params    goja.Callable
	parse     goja.Callable // JSON.parse
	stringify goja.Callable // JSON.stringify
	date      goja.Value    // the Date constructor
}

func (s *Set) newMachine() (*machine, error) {
	m := &machine{rt: newRuntime()}
	sup, err := m.rt.RunProgram(supportProgram)
	if err != nil {
		return nil, err
	}
	o := sup.ToObject(m.rt)
	m.emitter, m.log = o.Get("Emitter"), o.Get("log")
	m.params, _ = goja.AssertFunction(o.Get("params"))
	j := m.rt.Get("JSON").ToObject(m.rt)
	m.parse, _ = goja.AssertFunction(j.Get("parse"))
	m.stringify, _ = goja.AssertFunction(j.Get("stringify"))
	m.date = m.rt.Get("Date")
	timer := time.AfterFunc(Timeout(), func() { m.rt.Interrupt("trigger evaluation timed out") })
	defer timer.Stop()
	for _, list := range []struct {
		progs []*goja.Program
		fns   *[]goja.Value
	}{{s.pre, &m.pre}, {s.post, &m.post}} {
		for _, p := range list.progs {
			fn, err := m.rt.RunProgram(p)
			if err != nil {
				return nil, fmt.Errorf("trigger: %w", err)
			}
			if _, ok := goja.AssertFunction(fn); !ok {
				return nil, fmt.Errorf("trigger is not a function: %s", fn)
			}
			*list.fns = append(*list.fns, fn)
		}
	}
	return m, nil
}

// chain is one run of a chain: the functions still to call, and the jobs
// (queries) waiting to run, in order, as node's event loop would run them.
type chain struct {
	m    *machine
	ctx  context.Context
	tx   pgx.Tx
	jobs []func() error
	done bool
	err  error
	// pgErrors are the PostgreSQL errors behind the error objects that
	// queries emitted, so that one passed on keeps its code.
	pgErrors map[*goja.Object]*pgconn.PgError
}

func (m *machine) run(ctx context.Context, tx pgx.Tx, r *Request, post bool) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("trigger: %v", p)
		}
	}()
	c := &chain{m: m, ctx: ctx, tx: tx, pgErrors: map[*goja.Object]*pgconn.PgError{}}
	cookie, err := c.cookie(r, post)
	if err != nil {
		return err
	}
	fns := m.pre
	if post {
		fns = m.post
	}
	var call func(i int)
	call = func(i int) {
		called := false
		cb := func(fc goja.FunctionCall) goja.Value {
			if called || c.done {
				return goja.Undefined() // once(), as Moray wraps it
			}
			called = true
			if e := fc.Argument(0); e.ToBoolean() {
				c.finish(c.errorOf(e))
			} else if i+1 < len(fns) {
				c.jobs = append(c.jobs, func() error { call(i + 1); return nil })
			} else {
				c.finish(nil)
			}
			return goja.Undefined()
		}
		holder := m.rt.NewObject()
		holder.Set("run", fns[i])
		run, _ := goja.AssertFunction(fns[i])
		if _, err := run(holder, cookie, m.rt.ToValue(cb)); err != nil {
			c.finish(c.thrown(err))
		}
	}
	call(0)
	for !c.done {
		if err := ctx.Err(); err != nil {
			c.finish(timeoutError())
			break
		}
		if len(c.jobs) == 0 {
			c.finish(&Error{Name: "QueryTimeoutError", Message: "a trigger of bucket " + r.Bucket +
				" returned without calling back and has no query pending, so it can never finish"})
			break
		}
		job := c.jobs[0]
		c.jobs = c.jobs[1:]
		if err := job(); err != nil {
			c.finish(c.thrown(err))
		}
	}
	if c.err != nil {
		return c.err
	}
	if !post {
		return c.readBack(cookie, r)
	}
	return nil
}

func timeoutError() error {
	return &Error{Name: "QueryTimeoutError", Message: "triggers did not finish within " + Timeout().String()}
}

func (c *chain) finish(err error) {
	if !c.done {
		c.done, c.err = true, err
	}
}

// cookie builds req as Moray's runPreChain and runPostChain do, field for
// field and in their order.
func (c *chain) cookie(r *Request, post bool) (*goja.Object, error) {
	rt := c.m.rt
	o := rt.NewObject()
	var value goja.Value = goja.Undefined()
	if r.Value != "" {
		v, err := c.m.parse(goja.Undefined(), rt.ToValue(r.Value))
		if err != nil {
			return nil, err
		}
		value = v
		if post {
			vo := v.ToObject(rt)
			if r.TxnSnap != nil {
				vo.Set("_txn_snap", *r.TxnSnap)
			}
			if r.ID != nil {
				vo.Set("_id", *r.ID)
			}
		}
	}
	schema, err := c.m.parse(goja.Undefined(), rt.ToValue(orEmpty(r.Schema)))
	if err != nil {
		return nil, err
	}
	var headers goja.Value = rt.NewObject()
	if !post {
		// Moray's pre chain reads req.headers, which no RPC sets.
	} else if h := strings.TrimSpace(string(r.Headers)); h != "" && h != "null" {
		if headers, err = c.m.parse(goja.Undefined(), rt.ToValue(h)); err != nil {
			return nil, err
		}
	}
	o.Set("bucket", r.Bucket)
	if post {
		switch {
		case r.Value != "":
			id := value.ToObject(rt).Get("_id")
			if id == nil {
				id = goja.Undefined()
			}
			o.Set("id", id)
		case r.ID != nil:
			o.Set("id", *r.ID)
		default:
			o.Set("id", -1)
		}
	}
	o.Set("key", r.Key)
	o.Set("log", c.m.log)
	pg := rt.NewObject()
	pg.Set("query", c.query)
	o.Set("pg", pg)
	o.Set("schema", schema)
	o.Set("value", value)
	o.Set("headers", headers)
	o.Set("update", r.Update)
	return o, nil
}

func orEmpty(s string) string {
	if s == "" {
		return "{}"
	}
	return s
}

// readBack takes the key and value a pre chain left on req, as Moray does
// (req.key = cookie.key; req.value = cookie.value).
func (c *chain) readBack(cookie *goja.Object, r *Request) error {
	k := cookie.Get("key")
	if !isString(k) {
		return &Error{Name: "InvocationError", Message: "a pre trigger set req.key to a non-string: " + k.String()}
	}
	v := cookie.Get("value")
	if o, ok := v.(*goja.Object); !ok || o.ClassName() == "Function" {
		return &Error{Name: "InvocationError", Message: "a pre trigger set req.value to a non-object"}
	}
	text, err := c.m.stringify(goja.Undefined(), v)
	if err != nil {
		return c.thrown(err)
	}
	r.Key, r.Value = k.String(), text.String()
	return nil
}

// errorOf is the error a trigger passed to its callback.
func (c *chain) errorOf(v goja.Value) error {
	o, ok := v.(*goja.Object)
	if !ok {
		return &Error{Name: "Error", Message: v.String()}
	}
	e := &Error{Name: "Error", Message: ""}
	if n := o.Get("name"); n != nil && !goja.IsUndefined(n) {
		e.Name = n.String()
	}
	if msg := o.Get("message"); msg != nil && !goja.IsUndefined(msg) {
		e.Message = msg.String()
	}
	if pe := c.pgErrors[o]; pe != nil {
		e.Err = pe
	}
	return e
}

// thrown is the error for an exception out of a trigger.
func (c *chain) thrown(err error) error {
	var ie *goja.InterruptedError
	var ex *goja.Exception
	switch {
	case errors.As(err, &ie):
		return timeoutError()
	case errors.As(err, &ex):
		return c.errorOf(ex.Value())
	}
	var te *Error
	if errors.As(err, &te) {
		return te
	}
	return &Error{Name: "InternalError", Message: err.Error()}
}

// query is req.pg.query(sql, args): it answers at once with an emitter,
// and runs the query later, in turn, on the write's transaction.
func (c *chain) query(fc goja.FunctionCall) goja.Value {
	rt := c.m.rt
	sqlv := fc.Argument(0)
	if !isString(sqlv) {
		panic(rt.NewTypeError("sql (string) is required"))
	}
	sql := sqlv.String()
	var params []*string
	if args := fc.Argument(1); !goja.IsUndefined(args) && !goja.IsNull(args) {
		if o, ok := args.(*goja.Object); !ok || o.ClassName() != "Array" {
			panic(rt.NewTypeError("args ([object]) is required"))
		}
		texts, err := c.m.params(goja.Undefined(), args)
		if err != nil {
			panic(err)
		}
		for _, t := range texts.Export().([]any) {
			if t == nil {
				params = append(params, nil)
			} else {
				s := fmt.Sprint(t)
				params = append(params, &s)
			}
		}
	}
	em, err := rt.New(c.m.emitter)
	if err != nil {
		panic(err)
	}
	c.jobs = append(c.jobs, func() error { return c.runQuery(em, sql, params) })
	return em
}

// runQuery runs one query and emits its answer as node-postgres does:
// 'row' for each row, then 'end' with the result, or 'error'. A query
// with arguments goes by the extended protocol, one without by the simple
// one (which takes several statements), as node-postgres sends them.
func (c *chain) runQuery(em *goja.Object, sql string, params []*string) error {
	emit, _ := goja.AssertFunction(em.Get("emit"))
	pc := c.tx.Conn().PgConn()
	var results []*pgconn.Result
	var err error
	if params != nil {
		vals := make([][]byte, len(params))
		for i, p := range params {
			if p != nil {
				vals[i] = []byte(*p)
			}
		}
		res := pc.ExecParams(c.ctx, sql, vals, nil, nil, nil).Read()
		results, err = []*pgconn.Result{res}, res.Err
	} else {
		results, err = pc.Exec(c.ctx, sql).ReadAll()
	}
	if err != nil {
		if c.ctx.Err() != nil {
			return timeoutError()
		}
		_, err := emit(em, c.m.rt.ToValue("error"), c.pgErrorObject(err))
		return err
	}
	out := c.m.rt.NewObject()
	var all []any
	for _, res := range results {
		for _, row := range res.Rows {
			ro := c.m.rt.NewObject()
			for i, f := range res.FieldDescriptions {
				v, err := c.decode(f.DataTypeOID, row[i])
				if err != nil {
					return err
				}
				ro.Set(f.Name, v)
			}
			all = append(all, ro)
			if _, err := emit(em, c.m.rt.ToValue("row"), ro); err != nil {
				return err
			}
		}
	}
	last := results[len(results)-1]
	cmd := strings.Fields(last.CommandTag.String())
	if len(cmd) > 0 {
		out.Set("command", cmd[0])
	}
	out.Set("rowCount", last.CommandTag.RowsAffected())
	out.Set("rows", c.m.rt.NewArray(all...))
	_, err = emit(em, c.m.rt.ToValue("end"), out)
	return err
}

// pgErrorObject is node-postgres's error for a failed query: an Error
// named "error" with PostgreSQL's message and fields.
func (c *chain) pgErrorObject(err error) goja.Value {
	pe := pgError(err)
	if pe == nil {
		return newError(c.m.rt, "Error", err.Error())
	}
	o := newError(c.m.rt, "error", pe.Message)
	o.Set("severity", pe.Severity)
	o.Set("code", pe.Code)
	if pe.Detail != "" {
		o.Set("detail", pe.Detail)
	}
	if pe.Hint != "" {
		o.Set("hint", pe.Hint)
	}
	if pe.TableName != "" {
		o.Set("table", pe.TableName)
	}
	if pe.ColumnName != "" {
		o.Set("column", pe.ColumnName)
	}
	if pe.ConstraintName != "" {
		o.Set("constraint", pe.ConstraintName)
	}
	c.pgErrors[o] = pe
	return o
}

// Type OIDs that node-postgres (pg-types, with Moray's pg-parse-float)
// parses from text; any other type is a string.
const (
	oidBool        = 16
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidOID         = 26
	oidJSON        = 114
	oidFloat4      = 700
	oidFloat8      = 701
	oidDate        = 1082
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidNumeric     = 1700
	oidJSONB       = 3802
)

var typeMap = pgtype.NewMap()

func (c *chain) decode(oid uint32, b []byte) (goja.Value, error) {
	rt := c.m.rt
	if b == nil {
		return goja.Null(), nil
	}
	s := string(b)
	switch oid {
	case oidBool:
		return rt.ToValue(s == "t" || s == "true"), nil
	case oidInt2, oidInt4, oidOID:
		n, _ := strconv.ParseInt(s, 10, 64)
		return rt.ToValue(n), nil
	case oidFloat4, oidFloat8, oidNumeric:
		return rt.ToValue(parseFloat(s)), nil
	case oidJSON, oidJSONB:
		return c.m.parse(goja.Undefined(), rt.ToValue(s))
	case oidDate, oidTimestamp, oidTimestamptz:
		return c.dateValue(oid, s)
	}
	t, ok := typeMap.TypeForOID(oid)
	if !ok {
		return rt.ToValue(s), nil
	}
	ac, ok := t.Codec.(*pgtype.ArrayCodec)
	if !ok {
		return rt.ToValue(s), nil
	}
	v, err := t.Codec.DecodeValue(typeMap, oid, pgtype.TextFormatCode, b)
	if err != nil {
		return rt.ToValue(s), nil
	}
	return c.arrayValue(ac.ElementType.OID, v)
}

func (c *chain) arrayValue(oid uint32, v any) (goja.Value, error) {
	rt := c.m.rt
	switch x := v.(type) {
	case nil:
		return goja.Null(), nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			ev, err := c.arrayValue(oid, e)
			if err != nil {
				return nil, err
			}
			out[i] = ev
		}
		return rt.NewArray(out...), nil
	case int64:
		if oid == oidInt8 {
			return rt.ToValue(strconv.FormatInt(x, 10)), nil
		}
		return rt.ToValue(x), nil
	case pgtype.Numeric:
		f, _ := x.Float64Value()
		return rt.ToValue(f.Float64), nil
	case string:
		if oid == oidJSON || oid == oidJSONB {
			return c.m.parse(goja.Undefined(), rt.ToValue(x))
		}
		return rt.ToValue(x), nil
	case time.Time:
		return rt.New(c.m.date, rt.ToValue(x.UnixMilli()))
	case map[string]any: // json elements pgtype already parsed
		return rt.ToValue(x), nil
	}
	return rt.ToValue(v), nil
}

// dateValue is a JavaScript Date of a date or timestamp text; like
// node-postgres, a date or timestamp without a zone is local time.
func (c *chain) dateValue(oid uint32, s string) (goja.Value, error) {
	layouts := []string{"2006-01-02 15:04:05.999999999-07:00:00", "2006-01-02 15:04:05.999999999-07:00", "2006-01-02 15:04:05.999999999-07"}
	loc := time.Local
	switch oid {
	case oidDate:
		layouts = []string{"2006-01-02"}
	case oidTimestamp:
		layouts = []string{"2006-01-02 15:04:05.999999999"}
	}
	for _, l := range layouts {
		if t, err := time.ParseInLocation(l, s, loc); err == nil {
			return c.m.rt.New(c.m.date, c.m.rt.ToValue(t.UnixMilli()))
		}
	}
	return c.m.rt.ToValue(s), nil // infinity, BC dates: left as text
}

// parseFloat is JavaScript's parseFloat of PostgreSQL's float text.
func parseFloat(s string) float64 {
	switch s {
	case "NaN":
		return math.NaN()
	case "Infinity":
		return math.Inf(1)
	case "-Infinity":
		return math.Inf(-1)
	}
	f, _ := strconv.ParseFloat(s, 64)
	return f
}
