// Package importer derives imported PSKs from an external PSK (EPSK) as
// RFC 9258 §5.1 specifies, for the project's rule R6 (DESIGN.md §3): the
// ImportedIdentity encoding, the ipskx derivation, and Import, which turns one
// pskstore.Key into one imported Key per (target protocol, target KDF).
//
// # Derivation
//
//	ImportedIdentity = { external_identity<1..2^16-1>, context<0..2^16-1>,
//	                     uint16 target_protocol, uint16 target_kdf }
//	epskx = HKDF-Extract(0, epsk)
//	ipskx = HKDF-Expand-Label(epskx, "derived psk", Hash(ImportedIdentity), L)
//
// HKDF and Hash use the EPSK's own hash (SHA-256 when it has none), never the
// target KDF's; L is the output length of target_kdf (32 for HKDF_SHA256, 48
// for HKDF_SHA384). HKDF-Expand-Label is RFC 8446 §7.1's; RFC 9258 §5.1 makes
// its label prefix follow target_protocol: "tls13 " for TLS 1.3 (0x0304) and
// "dtls13" for DTLS 1.3 (0xfefc, RFC 9147 §5.9). Note: DESIGN.md R6 says
// "tls13 " whatever the target; this package follows the RFC (see
// labelPrefix), so a device that runs its own RFC 9258 importer derives the
// same key.
//
// The known answers in testdata/kat.json come from an independent Python
// implementation, testdata/kat.py, that also checks itself against RFC 8448.
//
// # What the DTLS stack does not do
//
// RFC 9258 §5.2 also changes the PSK binder label from "ext binder" to
// "imp binder". That label lives inside the DTLS key schedule, and pion/dtls v4
// has no way to select it (DESIGN.md R6: do not fork the stack). The gateway
// therefore does not run the importer during the handshake. Instead the
// importer runs at provisioning time: the derived ipskx is provisioned to the
// device and both peers use it as an ordinary external PSK ("ext binder").
// Devices must send the marshalled ImportedIdentity bytes (Key.Identity of an
// imported Key) as their PSK identity, and must not run the importer
// themselves with the "imp binder" label, since the gateway would not accept
// that binder.
//
// # What it does not own
//
// It does not store keys and does not delete the EPSK after import (R6 says
// the store does both), and does not check store-wide rules (R4 duplicates,
// R7 collisions and the configured identity limit). An imported key carries
// its context in pskstore.Key.ImportContext (non-nil, even when empty), which
// is what lets a Group key pass pskstore.CheckKey (R4). Imported keys are
// DTLS 1.3 only (RFC 9258 §5.1: EPSKs MUST NOT be imported for (D)TLS 1.2).
package importer
