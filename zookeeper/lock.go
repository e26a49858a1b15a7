// Package zookeeper keeps RFD 103's dump lock where Manta's own dumps look
// for it: a persistent znode, /pg_dump_lock by default, whose data names
// its holder (step 5 is `zkCli.sh create /pg_dump_lock NAME`). Manatee's
// dump job skips its run while the node exists, whoever made it.
package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"
)

// DefaultPath is where Manatee's dump job looks.
const DefaultPath = "/pg_dump_lock"

// ErrHeld means the znode exists with another holder's data.
var ErrHeld = errors.New("dump lock znode held")

// HeldError says who holds the znode.
type HeldError struct {
	Path   string
	Holder string
	Since  time.Time // when the holder's data was written
}

func (e *HeldError) Error() string {
	// %q: the data is whatever someone typed into zkCli.sh, and the error
	// must stay one line.
	return fmt.Sprintf("znode %s is held by %q since %s", e.Path, e.Holder, e.Since.UTC().Format(time.RFC3339))
}

func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// ParseServers reads "HOST:PORT,HOST:PORT", the form Manta's configs and
// zkCli.sh use. A missing port is ZooKeeper's 2181.
func ParseServers(s string) ([]string, error) {
	var out []string
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		bad := fmt.Errorf("invalid ZooKeeper server %q: use HOST:PORT", part)
		host, port, err := net.SplitHostPort(part)
		if err != nil {
			bracketed := strings.HasPrefix(part, "[") && strings.HasSuffix(part, "]")
			if strings.Contains(part, ":") && !bracketed {
				return nil, bad
			}
			host, port = strings.Trim(part, "[]"), "2181"
		}
		if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 || host == "" || strings.ContainsAny(host, " /@[]") {
			return nil, bad
		}
		out = append(out, net.JoinHostPort(host, port))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no ZooKeeper servers in %q: use HOST:PORT[,HOST:PORT...]", s)
	}
	return out, nil
}

// ValidatePath checks a znode path the way the server would, so a typo is
// refused before a job starts rather than at its dump-lock phase.
func ValidatePath(p string) error {
	if !strings.HasPrefix(p, "/") || p == "/" || strings.HasSuffix(p, "/") {
		return fmt.Errorf("invalid znode path %q: use an absolute path such as %s", p, DefaultPath)
	}
	for _, c := range strings.Split(p[1:], "/") {
		if c == "" || c == "." || c == ".." || strings.ContainsAny(c, "\x00\n\r") {
			return fmt.Errorf("invalid znode path %q: use an absolute path such as %s", p, DefaultPath)
		}
	}
	if p == "/zookeeper" || strings.HasPrefix(p, "/zookeeper/") {
		return fmt.Errorf("invalid znode path %q: /zookeeper is ZooKeeper's own", p)
	}
	return nil
}

// Lock is the dump lock znode on one ZooKeeper ensemble.
type Lock struct {
	conn    *zk.Conn
	servers string
	path    string
}

// Timeouts: how long to wait for a session, and for one request. A request
// only hangs while the client reconnects, so these bound an outage, not
// normal work.
var (
	SessionWait    = 10 * time.Second
	RequestTimeout = 15 * time.Second
)

// quiet drops the client library's log lines: they would interleave with
// a command's output, and every failure comes back as an error anyway.
type quiet struct{}

func (quiet) Printf(string, ...any) {}

// Dial connects to servers and waits for a session, so an unreachable
// ensemble fails here with one clear line instead of at the first request.
func Dial(ctx context.Context, servers []string, path string) (*Lock, error) {
	if err := ValidatePath(path); err != nil {
		return nil, err
	}
	name := strings.Join(servers, ",")
	if len(servers) == 0 {
		return nil, fmt.Errorf("no ZooKeeper servers given")
	}
	conn, events, err := zk.Connect(servers, 10*time.Second, zk.WithLogger(quiet{}), zk.WithLogInfo(false))
	if err != nil {
		return nil, fmt.Errorf("ZooKeeper %s: %v", name, err)
	}
	timer := time.NewTimer(SessionWait)
	defer timer.Stop()
	for {
		select {
		case ev := <-events:
			if ev.State == zk.StateHasSession {
				return &Lock{conn: conn, servers: name, path: path}, nil
			}
			if ev.State == zk.StateAuthFailed {
				conn.Close()
				return nil, fmt.Errorf("ZooKeeper %s: authentication failed", name)
			}
		case <-timer.C:
			conn.Close()
			return nil, fmt.Errorf("ZooKeeper %s: no session after %s (is it running and reachable?)", name, SessionWait)
		case <-ctx.Done():
			conn.Close()
			return nil, fmt.Errorf("ZooKeeper %s: %w", name, ctx.Err())
		}
	}
}

