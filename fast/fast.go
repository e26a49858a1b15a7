// Package fast is the message framing of node-fast 3.x, the RPC protocol
// Moray and electric-moray speak (npm fast, lib/fast_protocol.js).
//
// A message is a 15-byte header and a JSON payload, all integers big-endian:
//
//	offset size field
//	0      1    version: 1 or 2
//	1      1    type: 1 (JSON), the only one
//	2      1    status: 1 data, 2 end, 3 error
//	3      4    message id, 0 to 2^31-1; a request and its replies share it
//	7      4    CRC16 of the payload (the upper 16 bits are zero)
//	11     4    payload length in bytes
//	15     n    payload: {"m": {"uts": MICROSECONDS, "name": RPC}, "d": D}
//
// D is the array of arguments (data, end) or an error object with string
// "name" and "message" (error). A request is one data message or several
// followed by end; replies are data messages then end, or one error.
//
// The CRC comes in two variants. Version 1 frames carry node-crc 0.3.0's
// crc16, which is CRC-16/XMODEM over the low byte of each UTF-16 code unit
// of the payload text (it differs from a true CRC on non-ASCII payloads);
// version 2 frames carry CRC-16/ARC over the payload's UTF-8 bytes.
// node-fast 3.x answers in the version the request used. The Decoder
// accepts either variant in either version and reports the one it found in
// Message.CRC, so a server replies in kind by copying Version and CRC.
package fast

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/reshard/reshard/internal/jsjson"
	"io"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// Header layout and field values.
const (
	HeaderSize = 15

	Version1 = 1
	Version2 = 2

	TypeJSON = 1

	MaxMsgID = 1<<31 - 1

	// DefaultMaxPayload bounds a payload unless Decoder.MaxPayload says
	// otherwise; Moray messages are records and argument lists, far below.
	DefaultMaxPayload = 64 << 20
)

// Status is a message's status byte.
type Status uint8

const (
	StatusData  Status = 1
	StatusEnd   Status = 2
	StatusError Status = 3
)

func (s Status) String() string {
	switch s {
	case StatusData:
		return "data"
	case StatusEnd:
		return "end"
	case StatusError:
		return "error"
	}
	return "status(" + strconv.Itoa(int(s)) + ")"
}

// CRC names a checksum variant.
type CRC uint8

const (
	// CRCByVersion picks the variant node-fast uses for the version:
	// CRCOld for version 1, CRCNew for version 2. Encode only.
	CRCByVersion CRC = iota
	// CRCOld is node-crc 0.3.0's crc16 (npm oldcrc), used by version 1.
	CRCOld
	// CRCNew is crc 3.x's crc16, CRC-16/ARC, used by version 2.
	CRCNew
)

func (c CRC) String() string {
	switch c {
	case CRCOld:
		return "node-crc 0.3.0"
	case CRCNew:
		return "crc16/arc"
	}
	return "by version"
}

// Meta is the payload's "m": the RPC name and the sender's clock in
// microseconds since the epoch.
type Meta struct {
	UTS  int64  `json:"uts"`
	Name string `json:"name"`
}

