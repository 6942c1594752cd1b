//go:build !unix

package file

import "os"

// fileGroup is unknown here: any group permission is reported.
func fileGroup(os.FileInfo) (int, bool) { return 0, false }
