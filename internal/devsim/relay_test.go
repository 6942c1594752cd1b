package devsim

import (
	"bytes"
	"net"
	"testing"

	"github.com/pion/dtls/v4"
)

// relay is a Relay with the short names the tests use.
type relay struct{ *Relay }

// startRelay starts a Relay for the one PSK psk (whose Hash the server must
// know: the offer does not carry it), forwarding to backend; extra options
// are appended. It is closed when the test ends.
func startRelay(t *testing.T, backend net.Addr, psk dtls.PSK, extra ...dtls.ServerOption) *relay {
	t.Helper()
	r, err := NewRelay(RelayConfig{
		Backend: backend,
		PSK: func(id []byte) *dtls.PSK {
			if bytes.Equal(id, psk.Identity) {
				return &psk
			}
			return nil
		},
		Options: extra,
		Logger:  testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return &relay{r}
}

func (r *relay) addr() string { return r.Addr().String() }

// sessions returns the server-side states of completed handshakes and the
// errors of the failed ones.
func (r *relay) sessions() ([]dtls.State, []error) {
	var states []dtls.State
	for _, h := range r.Handshakes() {
		states = append(states, h.State)
	}
	return states, r.Errors()
}

// handshakesFrom returns the remote addresses of the completed handshakes.
func (r *relay) handshakesFrom() []string {
	var from []string
	for _, h := range r.Handshakes() {
		from = append(from, h.Remote)
	}
	return from
}

func (r *relay) replacedSessions() int { return r.Replaced() }

func (r *relay) forget() { r.Forget() }
