package gateway

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/pion/dtls/v4/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v4/pkg/protocol"
	"golang.org/x/crypto/cryptobyte"
)

// A session snapshot is everything needed to continue an established
// session in another process: the record layer's state (internal/record's
// own snapshot: keys, epochs, replay window, CIDs), the write-sequence
// reservation, the identity and its LwM2M registration, the device's
// address, the listener, and the local address of each upstream socket, so
// the backend keeps seeing the same device address. The gateway seals it
// with the key store's KEK (purpose "gateway session snapshot v1", the
// identity as associated data) before any store sees it.
//
// Format, version 1, integers big-endian; strings and byte strings carry a
// uint8 (u8) or uint16 (u16) length prefix:
//
//	u8  version (1)
//	16  session id
//	16  SHA-256 of the PSK, truncated (a rotated key refuses the restore)
//	i64 saved, i64 last activity, i64 established (unix ns)
//	u16 identity; u16 endpoint; u8 backend; u8 server name
//	u16 DTLS version, u16 cipher suite, u8 psk_ke
//	u8  listener index (Config.Listeners); u8 listener address ("127.0.0.1:5684"); u8 device address
//	u8  count, then u8 each: Connection IDs routed to the session
//	u64 write-sequence reservation (record layer epoch<<48 | seq)
//	u16 record layer state
//	u16 registration location; u32 lifetime (s)
//	u8  count, then for each upstream socket: u8 backend, u8 local address
const snapshotVersion = 1

// maxSnapshotAge bounds how old a snapshot may be: nothing of a session
// survives a week (its device has long re-handshaken).
const maxSnapshotAge = 7 * 24 * time.Hour

// sessionState is a decoded snapshot.
type sessionState struct {
	id, keyHash                   [16]byte
	saved, active, established    time.Time
	identity                      []byte
	endpoint, backend, serverName string
	params                        sessionParams
	listenerIndex                 uint8
	listener                      string
	peer                          netip.AddrPort
	cids                          [][]byte
	limit                         uint64
	record                        []byte
	location                      string
	lifetime                      time.Duration
	ups                           []upstreamState
}

type upstreamState struct {
	name  string
	local netip.AddrPort
}

var errSnapshot = errors.New("gateway: bad session snapshot")

func (st *sessionState) encode() []byte {
	var b cryptobyte.Builder
	b.AddUint8(snapshotVersion)
	b.AddBytes(st.id[:])
	b.AddBytes(st.keyHash[:])
	for _, t := range []time.Time{st.saved, st.active, st.established} {
		b.AddUint64(uint64(t.UnixNano()))
	}
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(st.identity) })
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(st.endpoint)) })
	addU8String(&b, st.backend)
	addU8String(&b, st.serverName)
	b.AddUint16(uint16(st.params.version))
	b.AddUint16(uint16(st.params.suite))
	psk := uint8(0)
	if st.params.pskOnly {
		psk = 1
	}
	b.AddUint8(psk)
	b.AddUint8(st.listenerIndex)
	addU8String(&b, st.listener)
	addU8String(&b, st.peer.String())
	b.AddUint8(uint8(len(st.cids)))
	for _, c := range st.cids {
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(c) })
	}
	b.AddUint64(st.limit)
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(st.record) })
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(st.location)) })
	b.AddUint32(uint32(st.lifetime / time.Second))
	b.AddUint8(uint8(len(st.ups)))
	for _, u := range st.ups {
		addU8String(&b, u.name)
		addU8String(&b, u.local.String())
	}
	return b.BytesOrPanic()
}

func addU8String(b *cryptobyte.Builder, s string) {
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(s)) })
}

func decodeSessionState(data []byte) (*sessionState, error) {
	s := cryptobyte.String(data)
	st := &sessionState{}
	var version uint8
	var id, keyHash []byte
	if !s.ReadUint8(&version) {
		return nil, fmt.Errorf("%w: empty", errSnapshot)
	}
	if version != snapshotVersion {
		return nil, fmt.Errorf("%w: version %d, this gateway reads %d", errSnapshot, version, snapshotVersion)
	}
	var times [3]uint64
	var identity, endpoint, backend, serverName, listener, peer, record, location cryptobyte.String
	var dtlsVersion, suite uint16
	var pskOnly, ncids, nups uint8
	var lifetime uint32
	ok := s.ReadBytes(&id, 16) && s.ReadBytes(&keyHash, 16) &&
		s.ReadUint64(&times[0]) && s.ReadUint64(&times[1]) && s.ReadUint64(&times[2]) &&
		s.ReadUint16LengthPrefixed(&identity) && s.ReadUint16LengthPrefixed(&endpoint) &&
		s.ReadUint8LengthPrefixed(&backend) && s.ReadUint8LengthPrefixed(&serverName) &&
		s.ReadUint16(&dtlsVersion) && s.ReadUint16(&suite) && s.ReadUint8(&pskOnly) &&
		s.ReadUint8(&st.listenerIndex) && s.ReadUint8LengthPrefixed(&listener) && s.ReadUint8LengthPrefixed(&peer) && s.ReadUint8(&ncids)
	if !ok {
		return nil, fmt.Errorf("%w: truncated", errSnapshot)
	}
	copy(st.id[:], id)
	copy(st.keyHash[:], keyHash)
	st.saved, st.active, st.established = time.Unix(0, int64(times[0])), time.Unix(0, int64(times[1])), time.Unix(0, int64(times[2]))
	st.identity, st.endpoint, st.backend, st.serverName = []byte(identity), string(endpoint), string(backend), string(serverName)
	st.params = sessionParams{version: protocol.Version(dtlsVersion),
		suite: ciphersuite.ID(suite), pskOnly: pskOnly == 1, serverName: st.serverName}
	st.listener = string(listener)
	var err error
	if st.peer, err = netip.ParseAddrPort(string(peer)); err != nil {
		return nil, fmt.Errorf("%w: device address: %v", errSnapshot, err)
	}
	for range ncids {
		var c cryptobyte.String
		if !s.ReadUint8LengthPrefixed(&c) || len(c) == 0 {
			return nil, fmt.Errorf("%w: truncated", errSnapshot)
		}
		st.cids = append(st.cids, []byte(c))
	}
	if !s.ReadUint64(&st.limit) || !s.ReadUint16LengthPrefixed(&record) || !s.ReadUint16LengthPrefixed(&location) ||
		!s.ReadUint32(&lifetime) || !s.ReadUint8(&nups) {
		return nil, fmt.Errorf("%w: truncated", errSnapshot)
	}
	st.record, st.location, st.lifetime = []byte(record), string(location), time.Duration(lifetime)*time.Second
	for range nups {
		var name, local cryptobyte.String
		if !s.ReadUint8LengthPrefixed(&name) || !s.ReadUint8LengthPrefixed(&local) {
			return nil, fmt.Errorf("%w: truncated", errSnapshot)
		}
		ap, err := netip.ParseAddrPort(string(local))
		if err != nil {
			return nil, fmt.Errorf("%w: upstream address: %v", errSnapshot, err)
		}
		st.ups = append(st.ups, upstreamState{name: string(name), local: ap})
	}
	if !s.Empty() {
		return nil, fmt.Errorf("%w: trailing bytes", errSnapshot)
	}
	if len(st.identity) == 0 || len(st.record) == 0 {
		return nil, fmt.Errorf("%w: no identity or record state", errSnapshot)
	}
	return st, nil
}
