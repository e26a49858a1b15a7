package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Moray checks every RPC's arguments against JSON schemas with ajv 4 before
// it does anything, and clients and Moray's own test suite compare the
// error's name and message. This file holds those schemas as data and a
// validator that walks them in ajv 4's order (first error wins, as with
// ajv's default allErrors: false) and words errors as ajv does, so that a
// bad argument is refused with the same InvocationError or
// InvalidBucketConfigError, byte for byte.
//
// ajv 4's order, which decides which of several errors is reported:
// keywords run in groups (number: minimum; string: maxLength, minLength,
// pattern, format; array: items; object: required, then properties with
// additionalProperties first; then $ref, enum, not, anyOf, allOf). A
// group whose type is the schema's type reports the type error in its
// place; otherwise the type is checked after every group. A required
// property whose own schema has rules is checked for presence where
// properties reaches it.

// jsValue is a decoded JSON value that keeps what ajv sees: object members
// in JavaScript's enumeration order and numbers as float64.
type jsValue struct {
	kind string // "null", "boolean", "number", "string", "array", "object"
	b    bool
	n    float64
	s    string
	arr  []jsValue
	obj  []jsMember
}

type jsMember struct {
	key string
	val jsValue
}

func (v jsValue) get(key string) (jsValue, bool) {
	for _, m := range v.obj {
		if m.key == key {
			return m.val, true
		}
	}
	return jsValue{}, false
}

// decodeJS decodes JSON as JSON.parse would: a repeated key keeps its first
// position and its last value, and integer-like keys enumerate first, in
// ascending order. Containers deeper than depth are skipped whole and keep
// only their kind: a schema looks only so far into its argument, and
// putObject's value, say, need not be decoded to check it is an object.
// It scans the bytes itself: the argument comes from a frame that was
// already parsed as JSON, and encoding/json's tokenizer cost more than the
// put it checks.
func decodeJS(raw []byte, depth int) (jsValue, error) {
	p := &jsScanner{b: raw}
	v, err := p.value(depth)
	if err == nil {
		p.space()
		if p.i != len(p.b) {
			err = fmt.Errorf("trailing data after JSON value")
		}
	}
	return v, err
}

// jsScanner reads one JSON text from b, at i.
type jsScanner struct {
	b []byte
	i int
}

func (p *jsScanner) space() {
	for p.i < len(p.b) && (p.b[p.i] == ' ' || p.b[p.i] == '\t' || p.b[p.i] == '\n' || p.b[p.i] == '\r') {
		p.i++
	}
}

var errBadJSON = fmt.Errorf("malformed JSON")

func (p *jsScanner) value(depth int) (jsValue, error) {
	p.space()
	if p.i >= len(p.b) {
		return jsValue{}, errBadJSON
	}
	switch c := p.b[p.i]; {
	case c == '{' || c == '[':
		if depth < 0 {
			if err := p.skip(); err != nil {
				return jsValue{}, err
			}
			if c == '[' {
				return jsValue{kind: "array", arr: []jsValue{}}, nil
			}
			return jsValue{kind: "object"}, nil
		}
		if c == '[' {
			return p.array(depth)
		}
		return p.object(depth)
	case c == '"':
		str, err := p.str()
		return jsValue{kind: "string", s: str}, err
	case c == 't' || c == 'f' || c == 'n':
		for _, w := range []string{"true", "false", "null"} {
			if bytes.HasPrefix(p.b[p.i:], []byte(w)) {
				p.i += len(w)
				if w == "null" {
					return jsValue{kind: "null"}, nil
				}
				return jsValue{kind: "boolean", b: w == "true"}, nil
			}
		}
		return jsValue{}, errBadJSON
	}
	start := p.i
	for p.i < len(p.b) && strings.IndexByte("+-0123456789.eE", p.b[p.i]) >= 0 {
		p.i++
	}
	f, err := strconv.ParseFloat(string(p.b[start:p.i]), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) { // ±Inf past float64, as JSON.parse
		return jsValue{}, errBadJSON
	}
	return jsValue{kind: "number", n: f}, nil
}

