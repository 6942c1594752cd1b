package file

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// FuzzParse feeds the key file parser arbitrary bytes, seeded from testdata:
// it must never panic, must report every failure as a *ParseError, and what
// it accepts must survive Marshal and Parse unchanged.
func FuzzParse(f *testing.F) {
	seeds, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, path := range seeds {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := Parse(data)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ParseError", err)
			}
			return
		}
		out, err := Marshal(keys)
		if err != nil {
			t.Fatalf("Marshal of parsed keys: %v", err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Marshal(keys)): %v", err)
		}
		if len(again) != len(keys) {
			t.Fatalf("%d keys after a round trip, want %d", len(again), len(keys))
		}
		for i := range keys {
			if !again[i].Equal(keys[i]) {
				t.Fatalf("key %d changed in a round trip: %+v, want %+v", i, again[i], keys[i])
			}
		}
		checkNormalized(t, keys)
	})
}

func checkNormalized(t *testing.T, keys []pskstore.Key) {
	for i, k := range keys {
		n := k.Clone()
		n.Normalize()
		if !n.Equal(k) {
			t.Fatalf("key %d is not normalized", i)
		}
	}
}
