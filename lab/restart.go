package lab

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	"github.com/reshard/reshard/etcd"
)

// RestartPeer stops a peer with a fast shutdown (or, kill set, SIGKILLs its
// postmaster: a crash, with no checkpoint and backends orphaned), waits
// down, and starts it again: a fault test's "primary restart".
func RestartPeer(ctx context.Context, dir, name string, down time.Duration, kill bool) error {
	var p Peer
	var g *pg
	if err := withState(dir, func(st *State, gg *pg) error {
		q, ok := st.findPeer(name)
		if !ok {
			return fmt.Errorf("peer %s is not in the lab", name)
		}
		p, g = q, gg
		if kill {
			g.kill(p)
			return nil
		}
		g.stop(p)
		return nil
	}); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-time.After(down):
	}
	return withState(dir, func(st *State, g *pg) error {
		q, ok := st.findPeer(name)
		if !ok {
			return fmt.Errorf("peer %s left the lab while it was down", name)
		}
		// After a SIGKILL the old backends notice their postmaster's death
		// and exit; until they have, the new postmaster refuses to start
		// on the shared memory they still hold.
		var err error
		for attempt := 0; attempt < 20; attempt++ {
			if err = g.start(ctx, &q); err == nil || !kill {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		st.updatePeer(q)
		return err
	})
}

// RestartEtcd restarts the lab's embedded etcd (the supervisor does it on
// SIGHUP) and waits until it answers again.
func RestartEtcd(ctx context.Context, dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	st, err := Load(dir)
	if err != nil {
		return err
	}
	if len(st.EtcdMembers) > 0 {
		return fmt.Errorf("the lab in %s runs %d etcd members; restart one with --etcd-member NAME|leader", dir, len(st.EtcdMembers))
	}
	if !alive(st.SupervisorPID) {
		return fmt.Errorf("the lab in %s is not running", dir)
	}
	if err := syscall.Kill(st.SupervisorPID, syscall.SIGHUP); err != nil {
		return err
	}
	time.Sleep(200 * time.Millisecond)
	deadline := time.Now().Add(30 * time.Second)
	for {
		cli, err := etcd.Connect(ctx, st.EtcdURL)
		if err == nil {
			cli.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd did not come back in 30s: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
