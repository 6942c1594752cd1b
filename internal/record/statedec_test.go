package record

import (
	"reflect"
	"testing"
)

// TestStateDecoderMatchesFreshDecode: pion exports of every suite, both
// versions and every CID arrangement, decoded by the long-lived decoder,
// equal what a fresh gob.Decoder makes of them, and all but the first are
// served by the long-lived one. A truncated or altered export is an error
// and leaves the decoder serving the next good export.
func TestStateDecoderMatchesFreshDecode(t *testing.T) {
	var d stateDecoder
	var exports [][]byte
	for _, s := range allSetups() {
		ss, _ := s.handshake(t)
		exports = append(exports, ss.params.State)
	}
	for i, b := range exports {
		var got, want pionState
		if err := d.decode(b, &got); err != nil {
			t.Fatalf("export %d: %v", i, err)
		}
		if err := freshDecode(b, &want); err != nil {
			t.Fatalf("export %d, fresh: %v", i, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("export %d decodes to\n%+v\nwant\n%+v", i, got, want)
		}
	}
	if want := uint64(len(exports) - 1); d.hits != want {
		t.Fatalf("%d of %d exports decoded by the long-lived decoder, want %d", d.hits, len(exports), want)
	}

	last := exports[len(exports)-1]
	for name, bad := range map[string][]byte{
		"truncated": last[:len(last)-3],
		"altered":   append(append([]byte(nil), last[:len(last)-1]...), last[len(last)-1]^0xff, 0xff, 0xff),
		"empty":     nil,
	} {
		var s pionState
		if err := d.decode(bad, &s); err == nil {
			t.Errorf("%s export decoded: %+v", name, s)
		}
		var got, want pionState
		if err := d.decode(exports[0], &got); err != nil {
			t.Fatalf("after the %s export: %v", name, err)
		}
		_ = freshDecode(exports[0], &want)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("after the %s export the decoder is off: %+v", name, got)
		}
	}
}

// BenchmarkDecodePionState: a DTLS 1.3 export decoded the way the hand-over
// does it (the long-lived decoder) and with a fresh gob.Decoder.
//
//	go test -run '^$' -bench DecodePionState ./internal/record/
func BenchmarkDecodePionState(b *testing.B) {
	ss, _ := allSetups()[len(allSetups())-1].handshake(b)
	state := ss.params.State
	b.Run("long-lived", func(b *testing.B) {
		var d stateDecoder
		for b.Loop() {
			var s pionState
			if err := d.decode(state, &s); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fresh", func(b *testing.B) {
		for b.Loop() {
			var s pionState
			if err := freshDecode(state, &s); err != nil {
				b.Fatal(err)
			}
		}
	})
}
