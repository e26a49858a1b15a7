package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/reshard/reshard/postgres"
)

// pg runs the PostgreSQL binaries of one lab.
type pg struct {
	bin  string
	as   runAs
	logs string // directory for server logs
}

func newPG(logs string) (*pg, error) {
	bin, err := postgres.BinDir()
	if err != nil {
		return nil, err
	}
	as, err := currentRunAs()
	if err != nil {
		return nil, err
	}
	return &pg{bin: bin, as: as, logs: logs}, nil
}

// writeConf writes the settings the lab owns into reshard.conf, which
// postgresql.conf includes. pg_basebackup copies it, so every peer rewrites
// it with its own port and role. It reports whether the file changed: a
// reload that changes nothing costs a connection, and the physical
// strategy reconfigures peers inside its write block.
func (g *pg) writeConf(p Peer, syncName string, upstream *Peer) (bool, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "# written by reshard lab; edits are overwritten\n")
	fmt.Fprintf(&b, "listen_addresses = '%s'\nport = %d\n", p.host(), p.Port)
	fmt.Fprintf(&b, "unix_socket_directories = ''\n")
	fmt.Fprintf(&b, "cluster_name = '%s'\n", p.Name)
	b.WriteString(`wal_level = logical
max_wal_senders = 20
max_replication_slots = 20
max_worker_processes = 16
max_logical_replication_workers = 8
max_sync_workers_per_subscription = 2
hot_standby = on
hot_standby_feedback = on
wal_keep_size = '512MB'
shared_buffers = '64MB'
max_connections = 200
logging_collector = off
log_line_prefix = '%m [%p] '
log_min_messages = warning
`)
	if syncName != "" {
		fmt.Fprintf(&b, "synchronous_standby_names = '\"%s\"'\n", syncName)
	} else {
		b.WriteString("synchronous_standby_names = ''\n")
	}
	if upstream != nil {
		fmt.Fprintf(&b, "primary_conninfo = 'host=%s port=%d user=postgres application_name=%s'\n", upstream.host(), upstream.Port, p.Name)
	} else {
		b.WriteString("primary_conninfo = ''\n")
	}
	path := filepath.Join(p.DataDir, "reshard.conf")
	if old, err := os.ReadFile(path); err == nil && string(old) == b.String() {
		return false, nil
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return false, err
	}
	return true, g.as.chown(path)
}

