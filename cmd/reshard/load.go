package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/reshard/reshard/load"
	"github.com/reshard/reshard/orchestrator"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func newLoadCmd(g *globals) *cobra.Command {
	cfg := load.Config{}
	var ledger, tokenFile string
	cmd := &cobra.Command{
		Use:   "load --router URL... --duration D --ledger FILE",
		Short: "Drive mixed put/get/delete traffic through routers and record every acknowledged write",
		Long: `The RFD's mlive: mixed traffic (50% put, 35% get, 15% delete) over
--buckets buckets and --keys keys each, through the routers in turn. A
request that cannot reach a router goes to the next one. Every
acknowledged write, and every write whose outcome is unknown, is appended
to the ledger as one JSON line; 'reshard verify' checks the shards against
it. Progress prints every second on stderr; the summary at the end.`,
		Example: `  reshard load --router http://127.0.0.1:8080 --router http://127.0.0.1:8081 \
      --duration 30s --rate 500 --keys 5000 --ledger /tmp/ledger.jsonl
  reshard verify --ledger /tmp/ledger.jsonl`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if tokenFile != "" {
				b, err := os.ReadFile(tokenFile)
				if err != nil {
					return fmt.Errorf("--token-file: %w", err)
				}
				cfg.Token = strings.TrimSpace(string(b))
			}
			if ledger == "" {
				return fmt.Errorf("--ledger is required")
			}
			f, err := os.OpenFile(ledger, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				return fmt.Errorf("--ledger: %w", err)
			}
			defer f.Close()
			cfg.Ledger = f
			cfg.Progress = cmd.ErrOrStderr()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			sum, err := load.Run(ctx, cfg)
			if err != nil {
				return err
			}
			if err := f.Sync(); err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), sum)
			}
			w := cmd.OutOrStdout()
			var total int64
			ops := make([]string, 0, len(sum.Ops))
			for op, n := range sum.Ops {
				total += n
				ops = append(ops, op)
			}
			sort.Strings(ops)
			fmt.Fprintf(w, "%d operations in %.1fs (%.0f/s); %d acknowledged writes, %d with unknown outcome\n",
				total, sum.Seconds, float64(total)/sum.Seconds, sum.AckedWrites, sum.UnknownWrite)
			for _, op := range ops {
				l := sum.Latency[op]
				fmt.Fprintf(w, "  %-6s %7d  p50 %.1fms  p90 %.1fms  p99 %.1fms  max %.1fms\n", op, sum.Ops[op], l.P50, l.P90, l.P99, l.Max)
			}
			fmt.Fprintf(w, "client errors: %d %v; failovers: %d\n", sum.ClientErrors, sum.Errors, sum.Failovers)
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&cfg.Routers, "router", nil, "router URL (repeatable)")
	cmd.Flags().DurationVar(&cfg.Duration, "duration", 30*time.Second, "how long to run")
	cmd.Flags().Float64Var(&cfg.Rate, "rate", 200, "operations per second in all (0: as fast as possible)")
	cmd.Flags().IntVar(&cfg.Keys, "keys", 2000, "distinct keys per bucket")
	cmd.Flags().IntVar(&cfg.Buckets, "buckets", 4, "number of buckets (load_0, load_1, ...)")
	cmd.Flags().IntVar(&cfg.Concurrency, "concurrency", 8, "concurrent clients")
	cmd.Flags().StringVar(&ledger, "ledger", "", "file to append acknowledged writes to (required)")
	cmd.Flags().StringVar(&cfg.Token, "token", "", "bearer token for the routers")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "read the bearer token from this file")
	return cmd
}

func newVerifyCmd(g *globals) *cobra.Command {
	var ledger string
	cmd := &cobra.Command{
		Use:   "verify --ledger FILE",
		Short: "Check that every key's last acknowledged write is on the shard that owns it",
		Long: `For every key in the ledger, reads the primary of the pnode that the current
ring maps the key's vnode to, and counts:
  missing    the last acknowledged write was a put and the row is not there
  stale      the row holds another value, or exists after an acknowledged delete
  misplaced  live rows on a pnode the ring does not map their vnode to
             (zero once cleanup has run)
  kept       such rows that an unfinished job keeps after its flip: on
             the origin for its way back, or until its cleanup; expected
Keys whose last write had an unknown outcome accept either outcome and are
counted as ambiguous. Exits non-zero if anything is missing, stale or
misplaced.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if ledger == "" {
				return fmt.Errorf("--ledger is required")
			}
			entries, err := load.ReadLedger(ledger)
			if err != nil {
				return err
			}
			return withEtcd(cmd, g, 30*time.Minute, func(ctx context.Context, cli *clientv3.Client) error {
				rep, err := verifyLedgerEntries(ctx, cli, entries)
				if err != nil {
					return err
				}
				if g.json {
					if err := printJSON(cmd.OutOrStdout(), rep); err != nil {
						return err
					}
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "ring version %d: %d keys checked: %d missing, %d stale, %d misplaced, %d ambiguous, %d rows kept by unfinished jobs\n",
						rep.RingVersion, rep.Checked, rep.Missing, rep.Stale, rep.Misplaced, rep.Ambiguous, rep.Kept)
					for _, e := range rep.Examples {
						fmt.Fprintln(cmd.OutOrStdout(), "  "+e)
					}
				}
				if !rep.OK() {
					return fmt.Errorf("verify failed: %d missing, %d stale, %d misplaced", rep.Missing, rep.Stale, rep.Misplaced)
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&ledger, "ledger", "", "ledger written by 'reshard load' (required)")
	return cmd
}

// verifyLedgerEntries verifies a ledger, not counting as misplaced the rows
// that unfinished jobs keep after their flip.
func verifyLedgerEntries(ctx context.Context, cli *clientv3.Client, entries []load.Entry) (load.Report, error) {
	kept, err := orchestrator.NewStore(cli).Kept(ctx)
	if err != nil {
		return load.Report{}, err
	}
	return load.Verify(ctx, cli, entries, kept)
}
