//go:build !unix

package file

// lockDir does nothing where flock is missing; writes still re-read the
// file first.
func lockDir(string) (func(), error) { return func() {}, nil }
