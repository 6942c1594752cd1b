package record

import (
	"bytes"
	"crypto/subtle"
	"fmt"
	"time"
)

// Params is what New needs to take a session over from pion.
type Params struct {
	// State is dtls.State.MarshalBinary of the server Conn's ExportState,
	// taken once its handshake completed (pion/dtls v4.0.1's gob).
	State []byte

	// KeyLog is what pion wrote for this Conn through dtls.WithKeyLogWriter
	// (NSS key log lines; lines of other Conns are ignored). DTLS 1.3 needs
	// its CLIENT_HANDSHAKE_TRAFFIC_SECRET to acknowledge a retransmitted
	// client Finished; the application secrets in it are checked against
	// State. DTLS 1.2 may pass nil; a CLIENT_RANDOM line, if present, is
	// checked against State's master secret.
	KeyLog []byte

	// FinalFlight (DTLS 1.2 only, required) holds the datagrams of the
	// server's last flight, ChangeCipherSpec and Finished, exactly as pion
	// wrote them last (IsFinalFlight tells which datagrams those are). They
	// are resent when the client retransmits its own final flight (RFC 6347
	// §4.2.4). New copies them.
	FinalFlight [][]byte

	// CIDLength is the length of the Connection IDs the gateway issues (the
	// dtls.WithConnectionID generator's); 0 if it issues none.
	CIDLength int

	// Now is the handshake's completion time in the caller's clock; the zero
	// value means time.Now(). Retention of late-handshake state counts from
	// it.
	Now time.Time
}

