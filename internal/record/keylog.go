package record

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
)

// keyLogSecret returns the secret of the NSS key log line with the given
// label for the given client random (the format pion's WithKeyLogWriter
// writes: "LABEL <client_random hex> <secret hex>"), or nil when the log has
// no such line. Lines for other client randoms are skipped, so a log shared
// by several Conns works; a matching line that does not parse is an error.
// Written by hand: the format is three space-separated fields and no library
// parses it.
func keyLogSecret(log []byte, label string, clientRandom []byte) ([]byte, error) {
	sc := bufio.NewScanner(bytes.NewReader(log))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) != 3 || string(f[0]) != label {
			continue
		}
		r, err := hex.DecodeString(string(f[1]))
		if err != nil || !bytes.Equal(r, clientRandom) {
			continue
		}
		s, err := hex.DecodeString(string(f[2]))
		if err != nil || len(s) == 0 {
			return nil, fmt.Errorf("%w: key log line %s: bad secret", ErrParams, label)
		}
		return s, nil
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: key log: %v", ErrParams, err)
	}
	return nil, nil
}
