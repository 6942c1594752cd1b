//go:build unix

package file

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// lockTimeout is how long a write waits for another process to finish
// writing the same key file.
const lockTimeout = 10 * time.Second

// lockDir takes an exclusive advisory lock (flock) on dir, the directory of
// the key file, so that two writers (two psk commands) never both read the
// file, change it and write it back, losing one change. Locking the
// directory leaves no lock file behind for a file watcher to see. flock has
// no timeout of its own: it is tried every 50 ms until lockTimeout.
func lockDir(dir string) (unlock func(), err error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("locking the key file's directory: %w", err)
	}
	deadline := time.Now().Add(lockTimeout)
	for {
		err = syscall.Flock(int(d.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(d.Fd()), syscall.LOCK_UN)
				d.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			d.Close()
			return nil, fmt.Errorf("locking %s: %w (is another gateway psk command writing?)", dir, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
