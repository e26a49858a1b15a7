// Package pgserver runs PostgreSQL servers on one host: initdb, base
// backups, configuration, start and stop. The lab runs its peers with it on
// this machine; a host agent runs the peers of its host.
package pgserver

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

// Bin runs one installation's PostgreSQL binaries.
type Bin struct {
	Dir  string // initdb, postgres, pg_basebackup
	As   RunAs
	Logs string // directory for server logs, one NAME.log per server
}

// New finds the binaries (dir, or postgres.BinDir when empty) and the user
// to run them as.
func New(dir, logs string) (*Bin, error) {
	if dir == "" {
		var err error
		if dir, err = postgres.BinDir(); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "postgres")); err != nil {
		return nil, fmt.Errorf("no PostgreSQL server in %s: %w", dir, err)
	}
	as, err := CurrentRunAs()
	if err != nil {
		return nil, err
	}
	return &Bin{Dir: dir, As: as, Logs: logs}, nil
}

// Server is one PostgreSQL server: its name (cluster_name and the
// application_name it streams as), port, data directory and place.
type Server struct {
	Name    string
	Port    int
	DataDir string
	PID     int // the postmaster's, once started
	Place
}

// DSN reaches database on the server. Servers run here trust their
// networks, so the DSN holds no password.
func (s Server) DSN(database string) string {
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", net.JoinHostPort(s.Host(), strconv.Itoa(s.Port)), database)
}

