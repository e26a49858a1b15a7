package shard

// Interim: replaced by the JS-exact codec.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
	"unicode/utf16"
)

type member struct {
	key string
	val json.RawMessage
}

func members(raw []byte) ([]member, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	t, err := d.Token()
	if err != nil || t != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object")
	}
	var out []member
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return nil, err
		}
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			return nil, err
		}
		out = append(out, member{t.(string), v})
	}
	return out, nil
}

func emit(ms []member) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, m := range ms {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(m.key)
		b.Write(k)
		b.WriteByte(':')
		var c bytes.Buffer
		json.Compact(&c, m.val)
		b.Write(c.Bytes())
	}
	b.WriteByte('}')
	return b.String()
}

func setProperty(raw []byte, key string, n int64, set bool) (string, error) {
	ms, err := members(raw)
	if err != nil {
		return "", err
	}
	if set {
		v := json.RawMessage(strconv.FormatInt(n, 10))
		found := false
		for i := range ms {
			if ms[i].key == key {
				ms[i].val, found = v, true
			}
		}
		if !found {
			ms = append(ms, member{key, v})
		}
	}
	return emit(ms), nil
}

func MorayValue(raw []byte, vnode *int64) (string, error) {
	if vnode == nil {
		return setProperty(raw, "", 0, false)
	}
	return setProperty(raw, "vnode", *vnode, true)
}

func MorayEtag(text string) string {
	u := utf16.Encode([]rune(text))
	b := make([]byte, len(u))
	for i, c := range u {
		b[i] = byte(c)
	}
	return fmt.Sprintf("%08X", crc32.ChecksumIEEE(b))
}

func ClientValue(text string) ([]byte, error) {
	ms, err := members([]byte(text))
	if err != nil {
		return nil, err
	}
	out := ms[:0]
	for _, m := range ms {
		if m.key != "vnode" {
			out = append(out, m)
		}
	}
	return []byte(emit(out)), nil
}
