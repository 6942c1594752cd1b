//go:build !unix

package main

// lockDir does nothing where flock is missing; psk commands still refuse to
// write a key file that changed since they read it.
func lockDir(string) (func(), error) { return func() {}, nil }
