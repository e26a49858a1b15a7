package fast

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"testing/iotest"
)

// vector is one frame node-fast's fastMessageEncode produced
// (testdata/make-vectors.js).
type vector struct {
	Name    string `json:"name"`
	Version uint8  `json:"version"`
	Status  Status `json:"status"`
	MsgID   uint32 `json:"msgid"`
	Payload string `json:"payload"`
	CRC     uint32 `json:"crc"`
	Hex     string `json:"hex"`
	frame   []byte
}

func readVectors(t *testing.T) []vector {
	t.Helper()
	f, err := os.Open("testdata/vectors.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []vector
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		var v vector
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
		if v.frame, err = hex.DecodeString(v.Hex); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	if len(out) < 20 {
		t.Fatalf("only %d vectors", len(out))
	}
	return out
}

// message builds the Message node-fast framed, taking d's bytes verbatim.
func (v vector) message(t *testing.T) *Message {
	t.Helper()
	var top struct {
		M Meta            `json:"m"`
		D json.RawMessage `json:"d"`
	}
	if err := json.Unmarshal([]byte(v.Payload), &top); err != nil {
		t.Fatal(err)
	}
	return &Message{Version: v.Version, Status: v.Status, MsgID: v.MsgID, Meta: top.M, D: top.D}
}

func wantVariant(version uint8) CRC {
	if version == Version1 {
		return CRCOld
	}
	return CRCNew
}

// Encode gives node-fast's bytes exactly, for both versions, and Decode
// reads them back and names the CRC variant node-fast used.
func TestNodeFastVectors(t *testing.T) {
	differ := 0
	for _, v := range readVectors(t) {
		m := v.message(t)
		if got := string(m.Payload()); got != v.Payload {
			t.Fatalf("%s: payload\n%.200s\nnode-fast\n%.200s", v.Name, got, v.Payload)
		}
		var b bytes.Buffer
		if err := Encode(&b, m); err != nil {
			t.Fatalf("%s: %v", v.Name, err)
		}
		if !bytes.Equal(b.Bytes(), v.frame) {
			t.Fatalf("%s: frame\n%.120x\nnode-fast\n%.120x", v.Name, b.Bytes(), v.frame)
		}
		got, err := NewDecoder(bytes.NewReader(v.frame)).Decode()
		if err != nil {
			t.Fatalf("%s: %v", v.Name, err)
		}
		if got.Version != v.Version || got.Status != v.Status || got.MsgID != v.MsgID ||
			got.CRC != wantVariant(v.Version) || got.Meta != m.Meta || !bytes.Equal(got.D, m.D) {
			t.Fatalf("%s: decoded %+v", v.Name, got)
		}
		if crcOld([]byte(v.Payload)) != crcARC([]byte(v.Payload)) {
			differ++
		}
	}
	if differ == 0 {
		t.Fatal("no vector tells the two CRC variants apart")
	}
}

// Frames split across reads, back to back on a connection, decode in order.
func TestDecodeStream(t *testing.T) {
	vs := readVectors(t)
	var all bytes.Buffer
	for _, v := range vs {
		all.Write(v.frame)
	}
	check := func(d *Decoder) {
		t.Helper()
		for _, v := range vs {
			m, err := d.Decode()
			if err != nil {
				t.Fatalf("%s: %v", v.Name, err)
			}
			if m.MsgID != v.MsgID || m.Version != v.Version || string(m.Payload()) != v.Payload {
				t.Fatalf("%s: decoded %+v", v.Name, m)
			}
		}
		if _, err := d.Decode(); err != io.EOF {
			t.Fatalf("after the last frame: %v, want EOF", err)
		}
	}
	check(NewDecoder(iotest.OneByteReader(bytes.NewReader(all.Bytes()))))

	client, server := net.Pipe()
	go func() {
		for _, v := range vs {
			if err := Encode(client, v.message(t)); err != nil {
				break
			}
		}
		client.Close()
	}()
	check(NewDecoder(server))
}

// A frame checksummed with the other version's variant is accepted and the
// variant reported, so a reply can use it.
func TestDecodeReportsCRCVariant(t *testing.T) {
	d := json.RawMessage(`["déjà vu 🎉"]`)
	if crcOld(d) == crcARC(d) {
		t.Fatal("test payload does not tell the variants apart")
	}
	for _, version := range []uint8{Version1, Version2} {
		for _, variant := range []CRC{CRCOld, CRCNew} {
			var b bytes.Buffer
			in := &Message{Version: version, Status: StatusData, MsgID: 3, CRC: variant, Meta: Meta{Name: "put", UTS: 1}, D: d}
			if err := Encode(&b, in); err != nil {
				t.Fatal(err)
			}
			sent := bytes.Clone(b.Bytes())
			m, err := NewDecoder(&b).Decode()
			if err != nil {
				t.Fatalf("v%d %v: %v", version, variant, err)
			}
			if m.CRC != variant || m.Version != version {
				t.Fatalf("v%d %v: decoded as v%d %v", version, variant, m.Version, m.CRC)
			}
			// A reply copying Version and CRC carries the same checksum.
			reply := &Message{Version: m.Version, CRC: m.CRC, Status: StatusEnd, MsgID: m.MsgID, Meta: m.Meta, D: d}
			var r bytes.Buffer
			Encode(&r, reply)
			if !bytes.Equal(r.Bytes()[7:11], sent[7:11]) {
				t.Fatalf("v%d %v: reply CRC % x, request % x", version, variant, r.Bytes()[7:11], sent[7:11])
			}
		}
	}
}

func frame(t *testing.T, m *Message) []byte {
	t.Helper()
	b, err := AppendFrame(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withPayload frames raw payload text with a correct CRC.
func withPayload(status Status, p string) []byte {
	h := make([]byte, HeaderSize)
	h[0], h[1], h[2] = Version2, TypeJSON, byte(status)
	binary.BigEndian.PutUint32(h[3:], 9)
	binary.BigEndian.PutUint32(h[7:], uint32(crcARC([]byte(p))))
	binary.BigEndian.PutUint32(h[11:], uint32(len(p)))
	return append(h, p...)
}

func TestDecodeRejects(t *testing.T) {
	good := frame(t, &Message{Version: Version2, Status: StatusData, MsgID: 9, Meta: Meta{Name: "ping"}, D: json.RawMessage(`[]`)})
	patch := func(off int, b ...byte) []byte {
		out := bytes.Clone(good)
		copy(out[off:], b)
		return out
	}
	for _, c := range []struct {
		name   string
		in     []byte
		reason string
		msg    string
	}{
		{"crc", patch(8, good[8]^0xff), "bad_crc", "bad CRC"},
		{"crc high bits", patch(7, 1), "bad_crc", "bad CRC"},
		{"version", patch(0, 3), "unsupported_version", "unsupported version 3"},
		{"type", patch(1, 2), "unsupported_type", "unsupported type 0x2"},
		{"status", patch(2, 4), "unsupported_status", "unsupported status 0x4"},
		{"msgid", patch(3, 0x80), "invalid_msgid", "invalid msgid"},
		{"absurd length", patch(11, 0xff, 0xff, 0xff, 0xff), "too_large", "payload too large"},
		{"invalid json", withPayload(StatusData, `{"d":[`), "invalid_json", "invalid JSON"},
		{"not an object", withPayload(StatusData, `[1]`), "bad_data", "non-null object"},
		{"null", withPayload(StatusData, `null`), "bad_data", "non-null object"},
		{"d not array", withPayload(StatusEnd, `{"d":{}}`), "bad_data_d", "must be an array"},
		{"no d", withPayload(StatusData, `{"m":{"name":"x","uts":1}}`), "bad_data_d", "must be an array"},
		{"error without message", withPayload(StatusError, `{"d":{"name":"E"}}`), "bad_error", "name and message"},
		{"bad m", withPayload(StatusData, `{"m":{"name":5},"d":[]}`), "bad_data", "data.m"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := NewDecoder(bytes.NewReader(append(c.in, good...)))
			_, err := d.Decode()
			var pe *ProtocolError
			if !errors.As(err, &pe) || pe.Reason != c.reason || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want %s (%q)", err, c.reason, c.msg)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			if _, again := d.Decode(); again != err {
				t.Fatalf("decoder went on after %v: %v", err, again)
			}
		})
	}
	for _, n := range []int{1, HeaderSize - 1, HeaderSize, len(good) - 1} {
		if _, err := NewDecoder(bytes.NewReader(good[:n])).Decode(); err != io.ErrUnexpectedEOF {
			t.Fatalf("frame cut at %d bytes: %v", n, err)
		}
	}
	// A length above the limit is refused from the header alone.
	d := NewDecoder(io.MultiReader(bytes.NewReader(patch(11, 0, 0, 4, 1)[:HeaderSize]), failingReader{t}))
	d.MaxPayload = 1024
	if _, err := d.Decode(); err == nil || !strings.Contains(err.Error(), "1025 bytes, the limit is 1024") {
		t.Fatalf("oversized frame: %v", err)
	}
}

type failingReader struct{ t *testing.T }

func (f failingReader) Read([]byte) (int, error) {
	f.t.Error("decoder read a payload it should have refused")
	return 0, io.EOF
}

func TestEncodeRejects(t *testing.T) {
	for _, m := range []*Message{
		{Version: 0, Status: StatusData, D: json.RawMessage(`[]`)},
		{Version: 3, Status: StatusData, D: json.RawMessage(`[]`)},
		{Version: 2, Status: 0, D: json.RawMessage(`[]`)},
		{Version: 2, Status: StatusData, MsgID: MaxMsgID + 1, D: json.RawMessage(`[]`)},
		{Version: 2, Status: StatusData, D: json.RawMessage(`[`)},
		{Version: 2, Status: StatusData},
	} {
		var b bytes.Buffer
		if err := Encode(&b, m); err == nil || b.Len() != 0 {
			t.Fatalf("encoded %+v: %v, %d bytes", m, err, b.Len())
		}
	}
}
