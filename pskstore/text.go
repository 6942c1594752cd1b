package pskstore

import (
	"crypto"
	"errors"
	"fmt"
	"strings"
)

// The text forms of Versions, Modes and Hash are the one spelling of the
// project: the key file, the CSV and YAML exports, the psk CLI's flags and
// tables and the PostgreSQL rows all use them, through MarshalText and
// UnmarshalText (so encoding/json and yaml.v3 use them too).
//
//	Versions  "1.3", "1.2"              a set: names joined by ",", newest first
//	Modes     "psk_dhe_ke", "psk_ke"    a set: names joined by ","
//	Hash      "sha256", "sha384"
//
// The zero value of each is written as the empty string ("" for Hash is
// SHA-256, its default) and read back from it, so an empty CSV cell or an
// omitted field means the documented default (Key.Normalize).

// ErrUnknownName is wrapped by the UnmarshalText errors of Versions, Modes
// and Hash. The messages list the valid names and never repeat the text
// read, which may be a key pasted into the wrong field.
var ErrUnknownName = errors.New("unknown name")

var versionNames = []struct {
	v    Versions
	name string
}{{DTLS13, "1.3"}, {DTLS12, "1.2"}}

var modeNames = []struct {
	m    Modes
	name string
}{{ModeDHE, "psk_dhe_ke"}, {ModeKE, "psk_ke"}}

// Names returns the name of every version in s, newest first.
func (s Versions) Names() []string {
	var out []string
	for _, n := range versionNames {
		if s.Has(n.v) {
			out = append(out, n.name)
		}
	}
	return out
}

// String is the text form, e.g. "1.3,1.2"; "" for none.
func (s Versions) String() string { return strings.Join(s.Names(), ",") }

// MarshalText writes the text form; a set with unknown bits is an error.
func (s Versions) MarshalText() ([]byte, error) {
	if s&^(DTLS12|DTLS13) != 0 {
		return nil, fmt.Errorf("pskstore: unknown dtls version in set %#x", uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText reads names separated by commas (spaces around them are
// ignored): "1.3", "1.2", "1.3,1.2". Empty text is the zero value.
func (s *Versions) UnmarshalText(text []byte) error {
	var v Versions
	for _, item := range splitNames(string(text)) {
		i := indexName(item, len(versionNames), func(i int) string { return versionNames[i].name })
		if i < 0 {
			return fmt.Errorf("%w: dtls version, use \"1.3\" or \"1.2\"", ErrUnknownName)
		}
		v |= versionNames[i].v
	}
	*s = v
	return nil
}

// Names returns the name of every mode in s.
func (s Modes) Names() []string {
	var out []string
	for _, n := range modeNames {
		if s.Has(n.m) {
			out = append(out, n.name)
		}
	}
	return out
}

// String is the text form, e.g. "psk_dhe_ke,psk_ke"; "" for none.
func (s Modes) String() string { return strings.Join(s.Names(), ",") }

// MarshalText writes the text form; a set with unknown bits is an error.
func (s Modes) MarshalText() ([]byte, error) {
	if s&^(ModeDHE|ModeKE) != 0 {
		return nil, fmt.Errorf("pskstore: unknown psk mode in set %#x", uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText reads names separated by commas: "psk_dhe_ke",
// "psk_dhe_ke,psk_ke". Empty text is the zero value.
func (s *Modes) UnmarshalText(text []byte) error {
	var m Modes
	for _, item := range splitNames(string(text)) {
		i := indexName(item, len(modeNames), func(i int) string { return modeNames[i].name })
		if i < 0 {
			return fmt.Errorf("%w: psk mode, use psk_dhe_ke or psk_ke", ErrUnknownName)
		}
		m |= modeNames[i].m
	}
	*s = m
	return nil
}

// Hash is the text form of a Key's crypto.Hash: Key.Hash stays a
// crypto.Hash for the DTLS stack, and Hash(k.Hash) reads and writes it.
type Hash crypto.Hash

// String is "sha256" or "sha384"; the zero value is SHA-256, the default.
func (h Hash) String() string {
	switch crypto.Hash(h) {
	case 0, crypto.SHA256:
		return "sha256"
	case crypto.SHA384:
		return "sha384"
	}
	return fmt.Sprintf("Hash(%d)", uint(h))
}

// MarshalText writes "sha256" or "sha384"; any other hash is an error.
func (h Hash) MarshalText() ([]byte, error) {
	switch crypto.Hash(h) {
	case 0, crypto.SHA256, crypto.SHA384:
		return []byte(h.String()), nil
	}
	return nil, fmt.Errorf("pskstore: hash %d not allowed, use sha256 or sha384", uint(h))
}

// UnmarshalText reads "sha256" or "sha384"; empty text is the zero value
// (SHA-256).
func (h *Hash) UnmarshalText(text []byte) error {
	switch strings.TrimSpace(string(text)) {
	case "":
		*h = 0
	case "sha256":
		*h = Hash(crypto.SHA256)
	case "sha384":
		*h = Hash(crypto.SHA384)
	default:
		return fmt.Errorf("%w: hash, use sha256 or sha384", ErrUnknownName)
	}
	return nil
}

// splitNames splits a comma-separated list, trimming spaces; an empty list
// has no items, an empty item is kept (and refused by the caller).
func splitNames(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	items := strings.Split(s, ",")
	for i := range items {
		items[i] = strings.TrimSpace(items[i])
	}
	return items
}

func indexName(item string, n int, name func(int) string) int {
	for i := range n {
		if name(i) == item {
			return i
		}
	}
	return -1
}
