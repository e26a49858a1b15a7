package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/reshard/reshard"
	"github.com/reshard/reshard/etcd"
)

// AddShard adds an empty shard of the given peers to a running lab, the
// destination of a reshard, and registers it as a pnode.
func AddShard(ctx context.Context, dir, name string, peers int, progress io.Writer) (*State, error) {
	if err := reshard.ValidatePnodeName(name); err != nil {
		return nil, err
	}
	if peers < 1 || peers > 9 {
		return nil, fmt.Errorf("--peers must be between 1 and 9, got %d", peers)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	unlock, err := lock(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := Load(dir)
	if err != nil {
		return nil, err
	}
	if !st.Ready || !alive(st.SupervisorPID) {
		return nil, fmt.Errorf("the lab in %s is not up", dir)
	}
	if _, ok := st.Shard(name); ok {
		return nil, fmt.Errorf("shard %s already exists in the lab", name)
	}
	g, err := newPG(filepath.Join(dir, "logs"))
	if err != nil {
		return nil, err
	}
	cli, err := etcd.Connect(ctx, st.EtcdURL)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	reg := etcd.NewRegistry(cli)
	if _, err := reg.Pnode(ctx, name); err == nil {
		return nil, fmt.Errorf("pnode %s is already registered", name)
	}
	pp := &ports{used: map[int]bool{}}
	for _, sh := range st.Shards {
		for _, p := range sh.Peers {
			pp.used[p.Port] = true
		}
	}
	for _, port := range st.etcdPorts() {
		pp.used[port] = true
	}
	portList := make([]int, peers)
	for i := range portList {
		if portList[i], err = pp.take(); err != nil {
			return nil, err
		}
	}
	cfg := Config{Dir: dir, Progress: progress}
	if err := buildShard(ctx, cfg, g, st, name, portList, reg); err != nil {
		// Stop what was started; the half-built shard leaves the state.
		if sh, ok := st.Shard(name); ok {
			for i := len(sh.Peers) - 1; i >= 0; i-- {
				g.stop(sh.Peers[i])
				os.RemoveAll(sh.Peers[i].DataDir)
			}
		}
		st.Shards = st.Shards[:len(st.Shards)-1]
		_ = st.save()
		return nil, err
	}
	return st, st.save()
}
