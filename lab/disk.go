package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Disk is a tmpfs of a fixed size mounted over a peer's data directory:
// the "destination's disk fills up" fault.
type Disk struct {
	Peer string `json:"peer"`
	Path string `json:"path"`
	Size string `json:"size"` // as mount's size= option takes it: 64M, 1G
}

var diskSize = regexp.MustCompile(`^[1-9][0-9]*[kKmMgG]?$`)

// LimitDisk gives a peer a disk of size: it stops the peer, mounts a tmpfs
// of that size where its data directory is, with the data copied in
// (owner and modes kept), and starts it again. The data directory keeps
// its path, which the lab's state and the peer's configuration name. The
// mount is recorded in the lab's state, so `lab down` unmounts it. Root
// only: only root mounts.
func LimitDisk(ctx context.Context, dir, peer, size string) (Disk, error) {
	if !diskSize.MatchString(size) {
		return Disk{}, fmt.Errorf("--size must be a number of bytes with an optional k, M or G (e.g. 64M), got %q", size)
	}
	if os.Geteuid() != 0 {
		return Disk{}, errors.New("lab disk mounts a tmpfs: run it as root")
	}
	var d Disk
	err := withState(dir, func(st *State, g *pg) error {
		found, ok := st.findPeer(peer)
		if !ok {
			return fmt.Errorf("peer %s is not in the lab", peer)
		}
		p := &found
		defer func() { st.updatePeer(*p) }()
		for _, old := range st.Disks {
			if old.Peer == peer {
				return fmt.Errorf("peer %s already has a disk of %s at %s", peer, old.Size, old.Path)
			}
		}
		fi, err := os.Stat(p.DataDir)
		if err != nil {
			return err
		}
		st2, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no owner", p.DataDir)
		}
		running := alive(postmasterPID(p.DataDir))
		g.stop(*p)
		aside := p.DataDir + ".before-disk"
		if err := os.Rename(p.DataDir, aside); err != nil {
			return err
		}
		// Any failure from here puts the data directory back as it was.
		restore := func(cause error) error {
			unix.Unmount(p.DataDir, unix.MNT_DETACH)
			os.RemoveAll(p.DataDir)
			if err := os.Rename(aside, p.DataDir); err != nil {
				return fmt.Errorf("%v; and the data directory could not be put back from %s: %v", cause, aside, err)
			}
			if running {
				if err := g.start(ctx, p); err != nil {
					return fmt.Errorf("%v; and %s did not start again: %v", cause, p.Name, err)
				}
			}
			return cause
		}
		if err := os.Mkdir(p.DataDir, 0o700); err != nil {
			return restore(err)
		}
		opts := fmt.Sprintf("size=%s,mode=0700,uid=%d,gid=%d", size, st2.Uid, st2.Gid)
		if err := unix.Mount("tmpfs", p.DataDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
			return restore(fmt.Errorf("mount a tmpfs of %s on %s: %w", size, p.DataDir, err))
		}
		// cp -a keeps owners, modes and times, which PostgreSQL checks
		// (a data directory must be its user's and 0700 or 0750).
		if out, err := exec.CommandContext(ctx, "cp", "-a", aside+"/.", p.DataDir+"/").CombinedOutput(); err != nil {
			return restore(fmt.Errorf("%s's data does not fit in %s: %s", p.Name, size, strings.TrimSpace(lastLines(string(out), 2))))
		}
		d = Disk{Peer: p.Name, Path: p.DataDir, Size: size}
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
