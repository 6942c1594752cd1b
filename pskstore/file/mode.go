package file

import (
	"errors"
	"fmt"
	"os"
)

// ErrReadable is wrapped by CheckMode's error for a file other users may
// read.
var ErrReadable = errors.New("readable by other users")

// CheckMode reports whether a file holding secrets (the key file, a
// key-encryption key file) can be read by users other than the process's
// own: a file readable by others, or by a group the process is not in, is
// an error wrapping ErrReadable that says which and what mode to use. A
// file readable by the process's own group passes: on Kubernetes the
// kubelet makes a Secret volume's 0400 files 0440, owned by the pod's
// fsGroup, which is the gateway's group. A file that does not exist
// passes (Open reports it).
func CheckMode(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return nil
	}
	mode := fi.Mode().Perm()
	switch gid, ok := fileGroup(fi); {
	case mode&0o007 != 0:
		return fmt.Errorf("mode %04o: %w: others may read it; use 0600", mode, ErrReadable)
	case mode&0o070 != 0 && !(ok && ownGroup(gid)):
		return fmt.Errorf("mode %04o: %w: its group may read it and the gateway is not in that group; use 0600", mode, ErrReadable)
	}
	return nil
}

// ownGroup reports whether gid is the process's group or one of its
// supplementary groups.
func ownGroup(gid int) bool {
	if gid == os.Getgid() {
		return true
	}
	groups, _ := os.Getgroups()
	for _, g := range groups {
		if g == gid {
			return true
		}
	}
	return false
}
