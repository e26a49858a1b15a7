package lab

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/reshard/reshard/etcd"
)

// SupervisorEnv is set on the supervisor process; a test binary that stands
// in for reshard uses it to become the supervisor.
const SupervisorEnv = "RESHARD_LAB_SUPERVISE"

func readyPath(dir string) string { return filepath.Join(dir, "supervisor.ready") }

// RouterPIDFile is where the supervisor records a router's pid, so a fault
// test can kill one and `lab down` can stop them even if the supervisor died.
func RouterPIDFile(dir string, i int) string {
	return filepath.Join(dir, "run", fmt.Sprintf("router-%d.pid", i+1))
}

// UIPIDFile is where the supervisor records the dashboard's pid.
func UIPIDFile(dir string) string { return filepath.Join(dir, "run", "ui.pid") }

// Supervise runs the lab's long-lived services until SIGTERM or SIGINT: the
// embedded etcd, and the routers and the spare hosts' agents as child
// processes that it restarts if they die (as SMF restarts a service). `lab up` starts it; `lab down` stops it. A lab of several etcd
// members runs each as its own process instead: the supervisor starts those
// that are not running and leaves them running when it stops, as the
// PostgreSQL peers are, for `lab restart` and `lab down` to act on.
func Supervise(dir string) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	st, err := Load(dir)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	startEtcd := func() (*etcd.Embedded, error) {
		return etcd.StartEmbedded(filepath.Join(dir, "etcd"), st.EtcdClientPort, st.EtcdPeerPort,
			filepath.Join(dir, "logs", "etcd.log"))
	}
	var m *etcd.Embedded
	var etcdURL string
	if len(st.EtcdMembers) > 0 {
		if err := ensureEtcdMembers(ctx, dir, st); err != nil {
			return err
		}
		etcdURL = strings.Join(st.etcdClientURLs(), ",")
	} else {
		if m, err = startEtcd(); err != nil {
			return err
		}
		etcdURL = m.ClientURL
	}
	defer func() {
		if m != nil {
			m.Close()
		}
	}()
	log.Info("etcd ready", "url", etcdURL)
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "run"), 0o755); err != nil {
		return err
	}
	var wg sync.WaitGroup
	for i, port := range st.RouterPorts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			moray := 0
			if i < len(st.MorayPorts) {
				moray = st.MorayPorts[i]
			}
			keepRouter(ctx, log, dir, exe, etcdURL, st.routerPlace(i), i, port, moray, st.CrossShardFind)
		}()
	}
	if st.UIListen != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keep(ctx, log, dir, "ui", UIPIDFile(dir), func() *exec.Cmd {
				return exec.Command(exe, "ui", "--etcd", etcdURL, "--listen", st.UIListen)
			})
		}()
	}
	for _, a := range st.Agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keep(ctx, log, dir, "agent-"+a.Name, AgentPIDFile(dir, a.Name), func() *exec.Cmd { return a.command(exe, etcdURL) })
		}()
	}
	if err := os.WriteFile(readyPath(dir), []byte(etcdURL), 0o644); err != nil {
		return err
	}
	// SIGHUP restarts etcd on the same ports and data: a fault test's
	// "etcd restart", which clients ride out by reconnecting.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	var ferr error
loop:
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping")
			break loop
		case <-hup:
			if m == nil {
				log.Warn("SIGHUP ignored: the etcd members are their own processes")
				continue
			}
			log.Info("restarting etcd")
			m.Close()
			if m, err = startEtcd(); err != nil {
				ferr = fmt.Errorf("restart etcd: %w", err)
				stop()
				break loop
			}
			log.Info("etcd restarted")
		case err := <-embeddedErr(m):
			ferr = fmt.Errorf("etcd failed: %w", err)
			stop()
			break loop
		}
	}
	wg.Wait()
	os.Remove(readyPath(dir))
	return ferr
}

// embeddedErr is m's error channel, or one that never delivers when the
// supervisor embeds no etcd.
func embeddedErr(m *etcd.Embedded) <-chan error {
	if m == nil {
		return nil
	}
	return m.Err()
}

// keepRouter runs router i and starts it again when it dies, until ctx ends.
func keepRouter(ctx context.Context, log *slog.Logger, dir, exe, etcdURL string, place Place, i, port, morayPort int, crossShardFind string) {
	addr := func(port int) string { return net.JoinHostPort(place.host(), strconv.Itoa(port)) }
	keep(ctx, log, dir, RouterHostName(i), RouterPIDFile(dir, i), func() *exec.Cmd {
		args := []string{exe, "router", "--etcd", etcdURL, "--listen", addr(port), "--name", RouterHostName(i)}
		if morayPort > 0 {
			args = append(args, "--moray-listen", addr(morayPort))
		}
		if crossShardFind != "" {
			args = append(args, "--cross-shard-find", crossShardFind)
		}
		return place.command(nil, args...)
	})
}

// keep runs the command that newCmd makes, logging to logs/NAME.log with
// its pid in pidFile, and starts it again a second after it dies, until
// ctx ends; then it stops it with SIGTERM (SIGKILL after 10 s).
func keep(ctx context.Context, log *slog.Logger, dir, name, pidFile string, newCmd func() *exec.Cmd) {
	for ctx.Err() == nil {
		logf, err := os.OpenFile(filepath.Join(dir, "logs", name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			log.Error("log file", "process", name, "err", err)
			return
		}
		cmd := newCmd()
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			logf.Close()
			log.Error("start", "process", name, "err", err)
		} else {
			os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			select {
			case err := <-exited:
				log.Warn("exited; restarting", "process", name, "err", err)
			case <-ctx.Done():
				cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(10 * time.Second):
					cmd.Process.Kill()
					<-exited
				}
			}
			logf.Close()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	os.Remove(pidFile)
}