// str reads a string; one with escapes is unquoted by encoding/json.
func (p *jsScanner) str() (string, error) {
	start := p.i
	p.i++
	escaped := false
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case '\\':
			escaped = true
			p.i += 2
			continue
		case '"':
			p.i++
			if !escaped {
				return string(p.b[start+1 : p.i-1]), nil
			}
			var s string
			err := json.Unmarshal(p.b[start:p.i], &s)
			return s, err
		}
		p.i++
	}
	return "", errBadJSON
}

// skip passes over one container, strings and all.
func (p *jsScanner) skip() error {
	level := 0
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case '"':
			if _, err := p.str(); err != nil {
				return err
			}
			continue
		case '{', '[':
			level++
		case '}', ']':
			level--
			if level == 0 {
				p.i++
				return nil
			}
		}
		p.i++
	}
	return errBadJSON
}

func (p *jsScanner) array(depth int) (jsValue, error) {
	v := jsValue{kind: "array", arr: []jsValue{}}
	p.i++ // [
	p.space()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return v, nil
	}
	for {
		e, err := p.value(depth - 1)
		if err != nil {
			return jsValue{}, err
		}
		v.arr = append(v.arr, e)
		if end, err := p.separator(']'); err != nil {
			return jsValue{}, err
		} else if end {
			return v, nil
		}
	}
}

// separator reads what follows a member of an array or object: a comma
// (end false) or the closing byte (end true).
func (p *jsScanner) separator(closing byte) (end bool, err error) {
	p.space()
	if p.i >= len(p.b) {
		return false, errBadJSON
	}
	p.i++
	switch p.b[p.i-1] {
	case ',':
		return false, nil
	case closing:
		return true, nil
	default:
		return false, errBadJSON
	}
}

func (p *jsScanner) object(depth int) (jsValue, error) {
	v := jsValue{kind: "object"}
	p.i++ // {
	p.space()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return v, nil
	}
	for {
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return jsValue{}, errBadJSON
		}
		key, err := p.str()
		if err != nil {
			return jsValue{}, err
		}
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return jsValue{}, errBadJSON
		}
		p.i++
		e, err := p.value(depth - 1)
		if err != nil {
			return jsValue{}, err
		}
		replaced := false
		for i := range v.obj {
			if v.obj[i].key == key {
				v.obj[i].val, replaced = e, true
			}
		}
		if !replaced {
			v.obj = append(v.obj, jsMember{key, e})
		}
		if end, err := p.separator('}'); err != nil {
			return jsValue{}, err
		} else if end {
			sortJSKeys(v.obj)
			return v, nil
		}
	}
}

// sortJSKeys puts array-index keys first, ascending, as JavaScript
// enumerates an object's properties.
func sortJSKeys(ms []jsMember) {
	any := false
	for _, m := range ms {
		if _, ok := jsArrayIndex(m.key); ok {
			any = true
			break
		}
	}
	if !any {
		return
	}
	sort.SliceStable(ms, func(i, j int) bool {
		a, aok := jsArrayIndex(ms[i].key)
		b, bok := jsArrayIndex(ms[j].key)
		if aok && bok {
			return a < b
		}
		return aok && !bok
	})
}

