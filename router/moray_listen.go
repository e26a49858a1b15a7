package router

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/reshard/reshard/shard"
)

// listen and unlisten are Moray 2.6.1's LISTEN/NOTIFY passthrough
// (lib/listen.js): listen runs LISTEN on a connection of its own and
// streams each notification as a record {channel, payload} until an
// unlisten names its request id (options.req_id) or the client's
// connection ends; it then ends without error. reshard listens on every
// shard, so a NOTIFY on any shard reaches the listener. Shards registered
// after the listen started are not listened to.

// listener is one running listen RPC.
type listener struct {
	stop    context.CancelFunc
	stopped atomic.Bool // by unlisten or the client going: a normal end
}

func (l *listener) end() {
	l.stopped.Store(true)
	l.stop()
}

func morayListen(ctx context.Context, r *Router, a rpcArgs, s *stream) error {
	channel := jsonString(a.a[0])
	var opts map[string]json.RawMessage
	json.Unmarshal(a.arg(1), &opts)
	id := jsonString(opts["req_id"])
	if id == "" {
		// Moray makes one up, which no unlisten can then name.
		var b [16]byte
		rand.Read(b[:])
		id = hex.EncodeToString(b[:])
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	l := &listener{stop: cancel}
	r.listeners.Store(id, l)
	defer r.listeners.CompareAndDelete(id, l)
	go func() {
		select {
		case <-s.fc.gone:
			l.end()
		case <-ctx.Done():
		}
	}()

	pnodes, err := r.reg.Pnodes(ctx)
	if err != nil {
		return err
	}
	stmt := "LISTEN " + pgx.Identifier{channel}.Sanitize()
	var conns []*pgx.Conn
	defer func() {
		for _, c := range conns {
			c.Close(context.WithoutCancel(ctx))
		}
	}()
	for _, pn := range pnodes {
		p, err := r.pool(ctx, pn.Name)
		if err != nil {
			return err
		}
		c, err := p.Acquire(ctx)
		if err != nil {
			return err
		}
		// A connection of its own: LISTEN belongs to the session, which
		// must not go back to the pool.
		conn := c.Hijack()
		conns = append(conns, conn)
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return listenErr(l, stmt, err)
		}
	}

	var mu sync.Mutex
	var wg sync.WaitGroup
	errc := make(chan error, len(conns))
	for _, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n, err := conn.WaitForNotification(ctx)
				if err != nil {
					errc <- err
					return
				}
				mu.Lock()
				err = s.write(map[string]string{"channel": n.Channel, "payload": n.Payload})
				s.flush()
				mu.Unlock()
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	if len(conns) == 0 {
		<-ctx.Done()
		errc <- ctx.Err()
	}
	err = <-errc
	cancel()
	wg.Wait()
	return listenErr(l, stmt, err)
}

// listenErr is how a listen ends: without error when it was stopped,
// with the shard's error as Moray's pgError names it otherwise.
func listenErr(l *listener, stmt string, err error) error {
	if l.stopped.Load() {
		return nil
	}
	if _, ok := shard.AsDBError(err); ok {
		return morayPGError(stmt, err)
	}
	return err
}

// morayUnlisten stops the listen RPC whose request id it names; an id no
// listen has is no error.
func morayUnlisten(ctx context.Context, r *Router, a rpcArgs, s *stream) error {
	if l, ok := r.listeners.Load(jsonString(a.a[0])); ok {
		l.(*listener).end()
	}
	return nil
}
