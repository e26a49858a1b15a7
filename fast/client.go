package fast

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Client makes RPCs over one connection; calls may run concurrently, each
// under its own message id, as node-fast's client multiplexes them.
type Client struct {
	// Version and CRC are what requests are framed with.
	Version uint8
	CRC     CRC

	conn net.Conn
	wmu  sync.Mutex
	bw   *bufio.Writer

	mu      sync.Mutex
	next    uint32
	pending map[uint32]*call
	err     error // set once the connection failed
}

// call is one RPC in flight; done closes when its caller stops listening,
// so the reader never blocks on a reply nobody reads.
type call struct {
	ch   chan *Message
	done chan struct{}
}

// RemoteError is an error the server answered with.
type RemoteError struct {
	Name    string          `json:"name"`
	Message string          `json:"message"`
	Context json.RawMessage `json:"context,omitempty"`
}

func (e *RemoteError) Error() string { return e.Name + ": " + e.Message }

// Dial connects to a Fast server.
func Dial(ctx context.Context, addr string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return NewClient(conn), nil
}

// NewClient makes RPCs over conn, version 2 framing by default.
func NewClient(conn net.Conn) *Client {
	c := &Client{Version: Version2, conn: conn, bw: bufio.NewWriter(conn), pending: map[uint32]*call{}}
	go c.read()
	return c
}

// Close closes the connection; calls in flight fail.
func (c *Client) Close() error { return c.conn.Close() }

func (c *Client) read() {
	dec := NewDecoder(c.conn)
	for {
		m, err := dec.Decode()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			c.mu.Lock()
			c.err = fmt.Errorf("fast: connection: %w", err)
			for id, cl := range c.pending {
				close(cl.ch)
				delete(c.pending, id)
			}
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		cl := c.pending[m.MsgID]
		if cl != nil && m.Status != StatusData {
			delete(c.pending, m.MsgID)
		}
		c.mu.Unlock()
		if cl != nil {
			select {
			case cl.ch <- m:
			case <-cl.done:
			}
			if m.Status != StatusData {
				close(cl.ch)
			}
		}
	}
}

// Call makes one RPC with args and returns the data it answered with: the
// items of every data message and of the end message, in order.
func (c *Client) Call(ctx context.Context, method string, args ...any) ([]json.RawMessage, error) {
	if args == nil {
		args = []any{}
	}
	d, err := json.Marshal(args)
	if err != nil {
		return nil, err
	}
	cl := &call{ch: make(chan *Message, 16), done: make(chan struct{})}
	defer close(cl.done)
	ch := cl.ch
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	c.next = (c.next + 1) % (MaxMsgID + 1)
	id := c.next
	c.pending[id] = cl
	c.mu.Unlock()
	frame, err := AppendFrame(nil, &Message{Version: c.Version, CRC: c.CRC, Status: StatusData, MsgID: id,
		Meta: Meta{Name: method, UTS: time.Now().UnixMicro()}, D: d})
	if err == nil {
		c.wmu.Lock()
		_, err = c.bw.Write(frame)
		if err == nil {
			err = c.bw.Flush()
		}
		c.wmu.Unlock()
	}
	if err != nil {
		c.forget(id)
		return nil, err
	}
	var out []json.RawMessage
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				c.mu.Lock()
				err := c.err
				c.mu.Unlock()
				if err == nil {
					err = errors.New("fast: connection closed")
				}
				return out, err
			}
			switch m.Status {
			case StatusError:
				var re RemoteError
				if err := json.Unmarshal(m.D, &re); err != nil {
					return out, fmt.Errorf("fast: unreadable error: %w", err)
				}
				return out, &re
			default:
				var items []json.RawMessage
				if err := json.Unmarshal(m.D, &items); err != nil {
					return out, fmt.Errorf("fast: data is not an array: %w", err)
				}
				out = append(out, items...)
				if m.Status == StatusEnd {
					return out, nil
				}
			}
		case <-ctx.Done():
			c.forget(id)
			return out, ctx.Err()
		}
	}
}

func (c *Client) forget(id uint32) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}
