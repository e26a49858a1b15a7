// Package lab runs a Manta-like metadata tier on this machine for demos and
// tests: etcd and shards of real PostgreSQL servers in the Manatee shape
// (primary, sync standby, async standbys), either all on 127.0.0.1 or, in a
// lab of hosts, each in a network namespace of its own (hosts.go).
package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/reshard/reshard"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/shard"
)

// Config says what `lab up` builds.
type Config struct {
	Dir     string
	Shards  int
	Peers   int
	Routers int
	// UI is where the supervisor serves the dashboard (`reshard ui`),
	// HOST:PORT, port 0 for a free one; empty: no dashboard.
	UI       string
	Vnodes   int // ring size; 0 means DefaultVnodes
	BasePort int // 0: let the kernel pick free ports
	// EtcdMembers is how many etcd members run: 0 or 1 is one embedded in
	// the supervisor, more are each their own process.
	EtcdMembers int
	// Hosts puts every peer, etcd member and router in a network namespace
	// of its own (root only): see hosts.go.
	Hosts bool
	// DCs spreads the hosts over that many datacenters, with DCLatency
	// (one way) between any two; 0 or 1 is one datacenter.
	DCs       int
	DCLatency time.Duration
	// SpareHosts are hosts that run a host agent and no peer (spare-1,
	// ...): for the physical strategy's new peers, or an orchestrator run
	// apart. In a lab without --hosts their agents run on 127.0.0.1.
	SpareHosts int
	// CrossShardFind is the routers' --cross-shard-find ("": theirs).
	CrossShardFind string
	// Progress receives one line per step; nil discards them.
	Progress io.Writer
	// Supervisor is the command that runs the supervisor; by default this
	// executable with `lab supervise --dir DIR`.
	Supervisor []string
}

// Validate rejects bad input before anything is created.
func (c Config) Validate() error {
	if c.Dir == "" {
		return fmt.Errorf("--dir is required")
	}
	if c.Shards < 1 || c.Shards > 64 {
		return fmt.Errorf("--shards must be between 1 and 64, got %d", c.Shards)
	}
	if c.Peers < 1 || c.Peers > 9 {
		return fmt.Errorf("--peers must be between 1 and 9, got %d", c.Peers)
	}
	if c.Routers < 0 || c.Routers > 16 {
		return fmt.Errorf("--routers must be between 0 and 16, got %d", c.Routers)
	}
	if c.Vnodes < 0 || c.Vnodes > 10_000_000 {
		return fmt.Errorf("--vnodes must be between 1 and 10000000, got %d", c.Vnodes)
	}
	if c.EtcdMembers != 0 && (c.EtcdMembers < 1 || c.EtcdMembers > 7 || c.EtcdMembers%2 == 0) {
		// An even count tolerates no more failures than the odd one below it.
		return fmt.Errorf("--etcd-members must be odd, 1 to 7, got %d", c.EtcdMembers)
	}
	if c.DCs < 0 || c.DCs > MaxDCs {
		return fmt.Errorf("--dcs must be between 1 and %d, got %d", MaxDCs, c.DCs)
	}
	if c.SpareHosts < 0 || c.SpareHosts > 32 {
		return fmt.Errorf("--spare-hosts must be between 0 and 32, got %d", c.SpareHosts)
	}
	if c.DCs > 1 && !c.Hosts {
		return fmt.Errorf("--dcs needs --hosts: the latency is between hosts")
	}
	if c.DCLatency < 0 || c.DCLatency > time.Second {
		return fmt.Errorf("--dc-latency must be between 0 and 1s, got %s", c.DCLatency)
	}
	if c.CrossShardFind != "" && c.CrossShardFind != "refuse" && c.CrossShardFind != "gather" {
		return fmt.Errorf("--cross-shard-find must be refuse or gather, not %q", c.CrossShardFind)
	}
	if c.BasePort != 0 && (c.BasePort < 1024 || c.BasePort > 65000) {
		return fmt.Errorf("--port must be between 1024 and 65000, got %d", c.BasePort)
	}
	return nil
}

// DefaultVnodes is the lab's ring size: small enough for quick runs.
const DefaultVnodes = 1024

// ShardName is the Manta-style name of the i-th shard (1-based).
func ShardName(i int) string { return fmt.Sprintf("%d.moray", i) }

func (c Config) progress(format string, args ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, format+"\n", args...)
	}
}

// checkDir refuses a DIR that is a file or already holds a lab.
func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is a file, not a directory", dir)
	}
	if s, err := Load(dir); err == nil {
		if alive(s.SupervisorPID) {
			return fmt.Errorf("a lab is already up in %s (supervisor pid %d); run 'reshard lab down --dir %s' first", dir, s.SupervisorPID, dir)
		}
		return fmt.Errorf("%s holds a lab that is not running; run 'reshard lab down --dir %s' to clean it up", dir, dir)
	}
	return nil
}

