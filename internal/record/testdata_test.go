package record

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
)

var update = flag.Bool("update", false, "regenerate testdata/sessions from fresh pion handshakes")

// recorded is a session captured from pion for the fuzz targets' seeds:
// New's parameters and the datagrams the client sent after the handshake.
// (Test keys only: the PSK is a constant of this package's tests.)
type recorded struct {
	Name      string   `json:"name"`
	State     []byte   `json:"state"`
	KeyLog    string   `json:"keylog"`
	Flight    [][]byte `json:"flight,omitempty"`
	CIDLength int      `json:"cid_length"`
	Datagrams [][]byte `json:"datagrams"`
	Payloads  []string `json:"payloads"`
}

// recordedNow is the caller time the recorded sessions are opened at: within
// the retention of their late-handshake state.
var recordedNow = time.Unix(1_700_000_000, 0)

func (r *recorded) params() Params {
	return Params{State: r.State, KeyLog: []byte(r.KeyLog), FinalFlight: r.Flight, CIDLength: r.CIDLength, Now: recordedNow}
}

var recordedSetups = []setup{
	{version: protocol.Version1_2, suite: ciphersuite.TLS_PSK_WITH_AES_128_CCM_8, cid: cidBoth},
	{version: protocol.Version1_2, suite: ciphersuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256, cid: cidServer},
	{version: protocol.Version1_3, suite: ciphersuite.TLS_AES_128_GCM_SHA256, cid: cidBoth},
	{version: protocol.Version1_3, suite: ciphersuite.TLS_CHACHA20_POLY1305_SHA256, cid: cidNone},
}

func recordedPath(s setup) string {
	return filepath.Join("testdata", "sessions", strings.ReplaceAll(s.String(), "/", "_")+".json")
}

// generateRecorded captures one session from pion.
func generateRecorded(t *testing.T, s setup) recorded {
	ss := newSession(t, s)
	r := recorded{Name: s.String(), State: ss.params.State, KeyLog: string(ss.params.KeyLog),
		Flight: ss.params.FinalFlight, CIDLength: ss.params.CIDLength}
	for i := range 3 {
		msg := fmt.Sprintf("</rd?ep=dev%d>;lt=300", i)
		if _, err := ss.client.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		r.Datagrams = append(r.Datagrams, bytes.Clone(ss.fromClient()))
		r.Payloads = append(r.Payloads, msg)
	}
	_ = ss.client.Close() // close_notify
	r.Datagrams = append(r.Datagrams, bytes.Clone(ss.fromClient()))
	r.Payloads = append(r.Payloads, "")
	return r
}

// loadRecorded reads the recorded sessions, regenerating them with -update.
func loadRecorded(tb testing.TB) []recorded {
	var out []recorded
	for _, s := range recordedSetups {
		path := recordedPath(s)
		if *update {
			t, ok := tb.(*testing.T)
			if !ok {
				tb.Fatal("-update needs a test, not a fuzz target")
			}
			r := generateRecorded(t, s)
			b, err := json.MarshalIndent(r, "", "  ")
			if err != nil {
				tb.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				tb.Fatal(err)
			}
			if err := os.WriteFile(path, b, 0o644); err != nil {
				tb.Fatal(err)
			}
		}
		b, err := os.ReadFile(path)
		if err != nil {
			tb.Fatalf("%v (run go test -run TestRecorded -update)", err)
		}
		var r recorded
		if err := json.Unmarshal(b, &r); err != nil {
			tb.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// TestRecorded: the recorded sessions (fuzz seeds) still load and open:
// each datagram yields its payload, the last closes the session.
func TestRecorded(t *testing.T) {
	for _, r := range loadRecorded(t) {
		t.Run(r.Name, func(t *testing.T) {
			c, err := New(r.params())
			if err != nil {
				t.Fatal(err)
			}
			var d Datagram
			for i, dg := range r.Datagrams {
				if err := c.Open(&d, bytes.Clone(dg), recordedNow); err != nil {
					t.Fatalf("datagram %d: %v", i, err)
				}
				if r.Payloads[i] == "" {
					if !d.Closed {
						t.Fatalf("datagram %d: not closed", i)
					}
				} else if len(d.Payloads) != 1 || string(d.Payloads[0]) != r.Payloads[i] {
					t.Fatalf("datagram %d: %q", i, d.Payloads)
				}
			}
		})
	}
}
