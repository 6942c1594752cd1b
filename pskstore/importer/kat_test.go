package importer

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
	"unicode/utf8"
)

// katVector is one entry of testdata/kat.json, produced by testdata/kat.py,
// an independent Python implementation of RFC 9258 §5.1 (regenerate with
// `python3 pskstore/importer/testdata/kat.py > pskstore/importer/testdata/kat.json`).
type katVector struct {
	Name             string `json:"name"`
	EPSK             string `json:"epsk"`
	EPSKHash         string `json:"epsk_hash"`
	ExternalIdentity string `json:"external_identity"`
	Context          string `json:"context"`
	TargetProtocol   uint16 `json:"target_protocol"`
	TargetKDF        uint16 `json:"target_kdf"`
	LabelPrefix      string `json:"label_prefix"`
	ImportedIdentity string `json:"imported_identity"`
	EPSKX            string `json:"epskx"`
	IPSKX            string `json:"ipskx"`
}

func loadKAT(tb testing.TB) []katVector {
	tb.Helper()
	data, err := os.ReadFile("testdata/kat.json")
	if err != nil {
		tb.Fatal(err)
	}
	var f struct {
		Generator string      `json:"generator"`
		Vectors   []katVector `json:"vectors"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		tb.Fatalf("testdata/kat.json: %v", err)
	}
	if len(f.Vectors) == 0 {
		tb.Fatal("testdata/kat.json has no vectors")
	}
	return f.Vectors
}

func unhex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func katHash(tb testing.TB, name string) crypto.Hash {
	tb.Helper()
	switch name {
	case "sha256":
		return crypto.SHA256
	case "sha384":
		return crypto.SHA384
	}
	tb.Fatalf("unknown hash %q", name)
	return 0
}

// TestKAT checks encoding and derivation against the independent vectors (R6).
func TestKAT(t *testing.T) {
	for _, v := range loadKAT(t) {
		t.Run("R6/"+v.Name, func(t *testing.T) {
			id := ImportedIdentity{
				ExternalIdentity: unhex(t, v.ExternalIdentity),
				Context:          unhex(t, v.Context),
				TargetProtocol:   v.TargetProtocol,
				TargetKDF:        v.TargetKDF,
			}
			enc, err := id.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if want := unhex(t, v.ImportedIdentity); !bytes.Equal(enc, want) {
				t.Fatalf("Marshal = %x\nwant      %x", enc, want)
			}
			parsed, err := ParseImportedIdentity(enc)
			if err != nil {
				t.Fatal(err)
			}
			if !equalIdentity(parsed, id) {
				t.Fatalf("Parse = %+v, want %+v", parsed, id)
			}
			prefix, err := labelPrefix(v.TargetProtocol)
			if err != nil || prefix != v.LabelPrefix {
				t.Fatalf("labelPrefix = %q, %v; want %q", prefix, err, v.LabelPrefix)
			}
			h := katHash(t, v.EPSKHash)
			epskx, err := extract(h, unhex(t, v.EPSK))
			if err != nil {
				t.Fatal(err)
			}
			if want := unhex(t, v.EPSKX); !bytes.Equal(epskx, want) {
				t.Fatalf("epskx = %x\nwant    %x", epskx, want)
			}
			ipskx, err := Derive(unhex(t, v.EPSK), h, id)
			if err != nil {
				t.Fatal(err)
			}
			if want := unhex(t, v.IPSKX); !bytes.Equal(ipskx, want) {
				t.Fatalf("ipskx = %x\nwant    %x", ipskx, want)
			}
		})
	}
}

// TestKATCoverage keeps kat.json from silently shrinking: the cases the
// brief of R6 asks for must all be present.
func TestKATCoverage(t *testing.T) {
	have := map[string]bool{}
	vs := loadKAT(t)
	for _, v := range vs {
		ext, ctx := unhex(t, v.ExternalIdentity), unhex(t, v.Context)
		ipskx := unhex(t, v.IPSKX)
		have["protocol-dtls13"] = have["protocol-dtls13"] || v.TargetProtocol == ProtocolDTLS13
		have["protocol-tls13"] = have["protocol-tls13"] || v.TargetProtocol == ProtocolTLS13
		have["sha256->sha256"] = have["sha256->sha256"] || v.EPSKHash == "sha256" && v.TargetKDF == HKDFSHA256
		have["sha256->sha384 L=48"] = have["sha256->sha384 L=48"] || v.EPSKHash == "sha256" && v.TargetKDF == HKDFSHA384 && len(ipskx) == 48
		have["sha384->sha256 L=32"] = have["sha384->sha256 L=32"] || v.EPSKHash == "sha384" && v.TargetKDF == HKDFSHA256 && len(ipskx) == 32
		have["empty context"] = have["empty context"] || len(ctx) == 0
		have["long context"] = have["long context"] || len(ctx) > 255
		have["binary identity"] = have["binary identity"] || !utf8.Valid(ext)
	}
	for _, c := range []string{"protocol-dtls13", "protocol-tls13", "sha256->sha256", "sha256->sha384 L=48",
		"sha384->sha256 L=32", "empty context", "long context", "binary identity"} {
		if !have[c] {
			t.Errorf("testdata/kat.json has no vector for %s", c)
		}
	}
}

// TestExpandLabelRFC8448 checks HKDF-Extract and HKDF-Expand-Label with the
// "tls13 " prefix against published values, RFC 8448 §3 (early secret and
// "derive secret for handshake").
func TestExpandLabelRFC8448(t *testing.T) {
	early, err := extract(crypto.SHA256, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	if want := unhex(t, "33ad0a1c607ec03b09e6cd9893680ce210adf300aa1f2660e1b22e10f170f92a"); !bytes.Equal(early, want) {
		t.Fatalf("early secret = %x, want %x", early, want)
	}
	empty := sha256.Sum256(nil)
	derived, err := expandLabel(crypto.SHA256, early, "tls13 ", "derived", empty[:], 32)
	if err != nil {
		t.Fatal(err)
	}
	if want := unhex(t, "6f2615a108c702c5678f54fc9dbab69716c076189c48250cebeac3576c3611ba"); !bytes.Equal(derived, want) {
		t.Fatalf("derived = %x, want %x", derived, want)
	}
}

func equalIdentity(a, b ImportedIdentity) bool {
	return bytes.Equal(a.ExternalIdentity, b.ExternalIdentity) && bytes.Equal(a.Context, b.Context) &&
		a.TargetProtocol == b.TargetProtocol && a.TargetKDF == b.TargetKDF
}
