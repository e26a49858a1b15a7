package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/reshard/reshard/lab"
	"github.com/reshard/reshard/postgres"
	"github.com/spf13/cobra"
)

func newLabCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run a local lab: embedded etcd and Manatee-shaped PostgreSQL shards",
		Long: `The lab plays the part of a Manta lab deployment on this machine, on
127.0.0.1 only: an embedded etcd, and shards named 1.moray, 2.moray, ...,
each a PostgreSQL cluster whose peers form a replication chain as in
Manatee: peer 1 is the primary, peer 2 its synchronous standby, the rest
asynchronous standbys. Every shard is registered as a pnode in etcd.

The processes keep running after 'lab up' returns, until 'lab down'. As
root, PostgreSQL runs as the postgres user with its data in a temp
directory that user owns; DIR keeps the state file and the logs.

With --hosts (root only) the lab looks like a deployment instead: every
PostgreSQL peer, etcd member and router is its own host, a network
namespace with its own address on a bridge the lab creates, and
'lab partition' cuts the links between hosts by dropping their packets.
This machine is the host named control: the lab's commands, the
orchestrator and the tests run there.`,
	}
	cmd.AddCommand(newLabUpCmd(g), newLabDownCmd(g), newLabStatusCmd(g), newLabAddShardCmd(g), newLabRestartCmd(g),
		newLabPartitionCmd(g), newLabHealCmd(g), newLabExecCmd(), newLabSuperviseCmd(), newLabEtcdMemberCmd(), newLabDelayCmd(), newLabDiskCmd(g))
	return cmd
}

// labView is what `lab up` and `lab add-shard` print.
type labView struct {
	Etcd    string      `json:"etcd"`
	Routers []string    `json:"routers"`
	Moray   []string    `json:"moray"` // each router's Moray (Fast RPC) address
	UI      string      `json:"ui,omitempty"`
	Shards  []shardView `json:"shards"`
}

type shardView struct {
	Name  string     `json:"name"`
	Peers []peerView `json:"peers"`
}

type peerView struct {
	Role string `json:"role"`
	Name string `json:"name"`
	Port int    `json:"port"`
	DSN  string `json:"dsn"`
}

func viewOf(st *lab.State) labView {
	v := labView{Etcd: st.EtcdURL, Routers: st.Routers, Moray: st.Moray, UI: st.UI, Shards: []shardView{}}
	if v.Routers == nil {
		v.Routers = []string{}
	}
	if v.Moray == nil {
		v.Moray = []string{}
	}
	for _, sh := range st.Shards {
		sv := shardView{Name: sh.Name}
		for _, p := range sh.Peers {
			sv.Peers = append(sv.Peers, peerView{Role: string(p.Role), Name: p.Name, Port: p.Port, DSN: p.DSN()})
		}
		v.Shards = append(v.Shards, sv)
	}
	return v
}

