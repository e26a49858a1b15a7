package main

// The ring command tree: its shared flags and how a subcommand reads and
// writes the ring, in etcd or in --ring-file. The subcommands are in
// ring_show.go (reading), ring_edit.go (changing), ring_io.go (node-fash
// import and export) and ring_history.go (etcd's versions).

import (
	"context"
	"fmt"
	"time"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/ring"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ringOpts are the flags every ring subcommand shares.
type ringOpts struct {
	g       *globals
	file    string
	expect  int64
	comment string
}

func newRingCmd(g *globals) *cobra.Command {
	o := &ringOpts{g: g}
	cmd := &cobra.Command{
		Use:   "ring",
		Short: "Inspect and change the hash ring (node-fash compatible)",
		Long: `The ring routes keys as node-fash 3.x does: a key's hash (sha256 by default)
divided by MAX/vnodes gives its vnode; each vnode belongs to one pnode and
carries data (1 by default, "ro" while read-only during a reshard).

These commands are the fash commands of RFD 103's runbook. They work on the
ring in etcd (--etcd), where every change makes a new version that routers
receive through a watch, or on a file (--ring-file) that is either a
node-fash serialized ring or reshard's compact ring file.

Writes to etcd compare-and-swap the version: if another operator changed
the ring since it was read, the write fails with a version conflict and
nothing is stored. Pass --expect-version to pin the version you inspected.

Vnode lists accept "0, 106, 943, 689", ranges "0-99" and strided ranges
"0-999996/4" (every 4th vnode), the form outputs use for large rings.`,
		Example: `  # RFD 103 step 3: put vnodes into read-only mode
  VNODES='0, 106, 943, 689'
  reshard ring get-vnode-pnode-and-data --vnodes "$VNODES"
  reshard ring add-data --vnodes "$VNODES" --data ro
  reshard ring get-data-vnodes

  # RFD 103 step 8: move them to a new shard, then clear read-only
  reshard ring remap-vnode --vnodes "$VNODES" --pnode tcp://3.moray.emy-11.joyent.us:2020
  reshard ring add-data --vnodes "$VNODES" --data ''

  # Where does a key live?
  reshard ring locate --ring-file ring.json '/poseidon/stor/foo.txt'`,
	}
	cmd.PersistentFlags().StringVar(&o.file, "ring-file", "", "work on this ring file instead of etcd: node-fash JSON, reshard ring file, or (read-only) a node-fash LevelDB directory or hash_ring.tar.gz image")
	cmd.PersistentFlags().Int64Var(&o.expect, "expect-version", 0, "refuse to write unless the ring in etcd is at this version")
	cmd.PersistentFlags().StringVar(&o.comment, "comment", "", "note recorded with the new ring version in etcd")
	cmd.AddCommand(
		newRingCreateCmd(o), newRingShowCmd(o), newRingGetPnodesCmd(o), newRingGetVnodesCmd(o),
		newRingRemapCmd(o), newRingAddDataCmd(o), newRingGetDataVnodesCmd(o),
		newRingGetVnodePnodeAndDataCmd(o), newRingLocateCmd(o), newRingImportFashCmd(o),
		newRingExportFashCmd(o), newRingHistoryCmd(o), newRingDiffCmd(o), newRingRollbackCmd(o),
	)
	return cmd
}

// withStore runs fn with the ring store in etcd, within the minute every
// ring command is given.
func (o *ringOpts) withStore(cmd *cobra.Command, fn func(context.Context, *etcd.RingStore) error) error {
	return withEtcd(cmd, o.g, time.Minute, func(ctx context.Context, cli *clientv3.Client) error {
		return fn(ctx, etcd.NewRingStore(cli))
	})
}

// load reads the ring from --ring-file or the current version in etcd
// (version 0 for a file).
func (o *ringOpts) load(cmd *cobra.Command) (*ring.Ring, int64, error) {
	if o.file != "" {
		r, _, err := ring.Load(o.file)
		return r, 0, err
	}
	var r *ring.Ring
	var version int64
	err := o.withStore(cmd, func(ctx context.Context, s *etcd.RingStore) error {
		cur, rv, err := s.Current(ctx)
		r, version = cur, rv.Version
		return err
	})
	return r, version, err
}

// update applies change to the ring and stores it: a new etcd version, or
// the file rewritten in its own format. On error nothing is stored.
func (o *ringOpts) update(cmd *cobra.Command, what string, change func(*ring.Ring) error) (int64, error) {
	if o.file != "" {
		r, format, err := ring.Load(o.file)
		if err != nil {
			return 0, err
		}
		if format == ring.FormatLevelDB || format == ring.FormatImage {
			// An operator's electric-moray ring is never changed in place.
			return 0, fmt.Errorf("%s is a node-fash %s ring, which reshard only reads: import-fash it into etcd or a ring file first", o.file, format)
		}
		if err := change(r); err != nil {
			return 0, err
		}
		return 0, r.Save(o.file, format)
	}
	var version int64
	err := o.withStore(cmd, func(ctx context.Context, s *etcd.RingStore) error {
		rv, err := s.Update(ctx, o.expect, o.note(what), change)
		version = rv.Version
		return err
	})
	return version, err
}

// note is the comment recorded with a new ring version: what changed, and
// --comment.
func (o *ringOpts) note(what string) string {
	if o.comment != "" {
		return what + ": " + o.comment
	}
	return what
}

// needEtcd refuses --ring-file for a command that works on etcd's versions.
func (o *ringOpts) needEtcd(name string) error {
	if o.file != "" {
		return fmt.Errorf("%s works on the versions kept in etcd, not on --ring-file", name)
	}
	return nil
}

// written reports a change in text or JSON.
func (o *ringOpts) written(cmd *cobra.Command, version int64, text string) error {
	if o.g.json {
		out := map[string]any{"ok": true, "change": text}
		if o.file != "" {
			out["file"] = o.file
		} else {
			out["version"] = version
		}
		return printJSON(cmd.OutOrStdout(), out)
	}
	if o.file != "" {
		fmt.Fprintf(cmd.OutOrStdout(), "%s; wrote %s\n", text, o.file)
	} else {
		fmt.Fprintf(cmd.OutOrStdout(), "%s; ring is now at version %d\n", text, version)
	}
	return nil
}

// getVersion reads version v of the ring from etcd.
func (o *ringOpts) getVersion(cmd *cobra.Command, v int64) (*ring.Ring, error) {
	var r *ring.Ring
	err := o.withStore(cmd, func(ctx context.Context, s *etcd.RingStore) error {
		var err error
		r, _, err = s.Get(ctx, v)
		return err
	})
	return r, err
}
