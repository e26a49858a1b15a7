package main

// The ring subcommands that read it: show, get-pnodes, get-vnodes,
// get-data-vnodes, get-vnode-pnode-and-data, locate.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"text/tabwriter"

	"github.com/reshard/reshard/ring"
	"github.com/spf13/cobra"
)

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
