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
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: pion state: %v", ErrParams, err)
	}
	return &s, nil
}
