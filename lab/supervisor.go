package lab

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/reshard/reshard/etcd"
)

// SupervisorEnv is set on the supervisor process; a test binary that stands
// in for reshard uses it to become the supervisor.
const SupervisorEnv = "RESHARD_LAB_SUPERVISE"

func readyPath(dir string) string { return filepath.Join(dir, "supervisor.ready") }

// Supervise runs the lab's long-lived services (the embedded etcd) until
// SIGTERM or SIGINT. `lab up` starts it; `lab down` stops it.
func Supervise(dir string) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	st, err := Load(dir)
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	m, err := etcd.StartEmbedded(filepath.Join(dir, "etcd"), st.EtcdClientPort, st.EtcdPeerPort,
		filepath.Join(dir, "logs", "etcd.log"))
	if err != nil {
		return err
	}
	defer m.Close()
	log.Info("etcd ready", "url", m.ClientURL)
	if err := os.WriteFile(readyPath(dir), []byte(m.ClientURL), 0o644); err != nil {
		return err
	}
	select {
	case s := <-sigs:
		log.Info("stopping", "signal", s.String())
	case err := <-m.Err():
		return fmt.Errorf("etcd failed: %w", err)
	}
	os.Remove(readyPath(dir))
	return nil
}
