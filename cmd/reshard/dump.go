package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/zookeeper"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

func newDumpCmd(g *globals) *cobra.Command {
	var pnode, out string
	var wait bool
	var zkServers, zkPath string
	cmd := &cobra.Command{
		Use:   "dump --pnode P --out DIR",
		Short: "The maintenance pg_dump of a pnode, kept out of a reshard's way",
		Long: `Manta's metering, audit and GC jobs read nightly pg_dumps. RFD 103 holds
them off during a reshard with /pg_dump_lock (steps 5, 6 and 9). This dump
refuses to start while a reshard holds the dump lock (or waits for it with
--wait), and while it runs it keeps a marker in etcd, so a reshard that
wants the lock waits for the dump to end.

When the pnode was registered with 'pnode add --zookeeper' (or given
--zookeeper), it also obeys the /pg_dump_lock znode there, as Manatee's
own dump job does, whoever holds it.`,
		Example: `  reshard dump --pnode 1.moray --out /var/tmp/dumps
  reshard dump --pnode 1.moray --out /var/tmp/dumps --wait`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if pnode == "" || out == "" {
				return fmt.Errorf("--pnode and --out are required")
			}
			if fi, err := os.Stat(out); err != nil || !fi.IsDir() {
				return fmt.Errorf("--out %s is not a directory", out)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cli, err := etcd.Connect(ctx, g.etcd)
			if err != nil {
				return err
			}
			defer cli.Close()
			p, err := etcd.NewRegistry(cli).Pnode(ctx, pnode)
			if err != nil {
				return err
			}
			primary, err := p.Primary()
			if err != nil {
				return err
			}
			servers := p.ZooKeeper
			if zkServers != "" {
				if servers, err = zookeeper.ParseServers(zkServers); err != nil {
					return fmt.Errorf("--zookeeper: %w", err)
				}
			}
			var znode *zookeeper.Lock
			if len(servers) > 0 {
				if znode, err = zookeeper.Dial(ctx, servers, zkPath); err != nil {
					return err
				}
				defer znode.Close()
			} else if cmd.Flags().Changed("zookeeper-path") {
				return fmt.Errorf("--zookeeper-path needs --zookeeper (or a pnode registered with --zookeeper)")
			}
			session, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
			if err != nil {
				return err
			}
			defer session.Close()
			id := fmt.Sprintf("%s-%d", time.Now().UTC().Format("20060102T150405Z"), os.Getpid())
			release, err := claimDump(ctx, cli, session.Lease(), znode, pnode, id, wait, func(holder string) {
				fmt.Fprintf(cmd.ErrOrStderr(), "waiting: the dump lock is held by %s\n", holder)
			})
			if err != nil {
				return err
			}
			defer release()
			file := filepath.Join(out, fmt.Sprintf("%s-%s.dump", pnode, id))
			start := time.Now()
			if err := postgres.Dump(ctx, primary.DSN, file); err != nil {
				return err
			}
			fi, _ := os.Stat(file)
			if g.json {
				return printJSON(cmd.OutOrStdout(), map[string]any{"pnode": pnode, "file": file, "bytes": fi.Size(), "seconds": time.Since(start).Seconds()})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "dumped %s to %s (%s in %.1fs)\n", pnode, file, humanBytes(fi.Size()), time.Since(start).Seconds())
			return nil
		},
	}
	cmd.Flags().StringVar(&pnode, "pnode", "", "pnode to dump (its primary)")
	cmd.Flags().StringVar(&out, "out", "", "directory for the dump file")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the dump lock instead of exiting")
	cmd.Flags().StringVar(&zkServers, "zookeeper", "", "HOST:PORT,... of the ZooKeeper whose dump lock znode to obey (default: the pnode's own)")
	cmd.Flags().StringVar(&zkPath, "zookeeper-path", zookeeper.DefaultPath, "the dump lock's znode")
	return cmd
}

var errDumpLocked = errors.New("dump lock held")

// claimDump registers a running dump, then checks the lock. The order
// matters: a reshard takes the lock and then waits for dumps, a dump
// registers and then checks the lock, so one of them always sees the other.
// While waiting the marker is withdrawn, or the two would wait on each other.
// The znode, when there is one, is checked the same way, after the marker:
// a reshard creates it before it looks for markers.
func claimDump(ctx context.Context, cli *clientv3.Client, lease clientv3.LeaseID, znode *zookeeper.Lock, pnode, id string, wait bool, waiting func(string)) (func(), error) {
	told := false
	for {
		release, err := etcd.DumpMarker(ctx, cli, lease, pnode, id)
		if err != nil {
			return nil, err
		}
		lock, err := etcd.DumpLock(ctx, cli)
		if err != nil {
			release()
			return nil, err
		}
		held, since, why := "", "", "a reshard is running"
		if lock != nil {
			held, since = lock.Holder, lock.Since.Format(time.RFC3339)
		} else if znode != nil {
			h, at, ok, err := znode.Holder(ctx)
			if err != nil {
				release()
				return nil, err
			}
			if ok {
				held, since = fmt.Sprintf("%q (znode %s)", h, znode.Path()), at.Format(time.RFC3339)
				why = "a reshard, or another dump, holds it"
			}
		}
		if held == "" {
			return release, nil
		}
		release()
		if !wait {
			return nil, fmt.Errorf("not dumping %s: the dump lock is held by %s since %s (%s); try later or pass --wait: %w",
				pnode, held, since, why, errDumpLocked)
		}
		if !told {
			waiting(held)
			told = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
