//go:build unix

package file

import (
	"os"
	"syscall"
)

// fileGroup returns the group owning the file.
func fileGroup(fi os.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Gid), true
}