// UnmarshalJSON takes any JSON number for uts; node-fast does not check it.
func (m *Meta) UnmarshalJSON(b []byte) error {
	var raw struct {
		UTS  json.Number `json:"uts"`
		Name string      `json:"name"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	m.Name = raw.Name
	if raw.UTS != "" {
		f, err := raw.UTS.Float64()
		if err != nil {
			return fmt.Errorf("uts %s is not a number", raw.UTS)
		}
		m.UTS = int64(f)
		if i, err := raw.UTS.Int64(); err == nil {
			m.UTS = i
		}
	}
	return nil
}

// Message is one frame.
type Message struct {
	Version uint8
	Status  Status
	MsgID   uint32
	// CRC is the variant to encode with, or the one a decoded frame used.
	CRC  CRC
	Meta Meta
	// D is the payload's "d", JSON text: the argument array, or the error
	// object of a StatusError message.
	D json.RawMessage
}

// Payload returns the JSON text Encode frames: node-fast's
// JSON.stringify({m: {uts, name}, d}) when D is as JSON.stringify wrote it.
func (m *Message) Payload() []byte {
	var b bytes.Buffer
	b.Grow(len(m.D) + len(m.Meta.Name) + 48)
	b.WriteString(`{"m":{"uts":`)
	b.WriteString(strconv.FormatInt(m.Meta.UTS, 10))
	b.WriteString(`,"name":`)
	jsjson.String(&b, m.Meta.Name)
	b.WriteString(`},"d":`)
	b.Write(m.D)
	b.WriteByte('}')
	return b.Bytes()
}

// Encode writes m as one frame with a single Write.
func Encode(w io.Writer, m *Message) error {
	b, err := AppendFrame(nil, m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// AppendFrame appends m's frame to b.
func AppendFrame(b []byte, m *Message) ([]byte, error) {
	if m.Version != Version1 && m.Version != Version2 {
		return b, fmt.Errorf("fast: cannot encode version %d: only 1 and 2 exist", m.Version)
	}
	if m.Status < StatusData || m.Status > StatusError {
		return b, fmt.Errorf("fast: cannot encode %v", m.Status)
	}
	if m.MsgID > MaxMsgID {
		return b, fmt.Errorf("fast: message id %d is above %d", m.MsgID, MaxMsgID)
	}
	if !json.Valid(m.D) {
		return b, fmt.Errorf("fast: d is not JSON: %.40q", m.D)
	}
	p := m.Payload()
	if uint64(len(p)) > 1<<32-1 {
		return b, fmt.Errorf("fast: payload of %d bytes does not fit a frame", len(p))
	}
	variant := m.CRC
	if variant == CRCByVersion {
		variant = CRCNew
		if m.Version == Version1 {
			variant = CRCOld
		}
	}
	var h [HeaderSize]byte
	h[0], h[1], h[2] = m.Version, TypeJSON, byte(m.Status)
	binary.BigEndian.PutUint32(h[3:], m.MsgID)
	binary.BigEndian.PutUint32(h[7:], uint32(checksum(variant, p)))
	binary.BigEndian.PutUint32(h[11:], uint32(len(p)))
	return append(append(b, h[:]...), p...), nil
}

func checksum(c CRC, p []byte) uint16 {
	if c == CRCOld {
		return crcOld(p)
	}
	return crcARC(p)
}

var arcTable, xmodemTable [256]uint16

func init() {
	for i := range 256 {
		c := uint16(i)
		for range 8 {
			if c&1 != 0 {
				c = c>>1 ^ 0xA001
			} else {
				c >>= 1
			}
		}
		arcTable[i] = c
		c = uint16(i) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x1021
			} else {
				c <<= 1
			}
		}
		xmodemTable[i] = c
	}
}

// crcARC is CRC-16/ARC (reflected 0x8005, init 0), crc 3.x's crc16.
func crcARC(p []byte) uint16 {
	var c uint16
	for _, b := range p {
		c = arcTable[byte(c)^b] ^ c>>8
	}
	return c
}

// crcOld is node-crc 0.3.0's crc16(str): CRC-16/XMODEM fed the low byte of
// each UTF-16 code unit of the text (invalid UTF-8 reads as U+FFFD, as
// node's Buffer.toString does).
func crcOld(p []byte) uint16 {
	var c uint16
	add := func(u uint16) { c = xmodemTable[byte(c>>8)^byte(u)] ^ c<<8 }
	for len(p) > 0 {
		if p[0] < utf8.RuneSelf {
			add(uint16(p[0]))
			p = p[1:]
			continue
		}
		r, n := utf8.DecodeRune(p)
		p = p[n:]
		if r >= 0x10000 {
			hi, lo := utf16.EncodeRune(r)
			add(uint16(hi))
			add(uint16(lo))
		} else {
			add(uint16(r))
		}
	}
	return c
}

// ProtocolError is a malformed frame. Reason is node-fast's fastReason
// (bad_crc, unsupported_version, ...). The stream cannot be resynchronized
// after one, so the connection should be closed.
type ProtocolError struct {
	Reason string
	MsgID  uint32 // when the header got that far
	Msg    string
}

func (e *ProtocolError) Error() string { return "fast protocol: " + e.Msg }

// ErrTooLarge is wrapped by the error for a payload above the limit.
var ErrTooLarge = errors.New("payload too large")

// Decoder reads frames from a stream.
type Decoder struct {
	// MaxPayload bounds a payload's length; 0 means DefaultMaxPayload.
	MaxPayload uint32

	r   *bufio.Reader
	err error
}

// NewDecoder reads frames from r, buffered.
func NewDecoder(r io.Reader) *Decoder {
	return &Decoder{r: bufio.NewReaderSize(r, 64<<10)}
}

// Decode reads the next frame. It returns io.EOF at a clean end of stream,
// io.ErrUnexpectedEOF inside a frame, and a *ProtocolError for a malformed
// frame; after an error every call returns it again.
func (d *Decoder) Decode() (*Message, error) {
	if d.err != nil {
		return nil, d.err
	}
	m, err := d.decode()
	if err != nil {
		d.err = err
	}
	return m, err
}

func (d *Decoder) decode() (*Message, error) {
	var h [HeaderSize]byte
	if n, err := io.ReadFull(d.r, h[:]); err != nil {
		if err == io.EOF && n == 0 {
			return nil, io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	m := &Message{Version: h[0], Status: Status(h[2]), MsgID: binary.BigEndian.Uint32(h[3:])}
	if m.Version != Version1 && m.Version != Version2 {
		return nil, &ProtocolError{Reason: "unsupported_version", Msg: fmt.Sprintf("unsupported version %d", h[0])}
	}
	if h[1] != TypeJSON {
		return nil, &ProtocolError{Reason: "unsupported_type", Msg: fmt.Sprintf("unsupported type 0x%x", h[1])}
	}
	if m.Status < StatusData || m.Status > StatusError {
		return nil, &ProtocolError{Reason: "unsupported_status", Msg: fmt.Sprintf("unsupported status 0x%x", h[2])}
	}
	if m.MsgID > MaxMsgID {
		return nil, &ProtocolError{Reason: "invalid_msgid", Msg: fmt.Sprintf("invalid msgid %d", m.MsgID)}
	}
	crc := binary.BigEndian.Uint32(h[7:])
	n := binary.BigEndian.Uint32(h[11:])
	max := d.MaxPayload
	if max == 0 {
		max = DefaultMaxPayload
	}
	if n > max {
		return nil, &ProtocolError{Reason: "too_large", MsgID: m.MsgID,
			Msg: fmt.Sprintf("message %d: %v: %d bytes, the limit is %d", m.MsgID, ErrTooLarge, n, max)}
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(d.r, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	// Try the version's variant first; a match of the other one is taken
	// and reported so the reply can use it too.
	first, second := CRCNew, CRCOld
	if m.Version == Version1 {
		first, second = CRCOld, CRCNew
	}
	switch {
	case crc>>16 == 0 && checksum(first, p) == uint16(crc):
		m.CRC = first
	case crc>>16 == 0 && checksum(second, p) == uint16(crc):
		m.CRC = second
	default:
		return nil, &ProtocolError{Reason: "bad_crc", MsgID: m.MsgID,
			Msg: fmt.Sprintf("message %d: bad CRC 0x%x: payload has 0x%04x (version %d), 0x%04x (other variant)",
				m.MsgID, crc, checksum(first, p), m.Version, checksum(second, p))}
	}
	if err := m.parsePayload(p); err != nil {
		return nil, err
	}
	return m, nil
}

// parsePayload applies node-fast's checks: an object, with an array "d"
// for data and end, or an object "d" with string name and message for
// error.
func (m *Message) parsePayload(p []byte) error {
	var top struct {
		M json.RawMessage `json:"m"`
		D json.RawMessage `json:"d"`
	}
	if err := json.Unmarshal(p, &top); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return &ProtocolError{Reason: "bad_data", MsgID: m.MsgID, Msg: fmt.Sprintf("message %d: data must be a non-null object", m.MsgID)}
		}
		return &ProtocolError{Reason: "invalid_json", MsgID: m.MsgID, Msg: fmt.Sprintf("message %d: invalid JSON in data: %v", m.MsgID, err)}
	}
	if bytes.Equal(bytes.TrimSpace(p), []byte("null")) {
		return &ProtocolError{Reason: "bad_data", MsgID: m.MsgID, Msg: fmt.Sprintf("message %d: data must be a non-null object", m.MsgID)}
	}
	if len(top.M) > 0 && !bytes.Equal(top.M, []byte("null")) {
		if err := json.Unmarshal(top.M, &m.Meta); err != nil {
			return &ProtocolError{Reason: "bad_data", MsgID: m.MsgID, Msg: fmt.Sprintf("message %d: data.m: %v", m.MsgID, err)}
		}
	}
	m.D = top.D
	d := bytes.TrimSpace(top.D)
	if m.Status == StatusError {
		var e struct {
			Name    *string `json:"name"`
			Message *string `json:"message"`
		}
		if len(d) == 0 || d[0] != '{' || json.Unmarshal(d, &e) != nil || e.Name == nil || e.Message == nil {
			return &ProtocolError{Reason: "bad_error", MsgID: m.MsgID, Msg: fmt.Sprintf("message %d: data.d for ERROR messages must have name and message", m.MsgID)}
		}
		return nil
	}
	if len(d) == 0 || d[0] != '[' {
		return &ProtocolError{Reason: "bad_data_d", MsgID: m.MsgID, Msg: fmt.Sprintf("message %d: data.d for DATA and END messages must be an array", m.MsgID)}
	}
	return nil
}
