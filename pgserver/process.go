package pgserver

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RunAs is the user PostgreSQL runs as. PostgreSQL refuses to run as root,
// so as root every server process runs as the postgres user, which is
// given the data directories.
type RunAs struct {
	Cred     *syscall.Credential // nil: this process's own user
	UID, GID int
}

// CurrentRunAs is this process's user, or postgres when it is root.
func CurrentRunAs() (RunAs, error) {
	if os.Geteuid() != 0 {
		return RunAs{UID: os.Getuid(), GID: os.Getgid()}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return RunAs{}, fmt.Errorf("running as root needs a 'postgres' user to run PostgreSQL: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return RunAs{Cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, UID: uid, GID: gid}, nil
}

// Chown gives path to the PostgreSQL user (nothing to do when not root).
func (r RunAs) Chown(path string) error {
	if r.Cred == nil {
		return nil
	}
	return os.Chown(path, r.UID, r.GID)
}

// Command builds a command that runs as the PostgreSQL user in dir.
func (r RunAs) Command(dir, name string, args ...string) *exec.Cmd {
	return r.CommandIn(Place{}, dir, name, args...)
}

// CommandIn is Command in a place.
func (r RunAs) CommandIn(place Place, dir, name string, args ...string) *exec.Cmd {
	cmd := place.Command(r.Cred, append([]string{name}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "PGTZ=UTC")
	return cmd
}

// Run runs a command to completion and folds its output into the error.
func (r RunAs) Run(dir, name string, args ...string) error {
	cmd := r.Command(dir, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %v: %s", filepath.Base(name), err, LastLines(out.String(), 5))
	}
	return nil
}

// LastLines is the last n lines of s on one line, for error messages.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// Alive reports whether pid is a running process (not a zombie).
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && err != syscall.EPERM {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// Field 3, after the parenthesized command name, is the state.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// StopPID sends sig and waits up to d for the process to go, then kills it.
func StopPID(pid int, sig syscall.Signal, d time.Duration) {
	if !Alive(pid) {
		return
	}
	_ = syscall.Kill(pid, sig)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !Alive(pid) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 100 && Alive(pid); i++ {
		time.Sleep(50 * time.Millisecond)
	}
}
