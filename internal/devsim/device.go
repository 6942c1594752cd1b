package devsim

import (
	"crypto"
	"time"

	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/crypto/elliptic"
	"go.uber.org/zap"
)

// Key-exchange modes of DTLS 1.3 PSK handshakes (RFC 8446 §4.2.9).
const (
	ModePSKDHE = "psk_dhe_ke" // PSK with (EC)DHE: forward secrecy (R3 default)
	ModePSK    = "psk_ke"     // PSK only: no forward secrecy
)

// DeviceConfig describes one simulated device. Only Server, Identity, Key and
// Endpoint are required; every other zero value means the stated default.
type DeviceConfig struct {
	// Server is the gateway's UDP address, host:port.
	Server string
	// Identity is the external PSK identity. Never logged.
	Identity []byte
	// Key is the PSK. Never logged.
	Key []byte
	// Hash is the DTLS 1.3 PSK hash, crypto.SHA256 or crypto.SHA384; zero is
	// SHA-256. With SHA-384 the default 1.3 suite is TLS_AES_256_GCM_SHA384.
	Hash crypto.Hash
	// Version pins the DTLS version: "1.3" (default) or "1.2".
	Version string
	// Mode is the comma-separated list of DTLS 1.3 PSK key-exchange modes to
	// offer, in order: "psk_dhe_ke" (default), "psk_ke" (offer only psk_ke),
	// or "psk_dhe_ke,psk_ke" (offer both, as pion does by default). Ignored
	// with DTLS 1.2, where the cipher suite decides.
	Mode string
	// CipherSuites to offer. Default: TLS_AES_128_GCM_SHA256 for 1.3 (or
	// TLS_AES_256_GCM_SHA384 with Hash SHA-384), TLS_PSK_WITH_AES_128_CCM_8
	// for 1.2 (RFC 7925).
	CipherSuites []ciphersuite.ID
	// Groups are the key-exchange groups, first one with a key share.
	// Default X25519 only: pion's client default also lists X25519MLKEM768,
	// which a pion server prefers and asks for with a HelloRetryRequest.
	Groups []elliptic.Curve
	// ServerName is the SNI to send; empty sends none.
	ServerName string
	// NoConnectionID disables Connection IDs (RFC 9146, RFC 9147 §9). By
	// default the device supports them: it uses the CID the gateway gives
	// it, so a NAT rebinding does not lose the session.
	NoConnectionID bool
	// ConnectionIDLength is the length of the CID the device asks the
	// gateway to send to it; 0 (default) asks for none (pion's
	// OnlySendCIDGenerator).
	ConnectionIDLength int
	// Endpoint is the LwM2M endpoint client name (ep).
	Endpoint string
	// Lifetime is the registration lifetime (lt), whole seconds; default 1h.
	Lifetime time.Duration
	// Binding is the LwM2M binding (b); default "U".
	Binding string
	// Resources answer the backend's GETs, path to value, e.g. "/3/0/0" ->
	// "ACME Corp". Default: a small Device object (DefaultResources). The
	// Register payload lists the object instances of these paths.
	Resources map[string][]byte
	// HandshakeTimeout bounds Dial's handshake; default 10s.
	HandshakeTimeout time.Duration
	// ACKTimeout is CoAP's ACK_TIMEOUT; default 2s (RFC 7252 §4.8).
	ACKTimeout time.Duration
	// MaxRetransmit is CoAP's MAX_RETRANSMIT; default 4; negative is 0.
	// (Zero is the default, so 0 retransmissions need a negative value.)
	MaxRetransmit int
	// Logger receives Debug events and pion's logs; nil means no logs.
	Logger *zap.Logger

	// LocalAddr is the UDP address the device binds, host:port. Default:
	// the gateway's loopback IP with an ephemeral port when the gateway is
	// on loopback (a test opens nothing on other interfaces), else any
	// address. The device keeps this socket for its whole life: every
	// handshake (reboot, re-handshake, reconnect) comes from it.
	LocalAddr string
	// FlightInterval is the DTLS handshake retransmission interval (pion's
	// WithFlightInterval): a ClientHello or later flight left unanswered is
	// sent again after it, doubling each time. Zero is pion's 1s.
	FlightInterval time.Duration
	// Loss impairs the device's network path (LossyConn) for its whole life,
	// handshakes included; nil is a perfect path.
	Loss *Loss
	// RehandshakeIdle makes the device behave like a tinydtls-based client
	// behind a NAT: before it sends a request after being idle (no
	// application data sent or received) for longer than this, it runs a new
	// handshake from the same port, then sends the request on the new
	// session, so an Update goes to the registration it already has. Zero
	// disables it. Sleeping counts as idle.
	RehandshakeIdle time.Duration
	// AutoReconnect makes the device do what a LwM2M client does when its
	// session is gone (the gateway restarted and drops its records, or sent
	// an alert): when a request fails with ErrTimeout or ErrSessionLost, it
	// runs a new handshake from the same port, sends Update to its
	// registration location, Registers again if that Update is answered
	// 4.04 Not Found, and then retries the request once. Any other answer
	// to the Update (4.03 Forbidden, say) is returned as a *CodeError. An
	// Update answered 4.04 at any time also leads to a new Register.
	AutoReconnect bool
	// OnHandshake, if set, is called after every handshake the device runs,
	// from the goroutine that ran it. It must not call the Device.
	OnHandshake func(HandshakeEvent)
}

// HandshakeReason says why a device ran a handshake.
type HandshakeReason string

// Handshake reasons.
const (
	HandshakeDial        HandshakeReason = "dial"        // Dial
	HandshakeRehandshake HandshakeReason = "rehandshake" // Rehandshake
	HandshakeIdle        HandshakeReason = "idle"        // RehandshakeIdle exceeded before a request
	HandshakeReboot      HandshakeReason = "reboot"      // Reboot
	HandshakeReconnect   HandshakeReason = "reconnect"   // Reconnect, or AutoReconnect after a lost session
)

// HandshakeEvent reports one handshake of a device.
type HandshakeEvent struct {
	Reason   HandshakeReason
	Duration time.Duration
	// Err is nil on success; a handshake that ended with an alert from the
	// gateway wraps it (see AlertOf).
	Err error
}

// DeviceStats counts what a device lived through.
type DeviceStats struct {
	Handshakes       int // completed, Dial's included
	HandshakeErrors  int // failed
	IdleRehandshakes int // completed because RehandshakeIdle was exceeded
	Reboots          int // Reboot calls whose handshake completed
	Reconnects       int // completed reconnection handshakes (Reconnect, AutoReconnect)
	SessionsLost     int // sessions the gateway ended: alert, close_notify
	Refused          int // of SessionsLost, those ended before any data came back (ErrRefused)
	Sleeps           int // completed Sleep calls
	// LostWhileAsleep counts datagrams received while asleep or between two
	// sessions, and datagrams not sent while asleep.
	LostWhileAsleep int64
}

// DefaultResources returns the resources a device has when DeviceConfig
// leaves Resources nil: a Server object instance (/1/0) and a Device object
// instance (/3/0) whose serial number is the endpoint name.
func DefaultResources(endpoint string) map[string][]byte {
	return map[string][]byte{
		"/1/0/0": []byte("1"),    // Short Server ID
		"/1/0/1": []byte("3600"), // Lifetime
		"/1/0/7": []byte("U"),    // Binding
		"/3/0/0": []byte("ACME Corp"),
		"/3/0/1": []byte("devsim"),
		"/3/0/2": []byte(endpoint),
		"/3/0/3": []byte("1.0"),
		"/3/0/9": []byte("100"), // Battery Level
	}
}