// Close ends the session. The znode is persistent: it stays.
func (l *Lock) Close() { l.conn.Close() }

// Path is the znode's path.
func (l *Lock) Path() string { return l.path }

// Servers is the ensemble, as given.
func (l *Lock) Servers() string { return l.servers }

// do runs one request, giving up when ctx ends or the request outlasts
// RequestTimeout. The client takes no contexts; an abandoned request ends
// when the connection is closed.
func (l *Lock) do(ctx context.Context, what string, fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	timer := time.NewTimer(RequestTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		return fmt.Errorf("ZooKeeper %s: %s %s: no answer after %s", l.servers, what, l.path, RequestTimeout)
	case <-ctx.Done():
		return fmt.Errorf("ZooKeeper %s: %s %s: %w", l.servers, what, l.path, ctx.Err())
	}
}

func (l *Lock) fail(what string, err error) error {
	if strings.HasPrefix(err.Error(), "ZooKeeper ") {
		return err
	}
	return fmt.Errorf("ZooKeeper %s: %s %s: %v", l.servers, what, l.path, err)
}

func (l *Lock) get(ctx context.Context) (data []byte, stat *zk.Stat, err error) {
	err = l.do(ctx, "read", func() error {
		var e error
		data, stat, e = l.conn.Get(l.path)
		return e
	})
	return data, stat, err
}

// Acquire creates the znode with holder as its data. A node that already
// holds holder is this holder's from before (a resumed job): that is
// success. A node with other data is refused with a *HeldError.
func (l *Lock) Acquire(ctx context.Context, holder string) error {
	// A node deleted between our create and our read is just tried again;
	// the bound only stops a pathological flapping holder.
	for range 10 {
		err := l.do(ctx, "create", func() error {
			_, e := l.conn.Create(l.path, []byte(holder), 0, zk.WorldACL(zk.PermAll))
			return e
		})
		switch {
		case err == nil:
			return nil
		case errors.Is(err, zk.ErrNoNode):
			// Creating the parents would write structure into someone
			// else's tree: a wrong --zookeeper-path is the likelier cause.
			return fmt.Errorf("ZooKeeper %s: create %s: its parent znode does not exist", l.servers, l.path)
		case !errors.Is(err, zk.ErrNodeExists):
			return l.fail("create", err)
		}
		data, stat, err := l.get(ctx)
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return l.fail("read", err)
		}
		if string(data) == holder {
			return nil
		}
		return &HeldError{Path: l.path, Holder: string(data), Since: time.UnixMilli(stat.Mtime)}
	}
	return fmt.Errorf("ZooKeeper %s: %s keeps appearing and disappearing; not taking it", l.servers, l.path)
}

// Release deletes the znode only while its data is still holder, and only
// at the version it read, so a holder that replaced the data in between is
// never clobbered. It reports whether it deleted the node.
func (l *Lock) Release(ctx context.Context, holder string) (bool, error) {
	for range 10 {
		data, stat, err := l.get(ctx)
		if errors.Is(err, zk.ErrNoNode) {
			return false, nil
		}
		if err != nil {
			return false, l.fail("read", err)
		}
		if string(data) != holder {
			return false, nil
		}
		err = l.do(ctx, "delete", func() error { return l.conn.Delete(l.path, stat.Version) })
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, zk.ErrNoNode):
			return false, nil
		case errors.Is(err, zk.ErrBadVersion):
			continue // changed since the read: look again
		case errors.Is(err, zk.ErrNotEmpty):
			return false, fmt.Errorf("ZooKeeper %s: %s has children; not deleting it", l.servers, l.path)
		default:
			return false, l.fail("delete", err)
		}
	}
	return false, fmt.Errorf("ZooKeeper %s: %s keeps changing; not deleting it", l.servers, l.path)
}

// Holder reads the znode: its data and when it was written, or ok false
// when there is none.
func (l *Lock) Holder(ctx context.Context) (holder string, since time.Time, ok bool, err error) {
	data, stat, err := l.get(ctx)
	if errors.Is(err, zk.ErrNoNode) {
		return "", time.Time{}, false, nil
	}
	if err != nil {
		return "", time.Time{}, false, l.fail("read", err)
	}
	return string(data), time.UnixMilli(stat.Mtime).UTC(), true, nil
}
