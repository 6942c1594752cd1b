package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/pion/dtls/v4"
	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/crypto/elliptic"
	"github.com/pion/dtls/v4/pkg/protocol"
	extension13 "github.com/pion/dtls/v4/pkg/protocol/extension/dtls13"
	"github.com/pion/dtls/v4/pkg/protocol/handshake"
	"github.com/pion/dtls/v4/pkg/protocol/recordlayer"
)

// helloTemplate is the first ClientHello of a real pion client, captured
// once, and where the fields are that differ from one device to the next:
// the random, the legacy session ID, and in DTLS 1.3 the key share and the
// PSK binder. A flood varies them per datagram; everything else (suites,
// extensions, the PSK identity's shape) is what a device sends.
type helloTemplate struct {
	version string // "1.3" or "1.2"
	raw     []byte // one datagram: one record, one unfragmented ClientHello
	vary    []span // byte ranges to fill with fresh random bytes
}

type span struct{ off, n int }

// Offsets in a plaintext record carrying a ClientHello: the 13-byte DTLS
// record header, the 12-byte handshake header, then client_version (2) and
// random (32), then the session ID with its length byte.
const (
	recordHeaderLen    = 13
	handshakeHeaderLen = 12
	helloRandomOff     = recordHeaderLen + handshakeHeaderLen + 2
)

// captureConn is a PacketConn that keeps the first datagram written to it
// and answers nothing: what a pion client sends first is its ClientHello.
type captureConn struct {
	once   sync.Once
	first  chan []byte
	closed chan struct{}
	close1 sync.Once
}

func (c *captureConn) WriteTo(p []byte, _ net.Addr) (int, error) {
	c.once.Do(func() { c.first <- bytes.Clone(p) })
	return len(p), nil
}

func (c *captureConn) ReadFrom([]byte) (int, net.Addr, error) {
	<-c.closed
	return 0, nil, net.ErrClosed
}

func (c *captureConn) Close() error {
	c.close1.Do(func() { close(c.closed) })
	return nil
}

func (c *captureConn) LocalAddr() net.Addr              { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }

// captureHello runs a pion client of the given version with a PSK, as a
// device of the load tool would (same suites, groups, Connection ID
// support), and returns the template of its first ClientHello.
func captureHello(version string) (*helloTemplate, error) {
	identity := make([]byte, 16)
	key := make([]byte, 32)
	_, _ = rand.Read(identity)
	_, _ = rand.Read(key)
	id := fmt.Appendf(nil, "flood-%x", identity[:6])
	psk := dtls.PSK{Identity: id, Key: key}
	opts := []dtls.ClientOption{
		dtls.WithPSK(func() ([]dtls.PSK, error) { return []dtls.PSK{psk}, nil }, nil),
		dtls.WithEllipticCurves(elliptic.X25519),
		dtls.WithConnectionID(dtls.OnlySendCIDGenerator(), dtls.CIDPathMigrationReject),
		dtls.WithLoggerFactory(quietPion),
	}
	switch version {
	case "1.3":
		opts = append(opts, dtls.WithCipherSuites(ciphersuite.TLS_AES_128_GCM_SHA256),
			dtls.WithMinVersion(protocol.Version1_3), dtls.WithMaxVersion(protocol.Version1_3),
			dtls.WithClientHelloMessageHook(offerMode(extension13.PSKDHEKE)))
	case "1.2":
		opts = append(opts, dtls.WithCipherSuites(ciphersuite.TLS_PSK_WITH_AES_128_CCM_8, ciphersuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256),
			dtls.WithMinVersion(protocol.Version1_2), dtls.WithMaxVersion(protocol.Version1_2))
	default:
		return nil, fmt.Errorf("flood hello: version %q: want 1.3 or 1.2", version)
	}
	pc := &captureConn{first: make(chan []byte, 1), closed: make(chan struct{})}
	conn, err := dtls.Client(pc, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}, opts...)
	if err != nil {
		return nil, fmt.Errorf("flood hello: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() { _ = conn.HandshakeContext(ctx) }()
	var raw []byte
	select {
	case raw = <-pc.first:
	case <-ctx.Done():
	}
	cancel()
	_ = conn.Close()
	if raw == nil {
		return nil, errors.New("flood hello: the pion client sent no ClientHello")
	}
	return newHelloTemplate(version, raw)
}

// newHelloTemplate checks that raw is one plaintext record with one whole
// ClientHello and finds the fields to vary.
func newHelloTemplate(version string, raw []byte) (*helloTemplate, error) {
	hello, err := parseHello(raw)
	if err != nil {
		return nil, err
	}
	t := &helloTemplate{version: version, raw: raw, vary: []span{{helloRandomOff, handshake.RandomLength}}}
	if n := len(hello.SessionID); n > 0 {
		t.vary = append(t.vary, span{helloRandomOff + handshake.RandomLength + 1, n})
	}
	// Key shares and binders: found by value, they are random bytes that
	// occur once.
	for _, ext := range hello.Extensions {
		var values [][]byte
		switch e := ext.(type) {
		case *extension13.ClientKeyShare:
			for _, s := range e.Shares {
				values = append(values, s.KeyExchange)
			}
		case *extension13.OfferedPSKs:
			for _, b := range e.Binders {
				values = append(values, b)
			}
		}
		for _, v := range values {
			if i := bytes.Index(raw, v); len(v) >= 16 && i > 0 && bytes.LastIndex(raw, v) == i {
				t.vary = append(t.vary, span{i, len(v)})
			}
		}
	}
	return t, nil
}

// parseHello parses a datagram that must be exactly one epoch-0 handshake
// record carrying one unfragmented ClientHello, with pion's parsers.
func parseHello(datagram []byte) (*handshake.MessageClientHello, error) {
	records, err := recordlayer.UnpackDatagram(datagram, recordlayer.UnpackDatagramConfig{})
	if err != nil || len(records) != 1 {
		return nil, fmt.Errorf("flood hello: %d records (%v), want 1", len(records), err)
	}
	rec, err := recordlayer.ParseRecord(records[0], 0)
	if err != nil {
		return nil, fmt.Errorf("flood hello: %w", err)
	}
	if rec.IsUnified() || rec.ContentType() != protocol.ContentTypeHandshake || rec.Epoch() != 0 {
		return nil, errors.New("flood hello: not an epoch-0 handshake record")
	}
	body := rec.Payload()
	var h handshake.Header
	if err := h.Unmarshal(body); err != nil {
		return nil, fmt.Errorf("flood hello: %w", err)
	}
	if h.Type != handshake.TypeClientHello || h.FragmentOffset != 0 || h.FragmentLength != h.Length || int(h.Length) != len(body)-handshakeHeaderLen {
		return nil, fmt.Errorf("flood hello: handshake %v, fragment %d+%d of %d: want one whole ClientHello", h.Type, h.FragmentOffset, h.FragmentLength, h.Length)
	}
	var hello handshake.MessageClientHello
	if err := hello.Unmarshal(body[handshakeHeaderLen:]); err != nil {
		return nil, fmt.Errorf("flood hello: %w", err)
	}
	return &hello, nil
}

// build writes a fresh ClientHello from the template into dst (grown as
// needed) and returns it: the template with new random bytes in every
// varying field.
func (t *helloTemplate) build(dst []byte, fill func([]byte)) []byte {
	dst = append(dst[:0], t.raw...)
	for _, s := range t.vary {
		fill(dst[s.off : s.off+s.n])
	}
	return dst
}
