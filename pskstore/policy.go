package pskstore

import (
	"crypto"
	"fmt"
)

// Rule is a rule ID of DESIGN.md §3 (R1…R10).
type Rule string

// MinKeyLen is the shortest key accepted, in bytes (R1: 128 bits).
const MinKeyLen = 16

// PolicyError reports a violation of one RFC 9257 rule. It never carries a key
// and carries the identity only as a keyed tag (R9).
type PolicyError struct {
	Rule Rule   // e.g. "R1"
	Tag  string // keyed identity tag, may be empty
	Msg  string // what is wrong, lowercase
}

func (e *PolicyError) Error() string {
	if e.Tag != "" {
		return fmt.Sprintf("policy %s: identity %s: %s", e.Rule, e.Tag, e.Msg)
	}
	return fmt.Sprintf("policy %s: %s", e.Rule, e.Msg)
}

// Check applies the rules a single key can be checked against on its own:
// R1 (length), the hash binding and coherent version/mode sets. Store-wide
// rules (R4 duplicates, R7 collisions) are checked by the backends.
func Check(k Key) error {
	if len(k.Identity) == 0 || len(k.Identity) > 65535 {
		return &PolicyError{Rule: "R7", Msg: fmt.Sprintf("identity length %d outside 1..65535 bytes", len(k.Identity))}
	}
	if len(k.Secret) < MinKeyLen {
		return &PolicyError{Rule: "R1", Msg: fmt.Sprintf("key is %d bytes, at least %d (128 bits) required", len(k.Secret), MinKeyLen)}
	}
	if k.Hash != 0 && k.Hash != crypto.SHA256 && k.Hash != crypto.SHA384 {
		return &PolicyError{Rule: "R3", Msg: fmt.Sprintf("hash %v not allowed, use sha256 or sha384", k.Hash)}
	}
	if k.Versions&^(DTLS12|DTLS13) != 0 {
		return &PolicyError{Rule: "R3", Msg: "unknown DTLS version in set"}
	}
	if k.Modes&^(ModeDHE|ModeKE) != 0 {
		return &PolicyError{Rule: "R3", Msg: "unknown PSK mode in set"}
	}
	return nil
}
