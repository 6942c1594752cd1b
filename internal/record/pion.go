package record

import (
	"bytes"
	"encoding/gob"
	"fmt"
)

// pionState mirrors the private serializedState that pion/dtls v4.0.1's
// State.MarshalBinary encodes with encoding/gob (state.go). gob matches
// struct fields by name, so this mirror decodes pion's bytes without pion's
// private types, and encodes bytes pion's State.UnmarshalBinary accepts
// (ToPionState). Only the fields the record layer needs are listed; gob skips
// the others on decode.
type pionState struct {
	Handoff              bool
	HandshakeComplete    bool
	RemoteSequenceNumber uint64 // DTLS 1.2: highest sequence number seen + 1, 0 if none
	ServerName           string
	DTLS13               *pionState13
	ExporterMasterSecret []byte
	Version              uint16 // protocol.Version as major<<8|minor: 0xfefd (1.2), 0xfefc (1.3)
	LocalEpoch           uint16 // DTLS 1.2
	RemoteEpoch          uint16 // DTLS 1.2
	LocalRandom          [32]byte
	RemoteRandom         [32]byte
	CipherSuiteID        uint16
	MasterSecret         []byte // DTLS 1.2
	SequenceNumber       uint64 // DTLS 1.2: next local write sequence number
	IdentityHint         []byte
	LocalConnectionID    []byte // the CID the peer puts in records to us
	RemoteConnectionID   []byte // the CID we put in records to the peer
	IsClient             bool
}

// pionState13 mirrors pion's serializedState13.
type pionState13 struct {
	Write, Read            []pionGeneration
	ResumptionMasterSecret []byte
	HandshakeSendSequence  int // next message_seq we send
	HandshakeRecvSequence  int // next message_seq we expect
	CIDNegotiated          bool
	ReceiveIDs             [][]byte
	Send                   pionCIDSend
}

// pionGeneration mirrors pion's serializedTrafficGeneration: one epoch's
// application traffic secret. For Write, SequenceNumber is the next sequence
// number to use; for Read it is the highest seen (if SequenceNumberSeen).
type pionGeneration struct {
	Epoch, Generation            uint64
	Secret                       []byte
	SequenceNumber               uint64
	SequenceNumberSeen           bool
	SealedRecords, FailedRecords uint64
}

// pionCIDSend mirrors pion's dtlsstate.CIDSendState.
type pionCIDSend struct {
	Spares [][]byte
	UseCID bool
	Active []byte
}

// decodePionState decodes the bytes of dtls.State.MarshalBinary.
func decodePionState(b []byte) (*pionState, error) {
	var s pionState
	if err := pionStates.decode(b, &s); err != nil {
		return nil, fmt.Errorf("%w: pion state: %v", ErrParams, err)
	}
	return &s, nil
}

// ToPionState encodes the session as dtls.State.MarshalBinary bytes, so that
// it can be handed back to pion: var st dtls.State; st.UnmarshalBinary(b);
// dtls.Resume(&st, conn, addr, options...). Like pion's own export, the
// result must be resumed at most once, and this Conn must not be used after
// it (the two would reuse sequence numbers). It carries what pion's Resume
// needs for the record layer (keys, sequence numbers, CIDs, the exporter
// secret); not the PSK identity or the server name. It fails while our
// KeyUpdate awaits its ACK: pion's state cannot say so.
func (c *Conn) ToPionState() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ku != nil {
		return nil, fmt.Errorf("%w: a KeyUpdate is pending", ErrParams)
	}
	st := pionState{
		Handoff:            true,
		HandshakeComplete:  true,
		CipherSuiteID:      uint16(c.s.id),
		LocalConnectionID:  c.cidIn,
		RemoteConnectionID: c.cidOut,
	}
	if !c.s.tls13 {
		h := c.handoff
		st.Version, st.LocalEpoch, st.RemoteEpoch = 0xfefd, 1, 1
		st.MasterSecret = h[:48]
		copy(st.RemoteRandom[:], h[48:80])
		copy(st.LocalRandom[:], h[80:112])
		st.SequenceNumber = c.write.seq
		st.RemoteSequenceNumber = c.read.win.next
	} else {
		st.Version = 0xfefc
		st.ExporterMasterSecret = c.handoff
		d := &pionState13{
			HandshakeSendSequence: int(c.sendSeq),
			HandshakeRecvSequence: int(c.recvSeq),
			CIDNegotiated:         len(c.cidIn) > 0 || len(c.cidOut) > 0,
			Send:                  pionCIDSend{Spares: [][]byte{}, UseCID: len(c.cidOut) > 0, Active: c.cidOut},
		}
		if len(c.cidIn) > 0 {
			d.ReceiveIDs = [][]byte{c.cidIn}
		}
		d.Write = []pionGeneration{c.generation(&c.write, true)}
		if c.prev != nil {
			d.Read = append(d.Read, c.generation(c.prev, false))
		}
		d.Read = append(d.Read, c.generation(&c.read, false))
		st.DTLS13 = d
	}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(&st); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (c *Conn) generation(k *keys, write bool) pionGeneration {
	g := pionGeneration{Epoch: k.epoch, Generation: k.epoch - 3, Secret: k.secret[:c.s.hashLen]}
	if write {
		g.SequenceNumber, g.SequenceNumberSeen = k.seq, true
	} else if k.win.next > 0 {
		g.SequenceNumber, g.SequenceNumberSeen = k.win.next-1, true
	}
	return g
}
