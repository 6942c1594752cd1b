package sealed

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
)

// maxKEKFile bounds what ReadKEKFile reads: a KEK file holds 32 raw bytes or
// a line of text.
const maxKEKFile = 4096

// ParseKEK decodes KEK material written as text: 64 hex digits, or base64
// (standard or URL alphabet, padded or not) of 32 bytes. Surrounding white
// space, such as a trailing newline, is ignored. Errors never repeat the
// text.
func ParseKEK(text []byte) (*KEK, error) {
	s := strings.TrimSpace(string(text))
	if b, ok := decodeText(s); ok {
		return NewKEK(b)
	}
	return nil, fmt.Errorf("%w: want 64 hex digits or base64 of %d bytes, got %d characters", ErrKEK, KEKSize, len(s))
}

func decodeText(s string) ([]byte, bool) {
	if len(s) == 2*KEKSize {
		if b, err := hex.DecodeString(s); err == nil {
			return b, true
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.Strict().DecodeString(s); err == nil && len(b) == KEKSize {
			return b, true
		}
	}
	return nil, false
}

// ReadKEKFile reads a KEK from a file holding exactly 32 raw bytes, or the
// text forms of ParseKEK (`openssl rand -hex 32 > kek`). A 32-byte file is
// always read as raw bytes: no text form of a 32-byte KEK is 32 characters
// long. Errors name the file, never its content.
func ReadKEKFile(path string) (*KEK, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKEK, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKEKFile+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKEK, path, err)
	}
	var k *KEK
	switch {
	case len(data) > maxKEKFile:
		err = fmt.Errorf("%w: larger than %d bytes", ErrKEK, maxKEKFile)
	case len(data) == KEKSize:
		k, err = NewKEK(data)
	default:
		k, err = ParseKEK(data)
	}
	if err != nil {
		return nil, fmt.Errorf("kek file %s: %w", path, err)
	}
	return k, nil
}

// KEKFromEnv reads a KEK from the environment variable name, in a text form
// of ParseKEK. An unset or empty variable is an error naming it. Errors never
// show the value.
func KEKFromEnv(name string) (*KEK, error) {
	v, ok := os.LookupEnv(name)
	if !ok || v == "" {
		return nil, fmt.Errorf("kek environment variable %s: %w: not set", name, ErrKEK)
	}
	k, err := ParseKEK([]byte(v))
	if err != nil {
		return nil, fmt.Errorf("kek environment variable %s: %w", name, err)
	}
	return k, nil
}
