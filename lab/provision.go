package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/reshard/reshard"
	"github.com/reshard/reshard/postgres"
	"github.com/reshard/reshard/shard"
)

// Provisioner creates, promotes, re-points and removes peers of a running
// lab: the physical strategy's hands on this machine.
type Provisioner struct{ Dir string }

var _ reshard.Provisioner = Provisioner{}

// peer finds a peer of any shard by name.
func (s *State) peer(name string) (*Shard, *Peer) {
	for i := range s.Shards {
		for j := range s.Shards[i].Peers {
			if s.Shards[i].Peers[j].Name == name {
				return &s.Shards[i], &s.Shards[i].Peers[j]
			}
		}
	}
	return nil, nil
}

// withState runs fn on the lab's state under the lab lock and saves it.
func (pr Provisioner) withState(fn func(st *State, g *pg) error) error {
	dir, err := filepath.Abs(pr.Dir)
	if err != nil {
		return err
	}
	unlock, err := lock(dir)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := Load(dir)
	if err != nil {
		return err
	}
	g, err := newPG(filepath.Join(dir, "logs"))
	if err != nil {
		return err
	}
	ferr := fn(st, g)
	if err := st.save(); err != nil {
		return err
	}
	return ferr
}

// configure rewrites a peer's settings from the state: its upstream, and
// the standby it waits for if one follows it as sync.
func configure(ctx context.Context, st *State, g *pg, p *Peer) error {
	return configureVia(ctx, st, g, p, nil)
}

// configureVia is configure reloading through conn, a connection to p
// already open, when it is not nil.
func configureVia(ctx context.Context, st *State, g *pg, p *Peer, conn postgres.Querier) error {
	var up *Peer
	if p.Upstream != "" {
		if _, up = st.peer(p.Upstream); up == nil {
			return fmt.Errorf("%s: upstream %s is not in the lab", p.Name, p.Upstream)
		}
	}
	sync := ""
	for _, sh := range st.Shards {
		for _, q := range sh.Peers {
			if q.Upstream == p.Name && q.Role == reshard.RoleSync {
				sync = q.Name
			}
		}
	}
	changed, err := g.writeConf(*p, sync, up)
	if err != nil {
		return err
	}
	if !changed {
		return nil
	}
	if conn != nil {
		return postgres.ReloadConf(ctx, conn)
	}
	if alive(postmasterPID(p.DataDir)) {
		return reload(ctx, *p)
	}
	return nil
}

func (pr Provisioner) CreateStandby(ctx context.Context, pnode, name string, upstream reshard.Peer) (reshard.Peer, error) {
	if err := reshard.ValidatePnodeName(pnode); err != nil {
		return reshard.Peer{}, err
	}
	if err := reshard.ValidatePnodeName(name); err != nil {
		return reshard.Peer{}, err
	}
	var out reshard.Peer
	err := pr.withState(func(st *State, g *pg) error {
		_, up := st.peer(upstream.Name)
		if up == nil {
			return fmt.Errorf("upstream %s is not a peer of this lab", upstream.Name)
		}
		if _, p := st.peer(name); p != nil {
			if alive(postmasterPID(p.DataDir)) {
				out = reshard.Peer{Name: p.Name, Role: p.Role, DSN: p.DSN()}
				return nil
			}
			// Half made by an earlier attempt: make it again.
			g.stop(*p)
			os.RemoveAll(p.DataDir)
		} else {
			pp := &ports{used: map[int]bool{}}
			for _, port := range st.etcdPorts() {
				pp.used[port] = true
			}
			for _, sh := range st.Shards {
				for _, q := range sh.Peers {
					pp.used[q.Port] = true
				}
			}
			for _, q := range st.RouterPorts {
				pp.used[q] = true
			}
			port, err := pp.take()
			if err != nil {
				return err
			}
			peer := Peer{Name: name, Role: reshard.RoleAsync, Port: port,
				DataDir: filepath.Join(st.DataRoot, name), Upstream: upstream.Name}
			if st.Network != nil {
				// A new peer is a new host, as a new Manatee peer is a new zone.
				h, err := st.addHost(name)
				if err != nil {
					return err
				}
				peer.Place = h.Place
			}
			sh, _ := st.Shard(pnode)
			if sh == nil {
				st.Shards = append(st.Shards, Shard{Name: pnode})
				sh = &st.Shards[len(st.Shards)-1]
			}
			sh.Peers = append(sh.Peers, peer)
			// Recorded before anything starts, so `lab down` can clean up.
			if err := st.save(); err != nil {
				return err
			}
		}
		_, p := st.peer(name)
		_, up = st.peer(upstream.Name)
		if err := g.initStandby(*p, *up); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := configure(ctx, st, g, p); err != nil {
			return err
		}
		if err := g.start(ctx, p); err != nil {
			return err
		}
		if err := waitStreaming(ctx, *up, p.Name, false); err != nil {
			return err
		}
		out = reshard.Peer{Name: p.Name, Role: p.Role, DSN: p.DSN()}
		return nil
	})
	return out, err
}

func (pr Provisioner) Promote(ctx context.Context, peer reshard.Peer, token reshard.FencingToken) error {
	return pr.withState(func(st *State, g *pg) error {
		_, p := st.peer(peer.Name)
		if p == nil {
			return fmt.Errorf("peer %s is not in the lab", peer.Name)
		}
		conn, err := postgres.Connect(ctx, p.DSN())
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		standby, err := postgres.InRecovery(ctx, conn)
		if err != nil {
			return err
		}
		if standby {
			done, err := shard.PromoteStandby(ctx, conn, token)
			if err != nil {
				return err
			}
			if !done {
				return fmt.Errorf("%s did not finish promotion in 60s", p.Name)
			}
		}
		p.Role, p.Upstream = reshard.RolePrimary, ""
		return configureVia(ctx, st, g, p, conn)
	})
}

func (pr Provisioner) Follow(ctx context.Context, peer, upstream reshard.Peer, role reshard.Role) error {
	return pr.withState(func(st *State, g *pg) error {
		_, p := st.peer(peer.Name)
		_, up := st.peer(upstream.Name)
		if p == nil || up == nil {
			return fmt.Errorf("peer %s or %s is not in the lab", peer.Name, upstream.Name)
		}
		p.Role, p.Upstream = role, up.Name
		if err := configure(ctx, st, g, p); err != nil {
			return err
		}
		if err := configure(ctx, st, g, up); err != nil {
			return err
		}
		return waitStreaming(ctx, *up, p.Name, role == reshard.RoleSync)
	})
}

func (pr Provisioner) Remove(ctx context.Context, peer reshard.Peer) error {
	return pr.withState(func(st *State, g *pg) error {
		sh, p := st.peer(peer.Name)
		if p == nil {
			return nil
		}
		g.stop(*p)
		if err := os.RemoveAll(p.DataDir); err != nil {
			return err
		}
		st.dropHost(p.Name)
		for i := range sh.Peers {
			if sh.Peers[i].Name == peer.Name {
				sh.Peers = append(sh.Peers[:i], sh.Peers[i+1:]...)
				break
			}
		}
		if len(sh.Peers) == 0 {
			for i := range st.Shards {
				if st.Shards[i].Name == sh.Name {
					st.Shards = append(st.Shards[:i], st.Shards[i+1:]...)
					break
				}
			}
		}
		return nil
	})
}
