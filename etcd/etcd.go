// Package etcd keeps reshard's coordination state in etcd: the pnode
// registry, the ring and job state. It also runs an embedded etcd for the lab.
package etcd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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

// attempt is how long one try of a request in attempts may take.
const attempt = 2 * time.Second

// attempts runs fn up to three times, each try with its own deadline, while
// it fails for want of a member. A request that went to a member the
// network has cut off hangs until the connection's keepalive gives up,
// seconds later, and then fails even if other members serve; a new try is
// sent to another member. fn must be safe to repeat.
func attempts(ctx context.Context, fn func(ctx context.Context) error) error {
	var err error
	for i := 0; i < 3; i++ {
		actx, cancel := context.WithTimeout(ctx, attempt)
		err = fn(actx)
		cancel()
		if err == nil || ctx.Err() != nil || !memberUnreachable(err) {
			return err
		}
	}
	return err
}

// memberUnreachable reports an error that another member may not give.
func memberUnreachable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	s, ok := status.FromError(err)
	return ok && (s.Code() == codes.Unavailable || s.Code() == codes.DeadlineExceeded)
}

// get is a Get tried again on another member when the one asked does not
// answer (attempts): for the small reads of the request path (registry,
// buckets), which must not wait out a partitioned member's keepalive.
func get(ctx context.Context, kv clientv3.KV, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	var resp *clientv3.GetResponse
	err := attempts(ctx, func(ctx context.Context) (err error) {
		resp, err = kv.Get(ctx, key, opts...)
		return err
	})
	return resp, err
}
