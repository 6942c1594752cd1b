package record

import (
	"bytes"
	"encoding/gob"
	"errors"
	"strings"
	"testing"

	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
)

func encodeMirror(t *testing.T, m *pionState) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(m); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestNewRejects: New refuses state it cannot continue, with ErrParams and
// a message saying why that carries no secret (R9).
func TestNewRejects(t *testing.T) {
	s12 := setup{version: protocol.Version1_2, suite: ciphersuite.TLS_PSK_WITH_AES_128_CCM_8, cid: cidBoth}
	s13 := setup{version: protocol.Version1_3, suite: ciphersuite.TLS_AES_128_GCM_SHA256, cid: cidBoth}
	ss12, _ := s12.handshake(t)
	ss13, _ := s13.handshake(t)
	client13 := newSession(t, s13).exportClient()

	type edit func(p *Params, m *pionState)
	cases := []struct {
		name string
		base *session
		edit edit
		want string
	}{
		{"garbage state", ss12, func(p *Params, m *pionState) { p.State = []byte("not gob") }, "pion state"},
		{"a client's state", ss13, func(p *Params, m *pionState) { *m = *client13 }, "client"},
		{"1.2 handshake incomplete", ss12, func(p *Params, m *pionState) { m.HandshakeComplete = false }, "not complete"},
		{"1.3 without traffic secrets", ss13, func(p *Params, m *pionState) { m.DTLS13 = nil }, "not complete"},
		{"unsupported suite", ss12, func(p *Params, m *pionState) { m.CipherSuiteID = 0xc0aa }, "not supported"},
		{"1.3 suite in 1.2", ss12, func(p *Params, m *pionState) { m.CipherSuiteID = 0x1301 }, "not supported"},
		{"renegotiated epoch", ss12, func(p *Params, m *pionState) { m.LocalEpoch = 2 }, "epochs"},
		{"short master secret", ss12, func(p *Params, m *pionState) { m.MasterSecret = m.MasterSecret[:47] }, "master secret"},
		{"no final flight", ss12, func(p *Params, m *pionState) { p.FinalFlight = nil }, "final flight"},
		{"final flight without CCS", ss12, func(p *Params, m *pionState) { p.FinalFlight = [][]byte{{23, 0xfe, 0xfd}} }, "ChangeCipherSpec"},
		{"CID length differs", ss12, func(p *Params, m *pionState) { p.CIDLength = 4 }, "CID"},
		{"CID length negative", ss13, func(p *Params, m *pionState) { p.CIDLength = -1 }, "CID"},
		{"1.2 key log of another session", ss12, func(p *Params, m *pionState) {
			p.KeyLog = corruptSecret(p.KeyLog, "CLIENT_RANDOM")
		}, "differs"},
		{"1.3 key log of another session", ss13, func(p *Params, m *pionState) {
			p.KeyLog = corruptSecret(p.KeyLog, "CLIENT_TRAFFIC_SECRET_0")
		}, "differs"},
		{"1.3 key log without the handshake secret", ss13, func(p *Params, m *pionState) {
			p.KeyLog = dropLine(p.KeyLog, "CLIENT_HANDSHAKE_TRAFFIC_SECRET")
		}, "CLIENT_HANDSHAKE_TRAFFIC_SECRET"},
		{"1.3 short traffic secret", ss13, func(p *Params, m *pionState) { m.DTLS13.Read[0].Secret = m.DTLS13.Read[0].Secret[:31] }, "secret"},
		{"1.3 write epoch 2", ss13, func(p *Params, m *pionState) { m.DTLS13.Write[0].Epoch = 2 }, "epoch"},
		{"1.3 message_seq out of range", ss13, func(p *Params, m *pionState) { m.DTLS13.HandshakeRecvSequence = 1 << 16 }, "sequence"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.base.params
			p.KeyLog = bytes.Clone(p.KeyLog)
			m, err := decodePionState(p.State)
			if err != nil {
				t.Fatal(err)
			}
			tc.edit(&p, m)
			if tc.name != "garbage state" {
				p.State = encodeMirror(t, m)
			}
			_, err = New(p)
			if !errors.Is(err, ErrParams) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want ErrParams mentioning %q", err, tc.want)
			}
			for _, secret := range secretsOf(tc.base.params) {
				if strings.Contains(strings.ToLower(err.Error()), secret) {
					t.Fatalf("R9: error %q carries a secret", err)
				}
			}
		})
	}
	// The untouched parameters are fine.
	for _, ss := range []*session{ss12, ss13} {
		if _, err := New(ss.params); err != nil {
			t.Fatalf("New on good parameters: %v", err)
		}
	}
}

func corruptSecret(log []byte, label string) []byte {
	lines := strings.Split(string(log), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, label+" ") {
			b := []byte(l)
			last := len(b) - 1
			if b[last] == '0' {
				b[last] = '1'
			} else {
				b[last] = '0'
			}
			lines[i] = string(b)
		}
	}
	return []byte(strings.Join(lines, "\n"))
}

func dropLine(log []byte, label string) []byte {
	var out []string
	for _, l := range strings.Split(string(log), "\n") {
		if !strings.HasPrefix(l, label+" ") {
			out = append(out, l)
		}
	}
	return []byte(strings.Join(out, "\n"))
}

// TestHighSeq12: DTLS 1.2 sequence numbers far from zero both ways (the
// full 48 bits are on the wire).
func TestHighSeq12(t *testing.T) {
	for _, s := range allSetups() {
		if s.version != protocol.Version1_2 {
			continue
		}
		t.Run(s.String(), func(t *testing.T) {
			ss := newSession(t, s)
			cm := ss.exportClient()
			cm.SequenceNumber = 1<<40 + 7
			ss.resumeClient(s, cm)
			m, err := decodePionState(ss.params.State)
			if err != nil {
				t.Fatal(err)
			}
			// Our side: high, but below the suite's AEAD limit.
			start := min(uint64(1<<47+3), suiteByID(uint16(s.suite), false).sealLimit-10)
			m.SequenceNumber = start
			ss.reseal(m)
			ch := ss.startPump(nil)
			for range 3 {
				ss.roundTrip(ch, "high")
			}
			if got := ss.conn.NextWriteSeq(); got != 1<<48|(start+3) {
				t.Fatalf("next write %#x", got)
			}
		})
	}
}

// secretsOf returns the first 16 hex digits of every secret of a session:
// the key log's and the master secret.
func secretsOf(p Params) []string {
	var out []string
	for _, l := range strings.Split(string(p.KeyLog), "\n") {
		if f := strings.Fields(l); len(f) == 3 {
			out = append(out, f[2][:16])
		}
	}
	if m, err := decodePionState(p.State); err == nil && len(m.MasterSecret) > 8 {
		out = append(out, hexs(m.MasterSecret[:8]))
	}
	return out
}
