package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/reshard/reshard/etcd"
	"github.com/reshard/reshard/ring"
	"github.com/spf13/cobra"
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

// store connects to etcd; the caller closes the returned function.
func (o *ringOpts) store(ctx context.Context) (*etcd.RingStore, func(), error) {
	cli, err := etcd.Connect(ctx, o.g.etcd)
	if err != nil {
		return nil, nil, err
	}
	return etcd.NewRingStore(cli), func() { cli.Close() }, nil
}

// load reads the ring from --ring-file or the current version in etcd
// (version 0 for a file).
func (o *ringOpts) load(cmd *cobra.Command) (*ring.Ring, int64, error) {
	if o.file != "" {
		r, _, err := readRingFile(o.file)
		return r, 0, err
	}
	ctx, cancel := cmdContext(cmd, time.Minute)
	defer cancel()
	s, done, err := o.store(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer done()
	r, rv, err := s.Current(ctx)
	return r, rv.Version, err
}

// readRingFile reads any ring reshard knows (ring.Load); a LevelDB ring is
// opened read-only.
func readRingFile(path string) (*ring.Ring, string, error) {
	return ring.Load(path)
}

// writeRingFile replaces path atomically, so a failed write never leaves a
// half-written ring.
func writeRingFile(path, format string, r *ring.Ring) error {
	var b bytes.Buffer
	var err error
	if format == ring.FormatFash {
		err = r.WriteFash(&b)
	} else {
		err = r.WriteFile(&b)
	}
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ring-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b.Bytes()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	mode := os.FileMode(0o644)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	if err := os.Chmod(tmp.Name(), mode); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// update applies change to the ring and stores it: a new etcd version, or
// the file rewritten in its own format. On error nothing is stored.
func (o *ringOpts) update(cmd *cobra.Command, what string, change func(*ring.Ring) error) (int64, error) {
	if o.file != "" {
		r, format, err := readRingFile(o.file)
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
		return 0, writeRingFile(o.file, format, r)
	}
	ctx, cancel := cmdContext(cmd, time.Minute)
	defer cancel()
	s, done, err := o.store(ctx)
	if err != nil {
		return 0, err
	}
	defer done()
	rv, err := s.Update(ctx, o.expect, o.note(what), change)
	return rv.Version, err
}

func (o *ringOpts) note(what string) string {
	if o.comment != "" {
		return what + ": " + o.comment
	}
	return what
}

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
				if err := writeRingFile(o.file, ring.FormatRing, r); err != nil {
					return err
				}
				return o.written(cmd, 0, text)
			}
			ctx, cancel := cmdContext(cmd, time.Minute)
			defer cancel()
			s, done, err := o.store(ctx)
			if err != nil {
				return err
			}
			defer done()
			rv, err := s.Put(ctx, 0, r, o.note("create"))
			if errors.Is(err, etcd.ErrVersionConflict) {
				return fmt.Errorf("a ring already exists in etcd; change it with remap-vnode/add-data or replace it with import-fash")
			}
			if err != nil {
				return err
			}
			return o.written(cmd, rv.Version, text)
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

type pnodeSummary struct {
	Pnode  string `json:"pnode"`
	Count  int    `json:"count"`
	Vnodes string `json:"vnodes"`
}

func summarize(r *ring.Ring) []pnodeSummary {
	var out []pnodeSummary
	for _, p := range r.Pnodes() {
		vs, _ := r.VnodesOf(p)
		out = append(out, pnodeSummary{Pnode: p, Count: len(vs), Vnodes: ring.FormatVnodeList(vs)})
	}
	return out
}

func newRingShowCmd(o *ringOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "show",
		Short: "Summarize the ring: algorithm, version, and each pnode's vnodes as ranges",
		Example: `  reshard ring show
  reshard ring show --ring-file ring.json --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, v, err := o.load(cmd)
			if err != nil {
				return err
			}
			out := map[string]any{"algorithm": r.Algorithm().String(), "vnodes": r.Vnodes(), "pnodes": summarize(r),
				"dataVnodes": dataGroups(r)}
			if o.file == "" {
				out["version"] = v
			}
			if o.g.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			w := cmd.OutOrStdout()
			if o.file == "" {
				fmt.Fprintf(w, "version %d: ", v)
			}
			fmt.Fprintf(w, "%s ring of %d vnodes\n", r.Algorithm(), r.Vnodes())
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PNODE\tCOUNT\tVNODES")
			for _, s := range summarize(r) {
				fmt.Fprintf(tw, "%s\t%d\t%s\n", s.Pnode, s.Count, s.Vnodes)
			}
			tw.Flush()
			for _, d := range dataGroups(r) {
				fmt.Fprintf(w, "data %s: %d vnodes: %s\n", d.Data, d.Count, d.Vnodes)
			}
			return nil
		},
	}
}

func newRingGetPnodesCmd(o *ringOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "get-pnodes",
		Short: "List the ring's pnodes and how many vnodes each holds",
		Example: `  reshard ring get-pnodes
  reshard ring get-pnodes --ring-file /var/tmp/hash_ring/ring.json --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, _, err := o.load(cmd)
			if err != nil {
				return err
			}
			counts := r.VnodeCounts()
			if o.g.json {
				var out []map[string]any
				for _, p := range r.Pnodes() {
					out = append(out, map[string]any{"pnode": p, "count": counts[p]})
				}
				return printJSON(cmd.OutOrStdout(), out)
			}
			for _, p := range r.Pnodes() {
				fmt.Fprintf(cmd.OutOrStdout(), "%s\t%d\n", p, counts[p])
			}
			return nil
		},
	}
}

