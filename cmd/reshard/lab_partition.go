package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"text/tabwriter"

	"github.com/reshard/reshard/lab"
	"github.com/spf13/cobra"
)

func newLabPartitionCmd(g *globals) *cobra.Command {
	var dir string
	var fromAll bool
	cmd := &cobra.Command{
		Use:   "partition --dir DIR A B | A --from-all",
		Short: "Cut the network between two hosts of a lab (or one host from all)",
		Long: `Cuts the link between hosts A and B of a lab started with --hosts: each
drops every packet to or from the other, established connections too, so
both sides see what a failed switch or a split datacenter looks like
(connections hang, then time out), not a refused connection. With
--from-all, A is cut from every host and from this machine.

Hosts are named as 'lab status --hosts' lists them: peers (1.moray-1),
etcd members (etcd-1), routers (router-1), and control, this machine,
where the lab's commands, the orchestrator and the tests run. The cut
stays until 'lab heal'.`,
		Example: `  reshard lab partition --dir /tmp/lab router-1 etcd-2
  reshard lab partition --dir /tmp/lab control etcd-1
  reshard lab partition --dir /tmp/lab 1.moray-1 --from-all
  reshard lab heal --dir /tmp/lab`,
		Args: func(cmd *cobra.Command, args []string) error {
			if fromAll && len(args) != 1 {
				return fmt.Errorf("--from-all takes one host, got %d", len(args))
			}
			if !fromAll && len(args) != 2 {
				return fmt.Errorf("name two hosts to cut apart (or one with --from-all), got %d", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			b := ""
			if len(args) == 2 {
				b = args[1]
			}
			p, err := lab.Cut(dir, args[0], b)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), p)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cut: %s\n", p)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the lab's directory (required)")
	cmd.Flags().BoolVar(&fromAll, "from-all", false, "cut the host from every other host and from this machine")
	cmd.MarkFlagRequired("dir")
	return cmd
}

func newLabHealCmd(g *globals) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "heal --dir DIR [A [B]]",
		Short: "Restore links cut by 'lab partition': all of them, A's, or A's to B",
		Example: `  reshard lab heal --dir /tmp/lab
  reshard lab heal --dir /tmp/lab router-1
  reshard lab heal --dir /tmp/lab router-1 etcd-2`,
		Args: cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, b := "", ""
			if len(args) > 0 {
				a = args[0]
			}
			if len(args) > 1 {
				b = args[1]
			}
			healed, err := lab.Heal(dir, a, b)
			if err != nil {
				return err
			}
			if g.json {
				if healed == nil {
					healed = []lab.Partition{}
				}
				return printJSON(cmd.OutOrStdout(), healed)
			}
			for _, p := range healed {
				fmt.Fprintf(cmd.OutOrStdout(), "healed: %s\n", p)
			}
			if len(healed) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no links were cut")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the lab's directory (required)")
	cmd.MarkFlagRequired("dir")
	return cmd
}

func printHosts(w io.Writer, g *globals, st *lab.State) error {
	rows := lab.HostRows(st)
	if g.json {
		return printJSON(w, rows)
	}
	fmt.Fprintf(w, "hosts (bridge %s, %s", st.Network.Bridge, st.Network.CIDR())
	if st.Network.DCs > 1 {
		fmt.Fprintf(w, ", %d datacenters %s apart each way", st.Network.DCs, st.Network.Latency)
	}
	fmt.Fprintln(w, "):")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tADDRESS\tDC\tRUNS\tCUT FROM")
	for _, r := range rows {
		cut, dc := "-", "-"
		if len(r.CutFrom) > 0 {
			cut = strings.Join(r.CutFrom, ",")
		}
		if r.DC > 0 {
			dc = fmt.Sprint(r.DC)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, r.Addr, dc, r.Runs, cut)
	}
	return tw.Flush()
}

func newLabDelayCmd() *cobra.Command {
	var dir, host string
	cmd := &cobra.Command{
		Use:    "delay --dir DIR --host NAME",
		Short:  "Delay the packets a lab host receives from other datacenters (run by the lab)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return lab.RunDelayer(dir, host)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the lab's directory")
	cmd.Flags().StringVar(&host, "host", "", "the host")
	return cmd
}

func newLabExecCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "exec --dir DIR HOST -- COMMAND [ARG...]",
		Short: "Run a command on a host of a lab (in its network namespace), as root",
		Long: `Runs COMMAND in the network namespace of HOST, a host of a lab started
with --hosts, with this terminal's input and output; it exits with the
command's status. The command sees the network as the host does: its
address, and whatever 'lab partition' cut from it. Run an orchestrator on
a spare host to cut it off from etcd but not from PostgreSQL, for one.`,
		Example: `  reshard lab exec --dir /tmp/lab spare-1 -- reshard resume JOB --etcd $RESHARD_ETCD
  reshard lab exec --dir /tmp/lab 1.moray-1 -- ip addr`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 {
				return fmt.Errorf("give the host, then -- and the command: exec --dir DIR HOST -- COMMAND")
			}
			st, err := lab.Load(dir)
			if err != nil {
				return err
			}
			c, err := st.HostCommand(args[0], args[1:]...)
			if err != nil {
				return err
			}
			c.Stdin, c.Stdout, c.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
			if err := c.Run(); err != nil {
				var exit *exec.ExitError
				if errors.As(err, &exit) {
					os.Exit(exit.ExitCode())
				}
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the lab's directory (required)")
	cmd.MarkFlagRequired("dir")
	return cmd
}
