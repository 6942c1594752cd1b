package file

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors wrapped by *ParseError, for callers that branch on the
// kind of problem.
var (
	// ErrSyntax: the file is not well-formed YAML.
	ErrSyntax = errors.New("invalid yaml")
	// ErrSchema: the YAML does not follow the key file schema (unknown or
	// repeated field, wrong type, bad encoding, missing field).
	ErrSchema = errors.New("invalid key file")
	// ErrPlaintextKey: a plaintext key (key_hex, key_base64) in a store with
	// a KEK, without WithInsecurePlaintextKeys.
	ErrPlaintextKey = errors.New("plaintext key in a store with a key-encryption key")
	// ErrNoKEK: a sealed key (key_sealed) in a store without a KEK.
	ErrNoKEK = errors.New("sealed key and no key-encryption key configured")
)

// ParseError is one problem in a key file. It names the place (path, line,
// entry index, field) and what is wrong, and never carries key material or a
// raw identity: policy findings name the identity by its keyed tag (R9).
type ParseError struct {
	Path  string // file name; empty for Parse
	Line  int    // 1-based line; 0 when unknown
	Entry int    // index in the keys list; -1 for problems outside an entry
	Field string // YAML field, e.g. "key_hex"; empty for a whole entry or file
	Err   error  // what is wrong, e.g. a *pskstore.PolicyError
}

// Error reads like a compiler message:
// "keys.yaml:12: keys[3].key_hex: policy R1: identity id:…: key is 15 bytes…",
// or "line 12: keys[3].key_hex: …" without a path.
func (e *ParseError) Error() string {
	var b strings.Builder
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteByte(':')
	}
	switch {
	case e.Line > 0 && e.Path != "":
		fmt.Fprintf(&b, "%d:", e.Line)
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d:", e.Line)
	}
	if b.Len() > 0 {
		b.WriteByte(' ')
	}
	switch {
	case e.Entry >= 0 && e.Field != "":
		fmt.Fprintf(&b, "keys[%d].%s: ", e.Entry, e.Field)
	case e.Entry >= 0:
		fmt.Fprintf(&b, "keys[%d]: ", e.Entry)
	case e.Field != "":
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns the underlying error, so errors.As finds a
// *pskstore.PolicyError and errors.Is finds the sentinels of this package.
func (e *ParseError) Unwrap() error { return e.Err }
