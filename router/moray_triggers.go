package router

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/reshard/reshard/shard"

	"github.com/reshard/reshard/internal/jsjson"
	"github.com/reshard/reshard/trigger"
)

// triggerTexts checks createBucket's or updateBucket's pre and post as
// Moray's validateBucket does (each must evaluate to a function) and
// returns the buckets_config texts Moray stores for them: JSON arrays of
// each function's source text.
func triggerTexts(pre, post json.RawMessage) (string, string, error) {
	var lists [2][]json.RawMessage
	for i, raw := range []json.RawMessage{pre, post} {
		if len(raw) == 0 || string(raw) == "null" {
			continue
		}
		if jsonKind(raw) != "an array" {
			return "", "", &MorayError{Name: "InvalidBucketConfigError", Message: []string{"pre", "post"}[i] + " must be an array"}
		}
		json.Unmarshal(raw, &lists[i])
	}
	preSrc, postSrc, err := trigger.Validate(lists[0], lists[1])
	if err != nil {
		return "", "", err
	}
	return sourcesJSON(preSrc), sourcesJSON(postSrc), nil
}

// sourcesJSON is JSON.stringify of an array of strings.
func sourcesJSON(srcs []string) string {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, s := range srcs {
		if i > 0 {
			b.WriteByte(',')
		}
		jsjson.String(&b, s)
	}
	b.WriteByte(']')
	return b.String()
}

// optionHeaders is a write's options.headers, which the bucket's post
// triggers see as req.headers; nil when there is none.
func optionHeaders(opts json.RawMessage) json.RawMessage {
	var o struct {
		Headers json.RawMessage `json:"headers"`
	}
	if jsonKind(opts) != "an object" || json.Unmarshal(opts, &o) != nil || jsonKind(o.Headers) != "an object" {
		return nil
	}
	return o.Headers
}

// arg is argument i, nil when missing.
func (a rpcArgs) arg(i int) json.RawMessage {
	if i < len(a.a) {
		return a.a[i]
	}
	return nil
}

// httpTriggers checks the triggers of a bucket the HTTP API creates: its
// config's pre and post, JSON arrays of sources as buckets_config holds
// them, and stores them as Moray would.
func httpTriggers(opts *shard.BucketOptions) error {
	var err error
	pre, post := opts.Config.Pre, opts.Config.Post
	if pre == "" && post == "" {
		return nil
	}
	opts.Config.Pre, opts.Config.Post, err = triggerTexts(json.RawMessage(pre), json.RawMessage(post))
	if err != nil {
		return fmt.Errorf("config.pre and config.post must be JSON arrays of JavaScript functions: %w", err)
	}
	return nil
}
