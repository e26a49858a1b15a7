package main

import (
	"context"
	"fmt"
	"time"

	"github.com/reshard/reshard"
	"github.com/reshard/reshard/agent"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/orchestrator"
	"github.com/reshard/reshard/zookeeper"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// orchestratorSettings are what a subcommand's flags set on its
// orchestrator; the zero value keeps orchestrator.New's defaults.
type orchestratorSettings struct {
	// sessionTTL is --lease-ttl, for the subcommands that run jobs; nil
	// keeps the default.
	sessionTTL *time.Duration
}

// leaseTTLFlag gives cmd --lease-ttl, the orchestrator's SessionTTL.
func (s *orchestratorSettings) leaseTTLFlag(cmd *cobra.Command) {
	s.sessionTTL = new(time.Duration)
	cmd.Flags().DurationVar(s.sessionTTL, "lease-ttl", 5*time.Second, "lease holding the job and the dump lock; a dead orchestrator's job can be resumed after it")
}

// newOrchestrator builds the orchestrator every subcommand uses: jobs in
// cli's etcd, the lab's provisioner, and ZooKeeper for the dump lock's
// znode.
func newOrchestrator(cli *clientv3.Client, s orchestratorSettings) *orchestrator.Orchestrator {
	o := orchestrator.New(cli, nil)
	o.Provisioners = func(spec string) (reshard.Provisioner, error) { return provisioner(cli, spec) }
	o.DumpZnodes = dialDumpZnode
	if s.sessionTTL != nil {
		o.SessionTTL = *s.sessionTTL
	}
	return o
}

// connectOrchestrator connects to --etcd and builds the orchestrator on it;
// the caller calls the returned function to close the connection.
func connectOrchestrator(ctx context.Context, g *globals, s orchestratorSettings) (*orchestrator.Orchestrator, func(), error) {
	cli, err := etcd.Connect(ctx, g.etcd)
	if err != nil {
		return nil, nil, err
	}
	return newOrchestrator(cli, s), func() { cli.Close() }, nil
}

// withOrchestrator runs fn with an orchestrator, in a context that Ctrl-C
// or SIGTERM cancels, so a job stops between steps rather than mid-write.
func withOrchestrator(cmd *cobra.Command, g *globals, s orchestratorSettings, fn func(context.Context, *orchestrator.Orchestrator) error) error {
	return withSignals(cmd, func(ctx context.Context) error {
		o, done, err := connectOrchestrator(ctx, g, s)
		if err != nil {
			return err
		}
		defer done()
		return fn(ctx, o)
	})
}

// withOrchestratorWithin runs fn with an orchestrator within d
// (cmdContext), for the subcommands that only read jobs.
func withOrchestratorWithin(cmd *cobra.Command, g *globals, d time.Duration, fn func(context.Context, *orchestrator.Orchestrator) error) error {
	return withEtcd(cmd, g, d, func(ctx context.Context, cli *clientv3.Client) error {
		return fn(ctx, newOrchestrator(cli, orchestratorSettings{}))
	})
}

// provisioner resolves a job's provisioner: "agents:HOSTS", through the
// host agents (agent.SpecPrefix); a lab's spare hosts run them too.
func provisioner(cli *clientv3.Client, spec string) (reshard.Provisioner, error) {
	hosts, ok, err := agent.ParseSpec(spec)
	if !ok {
		return nil, fmt.Errorf("unknown provisioner %q (run 'reshard agent' on the hosts of the new peers)", spec)
	}
	if err != nil {
		return nil, err
	}
	return &agent.Provisioner{Agents: etcd.NewAgents(cli), Hosts: hosts}, nil
}

// dialDumpZnode is the orchestrator's ZooKeeper client for the dump lock.
func dialDumpZnode(ctx context.Context, servers []string, path string) (orchestrator.DumpZnode, error) {
	l, err := zookeeper.Dial(ctx, servers, path)
	if err != nil {
		return nil, err // not a typed nil inside the interface
	}
	return l, nil
}
