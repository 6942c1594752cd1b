package pskstore

import (
	"crypto"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// CheckKey applies the rules one key can be checked against on its own. The
// key is checked as Normalize would complete it. MUST findings:
//
//   - R7: identity of 1..opts.MaxIdentityLen bytes;
//   - R8: identity not starting with ResumptionPrefix;
//   - R1: key material of at least MinKeyLen bytes;
//   - R2: key material passes LowEntropy, unless AllowLowEntropy; a key
//     with AllowLowEntropy never allows psk_ke (ModeKE) nor DTLS 1.2 plain
//     PSK (Legacy), whether or not it trips the screen (RFC 9257 §4.2);
//   - R3: hash SHA-256 or SHA-384, known versions and modes;
//   - R4: a Group key carries an ImportContext (RFC 9257 §6 item 2).
//
// SHOULD findings (R7, RFC 9257 §6.1.1): identity not valid UTF-8, or not
// NFC-normalized, unless the key is imported (an RFC 9258 ImportedIdentity
// is binary by design); R3: Legacy set without DTLS 1.2 allowed, which has no
// effect. The binding of one identity to one server identity (R4) holds by
// construction: a Key has a single ServerName.
func CheckKey(k Key, opts Options) Findings {
	k.Normalize()
	var f Findings
	tag := opts.Tagger.Tag(k.Identity)
	add := func(rule Rule, sev Severity, field, format string, args ...any) {
		f = append(f, &PolicyError{Rule: rule, Severity: sev, Tag: tag, Field: field, Msg: fmt.Sprintf(format, args...)})
	}

	if n, limit := len(k.Identity), opts.maxIdentityLen(); n == 0 || n > limit {
		add("R7", SeverityMust, "Identity", "identity is %d bytes, allowed 1..%d", n, limit)
	}
	if strings.HasPrefix(string(k.Identity), ResumptionPrefix) {
		add("R8", SeverityMust, "Identity", "identity starts with the prefix reserved for resumption tickets")
	}
	switch {
	case len(k.ImportContext) > 0:
		// An imported key's identity is a binary ImportedIdentity (RFC 9258
		// §5.1), never text: the text checks below do not apply.
	case !utf8.Valid(k.Identity):
		add("R7", SeverityShould, "Identity", "identity is not valid utf-8")
	case !norm.NFC.IsNormal(k.Identity):
		add("R7", SeverityShould, "Identity", "identity is not nfc-normalized")
	}

	if len(k.Secret) < MinKeyLen {
		add("R1", SeverityMust, "Secret", "key is %d bytes, at least %d (128 bits) required", len(k.Secret), MinKeyLen)
	} else if low, why := LowEntropy(k.Secret); low && !k.AllowLowEntropy {
		add("R2", SeverityMust, "Secret", "low-entropy key (%s); draw keys from a random generator or set allow_low_entropy", why)
	}
	if k.AllowLowEntropy && k.Modes.Has(ModeKE) {
		add("R2", SeverityMust, "Modes", "psk_ke is not allowed for a key that may have low entropy")
	}
	if k.AllowLowEntropy && k.Legacy {
		add("R2", SeverityMust, "Legacy", "dtls 1.2 plain psk is not allowed for a key that may have low entropy")
	}

	if k.Hash != crypto.SHA256 && k.Hash != crypto.SHA384 {
		add("R3", SeverityMust, "Hash", "hash %v not allowed, use sha256 or sha384", k.Hash)
	}
	if k.Versions&^(DTLS12|DTLS13) != 0 {
		add("R3", SeverityMust, "Versions", "unknown dtls version in set")
	}
	if k.Modes&^(ModeDHE|ModeKE) != 0 {
		add("R3", SeverityMust, "Modes", "unknown psk mode in set")
	}
	if k.Legacy && !k.Versions.Has(DTLS12) {
		add("R3", SeverityShould, "Legacy", "legacy has no effect without dtls 1.2")
	}

	if k.Group && len(k.ImportContext) == 0 {
		add("R4", SeverityMust, "Group", "group key without an importer context naming client and server")
	}
	return f
}
