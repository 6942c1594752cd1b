package pskstore

import (
	"crypto"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// TestTextForms: one spelling for versions, modes and hashes, read back by
// UnmarshalText whatever the set.
func TestTextForms(t *testing.T) {
	for _, tt := range []struct {
		v    Versions
		text string
	}{{0, ""}, {DTLS13, "1.3"}, {DTLS12, "1.2"}, {DTLS12 | DTLS13, "1.3,1.2"}} {
		b, err := tt.v.MarshalText()
		if err != nil || string(b) != tt.text || tt.v.String() != tt.text {
			t.Errorf("Versions(%d) = %q, %v; want %q", tt.v, b, err, tt.text)
		}
		var back Versions
		if err := back.UnmarshalText(b); err != nil || back != tt.v {
			t.Errorf("Versions %q read back as %d, %v", b, back, err)
		}
	}
	for _, tt := range []struct {
		m    Modes
		text string
	}{{0, ""}, {ModeDHE, "psk_dhe_ke"}, {ModeKE, "psk_ke"}, {ModeDHE | ModeKE, "psk_dhe_ke,psk_ke"}} {
		b, err := tt.m.MarshalText()
		if err != nil || string(b) != tt.text || tt.m.String() != tt.text {
			t.Errorf("Modes(%d) = %q, %v; want %q", tt.m, b, err, tt.text)
		}
		var back Modes
		if err := back.UnmarshalText(b); err != nil || back != tt.m {
			t.Errorf("Modes %q read back as %d, %v", b, back, err)
		}
	}
	for _, tt := range []struct {
		h    crypto.Hash
		text string
		back crypto.Hash
	}{{0, "sha256", crypto.SHA256}, {crypto.SHA256, "sha256", crypto.SHA256}, {crypto.SHA384, "sha384", crypto.SHA384}} {
		b, err := Hash(tt.h).MarshalText()
		if err != nil || string(b) != tt.text {
			t.Errorf("Hash(%v) = %q, %v; want %q", tt.h, b, err, tt.text)
		}
		var back Hash
		if err := back.UnmarshalText(b); err != nil || crypto.Hash(back) != tt.back {
			t.Errorf("Hash %q read back as %v, %v", b, back, err)
		}
	}
}

func TestTextFormsLenient(t *testing.T) {
	var v Versions
	if err := v.UnmarshalText([]byte(" 1.2 , 1.3,1.2")); err != nil || v != DTLS12|DTLS13 {
		t.Errorf("spaced, repeated list: %d, %v", v, err)
	}
	var m Modes
	if err := m.UnmarshalText([]byte("psk_ke, psk_dhe_ke")); err != nil || m != ModeDHE|ModeKE {
		t.Errorf("modes in another order: %d, %v", m, err)
	}
	var h Hash
	if err := h.UnmarshalText(nil); err != nil || h != 0 {
		t.Errorf("empty hash: %v, %v", h, err)
	}
}

// TestTextFormsRefuse: bad names are refused with the valid ones listed and
// without repeating the input, which may be a key in the wrong place (R9).
func TestTextFormsRefuse(t *testing.T) {
	const secretish = "8a1355e09107c42b6df839ae0277b54c"
	for _, tt := range []struct {
		name string
		err  error
		want string
	}{
		{"version", new(Versions).UnmarshalText([]byte("1.3," + secretish)), `"1.3" or "1.2"`},
		{"dtls1.3 spelling", new(Versions).UnmarshalText([]byte("dtls1.3")), `"1.3" or "1.2"`},
		{"empty item", new(Versions).UnmarshalText([]byte("1.3,")), `"1.3" or "1.2"`},
		{"mode", new(Modes).UnmarshalText([]byte(secretish)), "psk_dhe_ke or psk_ke"},
		{"hash", new(Hash).UnmarshalText([]byte("sha1")), "sha256 or sha384"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if !errors.Is(tt.err, ErrUnknownName) || !strings.Contains(tt.err.Error(), tt.want) {
				t.Fatalf("error %v, want ErrUnknownName listing %s", tt.err, tt.want)
			}
			if strings.Contains(tt.err.Error(), secretish) || strings.Contains(tt.err.Error(), "sha1") {
				t.Errorf("error %q repeats the input", tt.err)
			}
		})
	}
	if _, err := Versions(0x80).MarshalText(); err == nil {
		t.Error("unknown version bit marshalled")
	}
	if _, err := Modes(0x80).MarshalText(); err == nil {
		t.Error("unknown mode bit marshalled")
	}
	if _, err := Hash(crypto.SHA1).MarshalText(); err == nil {
		t.Error("sha1 marshalled")
	}
}

// TestTextFormsJSON: encoding/json uses the same spelling.
func TestTextFormsJSON(t *testing.T) {
	in := struct {
		V Versions
		M Modes
		H Hash
	}{DTLS12 | DTLS13, ModeDHE, Hash(crypto.SHA384)}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"V":"1.3,1.2","M":"psk_dhe_ke","H":"sha384"}` {
		t.Errorf("json %s", b)
	}
	out := in
	out.V, out.M, out.H = 0, 0, 0
	if err := json.Unmarshal(b, &out); err != nil || out != in {
		t.Errorf("json read back %+v, %v", out, err)
	}
}
