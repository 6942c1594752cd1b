package record

import (
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
// parses it. It runs several times per hand-over, so it allocates only the
// secret it returns (a bufio.Scanner and bytes.Fields per call were 1.5% of
// a handshake's CPU, bench/BENCHMARKS.md).
func keyLogSecret(log []byte, label string, clientRandom []byte) ([]byte, error) {
	var random [64]byte // decoded client random; randoms are 32 bytes
	for len(log) > 0 {
		var line []byte
		line, log, _ = bytes.Cut(log, []byte{'\n'})
		rest, ok := bytes.CutPrefix(bytes.TrimSpace(line), []byte(label))
		if !ok || len(rest) == 0 || (rest[0] != ' ' && rest[0] != '\t') {
			continue
		}
		f1, f2, ok := bytes.Cut(bytes.TrimSpace(rest), []byte{' '})
		f2 = bytes.TrimSpace(f2)
		if !ok || len(f1) > 2*len(random) || len(f2) == 0 || bytes.ContainsAny(f2, " \t") {
			continue
		}
		n, err := hex.Decode(random[:], f1)
		if err != nil || !bytes.Equal(random[:n], clientRandom) {
			continue
		}
		secret := make([]byte, hex.DecodedLen(len(f2)))
		if _, err := hex.Decode(secret, f2); err != nil || len(secret) == 0 {
			return nil, fmt.Errorf("%w: key log line %s: bad secret", ErrParams, label)
		}
		return secret, nil
	}
	return nil, nil
}
