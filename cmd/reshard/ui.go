package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/ui"
	"github.com/spf13/cobra"
)

func newUICmd(g *globals) *cobra.Command {
	var listen, token, tokenFile string
	var sample time.Duration
	cmd := &cobra.Command{
		Use:   "ui [--listen ADDR] [--token-file FILE]",
		Short: "Serve the operator's dashboard: the ring, the shards, the routers and every job, live",
		Long: `Serve one web page, from this binary (nothing is fetched from elsewhere),
that shows what a reshard involves, live:

  Ring     the vnode space, one row per pnode, drawn as spans (a 1,000,000-
           vnode ring is 1,024 spans of 977 vnodes); read-only vnodes and
           what running jobs move (red while frozen); the ring's versions
           and what each moved
  Jobs     each running job's phases with progress, rate and ETA, its write
           block and cutover steps; a chart of the replicas' lag and of the
           running phase's pace; every finished job with its write blocks
  Shards   each pnode's peers as manatee-adm show prints them (role,
           address, WAL position, lag), its rows and size; the vnodes with
           the most rows on demand
  Routers  each router's ring version, request and retry rates, errors,
           p99 and ring load time, from its /metrics
  Locks    the pnode locks and the dump lock

Changes come from etcd watches and are pushed to the page as they happen
(server-sent events); the peers and the routers' metrics are read every
--sample. The page is read-only. With --token-file (the routers' token),
a request that carries it as a bearer token can revert, complete or abort
a job; this process then runs the orchestrator for it.

The HTTP API under the page:
  GET  /api/state                 everything the page shows, as JSON
  GET  /api/events                the same, then each change (text/event-stream)
  GET  /api/jobs/JOB              one job's whole record
  GET  /api/vnode-stats?pnode=P   the pnode's vnodes by rows (&top=N)
  POST /api/jobs/JOB/ACTION       revert, complete or abort (Authorization: Bearer TOKEN)`,
		Example: `  reshard ui --etcd http://127.0.0.1:2379 --listen 127.0.0.1:8090
  reshard ui --listen :8090 --token-file /etc/reshard/token
  curl -s localhost:8090/api/state | jq '.jobs[0].phases'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			token, err := readToken(token, tokenFile)
			if err != nil {
				return err
			}
			if sample < 200*time.Millisecond || sample > time.Hour {
				return fmt.Errorf("--sample must be between 200ms and 1h, got %v", sample)
			}
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("--listen %s: %w", listen, err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			cli, err := etcd.Connect(cctx, g.etcd)
			cancel()
			if err != nil {
				l.Close()
				return err
			}
			defer cli.Close()
			log := slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), nil))
			srv := ui.New(ui.Config{Etcd: cli, Token: token, Sample: sample, Log: log,
				Act: func(ctx context.Context, action, id string) error {
					o := newOrchestrator(cli, orchestratorSettings{})
					switch action {
					case "revert":
						return o.Revert(ctx, id)
					case "complete":
						return o.Complete(ctx, id)
					case "abort":
						return o.Abort(ctx, id)
					}
					return fmt.Errorf("unknown action %q", action)
				}})
			srv.Run(ctx)
			hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
			url := "http://" + l.Addr().String() + "/"
			log.Info("dashboard listening", "url", url, "etcd", g.etcd, "actions", token != "")
			fmt.Fprintln(cmd.OutOrStdout(), url)
			return serveUntil(ctx, hs, l, nil, 5*time.Second)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8090", "address to serve the dashboard on")
	cmd.Flags().StringVar(&token, "token", "", "allow actions to requests with this bearer token (prefer --token-file)")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "read the bearer token from this file")
	cmd.Flags().DurationVar(&sample, "sample", 2*time.Second, "how often to read the peers and the routers' metrics")
	return cmd
}
