package lab

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/etcd"
)

// A lab of three etcd members: each its own process with its own data,
// every client given all of them, one killed and brought back on its data,
// and all stopped and removed by down.
func TestLabEtcdMembers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := testConfig(t, 1, 1)
	cfg.EtcdMembers = 3
	st, err := Up(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	downed := false
	defer func() {
		if !downed {
			Down(cfg.Dir)
		}
	}()
	if urls := strings.Split(st.EtcdURL, ","); len(urls) != 3 || len(st.EtcdMembers) != 3 {
		t.Fatalf("etcd %q, members %+v", st.EtcdURL, st.EtcdMembers)
	}
	var pids []int
	for _, m := range st.EtcdMembers {
		pid := etcdMemberPID(st.Dir, m.Name)
		if pid == 0 || pid == st.SupervisorPID {
			t.Fatalf("%s: pid %d", m.Name, pid)
		}
		pids = append(pids, pid)
		if _, err := os.Stat(filepath.Join(st.Dir, "etcd", m.Name, "member")); err != nil {
			t.Errorf("%s has no data of its own: %v", m.Name, err)
		}
	}
	leader := checkMembers(t, ctx, st)

	var killed string
	if err := RestartEtcdMember(ctx, cfg.Dir, "leader", 500*time.Millisecond, func(n string) { killed = n }); err != nil {
		t.Fatal(err)
	}
	if killed != leader {
		t.Errorf("killed %s, the leader was %s", killed, leader)
	}
	checkMembers(t, ctx, st)
	// The registry written before the kill is still there.
	cli, err := etcd.Connect(ctx, st.EtcdURL)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := etcd.NewRegistry(cli).Pnodes(ctx)
	cli.Close()
	if err != nil || len(ps) != 1 {
		t.Fatalf("registry after the restart: %+v %v", ps, err)
	}
	if err := RestartEtcd(ctx, cfg.Dir); err == nil || !strings.Contains(err.Error(), "--etcd-member") {
		t.Errorf("restart --etcd of a cluster: %v", err)
	}

	for _, m := range st.EtcdMembers {
		pids = append(pids, etcdMemberPID(st.Dir, m.Name))
	}
	if err := Down(cfg.Dir); err != nil {
		t.Fatal(err)
	}
	downed = true
	for _, pid := range pids {
		if pid != 0 && alive(pid) {
			t.Errorf("pid %d still running after down", pid)
		}
	}
	if _, err := os.Stat(filepath.Join(st.Dir, "etcd")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("etcd data left after down: %v", err)
	}
}

// checkMembers waits until every member answers and one leads, and returns
// the leader's name.
func checkMembers(t *testing.T, ctx context.Context, st *State) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ms := EtcdStatus(ctx, st)
		if leader := EtcdHealthy(ms); len(ms) == 3 && leader != "" {
			return leader
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd members: %+v", ms)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
