package orchestrator

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// StrategyName names a strategy.
type StrategyName string

// A Strategy is one way to move vnodes: its phases in order, what it needs
// from a request, and how it undoes a job that has not flipped the ring.
// Each strategy is one file that registers itself; the orchestrator knows
// nothing else about it.
type Strategy struct {
	Name StrategyName
	// Summary says in a few words how rows reach the destination, for help.
	Summary string
	// Phases run in this order. Each is safe to run twice, to kill at any
	// line and to resume, and acts on shards only through fenced steps.
	Phases []PhaseFunc
	// CreatesDestinations says the strategy makes the destination pnodes
	// itself, so they must not be registered when the job is planned and
	// are not reachable before the strategy registers them.
	CreatesDestinations bool
	// Check refuses a request the strategy cannot carry out, before
	// anything is recorded.
	Check func(o *Orchestrator, req Request) error
	// Undo removes the job's work from every side once the origin owns
	// and serves its vnodes again (an abort before the flip).
	Undo func(ctx context.Context, r *run) error
	// RevertCleanup removes the destinations' copies once a revert has
	// handed the vnodes back to the origin and closed the way back.
	RevertCleanup func(ctx context.Context, r *run) error
}

// PhaseFunc is one named phase of a strategy. Points names the crash
// points it passes through (see Point), for fault injection and tests.
type PhaseFunc struct {
	Name   string
	Run    func(ctx context.Context, r *run) error
	Points []Point
}

var strategies = map[StrategyName]*Strategy{}

// register adds a strategy; each strategy's file calls it from init.
func register(s *Strategy) {
	if _, dup := strategies[s.Name]; dup {
		panic("strategy registered twice: " + s.Name)
	}
	strategies[s.Name] = s
}

// strategyOf returns a registered strategy.
func strategyOf(name StrategyName) (*Strategy, error) {
	s, ok := strategies[name]
	if !ok {
		return nil, fmt.Errorf("--strategy %q: use %s", name, StrategyNames())
	}
	return s, nil
}

// StrategyNames lists the registered strategies for help and errors.
func StrategyNames() string {
	names := make([]string, 0, len(strategies))
	for n := range strategies {
		names = append(names, string(n))
	}
	sort.Strings(names)
	out := ""
	for i, n := range names {
		switch {
		case i == 0:
		case i == len(names)-1:
			out += " or "
		default:
			out += ", "
		}
		out += n
	}
	return out
}

// StrategyHelp describes every strategy in one line for --strategy's help.
func StrategyHelp() string {
	names := make([]string, 0, len(strategies))
	for n := range strategies {
		names = append(names, string(n))
	}
	slices.Sort(names)
	for i, n := range names {
		names[i] = n + " (" + strategies[StrategyName(n)].Summary + ")"
	}
	return strings.Join(names, " or ")
}

// FaultPoint names a fault point as --crash-at and --pause-at take it.
func FaultPoint(phase string, p Point) string { return phase + ":" + string(p) }

// CreatesDestinations reports whether the named strategy makes the
// destination pnodes itself (false for an unknown one).
func CreatesDestinations(name StrategyName) bool {
	s, ok := strategies[name]
	return ok && s.CreatesDestinations
}

// PhaseNames lists a strategy's phases in order.
func PhaseNames(name StrategyName) []string {
	s, ok := strategies[name]
	if !ok {
		return nil
	}
	out := make([]string, len(s.Phases))
	for i, p := range s.Phases {
		out[i] = p.Name
	}
	return out
}

// phase returns the strategy's phase called name, a revert's included.
func (s *Strategy) phase(name string) (PhaseFunc, bool) {
	for _, list := range [][]PhaseFunc{s.Phases, revertPhases} {
		if i := slices.IndexFunc(list, func(p PhaseFunc) bool { return p.Name == name }); i >= 0 {
			return list[i], true
		}
	}
	return PhaseFunc{}, false
}

// Point is a named place inside a phase where fault injection can kill or
// pause the orchestrator: just after the step it names took effect.
type Point string

const (
	// PointMid is inside a phase, after its first change.
	PointMid Point = "mid"
	// The cutover's points, one after each of its steps.
	PointFrozen    Point = "frozen"
	PointCaughtUp  Point = "caught-up"
	PointRechecked Point = "rechecked"
	PointSequences Point = "sequences"
	PointDisowned  Point = "disowned"
	PointWritable  Point = "writable"
	PointFlipped   Point = "flipped"
	PointRouted    Point = "routed"
)

// FaultPoints lists every "PHASE:POINT" of a strategy, in the order a job
// passes them: where the kill-and-resume and pause tests strike.
func FaultPoints(name StrategyName) []string {
	s, ok := strategies[name]
	if !ok {
		return nil
	}
	var out []string
	for _, p := range s.Phases {
		for _, pt := range p.Points {
			out = append(out, FaultPoint(p.Name, pt))
		}
	}
	return out
}
