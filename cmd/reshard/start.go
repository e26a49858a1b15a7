package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/reshard/reshard/agent"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/lab"
	"github.com/reshard/reshard/orchestrator"
	"github.com/reshard/reshard/zookeeper"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func newStartCmd(g *globals) *cobra.Command {
	req := orchestrator.Request{}
	var dryRun, detach bool
	var labDir, peerHosts string
	var faults faultFlags
	var orch orchestratorSettings
	var zkServers string
	cmd := &cobra.Command{
		Use:   "start --from PNODE --to PNODE... (--split-half | --vnodes LIST) --dc-mode single|triple --servers N",
		Short: "Plan and run a reshard: move vnodes of one pnode to new pnodes, online",
		Long: `Start a reshard job (RFD 103's inputs): the origin pnode, the destination
pnode(s), which vnodes move, the DC mode and the number of destination
servers (1 destination pnode is 1 server in single-DC mode, 3 in
triple-DC mode).

--split-half moves a contiguous run of the origin's vnodes holding about
half its rows (by vnode-stats), so the replication filter is one range.
--vnodes moves an explicit list, e.g. '0, 106, 943, 689'. With several
--to, the moving vnodes are divided among them by rows.

The job is validated first; a bad input changes nothing. It then runs in
the foreground, phase by phase, each recorded in etcd: if this process is
killed, 'reshard resume JOB' (or a 'reshard run' service) continues where
it stopped. --detach records the job for a 'reshard run' service instead.

The physical strategy creates the new peers through host agents
('reshard agent'): on the hosts --peer-hosts names, each new peer on the
first that runs no peer yet, or on free registered agent hosts (those
running no peer). --lab DIR names the spare hosts of the lab in DIR, whose
agents the lab runs. It refuses to start when there are too few.

After the flip the origin keeps the moved rows and the destinations stream
their changes back to it: the way back. --complete says when it closes:
auto (the default) closes it at once and cleans up; manual waits, flipped,
for 'reshard complete JOB' or 'reshard revert JOB' (start returns once the
job is flipped and prints both commands); after:30m soaks that long and
completes unless reverted first.

Before it changes anything, start checks what would sink the job halfway,
one line each with what was measured and how to fix it, and refuses when
one fails: wal_level, free replication slots and WAL senders on the
origin; a primary key on every bucket table (replication finds rows by
it); no transaction on the origin older than --max-xact-age (it would
hold the freeze); each destination's PostgreSQL version, free slot and
free disk against its share of the origin's tables and indexes (df on the
server, through COPY FROM PROGRAM), or for the physical strategy each new
peer's host's free disk against a whole copy (its agent's measure).
--dry-run prints the checks and an estimate of each phase's time from the
last finished job, and exits non-zero if a check fails.

The dump lock (RFD 103 step 5) is kept in etcd, where 'reshard dump'
looks. With --zookeeper (or pnodes registered with 'pnode add
--zookeeper') it is also the znode /pg_dump_lock in that ZooKeeper, with
the job's id as its data, where Manatee's own dump job looks: the job
waits while another holder has it, and deletes it at release-dump-lock
(or abort) only while it still holds the job's id.`,
		Example: `  reshard start --from 1.moray --to 3.moray --split-half --dc-mode single --servers 1
  reshard start --from 1.moray --to 3.moray --vnodes '0, 106, 943, 689' --dc-mode single --servers 1 --dry-run
  reshard start --from 1.moray --to 3.moray --split-half --dc-mode triple --servers 3 --zookeeper zk1:2181,zk2:2181,zk3:2181`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withOrchestrator(cmd, g, orch, func(ctx context.Context, o *orchestrator.Orchestrator) error {
				if orchestrator.CreatesDestinations(req.Strategy) {
					if labDir != "" && peerHosts == "" {
						st, err := lab.Load(labDir)
						if err != nil {
							return err
						}
						if len(st.Agents) == 0 {
							return fmt.Errorf("the lab in %s has no spare hosts for new peers (lab up --spare-hosts N)", labDir)
						}
						peerHosts = strings.Join(st.AgentNames(), ",")
					}
					spec, err := agentSpec(ctx, o, req, peerHosts)
					if err != nil {
						return err
					}
					req.Provisioner = spec
				}
				if zkServers != "" {
					servers, err := zookeeper.ParseServers(zkServers)
					if err != nil {
						return fmt.Errorf("--zookeeper: %w", err)
					}
					req.ZooKeeper = servers
				}
				if dryRun {
					j, err := o.Plan(ctx, req)
					if err != nil {
						return err
					}
					if g.json {
						if err := printJSON(cmd.OutOrStdout(), j); err != nil {
							return err
						}
					} else {
						printPlan(cmd.OutOrStdout(), j)
					}
					// A dry run that would be refused says so in its exit code.
					return orchestrator.FailedChecks(j)
				}
				j, err := o.Start(ctx, req)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "job %s created\n", j.ID)
				printChecks(cmd.ErrOrStderr(), j)
				if detach {
					if g.json {
						return printJSON(cmd.OutOrStdout(), j)
					}
					fmt.Fprintln(cmd.OutOrStdout(), j.ID)
					return nil
				}
				return runJob(ctx, cmd, g, o, j.ID, faults)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.From, "from", "", "origin pnode")
	f.StringArrayVar(&req.To, "to", nil, "destination pnode (repeatable)")
	f.BoolVar(&req.SplitHalf, "split-half", false, "move about half the origin's rows")
	f.StringVar(&req.Vnodes, "vnodes", "", "move these vnodes, e.g. '0, 106, 943, 689' or '0-99'")
	f.StringVar((*string)(&req.DCMode), "dc-mode", string(orchestrator.SingleDC), "single (lab) or triple (production) DC mode")
	f.IntVar(&req.Servers, "servers", 0, "destination servers: 1 per destination pnode in single-DC mode, 3 in triple")
	f.StringVar((*string)(&req.Strategy), "strategy", string(orchestrator.Logical), orchestrator.StrategyHelp())
	f.StringVar(&labDir, "lab", "", "physical strategy: make the new peers on the spare hosts of the lab in DIR, through their agents (as --peer-hosts spare-1,spare-2,...)")
	f.StringVar(&peerHosts, "peer-hosts", "", "physical strategy: the 'reshard agent' hosts of the new peers, one each, in order, e.g. pg-7,pg-8,pg-9 (default: free registered agent hosts)")
	f.IntVar(&req.RateLimit, "rate-limit", 20000, "rows per second deleted in cleanup, at most")
	f.StringVar(&req.CleanupPace, "cleanup-pace", orchestrator.PaceAdaptive, "adaptive: the cleanup's pace follows the foreground (the routers' p99, or a write probe's p90 on the shard when they see little traffic, and the standbys' lag), up to --rate-limit; fixed: --rate-limit throughout")
	f.DurationVar(&req.CleanupTarget, "cleanup-target", 0, "adaptive cleanup: the foreground latency to hold (default: 1.25 times what it was before the cleanup)")
	f.Int64Var(&req.MaxReplicaLag, "max-replica-lag", orchestrator.DefaultMaxReplicaLag, "adaptive cleanup: the standbys' replay lag, in bytes, to hold under")
	f.Int64Var(&req.LagBytes, "lag-threshold", 1<<20, "catch-up ends when replication is fewer bytes behind than this")
	f.StringVar(&zkServers, "zookeeper", "", "Manta's ZooKeeper, HOST:PORT,...: also take the dump lock as a znode there, for Manatee's dump job (default: the pnodes' own, from 'pnode add --zookeeper')")
	f.StringVar(&req.ZooKeeperPath, "zookeeper-path", "", "the dump lock's znode (default "+orchestrator.DefaultZnodePath+")")
	f.BoolVar(&req.WaitDumpLock, "wait-dump-lock", false, "start even if another holder has the dump lock znode now, and wait for it at the dump-lock phase")
	f.StringVar(&req.Complete, "complete", orchestrator.CompleteAuto, "when the way back closes after the flip: auto (at once), manual (wait for 'reshard complete' or 'reshard revert'; start returns once flipped) or after:DURATION (complete after a soak, e.g. after:30m, unless reverted first)")
	f.DurationVar(&req.MaxXactAge, "max-xact-age", orchestrator.DefaultMaxXactAge, "refuse to start while the origin has a transaction open longer than this: it would hold the freeze")
	f.Int64Var(&req.MaxSlotLag, "max-slot-lag-bytes", 0, "WAL the job's slots may retain: past it the job pauses, past twice it aborts before the flip (or closes the way back after it), dropping its slots (default: a quarter of the origin's free disk)")
	f.StringSliceVar(&req.SkipChecks, "skip-check", nil, "report but do not refuse on these pre-flight checks: "+strings.Join(orchestrator.CheckKinds, ", "))
	f.BoolVar(&dryRun, "dry-run", false, "print the plan, the pre-flight checks and the time estimates, and change nothing")
	f.BoolVar(&detach, "detach", false, "record the job for a 'reshard run' service and return")
	orch.leaseTTLFlag(cmd)
	faults.register(f)
	return cmd
}

func printPlan(w io.Writer, j *orchestrator.Job) {
	fmt.Fprintf(w, "plan: %s %s -> %s (%s-DC mode, %d servers), ring version %d\n",
		j.Strategy, j.From, strings.Join(j.To, ", "), j.DCMode, j.Servers, j.RingVersionBefore)
	for _, m := range j.Moves {
		fmt.Fprintf(w, "  to %s: %d vnodes (%s), %d rows, %s to copy; row filter: %d range(s)\n",
			m.To, m.Count, abbreviate(m.Vnodes, 60), m.Rows, humanBytes(m.Bytes), len(m.Ranges))
	}
	fmt.Fprintf(w, "  buckets: %s\n", strings.Join(j.Buckets, ", "))
	if len(j.ZooKeeper) > 0 {
		fmt.Fprintf(w, "  dump lock: in etcd and as znode %s in ZooKeeper %s\n", j.ZooKeeperPath, strings.Join(j.ZooKeeper, ","))
	}
	fmt.Fprint(w, "  phases: ")
	for i, p := range j.Phases {
		if i > 0 {
			fmt.Fprint(w, " -> ")
		}
		fmt.Fprint(w, p.Name)
	}
	fmt.Fprintln(w)
	printChecks(w, j)
	var total float64
	fmt.Fprintln(w, "estimate:")
	for _, e := range j.Estimate {
		t := "?"
		if e.Seconds >= 0 {
			t = fmt.Sprintf("%.1fs", e.Seconds)
			total += e.Seconds
		}
		fmt.Fprintf(w, "  %-18s %8s  %s\n", e.Phase, t, e.Basis)
	}
	fmt.Fprintf(w, "  %-18s %8s  (phases not measured yet are not counted)\n", "total", fmt.Sprintf("%.1fs", total))
}

// printChecks prints the job's pre-flight checks, one line each.
func printChecks(w io.Writer, j *orchestrator.Job) {
	for _, c := range j.Preflight {
		mark := "ok  "
		switch {
		case !c.OK:
			mark = "FAIL"
		case c.Warn:
			mark = "warn"
		}
		line := fmt.Sprintf("check %s %s: %s", mark, c.Name, c.Found)
		if c.Fix != "" && (!c.OK || c.Warn) {
			line += "; fix: " + c.Fix
		}
		fmt.Fprintln(w, line)
	}
}

// faultFlags are the hidden fault injection flags of the commands that run
// a job: how the tests kill or pause the orchestrator at a named point.
type faultFlags struct{ crashAt, pauseAt string }

func (f *faultFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.crashAt, "crash-at", os.Getenv("RESHARD_CRASH_AT"), "fault injection for tests: SIGKILL this process at PHASE[:POINT]")
	fs.StringVar(&f.pauseAt, "pause-at", os.Getenv("RESHARD_PAUSE_AT"), "fault injection for tests: SIGSTOP this process at PHASE[:POINT], once")
	fs.MarkHidden("crash-at")
	fs.MarkHidden("pause-at")
}

