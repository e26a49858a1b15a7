// Package zktest runs a real ZooKeeper server for tests: Debian's
// zookeeper package, started in the foreground by the test itself (never
// the system service), on a free loopback port, with its own data dir.
package zktest

import (
	"fmt"
	"github.com/reshard/reshard/etcd/etcdtest"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
)

// classpath finds the server's jars. Debian's zookeeper.jar names its
// dependencies in its manifest, so it is the whole classpath;
// RESHARD_ZK_CLASSPATH points elsewhere (e.g. an Apache tarball's lib/*).
func classpath() (string, error) {
	if cp := os.Getenv("RESHARD_ZK_CLASSPATH"); cp != "" {
		return cp, nil
	}
	for _, jar := range []string{"/usr/share/java/zookeeper.jar", "/usr/share/zookeeper/zookeeper.jar"} {
		if _, err := os.Stat(jar); err == nil {
			return jar, nil
		}
	}
	return "", fmt.Errorf("no zookeeper.jar in /usr/share/java")
}

// Start runs a ZooKeeper server for one test and returns its address
// (127.0.0.1:PORT). It is killed when the test ends. When ZooKeeper is
// not installed or does not start, the test is skipped and says why.
func Start(t testing.TB) string {
	t.Helper()
	java, err := exec.LookPath("java")
	if err != nil {
		t.Skip("ZooKeeper tests need Java and Debian's zookeeper package: run scripts/install-deps.sh (or apt-get install zookeeper)")
	}
	cp, err := classpath()
	if err != nil {
		t.Skipf("ZooKeeper is not installed (%v): run scripts/install-deps.sh (or apt-get install zookeeper)", err)
	}
	dir := t.TempDir()
	port := etcdtest.FreePort(t)
	cfg := filepath.Join(dir, "zoo.cfg")
	conf := strings.Join([]string{
		"tickTime=500",
		"initLimit=10",
		"syncLimit=5",
		"dataDir=" + filepath.Join(dir, "data"),
		fmt.Sprintf("clientPort=%d", port),
		"clientPortAddress=127.0.0.1",
		"admin.enableServer=false",
		"maxClientCnxns=0",
		// A test server's data dies with it: no fsync per write.
		"forceSync=no",
		"",
	}, "\n")
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "zookeeper.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	// A small heap and the quick JIT tier: the server holds a few znodes,
	// and the machine is shared with PostgreSQL shards.
	cmd := exec.Command(java, "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-Dzookeeper.admin.enableServer=false", "-Dzookeeper.jmx.log4j.disable=true",
		"-cp", cp, "org.apache.zookeeper.server.quorum.QuorumPeerMain", cfg)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the test binary dies, the server goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Skipf("ZooKeeper did not start: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := waitSession(addr, exited, 60*time.Second); err != nil {
		b, _ := os.ReadFile(logPath)
		t.Skipf("ZooKeeper (%s) did not answer: %v; its log ends:\n%s", cp, err, tail(string(b), 1500))
	}
	return addr
}

// waitSession waits until a client gets a session: the server answers.
func waitSession(addr string, exited <-chan struct{}, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("the server exited")
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			if conn, err := Connect(addr, 10*time.Second); err == nil {
				conn.Close()
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("no session within %s", limit)
}

// Connect returns a plain client with a session, for a test to look at or
// change znodes behind reshard's back, as an operator with zkCli.sh would.
func Connect(addr string, wait time.Duration) (*zk.Conn, error) {
	conn, events, err := zk.Connect([]string{addr}, 10*time.Second, zk.WithLogInfo(false), zk.WithLogger(quiet{}))
	if err != nil {
		return nil, err
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case ev := <-events:
			if ev.State == zk.StateHasSession {
				return conn, nil
			}
		case <-timer.C:
			conn.Close()
			return nil, fmt.Errorf("no session with %s within %s", addr, wait)
		}
	}
}

// Client is Connect for a test that must have one.
func Client(t testing.TB, addr string) *zk.Conn {
	t.Helper()
	conn, err := Connect(addr, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	return conn
}

type quiet struct{}

func (quiet) Printf(string, ...any) {}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
