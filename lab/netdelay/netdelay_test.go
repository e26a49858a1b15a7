package netdelay

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	addrA = "10.250.0.1"
	addrB = "10.250.0.2"
)

func requireNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and iptables rules")
	}
	for _, bin := range []string{"ip", IptablesCmd} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s (apt-get install iproute2 iptables): %v", bin, err)
		}
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// vethPair makes two namespaces joined by a veth pair, A at addrA and B at
// addrB, and deletes them (and so the veth and any rules) when the test ends.
// The pid in the names keeps concurrent runs apart.
func vethPair(t *testing.T) (a, b string) {
	t.Helper()
	a = fmt.Sprintf("rsdtA%d", os.Getpid())
	b = fmt.Sprintf("rsdtB%d", os.Getpid())
	for _, ns := range []string{a, b} {
		exec.Command("ip", "netns", "del", ns).Run() // left over by a killed run
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", ns, err, out)
			}
		})
	}
	// Both ends are made directly inside their namespaces: nothing appears
	// in the root namespace, not even for a moment.
	run(t, "ip", "link", "add", "vA", "netns", a, "type", "veth", "peer", "name", "vB", "netns", b)
	run(t, "ip", "-n", a, "addr", "add", addrA+"/24", "dev", "vA")
	run(t, "ip", "-n", b, "addr", "add", addrB+"/24", "dev", "vB")
	for _, l := range [][2]string{{a, "vA"}, {b, "vB"}, {a, "lo"}, {b, "lo"}} {
		run(t, "ip", "-n", l[0], "link", "set", l[1], "up")
	}
	return a, b
}

// inNetns runs fn on an OS thread that has entered namespace ns, so sockets
// fn makes belong to ns. The thread stays locked and so dies with the
// goroutine: no other goroutine ever runs in ns by accident.
func inNetns(ns string, fn func() error) error {
	f, err := os.Open(NetnsPath(ns))
	if err != nil {
		return err
	}
	defer f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// servers starts, in B, an echo server and a sink that answers one byte
// once the client has closed its side; they stop when the test ends.
func servers(t *testing.T, b string) (echo, sink string) {
	t.Helper()
	var le, ls net.Listener
	err := inNetns(b, func() (err error) {
		if le, err = net.Listen("tcp", addrB+":0"); err != nil {
			return err
		}
		ls, err = net.Listen("tcp", addrB+":0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { le.Close(); ls.Close() })
	serve := func(l net.Listener, h func(net.Conn)) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); h(c) }()
		}
	}
	go serve(le, func(c net.Conn) { io.Copy(c, c) })
	go serve(ls, func(c net.Conn) {
		if _, err := io.Copy(io.Discard, c); err == nil {
			c.Write([]byte{1})
		}
	})
	return le.Addr().String(), ls.Addr().String()
}

type rtts struct{ connect, echo time.Duration }

// measure dials the echo server from A n times and returns the median time
// of the TCP connect (one round trip: SYN, SYN-ACK) and of a one-byte echo
// on the open connection (one more).
func measure(t *testing.T, a, echo string, n int) rtts {
	t.Helper()
	var cs, es []time.Duration
	err := inNetns(a, func() error {
		buf := []byte{0}
		for range n {
			t0 := time.Now()
			c, err := net.DialTimeout("tcp", echo, 5*time.Second)
			if err != nil {
				return err
			}
			t1 := time.Now()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(buf); err != nil {
				c.Close()
				return err
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				c.Close()
				return err
			}
			t2 := time.Now()
			c.Close()
			cs, es = append(cs, t1.Sub(t0)), append(es, t2.Sub(t1))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	median := func(d []time.Duration) time.Duration { slices.Sort(d); return d[len(d)/2] }
	return rtts{median(cs), median(es)}
}

// transfer sends size bytes from A to the sink over one connection and
// returns how long until the sink confirmed it had them all.
func transfer(t *testing.T, a, sink string, size int) time.Duration {
	t.Helper()
	var took time.Duration
	err := inNetns(a, func() error {
		t0 := time.Now()
		c, err := net.DialTimeout("tcp", sink, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.Copy(c, bytes.NewReader(make([]byte, size))); err != nil {
			return err
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			return err
		}
		took = time.Since(t0)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return took
}

func TestDelayAddsLatency(t *testing.T) {
	requireNetns(t)
	a, b := vethPair(t)
	echo, sink := servers(t, b)
	const (
		delay = 10 * time.Millisecond
		n     = 20
		size  = 2 << 20
	)

	base := measure(t, a, echo, n)
	baseXfer := transfer(t, a, sink, size)
	t.Logf("no delay: connect %v, echo %v; %d MB in %v", base.connect, base.echo, size>>20, baseXfer)

	// Each way once: A delays what it receives from B, B what it receives
	// from A.
	sides := []struct {
		ns    string
		rules []Rule
	}{
		{a, []Rule{{Queue: 3, From: []string{addrB}, Delay: delay}}},
		{b, []Rule{{Queue: 3, From: []string{addrA + "/32"}, Delay: delay}}},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, len(sides))
	for _, s := range sides {
		if err := Install(s.ns, s.rules); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := Remove(s.ns, s.rules); err != nil {
				t.Error(err)
			}
		})
		// Installing twice must not add a second copy.
		if err := Install(s.ns, s.rules); err != nil {
			t.Fatal(err)
		}
		ds, err := OpenRules(s.ns, s.rules)
		if err != nil {
			t.Fatal(err)
		}
		go func() { errs <- RunAll(ctx, ds) }()
	}

	slow := measure(t, a, echo, n)
	slowXfer := transfer(t, a, sink, size)
	t.Logf("%v each way: connect %v, echo %v; %d MB in %v", delay, slow.connect, slow.echo, size>>20, slowXfer)

	for _, c := range []struct {
		what       string
		base, slow time.Duration
	}{{"connect", base.connect, slow.connect}, {"echo", base.echo, slow.echo}} {
		// One round trip crosses each delayer once: ~2*delay more.
		if rise := c.slow - c.base; rise < 18*time.Millisecond || rise >= 60*time.Millisecond {
			t.Errorf("%s round trip rose by %v (%v -> %v), want 18-60 ms", c.what, rise, c.base, c.slow)
		}
	}
	// A delayer that slept per packet would take minutes for ~1400 segments.
	if slowXfer > 3*time.Second {
		t.Errorf("%d MB took %v with the delay, want under 3 s", size>>20, slowXfer)
	}

	// With the delayers gone but the rules still in place, --queue-bypass
	// lets traffic through undelayed: no partition.
	cancel()
	for range sides {
		if err := <-errs; err != nil {
			t.Errorf("delayer: %v", err)
		}
	}
	after := measure(t, a, echo, 5)
	t.Logf("delayers stopped, rules in place: connect %v, echo %v", after.connect, after.echo)
	if after.echo >= 10*time.Millisecond {
		t.Errorf("echo %v after the delayers stopped, want undelayed", after.echo)
	}
}