func newRingGetVnodesCmd(o *ringOpts) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "get-vnodes PNODE",
		Short: "Show the vnodes a pnode holds, as ranges (--all: one per line)",
		Example: `  reshard ring get-vnodes tcp://1.moray.emy-11.joyent.us:2020
  reshard ring get-vnodes --all --json 1.moray`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, _, err := o.load(cmd)
			if err != nil {
				return err
			}
			vs, err := r.VnodesOf(args[0])
			if err != nil {
				return err
			}
			w := bufio.NewWriter(cmd.OutOrStdout())
			defer w.Flush()
			switch {
			case o.g.json && all:
				return printJSON(w, map[string]any{"pnode": args[0], "count": len(vs), "vnodeList": vs})
			case o.g.json:
				return printJSON(w, pnodeSummary{Pnode: args[0], Count: len(vs), Vnodes: ring.FormatVnodeList(vs)})
			case all:
				for _, v := range vs {
					fmt.Fprintln(w, v)
				}
			default:
				fmt.Fprintf(w, "%s holds %d vnodes: %s\n", args[0], len(vs), ring.FormatVnodeList(vs))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "list every vnode instead of ranges")
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
			var n int
			v, err := o.update(cmd, "remap-vnode "+list+" to "+pnode, func(r *ring.Ring) error {
				vs, err := ring.ParseVnodeList(list, r.Vnodes())
				if err != nil {
					return err
				}
				n = len(vs)
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
			var n int
			v, err := o.update(cmd, "add-data "+list+" "+string(d), func(r *ring.Ring) error {
				vs, err := ring.ParseVnodeList(list, r.Vnodes())
				if err != nil {
					return err
				}
				n = len(vs)
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

type dataGroup struct {
	Data   json.RawMessage `json:"data"`
	Count  int             `json:"count"`
	Vnodes string          `json:"vnodes"`
}

// dataGroups lists the vnodes with data, grouped by value.
func dataGroups(r *ring.Ring) []dataGroup {
	out := []dataGroup{}
	idx := map[string]int{}
	lists := [][]uint32{}
	for _, v := range r.DataVnodes() {
		_, d, _ := r.Vnode(v)
		i, ok := idx[string(d)]
		if !ok {
			i = len(out)
			idx[string(d)] = i
			out = append(out, dataGroup{Data: d})
			lists = append(lists, nil)
		}
		lists[i] = append(lists[i], v)
	}
	for i := range out {
		out[i].Count = len(lists[i])
		out[i].Vnodes = ring.FormatVnodeList(lists[i])
	}
	return out
}

func newRingGetDataVnodesCmd(o *ringOpts) *cobra.Command {
	return &cobra.Command{
		Use:     "get-data-vnodes",
		Short:   "List the vnodes that carry data (such as ro), grouped by value",
		Example: `  reshard ring get-data-vnodes          # e.g. "ro"  4 vnodes  0,106,689,943`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, _, err := o.load(cmd)
			if err != nil {
				return err
			}
			groups := dataGroups(r)
			if o.g.json {
				return printJSON(cmd.OutOrStdout(), groups)
			}
			if len(groups) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no vnode has data")
			}
			for _, g := range groups {
				fmt.Fprintf(cmd.OutOrStdout(), "%s\t%d vnodes\t%s\n", g.Data, g.Count, g.Vnodes)
			}
			return nil
		},
	}
}

func newRingGetVnodePnodeAndDataCmd(o *ringOpts) *cobra.Command {
	var list string
	cmd := &cobra.Command{
		Use:     "get-vnode-pnode-and-data --vnodes LIST",
		Short:   "Show each listed vnode's pnode and data",
		Example: `  reshard ring get-vnode-pnode-and-data --vnodes '0, 106, 943, 689' --json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, _, err := o.load(cmd)
			if err != nil {
				return err
			}
			vs, err := ring.ParseVnodeList(list, r.Vnodes())
			if err != nil {
				return err
			}
			w := bufio.NewWriter(cmd.OutOrStdout())
			defer w.Flush()
			for _, v := range vs {
				p, d, _ := r.Vnode(v)
				if o.g.json {
					printJSON(w, struct {
						Vnode uint32          `json:"vnode"`
						Pnode string          `json:"pnode"`
						Data  json.RawMessage `json:"data"`
					}{v, p, d})
				} else {
					fmt.Fprintf(w, "%d\t%s\t%s\n", v, p, d)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&list, "vnodes", "", `vnodes to show, e.g. "0, 106, 943" or "0-99"`)
	cmd.MarkFlagRequired("vnodes")
	return cmd
}

func newRingLocateCmd(o *ringOpts) *cobra.Command {
	var stdin bool
	cmd := &cobra.Command{
		Use:   "locate KEY...",
		Short: "Print the vnode, pnode and data each key routes to, one JSON line per key",
		Long: `Hash each key as node-fash does and print
  {"key":K,"vnode":N,"pnode":P,"data":D}
per key, with D as stored (1, "ro", ...). Keys may be empty or contain
spaces and any UTF-8 text; put -- before keys that start with "-".
--stdin reads one key per line instead.`,
		Example: `  reshard ring locate --ring-file ring.json '/poseidon/stor/foo.txt' '' 'déjà vu'
  cut -f1 keys.txt | reshard ring locate --ring-file ring.json --stdin`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !stdin && len(args) == 0 {
				return fmt.Errorf("give keys as arguments or --stdin")
			}
			r, _, err := o.load(cmd)
			if err != nil {
				return err
			}
			w := bufio.NewWriterSize(cmd.OutOrStdout(), 1<<16)
			defer w.Flush()
			var line []byte
			emit := func(key string) {
				loc := r.LocateString(key)
				line = append(line[:0], `{"key":`...)
				line = appendJSONString(line, key)
				line = append(line, `,"vnode":`...)
				line = strconv.AppendUint(line, uint64(loc.Vnode), 10)
				line = append(line, `,"pnode":`...)
				line = appendJSONString(line, loc.Pnode)
				line = append(line, `,"data":`...)
				line = append(line, loc.Data...)
				line = append(line, "}\n"...)
				w.Write(line)
			}
			for _, k := range args {
				emit(k)
			}
			if stdin {
				sc := bufio.NewScanner(cmd.InOrStdin())
				sc.Buffer(nil, 16<<20)
				for sc.Scan() {
					emit(sc.Text())
				}
				return sc.Err()
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&stdin, "stdin", false, "read keys from standard input, one per line")
	return cmd
}

// appendJSONString quotes s without HTML escaping, like printJSON.
func appendJSONString(b []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}

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
				if err := writeRingFile(o.file, ring.FormatRing, r); err != nil {
					return err
				}
				return o.written(cmd, 0, text)
			}
			ctx, cancel := cmdContext(cmd, time.Minute)
			defer cancel()
			s, done, err := o.store(ctx)
			if err != nil {
				return err
			}
			defer done()
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
			return writeRingFile(out, ring.FormatFash, r)
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "write to this file instead of standard output")
	cmd.Flags().StringVar(&ldb, "leveldb", "", "write a node-fash LevelDB ring into this new or empty directory")
	cmd.Flags().Int64Var(&version, "version", 0, "export this etcd version instead of the current one")
	return cmd
}

func (o *ringOpts) getVersion(cmd *cobra.Command, v int64) (*ring.Ring, error) {
	ctx, cancel := cmdContext(cmd, time.Minute)
	defer cancel()
	s, done, err := o.store(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	r, _, err := s.Get(ctx, v)
	return r, err
}

func newRingHistoryCmd(o *ringOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "history",
		Short: "List the ring versions kept in etcd",
		Example: `  reshard ring history
  reshard ring history --json | jq .current`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.needEtcd("history"); err != nil {
				return err
			}
			ctx, cancel := cmdContext(cmd, time.Minute)
			defer cancel()
			s, done, err := o.store(ctx)
			if err != nil {
				return err
			}
			defer done()
			h, err := s.History(ctx)
			if err != nil {
				return err
			}
			cur, err := s.CurrentVersion(ctx)
			if err != nil {
				return err
			}
			if o.g.json {
				return printJSON(cmd.OutOrStdout(), map[string]any{"current": cur, "versions": h})
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tTIME\tPNODES\tSIZE\tCOMMENT")
			for _, v := range h {
				mark := ""
				if v.Version == cur {
					mark = " *"
				}
				fmt.Fprintf(tw, "%d%s\t%s\t%d\t%d\t%s\n", v.Version, mark, v.Time.Format(time.RFC3339), v.Pnodes, v.Size, v.Comment)
			}
			return tw.Flush()
		},
	}
}

func newRingDiffCmd(o *ringOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "diff V1 V2",
		Short: "Show what changed between two ring versions (or ring files)",
		Long: `Compare two rings: pnodes added or removed, vnodes moved between pnodes, and
vnode data changed, as ranges. V1 and V2 are etcd versions or ring files
(node-fash or reshard format).`,
		Example: `  reshard ring diff 3 4
  reshard ring diff old.json new.json`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var rings [2]*ring.Ring
			for i, a := range args {
				if v, err := strconv.ParseInt(a, 10, 64); err == nil {
					if rings[i], err = o.getVersion(cmd, v); err != nil {
						return err
					}
					continue
				}
				r, _, err := readRingFile(a)
				if err != nil {
					return err
				}
				rings[i] = r
			}
			d, err := ring.Compare(rings[0], rings[1])
			if err != nil {
				return err
			}
			if o.g.json {
				return printJSON(cmd.OutOrStdout(), d)
			}
			w := cmd.OutOrStdout()
			if d.Empty() {
				fmt.Fprintln(w, "no differences")
			}
			for _, p := range d.AddedPnodes {
				fmt.Fprintf(w, "+ pnode %s\n", p)
			}
			for _, p := range d.RemovedPnodes {
				fmt.Fprintf(w, "- pnode %s\n", p)
			}
			for _, m := range d.Moves {
				fmt.Fprintf(w, "move %d vnodes %s -> %s: %s\n", len(m.Vnodes), m.From, m.To, m.List)
			}
			for _, c := range d.Data {
				fmt.Fprintf(w, "data %s -> %s on %d vnodes: %s\n", c.From, c.To, len(c.Vnodes), c.List)
			}
			return nil
		},
	}
}

func newRingRollbackCmd(o *ringOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "rollback V",
		Short: "Make an earlier ring version current again (as a new version)",
		Long: `Store the content of version V as a new version, so routers switch back to
it and history still shows what happened. Use 'reshard ring diff' first to
see what the rollback will change.`,
		Example: `  reshard ring diff 5 4 && reshard ring rollback 4 --expect-version 5`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.needEtcd("rollback"); err != nil {
				return err
			}
			to, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || to <= 0 {
				return fmt.Errorf("bad version %q: want a positive number from 'reshard ring history'", args[0])
			}
			ctx, cancel := cmdContext(cmd, time.Minute)
			defer cancel()
			s, done, err := o.store(ctx)
			if err != nil {
				return err
			}
			defer done()
			rv, err := s.Rollback(ctx, to, o.expect)
			if err != nil {
				return err
			}
			return o.written(cmd, rv.Version, fmt.Sprintf("rolled back to the ring of version %d", to))
		},
	}
}
