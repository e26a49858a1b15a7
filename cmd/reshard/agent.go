package main

import (
	"context"
	"log/slog"

	"github.com/reshard/reshard/agent"
	"github.com/reshard/reshard/etcd"
	"github.com/spf13/cobra"
)

func newAgentCmd(g *globals) *cobra.Command {
	cfg := agent.Config{}
	cmd := &cobra.Command{
		Use:   "agent --host NAME --addr ADDR --data-root DIR [--pg-bin DIR]",
		Short: "Run on a PostgreSQL host: make, promote, re-point and remove its peers for the physical strategy",
		Long: `The host agent is the physical strategy's hands on one PostgreSQL host
when there is no lab. It registers the host in etcd (under
/reshard/agents/hosts/NAME, on a lease: the record goes when the agent
dies) and carries out the operations a job asks of the host:

  create-standby  pg_basebackup from the given primary, then stream from it
  promote         end recovery, fenced by the job's token in the database
  follow          stream from another upstream with a sync or async role
  set-sync        name (or stop naming) the synchronous standby
  remove          stop the peer and delete its data

Every operation is idempotent (a peer that is made and streaming is left
as it is; a half-made one is removed and made again) and carries the
job's fencing token: the agent refuses a job's operation whose token is
lower than the highest it has seen for the job (kept in DIR/tokens.json).
Each operation's status (running, done or failed with the error, and the
resulting peer with its DSN) is written back to etcd.

Peers listen on --addr, on a free port each, with their data under
DIR/data/PEER, their logs under DIR/logs. As root, PostgreSQL runs as the
postgres user, which must be able to enter DIR. pg_basebackup runs in a
process group of its own with its pid in DIR/basebackup.pid: an agent that
starts after one was killed kills a base backup still running, removes the
half-made peer and takes the operation up again. It also starts the
servers of its peers that are down.

Jobs use the agents with 'reshard start --strategy physical' without
--lab: --peer-hosts names the hosts of the new peers in order, or each new
peer takes a free registered host (one running no peer).`,
		Example: `  reshard agent --etcd http://etcd1:2379 --host pg-7 --addr 10.0.0.7 --data-root /var/lib/reshard
  reshard start --strategy physical --from 1.moray --to 3.moray --split-half --servers 3 --dc-mode triple --peer-hosts pg-7,pg-8,pg-9`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withSignals(cmd, func(ctx context.Context) error {
				cli, err := etcd.Connect(ctx, g.etcd)
				if err != nil {
					return err
				}
				defer cli.Close()
				cfg.Client = cli
				cfg.Log = slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), nil))
				return agent.Run(ctx, cfg)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Host, "host", "", "this host's name, as --peer-hosts names it (required)")
	f.StringVar(&cfg.Addr, "addr", "", "the address this host's PostgreSQL servers listen on and are reached at (required)")
	f.StringVar(&cfg.DataRoot, "data-root", "", "directory for the agent's state and its servers' data (required)")
	f.StringVar(&cfg.PGBin, "pg-bin", "", "PostgreSQL's binaries (default: found as for the lab)")
	f.DurationVar(&cfg.TTL, "ttl", 0, "lease of the host's registration (default 10s)")
	for _, name := range []string{"host", "addr", "data-root"} {
		cmd.MarkFlagRequired(name)
	}
	return cmd
}
