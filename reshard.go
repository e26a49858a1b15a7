// Package reshard holds the domain types that every part of the system
// shares: pnodes (physical shards) and their peers, and the registry that
// maps a pnode name to the PostgreSQL peers serving it.
package reshard

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Role is a peer's place in a Manatee-style shard.
type Role string

const (
	RolePrimary Role = "primary"
	RoleSync    Role = "sync"
	RoleAsync   Role = "async"
)

// Peer is one PostgreSQL server of a pnode.
type Peer struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
	DSN  string `json:"dsn"`
}

// Pnode is a physical shard: a primary and its replicas.
type Pnode struct {
	Name  string `json:"name"`
	Peers []Peer `json:"peers"`
	// ZooKeeper is the ensemble ("HOST:PORT" each) whose /pg_dump_lock
	// the shard's Manatee dump job obeys; a reshard of the pnode takes
	// its dump lock there too.
	ZooKeeper []string `json:"zookeeper,omitempty"`
}

// Primary returns the pnode's primary peer.
func (p Pnode) Primary() (Peer, error) {
	for _, peer := range p.Peers {
		if peer.Role == RolePrimary {
			return peer, nil
		}
	}
	return Peer{}, fmt.Errorf("pnode %s has no primary", p.Name)
}

var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrInUse    = errors.New("in use")
	// ErrDiskFull means a host or server has no room for what a job asks
	// of it: trying again does not help until an operator makes some.
	ErrDiskFull = errors.New("disk full")
)

// Registry records which pnodes exist and how to reach them.
type Registry interface {
	AddPnode(ctx context.Context, p Pnode) error
	Pnode(ctx context.Context, name string) (Pnode, error)
	Pnodes(ctx context.Context) ([]Pnode, error)
	RemovePnode(ctx context.Context, name string) error
}

// Pnode names end up in etcd keys, log lines and lab paths, so they are
// kept to the characters Manta's shard names use (1.moray.emy-11.joyent.us).
var pnodeName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$`)

// ValidatePnodeName rejects names that are not safe as keys and paths.
func ValidatePnodeName(name string) error {
	if !pnodeName.MatchString(name) {
		return fmt.Errorf("invalid pnode name %q: use letters, digits, '.', '_' and '-' (at most 128)", name)
	}
	return nil
}

// Validate checks a pnode before it is registered.
func (p Pnode) Validate() error {
	if err := ValidatePnodeName(p.Name); err != nil {
		return err
	}
	primaries := 0
	seen := map[string]bool{}
	for _, peer := range p.Peers {
		switch peer.Role {
		case RolePrimary:
			primaries++
		case RoleSync, RoleAsync:
		default:
			return fmt.Errorf("pnode %s: peer %q has unknown role %q", p.Name, peer.Name, peer.Role)
		}
		if peer.DSN == "" {
			return fmt.Errorf("pnode %s: peer %q has no DSN", p.Name, peer.Name)
		}
		if seen[peer.Name] {
			return fmt.Errorf("pnode %s: duplicate peer name %q", p.Name, peer.Name)
		}
		seen[peer.Name] = true
	}
	if primaries != 1 {
		return fmt.Errorf("pnode %s: need exactly one primary, have %d", p.Name, primaries)
	}
	return nil
}

// Provisioner is what the physical strategy needs from the hosts that run
// PostgreSQL: RFD 103 steps 3 and 7 (new async peers of the origin, then
// split off as a new shard). The lab implements it on this machine; an
// agent per host, Patroni or a cloud API can implement it elsewhere. Every
// method must be idempotent: a resumed job calls it again.
type Provisioner interface {
	// CreateStandby makes a new peer named name for pnode from a base
	// backup of upstream and starts it streaming from upstream. If the
	// peer exists it is returned as it is.
	CreateStandby(ctx context.Context, pnode, name string, upstream Peer) (Peer, error)
	// Promote ends recovery on peer and makes it a primary on a new
	// timeline. Promoting a primary does nothing. The peer refuses when it
	// has seen a newer fencing token for the job than token (its primary's,
	// replicated): a stale orchestrator must not promote.
	Promote(ctx context.Context, peer Peer, token FencingToken) error
	// Follow points a standby at upstream (it follows upstream's timeline)
	// with the given role; a sync role makes upstream name it in
	// synchronous_standby_names.
	Follow(ctx context.Context, peer, upstream Peer, role Role) error
	// Remove stops a peer and deletes its data.
	Remove(ctx context.Context, peer Peer) error
}

// HostSpace is the free disk of a host that would hold a new peer, as last
// measured there.
type HostSpace struct {
	Host     string    `json:"host"`
	Free     int64     `json:"free_bytes"`
	Measured time.Time `json:"measured"`
}

// SpaceReporter is a Provisioner that can tell, before a job starts, how
// much disk the hosts of its next n new peers have free.
type SpaceReporter interface {
	FreeSpace(ctx context.Context, n int) ([]HostSpace, error)
}

// FencingToken is one orchestrator's hold on one job, as the shards see
// it: the job and a number that grows each time the job changes hands. A
// shard refuses a job's statement carrying a token lower than the highest
// it has seen for that job, so a process that was paused past its lease
// and wakes up after another took over changes nothing.
type FencingToken struct {
	Job   string `json:"job"`
	Token int64  `json:"token"`
}

type fencingTokenKey struct{}

// WithFencingToken makes ctx carry a job's token to the Provisioner, whose
// every operation (not only Promote) a host agent fences with it.
func WithFencingToken(ctx context.Context, t FencingToken) context.Context {
	return context.WithValue(ctx, fencingTokenKey{}, t)
}

// FencingTokenOf returns the token ctx carries.
func FencingTokenOf(ctx context.Context) (FencingToken, bool) {
	t, ok := ctx.Value(fencingTokenKey{}).(FencingToken)
	return t, ok
}
