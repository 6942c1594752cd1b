package pskstore

import (
	"crypto/sha256"
	"regexp"
	"strings"
	"sync"
	"testing"
)

var tagPattern = regexp.MustCompile(`^id:[0-9a-f]{16}$`)

// TestTaggerR9 checks that tags are short, stable under one secret, keyed,
// and never contain the identity (R9).
func TestTaggerR9(t *testing.T) {
	a := NewTagger([]byte("secret-a"))
	b := NewTagger([]byte("secret-b"))
	id := []byte("device-0001")
	tag := a.Tag(id)
	if !tagPattern.MatchString(tag) {
		t.Fatalf("tag %q does not match %v", tag, tagPattern)
	}
	if a.Tag(id) != tag {
		t.Error("tag is not stable for one secret")
	}
	if NewTagger([]byte("secret-a")).Tag(id) != tag {
		t.Error("tag depends on more than secret and identity")
	}
	if b.Tag(id) == tag {
		t.Error("tag does not depend on the secret")
	}
	if a.Tag([]byte("device-0002")) == tag {
		t.Error("two identities share a tag")
	}
	if strings.Contains(tag, "device") {
		t.Error("tag contains the identity")
	}
	if NewTagger(nil).Tag(id) == NewTagger(nil).Tag(id) {
		t.Error("two random taggers agree: secret is not random")
	}
	var nilTagger *Tagger
	if got := nilTagger.Tag(id); !tagPattern.MatchString(got) || got != nilTagger.Tag(id) {
		t.Errorf("nil tagger: got %q, want a stable tag", got)
	}
}

func TestTaggerCopiesSecret(t *testing.T) {
	secret := []byte("0123456789")
	tg := NewTagger(secret)
	before := tg.Tag([]byte("x"))
	secret[0] = 'X'
	if tg.Tag([]byte("x")) != before {
		t.Error("tagger keeps a reference to the caller's secret")
	}
}

func TestTaggerConcurrent(t *testing.T) {
	tg := NewTagger(nil)
	want := tg.Tag([]byte("device"))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if got := tg.Tag([]byte("device")); got != want {
					t.Errorf("concurrent tag %q, want %q", got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestFingerprintR4 checks that fingerprints are keyed per store and are not
// a bare hash of the key (R4: never compare plaintext keys or bare hashes).
func TestFingerprintR4(t *testing.T) {
	key := Secret("\x8a\x13\x55\xe0\x91\x07\xc4\x2b\x6d\xf8\x39\xae\x02\x77\xb5\x4c")
	f1 := NewFingerprinter([]byte("store-1"))
	f2 := NewFingerprinter([]byte("store-2"))
	if f1.Fingerprint(key) != f1.Fingerprint(append(Secret(nil), key...)) {
		t.Error("same key, different fingerprints under one secret")
	}
	if f1.Fingerprint(key) == f2.Fingerprint(key) {
		t.Error("fingerprint does not depend on the store secret")
	}
	if f1.Fingerprint(key) == sha256.Sum256(key) {
		t.Error("fingerprint is a bare hash of the key")
	}
	other := append(Secret(nil), key...)
	other[15] ^= 1
	if f1.Fingerprint(key) == f1.Fingerprint(other) {
		t.Error("different keys share a fingerprint")
	}
	tg := NewTagger([]byte("store-1"))
	fp := f1.Fingerprint(key)
	if strings.HasSuffix(tg.Tag(key), string(fp[:8])) {
		t.Error("fingerprint and tag are not domain-separated")
	}
}
