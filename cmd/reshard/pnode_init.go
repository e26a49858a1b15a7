package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/router"
	"github.com/reshard/reshard/shard"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func newPnodeInitCmd(g *globals) *cobra.Command {
	var fix bool
	var shardLocal, movable []string
	cmd := &cobra.Command{
		Use:   "init NAME [--fix] [--shard-local BUCKET,...] [--movable BUCKET,...]",
		Short: "Adopt a shard in place: the fence beside Moray's tables, its buckets, the vnodes the ring gives it",
		Long: `Prepares a shard for reshard, whether reshard or a real Moray wrote it. Moray's
tables stay exactly as they are (a shard can be handed back to Moray at any
time). It:

  - creates reshard's ownership table and fence functions beside them;
  - takes the bucket definitions from the shard's buckets_config, recording
    in etcd any bucket etcd does not know yet (hashed as electric-moray
    hashes it: "manta" and "manta_uploads" by directory, others by key),
    and creates the tables of buckets etcd knows and the shard lacks;
  - puts the fence trigger on every bucket table (a brief lock per table,
    tried again rather than queued behind a long transaction);
  - records as owned and writable the vnodes the current ring maps here;
  - reads every row's key and _vnode and reports, per bucket, the rows with
    no vnode (Moray leaves _vnode NULL for values without one: rows that
    libmanta's triggers insert, and batch writes through electric-moray),
    rows whose _vnode is not the vnode their key hashes to, and rows whose
    vnode the ring gives to another pnode, and says what it will do.

A bucket whose rows all lack a vnode is a queue filled on this shard (such
as manta_delete_log) and is proposed shard-local: kept on its shard, never
moved. Other buckets are movable: with --fix, their rows get the _vnode
their key hashes to (only _vnode changes; _value and the etag stay). Name
buckets with --shard-local or --movable to decide otherwise. Without --fix
nothing but the schema, the buckets and the ownership is changed.

It is safe to run again, and must run once per pnode before a reshard.`,
		Example: `  reshard pnode init 1.moray                # report: what is there, what --fix would do
  reshard pnode init 1.moray --fix          # and set the missing vnodes
  reshard pnode init 1.moray --fix --shard-local manta_directory_counts --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := cmdContext(cmd, time.Hour)
			defer cancel()
			for _, b := range append(append([]string{}, shardLocal...), movable...) {
				if err := shard.ValidateBucket(b); err != nil {
					return err
				}
			}
			for _, b := range shardLocal {
				if slices.Contains(movable, b) {
					return fmt.Errorf("bucket %s is named both --shard-local and --movable", b)
				}
			}
			cli, err := etcd.Connect(ctx, g.etcd)
			if err != nil {
				return err
			}
			defer cli.Close()
			rep, err := adoptPnode(ctx, cli, args[0], adoptOptions{Fix: fix, ShardLocal: shardLocal, Movable: movable}, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), rep)
			}
			rep.print(cmd.OutOrStdout())
			return nil
		},
	}
	cmd.Flags().BoolVar(&fix, "fix", false, "set _vnode of movable buckets' rows that lack it or hold the wrong one, and record shard-local buckets")
	cmd.Flags().StringSliceVar(&shardLocal, "shard-local", nil, "buckets to keep on their shard, never moved")
	cmd.Flags().StringSliceVar(&movable, "movable", nil, "buckets to move with their keys, even if no row has a vnode")
	return cmd
}

type adoptOptions struct {
	Fix                 bool
	ShardLocal, Movable []string
}

// adoptReport is what pnode init found and did.
type adoptReport struct {
	Pnode       string         `json:"pnode"`
	RingVersion int64          `json:"ring_version"`
	Vnodes      int            `json:"vnodes"`
	Buckets     []bucketReport `json:"buckets"`
	Fixed       bool           `json:"fixed"`
	Seconds     float64        `json:"seconds"`
}

type bucketReport struct {
	Name string `json:"name"`
	// Source says where the definition came from: "shard" (recorded in
	// etcd from buckets_config), "etcd" (table created here), or "both".
	Source     string `json:"source"`
	Rows       int64  `json:"rows"`
	NoVnode    int64  `json:"no_vnode"`
	WrongVnode int64  `json:"wrong_vnode"`
	// Misplaced rows hash to a vnode the ring gives another pnode: only a
	// move can place them, so --fix leaves them.
	Misplaced int64 `json:"misplaced"`
	// Action: "none", "set _vnode on N rows", "shard-local".
	Action  string `json:"action"`
	Fixed   int64  `json:"fixed"`
	Fenced  bool   `json:"fence_added"`
	Indexed bool   `json:"vnode_index_built"`
}

func (r adoptReport) print(w io.Writer) {
	verb := "would"
	if r.Fixed {
		verb = "did"
	}
	fmt.Fprintf(w, "%s: owns %d vnodes of ring version %d; %d buckets (%.1f s)\n", r.Pnode, r.Vnodes, r.RingVersion, len(r.Buckets), r.Seconds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "BUCKET\tFROM\tROWS\tNO VNODE\tWRONG VNODE\tMISPLACED\tACTION (%s)\n", verb)
	for _, b := range r.Buckets {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\n", b.Name, b.Source, b.Rows, b.NoVnode, b.WrongVnode, b.Misplaced, b.Action)
	}
	tw.Flush()
	if !r.Fixed {
		for _, b := range r.Buckets {
			if b.Action != "none" {
				fmt.Fprintf(w, "run again with --fix to do the actions above\n")
				break
			}
		}
	}
}

// adoptPnode is pnode init.
func adoptPnode(ctx context.Context, cli *clientv3.Client, name string, o adoptOptions, progress io.Writer) (adoptReport, error) {
	start := time.Now()
	rep := adoptReport{Pnode: name, Fixed: o.Fix}
	p, err := etcd.NewRegistry(cli).Pnode(ctx, name)
	if err != nil {
		return rep, err
	}
	primary, err := p.Primary()
	if err != nil {
		return rep, err
	}
	rg, rv, err := etcd.NewRingStore(cli).Current(ctx)
	if err != nil {
		return rep, err
	}
	vs, err := rg.VnodesOf(p.Name)
	if err != nil {
		return rep, err
	}
	rep.RingVersion, rep.Vnodes = rv.Version, len(vs)
	pool, err := pgxpool.New(ctx, primary.DSN)
	if err != nil {
		return rep, err
	}
	defer pool.Close()
	if err := shard.Init(ctx, pool); err != nil {
		return rep, err
	}
	store := etcd.NewBuckets(cli)
	all, err := store.All(ctx)
	if err != nil {
		return rep, err
	}
	known := map[string]shard.BucketOptions{}
	for b, raw := range all {
		var opts shard.BucketOptions
		if err := json.Unmarshal(raw, &opts); err != nil {
			return rep, fmt.Errorf("bucket %s: %w", b, err)
		}
		known[b] = opts
	}
	have, err := shard.Buckets(ctx, pool)
	if err != nil {
		return rep, err
	}
	for _, b := range append(append([]string{}, o.ShardLocal...), o.Movable...) {
		if _, ok := have[b]; !ok {
			if _, ok := known[b]; !ok {
				return rep, fmt.Errorf("bucket %s is neither on %s nor in etcd", b, name)
			}
		}
	}
	names := map[string]bool{}
	for b := range known {
		names[b] = true
	}
	for b := range have {
		names[b] = true
	}
	sorted := make([]string, 0, len(names))
	for b := range names {
		if shard.ValidateBucket(b) != nil {
			// A Moray bucket name reshard cannot take (upper case): say so
			// rather than adopt half a shard.
			return rep, fmt.Errorf("bucket %q on %s: %v", b, name, shard.ValidateBucket(b))
		}
		sorted = append(sorted, b)
	}
	sort.Strings(sorted)

	// Ownership first: the fence on a table refuses every write to a vnode
	// the shard does not own, so it must own its vnodes before it has one.
	owned := make([]int32, len(vs))
	for i, v := range vs {
		owned[i] = int32(v)
	}
	if err := shard.Own(ctx, pool, owned, true, rv.Version); err != nil {
		return rep, err
	}
	mine := make(map[uint32]bool, len(vs))
	for _, v := range vs {
		mine[v] = true
	}
	for _, b := range sorted {
		br := bucketReport{Name: b}
		opts, inEtcd := known[b]
		sopts, onShard := have[b]
		switch {
		case inEtcd && onShard:
			br.Source = "both"
		case onShard:
			br.Source = "shard"
			opts = sopts
			opts.HashDir = b == "manta" || b == "testmanta"
			opts.HashUpload = b == "manta_uploads"
		default:
			br.Source = "etcd"
		}
		fenced, err := shard.HasFence(ctx, pool, b)
		if err != nil {
			return rep, err
		}
		if err := shard.EnsureBucket(ctx, pool, b, opts); err != nil {
			return rep, err
		}
		br.Fenced = onShard && !fenced
		if br.Indexed, err = shard.EnsureVnodeIndex(ctx, pool, b); err != nil {
			return rep, err
		}
		fmt.Fprintf(progress, "pnode init: %s: reading keys\n", b)
		var fixKeys []string
		var fixVnodes []int64
		err = shard.ScanKeys(ctx, pool, b, func(key string, vnode *int64) error {
			br.Rows++
			want := rg.LocateString(router.HashKey(key, opts)).Vnode
			switch {
			case vnode == nil:
				br.NoVnode++
			case *vnode != int64(want):
				br.WrongVnode++
			default:
				return nil
			}
			if !mine[want] {
				br.Misplaced++
				return nil
			}
			fixKeys = append(fixKeys, key)
			fixVnodes = append(fixVnodes, int64(want))
			return nil
		})
		if err != nil {
			return rep, err
		}
		local := slices.Contains(o.ShardLocal, b) || opts.ShardLocal ||
			!slices.Contains(o.Movable, b) && br.Rows > 0 && br.NoVnode == br.Rows
		switch {
		case local:
			br.Action = "shard-local"
		case len(fixKeys) > 0:
			br.Action = fmt.Sprintf("set _vnode on %d rows", len(fixKeys))
		default:
			br.Action = "none"
		}
		if o.Fix && !local {
			for i := 0; i < len(fixKeys); i += 5000 {
				j := min(i+5000, len(fixKeys))
				n, err := shard.SetVnodes(ctx, pool, b, fixKeys[i:j], fixVnodes[i:j])
				if err != nil {
					return rep, err
				}
				br.Fixed += n
			}
		}
		opts.ShardLocal = local
		if o.Fix || !inEtcd {
			if !o.Fix {
				// A new bucket is recorded as it stands; --fix decides later.
				opts.ShardLocal = opts.ShardLocal && slices.Contains(o.ShardLocal, b)
			}
			if err := store.Put(ctx, b, opts); err != nil {
				return rep, err
			}
		}
		rep.Buckets = append(rep.Buckets, br)
	}
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}
