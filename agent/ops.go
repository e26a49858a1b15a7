// Package agent runs the physical strategy's hands on a PostgreSQL host
// without the lab: Run is the agent, registered in etcd on a lease, that
// carries out the operations asked of its host (create a standby, promote,
// follow, remove); Provisioner is the reshard.Provisioner that asks them.
package agent

import (
	"fmt"
	"regexp"
	"time"

	"github.com/reshard/reshard"
)

// Host is an agent's record in etcd.
type Host struct {
	Name     string `json:"name"`
	Addr     string `json:"addr"` // where its servers listen and are reached
	DataRoot string `json:"data_root"`
	PID      int    `json:"pid"`
	// Free is the data root's free space, measured every RefreshEvery
	// (FreeAt), so a job can check its new peers fit before it starts.
	Free   int64     `json:"free_bytes"`
	FreeAt time.Time `json:"free_at"`
}

// Kind is an operation an agent carries out.
type Kind string

const (
	CreateStandby Kind = "create-standby"
	Promote       Kind = "promote"
	Follow        Kind = "follow"
	// SetSync names (or stops naming) a standby in the server's
	// synchronous_standby_names: the upstream's half of a sync Follow.
	SetSync Kind = "set-sync"
	Remove  Kind = "remove"
)

// Op is one operation asked of an agent. Token is the asking job's: the
// agent refuses an op whose token is lower than the highest it has seen
// for that job.
type Op struct {
	Kind  Kind                 `json:"kind"`
	Token reshard.FencingToken `json:"token"`
	Pnode string               `json:"pnode,omitempty"`
	Peer  string               `json:"peer"`
	// Upstream is the server to copy and stream from (CreateStandby,
	// Follow).
	Upstream *reshard.Peer `json:"upstream,omitempty"`
	Role     reshard.Role  `json:"role,omitempty"`
	// Standby and Sync are SetSync's: name Standby as the synchronous
	// standby, or stop naming it.
	Standby string `json:"standby,omitempty"`
	Sync    bool   `json:"sync,omitempty"`
	// MaxRate throttles CreateStandby's pg_basebackup (e.g. "10M").
	MaxRate string `json:"max_rate,omitempty"`
}

// State is where an operation is.
type State string

const (
	Running State = "running"
	Done    State = "done"
	Failed  State = "failed"
)

// Status is an operation's progress as the agent reports it.
type Status struct {
	State State  `json:"state"`
	Error string `json:"error,omitempty"`
	// DiskFull says the operation failed for want of space on the host
	// (reshard.ErrDiskFull): the job stops rather than trying again.
	DiskFull bool          `json:"disk_full,omitempty"`
	Peer     *reshard.Peer `json:"peer,omitempty"` // the peer as it now is
	Agent    int           `json:"agent_pid"`      // the agent process that wrote it
}

// hostName keeps host names to what is safe in etcd keys and file names.
var hostName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// ValidateHostName rejects names that are not safe as keys.
func ValidateHostName(name string) error {
	if !hostName.MatchString(name) {
		return fmt.Errorf("invalid host name %q: use letters, digits, '.', '_' and '-' (at most 63)", name)
	}
	return nil
}

func (op Op) validate() error {
	if err := reshard.ValidatePnodeName(op.Peer); err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	switch op.Kind {
	case CreateStandby, Follow:
		if op.Upstream == nil {
			return fmt.Errorf("%s of %s: no upstream", op.Kind, op.Peer)
		}
		if err := reshard.ValidatePnodeName(op.Upstream.Name); err != nil {
			return fmt.Errorf("upstream: %w", err)
		}
	case SetSync:
		if err := reshard.ValidatePnodeName(op.Standby); err != nil {
			return fmt.Errorf("standby: %w", err)
		}
	case Promote, Remove:
	default:
		return fmt.Errorf("unknown operation %q", op.Kind)
	}
	return nil
}
