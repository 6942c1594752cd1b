package main

import (
	"io"
)

func demoCmd(args []string, stdout, stderr io.Writer) error {
	return usageError{"demo: not yet"}
}
