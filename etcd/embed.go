package etcd

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Embedded is one etcd member running inside this process.
type Embedded struct {
	e         *embed.Etcd
	Name      string
	ClientURL string
}

// Member says how to run one member of an etcd cluster.
type Member struct {
	Name       string
	Dir        string // data directory
	Host       string // address it listens on; "" is 127.0.0.1
	ClientPort int
	PeerPort   int
	// Cluster is every member of the cluster, this one included. It is read
	// only when Dir is empty: a member with data knows its cluster.
	Cluster []Peer
	LogFile string // "" logs to stderr
}

// Peer is one member as the others know it.
type Peer struct {
	Name    string
	PeerURL string
}

// ClientURL is where a member on host ("" is 127.0.0.1) serves clients.
func ClientURL(host string, port int) string { return "http://" + hostPort(host, port) }

// PeerURL is where a member on host ("" is 127.0.0.1) talks to the other
// members.
func PeerURL(host string, port int) string { return "http://" + hostPort(host, port) }

func hostPort(host string, port int) string {
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// StartMember starts a member and returns without waiting for it to serve:
// a member of a larger cluster serves only once a quorum of members runs,
// so the caller starts them all and then waits on Ready.
func StartMember(m Member) (*Embedded, error) {
	cfg := embed.NewConfig()
	cfg.Name = m.Name
	cfg.Dir = m.Dir
	cu, err := url.Parse(ClientURL(m.Host, m.ClientPort))
	if err != nil {
		return nil, err
	}
	pu, err := url.Parse(PeerURL(m.Host, m.PeerPort))
	if err != nil {
		return nil, err
	}
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = InitialCluster(m.Cluster)
	if len(m.Cluster) == 0 {
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	}
	cfg.LogLevel = "warn"
	if m.LogFile != "" {
		cfg.LogOutputs = []string{m.LogFile}
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start etcd member %s: %w", m.Name, err)
	}
	return &Embedded{e: e, Name: m.Name, ClientURL: cu.String()}, nil
}

// InitialCluster is etcd's --initial-cluster for peers: name=url,...
func InitialCluster(peers []Peer) string {
	var parts []string
	for _, p := range peers {
		parts = append(parts, p.Name+"="+p.PeerURL)
	}
	return strings.Join(parts, ",")
}

// StartEmbedded runs a one-member etcd on 127.0.0.1 with data in dir and its
// own log in logFile. It returns once the member serves clients.
func StartEmbedded(dir string, clientPort, peerPort int, logFile string) (*Embedded, error) {
	m, err := StartMember(Member{Name: "lab", Dir: dir, ClientPort: clientPort, PeerPort: peerPort, LogFile: logFile})
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	if err := m.Wait(context.Background(), 30*time.Second); err != nil {
		return nil, fmt.Errorf("embedded etcd: %w", err)
	}
	return m, nil
}

// Wait waits until the member serves clients, up to timeout (0: no limit),
// and closes it if it fails or ctx ends first.
func (m *Embedded) Wait(ctx context.Context, timeout time.Duration) error {
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-m.e.Server.ReadyNotify():
		return nil
	case err := <-m.e.Err():
		m.e.Close()
		return err
	case <-expired:
		m.e.Close()
		return fmt.Errorf("member %s did not become ready in %s", m.Name, timeout)
	case <-ctx.Done():
		m.e.Close()
		return ctx.Err()
	}
}

// Err reports a fatal error of the running server.
func (m *Embedded) Err() <-chan error { return m.e.Err() }

// Close stops the server.
func (m *Embedded) Close() { m.e.Close() }
