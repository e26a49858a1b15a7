package lab

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/reshard/reshard/etcd"
)

// EtcdMember is one member of the lab's etcd when it runs more than one:
// each is its own process with its data in DIR/etcd/NAME.
type EtcdMember struct {
	Name       string `json:"name"`
	ClientPort int    `json:"client_port"`
	PeerPort   int    `json:"peer_port"`
	Place
}

// ClientURL is where the member serves clients.
func (m EtcdMember) ClientURL() string { return etcd.ClientURL(m.Addr, m.ClientPort) }

// EtcdMemberEnv is set on a member process to DIR and NAME separated by a
// newline; a test binary that stands in for reshard uses it to become the
// member.
const EtcdMemberEnv = "RESHARD_LAB_ETCD_MEMBER"

// EtcdMemberFromEnv reports the member this process was started to be.
func EtcdMemberFromEnv() (dir, name string, ok bool) {
	dir, name, ok = strings.Cut(os.Getenv(EtcdMemberEnv), "\n")
	return dir, name, ok && dir != "" && name != ""
}

// etcdMemberName is the name of the i-th member (1-based).
func etcdMemberName(i int) string { return fmt.Sprintf("etcd-%d", i) }

func etcdMemberDir(dir, name string) string { return filepath.Join(dir, "etcd", name) }

// EtcdMemberPIDFile is where the lab records a member's pid: `lab restart`
// kills it by this pid and `lab down` stops it.
func EtcdMemberPIDFile(dir, name string) string {
	return filepath.Join(dir, "run", name+".pid")
}

// EtcdMember returns the named member.
func (s *State) EtcdMember(name string) (*EtcdMember, bool) {
	for i := range s.EtcdMembers {
		if s.EtcdMembers[i].Name == name {
			return &s.EtcdMembers[i], true
		}
	}
	return nil, false
}

// etcdClientURLs lists every member's client URL; one embedded etcd has one.
func (s *State) etcdClientURLs() []string {
	if len(s.EtcdMembers) == 0 {
		return []string{etcd.ClientURL("", s.EtcdClientPort)}
	}
	var out []string
	for _, m := range s.EtcdMembers {
		out = append(out, m.ClientURL())
	}
	return out
}

// etcdPorts are the ports etcd holds, so no other part of the lab takes them.
func (s *State) etcdPorts() []int {
	out := []int{s.EtcdClientPort, s.EtcdPeerPort}
	for _, m := range s.EtcdMembers {
		out = append(out, m.ClientPort, m.PeerPort)
	}
	return out
}

// RunEtcdMember runs member name of the lab in dir until SIGTERM or SIGINT:
// what `lab etcd-member` does. A member with data rejoins its cluster from
// that data; a new one joins the cluster the state lists.
func RunEtcdMember(dir, name string) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	st, err := Load(dir)
	if err != nil {
		return err
	}
	me, ok := st.EtcdMember(name)
	if !ok {
		return fmt.Errorf("etcd member %s is not in the lab", name)
	}
	var cluster []etcd.Peer
	for _, m := range st.EtcdMembers {
		cluster = append(cluster, etcd.Peer{Name: m.Name, PeerURL: etcd.PeerURL(m.Addr, m.PeerPort)})
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	e, err := etcd.StartMember(etcd.Member{
		Name: name, Dir: etcdMemberDir(dir, name), Host: me.Addr, ClientPort: me.ClientPort, PeerPort: me.PeerPort,
		Cluster: cluster, // its log goes to stderr: DIR/logs/NAME.log
	})
	if err != nil {
		return err
	}
	defer e.Close()
	// No time limit: a member serves only once a quorum runs, and the
	// others may be down for as long as a drill keeps them down.
	if err := e.Wait(ctx, 0); err != nil {
		return err
	}
	log.Info("etcd member ready", "name", name, "url", e.ClientURL)
	select {
	case <-ctx.Done():
		log.Info("stopping", "name", name)
		return nil
	case err := <-e.Err():
		return fmt.Errorf("etcd member %s failed: %w", name, err)
	}
}

