package main

// The ring subcommands that change it: create, remap-vnode, add-data.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/ring"
	"github.com/spf13/cobra"
)

func newRingCreateCmd(o *ringOpts) *cobra.Command {
	var vnodes int
	var pnodes []string
	var algo string
	var force bool
	cmd := &cobra.Command{
		Use:   "create --vnodes N --pnode P [--pnode P]... [--algorithm sha256|sha1|md5]",
		Short: "Create a ring, assigning vnodes to the sorted pnodes round-robin",
		Long: `Create a ring as 'fash create' does: pnodes are sorted and vnode v goes to
pnode v mod (number of pnodes). In etcd this is version 1 and fails if a ring
exists; with --ring-file it writes reshard's ring file (--force to replace).`,
		Example: `  reshard ring create --vnodes 1000000 --pnode tcp://1.moray.emy-11.joyent.us:2020 \
      --pnode tcp://2.moray.emy-11.joyent.us:2020
  reshard ring create --ring-file lab.ring --vnodes 1024 --pnode 1.moray,2.moray --algorithm md5`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := ring.ParseAlgorithm(algo)
			if err != nil {
				return err
			}
			var ps []string
			for _, p := range pnodes {
				ps = append(ps, strings.Split(p, ",")...)
			}
			r, err := ring.New(a, vnodes, ps)
			if err != nil {
				return err
			}
			text := fmt.Sprintf("created a %s ring of %d vnodes on %d pnodes", a, vnodes, len(ps))
			if o.file != "" {
				if _, err := os.Stat(o.file); err == nil && !force {
					return fmt.Errorf("%s exists; pass --force to replace it", o.file)
				}
				if err := r.Save(o.file, ring.FormatRing); err != nil {
					return err
				}
				return o.written(cmd, 0, text)
			}
			return o.withStore(cmd, func(ctx context.Context, s *etcd.RingStore) error {
				rv, err := s.Put(ctx, 0, r, o.note("create"))
				if errors.Is(err, etcd.ErrVersionConflict) {
					return fmt.Errorf("a ring already exists in etcd; change it with remap-vnode/add-data or replace it with import-fash")
				}
				if err != nil {
					return err
				}
				return o.written(cmd, rv.Version, text)
			})
		},
	}
	cmd.Flags().IntVar(&vnodes, "vnodes", 0, "number of vnodes (fixed for the ring's life)")
	cmd.Flags().StringArrayVar(&pnodes, "pnode", nil, "a pnode (repeatable, or comma-separated)")
	cmd.Flags().StringVar(&algo, "algorithm", "sha256", "hash: sha256, sha1 or md5")
	cmd.Flags().BoolVar(&force, "force", false, "with --ring-file, replace an existing file")
	cmd.MarkFlagRequired("vnodes")
	cmd.MarkFlagRequired("pnode")
	return cmd
}

func newRingRemapCmd(o *ringOpts) *cobra.Command {
	var list, pnode string
	cmd := &cobra.Command{
		Use:   "remap-vnode --vnodes LIST --pnode P",
		Short: "Move vnodes (and their data) to a pnode, creating the pnode if new",
		Long: `Move vnodes to pnode P as 'fash remap-vnode' does. P is added to the ring if
it is new. Data such as "ro" moves with each vnode. A vnode that is unknown,
listed twice or already on P fails the whole command; nothing is written.`,
		Example: `  reshard ring remap-vnode --vnodes '0, 106, 943, 689' --pnode tcp://3.moray.emy-11.joyent.us:2020
  reshard ring remap-vnode --vnodes 0-99 --pnode 3.moray --expect-version 7`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v, n, err := o.updateVnodes(cmd, "remap-vnode "+list+" to "+pnode, list, func(r *ring.Ring, vs []uint32) error {
				return r.Remap(vs, pnode)
			})
			if err != nil {
				return err
			}
			return o.written(cmd, v, fmt.Sprintf("moved %d vnodes to %s", n, pnode))
		},
	}
	cmd.Flags().StringVar(&list, "vnodes", "", `vnodes to move, e.g. "0, 106, 943" or "0-99"`)
	cmd.Flags().StringVar(&pnode, "pnode", "", "pnode to move them to")
	cmd.MarkFlagRequired("vnodes")
	cmd.MarkFlagRequired("pnode")
	return cmd
}

// parseData reads --data: JSON if it parses ({"a":1}, 2, "x"), otherwise the
// text as a string, so --data ro stores "ro" as fash -d ro does. An empty
// value clears the data back to 1.
func parseData(s string) json.RawMessage {
	if s == "" {
		return json.RawMessage("null")
	}
	if json.Valid([]byte(s)) {
		return json.RawMessage(s)
	}
	b, _ := json.Marshal(s)
	return b
}

func newRingAddDataCmd(o *ringOpts) *cobra.Command {
	var list, data string
	cmd := &cobra.Command{
		Use:   "add-data --vnodes LIST --data ro|DATA",
		Short: "Set the data of vnodes (ro = read-only; empty clears it)",
		Long: `Set vnode data as 'fash add-data' does, overwriting what was there. --data ro
marks the vnodes read-only so routers refuse writes to them; --data '' resets
them to the default 1. Any other JSON value is stored as given, and text that
is not JSON is stored as a string.`,
		Example: `  reshard ring add-data --vnodes '0, 106, 943, 689' --data ro
  reshard ring add-data --vnodes 0-99 --data ''
  reshard ring add-data --vnodes 7 --data '{"state":"moving"}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			d := parseData(data)
			v, n, err := o.updateVnodes(cmd, "add-data "+list+" "+string(d), list, func(r *ring.Ring, vs []uint32) error {
				return r.SetData(vs, d)
			})
			if err != nil {
				return err
			}
			return o.written(cmd, v, fmt.Sprintf("set data %s on %d vnodes", d, n))
		},
	}
	cmd.Flags().StringVar(&list, "vnodes", "", `vnodes to change, e.g. "0, 106, 943" or "0-99"`)
	cmd.Flags().StringVar(&data, "data", "", `data to store: ro, any JSON value, or '' to clear`)
	cmd.MarkFlagRequired("vnodes")
	cmd.MarkFlagRequired("data")
	return cmd
}

// updateVnodes is update for a change to the vnodes in list (a
// ParseVnodeList list, read against the ring being changed); it also
// returns how many vnodes changed.
func (o *ringOpts) updateVnodes(cmd *cobra.Command, what, list string, change func(*ring.Ring, []uint32) error) (version int64, n int, err error) {
	version, err = o.update(cmd, what, func(r *ring.Ring) error {
		vs, err := ring.ParseVnodeList(list, r.Vnodes())
		if err != nil {
			return err
		}
		n = len(vs)
		return change(r, vs)
	})
	return version, n, err
}