// initPrimary creates a new cluster for a primary.
func (g *pg) initPrimary(p Peer) error {
	if err := g.as.run(filepath.Dir(p.DataDir), filepath.Join(g.bin, "initdb"),
		"-D", p.DataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		return err
	}
	conf := filepath.Join(p.DataDir, "postgresql.conf")
	f, err := os.OpenFile(conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err = f.WriteString("\ninclude_if_exists = 'reshard.conf'\n"); err != nil {
		return err
	}
	// initdb trusts loopback only; a lab of hosts reaches its peers (and
	// they each other, for replication) on the lab's own subnets.
	hba, err := os.OpenFile(filepath.Join(p.DataDir, "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer hba.Close()
	_, err = fmt.Fprintf(hba, "\nhost all all %[1]s trust\nhost replication all %[1]s trust\n", labSubnets)
	return err
}

// initStandby copies upstream with pg_basebackup and makes it a standby.
func (g *pg) initStandby(p Peer, upstream Peer) error {
	if err := g.as.run(filepath.Dir(p.DataDir), filepath.Join(g.bin, "pg_basebackup"),
		"-h", upstream.host(), "-p", fmt.Sprint(upstream.Port), "-U", "postgres",
		"-D", p.DataDir, "-X", "stream", "-c", "fast", "--no-sync"); err != nil {
		return err
	}
	signal := filepath.Join(p.DataDir, "standby.signal")
	if err := os.WriteFile(signal, nil, 0o600); err != nil {
		return err
	}
	return g.as.chown(signal)
}

// start runs the server detached from this process, so it outlives the
// command that started it, and waits until it accepts connections.
func (g *pg) start(ctx context.Context, p *Peer) error {
	// The port was free when the lab chose it, but another process (a
	// second lab, in tests run side by side) may have bound it since: then
	// this server cannot listen, and it moves to another free port.
	for attempt := 1; ; attempt++ {
		err := g.startOnce(ctx, p)
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			return err
		}
		port, perr := freePort()
		if perr != nil {
			return err
		}
		p.Port = port
	}
}

// errPortTaken: a server could not listen because its port is in use.
var errPortTaken = errors.New("port in use")

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startOnce starts the server on p.Port (given on the command line, so it
// wins over the configuration file) and waits until it answers there. It
// is ready only when the server that answers has p's data directory: a
// connection alone could reach another server that holds the port.
func (g *pg) startOnce(ctx context.Context, p *Peer) error {
	logf, err := os.OpenFile(filepath.Join(g.logs, p.Name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	logStart, _ := logf.Seek(0, io.SeekEnd)
	cmd := g.as.commandIn(p.Place, filepath.Dir(p.DataDir), filepath.Join(g.bin, "postgres"), "-D", p.DataDir, "-p", strconv.Itoa(p.Port))
	cmd.SysProcAttr.Setsid = true
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	p.PID = cmd.Process.Pid
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }() // reap it if it dies while we live
	deadline := time.Now().Add(60 * time.Second)
	for {
		if ours, err := serves(ctx, p); err == nil && ours {
			return nil
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logf.Name())
			if int64(len(b)) > logStart {
				b = b[logStart:]
			}
			if strings.Contains(string(b), "could not bind") || strings.Contains(string(b), "already in use") {
				return fmt.Errorf("%s: port %d: %w", p.Name, p.Port, errPortTaken)
			}
			return fmt.Errorf("%s exited while starting: %s", p.Name, lastLines(string(b), 3))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not accept connections within 60s (see %s)", p.Name, logf.Name())
		}
	}
}

// serves reports whether the server answering on p's port is p's own.
func serves(ctx context.Context, p *Peer) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := postgres.Connect(cctx, p.dsn("postgres"))
	if err != nil {
		return false, err
	}
	defer conn.Close(ctx)
	dir, err := postgres.DataDirectory(cctx, conn)
	if err != nil {
		return false, err
	}
	return sameDir(dir, p.DataDir), nil
}

func sameDir(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	ra, errA := filepath.EvalSymlinks(a)
	rb, errB := filepath.EvalSymlinks(b)
	return errA == nil && errB == nil && ra == rb
}

// stop shuts a peer down with PostgreSQL's fast mode (SIGINT), which
// disconnects clients and checkpoints, and kills it if that takes too long.
func (g *pg) stop(p Peer) {
	pid := postmasterPID(p.DataDir)
	if pid == 0 {
		pid = p.PID
	}
	if pid != 0 && isPostgres(pid) {
		stopPID(pid, syscall.SIGINT, 30*time.Second)
	}
}

// postmasterPID reads the running server's pid from its data directory.
func postmasterPID(dataDir string) int {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	var pid int
	fmt.Sscanf(string(b), "%d", &pid)
	return pid
}

// isPostgres guards against signalling a reused pid.
func isPostgres(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(b), "postgres")
}

// waitStreaming waits until upstream reports name as a streaming standby,
// and as its synchronous one when sync is set and upstream is a primary. A
// standby has no synchronous standbys; its sync follower becomes one the
// moment it is promoted.
func waitStreaming(ctx context.Context, upstream Peer, name string, sync bool) error {
	conn, err := postgres.Connect(ctx, upstream.DSN())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if sync {
		standby, err := postgres.InRecovery(ctx, conn)
		if err != nil {
			return err
		}
		sync = !standby
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		streaming, err := postgres.IsStreaming(ctx, conn, name, sync)
		if err != nil {
			return err
		}
		if streaming {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is not streaming from %s after 60s", name, upstream.Name)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
