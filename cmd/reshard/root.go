package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/reshard/reshard/etcd"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// globals are the flags every subcommand shares.
type globals struct {
	etcd string
	json bool
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "reshard",
		Short: "Run a vnode-sharded PostgreSQL metadata tier and reshard it online",
		Long: `reshard runs Manta's metadata tier design: keys hash to vnodes, vnodes map to
pnodes (PostgreSQL shards), and the ring that maps them lives in etcd.
It automates RFD 103's resharding runbook.

Every command that needs the coordination store takes --etcd (or the
RESHARD_ETCD environment variable). 'reshard lab up' prints the URL of the
lab's embedded etcd.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	def := os.Getenv("RESHARD_ETCD")
	if def == "" {
		def = "http://127.0.0.1:2379"
	}
	root.PersistentFlags().StringVar(&g.etcd, "etcd", def, "etcd endpoints, comma-separated (env RESHARD_ETCD)")
	root.PersistentFlags().BoolVar(&g.json, "json", false, "print JSON for scripts")
	root.AddCommand(newLabCmd(g), newPnodeCmd(g), newRingCmd(g), newRouterCmd(g), newLoadCmd(g), newVerifyCmd(g), newVnodeStatsCmd(g),
		newStartCmd(g), newResumeCmd(g), newRunCmd(g), newAbortCmd(g), newRevertCmd(g), newCompleteCmd(g), newStatusCmd(g), newWatchCmd(g), newJobsCmd(g),
		newDumpCmd(g), newLocksCmd(g), newDemoCmd(g), newBenchCmd(g), newAgentCmd(g), newUICmd(g))
	return root
}

// printJSON writes v as one line of JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// cmdContext bounds a short command so a dead etcd fails it instead of hanging.
func cmdContext(cmd *cobra.Command, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), d)
}

// withEtcd runs fn with a client of --etcd, within d (cmdContext), and
// closes the client after.
func withEtcd(cmd *cobra.Command, g *globals, d time.Duration, fn func(context.Context, *clientv3.Client) error) error {
	ctx, cancel := cmdContext(cmd, d)
	defer cancel()
	cli, err := etcd.Connect(ctx, g.etcd)
	if err != nil {
		return err
	}
	defer cli.Close()
	return fn(ctx, cli)
}

// withSignals runs fn in a context that Ctrl-C or SIGTERM cancels.
func withSignals(cmd *cobra.Command, fn func(context.Context) error) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return fn(ctx)
}
