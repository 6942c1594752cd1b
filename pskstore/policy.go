package pskstore

import (
	"errors"
	"fmt"
)

// Rule is a rule ID of DESIGN.md §3 (R1…R10).
type Rule string

// MinKeyLen is the shortest key accepted, in bytes (R1: 128 bits).
const MinKeyLen = 16

// Identity length limits (R7). On the wire an identity is 1 to 65535 bytes
// (RFC 8446 §4.2.11); the store accepts at most Options.MaxIdentityLen,
// DefaultMaxIdentityLen unless configured, because constrained DTLS stacks
// often cannot send longer identities.
const (
	DefaultMaxIdentityLen = 128
	MaxWireIdentityLen    = 65535
)

// ResumptionPrefix starts every identity reserved for resumption tickets
// (R8, RFC 9257 §6.1.2). Should the gateway ever issue tickets, their
// identities will start with it, and the store refuses external identities
// that do, so the two kinds can never collide. It begins with 0xff, which
// never starts valid UTF-8, so no text identity is affected.
const ResumptionPrefix = "\xffres\x00"

// Severity says whether a finding refuses a key.
type Severity uint8

const (
	// SeverityMust is a violated MUST: the key is refused. It is the zero
	// value, so a PolicyError built without a severity refuses.
	SeverityMust Severity = iota
	// SeverityShould is a violated SHOULD: the key is accepted and the
	// finding reported at provisioning.
	SeverityShould
)

func (s Severity) String() string {
	switch s {
	case SeverityMust:
		return "must"
	case SeverityShould:
		return "should"
	}
	return fmt.Sprintf("Severity(%d)", uint8(s))
}

// PolicyError reports a violation of one RFC 9257 rule. It never carries a key
// and carries the identity only as a keyed tag (R9).
type PolicyError struct {
	Rule     Rule     // e.g. "R1"
	Severity Severity // SeverityMust refuses the key
	Tag      string   // keyed identity tag, may be empty
	Field    string   // the Key field at fault, e.g. "Secret", "Identity", "Modes"; may be empty
	Index    int      // position of the key in the slice checked (CheckKeys, CheckAdd's added keys); 0 for CheckKey
	Msg      string   // what is wrong, lowercase
	// With names the other key of a finding about two keys (R4 the same key
	// material, R7 the same or a look-alike identity); nil otherwise.
	With *KeyRef
	// Err is a sentinel callers test with errors.Is (ErrDuplicateIdentity),
	// or nil.
	Err error
}

func (e *PolicyError) Error() string {
	rule := string(e.Rule)
	if e.Severity != SeverityMust {
		rule += " (" + e.Severity.String() + ")"
	}
	if e.Tag != "" {
		return fmt.Sprintf("policy %s: identity %s: %s", rule, e.Tag, e.Msg)
	}
	return fmt.Sprintf("policy %s: %s", rule, e.Msg)
}

// Unwrap returns Err, so errors.Is(err, ErrDuplicateIdentity) holds for the
// finding of an identity the store already has.
func (e *PolicyError) Unwrap() error { return e.Err }

// Options tunes the policy engine. The zero value is the documented default.
type Options struct {
	// MaxIdentityLen is the longest identity accepted, in bytes (R7).
	// Zero or negative means DefaultMaxIdentityLen; values above
	// MaxWireIdentityLen mean MaxWireIdentityLen.
	MaxIdentityLen int
	// Tagger tags identities in findings (R9); nil means a process-wide
	// random tagger.
	Tagger *Tagger
	// Fingerprinter compares key material in CheckKeys (R4); nil means a
	// fresh random one per call.
	Fingerprinter *Fingerprinter
}

func (o Options) maxIdentityLen() int {
	switch {
	case o.MaxIdentityLen <= 0:
		return DefaultMaxIdentityLen
	case o.MaxIdentityLen > MaxWireIdentityLen:
		return MaxWireIdentityLen
	}
	return o.MaxIdentityLen
}

// Findings is the result of the policy engine, in the order found.
type Findings []*PolicyError

// Must returns the findings that refuse a key.
func (f Findings) Must() Findings { return f.filter(SeverityMust) }

// Warnings returns the SHOULD findings, to be reported but not refused.
func (f Findings) Warnings() Findings { return f.filter(SeverityShould) }

func (f Findings) filter(s Severity) Findings {
	var out Findings
	for _, e := range f {
		if e.Severity == s {
			out = append(out, e)
		}
	}
	return out
}

// Err returns nil when no finding refuses the key, the single *PolicyError
// when one does, and an errors.Join of them when several do; errors.As
// finds a *PolicyError in every case.
func (f Findings) Err() error {
	must := f.Must()
	switch len(must) {
	case 0:
		return nil
	case 1:
		return must[0]
	}
	errs := make([]error, len(must))
	for i, e := range must {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// Check applies every MUST rule a single key can be checked against on its
// own, with default Options (see CheckKey), and returns the first violation
// as a *PolicyError, or nil. Store-wide rules (duplicates, R4 shared key
// material) need CheckKeys.
func Check(k Key) error {
	if must := CheckKey(k, Options{}).Must(); len(must) > 0 {
		return must[0]
	}
	return nil
}

// FindingsOf returns every *PolicyError in err's tree (errors.Join,
// wrapping), in order, so a caller can report each refused key.
func FindingsOf(err error) Findings {
	var out Findings
	var walk func(error)
	walk = func(e error) {
		if pe, ok := e.(*PolicyError); ok {
			out = append(out, pe)
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			if e := u.Unwrap(); e != nil {
				walk(e)
			}
		}
	}
	if err != nil {
		walk(err)
	}
	return out
}
