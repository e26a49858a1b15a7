package orchestrator

import (
	"strings"
	"testing"

	"github.com/reshard/reshard"
)

func TestDumpZnodeConfig(t *testing.T) {
	a := []string{"zk1:2181", "zk2:2181"}
	b := []string{"zk9:2181"}
	p := func(name string, zk ...string) reshard.Pnode { return reshard.Pnode{Name: name, ZooKeeper: zk} }
	cases := []struct {
		req      Request
		pnodes   []reshard.Pnode
		servers  string
		path     string
		errMatch string
	}{
		{Request{}, []reshard.Pnode{p("1.moray"), p("3.moray")}, "", "", ""},
		{Request{ZooKeeper: a}, []reshard.Pnode{p("1.moray")}, "zk1:2181,zk2:2181", DefaultZnodePath, ""},
		{Request{ZooKeeper: b, ZooKeeperPath: "/x"}, []reshard.Pnode{p("1.moray", a...)}, "zk9:2181", "/x", ""},
		// The pnodes' own; one without a setting does not disagree.
		{Request{}, []reshard.Pnode{p("1.moray", a...), p("3.moray")}, "zk1:2181,zk2:2181", DefaultZnodePath, ""},
		{Request{}, []reshard.Pnode{p("1.moray", a...), p("3.moray", "zk2:2181", "zk1:2181")}, "zk1:2181,zk2:2181", DefaultZnodePath, ""},
		{Request{}, []reshard.Pnode{p("1.moray", a...), p("3.moray", b...)}, "", "", "pnodes 1.moray and 3.moray name different ZooKeeper ensembles"},
		{Request{ZooKeeper: b}, []reshard.Pnode{p("1.moray", a...), p("3.moray", b...)}, "zk9:2181", DefaultZnodePath, ""},
		{Request{ZooKeeperPath: "/x"}, []reshard.Pnode{p("1.moray")}, "", "", "--zookeeper-path needs --zookeeper"},
	}
	for i, c := range cases {
		servers, path, err := dumpZnodeConfig(c.req, c.pnodes)
		if c.errMatch != "" {
			if err == nil || !strings.Contains(err.Error(), c.errMatch) {
				t.Errorf("case %d: err %v, want %q", i, err, c.errMatch)
			}
			continue
		}
		if err != nil || strings.Join(servers, ",") != c.servers || path != c.path {
			t.Errorf("case %d: %v %q %v; want %s %s", i, servers, path, err, c.servers, c.path)
		}
	}
}

func TestInsideDumpLock(t *testing.T) {
	for _, strategy := range []StrategyName{Logical, Physical} {
		j := &Job{}
		for _, n := range PhaseNames(strategy) {
			j.Phases = append(j.Phases, Phase{Name: n, State: Pending})
		}
		for _, n := range PhaseNames(strategy) {
			if j.insideDumpLock(n) {
				t.Errorf("%s: %s inside the lock before dump-lock is done", strategy, n)
			}
		}
		j.phase("dump-lock").State = Done
		in := false
		for _, n := range PhaseNames(strategy) {
			switch n {
			case "dump-lock":
				in = true
				continue
			case "release-dump-lock":
				in = false
			}
			if j.insideDumpLock(n) != in {
				t.Errorf("%s: %s inside the lock = %v, want %v", strategy, n, !in, in)
			}
		}
	}
}