// New builds the record layer of a session whose handshake pion completed.
// It rejects, with an error wrapping ErrParams, a state it cannot continue:
// a client's state, an incomplete handshake, a suite outside the package's
// scope, a renegotiated epoch, lengths that do not match, a key log that
// contradicts the state.
func New(p Params) (*Conn, error) {
	st, err := decodePionState(p.State)
	if err != nil {
		return nil, err
	}
	if st.IsClient {
		return nil, fmt.Errorf("%w: a client's state (this record layer is the server side)", ErrParams)
	}
	if p.CIDLength < 0 || p.CIDLength > 255 {
		return nil, fmt.Errorf("%w: CID length %d", ErrParams, p.CIDLength)
	}
	if n := len(st.LocalConnectionID); n != 0 && n != p.CIDLength {
		return nil, fmt.Errorf("%w: issued CID of %d bytes, CIDLength %d", ErrParams, n, p.CIDLength)
	}
	if len(st.RemoteConnectionID) > 255 {
		return nil, fmt.Errorf("%w: peer CID of %d bytes", ErrParams, len(st.RemoteConnectionID))
	}
	now := p.Now
	if now.IsZero() {
		now = time.Now()
	}
	c := &Conn{
		cidIn:  bytes.Clone(st.LocalConnectionID),
		cidOut: bytes.Clone(st.RemoteConnectionID),
	}
	switch st.Version {
	case 0xfefd:
		err = c.init12(st, p, now.UnixNano())
	case 0xfefc:
		err = c.init13(st, p, now.UnixNano())
	default:
		err = fmt.Errorf("%w: protocol version %#04x", ErrParams, st.Version)
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Conn) init12(st *pionState, p Params, now int64) error {
	if c.s = suiteByID(st.CipherSuiteID, false); c.s == nil {
		return fmt.Errorf("%w: DTLS 1.2 cipher suite %#04x not supported", ErrParams, st.CipherSuiteID)
	}
	if !st.HandshakeComplete {
		return fmt.Errorf("%w: handshake not complete", ErrParams)
	}
	if st.LocalEpoch != 1 || st.RemoteEpoch != 1 {
		return fmt.Errorf("%w: epochs %d/%d, want 1 (no renegotiation)", ErrParams, st.LocalEpoch, st.RemoteEpoch)
	}
	if len(st.MasterSecret) != 48 {
		return fmt.Errorf("%w: master secret of %d bytes", ErrParams, len(st.MasterSecret))
	}
	if st.SequenceNumber > maxSeq || st.RemoteSequenceNumber > maxSeq+1 {
		return fmt.Errorf("%w: sequence numbers out of range", ErrParams)
	}
	if ms, err := keyLogSecret(p.KeyLog, "CLIENT_RANDOM", st.RemoteRandom[:]); err != nil {
		return err
	} else if ms != nil && subtle.ConstantTimeCompare(ms, st.MasterSecret) != 1 {
		return fmt.Errorf("%w: key log master secret differs from the state's", ErrParams)
	}
	if len(p.FinalFlight) == 0 {
		return fmt.Errorf("%w: DTLS 1.2 needs the server's final flight", ErrParams)
	}
	hasCCS := false
	for _, d := range p.FinalFlight {
		hasCCS = hasCCS || IsFinalFlight(d)
		c.flight = append(c.flight, bytes.Clone(d))
	}
	if !hasCCS {
		return fmt.Errorf("%w: final flight without ChangeCipherSpec", ErrParams)
	}
	c.flightUntil = now + int64(hsKeep)
	c.handoff = make([]byte, 0, 48+64)
	c.handoff = append(append(append(c.handoff, st.MasterSecret...), st.RemoteRandom[:]...), st.LocalRandom[:]...)
	if err := c.derive12(); err != nil {
		return err
	}
	c.write.seq = st.SequenceNumber
	if st.RemoteSequenceNumber > 0 {
		c.read.win = restoreAbove(st.RemoteSequenceNumber - 1)
	}
	return nil
}

// derive12 expands the handoff material into the epoch-1 keys.
func (c *Conn) derive12() error {
	h := c.handoff
	w, r, err := keys12(c.s, h[:48], h[48:80], h[80:112])
	if err != nil {
		return err
	}
	c.write, c.read = w, r
	return nil
}

func (c *Conn) init13(st *pionState, p Params, now int64) error {
	if c.s = suiteByID(st.CipherSuiteID, true); c.s == nil {
		return fmt.Errorf("%w: DTLS 1.3 cipher suite %#04x not supported", ErrParams, st.CipherSuiteID)
	}
	d := st.DTLS13
	if d == nil || len(d.Write) == 0 || len(d.Read) == 0 {
		return fmt.Errorf("%w: handshake not complete (no application traffic secrets)", ErrParams)
	}
	if d.HandshakeSendSequence < 0 || d.HandshakeSendSequence > 0xffff ||
		d.HandshakeRecvSequence < 0 || d.HandshakeRecvSequence > 0xffff {
		return fmt.Errorf("%w: handshake message sequence out of range", ErrParams)
	}
	if len(st.ExporterMasterSecret) != c.s.hashLen {
		return fmt.Errorf("%w: exporter secret of %d bytes", ErrParams, len(st.ExporterMasterSecret))
	}
	c.sendSeq, c.recvSeq = uint16(d.HandshakeSendSequence), uint16(d.HandshakeRecvSequence)
	c.handoff = bytes.Clone(st.ExporterMasterSecret)
	if d.CIDNegotiated && d.Send.UseCID && !bytes.Equal(d.Send.Active, st.RemoteConnectionID) {
		return fmt.Errorf("%w: active peer CID differs from the state's", ErrParams)
	}

	w := d.Write[len(d.Write)-1]
	if w.Epoch < 3 || w.Epoch >= 1<<16 || w.SequenceNumber > maxSeq+1 {
		return fmt.Errorf("%w: write epoch %d sequence %d", ErrParams, w.Epoch, w.SequenceNumber)
	}
	if err := c.write.derive13(c.s, w.Secret, w.Epoch); err != nil {
		return err
	}
	c.write.seq = w.SequenceNumber
	if err := c.readGeneration(&c.read, d.Read[len(d.Read)-1]); err != nil {
		return err
	}
	if n := len(d.Read); n > 1 && d.Read[n-2].Epoch+1 == c.read.epoch {
		c.prev = new(keys)
		if err := c.readGeneration(c.prev, d.Read[n-2]); err != nil {
			return err
		}
		c.prevUntil = now + int64(prevKeep)
	}
	if err := c.checkKeyLog13(p.KeyLog, st.RemoteRandom[:], d); err != nil {
		return err
	}
	hsSecret, err := keyLogSecret(p.KeyLog, "CLIENT_HANDSHAKE_TRAFFIC_SECRET", st.RemoteRandom[:])
	if err != nil {
		return err
	}
	if hsSecret == nil {
		return fmt.Errorf("%w: key log has no CLIENT_HANDSHAKE_TRAFFIC_SECRET for this session", ErrParams)
	}
	if len(hsSecret) != c.s.hashLen {
		return fmt.Errorf("%w: handshake traffic secret of %d bytes, want %d", ErrParams, len(hsSecret), c.s.hashLen)
	}
	// Most devices never resend their Finished: the handshake keys are
	// derived when a record of that epoch comes (Conn.hsKeys).
	c.hs = &keys{epoch: 2}
	copy(c.hs.secret[:], hsSecret)
	c.hsLazy = true
	c.hsUntil = now + int64(hsKeep)
	return nil
}

func (c *Conn) readGeneration(k *keys, g pionGeneration) error {
	if g.Epoch < 3 || g.Epoch >= 1<<16 || g.SequenceNumber > maxSeq {
		return fmt.Errorf("%w: read epoch %d sequence %d", ErrParams, g.Epoch, g.SequenceNumber)
	}
	if err := k.derive13(c.s, g.Secret, g.Epoch); err != nil {
		return err
	}
	if g.SequenceNumberSeen {
		k.win = restoreAbove(g.SequenceNumber)
	}
	return nil
}

// checkKeyLog13 checks the epoch-3 application secrets of the key log, when
// present, against the state: a mismatch means the log is another session's.
func (c *Conn) checkKeyLog13(log, clientRandom []byte, d *pionState13) error {
	for _, pair := range []struct {
		label string
		gens  []pionGeneration
	}{{"CLIENT_TRAFFIC_SECRET_0", d.Read}, {"SERVER_TRAFFIC_SECRET_0", d.Write}} {
		s, err := keyLogSecret(log, pair.label, clientRandom)
		if err != nil {
			return err
		}
		for _, g := range pair.gens {
			if g.Epoch == 3 && s != nil && subtle.ConstantTimeCompare(s, g.Secret) != 1 {
				return fmt.Errorf("%w: key log %s differs from the state's", ErrParams, pair.label)
			}
		}
	}
	return nil
}

// IsFinalFlight reports whether a datagram the server wrote holds a DTLS 1.2
// ChangeCipherSpec record: the start of its final flight (RFC 6347 §4.2.4).
// A gateway capturing pion's writes for Params.FinalFlight starts a new
// capture at each such datagram, so it keeps the last transmission.
func IsFinalFlight(datagram []byte) bool {
	for len(datagram) >= recordHeader12 {
		if datagram[0] == ctChangeCipherSpec {
			return true
		}
		n := recordHeader12 + (int(datagram[11])<<8 | int(datagram[12]))
		if datagram[0] == ctCID || n > len(datagram) {
			return false // epoch-1 records follow the CCS; a CID record ends the search
		}
		datagram = datagram[n:]
	}
	return false
}
