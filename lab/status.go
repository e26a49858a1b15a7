package lab

import (
	"context"
	"time"

	"github.com/reshard/reshard"
	"github.com/reshard/reshard/postgres"
)

// PeerStatus is one row of `lab status`, the lab's `manatee-adm show`:
// the replication columns describe the link from this peer to the next one
// in the chain, as Manatee prints them.
type PeerStatus struct {
	Shard      string        `json:"shard"`
	Role       reshard.Role  `json:"role"`
	Peer       string        `json:"peer"`
	Port       int           `json:"port"`
	Addr       string        `json:"addr,omitempty"`  // its host's address, in a lab of hosts
	Agent      string        `json:"agent,omitempty"` // the spare host whose agent made it
	PG         string        `json:"pg"`              // ok or down
	InRecovery bool          `json:"in_recovery"`
	WAL        postgres.LSN  `json:"wal"` // current LSN (primary) or replayed LSN (standby)
	Repl       string        `json:"repl"`
	Sent       *postgres.LSN `json:"sent,omitempty"`
	Flush      *postgres.LSN `json:"flush,omitempty"`
	Replay     *postgres.LSN `json:"replay,omitempty"`
	// Lag is how far this peer trails its upstream: the upstream's
	// replay_lag (time) and the WAL bytes it has yet to replay.
	LagSeconds *float64 `json:"lag_seconds,omitempty"`
	LagBytes   *uint64  `json:"lag_bytes,omitempty"`
}

// Status reads every peer live, the agents' peers included. A peer that
// does not answer is "down". A peer's upstream may sit in another shard:
// the physical strategy's new peers stream from the origin's primary while
// they catch up.
func Status(ctx context.Context, st *State) []PeerStatus {
	shards := st.AllShards()
	reps := map[string]*postgres.Replication{}
	for _, sh := range shards {
		for _, p := range sh.Peers {
			reps[p.Name] = readPeer(ctx, p)
		}
	}
	var out []PeerStatus
	for _, sh := range shards {
		for i, p := range sh.Peers {
			row := PeerStatus{Shard: sh.Name, Role: p.Role, Peer: p.Name, Port: p.Port, Addr: p.Addr, Agent: p.Agent, PG: "down", Repl: "-"}
			r := reps[p.Name]
			if r != nil {
				row.PG, row.InRecovery, row.WAL = "ok", r.InRecovery, r.WAL
				// Manatee shows the stream to the next peer of the shard.
				next := ""
				if i+1 < len(sh.Peers) {
					next = sh.Peers[i+1].Name
				}
				for _, d := range r.Downstream {
					if d.Name == next {
						d := d
						row.Repl, row.Sent, row.Flush, row.Replay = d.SyncState, &d.Sent, &d.Flush, &d.Replay
					}
				}
			}
			if up := reps[p.Upstream]; p.Upstream != "" && up != nil {
				for _, d := range up.Downstream {
					if d.Name == p.Name && d.ReplayLag != nil {
						s := d.ReplayLag.Seconds()
						row.LagSeconds = &s
					}
				}
				if r != nil {
					var b uint64
					if up.WAL > r.WAL {
						b = uint64(up.WAL - r.WAL)
					}
					row.LagBytes = &b
				}
			}
			out = append(out, row)
		}
	}
	return out
}

func readPeer(ctx context.Context, p Peer) *postgres.Replication {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := postgres.Connect(cctx, p.DSN())
	if err != nil {
		return nil
	}
	defer conn.Close(ctx)
	r, err := postgres.ReadReplication(cctx, conn)
	if err != nil {
		return nil
	}
	return &r
}
