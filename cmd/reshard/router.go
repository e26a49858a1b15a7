package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/router"
	"github.com/spf13/cobra"
)

func newRouterCmd(g *globals) *cobra.Command {
	var listen, morayListen, name, advertise, token, tokenFile string
	cfg := router.Config{}
	cmd := &cobra.Command{
		Use:   "router --etcd URL --listen ADDR",
		Short: "Serve objects over HTTP/JSON, routed by the ring (electric-moray's role)",
		Long: `The router is stateless. It reads the ring from etcd and follows every new
version through a watch, without a restart, and keeps a pool of connections
to each pnode's primary. When a shard fences a write because its vnode is
frozen or has moved, the router waits for the next ring version and retries
(up to --retry-for), so clients see a short delay during a reshard, not an
error. It registers itself in etcd with the ring version it serves, so a
reshard can wait until every router has the new ring.

API (JSON):
  PUT    /buckets/B                 create bucket B on every shard ({"hash_dir":true} optional)
  PUT    /buckets/B/objects/KEY     write (If-Match: "ETAG" for a conditional write)
  GET    /buckets/B/objects/KEY     read
  DELETE /buckets/B/objects/KEY     delete (If-Match optional)
  GET    /buckets/B/objects?prefix=P&limit=N
  GET    /metrics (Prometheus), /healthz

With --moray-listen the router also speaks Moray's Fast RPC protocol, as
electric-moray does (its port is 2020), so Manta's own clients (npm moray)
work unchanged: createBucket, getBucket, listBuckets, updateBucket,
delBucket, putObject, getObject, delObject, findObjects, batch, getTokens,
ping and version. A bucket's Moray indexes become typed
columns with indexes on every shard, and findObjects runs its filter as SQL
on them. The "manta" bucket hashes a key's parent directory and
"manta_uploads" the parent of the path after the upload id, as
electric-moray does. Moray has no authentication: bind it to a private
address. Both ports share the ring, the fence and the retry while a vnode
moves.

findObjects runs on one shard when it names options.hashkey (the vnode it
hashes to) or options.token (a pnode from getTokens). A find that names
neither is a cross-shard find, and --cross-shard-find says what to do:
  refuse  (default) answer exactly as electric-moray does: a plain Error,
          "Invalid search request, requires either token or hashkey".
  gather  run the find on every shard of the ring and merge the rows into
          the answer one Moray holding every row would give: sort (k-way
          merge of the shards' sorted rows, ordered as PostgreSQL orders
          the column type), limit (1000 unless limit or noLimit), offset
          (skipped after the merge), _count (the sum of the shards' counts)
          and Moray's JavaScript re-check. Each shard's rows are kept to
          the vnodes the ring maps to it, so rows of a vnode being moved
          show once. Without a sort the order is undefined, as in Moray;
          _id is each shard's own sequence, so a sort on _id interleaves
          the shards rather than number the rows as one Moray would.`,
		Example: `  reshard router --etcd http://127.0.0.1:2379 --listen 127.0.0.1:8080
  curl -X PUT localhost:8080/buckets/manta -d '{"hash_dir":true}'
  curl -X PUT localhost:8080/buckets/manta/objects//u/stor/a -d '{"size":1}'
  reshard router --etcd http://127.0.0.1:2379 --listen 127.0.0.1:8080 --moray-listen 127.0.0.1:2020`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkCrossShardFind(cfg.CrossShardFind); err != nil {
				return err
			}
			token, err := readToken(token, tokenFile)
			if err != nil {
				return err
			}
			if name == "" {
				h, _ := os.Hostname()
				name = fmt.Sprintf("%s-%d", h, os.Getpid())
			}
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("--listen %s: %w", listen, err)
			}
			var ml net.Listener
			if morayListen != "" {
				if ml, err = net.Listen("tcp", morayListen); err != nil {
					l.Close()
					return fmt.Errorf("--moray-listen %s: %w", morayListen, err)
				}
			}
			if advertise == "" {
				advertise = "http://" + l.Addr().String()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			cli, err := etcd.Connect(cctx, g.etcd)
			cancel()
			if err != nil {
				l.Close()
				if ml != nil {
					ml.Close()
				}
				return err
			}
			defer cli.Close()
			log := slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), nil)).With("router", name)
			cfg.Etcd, cfg.Name, cfg.URL, cfg.Token, cfg.Log = cli, name, advertise, token, log
			rt := router.New(cfg)
			done := make(chan struct{})
			go func() { rt.Run(ctx); close(done) }()
			srv := &http.Server{
				Handler:           rt.Handler(),
				ReadHeaderTimeout: 10 * time.Second,
				ReadTimeout:       30 * time.Second,
				WriteTimeout:      cfg.RetryFor + 30*time.Second,
				IdleTimeout:       2 * time.Minute,
			}
			// Accept requests only once the ring is loaded, so a restarted
			// router delays its first clients instead of failing them.
			wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
			if err := rt.WaitRing(wctx); err != nil {
				log.Warn("serving without a ring", "err", err)
			}
			wcancel()
			log.Info("router listening", "addr", l.Addr().String(), "etcd", g.etcd, "ring_version", rt.RingVersion())
			errc := make(chan error, 1)
			if ml != nil {
				log.Info("moray listening", "addr", ml.Addr().String())
				go func() {
					if err := rt.ServeMoray(ctx, ml); err != nil {
						errc <- fmt.Errorf("moray: %w", err)
					}
				}()
			}
			if err := serveUntil(ctx, srv, l, errc, 10*time.Second); err != nil {
				return err
			}
			<-done
			log.Info("router stopped")
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "address to serve HTTP on")
	cmd.Flags().StringVar(&morayListen, "moray-listen", "", "also serve Moray's Fast RPC protocol on this address (electric-moray's port is 2020)")
	cmd.Flags().StringVar(&name, "name", "", "name in etcd (default HOST-PID)")
	cmd.Flags().StringVar(&advertise, "url", "", "URL clients use (default http://LISTEN)")
	cmd.Flags().StringVar(&token, "token", "", "require this bearer token (prefer --token-file)")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "read the bearer token from this file")
	cmd.Flags().DurationVar(&cfg.RetryFor, "retry-for", 15*time.Second, "how long to retry an operation on a moving vnode")
	cmd.Flags().Int64Var(&cfg.MaxBody, "max-body", 1<<20, "largest request body in bytes")
	cmd.Flags().Int32Var(&cfg.PoolSize, "pool-size", 16, "connections to each shard's primary")
	cmd.Flags().StringVar(&cfg.CrossShardFind, "cross-shard-find", router.CrossShardRefuse,
		"a findObjects with neither hashkey nor token: refuse (as electric-moray) or gather (from every shard)")
	return cmd
}

// checkCrossShardFind checks --cross-shard-find.
func checkCrossShardFind(mode string) error {
	switch mode {
	case router.CrossShardRefuse, router.CrossShardGather:
		return nil
	}
	return fmt.Errorf("--cross-shard-find must be refuse or gather, not %q", mode)
}

// readToken is --token, or the content of --token-file when given.
func readToken(token, file string) (string, error) {
	if file == "" {
		return token, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	token = strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("--token-file %s is empty", file)
	}
	return token, nil
}

// serveUntil serves srv on l until ctx ends, or until it or another of the
// process's servers (failed) fails; then it shuts srv down, giving its
// requests grace to finish.
func serveUntil(ctx context.Context, srv *http.Server, l net.Listener, failed <-chan error, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	case err = <-failed:
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	srv.Shutdown(sctx)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
