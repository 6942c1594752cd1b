package importer

import (
	"bytes"
	"testing"
)

// FuzzParseImportedIdentity checks that the parser never panics, that whatever
// it accepts re-encodes to exactly its input, and that Parse(Marshal(x)) == x
// (R6). Seeds come from testdata/kat.json.
func FuzzParseImportedIdentity(f *testing.F) {
	for _, v := range loadKAT(f) {
		f.Add(unhex(f, v.ImportedIdentity))
	}
	f.Add([]byte{})
	f.Add([]byte{0x00, 0x01, 'a', 0x00, 0x00, 0xfe, 0xfc, 0x00, 0x02})
	f.Fuzz(func(t *testing.T, data []byte) {
		id, err := ParseImportedIdentity(data)
		if err != nil {
			return
		}
		enc, err := id.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed identity: %v", err)
		}
		if !bytes.Equal(enc, data) {
			t.Fatalf("Marshal(Parse(b)) = %x, want %x", enc, data)
		}
		again, err := ParseImportedIdentity(enc)
		if err != nil || !equalIdentity(again, id) {
			t.Fatalf("Parse(Marshal(x)) = %+v, %v; want %+v", again, err, id)
		}
	})
}
