package main

// The ring subcommands that bring node-fash rings in and out: import-fash
// (serialized, LevelDB or image) and export-fash (serialized or LevelDB).

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/ring"
	"github.com/spf13/cobra"
)

func newRingImportFashCmd(o *ringOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "import-fash PATH",
		Short: "Store a node-fash ring (e.g. from Manta's HASH_RING_IMAGE) as the ring",
		Long: `Read a node-fash ring and store it: in etcd as a new version (replacing
the current one, which stays in history), or with --ring-file as reshard's
ring file. PATH is a ring as 'fash serialize' writes it, a node-fash LevelDB
directory (electric-moray's /electric-moray/chash/leveldb-*, opened
read-only and never changed), or a hash_ring.tar.gz image holding one.
The ring is checked completely first: every vnode exactly once, known
vnodes only, no duplicate pnodes, and an algorithm block consistent with
the vnode count.`,
		Example: `  reshard ring import-fash /var/tmp/hash_ring/ring.json
  reshard ring import-fash /var/tmp/hash_ring.tar.gz
  reshard ring import-fash /electric-moray/chash/leveldb-2021 --ring-file ring.reshard`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, format, err := ring.Load(args[0])
			if err != nil {
				return err
			}
			if format == ring.FormatRing {
				return fmt.Errorf("%s is a reshard ring file, not a node-fash ring", args[0])
			}
			text := fmt.Sprintf("imported a %s ring of %d vnodes on %d pnodes", r.Algorithm(), r.Vnodes(), len(r.Pnodes()))
			if o.file != "" {
				if err := r.Save(o.file, ring.FormatRing); err != nil {
					return err
				}
				return o.written(cmd, 0, text)
			}
			return o.withStore(cmd, func(ctx context.Context, s *etcd.RingStore) error {
				cur, err := s.CurrentVersion(ctx)
				if err != nil {
					return err
				}
				if o.expect != 0 && cur != o.expect {
					return fmt.Errorf("%w: expected version %d but the ring is at version %d", etcd.ErrVersionConflict, o.expect, cur)
				}
				rv, err := s.Put(ctx, cur, r, o.note("import-fash "+filepath.Base(args[0])))
				if err != nil {
					return err
				}
				return o.written(cmd, rv.Version, text)
			})
		},
	}
}

func newRingExportFashCmd(o *ringOpts) *cobra.Command {
	var out, ldb string
	var version int64
	cmd := &cobra.Command{
		Use:   "export-fash",
		Short: "Print the ring in node-fash's serialized format or write it as a LevelDB ring",
		Long: `Write the ring exactly as 'fash serialize' would, so node-fash tools and
electric-moray can read it. A ring imported from fash exports byte for byte.

With --leveldb DIR, write it as a node-fash LevelDB ring directory, the
layout electric-moray loads, to go back to electric-moray; DIR must be new
or empty. Pack it as RFD 103 does for a HASH_RING_IMAGE:
tar -czf IMAGE.tar.gz -C PARENT hash_ring.`,
		Example: `  reshard ring export-fash > ring.json
  reshard ring export-fash --version 3 --out v3.json
  reshard ring export-fash --leveldb /var/tmp/hash_ring && tar -czf hash_ring.tar.gz -C /var/tmp hash_ring`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var r *ring.Ring
			var err error
			if version != 0 {
				if err := o.needEtcd("export-fash --version"); err != nil {
					return err
				}
				r, err = o.getVersion(cmd, version)
			} else {
				r, _, err = o.load(cmd)
			}
			if err != nil {
				return err
			}
			if ldb != "" {
				if out != "" {
					return fmt.Errorf("give --out or --leveldb, not both")
				}
				if err := r.WriteLevelDB(ldb); err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "wrote a %s ring of %d vnodes on %d pnodes to %s\n", r.Algorithm(), r.Vnodes(), len(r.Pnodes()), ldb)
				return nil
			}
			if out == "" {
				return r.WriteFash(cmd.OutOrStdout())
			}
			return r.Save(out, ring.FormatFash)
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "write to this file instead of standard output")
	cmd.Flags().StringVar(&ldb, "leveldb", "", "write a node-fash LevelDB ring into this new or empty directory")
	cmd.Flags().Int64Var(&version, "version", 0, "export this etcd version instead of the current one")
	return cmd
}
