package lab

import (
	"context"
	"net"
	"os"
	"path/filepath"
)

// Server is a single PostgreSQL server outside any lab, for tests of code
// that needs a real database but no etcd or replication.
type Server struct {
	Peer
	g    *pg
	root string
}

// StartServer initializes and starts a server with a "moray" database,
// keeping its log in logDir.
func StartServer(ctx context.Context, logDir string) (*Server, error) {
	g, err := newPG(logDir)
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "reshard-pg-")
	if err != nil {
		return nil, err
	}
	if err := g.as.Chown(root); err != nil {
		os.RemoveAll(root)
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.RemoveAll(root)
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &Server{g: g, root: root, Peer: Peer{
		Name: "pg", Role: "primary", Port: port, DataDir: filepath.Join(root, "pg"),
	}}
	err = g.initPrimary(s.Peer)
	if err == nil {
		_, err = g.writeConf(s.Peer, "", nil)
	}
	if err == nil {
		err = g.start(ctx, &s.Peer)
	}
	if err == nil {
		err = createDatabase(ctx, s.Peer)
	}
	if err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// Stop shuts the server down and removes its data.
func (s *Server) Stop() {
	s.g.stop(s.Peer)
	os.RemoveAll(s.root)
}
