// Package record is the gateway's own DTLS record layer for established
// sessions, server side: pion/dtls runs the handshake, then New takes the
// record-protection state out of pion's export (dtls.Conn.ExportState,
// State.MarshalBinary) and the key log pion wrote for the Conn, and this
// package protects and unprotects application data from then on. It is
// sans-I/O and has no goroutines: the caller hands in datagrams and a clock
// and sends what comes back, so a session costs its keys and counters (about
// 800 bytes of heap when idle) instead of a pion Conn.
//
// It owns: DTLS 1.2 records (RFC 6347 §4.1) and RFC 9146 tls12_cid records
// in epoch 1, for TLS_PSK_WITH_AES_128_CCM_8, TLS_PSK_WITH_AES_128_CCM,
// TLS_PSK_WITH_AES_128_GCM_SHA256 and TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256;
// DTLS 1.3 records (RFC 9147 §4: unified header, record-number encryption,
// sequence-number reconstruction) for TLS_AES_128_GCM_SHA256,
// TLS_AES_256_GCM_SHA384 and TLS_CHACHA20_POLY1305_SHA256; replay windows;
// the post-handshake protocol a server must answer; snapshots. It does not
// own sockets, peer addresses, routing by Connection ID, the handshake, or
// policy: the gateway does.
//
// # Using it
//
// The gateway builds a Conn with New once pion's server Conn completed its
// handshake and passed the policy. Per datagram from the device it calls
// Open and forwards Datagram.Payloads; it moves the device's address only
// when Datagram.Newer (RFC 9146 §6, RFC 9147 §9) and sends Datagram.Replies
// to the session's current address (never to an unauthenticated source, so
// nothing can be reflected at a third party). Per datagram to the device it
// calls Seal. It calls Poll at NextPoll (or on a coarse timer) for
// retransmissions and to expire late-handshake state, Release on sessions
// idle for a while, and CloseNotify when it ends a session. A Conn is safe
// for concurrent use.
//
// # Late handshake records
//
// The handshake's last flight may be lost after pion considered it done:
//
//   - DTLS 1.2: the client retransmits its final flight when our
//     ChangeCipherSpec+Finished was lost. An authenticated epoch-1 Finished
//     from the client makes Open return Params.FinalFlight verbatim (RFC 6347
//     §4.2.4). The flight is kept until the client's first application data
//     (proof it has ours) or for hsKeep (2 minutes).
//   - DTLS 1.3: the client retransmits its Finished (epoch 2) when the
//     server's ACK was lost. Open authenticates it with the client handshake
//     traffic secret from the key log and answers with an ACK in the
//     application epoch (RFC 9147 §7). Those keys are kept for hsKeep (2
//     minutes) or until the client's first KeyUpdate, whichever comes first.
//
// Only an authenticated, non-replayed record triggers such a reply, and at
// most one per replyInterval (500 ms) of caller time.
//
// # DTLS 1.3 post-handshake messages
//
// A KeyUpdate from the peer (RFC 9147 §8) is acknowledged and installs the
// next read epoch; the previous one stays readable for prevKeep (30 s) for
// reordered records. With update_requested, our own KeyUpdate goes out with
// the ACK (unless one of ours is already pending, which answers the
// request). Our KeyUpdate (UpdateKeys, or Seal by itself at three quarters
// of a key's AEAD limit) is retransmitted by Poll until acknowledged (1 s,
// doubling to 60 s), and the write keys change only on its ACK
// (Datagram.KeysChanged). NewConnectionID and RequestConnectionID are
// acknowledged and ignored: the gateway keeps routing by the CID it issued
// and writing the peer's CID from the handshake (RFC 9147 §9 says SHOULD
// answer RequestConnectionID; pion has no API to send it). Post-handshake
// messages are processed whole and in message_seq order; a fragmented or
// out-of-order one is not acknowledged, so the peer retransmits it.
//
// # Limits
//
// Seal refuses (ErrLimit) past the 48-bit sequence space and past each
// key's AEAD confidentiality limit (RFC 9147 §4.5.3: 2^24.5 records for
// AES-GCM; 2^23 for AES-CCM, which pion also reports for DTLS 1.2). A DTLS
// 1.2 session at its limit needs a new handshake. DTLS 1.3 read keys enforce
// the 2^36 integrity limit (Open drops with ErrLimit). For 1.2 CCM_8 the
// 2^7 integrity limit of RFC 9147 Appendix B.3 is counted (Stats) but not
// enforced: enforcing it would let anyone who knows a session's address or
// CID end it with 128 forged datagrams; the gateway may apply a policy.
//
// # Keys as bytes, ciphers on demand (measured)
//
// Each direction holds its raw key material; the AES key schedules, GCM
// tables, CCM state and HMAC are built on first use and dropped by Release.
// Measured on this project's 2-core machine with 10,000 Conns after
// runtime.GC (BenchmarkHeapPerConn): about 750 B per idle 1.3 session and
// 830 B per idle 1.2 session; with ciphers instantiated, 3.3 KB (1.3
// AES-GCM), 2.0 KB (1.2 CCM), 2.4 KB (1.2 GCM), 3.9 KB (1.2 CBC), 0.8 KB
// (ChaCha20). Open and Seal of a 100-byte record take 0.2-0.8 µs with zero
// allocations when instantiated (BenchmarkOpen, BenchmarkSeal); from raw
// bytes, 0.5-3.6 µs and 1-3 allocations (CBC: 10). So ciphers are cached
// while a session is busy and the gateway releases idle sessions, which
// meets the 2 KB per idle session target.
//
// # Persistence
//
// MarshalBinary is a compact versioned snapshot (format in snapshot.go;
// 130 bytes for a 1.3 AES-128 session with CIDs, 179 while it holds its
// handshake read keys; pion's gob is 1.6 KB). A write sequence
// number must never be used twice under one key, across crashes too: the
// gateway persists a snapshot and reserves a block of record numbers above
// NextWriteSeq before sealing past the previous reservation, persists again
// whenever Datagram.KeysChanged, and after a crash restores the last
// snapshot and calls ReserveWriteSeq with the end of the reservation. For
// DTLS 1.3 keep blocks well below 2^15 records: the peer reconstructs
// sequence numbers from 16 bits.
package record
