package perf

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Result is one goal's measurement: reshard's figure, the baseline's,
// their ratio and the least ratio wanted.
type Result struct {
	Area    string  `json:"area"`     // router, moray, copy, add-peers, ...
	Name    string  `json:"name"`     // what was measured, e.g. "gets, HTTP"
	Against string  `json:"against"`  // what the baseline is
	Unit    string  `json:"unit"`     // of Ours and Base: "ops/s", "rows/s", "s"
	Ours    float64 `json:"ours"`     //
	Base    float64 `json:"baseline"` //
	Ratio   float64 `json:"ratio"`    // how many times the baseline reshard achieves: higher is better
	Goal    float64 `json:"goal"`     // the least Ratio wanted; 0: measured, no goal
	Met     bool    `json:"met"`
	Detail  string  `json:"detail,omitempty"` // the p99s, sizes, how it was run
	Skipped string  `json:"skipped,omitempty"`
	// Added: Ratio is Ours minus Base, in Unit, and Goal its most.
	Added bool `json:"added,omitempty"`
}

// Faster makes a result of two rates (higher is better).
func Faster(area, name, against, unit string, ours, base, goal float64) Result {
	r := Result{Area: area, Name: name, Against: against, Unit: unit, Ours: ours, Base: base, Goal: goal}
	if base > 0 {
		r.Ratio = ours / base
	}
	r.Met = goal == 0 || r.Ratio >= goal
	return r
}

// Quicker makes a result of two times (lower is better): the ratio is the
// baseline's time over reshard's, so it reads like a rate's.
func Quicker(area, name, against, unit string, ours, base, goal float64) Result {
	r := Result{Area: area, Name: name, Against: against, Unit: unit, Ours: ours, Base: base, Goal: goal}
	if ours > 0 {
		r.Ratio = base / ours
	}
	r.Met = goal == 0 || r.Ratio >= goal
	return r
}

// Overhead makes a result of what reshard adds to the baseline's figure
// (a latency): the goal is the most it may add.
func Overhead(area, name, against, unit string, ours, base, most float64) Result {
	return Result{Area: area, Name: name, Against: against, Unit: unit, Ours: ours, Base: base,
		Ratio: ours - base, Goal: most, Met: ours-base < most, Added: true}
}

// Skip is a result that could not be measured here, and why.
func Skip(area, name, against, why string, goal float64) Result {
	return Result{Area: area, Name: name, Against: against, Goal: goal, Skipped: why}
}

// Report is one run of every comparison.
type Report struct {
	Date     string   `json:"date"`
	Command  string   `json:"command"`
	Machine  string   `json:"machine"`
	Results  []Result `json:"results"`
	Duration float64  `json:"seconds"`
}

var header = []string{"area", "measured", "against", "reshard", "baseline", "ratio", "goal", "met", "detail"}

func (r Result) cells() []string {
	if r.Skipped != "" {
		return []string{r.Area, r.Name, r.Against, "", "", "", goal(r), "skipped", r.Skipped}
	}
	met := "yes"
	if !r.Met {
		met = "**no**"
	}
	if r.Goal == 0 && !r.Added {
		met = ""
	}
	ratio := fmt.Sprintf("%.2f×", r.Ratio)
	if r.Added {
		ratio = fmt.Sprintf("%+.2f %s", r.Ratio, r.Unit)
	}
	return []string{r.Area, r.Name, r.Against, figure(r.Ours, r.Unit), figure(r.Base, r.Unit), ratio, goal(r), met, r.Detail}
}

func goal(r Result) string {
	switch {
	case r.Added:
		return fmt.Sprintf("< %+.2f %s", r.Goal, r.Unit)
	case r.Goal == 0:
		return ""
	}
	return fmt.Sprintf("≥ %.2f×", r.Goal)
}

func figure(v float64, unit string) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f %s", v, unit)
	case v >= 10:
		return fmt.Sprintf("%.1f %s", v, unit)
	default:
		return fmt.Sprintf("%.2f %s", v, unit)
	}
}

// Table prints the report for a terminal.
func (rep Report) Table(w io.Writer) {
	fmt.Fprintf(w, "%s, %s\n", rep.Date, rep.Machine)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rep.Results {
		c := r.cells()
		c[7] = strings.Trim(c[7], "*")
		fmt.Fprintln(tw, strings.Join(c, "\t"))
	}
	tw.Flush()
}

// Markdown prints the report as docs/performance.md's table: the
// command, the machine, then one row per measurement.
func (rep Report) Markdown(w io.Writer) {
	fmt.Fprintf(w, "Measured %s on %s, in %.0f s, by:\n\n```\n%s\n```\n\n", rep.Date, rep.Machine, rep.Duration, rep.Command)
	fmt.Fprintln(w, "| "+strings.Join(header, " | ")+" |")
	fmt.Fprintln(w, "|"+strings.Repeat("---|", len(header)))
	for _, r := range rep.Results {
		c := r.cells()
		for i := range c {
			c[i] = strings.ReplaceAll(c[i], "|", "\\|")
		}
		fmt.Fprintln(w, "| "+strings.Join(c, " | ")+" |")
	}
}