// startEtcdMember runs a member as its own process, detached from this one
// so that it outlives the command that started it, and records its pid.
// exited reports how the process ended, if it ends while this one lives.
func startEtcdMember(dir string, m EtcdMember) (exited <-chan error, err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	for _, d := range []string{filepath.Join(dir, "run"), filepath.Join(dir, "etcd")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	logf, err := os.OpenFile(filepath.Join(dir, "logs", m.Name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := m.command(nil, exe, "lab", "etcd-member", "--dir", dir, "--name", m.Name)
	cmd.Env = append(os.Environ(), EtcdMemberEnv+"="+dir+"\n"+m.Name)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr.Setsid = true
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start etcd member %s: %w", m.Name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }() // reap it if it dies while this process lives
	return done, os.WriteFile(EtcdMemberPIDFile(dir, m.Name), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
}

// etcdMemberPID is the running member's pid, or 0.
func etcdMemberPID(dir, name string) int {
	return pidFromFile(EtcdMemberPIDFile(dir, name), "etcd-member", name)
}

// pidFromFile is the pid a lab process recorded in path while that process
// runs, or 0. Its command line must hold every one of args, so that a
// reused pid is never signalled. It reads empty for a moment after exec,
// before the kernel has set up the new program's arguments, and then the
// pid is taken as the process's.
func pidFromFile(path string, args ...string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if !alive(pid) {
		return 0
	}
	cl, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return 0
	}
	for _, a := range args {
		if len(cl) > 0 && !strings.Contains(string(cl), "\x00"+a+"\x00") {
			return 0
		}
	}
	return pid
}

func pidFileText(dir, name string) string {
	b, _ := os.ReadFile(EtcdMemberPIDFile(dir, name))
	return strings.TrimSpace(string(b))
}

// ensureEtcdMembers starts every member that is not running and waits until
// each answers. All start before any is waited for: none serves without a
// quorum.
func ensureEtcdMembers(ctx context.Context, dir string, st *State) error {
	exited := map[string]<-chan error{}
	for _, m := range st.EtcdMembers {
		if etcdMemberPID(dir, m.Name) != 0 {
			continue
		}
		done, err := startEtcdMember(dir, m)
		if err != nil {
			return err
		}
		exited[m.Name] = done
	}
	for _, m := range st.EtcdMembers {
		if err := waitEtcdMember(ctx, dir, m, exited[m.Name], 60*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// waitEtcdMember waits until the member answers on its own client URL.
// exited, if this process started the member, says how it ended.
func waitEtcdMember(ctx context.Context, dir string, m EtcdMember, exited <-chan error, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		var gone error
		if exited != nil {
			// This process started it: its exit is the word on it.
			select {
			case err := <-exited:
				gone = fmt.Errorf("%v", err)
			default:
			}
		} else if etcdMemberPID(dir, m.Name) == 0 {
			gone = fmt.Errorf("pid %s is not running", pidFileText(dir, m.Name))
		}
		if gone != nil {
			b, _ := os.ReadFile(filepath.Join(dir, "logs", m.Name+".log"))
			return fmt.Errorf("etcd member %s exited (%v): %s", m.Name, gone, lastLines(string(b), 3))
		}
		cli, err := etcd.Connect(ctx, m.ClientURL())
		if err == nil {
			h := etcd.Health(ctx, cli, []string{m.ClientURL()})
			cli.Close()
			if h[0].Answers {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd member %s did not answer within %s (see %s)", m.Name, d,
				filepath.Join(dir, "logs", m.Name+".log"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stopEtcdMembers stops every member of the lab in dir.
func stopEtcdMembers(st *State) {
	for _, m := range st.EtcdMembers {
		if pid := etcdMemberPID(st.Dir, m.Name); pid != 0 {
			stopPID(pid, syscall.SIGTERM, 10*time.Second)
		}
		os.Remove(EtcdMemberPIDFile(st.Dir, m.Name))
	}
}

// EtcdMemberStatus is one etcd row of `lab status`.
type EtcdMemberStatus struct {
	Name      string `json:"name"`
	ClientURL string `json:"client_url"`
	Answers   bool   `json:"answers"`
	Leader    bool   `json:"leader"`
}

// EtcdHealthy returns the leader's name when every member answers and one
// of them leads, and "" otherwise.
func EtcdHealthy(ms []EtcdMemberStatus) string {
	leader := ""
	for _, m := range ms {
		if !m.Answers {
			return ""
		}
		if m.Leader {
			leader = m.Name
		}
	}
	return leader
}

// EtcdStatus asks every member of the lab's etcd whether it answers and
// which one leads. A lab with one embedded etcd shows it as member "lab".
func EtcdStatus(ctx context.Context, st *State) []EtcdMemberStatus {
	urls := st.etcdClientURLs()
	var out []EtcdMemberStatus
	for i, u := range urls {
		name := "lab"
		if len(st.EtcdMembers) > 0 {
			name = st.EtcdMembers[i].Name
		}
		out = append(out, EtcdMemberStatus{Name: name, ClientURL: u})
	}
	cli, err := etcd.Connect(ctx, strings.Join(urls, ","))
	if err != nil {
		return out
	}
	defer cli.Close()
	for i, h := range etcd.Health(ctx, cli, urls) {
		out[i].Answers, out[i].Leader = h.Answers, h.Leader
	}
	return out
}

// RestartEtcdMember kills one member with SIGKILL, keeps it down for down,
// and starts it again on its data: a fault test's "etcd member crash". name
// "leader" picks whichever member leads now. killed, if set, is told which
// member it kills, just before the kill.
func RestartEtcdMember(ctx context.Context, dir, name string, down time.Duration, killed func(name string)) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	st, err := Load(dir)
	if err != nil {
		return err
	}
	if len(st.EtcdMembers) == 0 {
		return fmt.Errorf("the lab in %s runs one embedded etcd; use --etcd (or lab up --etcd-members 3)", dir)
	}
	if name == "leader" {
		name = ""
		for _, m := range EtcdStatus(ctx, st) {
			if m.Leader {
				name = m.Name
			}
		}
		if name == "" {
			return fmt.Errorf("no etcd member is leader now")
		}
	}
	m, ok := st.EtcdMember(name)
	if !ok {
		return fmt.Errorf("etcd member %s is not in the lab", name)
	}
	pid := etcdMemberPID(dir, name)
	if pid == 0 {
		return fmt.Errorf("etcd member %s is not running", name)
	}
	if killed != nil {
		killed(name)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 200 && alive(pid); i++ {
		time.Sleep(25 * time.Millisecond)
	}
	if alive(pid) {
		return fmt.Errorf("etcd member %s (pid %d) still runs 5s after SIGKILL", name, pid)
	}
	select {
	case <-ctx.Done():
	case <-time.After(down):
	}
	exited, err := startEtcdMember(dir, *m)
	if err != nil {
		return err
	}
	return waitEtcdMember(ctx, dir, *m, exited, 60*time.Second)
}
