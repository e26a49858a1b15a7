// Package etcd keeps reshard's coordination state in etcd: the pnode
// registry, the ring and job state. It also runs an embedded etcd for the lab.
package etcd

import (
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Prefix is the root of every key reshard writes.
const Prefix = "/reshard/"

// Connect opens a client for comma-separated endpoints and checks that etcd
// answers, so a wrong URL fails here with a clear error rather than later.
func Connect(ctx context.Context, endpoints string) (*clientv3.Client, error) {
	eps := splitEndpoints(endpoints)
	if len(eps) == 0 {
		return nil, fmt.Errorf("no etcd endpoints given")
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   eps,
		DialTimeout: 5 * time.Second,
		// Notice a dead connection within seconds and redial quickly once
		// etcd is back, so a router cut off for a while catches up at once.
		DialKeepAliveTime:    3 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 2 * time.Second,
		})},
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", strings.Join(eps, ","), err)
	}
	// One member that answers is enough: the client fails over to it, and
	// a cluster with one member down still serves.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for i, ep := range eps {
		actx := cctx
		if len(eps) > 1 {
			// Leave time for the next endpoints if this one hangs.
			var c context.CancelFunc
			actx, c = context.WithTimeout(cctx, 5*time.Second/time.Duration(len(eps)))
			defer c()
		}
		_, err = cli.Status(actx, ep)
		if err == nil {
			return cli, nil
		}
		if i == len(eps)-1 {
			break
		}
	}
	cli.Close()
	return nil, fmt.Errorf("etcd %s is not reachable: %w", strings.Join(eps, ","), err)
}

func splitEndpoints(s string) []string {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}
