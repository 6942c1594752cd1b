package pskstore

import (
	"fmt"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// CheckKeys checks a whole key set, as a backend loads it: every key with
// CheckKey (each finding's Index is the key's position in keys), then the
// store-wide rules, reported on the later of two conflicting keys:
//
//   - R7 MUST: no identity appears twice (identities compared byte by byte);
//   - R4 MUST: no key material appears under two identities, compared by
//     keyed fingerprint (opts.Fingerprinter), never in plaintext;
//   - R7 SHOULD: no two identities are equal after NFKC normalization and
//     case folding (RFC 9257 §6.1.1), e.g. "Device" and "device": both are
//     accepted, since identities are compared byte by byte, but an operator
//     may have meant one.
//
// One identity, one server identity (R4) holds by construction: a Key has a
// single ServerName.
func CheckKeys(keys []Key, opts Options) Findings {
	fp := opts.Fingerprinter
	if fp == nil {
		fp = NewFingerprinter(nil)
	}
	var f Findings
	byIdentity := make(map[string]int, len(keys))
	byPrint := make(map[[32]byte]int, len(keys))
	byFold := make(map[string]int, len(keys))
	for i, k := range keys {
		for _, e := range CheckKey(k, opts) {
			e.Index = i
			f = append(f, e)
		}
		tag := opts.Tagger.Tag(k.Identity)
		add := func(rule Rule, sev Severity, field string, msg string) {
			f = append(f, &PolicyError{Rule: rule, Severity: sev, Tag: tag, Field: field, Index: i, Msg: msg})
		}
		other := func(j int) string { return fmt.Sprintf("keys[%d] (identity %s)", j, opts.Tagger.Tag(keys[j].Identity)) }
		if j, dup := byIdentity[string(k.Identity)]; dup {
			add("R7", SeverityMust, "Identity", fmt.Sprintf("identity already used by keys[%d]", j))
			continue // a folding collision would only repeat this finding
		}
		byIdentity[string(k.Identity)] = i
		if len(k.Secret) > 0 {
			p := fp.Fingerprint(k.Secret)
			if j, dup := byPrint[p]; dup {
				add("R4", SeverityMust, "Secret", "same key material as "+other(j))
			} else {
				byPrint[p] = i
			}
		}
		if folded, ok := FoldIdentity(k.Identity); ok {
			if j, dup := byFold[folded]; dup {
				add("R7", SeverityShould, "Identity", "identity equal under nfkc and case folding to "+other(j))
			} else {
				byFold[folded] = i
			}
		}
	}
	return f
}

// FoldIdentity returns identity under NFKC normalization and Unicode case
// folding, the form in which two identities "look alike" (R7), and false when
// identity is not valid UTF-8. It is for reports only: the store compares
// identities byte by byte.
func FoldIdentity(identity []byte) (string, bool) {
	if !utf8.Valid(identity) {
		return "", false
	}
	folded := cases.Fold().String(norm.NFKC.String(string(identity)))
	return norm.NFKC.String(folded), true
}