func printLab(w io.Writer, g *globals, st *lab.State) error {
	if g.json {
		return printJSON(w, viewOf(st))
	}
	fmt.Fprintf(w, "etcd: %s (ring version %d)\n", st.EtcdURL, st.RingVersion)
	for i, r := range st.Routers {
		if i < len(st.Moray) {
			fmt.Fprintf(w, "router: %s (moray %s)\n", r, st.Moray[i])
		} else {
			fmt.Fprintf(w, "router: %s\n", r)
		}
	}
	if st.UI != "" {
		fmt.Fprintf(w, "dashboard: %s\n", st.UI)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tROLE\tPEER\tDSN")
	for _, sh := range st.Shards {
		for _, p := range sh.Peers {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", sh.Name, p.Role, p.Name, p.DSN())
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "\nexport RESHARD_ETCD=%s\n", st.EtcdURL)
	return nil
}

func newLabUpCmd(g *globals) *cobra.Command {
	cfg := lab.Config{}
	cmd := &cobra.Command{
		Use:   "up --dir DIR [--shards N] [--peers P] [--routers R] [--etcd-members M]",
		Short: "Bring up a lab and wait until it is ready",
		Example: `  reshard lab up --dir /tmp/lab --shards 2 --peers 3
  reshard lab up --dir /tmp/lab --json | jq .shards[0].peers[0].dsn
  reshard lab up --dir /tmp/lab --etcd-members 3 --routers 2
  reshard lab up --dir /tmp/lab --routers 2 --ui 127.0.0.1:8090
  sudo reshard lab up --dir /tmp/lab --hosts --etcd-members 3 --routers 2
  sudo reshard lab up --dir /tmp/lab --hosts --dcs 3 --dc-latency 10ms --etcd-members 3 --routers 3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			// Ctrl-C tears a half-built lab down instead of leaving it running.
			return withSignals(cmd, func(ctx context.Context) error {
				cfg.Progress = cmd.ErrOrStderr()
				start := time.Now()
				st, err := lab.Up(ctx, cfg)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "lab up in %.1fs\n", time.Since(start).Seconds())
				return printLab(cmd.OutOrStdout(), g, st)
			})
		},
	}
	cmd.Flags().StringVar(&cfg.Dir, "dir", "", "directory for the lab's state and logs (required)")
	cmd.Flags().IntVar(&cfg.Shards, "shards", 2, "number of shards (1.moray, 2.moray, ...)")
	cmd.Flags().IntVar(&cfg.Peers, "peers", 3, "PostgreSQL peers per shard: primary, sync, then asyncs")
	cmd.Flags().IntVar(&cfg.Routers, "routers", 0, "number of routers, each its own process")
	cmd.Flags().StringVar(&cfg.UI, "ui", "", "also serve the dashboard ('reshard ui') on HOST:PORT (port 0: a free one), kept up by the lab")
	cmd.Flags().IntVar(&cfg.Vnodes, "vnodes", lab.DefaultVnodes, "vnodes in the ring, spread over the shards")
	cmd.Flags().IntVar(&cfg.EtcdMembers, "etcd-members", 1,
		"etcd cluster size, odd, 1 to 7: 1 is embedded in the lab's supervisor, more are each their own process")
	cmd.Flags().BoolVar(&cfg.Hosts, "hosts", false,
		"put every peer, etcd member and router in its own network namespace with its own address (root only; see 'lab partition')")
	cmd.Flags().IntVar(&cfg.DCs, "dcs", 1,
		"with --hosts, spread the hosts over this many datacenters (1 to 3): a shard's primary, sync and async each in another, with --dc-latency between any two")
	cmd.Flags().DurationVar(&cfg.DCLatency, "dc-latency", 10*time.Millisecond, "one-way latency between two datacenters (--dcs)")
	cmd.Flags().IntVar(&cfg.SpareHosts, "spare-hosts", lab.DefaultSpareHosts,
		"this many spare hosts (spare-1, ...), each running a host agent and no peer: the physical strategy's new peers go there (a triple-DC split of one pnode takes 3); with --hosts each is a host of its own, e.g. to run an orchestrator apart with 'lab exec'")
	cmd.Flags().IntVar(&cfg.BasePort, "port", 0, "first port to use, then consecutive ones (default: free ports)")
	cmd.Flags().StringVar(&cfg.CrossShardFind, "cross-shard-find", "",
		"the routers' --cross-shard-find: refuse (electric-moray's answer to a findObjects with neither hashkey nor token) or gather (run it on every shard and merge); default refuse")
	cmd.MarkFlagRequired("dir")
	return cmd
}

func newLabDownCmd(g *globals) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "down --dir DIR",
		Short: "Stop every process of a lab and remove its data (logs stay in DIR/logs)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := lab.Down(dir); err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), map[string]string{"down": dir})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "lab in %s is down\n", dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the lab's directory (required)")
	cmd.MarkFlagRequired("dir")
	return cmd
}

func newLabAddShardCmd(g *globals) *cobra.Command {
	var dir, name string
	var peers int
	cmd := &cobra.Command{
		Use:     "add-shard --dir DIR --name NAME [--peers P]",
		Short:   "Add an empty shard to a running lab (the destination of a reshard)",
		Example: `  reshard lab add-shard --dir /tmp/lab --name 3.moray --peers 3`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			// Ctrl-C stops adding the shard (cancels lab.AddShard).
			return withSignals(cmd, func(ctx context.Context) error {
				st, err := lab.AddShard(ctx, dir, name, peers, cmd.ErrOrStderr())
				if err != nil {
					return err
				}
				return printLab(cmd.OutOrStdout(), g, st)
			})
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the lab's directory (required)")
	cmd.Flags().StringVar(&name, "name", "", "shard (pnode) name, e.g. 3.moray (required)")
	cmd.Flags().IntVar(&peers, "peers", 3, "PostgreSQL peers in the new shard")
	cmd.MarkFlagRequired("dir")
	cmd.MarkFlagRequired("name")
	return cmd
}

func newLabStatusCmd(g *globals) *cobra.Command {
	var dir string
	var etcdOnly, hostsOnly bool
	cmd := &cobra.Command{
		Use:   "status --dir DIR",
		Short: "Show each shard's peers and replication, like manatee-adm show",
		Long: `For each shard, one row per peer in replication order. REPL, SENT, FLUSH
and REPLAY describe the stream from this peer to the next one, read from
its pg_stat_replication; LAG is how far the peer trails its upstream.
A lab of several etcd members lists them after the shards: whether each
answers, and which one leads. --etcd shows only the etcd members (the
embedded one is named lab). A lab of hosts then lists its hosts: each
one's address, what runs there and which links are cut; --hosts shows
only those. The lab's spare hosts run a host agent each: a peer an agent
made (the physical strategy's new peers) shows that host under HOST.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := lab.Load(dir)
			if err != nil {
				return err
			}
			if etcdOnly {
				return printEtcdMembers(cmd.OutOrStdout(), g, lab.EtcdStatus(cmd.Context(), st))
			}
			if hostsOnly {
				if st.Network == nil {
					return fmt.Errorf("the lab in %s has no hosts (start it with --hosts)", dir)
				}
				return printHosts(cmd.OutOrStdout(), g, st)
			}
			rows := lab.Status(cmd.Context(), st)
			if g.json {
				return printJSON(cmd.OutOrStdout(), rows)
			}
			w := cmd.OutOrStdout()
			var tw *tabwriter.Writer
			for i, r := range rows {
				if i == 0 || rows[i-1].Shard != r.Shard {
					if tw != nil {
						tw.Flush()
						fmt.Fprintln(w)
					}
					fmt.Fprintf(w, "cluster: %s\n", r.Shard)
					tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "ROLE\tPEER\tHOST\tPG\tREPL\tSENT\tFLUSH\tREPLAY\tLAG")
				}
				host := r.Peer // each of the lab's own peers is a host of its own
				if r.Agent != "" {
					host = r.Agent
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Role, r.Peer, host, r.PG, r.Repl,
					lsnOr(r.Sent), lsnOr(r.Flush), lsnOr(r.Replay), lagText(r))
			}
			if tw != nil {
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			if len(st.EtcdMembers) > 0 {
				if tw != nil {
					fmt.Fprintln(w)
				}
				if err := printEtcdMembers(w, g, lab.EtcdStatus(cmd.Context(), st)); err != nil {
					return err
				}
			}
			if st.Network != nil {
				fmt.Fprintln(w)
				return printHosts(w, g, st)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the lab's directory (required)")
	cmd.Flags().BoolVar(&etcdOnly, "etcd", false, "show only the etcd members")
	cmd.Flags().BoolVar(&hostsOnly, "hosts", false, "show only the hosts (a lab started with --hosts)")
	cmd.MarkFlagRequired("dir")
	return cmd
}

func printEtcdMembers(w io.Writer, g *globals, ms []lab.EtcdMemberStatus) error {
	if g.json {
		return printJSON(w, ms)
	}
	fmt.Fprintln(w, "etcd:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tCLIENT\tETCD\tLEADER")
	for _, m := range ms {
		up, leader := "down", "-"
		if m.Answers {
			up = "ok"
		}
		if m.Leader {
			leader = "leader"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.Name, m.ClientURL, up, leader)
	}
	return tw.Flush()
}

func lsnOr(l *postgres.LSN) string {
	if l == nil {
		return "-"
	}
	return l.String()
}

func lagText(r lab.PeerStatus) string {
	if r.LagSeconds == nil {
		if r.LagBytes != nil && *r.LagBytes > 0 {
			return fmt.Sprintf("%dB", *r.LagBytes)
		}
		return "-"
	}
	d := time.Duration(*r.LagSeconds * float64(time.Second))
	return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
}

func newLabSuperviseCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:    "supervise --dir DIR",
		Short:  "Run the lab's long-lived services (started by 'lab up')",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return lab.Supervise(dir)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the lab's directory")
	return cmd
}

func newLabEtcdMemberCmd() *cobra.Command {
	var dir, name string
	cmd := &cobra.Command{
		Use:    "etcd-member --dir DIR --name NAME",
		Short:  "Run one member of the lab's etcd cluster (started by 'lab up --etcd-members')",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return lab.RunEtcdMember(dir, name)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the lab's directory")
	cmd.Flags().StringVar(&name, "name", "", "the member's name, e.g. etcd-1")
	return cmd
}

func newLabRestartCmd(g *globals) *cobra.Command {
	var dir, peer, member string
	var etcdToo, kill bool
	var down time.Duration
	cmd := &cobra.Command{
		Use:   "restart --dir DIR (--peer NAME [--kill] | --etcd | --etcd-member NAME|leader) [--down D]",
		Short: "Restart a PostgreSQL peer (fast shutdown, or SIGKILL), the embedded etcd or one etcd member (SIGKILL): faults for tests and drills",
		Example: `  reshard lab restart --dir /tmp/lab --peer 1.moray-1 --down 2s
  reshard lab restart --dir /tmp/lab --peer 1.moray-1 --kill   # the postmaster SIGKILLed: crash recovery on start
  reshard lab restart --dir /tmp/lab --etcd
  reshard lab restart --dir /tmp/lab --etcd-member leader --down 2s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			given := 0
			for _, set := range []bool{peer != "", etcdToo, member != ""} {
				if set {
					given++
				}
			}
			if given != 1 {
				return fmt.Errorf("give exactly one of --peer, --etcd and --etcd-member")
			}
			if down < 0 || down > time.Hour {
				return fmt.Errorf("--down must be between 0 and 1h")
			}
			if kill && peer == "" {
				return fmt.Errorf("--kill applies to --peer (etcd members are always SIGKILLed)")
			}
			return withSignals(cmd, func(ctx context.Context) error {
				if etcdToo {
					return lab.RestartEtcd(ctx, dir)
				}
				if member != "" {
					return lab.RestartEtcdMember(ctx, dir, member, down, func(name string) {
						// Printed before the kill, so a drill log shows
						// which member went down while it is down.
						if g.json {
							printJSON(cmd.OutOrStdout(), map[string]string{"etcd_member": name})
						} else {
							fmt.Fprintf(cmd.OutOrStdout(), "killed etcd member %s\n", name)
						}
					})
				}
				return lab.RestartPeer(ctx, dir, peer, down, kill)
			})
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the lab's directory (required)")
	cmd.Flags().StringVar(&peer, "peer", "", "peer to restart, e.g. 1.moray-1")
	cmd.Flags().BoolVar(&etcdToo, "etcd", false, "restart the embedded etcd")
	cmd.Flags().BoolVar(&kill, "kill", false, "SIGKILL the peer's postmaster instead of a fast shutdown")
	cmd.Flags().StringVar(&member, "etcd-member", "", "etcd member to kill (SIGKILL) and start again on its data, e.g. etcd-2, or leader for whichever leads now")
	cmd.Flags().DurationVar(&down, "down", 0, "how long the peer or member stays down")
	cmd.MarkFlagRequired("dir")
	return cmd
}
