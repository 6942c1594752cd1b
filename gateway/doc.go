// Package gateway terminates DTLS 1.3 (RFC 9147) and DTLS 1.2 (RFC 6347 with
// the RFC 7925 profile) sessions authenticated by external PSKs and forwards
// the CoAP datagrams they carry, both ways, to backend LwM2M servers.
//
// It owns the UDP listeners, the session table, the per-session upstream
// sockets, the handshake-time policy (R3 key-exchange mode and version, R5 SNI
// binding) and the data-path counters. It does not own where keys come from
// (pskstore), how the configuration file looks (config) or what LwM2M
// messages mean (lwm2m).
//
// # Shape: one UDP socket per listener, one dtls.Conn per session over a virtual PacketConn
//
// pion/dtls v4 offers three ways to serve: dtls.Listen (pion owns the socket
// and demultiplexes by address), DetachedConn (we own the socket and feed
// datagrams to a sans-I/O connection), and dtls.Server over any
// net.PacketConn. The gateway uses the third: each listener socket is read by
// one goroutine of ours (demux.go), which routes every datagram
//
//  1. by Connection ID when the record carries one (RFC 9146 tls12_cid
//     records, RFC 9147 unified headers), so a device whose NAT binding or
//     address changed keeps its session;
//  2. otherwise by source address;
//  3. otherwise, only if it is a plaintext ClientHello, to a new session.
//
// Each session gets a sessionConn, a net.PacketConn whose reads come from the
// demultiplexer and whose writes go out of the shared listener socket, and a
// *dtls.Conn built with dtls.Server over it. Why this shape:
//
//   - (a) every datagram passes through our code before pion sees it, so a
//     ClientHello can be inspected (SNI, offered identities, modes) and
//     refused before any per-peer state exists;
//   - (b) routing by CID is ours, so it does not depend on pion's listener
//     (whose CID router is internal) and can later name a replica in the CID;
//   - (c) a *dtls.Conn, unlike a DetachedConn, has ExportState and
//     dtls.Resume, so an idle session can be parked as a few hundred bytes of
//     serialized state and resumed over a fresh sessionConn when its next
//     datagram arrives (Config.ParkAfter, park.go); the session table keys
//     (CID, address) stay while parked.
//
// The cost is pion's goroutines per Conn (its read loop and a context watcher
// per read), which the benchmark issue measures.
//
// # Policy on the handshake
//
// pion's server PSK callback sees only the offered identities. The gateway
// therefore resolves the identity in the callback (Store.Lookup under a
// lookup timeout), watches the ServerHello it sends (a DTLS 1.3 ServerHello
// with pre_shared_key and no key_share means psk_ke), and checks the
// negotiated version, suite, mode and server name in WithVerifyConnection,
// before the handshake completes and before a single datagram is forwarded.
// A refusal is a *pskstore.PolicyError carrying the rule ID.
package gateway
