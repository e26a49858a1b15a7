package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/reshard/reshard/agent"
	"golang.org/x/sys/unix"
)

// Disk is a tmpfs of a fixed size mounted over a peer's data directory,
// or where a spare host's agent puts its peers' data: the "destination's
// disk fills up" fault.
type Disk struct {
	Peer string `json:"peer"` // the peer or spare host
	Path string `json:"path"`
	Size string `json:"size"` // as mount's size= option takes it: 64M, 1G
}

// diskSize is a size as mount's size= option takes it; a leading + makes
// it room beyond what the directory uses when the disk is made.
var diskSize = regexp.MustCompile(`^\+?[1-9][0-9]*[kKmMgG]?$`)

// bytesOf is a diskSize without its +, in bytes.
func bytesOf(size string) int64 {
	size = strings.TrimPrefix(size, "+")
	unit := int64(1)
	switch size[len(size)-1] {
	case 'k', 'K':
		unit = 1 << 10
	case 'm', 'M':
		unit = 1 << 20
	case 'g', 'G':
		unit = 1 << 30
	}
	n, _ := strconv.ParseInt(strings.TrimRight(size, "kKmMgG"), 10, 64)
	return n * unit
}

// usedBytes is the space a directory's files take, in blocks: what they
// take on a tmpfs too, which counts whole pages.
func usedBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		if s, ok := fi.Sys().(*syscall.Stat_t); ok {
			n += s.Blocks * 512
		}
		return nil
	})
	return n, err
}

// LimitDisk gives a peer, or a spare host that runs none yet, a disk of
// size (+SIZE: that much room beyond what it uses): it stops the peer, mounts a tmpfs of that size where its data
// directory is (a spare host's: where its agent makes its peers' data),
// with the data copied in (owner and modes kept), and starts it again. The
// directory keeps its path, which the lab's state and the peer's
// configuration name. The mount is recorded in the lab's state, so `lab
// down` unmounts it. Root only: only root mounts.
func LimitDisk(ctx context.Context, dir, name, size string) (Disk, error) {
	if !diskSize.MatchString(size) {
		return Disk{}, fmt.Errorf("--size must be a number of bytes with an optional k, M or G (e.g. 64M, or +8M for that much room beyond what is used), got %q", size)
	}
	if os.Geteuid() != 0 {
		return Disk{}, errors.New("lab disk mounts a tmpfs: run it as root")
	}
	var d Disk
	err := withState(dir, func(st *State, g *pg) error {
		path, p, err := st.diskTarget(name)
		if err != nil {
			return err
		}
		for _, old := range st.Disks {
			if old.Peer == name {
				return fmt.Errorf("%s already has a disk of %s at %s", name, old.Size, old.Path)
			}
		}
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		owner, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no owner", path)
		}
		running := p != nil && alive(postmasterPID(p.DataDir))
		if p != nil {
			g.stop(*p)
			defer func() { st.updatePeer(*p) }()
		}
		if strings.HasPrefix(size, "+") {
			// Measured with the peer stopped: its shutdown checkpoint may
			// have added a WAL segment.
			used, err := usedBytes(path)
			if err != nil {
				return err
			}
			size = fmt.Sprintf("%dk", (used+bytesOf(size)+1<<10-1)>>10)
		}
		aside := path + ".before-disk"
		if err := os.Rename(path, aside); err != nil {
			return err
		}
		// Any failure from here puts the directory back as it was.
		restore := func(cause error) error {
			unix.Unmount(path, unix.MNT_DETACH)
			os.RemoveAll(path)
			if err := os.Rename(aside, path); err != nil {
				return fmt.Errorf("%v; and %s could not be put back from %s: %v", cause, path, aside, err)
			}
			if running {
				if err := g.start(ctx, p); err != nil {
					return fmt.Errorf("%v; and %s did not start again: %v", cause, p.Name, err)
				}
			}
			return cause
		}
		if err := os.Mkdir(path, 0o700); err != nil {
			return restore(err)
		}
		opts := fmt.Sprintf("size=%s,mode=0700,uid=%d,gid=%d", size, owner.Uid, owner.Gid)
		if err := unix.Mount("tmpfs", path, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
			return restore(fmt.Errorf("mount a tmpfs of %s on %s: %w", size, path, err))
		}
		// cp -a keeps owners, modes and times, which PostgreSQL checks
		// (a data directory must be its user's and 0700 or 0750).
		if out, err := exec.CommandContext(ctx, "cp", "-a", aside+"/.", path+"/").CombinedOutput(); err != nil {
			return restore(fmt.Errorf("%s's data does not fit in %s: %s", name, size, strings.TrimSpace(lastLines(string(out), 2))))
		}
		d = Disk{Peer: name, Path: path, Size: size}
		st.Disks = append(st.Disks, d)
		if err := st.save(); err != nil {
			return restore(err)
		}
		if running {
			if err := g.start(ctx, p); err != nil {
				return fmt.Errorf("%s on its %s disk: %w", p.Name, size, err)
			}
		}
		return os.RemoveAll(aside)
	})
	return d, err
}

// diskTarget is where a disk for name goes: a peer's data directory (the
// peer returned, to be stopped around the move), or the directory where a
// spare host's agent makes its peers' data, while it has made none.
func (st *State) diskTarget(name string) (string, *Peer, error) {
	if p, ok := st.findPeer(name); ok {
		return p.DataDir, &p, nil
	}
	for _, a := range st.Agents {
		if a.Name != name {
			continue
		}
		if peers, err := agent.LocalPeers(a.Root); err != nil || len(peers) > 0 {
			return "", nil, fmt.Errorf("spare host %s already runs peers: give one of them a disk instead (%v)", name, err)
		}
		return filepath.Join(a.Root, "data"), nil, nil
	}
	return "", nil, fmt.Errorf("%s is not a peer or spare host of the lab", name)
}

// unmountDisks unmounts the lab's disks; its peers are stopped already.
// A disk still busy is detached (lazily unmounted) so removing the data
// root below cannot leave a mount behind.
func unmountDisks(st *State) {
	for _, d := range st.Disks {
		if !Mounted(d.Path) {
			continue
		}
		if err := unix.Unmount(d.Path, 0); err != nil {
			unix.Unmount(d.Path, unix.MNT_DETACH)
		}
	}
	st.Disks = nil
}

// Mounted reports whether path is a mount point, from this process's
// mount table.
func Mounted(path string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	clean := filepath.Clean(path)
	for _, line := range strings.Split(string(b), "\n") {
		// Field 5 is the mount point, with spaces and such escaped as \040.
		f := strings.Fields(line)
		if len(f) > 4 && unescapeMount(f[4]) == clean {
			return true
		}
	}
	return false
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}
