package etcd

import (
	"fmt"
	"net/url"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Embedded is a single-member etcd running inside this process.
type Embedded struct {
	e         *embed.Etcd
	ClientURL string
}

// StartEmbedded runs a one-member etcd on 127.0.0.1 with data in dir and its
// own log in logFile. It returns once the member serves clients.
func StartEmbedded(dir string, clientPort, peerPort int, logFile string) (*Embedded, error) {
	cfg := embed.NewConfig()
	cfg.Name = "lab"
	cfg.Dir = dir
	cu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", clientPort)}
	pu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", peerPort)}
	cfg.ListenClientUrls = []url.URL{cu}
	cfg.AdvertiseClientUrls = []url.URL{cu}
	cfg.ListenPeerUrls = []url.URL{pu}
	cfg.AdvertisePeerUrls = []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "warn"
	if logFile != "" {
		cfg.LogOutputs = []string{logFile}
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, fmt.Errorf("embedded etcd did not become ready in 30s")
	}
	return &Embedded{e: e, ClientURL: cu.String()}, nil
}

// Err reports a fatal error of the running server.
func (m *Embedded) Err() <-chan error { return m.e.Err() }

// Close stops the server.
func (m *Embedded) Close() { m.e.Close() }