func jsArrayIndex(k string) (uint64, bool) {
	if k == "" || len(k) > 10 || (len(k) > 1 && k[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < '0' || k[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(k, 10, 64)
	return n, err == nil && n < math.MaxUint32
}

// schema is the subset of JSON schema (draft 4) that Moray's schemas use.
type schema struct {
	ref          string
	types        []string
	minLength    int // -1: none
	maxLength    int // -1: none
	minimum      *float64
	pattern      *regexp.Regexp
	patternText  string
	format       string // "uuid"
	enum         []string
	required     []string
	props        []schemaProp
	patternAll   *schema // patternProperties {".*": ...}
	noAdditional bool
	notAnything  bool // not: {type: every type}: the property must be absent
	anyOf        []*schema
	allOf        []*schema
	items        *schema
}

type schemaProp struct {
	name string
	s    *schema
}

func (s *schema) hasGroup(group string) bool {
	switch group {
	case "number":
		return s.minimum != nil
	case "string":
		return s.maxLength >= 0 || s.minLength >= 0 || s.pattern != nil || s.format != ""
	case "array":
		return s.items != nil
	case "object":
		return len(s.required) > 0 || len(s.props) > 0 || s.patternAll != nil || s.noAdditional
	}
	return s.ref != "" || len(s.enum) > 0 || s.notAnything || len(s.anyOf) > 0 || len(s.allOf) > 0
}

// hasRules is ajv's schemaHasRules: whether a property's schema checks
// anything, which decides where a missing required property is reported.
func (s *schema) hasRules() bool {
	if len(s.types) > 0 {
		return true
	}
	for _, g := range []string{"number", "string", "array", "object", "all"} {
		if s.hasGroup(g) {
			return true
		}
	}
	return false
}

func newSchema() *schema { return &schema{minLength: -1, maxLength: -1} }

func typed(types ...string) *schema { s := newSchema(); s.types = types; return s }

func refTo(id string) *schema { s := newSchema(); s.ref = id; return s }

func allOfRef(id string) *schema { s := newSchema(); s.allOf = []*schema{refTo(id)}; return s }

func zero() *float64 { z := 0.0; return &z }

// morayTypeNames are Moray's index types in the order of its types.js,
// which is the order ajv lists them in an enum error.
var morayTypeNames = []string{"string", "[string]", "number", "[number]", "numrange", "boolean", "[boolean]",
	"date", "[date]", "daterange", "ip", "[ip]", "mac", "[mac]", "subnet", "[subnet]", "uuid"}

// morayArgSchemas are Moray 2.6.1's schemas (lib/schema.js), by id.
var morayArgSchemas = func() map[string]*schema {
	m := map[string]*schema{}

	integer := typed("integer")
	integer.minimum = zero()
	m["integer"] = integer

	str := typed("string")
	str.minLength = 1
	m["string"] = str

	m["array"] = typed("array")

	hasOwn := newSchema()
	hasOwn.notAnything = true
	object := typed("object")
	object.props = []schemaProp{{"hasOwnProperty", hasOwn}}
	m["object"] = object

	order := typed("string")
	order.enum = []string{"ASC", "asc", "DESC", "desc"}
	sortobj := typed("object")
	sortobj.allOf = []*schema{refTo("object")}
	sortobj.props = []schemaProp{{"attribute", typed("string")}, {"order", order}}
	m["sortobj"] = sortobj

	nonNegInt := func() *schema { s := typed("integer"); s.minimum = zero(); return s }
	limitLike := func() *schema {
		s := typed("integer", "string")
		s.patternText = "^[0-9]+$"
		s.pattern = regexp.MustCompile(s.patternText)
		s.minimum = zero()
		return s
	}
	reqID := typed("string")
	reqID.format = "uuid"
	reqID.maxLength = 36
	sortArray := typed("array")
	sortArray.items = refTo("sortobj")
	sortOpt := newSchema()
	sortOpt.anyOf = []*schema{sortArray, refTo("sortobj")}
	internal := typed("object")
	internal.props = []schemaProp{{"sendHandledOptions", typed("boolean")}}
	options := typed("object")
	options.allOf = []*schema{refTo("object")}
	options.props = []schemaProp{
		{"timeout", nonNegInt()},
		{"req_id", reqID},
		{"etag", typed("null", "string")},
		{"_value", typed("string")},
		{"noBucketCache", typed("boolean")},
		{"noCache", typed("boolean")},
		{"headers", allOfRef("object")},
		{"requireOnlineReindexing", typed("boolean")},
		{"noLimit", typed("boolean")},
		{"limit", limitLike()},
		{"offset", limitLike()},
		{"sort", sortOpt},
		{"no_count", typed("boolean")},
		{"sql_only", typed("boolean")},
		{"requireIndexes", typed("boolean")},
		{"no_reindex", typed("boolean")},
		{"deep", typed("boolean")},
		{"internalOpts", internal},
	}
	m["options"] = options

	operation := typed("string")
	operation.enum = []string{"put", "delete", "update", "deleteMany"}
	request := typed("object")
	request.allOf = []*schema{refTo("object")}
	request.required = []string{"bucket"}
	request.props = []schemaProp{
		{"operation", operation},
		{"bucket", typed("string")},
		{"key", typed("string")},
		{"filter", typed("string")},
		{"fields", allOfRef("object")},
		{"value", allOfRef("object")},
		{"options", refTo("options")},
	}
	m["requestobj"] = request
	requests := typed("array")
	requests.items = refTo("requestobj")
	m["requests"] = requests

	itype := typed("string")
	itype.enum = morayTypeNames
	index := typed("object")
	index.allOf = []*schema{refTo("object")}
	index.required = []string{"type"}
	index.noAdditional = true
	index.props = []schemaProp{{"type", itype}, {"unique", typed("boolean")}}
	m["index"] = index

	indexes := allOfRef("object")
	indexes.patternAll = refTo("index")
	bucketOptions := allOfRef("object")
	bucketOptions.props = []schemaProp{
		{"version", refTo("integer")},
		{"guaranteeOrder", typed("boolean")},
		{"syncUpdates", typed("boolean")},
	}
	bucket := typed("object")
	bucket.allOf = []*schema{refTo("object")}
	bucket.props = []schemaProp{
		{"index", indexes},
		{"pre", typed("array")},
		{"post", typed("array")},
		{"options", bucketOptions},
	}
	m["bucket"] = bucket
	return m
}()

// ajvError is one error as ajv reports it.
type ajvError struct {
	path, msg string
	allowed   []string // an enum's allowed values
}

// ajvUUID is ajv 4's "uuid" format.
var ajvUUID = regexp.MustCompile(`(?i)^(?:urn:uuid:)?[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}$`)

var jsIdentifier = regexp.MustCompile(`(?i)^[a-z$_][a-z$_0-9]*$`)

// propPath is ajv's path to a property named in the schema.
func propPath(path, key string) string {
	if jsIdentifier.MatchString(key) {
		return path + "." + key
	}
	return path + "['" + ajvQuotes.Replace(key) + "']"
}

// ajvQuotes is ajv's escapeQuotes.
var ajvQuotes = strings.NewReplacer(`'`, `\'`, `\`, `\\`, "\n", `\n`, "\r", `\r`, "\f", `\f`, "\t", `\t`)

func isType(v jsValue, t string) bool {
	switch t {
	case "integer":
		return v.kind == "number" && !math.IsNaN(v.n) && math.Mod(v.n, 1) == 0 || v.kind == "number" && math.IsInf(v.n, 0)
	default:
		return v.kind == t
	}
}

func (s *schema) typeOK(v jsValue) bool {
	for _, t := range s.types {
		if isType(v, t) {
			return true
		}
	}
	return false
}

// ucs2Length is a string's length in UTF-16 code units, as ajv counts.
func ucs2Length(s string) int {
	n := 0
	for _, r := range s {
		n++
		if r > 0xFFFF {
			n++
		}
	}
	return n
}

// validate returns the errors ajv would report, or nil if v is valid.
func validate(s *schema, v jsValue, path string) []ajvError {
	typeChecked := false
	typeError := func() []ajvError {
		return []ajvError{{path: path, msg: "should be " + strings.Join(s.types, ",")}}
	}
	for _, group := range []string{"number", "string", "array", "object"} {
		if !s.hasGroup(group) {
			continue
		}
		single := len(s.types) == 1 && s.types[0] == group
		if v.kind != group {
			if single {
				return typeError()
			}
			continue
		}
		if single {
			typeChecked = true
		}
		if errs := s.groupRules(group, v, path); errs != nil {
			return errs
		}
	}
	if errs := s.allRules(v, path); errs != nil {
		return errs
	}
	if len(s.types) > 0 && !typeChecked && !s.typeOK(v) {
		return typeError()
	}
	return nil
}

func (s *schema) groupRules(group string, v jsValue, path string) []ajvError {
	switch group {
	case "number":
		if s.minimum != nil && v.n < *s.minimum {
			return []ajvError{{path: path, msg: "should be >= " + strconv.FormatFloat(*s.minimum, 'f', -1, 64)}}
		}
	case "string":
		n := ucs2Length(v.s)
		if s.maxLength >= 0 && n > s.maxLength {
			return []ajvError{{path: path, msg: fmt.Sprintf("should NOT be longer than %d characters", s.maxLength)}}
		}
		if s.minLength >= 0 && n < s.minLength {
			return []ajvError{{path: path, msg: fmt.Sprintf("should NOT be shorter than %d characters", s.minLength)}}
		}
		if s.pattern != nil && !s.pattern.MatchString(v.s) {
			return []ajvError{{path: path, msg: fmt.Sprintf("should match pattern %q", s.patternText)}}
		}
		if s.format == "uuid" && !ajvUUID.MatchString(v.s) {
			return []ajvError{{path: path, msg: `should match format "uuid"`}}
		}
	case "array":
		for i, e := range v.arr {
			if errs := validate(s.items, e, path+"["+strconv.Itoa(i)+"]"); errs != nil {
				return errs
			}
		}
	case "object":
		// Required properties whose schemas check nothing are checked here;
		// the others where properties reaches them.
		for _, r := range s.required {
			if p := s.prop(r); p == nil || !p.hasRules() {
				if _, ok := v.get(r); !ok {
					return []ajvError{{path: path, msg: "should have required property '" + r + "'"}}
				}
			}
		}
		if s.noAdditional {
			for _, m := range v.obj {
				if s.prop(m.key) == nil && s.patternAll == nil {
					return []ajvError{{path: path, msg: "should NOT have additional properties"}}
				}
			}
		}
		for _, p := range s.props {
			pv, ok := v.get(p.name)
			if !ok {
				if contains(s.required, p.name) && p.s.hasRules() {
					return []ajvError{{path: path, msg: "should have required property '" + p.name + "'"}}
				}
				continue
			}
			if errs := validate(p.s, pv, propPath(path, p.name)); errs != nil {
				return errs
			}
		}
		if s.patternAll != nil {
			for _, m := range v.obj {
				// ajv builds this path at run time, quoting nothing.
				if errs := validate(s.patternAll, m.val, path+"['"+m.key+"']"); errs != nil {
					return errs
				}
			}
		}
	}
	return nil
}

func (s *schema) prop(name string) *schema {
	for _, p := range s.props {
		if p.name == name {
			return p.s
		}
	}
	return nil
}

// allRules are the keywords for any type: $ref, enum, not, anyOf, allOf.
func (s *schema) allRules(v jsValue, path string) []ajvError {
	if s.ref != "" {
		if errs := validate(morayArgSchemas[s.ref], v, path); errs != nil {
			return errs
		}
	}
	if len(s.enum) > 0 && !(v.kind == "string" && contains(s.enum, v.s)) {
		return []ajvError{{path: path, msg: "should be equal to one of the allowed values", allowed: s.enum}}
	}
	if s.notAnything {
		return []ajvError{{path: path, msg: "should NOT be valid"}}
	}
	if len(s.anyOf) > 0 {
		var all []ajvError
		for _, alt := range s.anyOf {
			errs := validate(alt, v, path)
			if errs == nil {
				all = nil
				break
			}
			all = append(all, errs...)
		}
		if all != nil {
			return append(all, ajvError{path: path, msg: "should match some schema in anyOf"})
		}
	}
	for _, sub := range s.allOf {
		if errs := validate(sub, v, path); errs != nil {
			return errs
		}
	}
	return nil
}

// ajvErrorsText is Moray's errorsText: each error as name+path and message,
// an enum's allowed values listed once each ignoring case, joined by ", ".
func ajvErrorsText(errs []ajvError, name string) string {
	parts := make([]string, len(errs))
	for i, e := range errs {
		msg := name + e.path + " " + e.msg
		if e.allowed != nil {
			seen := map[string]bool{}
			var vals []string
			for _, a := range e.allowed {
				q, _ := json.Marshal(a)
				if k := strings.ToUpper(string(q)); !seen[k] {
					seen[k] = true
					vals = append(vals, string(q))
				}
			}
			msg += " (" + strings.Join(vals, ", ") + ")"
		}
		parts[i] = msg
	}
	return strings.Join(parts, ", ")
}

// morayArg is one positional argument of an RPC and the schema it must match.
type morayArg struct{ name, schema string }

// morayArgSpecs are each RPC's arguments as Moray 2.6.1 declares them.
var morayArgSpecs = map[string][]morayArg{
	"createBucket":   {{"bucket", "string"}, {"config", "object"}, {"options", "options"}},
	"getBucket":      {{"options", "options"}, {"bucket", "string"}},
	"listBuckets":    {{"options", "options"}},
	"updateBucket":   {{"name", "string"}, {"config", "object"}, {"options", "options"}},
	"delBucket":      {{"bucket", "string"}, {"options", "options"}},
	"putObject":      {{"bucket", "string"}, {"key", "string"}, {"value", "object"}, {"options", "options"}},
	"batch":          {{"requests", "requests"}, {"options", "options"}},
	"getObject":      {{"bucket", "string"}, {"key", "string"}, {"options", "options"}},
	"delObject":      {{"bucket", "string"}, {"key", "string"}, {"options", "options"}},
	"findObjects":    {{"bucket", "string"}, {"filter", "string"}, {"options", "options"}},
	"updateObjects":  {{"bucket", "string"}, {"fields", "object"}, {"filter", "string"}, {"options", "options"}},
	"reindexObjects": {{"bucket", "string"}, {"count", "integer"}, {"options", "options"}},
	"deleteMany":     {{"bucket", "string"}, {"filter", "string"}, {"options", "options"}},
	"getTokens":      {{"options", "options"}},
	"sql":            {{"statement", "string"}, {"values", "array"}, {"options", "options"}},
	"ping":           {{"options", "options"}},
	"version":        {{"options", "options"}},
	"listen":         {{"channel", "string"}, {"options", "options"}},
	"unlisten":       {{"id", "string"}, {"options", "options"}},
}

// morayArgDepths are how many levels of containers below the argument
// each schema opens: "object" only the argument itself (its keys);
// "options" down to the sort objects in the sort array and the keys of
// headers; "requests" down to each request's options.
var morayArgDepths = map[string]int{
	"integer": 0, "string": 0, "array": 0, "object": 0, "options": 2, "requests": 4,
}

// morayArgDescriptions are Moray's words for each schema in its errors.
var morayArgDescriptions = map[string]string{
	"integer":  "a nonnegative integer",
	"string":   "a nonempty string",
	"requests": "an array of valid request objects",
	"array":    "an array",
	"object":   "an object",
	"options":  "a valid options object",
}

// checkMorayArgs is Moray's invalidArgs: the argument count, then each
// argument against its schema, failing with Moray's InvocationError.
func checkMorayArgs(rpc string, args []json.RawMessage) *MorayError {
	spec, ok := morayArgSpecs[rpc]
	if !ok {
		return nil
	}
	if len(args) != len(spec) {
		plural := "s"
		if len(spec) == 1 {
			plural = ""
		}
		return &MorayError{Name: "InvocationError", Message: fmt.Sprintf("%s expects %d argument%s", rpc, len(spec), plural)}
	}
	for i, a := range spec {
		v, err := decodeJS(args[i], morayArgDepths[a.schema])
		if err != nil {
			return &MorayError{Name: "InvocationError", Message: fmt.Sprintf("%s expects %q (args[%d]) to be %s", rpc, a.name, i, morayArgDescriptions[a.schema])}
		}
		if errs := validate(morayArgSchemas[a.schema], v, ""); errs != nil {
			return &MorayError{Name: "InvocationError", Message: fmt.Sprintf("%s expects %q (args[%d]) to be %s: %s",
				rpc, a.name, i, morayArgDescriptions[a.schema], ajvErrorsText(errs, a.name))}
		}
	}
	return nil
}

// Moray's bucket name and index name rules (lib/buckets/common.js).
var (
	morayBucketNameRE = regexp.MustCompile(`^[a-zA-Z]\w{0,62}$`)
	morayIndexNameRE  = regexp.MustCompile(`^(_[a-zA-Z0-9]+|[a-zA-Z][_a-zA-Z0-9]*[a-zA-Z0-9]|[a-zA-Z])$`)
	morayReservedBkt  = []string{"buckets_config", "moray", "search"}
	morayReservedIdx  = []string{"_etag", "_id", "_idx", "_key", "_atime", "_ctime", "_mtime", "_rver", "_txn_snap", "_value", "_vnode"}
	morayPrefixedIdx  = regexp.MustCompile(`^_*moray`)
)

// jsFalsy is JavaScript's falsiness for a JSON value.
func jsFalsy(v jsValue, present bool) bool {
	if !present {
		return true
	}
	switch v.kind {
	case "null":
		return true
	case "boolean":
		return !v.b
	case "number":
		return v.n == 0 || math.IsNaN(v.n)
	case "string":
		return v.s == ""
	}
	return false
}

// validateMorayBucket is what Moray's createBucket and updateBucket check
// of a bucket's config before they touch the database, in Moray's order:
// the bucket schema (on the config with Moray's defaults filled in),
// trackModification, the bucket name, then the index names. Trigger
// sources are checked where they are compiled.
func validateMorayBucket(name string, rawCfg json.RawMessage) *MorayError {
	cfg, err := decodeJS(rawCfg, 2) // down to config.index.NAME
	if err != nil || cfg.kind != "object" {
		return &MorayError{Name: "InvalidBucketConfigError", Message: "bucket should be object"}
	}
	field := func(k string, def jsValue) jsValue {
		v, ok := cfg.get(k)
		if jsFalsy(v, ok) {
			return def
		}
		return v
	}
	options := field("options", jsValue{kind: "object"})
	if options.kind == "object" || options.kind == "array" {
		// bucket.options.version = bucket.options.version || 0
		ver, ok := options.get("version")
		if jsFalsy(ver, ok) {
			zero := jsValue{kind: "number"}
			set := false
			for i := range options.obj {
				if options.obj[i].key == "version" {
					options.obj[i].val, set = zero, true
				}
			}
			if !set && options.kind == "object" {
				options.obj = append(append([]jsMember(nil), options.obj...), jsMember{"version", zero})
			}
		}
	}
	bucket := jsValue{kind: "object", obj: []jsMember{
		{"name", jsValue{kind: "string", s: name}},
		{"index", field("index", jsValue{kind: "object"})},
		{"pre", field("pre", jsValue{kind: "array", arr: []jsValue{}})},
		{"post", field("post", jsValue{kind: "array", arr: []jsValue{}})},
		{"options", options},
	}}
	if errs := validate(morayArgSchemas["bucket"], bucket, ""); errs != nil {
		return &MorayError{Name: "InvalidBucketConfigError", Message: ajvErrorsText(errs, "bucket")}
	}
	if _, ok := options.get("trackModification"); ok {
		return &MorayError{Name: "InvalidBucketConfigError", Message: `"trackModification" is no longer supported`}
	}
	if !morayBucketNameRE.MatchString(name) || contains(morayReservedBkt, name) {
		return &MorayError{Name: "InvalidBucketNameError", Message: name + " is not a valid bucket name"}
	}
	index, _ := bucket.get("index")
	for _, m := range index.obj {
		k := m.key
		lower := strings.ToLower(k)
		switch {
		case !morayIndexNameRE.MatchString(k):
			return &MorayError{Name: "InvalidBucketConfigError", Message: `invalid index name "` + k + `"`}
		case contains(morayReservedIdx, lower):
			return &MorayError{Name: "InvalidBucketConfigError", Message: `index name "` + k + `" is reserved for use by Moray`}
		case morayPrefixedIdx.MatchString(lower):
			return &MorayError{Name: "InvalidBucketConfigError", Message: `index names cannot start with "moray": "` + k + `"`}
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}
