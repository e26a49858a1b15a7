package pgserver

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
)

// Place is where a process runs: a host's network namespace and address,
// or, both empty, this machine's namespace on 127.0.0.1. The lab gives each
// of its hosts a namespace; an agent on a real host runs in its own.
type Place struct {
	NS   string `json:"netns,omitempty"`
	Addr string `json:"addr,omitempty"`
}

// NetnsDir is where `ip netns` keeps the namespaces it names.
const NetnsDir = "/run/netns"

// Host is the address the process listens on and is reached at.
func (p Place) Host() string {
	if p.Addr == "" {
		return "127.0.0.1"
	}
	return p.Addr
}

// Argv is the command line that runs argv in the place: in a namespace,
// through nsenter, which enters it, takes cred's user (nil: stays root) and
// then execs the program in its own pid, so the pid recorded is the
// program's.
func (p Place) Argv(cred *syscall.Credential, argv ...string) []string {
	if p.NS == "" {
		return argv
	}
	out := []string{"nsenter", "--net=" + filepath.Join(NetnsDir, p.NS)}
	if cred != nil {
		out = append(out, "--setgid", strconv.Itoa(int(cred.Gid)), "--setuid", strconv.Itoa(int(cred.Uid)))
	}
	return append(append(out, "--"), argv...)
}

// Command is exec.Command for argv in the place. In a namespace the
// program's user is switched by nsenter, which must itself start as root.
func (p Place) Command(cred *syscall.Credential, argv ...string) *exec.Cmd {
	full := p.Argv(cred, argv...)
	cmd := exec.Command(full[0], full[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	if p.NS == "" {
		cmd.SysProcAttr.Credential = cred
	}
	return cmd
}
