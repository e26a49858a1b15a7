package netdelay

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// queueMaxLen bounds how many packets the kernel holds for one queue. At
// lab delays (tens of ms) it is far above anything in flight; past it the
// queue fails open (see cfgFlagFailOpen).
const queueMaxLen = 8192

// held is one queued packet: its id and when it may go.
type held struct {
	id  uint32
	due time.Time
}

// Delayer holds every packet sent to one NFQUEUE queue of one network
// namespace for a fixed delay and then accepts it, in arrival order. It is
// the stand-in for `tc netem delay`, which this kernel lacks.
type Delayer struct {
	conn  *netlink.Conn
	queue uint16
	delay time.Duration
	early []held // packets queued before the bind was acknowledged
}

// NetnsPath is where `ip netns add NAME` keeps a namespace; a name that
// holds a slash is taken as a path already (e.g. /proc/PID/ns/net).
func NetnsPath(ns string) string {
	if strings.Contains(ns, "/") {
		return ns
	}
	return filepath.Join("/run/netns", ns)
}

// Open binds queue in namespace ns (an `ip netns` name or a path) to a new
// Delayer. When Open returns, the queue is bound: packets the rules send to
// it are delayed from then on (until then, --queue-bypass lets them through).
// ns "" is the calling thread's namespace.
//
// The socket is made inside ns by github.com/mdlayher/netlink's Config.NetNS,
// which creates it on a locked OS thread that has entered ns and then throws
// that thread away. A netlink socket stays in the namespace it was made in,
// so the rest of the Delayer runs on any thread; nothing else in the process
// ever runs in ns, which a hand-made setns on a shared thread could not
// promise. A separate process under nsenter would work too, but costs a
// process per queue to supervise.
func Open(ns string, queue uint16, delay time.Duration) (*Delayer, error) {
	cfg := &netlink.Config{}
	if ns != "" {
		f, err := os.Open(NetnsPath(ns))
		if err != nil {
			return nil, fmt.Errorf("netdelay: namespace %q: %w", ns, err)
		}
		defer f.Close()
		cfg.NetNS = int(f.Fd())
	}
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, fmt.Errorf("netdelay: netfilter socket in %q: %w", ns, err)
	}
	d := &Delayer{conn: conn, queue: queue, delay: delay}
	if err := d.bind(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("netdelay: bind queue %d in %q: %w", queue, ns, err)
	}
	return d, nil
}

func (d *Delayer) bind() error {
	// A lost notification costs nothing lasting (the next batch verdict
	// accepts its packet), whereas ENOBUFS would end the read loop.
	if err := d.conn.SetOption(netlink.NoENOBUFS, true); err != nil {
		return err
	}
	if err := d.conn.SetReadBuffer(4 << 20); err != nil {
		return err
	}
	m, err := configMessage(d.queue, queueMaxLen)
	if err != nil {
		return err
	}
	// Packets can be queued as soon as the kernel has bound the queue, before
	// the ack is read, so this reads by hand instead of Execute, which would
	// reject them as replies out of sequence.
	req, err := d.conn.Send(m)
	if err != nil {
		return err
	}
	if err := d.conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	defer d.conn.SetReadDeadline(time.Time{})
	for {
		msgs, err := d.conn.Receive() // an error reply (EBUSY: queue bound by another socket) comes back as err
		if err != nil {
			return err
		}
		now := time.Now()
		for _, m := range msgs {
			if m.Header.Type == netlink.Error && m.Header.Sequence == req.Header.Sequence {
				return nil
			}
			id, ok, err := packetID(m)
			if err != nil {
				return err
			}
			if ok {
				d.early = append(d.early, held{id: id, due: now.Add(d.delay)})
			}
		}
	}
}

// Close releases the queue without running; packets still held are dropped
// by the kernel, and later ones bypass the queue.
func (d *Delayer) Close() error { return d.conn.Close() }