// runJob runs a job in the foreground, showing its phases as they go: a
// live view on a terminal, one line per phase change otherwise.
func runJob(ctx context.Context, cmd *cobra.Command, g *globals, o *orchestrator.Orchestrator, id string, faults faultFlags) error {
	o.CrashAt, o.PauseAt = faults.crashAt, faults.pauseAt
	out := cmd.ErrOrStderr()
	tty := isTerminal(out)
	o.OnUpdate = liveView(out, tty)
	err := o.Run(ctx, id)
	j, gerr := o.Get(context.WithoutCancel(ctx), id)
	if gerr != nil {
		if err != nil {
			return err
		}
		return gerr
	}
	if g.json {
		if perr := printJSON(cmd.OutOrStdout(), j); perr != nil {
			return perr
		}
	} else if !tty {
		var b strings.Builder
		locks, _ := o.Locks(context.WithoutCancel(ctx))
		renderStatus(&b, statusView{Job: j, Locks: locks})
		fmt.Fprint(cmd.OutOrStdout(), b.String())
	}
	if errors.Is(err, orchestrator.ErrAborted) {
		return fmt.Errorf("job %s was aborted", id)
	}
	if err == nil && j.State == orchestrator.Flipped {
		fmt.Fprintf(out, "job %s has flipped; its way back is open until you decide:\n  reshard revert %s     # go back to %s\n  reshard complete %s   # close the way back and clean up\n",
			id, id, j.From, id)
	}
	return err
}

