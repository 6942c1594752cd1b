package importer

import (
	"bytes"
	"errors"
	"testing"
)

func TestMarshalRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		id   ImportedIdentity
	}{
		{"R6/minimal", ImportedIdentity{[]byte{0}, nil, ProtocolDTLS13, HKDFSHA256}},
		{"R6/tls13-sha384", ImportedIdentity{[]byte("id"), []byte("ctx"), ProtocolTLS13, HKDFSHA384}},
		{"R6/peers-context", ImportedIdentity{[]byte("dev-1"), Context("dev-1", "gw.example"), ProtocolDTLS13, HKDFSHA384}},
		{"R6/max-total-length", ImportedIdentity{bytes.Repeat([]byte{1}, 40000), bytes.Repeat([]byte{2}, MaxIdentityLen-8-40000), ProtocolDTLS13, HKDFSHA256}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.id.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if want := 2 + len(tt.id.ExternalIdentity) + 2 + len(tt.id.Context) + 4; len(b) != want {
				t.Fatalf("len = %d, want %d", len(b), want)
			}
			got, err := ParseImportedIdentity(b)
			if err != nil {
				t.Fatal(err)
			}
			if !equalIdentity(got, tt.id) {
				t.Fatalf("round trip = %+v, want %+v", got, tt.id)
			}
			b[2] ^= 0xff // the parsed value must not alias its input
			if !equalIdentity(got, tt.id) {
				t.Fatal("parsed identity aliases its input")
			}
		})
	}
}

func TestMarshalErrors(t *testing.T) {
	tests := []struct {
		name string
		id   ImportedIdentity
		want error
	}{
		{"R6/empty-external-identity", ImportedIdentity{nil, nil, ProtocolDTLS13, HKDFSHA256}, ErrExternalIdentity},
		{"R6/external-identity-too-long", ImportedIdentity{make([]byte, 1<<16), nil, ProtocolDTLS13, HKDFSHA256}, ErrExternalIdentity},
		{"R6/context-too-long", ImportedIdentity{[]byte("a"), make([]byte, 1<<16), ProtocolDTLS13, HKDFSHA256}, ErrContextLength},
		{"R6/identity-over-65535", ImportedIdentity{make([]byte, 40000), make([]byte, 30000), ProtocolDTLS13, HKDFSHA256}, ErrIdentityTooLong},
		{"R6/dtls12-protocol", ImportedIdentity{[]byte("a"), nil, 0xfefd, HKDFSHA256}, ErrTargetProtocol},
		{"R6/tls12-protocol", ImportedIdentity{[]byte("a"), nil, 0x0303, HKDFSHA256}, ErrTargetProtocol},
		{"R6/unknown-kdf", ImportedIdentity{[]byte("a"), nil, ProtocolDTLS13, 0x0003}, ErrTargetKDF},
		{"R6/zero-kdf", ImportedIdentity{[]byte("a"), nil, ProtocolDTLS13, 0}, ErrTargetKDF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.id.Marshal(); !errors.Is(err, tt.want) {
				t.Fatalf("Marshal error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	good, err := ImportedIdentity{[]byte("abc"), []byte("xy"), ProtocolDTLS13, HKDFSHA256}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"R6/empty", nil, ErrMalformed},
		{"R6/one-byte", []byte{0}, ErrMalformed},
		{"R6/identity-length-past-end", []byte{0x00, 0x05, 'a', 'b'}, ErrMalformed},
		{"R6/missing-context", []byte{0x00, 0x01, 'a'}, ErrMalformed},
		{"R6/missing-kdf", bytes.Clone(good[:len(good)-2]), ErrMalformed},
		{"R6/truncated-kdf", bytes.Clone(good[:len(good)-1]), ErrMalformed},
		{"R6/context-length-past-end", []byte{0x00, 0x01, 'a', 0x00, 0x09, 'x', 0xfe, 0xfc, 0x00, 0x01}, ErrMalformed},
		{"R6/trailing-byte", append(bytes.Clone(good), 0), ErrTrailingData},
		{"R6/trailing-identity", append(bytes.Clone(good), good...), ErrTrailingData},
		{"R6/zero-length-external-identity", []byte{0x00, 0x00, 0x00, 0x00, 0xfe, 0xfc, 0x00, 0x01}, ErrExternalIdentity},
		{"R6/unknown-protocol", []byte{0x00, 0x01, 'a', 0x00, 0x00, 0x03, 0x03, 0x00, 0x01}, ErrTargetProtocol},
		{"R6/dtls12-protocol", []byte{0x00, 0x01, 'a', 0x00, 0x00, 0xfe, 0xfd, 0x00, 0x01}, ErrTargetProtocol},
		{"R6/unknown-kdf", []byte{0x00, 0x01, 'a', 0x00, 0x00, 0xfe, 0xfc, 0x00, 0x03}, ErrTargetKDF},
		{"R6/longer-than-65535", append([]byte{0xff, 0xff}, make([]byte, 1<<16)...), ErrIdentityTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := ParseImportedIdentity(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse error = %v, want %v", err, tt.want)
			}
			if !equalIdentity(id, ImportedIdentity{}) {
				t.Fatalf("Parse returned %+v with an error", id)
			}
		})
	}
}