// Run delays packets until ctx is done, then accepts everything still held
// and closes the queue; it returns nil then, or the error that stopped it.
//
// Each packet waits delay from when it was read, independently of the others
// (a burst of N packets each waits ~delay, not N*delay), and packets are
// accepted in the order they were queued.
func (d *Delayer) Run(ctx context.Context) error {
	defer d.conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// As large as the kernel queue, so the reader never waits on the releaser
	// while the kernel still has room.
	ch := make(chan held, queueMaxLen+len(d.early))
	for _, h := range d.early {
		ch <- h
	}
	d.early = nil

	readErr := make(chan error, 1)
	go func() {
		err := d.read(ctx, ch)
		cancel()
		readErr <- err
	}()
	relErr := release(ctx, ch, d.acceptUpTo)
	cancel()
	d.conn.Close() // ends the reader's Receive
	// A failed read is the cause when both failed: it stopped the releaser,
	// whose last verdict then went to a broken socket.
	if rerr := <-readErr; rerr != nil {
		return rerr
	}
	return relErr
}

func (d *Delayer) acceptUpTo(id uint32) error {
	m, err := acceptUpToMessage(d.queue, id)
	if err != nil {
		return err
	}
	_, err = d.conn.Send(m)
	return err
}

// read turns queued-packet notifications into held packets due after delay.
func (d *Delayer) read(ctx context.Context, out chan<- held) error {
	for {
		msgs, err := d.conn.Receive()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// ENOENT answers a batch verdict whose packets the kernel had
			// already let go (e.g. an interface went down): nothing to do.
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return fmt.Errorf("netdelay: queue %d: %w", d.queue, err)
		}
		now := time.Now()
		for _, m := range msgs {
			id, ok, err := packetID(m)
			if err != nil {
				return fmt.Errorf("netdelay: queue %d: %w", d.queue, err)
			}
			if !ok {
				continue
			}
			select {
			case out <- held{id: id, due: now.Add(d.delay)}:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// release accepts the packets from in, in order, each once it is due. All
// packets already due when one is released go out with it in one batch
// verdict, so a burst costs one verdict, not one timer per packet. When ctx
// is done it accepts whatever is still held at once: a delayer that stops
// must not drop traffic.
func release(ctx context.Context, in <-chan held, accept func(upTo uint32) error) error {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()

	// flush accepts everything read so far, last being the newest packet
	// already taken from in (if any).
	flush := func(last uint32, have bool) error {
		for drained := false; !drained; {
			select {
			case h := <-in:
				last, have = h.id, true
			default:
				drained = true
			}
		}
		if !have {
			return nil
		}
		return accept(last)
	}

	var next held
	haveNext := false
	for {
		if !haveNext {
			select {
			case <-ctx.Done():
				return flush(0, false)
			case next = <-in:
			}
		}
		haveNext = false
		if wait := time.Until(next.due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return flush(next.id, true)
			case <-timer.C:
			}
		}
		upTo := next.id
	coalesce:
		for {
			select {
			case h := <-in:
				if h.due.After(time.Now()) {
					next, haveNext = h, true
					break coalesce
				}
				upTo = h.id
			default:
				break coalesce
			}
		}
		if err := accept(upTo); err != nil {
			return err
		}
	}
}

// Run binds queue in namespace ns and delays its packets by delay until ctx
// is done (see Open and Delayer.Run).
func Run(ctx context.Context, ns string, queue uint16, delay time.Duration) error {
	d, err := Open(ns, queue, delay)
	if err != nil {
		return err
	}
	return d.Run(ctx)
}

// OpenRules opens one Delayer per queue named by rules in ns. Once it
// returns, every queue is bound, which is when a lab host may report ready.
func OpenRules(ns string, rules []Rule) ([]*Delayer, error) {
	delays := map[uint16]time.Duration{}
	var queues []uint16
	for _, r := range rules {
		if d, ok := delays[r.Queue]; ok {
			if d != r.Delay {
				return nil, fmt.Errorf("netdelay: queue %d given delays %v and %v", r.Queue, d, r.Delay)
			}
			continue
		}
		delays[r.Queue] = r.Delay
		queues = append(queues, r.Queue)
	}
	var ds []*Delayer
	for _, q := range queues {
		d, err := Open(ns, q, delays[q])
		if err != nil {
			for _, o := range ds {
				o.Close()
			}
			return nil, err
		}
		ds = append(ds, d)
	}
	return ds, nil
}

// RunAll runs the delayers until ctx is done or one of them fails, which
// stops the others; it returns the first failure.
func RunAll(ctx context.Context, delayers []*Delayer) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, d := range delayers {
		g.Go(func() error { return d.Run(ctx) })
	}
	return g.Wait()
}