// liveView shows a running job: redrawn with progress bars on a terminal,
// one line per phase otherwise.
func liveView(out io.Writer, tty bool) func(*orchestrator.Job) {
	var mu sync.Mutex
	lastPhase, lastDraw := "", time.Time{}
	return func(j *orchestrator.Job) {
		mu.Lock()
		defer mu.Unlock()
		if tty {
			if time.Since(lastDraw) < 200*time.Millisecond && j.State == orchestrator.Running {
				return
			}
			lastDraw = time.Now()
			var b strings.Builder
			renderStatus(&b, statusView{Job: j})
			fmt.Fprint(out, "\033[H\033[2J"+b.String())
			return
		}
		if j.Current != lastPhase {
			lastPhase = j.Current
			if j.Current != "" {
				fmt.Fprintf(out, "%s phase %s\n", time.Now().Format("15:04:05.000"), j.Current)
			}
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// agentSpec is the physical strategy's provisioner through host agents,
// after checking there is a free agent host for every new peer.
func agentSpec(ctx context.Context, o *orchestrator.Orchestrator, req orchestrator.Request, peerHosts string) (string, error) {
	var hosts []string
	for _, h := range strings.Split(peerHosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	spec := agent.Spec(hosts)
	if _, _, err := agent.ParseSpec(spec); err != nil {
		return "", fmt.Errorf("--peer-hosts: %w", err)
	}
	prov := &agent.Provisioner{Agents: etcd.NewAgents(o.Client()), Hosts: hosts}
	if err := prov.Check(ctx, len(req.To)*req.DCMode.ServersPerPnode()); err != nil {
		return "", err
	}
	return spec, nil
}
