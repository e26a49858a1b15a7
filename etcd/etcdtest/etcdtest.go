// Package etcdtest runs a real embedded etcd for tests.
package etcdtest

import (
	"context"
	"net"
	"testing"

	"github.com/reshard/reshard/etcd"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Start runs an embedded etcd for one test and returns a client to it.
// Tests use a real etcd, never a mock.
func Start(t testing.TB) (*clientv3.Client, string) {
	t.Helper()
	dir := t.TempDir()
	cp, pp := FreePort(t), FreePort(t)
	m, err := etcd.StartEmbedded(dir, cp, pp, dir+"/etcd.log")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	cli, err := etcd.Connect(context.Background(), m.ClientURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli, m.ClientURL
}

// FreePort asks the kernel for a free TCP port on 127.0.0.1.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