// ports hands out the ports a lab needs, each checked free.
type ports struct {
	next int // 0: ask the kernel
	used map[int]bool
}

func (p *ports) take() (int, error) {
	if p.next == 0 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer l.Close()
		port := l.Addr().(*net.TCPAddr).Port
		if p.used[port] {
			return p.take()
		}
		p.used[port] = true
		return port, nil
	}
	port := p.next
	p.next++
	if err := portFree(port); err != nil {
		return 0, err
	}
	p.used[port] = true
	return port, nil
}

func portFree(port int) error {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return fmt.Errorf("port %d is in use", port)
	}
	return l.Close()
}

// Up builds and starts a lab and returns its state once every part is ready.
// On failure it stops whatever it started.
func Up(ctx context.Context, cfg Config) (st *State, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg.Dir = dir
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	if cfg.Hosts {
		if err := checkHostsPossible(); err != nil {
			return nil, err
		}
	}
	// Every port is chosen and checked before anything starts.
	pp := &ports{next: cfg.BasePort, used: map[int]bool{}}
	st = &State{Dir: dir, CrossShardFind: cfg.CrossShardFind}
	// On hosts even a single etcd member is its own process, in its own host:
	// the supervisor stays on this machine.
	if cfg.EtcdMembers > 1 || (cfg.Hosts && cfg.EtcdMembers <= 1) {
		if cfg.EtcdMembers == 0 {
			cfg.EtcdMembers = 1
		}
		for i := 1; i <= cfg.EtcdMembers; i++ {
			m := EtcdMember{Name: etcdMemberName(i)}
			if m.ClientPort, err = pp.take(); err != nil {
				return nil, err
			}
			if m.PeerPort, err = pp.take(); err != nil {
				return nil, err
			}
			st.EtcdMembers = append(st.EtcdMembers, m)
		}
	} else {
		if st.EtcdClientPort, err = pp.take(); err != nil {
			return nil, err
		}
		if st.EtcdPeerPort, err = pp.take(); err != nil {
			return nil, err
		}
	}
	for i := 0; i < cfg.Routers; i++ {
		port, err := pp.take()
		if err != nil {
			return nil, err
		}
		st.RouterPorts = append(st.RouterPorts, port)
	}
	peerPorts := make([]int, cfg.Shards*cfg.Peers)
	for i := range peerPorts {
		if peerPorts[i], err = pp.take(); err != nil {
			return nil, err
		}
	}
	for i := 0; i < cfg.Routers; i++ {
		port, err := pp.take()
		if err != nil {
			return nil, err
		}
		st.MorayPorts = append(st.MorayPorts, port)
	}
	if cfg.UI != "" {
		if st.UIListen, err = uiAddr(cfg.UI, pp); err != nil {
			return nil, err
		}
		st.UI = "http://" + st.UIListen + "/"
	}
	g, err := newPG(filepath.Join(dir, "logs"))
	if err != nil {
		return nil, err
	}

	created := false
	if _, serr := os.Stat(dir); errors.Is(serr, os.ErrNotExist) {
		created = true
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	unlock, err := lock(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if st.DataRoot, err = makeDataRoot(dir, g.as); err != nil {
		return nil, err
	}
	if err := st.save(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			teardown(st, g)
			removeNetwork(st)
			os.Remove(statePath(dir))
			os.Remove(filepath.Join(dir, "lab.lock"))
			if created {
				os.RemoveAll(dir)
			}
		}
	}()

	if cfg.Hosts {
		if err := st.placeHosts(cfg.DCs, cfg.DCLatency, cfg.SpareHosts); err != nil {
			return st, err
		}
		cfg.progress("hosts: %d network namespaces on bridge %s (%s)", len(st.Hosts), st.Network.Bridge, st.Network.CIDR())
		if st.Network.DCs > 1 {
			cfg.progress("hosts in %d datacenters, %s each way between them", st.Network.DCs, st.Network.Latency)
		}
	}
	if err := st.prepareAgents(cfg.SpareHosts, g.as); err != nil {
		return st, err
	}
	for i := range st.RouterPorts {
		h := st.routerPlace(i).host()
		st.Routers = append(st.Routers, fmt.Sprintf("http://%s", net.JoinHostPort(h, strconv.Itoa(st.RouterPorts[i]))))
		st.Moray = append(st.Moray, net.JoinHostPort(h, strconv.Itoa(st.MorayPorts[i])))
	}
	if err := st.save(); err != nil {
		return st, err
	}
	if len(st.EtcdMembers) > 0 {
		cfg.progress("starting supervisor and %d etcd members on %s", len(st.EtcdMembers), strings.Join(st.etcdClientURLs(), ","))
	} else {
		cfg.progress("starting supervisor with embedded etcd on 127.0.0.1:%d", st.EtcdClientPort)
	}
	if err := startSupervisor(ctx, cfg, st); err != nil {
		return st, err
	}
	cli, err := etcd.Connect(ctx, st.EtcdURL)
	if err != nil {
		return st, err
	}
	defer cli.Close()
	reg := etcd.NewRegistry(cli)
	for i := 1; i <= cfg.Shards; i++ {
		ports := peerPorts[(i-1)*cfg.Peers : i*cfg.Peers]
		if err := buildShard(ctx, cfg, g, st, ShardName(i), ports, reg); err != nil {
			return st, err
		}
	}
	if cfg.Vnodes == 0 {
		cfg.Vnodes = DefaultVnodes
	}
	cfg.progress("ring: %d vnodes over %d pnodes", cfg.Vnodes, cfg.Shards)
	if err := initRing(ctx, cli, st, cfg.Vnodes); err != nil {
		return st, err
	}
	if len(st.Routers) > 0 {
		cfg.progress("waiting for %d routers to serve ring version %d", len(st.Routers), st.RingVersion)
		if err := waitRouters(ctx, cli, st); err != nil {
			return st, err
		}
	}
	if len(st.Agents) > 0 {
		cfg.progress("waiting for the agents of %d spare hosts", len(st.Agents))
		if err := waitAgents(ctx, cli, st); err != nil {
			return st, err
		}
	}
	st.Ready = true
	if err := st.save(); err != nil {
		return st, err
	}
	return st, nil
}

// makeDataRoot picks where PostgreSQL's data lives. As root it is a fresh
// temp directory owned by postgres, because DIR may sit under a home that
// postgres cannot enter.
func makeDataRoot(dir string, as runAs) (string, error) {
	if as.Cred == nil {
		root := filepath.Join(dir, "data")
		return root, os.MkdirAll(root, 0o700)
	}
	root, err := os.MkdirTemp("", "reshard-lab-")
	if err != nil {
		return "", err
	}
	if err := as.Chown(root); err != nil {
		os.RemoveAll(root)
		return "", err
	}
	// A link in DIR so an operator finds the data.
	link := filepath.Join(dir, "data")
	os.Remove(link)
	_ = os.Symlink(root, link)
	return root, nil
}

// buildShard creates a shard of len(ports) peers chained primary → sync →
// async, as Manatee does, and registers it as a pnode.
func buildShard(ctx context.Context, cfg Config, g *pg, st *State, name string, ports []int, reg reshard.Registry) error {
	sh := Shard{Name: name}
	for i, port := range ports {
		role := reshard.RoleAsync
		switch i {
		case 0:
			role = reshard.RolePrimary
		case 1:
			role = reshard.RoleSync
		}
		p := Peer{
			Name:    fmt.Sprintf("%s-%d", name, i+1),
			Role:    role,
			Port:    port,
			DataDir: filepath.Join(st.DataRoot, fmt.Sprintf("%s-%d", name, i+1)),
		}
		if st.Network != nil {
			h, err := st.addHost(p.Name)
			if err != nil {
				return err
			}
			p.Place = h.Place
		}
		sh.Peers = append(sh.Peers, p)
	}
	// Record the shard before its first process starts, so a failure at any
	// point leaves state that `down` can clean up.
	st.Shards = append(st.Shards, sh)
	rec := &st.Shards[len(st.Shards)-1]
	if err := st.save(); err != nil {
		return err
	}
	primary := &rec.Peers[0]
	cfg.progress("%s: initdb primary %s on port %d", name, primary.Name, primary.Port)
	if err := g.initPrimary(*primary); err != nil {
		return fmt.Errorf("%s: %w", primary.Name, err)
	}
	// Synchronous replication is switched on only once the sync standby
	// exists; until then commits would wait for it forever.
	if _, err := g.writeConf(*primary, "", nil); err != nil {
		return err
	}
	if err := g.start(ctx, primary); err != nil {
		return err
	}
	if err := st.save(); err != nil {
		return err
	}
	if err := createDatabase(ctx, *primary); err != nil {
		return err
	}
	for i := 1; i < len(rec.Peers); i++ {
		p, up := &rec.Peers[i], rec.Peers[i-1]
		p.Upstream = up.Name
		cfg.progress("%s: base backup %s (%s) from %s", name, p.Name, p.Role, up.Name)
		if err := g.initStandby(*p, up); err != nil {
			return fmt.Errorf("%s: %w", p.Name, err)
		}
		if _, err := g.writeConf(*p, "", &up); err != nil {
			return err
		}
		if err := g.start(ctx, p); err != nil {
			return err
		}
		if err := st.save(); err != nil {
			return err
		}
		if err := waitStreaming(ctx, up, p.Name, false); err != nil {
			return err
		}
	}
	if len(rec.Peers) > 1 {
		if _, err := g.writeConf(*primary, rec.Peers[1].Name, nil); err != nil {
			return err
		}
		if err := reload(ctx, *primary); err != nil {
			return err
		}
		if err := waitStreaming(ctx, *primary, rec.Peers[1].Name, true); err != nil {
			return err
		}
	}
	cfg.progress("%s: registering pnode", name)
	return reg.AddPnode(ctx, rec.Pnode())
}

// createDatabase creates the moray database with reshard's shard schema.
func createDatabase(ctx context.Context, p Peer) error {
	conn, err := postgres.Connect(ctx, p.dsn("postgres"))
	if err != nil {
		return err
	}
	err = postgres.CreateDatabase(ctx, conn, "moray")
	conn.Close(ctx)
	if err != nil {
		return err
	}
	if conn, err = postgres.Connect(ctx, p.DSN()); err != nil {
		return err
	}
	defer conn.Close(ctx)
	return shard.Init(ctx, conn)
}

func reload(ctx context.Context, p Peer) error {
	conn, err := postgres.Connect(ctx, p.DSN())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return postgres.ReloadConf(ctx, conn)
}

// startSupervisor runs the long-lived process that hosts etcd (and later the
// routers), detached from this one, and waits until etcd serves.
func startSupervisor(ctx context.Context, cfg Config, st *State) error {
	argv := cfg.Supervisor
	if len(argv) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		argv = []string{exe, "lab", "supervise", "--dir", st.Dir}
	}
	logf, err := os.OpenFile(filepath.Join(st.Dir, "logs", "supervisor.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), SupervisorEnv+"="+st.Dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	os.Remove(readyPath(st.Dir))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start supervisor: %w", err)
	}
	st.SupervisorPID = cmd.Process.Pid
	if err := st.save(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.After(60 * time.Second)
	for {
		if b, err := os.ReadFile(readyPath(st.Dir)); err == nil && len(b) > 0 {
			st.EtcdURL = string(b)
			return st.save()
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logf.Name())
			return fmt.Errorf("supervisor exited: %s", lastLines(string(b), 3))
		case <-deadline:
			return fmt.Errorf("supervisor not ready after 60s (see %s)", logf.Name())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Down stops every process of the lab in DIR and removes its data; logs stay.
func Down(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		return fmt.Errorf("%s is a file, not a directory", dir)
	}
	st, err := Load(dir)
	if err != nil {
		return err
	}
	unlock, err := lock(dir)
	if err != nil {
		return err
	}
	defer unlock()
	g, err := newPG(filepath.Join(dir, "logs"))
	if err != nil {
		return err
	}
	teardown(st, g)
	removeNetwork(st)
	os.Remove(statePath(dir))
	os.Remove(readyPath(dir))
	os.Remove(filepath.Join(dir, "data"))
	return nil
}

// teardown stops peers (standbys first, so none logs its upstream's
// disappearance), then the supervisor, then the agents and the peers they
// made, then the etcd members it started, then removes the data.
func teardown(st *State, g *pg) {
	for _, sh := range st.Shards {
		for i := len(sh.Peers) - 1; i >= 0; i-- {
			g.stop(sh.Peers[i])
		}
	}
	if st.SupervisorPID != 0 {
		stopPID(st.SupervisorPID, syscall.SIGTERM, 20*time.Second)
	}
	stopAgents(st, g)
	stopEtcdMembers(st)
	// Routers and the dashboard outlive a supervisor that was killed;
	// stop them by pid.
	pidFiles := []string{UIPIDFile(st.Dir)}
	for i := range st.RouterPorts {
		pidFiles = append(pidFiles, RouterPIDFile(st.Dir, i))
	}
	for _, f := range pidFiles {
		if b, err := os.ReadFile(f); err == nil {
			var pid int
			fmt.Sscanf(string(b), "%d", &pid)
			stopPID(pid, syscall.SIGTERM, 10*time.Second)
			os.Remove(f)
		}
	}
	unmountDisks(st)
	if st.DataRoot != "" {
		os.RemoveAll(st.DataRoot)
	}
	os.RemoveAll(filepath.Join(st.Dir, "etcd"))
}

// uiAddr checks the dashboard's address: a port of 0 becomes a free one,
// and a port in use is refused now rather than when the supervisor starts.
func uiAddr(addr string, pp *ports) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("--ui %q: want HOST:PORT", addr)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	if port == "0" {
		p, err := pp.take()
		if err != nil {
			return "", err
		}
		return net.JoinHostPort(host, strconv.Itoa(p)), nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return "", fmt.Errorf("--ui %s: %w", addr, err)
	}
	l.Close()
	return net.JoinHostPort(host, port), nil
}
