package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/reshard/reshard"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/zookeeper"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func newPnodeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pnode",
		Short: "Register, list and remove pnodes (physical shards)",
		Long: `A pnode is one PostgreSQL shard: a primary and its replicas. The registry
in etcd maps each pnode name to its peers; routers and the orchestrator
find shards through it. The lab registers its shards with the same code.`,
	}
	cmd.AddCommand(newPnodeAddCmd(g), newPnodeListCmd(g), newPnodeRemoveCmd(g), newPnodeInitCmd(g))
	return cmd
}

func newPnodeAddCmd(g *globals) *cobra.Command {
	var primary string
	var replicas []string
	var zkServers string
	cmd := &cobra.Command{
		Use:   "add NAME --primary DSN [--replica DSN]...",
		Short: "Register a pnode",
		Long: `Register a pnode and the DSNs of its peers. The first --replica is the
synchronous standby, later ones are asynchronous, as in a Manatee shard.
--zookeeper names the ZooKeeper ensemble whose /pg_dump_lock the shard's
Manatee dump job obeys: a reshard of the pnode takes its dump lock there
too, unless 'reshard start --zookeeper' says otherwise.`,
		Example: `  reshard pnode add 3.moray --primary 'postgres://postgres:PW@db3a:5432/moray' \
      --replica 'postgres://postgres:PW@db3b:5432/moray'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := reshard.Pnode{Name: args[0]}
			if err := reshard.ValidatePnodeName(p.Name); err != nil {
				return err
			}
			if primary == "" {
				return fmt.Errorf("--primary is required")
			}
			dsns := append([]string{primary}, replicas...)
			for i, dsn := range dsns {
				if err := postgres.CheckDSN(dsn); err != nil {
					return err
				}
				role := reshard.RoleAsync
				switch i {
				case 0:
					role = reshard.RolePrimary
				case 1:
					role = reshard.RoleSync
				}
				p.Peers = append(p.Peers, reshard.Peer{Name: fmt.Sprintf("%s-%d", p.Name, i+1), Role: role, DSN: dsn})
			}
			if zkServers != "" {
				servers, err := zookeeper.ParseServers(zkServers)
				if err != nil {
					return fmt.Errorf("--zookeeper: %w", err)
				}
				p.ZooKeeper = servers
			}
			if err := p.Validate(); err != nil {
				return err
			}
			return withEtcd(cmd, g, 15*time.Second, func(ctx context.Context, cli *clientv3.Client) error {
				if err := etcd.NewRegistry(cli).AddPnode(ctx, p); err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), redactPnode(p))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "registered pnode %s with %d peers\n", p.Name, len(p.Peers))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&primary, "primary", "", "DSN of the primary")
	cmd.Flags().StringArrayVar(&replicas, "replica", nil, "DSN of a replica (repeatable; first is sync)")
	cmd.Flags().StringVar(&zkServers, "zookeeper", "", "HOST:PORT,... of the ZooKeeper whose /pg_dump_lock this shard's dumps obey")
	return cmd
}

func newPnodeListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List registered pnodes (passwords are never shown)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withEtcd(cmd, g, 15*time.Second, func(ctx context.Context, cli *clientv3.Client) error {
				ps, err := etcd.NewRegistry(cli).Pnodes(ctx)
				if err != nil {
					return err
				}
				for i := range ps {
					ps[i] = redactPnode(ps[i])
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), ps)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "PNODE\tROLE\tPEER\tDSN")
				for _, p := range ps {
					for _, peer := range p.Peers {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, peer.Role, peer.Name, peer.DSN)
					}
				}
				return tw.Flush()
			})
		},
	}
}

func newPnodeRemoveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME",
		Short: "Unregister a pnode (refused while the ring maps vnodes to it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withEtcd(cmd, g, 15*time.Second, func(ctx context.Context, cli *clientv3.Client) error {
				reg := etcd.NewRegistry(cli)
				if err := reg.RemovePnode(ctx, args[0]); err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), map[string]string{"removed": args[0]})
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed pnode %s\n", args[0])
				return nil
			})
		},
	}
}

// redactPnode hides the passwords in a pnode's DSNs for display.
func redactPnode(p reshard.Pnode) reshard.Pnode {
	out := p
	out.Peers = make([]reshard.Peer, len(p.Peers))
	for i, peer := range p.Peers {
		peer.DSN = postgres.RedactDSN(peer.DSN)
		out.Peers[i] = peer
	}
	return out
}
