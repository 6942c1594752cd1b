package gateway

import (
	"errors"
	"net/netip"
	"time"

	"github.com/pion/dtls/v4"
)

// leanPlane: placeholder until internal/record lands.
type leanPlane struct{}

var errLeanUnavailable = errors.New("gateway: lean data plane not built yet")

const leanAvailable = false

func newLeanPlane(*Server, dtls.State, []byte, [][]byte) (*leanPlane, error) {
	return nil, errLeanUnavailable
}

func (p *leanPlane) open(*session, *listener, []byte, netip.AddrPort) {}
func (p *leanPlane) send(*session, []byte)                            {}
func (p *leanPlane) close(*session, bool)                             {}
func (p *leanPlane) tick(*session, time.Time)                         {}