// WriteConf writes the settings reshard owns into reshard.conf, which
// postgresql.conf includes. pg_basebackup copies it, so every server
// rewrites it with its own port and role. It reports whether the file
// changed: a reload that changes nothing costs a connection, and the
// physical strategy reconfigures peers inside its write block.
func (b *Bin) WriteConf(s Server, syncName string, upstream *Server) (bool, error) {
	var c strings.Builder
	fmt.Fprintf(&c, "# written by reshard; edits are overwritten\n")
	fmt.Fprintf(&c, "listen_addresses = '%s'\nport = %d\n", s.Host(), s.Port)
	fmt.Fprintf(&c, "unix_socket_directories = ''\n")
	fmt.Fprintf(&c, "cluster_name = '%s'\n", s.Name)
	c.WriteString(`wal_level = logical
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
		fmt.Fprintf(&c, "synchronous_standby_names = '\"%s\"'\n", syncName)
	} else {
		c.WriteString("synchronous_standby_names = ''\n")
	}
	if upstream != nil {
		fmt.Fprintf(&c, "primary_conninfo = 'host=%s port=%d user=postgres application_name=%s'\n", upstream.Host(), upstream.Port, s.Name)
	} else {
		c.WriteString("primary_conninfo = ''\n")
	}
	path := filepath.Join(s.DataDir, "reshard.conf")
	if old, err := os.ReadFile(path); err == nil && string(old) == c.String() {
		return false, nil
	}
	if err := os.WriteFile(path, []byte(c.String()), 0o600); err != nil {
		return false, err
	}
	return true, b.As.Chown(path)
}

// InitPrimary creates a new cluster for a primary whose pg_hba trusts
// trustCIDR (the hosts of a lab) besides loopback.
func (b *Bin) InitPrimary(s Server, trustCIDR string) error {
	if err := b.As.Run(filepath.Dir(s.DataDir), filepath.Join(b.Dir, "initdb"),
		"-D", s.DataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		return err
	}
	conf := filepath.Join(s.DataDir, "postgresql.conf")
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
	hba, err := os.OpenFile(filepath.Join(s.DataDir, "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer hba.Close()
	_, err = fmt.Fprintf(hba, "\nhost all all %[1]s trust\nhost replication all %[1]s trust\n", trustCIDR)
	return err
}

// Backup tunes InitStandby's pg_basebackup.
type Backup struct {
	// PIDFile, when set, records pg_basebackup's pid while it runs, and
	// pg_basebackup runs in a process group of its own, so a later process
	// can kill it and its WAL streamer (KillBackup) when the one that
	// started it died.
	PIDFile string
	// MaxRate is pg_basebackup's --max-rate (e.g. "1M"); empty: unlimited.
	MaxRate string
}

// InitStandby copies upstream with pg_basebackup and makes it a standby.
// Cancelling ctx kills pg_basebackup.
func (b *Bin) InitStandby(ctx context.Context, s Server, upstream Server, opt Backup) error {
	args := []string{"-h", upstream.Host(), "-p", strconv.Itoa(upstream.Port), "-U", "postgres",
		"-D", s.DataDir, "-X", "stream", "-c", "fast", "--no-sync"}
	if opt.MaxRate != "" {
		args = append(args, "--max-rate", opt.MaxRate)
	}
	if err := b.basebackup(ctx, filepath.Dir(s.DataDir), opt.PIDFile, args); err != nil {
		return err
	}
	signal := filepath.Join(s.DataDir, "standby.signal")
	if err := os.WriteFile(signal, nil, 0o600); err != nil {
		return err
	}
	return b.As.Chown(signal)
}

func (b *Bin) basebackup(ctx context.Context, dir, pidFile string, args []string) error {
	name := filepath.Join(b.Dir, "pg_basebackup")
	if pidFile == "" && ctx.Done() == nil {
		return b.As.Run(dir, name, args...)
	}
	cmd := b.As.Command(dir, name, args...)
	cmd.SysProcAttr.Setpgid = true
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pg_basebackup: %w", err)
	}
	pid := cmd.Process.Pid
	if pidFile != "" {
		if err := os.WriteFile(pidFile, []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
			killGroup(pid)
			cmd.Wait()
			return err
		}
		defer os.Remove(pidFile)
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			killGroup(pid)
		case <-done:
		}
	}()
	if err := cmd.Wait(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("pg_basebackup: %w", ctx.Err())
		}
		return fmt.Errorf("pg_basebackup: %v: %s", err, LastLines(out.String(), 5))
	}
	return nil
}

// killGroup kills the process group that pid leads.
func killGroup(pid int) { _ = syscall.Kill(-pid, syscall.SIGKILL) }

// KillBackup kills the pg_basebackup recorded in pidFile, and the process
// group it leads, if it still runs, and removes the file. It reports
// whether there was one to kill.
func KillBackup(pidFile string) (bool, error) {
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	killed := false
	// The pid may since have been reused by another program: only a
	// pg_basebackup is killed.
	if pid > 0 && Alive(pid) && isProgram(pid, "pg_basebackup") {
		killGroup(pid)
		for i := 0; i < 200 && Alive(pid); i++ {
			time.Sleep(25 * time.Millisecond)
		}
		if Alive(pid) {
			return false, fmt.Errorf("pg_basebackup %d survived SIGKILL", pid)
		}
		killed = true
	}
	return killed, os.Remove(pidFile)
}

// isProgram reports whether pid's command line names program.
func isProgram(pid int, program string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(b), program)
}

// Start runs the server detached from this process, so it outlives the
// command that started it, and waits until it accepts connections.
func (b *Bin) Start(ctx context.Context, s *Server) error {
	// The port was free when it was chosen, but another process (a second
	// lab, in tests run side by side) may have bound it since: then this
	// server cannot listen, and it moves to another free port.
	for attempt := 1; ; attempt++ {
		err := b.startOnce(ctx, s)
		if !errors.Is(err, ErrPortTaken) || attempt == 3 {
			return err
		}
		// Looked for on loopback, as before there were hosts: a lab host's
		// address is not this namespace's to bind.
		port, perr := FreePort("127.0.0.1")
		if perr != nil {
			return err
		}
		s.Port = port
	}
}

// ErrPortTaken means a server could not listen because its port is in use.
var ErrPortTaken = errors.New("port in use")

// FreePort is a TCP port free on host now.
func FreePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startOnce starts the server on s.Port (given on the command line, so it
// wins over the configuration file) and waits until it answers there. It
// is ready only when the server that answers has s's data directory: a
// connection alone could reach another server that holds the port.
func (b *Bin) startOnce(ctx context.Context, s *Server) error {
	logf, err := os.OpenFile(filepath.Join(b.Logs, s.Name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	logStart, _ := logf.Seek(0, io.SeekEnd)
	cmd := b.As.CommandIn(s.Place, filepath.Dir(s.DataDir), filepath.Join(b.Dir, "postgres"), "-D", s.DataDir, "-p", strconv.Itoa(s.Port))
	cmd.SysProcAttr.Setsid = true
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.Name, err)
	}
	s.PID = cmd.Process.Pid
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }() // reap it if it dies while we live
	deadline := time.Now().Add(60 * time.Second)
	for {
		if ours, err := Serves(ctx, s); err == nil && ours {
			return nil
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logf.Name())
			if int64(len(b)) > logStart {
				b = b[logStart:]
			}
			if strings.Contains(string(b), "could not bind") || strings.Contains(string(b), "already in use") {
				return fmt.Errorf("%s: port %d: %w", s.Name, s.Port, ErrPortTaken)
			}
			return fmt.Errorf("%s exited while starting: %s", s.Name, LastLines(string(b), 3))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not accept connections within 60s (see %s)", s.Name, logf.Name())
		}
	}
}

// Serves reports whether the server answering on s's port is s's own.
func Serves(ctx context.Context, s *Server) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := postgres.Connect(cctx, s.DSN("postgres"))
	if err != nil {
		return false, err
	}
	defer conn.Close(ctx)
	dir, err := postgres.DataDirectory(cctx, conn)
	if err != nil {
		return false, err
	}
	return sameDir(dir, s.DataDir), nil
}

func sameDir(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	ra, errA := filepath.EvalSymlinks(a)
	rb, errB := filepath.EvalSymlinks(b)
	return errA == nil && errB == nil && ra == rb
}

// Stop shuts a server down with PostgreSQL's fast mode (SIGINT), which
// disconnects clients and checkpoints, and kills it if that takes too long.
func (b *Bin) Stop(s Server) {
	pid := PostmasterPID(s.DataDir)
	if pid == 0 {
		pid = s.PID
	}
	if pid != 0 && isProgram(pid, "postgres") {
		StopPID(pid, syscall.SIGINT, 30*time.Second)
	}
}

// Kill SIGKILLs the server's postmaster, as a crash would: no checkpoint,
// and its backends are left to notice and exit. It returns once the
// postmaster is gone.
func (b *Bin) Kill(s Server) {
	pid := PostmasterPID(s.DataDir)
	if pid == 0 || !isProgram(pid, "postgres") {
		return
	}
	syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 250 && Alive(pid); i++ {
		time.Sleep(20 * time.Millisecond)
	}
}

// Running reports whether the server of dataDir runs.
func Running(dataDir string) bool { return Alive(PostmasterPID(dataDir)) }

// PostmasterPID reads the running server's pid from its data directory.
func PostmasterPID(dataDir string) int {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	var pid int
	fmt.Sscanf(string(b), "%d", &pid)
	return pid
}

// WaitStreaming waits until the server at upstreamDSN (named upstream, for
// the error) reports name as a streaming standby, and as its synchronous
// one when sync is set and upstream is a primary. A standby has no
// synchronous standbys; its sync follower becomes one the moment it is
// promoted.
func WaitStreaming(ctx context.Context, upstreamDSN, upstream, name string, sync bool) error {
	conn, err := postgres.Connect(ctx, upstreamDSN)
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
			return fmt.Errorf("%s is not streaming from %s after 60s", name, upstream)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
