package pskstore

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// ErrDuplicateIdentity is wrapped by the R7 finding of CheckAdd for a key
// whose identity the store already holds: adding never replaces a key
// (Rotator does that, Deleter and Putter do a revocation and a new key).
var ErrDuplicateIdentity = errors.New("identity already in the store")

// InStore is the KeyRef.Index of a key the store already holds.
const InStore = -1

// KeyRef names the second key of a finding about two keys (an identity or
// key material given twice, look-alike identities) without its identity
// (R9).
type KeyRef struct {
	// Index is the other key's position among the keys checked (the added
	// keys of CheckAdd), or InStore for a key the store already holds.
	Index int
	// Tag is the other key's keyed identity tag.
	Tag string
}

// CheckKeys checks a whole key set, as a backend loads it: CheckAdd with no
// stored keys.
func CheckKeys(keys []Key, opts Options) Findings { return CheckAdd(nil, keys, opts) }

// CheckAdd is the policy check of a write: it checks the keys added to a
// store that holds stored, and reports findings on the added keys only
// (each finding's Index is the key's position in added; the stored keys'
// own findings are an audit's business):
//
//   - every added key with CheckKey;
//   - R7 MUST: no identity twice, neither among the added keys nor one the
//     store holds (that finding wraps ErrDuplicateIdentity); identities
//     are compared byte by byte;
//   - R4 MUST: no key material under two identities, compared by keyed
//     fingerprint (opts.Fingerprinter), never in plaintext;
//   - R7 SHOULD: no two identities equal after NFKC normalization and case
//     folding (RFC 9257 §6.1.1), e.g. "Device" and "device": both are
//     accepted, since identities are compared byte by byte, but an operator
//     may have meant one.
//
// A finding about two keys names the other in With. Between two added keys
// the finding goes to the later one. One identity, one server identity (R4)
// holds by construction: a Key has a single ServerName. Every backend runs
// its writes through CheckAdd; a store that cannot hold all its keys in
// memory (PostgreSQL) passes no stored keys and finds the clashes with them
// itself, reporting them with the findings of DuplicateIdentity and
// SharedKey.
func CheckAdd(stored, added []Key, opts Options) Findings {
	fp := opts.Fingerprinter
	if fp == nil {
		fp = NewFingerprinter(nil)
	}
	f := checkEach(added, opts)
	tag := opts.Tagger.Tag
	byIdentity := make(map[string]KeyRef, len(stored)+len(added))
	byPrint := make(map[[32]byte]KeyRef, len(stored)+len(added))
	byFold := make(map[string]KeyRef, len(stored)+len(added))
	// remember records k under ref; the first key of an identity, a key
	// material or a folded identity is the one later keys are named after.
	remember := func(k Key, ref KeyRef, print *[32]byte, folded string, foldOK bool) {
		if _, dup := byIdentity[string(k.Identity)]; !dup {
			byIdentity[string(k.Identity)] = ref
		}
		if _, dup := byPrint[derefOr(print)]; print != nil && !dup {
			byPrint[*print] = ref
		}
		if _, dup := byFold[folded]; foldOK && !dup {
			byFold[folded] = ref
		}
	}
	printOf := func(k Key) *[32]byte {
		if len(k.Secret) == 0 {
			return nil
		}
		p := fp.Fingerprint(k.Secret)
		return &p
	}
	for _, k := range stored {
		folded, ok := FoldIdentity(k.Identity)
		remember(k, KeyRef{Index: InStore, Tag: tag(k.Identity)}, printOf(k), folded, ok)
	}
	for i, k := range added {
		t := tag(k.Identity)
		if other, dup := byIdentity[string(k.Identity)]; dup {
			if other.Index == InStore {
				f = append(f, DuplicateIdentity(t, i))
			} else {
				f = append(f, &PolicyError{Rule: "R7", Severity: SeverityMust, Tag: t, Field: "Identity", Index: i, With: &other,
					Msg: fmt.Sprintf("identity already used by keys[%d]", other.Index)})
			}
			continue // a shared-key or folding finding would only repeat this one
		}
		print := printOf(k)
		if other, dup := byPrint[derefOr(print)]; print != nil && dup {
			f = append(f, SharedKey(t, i, other))
		}
		folded, foldOK := FoldIdentity(k.Identity)
		if other, dup := byFold[folded]; foldOK && dup {
			f = append(f, &PolicyError{Rule: "R7", Severity: SeverityShould, Tag: t, Field: "Identity", Index: i, With: &other,
				Msg: "identity equal under nfkc and case folding to " + other.describe()})
		}
		remember(k, KeyRef{Index: i, Tag: t}, print, folded, foldOK)
	}
	return f
}

func derefOr(p *[32]byte) [32]byte {
	if p == nil {
		return [32]byte{}
	}
	return *p
}

// DuplicateIdentity is the R7 finding of the added key at index whose
// identity (tagged tag) the store already holds; it wraps
// ErrDuplicateIdentity.
func DuplicateIdentity(tag string, index int) *PolicyError {
	return &PolicyError{Rule: "R7", Severity: SeverityMust, Tag: tag, Field: "Identity", Index: index,
		With: &KeyRef{Index: InStore, Tag: tag}, Err: ErrDuplicateIdentity,
		Msg: "identity already in the store (rotate replaces its key, revoke removes it)"}
}

// SharedKey is the R4 finding of the added key at index (tagged tag) whose
// key material is also the key of other.
func SharedKey(tag string, index int, other KeyRef) *PolicyError {
	return &PolicyError{Rule: "R4", Severity: SeverityMust, Tag: tag, Field: "Secret", Index: index, With: &other,
		Msg: "same key material as " + other.describe()}
}

func (r KeyRef) describe() string {
	if r.Index == InStore {
		return "identity " + r.Tag + " in the store"
	}
	return fmt.Sprintf("keys[%d] (identity %s)", r.Index, r.Tag)
}

// checkEach runs CheckKey on every key, each finding's Index set. The
// entropy screen (R2) dominates, so a large batch (a bulk import) is
// checked on every CPU; findings stay in key order.
func checkEach(keys []Key, opts Options) Findings {
	workers := min(runtime.GOMAXPROCS(0), max(1, len(keys)/1000))
	chunk := (len(keys) + workers - 1) / workers
	found := make([]Findings, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w * chunk; i < min(len(keys), (w+1)*chunk); i++ {
				for _, e := range CheckKey(keys[i], opts) {
					e.Index = i
					found[w] = append(found[w], e)
				}
			}
		})
	}
	wg.Wait()
	var f Findings
	for _, fw := range found {
		f = append(f, fw...)
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
