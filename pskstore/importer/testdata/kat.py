#!/usr/bin/env python3
"""Known-answer vectors for RFC 9258 PSK importers, written independently
from the Go package (pskstore/importer) straight from the RFC text:

  RFC 5869 §2.2/§2.3  HKDF-Extract, HKDF-Expand
  RFC 8446 §7.1       HKDF-Expand-Label, HkdfLabel
  RFC 9147 §5.9       DTLS 1.3 uses the label prefix "dtls13" instead of "tls13 "
  RFC 9258 §5.1       ImportedIdentity, epskx, ipskx
  DESIGN.md R4/R6     the project's context: client and server names, each
                      a uint16-length-prefixed byte string

Only the Python standard library is used (hashlib, hmac, struct, json).

Regenerate (from the repository root):

    python3 pskstore/importer/testdata/kat.py > pskstore/importer/testdata/kat.json

The output is deterministic; commit kat.json together with this script.
The Go test (kat_test.go) only reads kat.json, so it never depends on python3.
"""

import hashlib
import hmac
import json
import struct
import sys

HASHES = {"sha256": hashlib.sha256, "sha384": hashlib.sha384}

# RFC 9258 §10 (IANA "TLS KDF Identifiers") and the protocol versions.
TLS13, DTLS13 = 0x0304, 0xFEFC
KDF_HASH = {0x0001: "sha256", 0x0002: "sha384"}


# --- RFC 5869 ---------------------------------------------------------------

def hkdf_extract(hname, salt, ikm):
    h = HASHES[hname]
    if salt is None:  # "if not provided, it is set to a string of HashLen zeros"
        salt = b"\x00" * h().digest_size
    return hmac.new(salt, ikm, h).digest()


def hkdf_expand(hname, prk, info, length):
    h = HASHES[hname]
    n = -(-length // h().digest_size)
    assert n <= 255
    okm, t = b"", b""
    for i in range(1, n + 1):
        t = hmac.new(prk, t + info + bytes([i]), h).digest()
        okm += t
    return okm[:length]


# --- RFC 8446 §7.1 (and RFC 9147 §5.9) ---------------------------------------

def hkdf_expand_label(hname, secret, label, context, length, prefix=b"tls13 "):
    full = prefix + label
    assert 7 <= len(full) <= 255 and len(context) <= 255
    hkdf_label = (struct.pack(">H", length)
                  + bytes([len(full)]) + full
                  + bytes([len(context)]) + context)
    return hkdf_expand(hname, secret, hkdf_label, length)


def self_check():
    # RFC 8448 §3 (Simple 1-RTT Handshake): early secret = HKDF-Extract(0, 0)
    # and "derive secret for handshake "tls13 derived"".
    early = hkdf_extract("sha256", None, b"\x00" * 32)
    assert early.hex() == "33ad0a1c607ec03b09e6cd9893680ce210adf300aa1f2660e1b22e10f170f92a", early.hex()
    derived = hkdf_expand_label("sha256", early, b"derived", hashlib.sha256(b"").digest(), 32)
    assert derived.hex() == "6f2615a108c702c5678f54fc9dbab69716c076189c48250cebeac3576c3611ba", derived.hex()


# --- RFC 9258 §5.1 -------------------------------------------------------------

def imported_identity(external_identity, context, target_protocol, target_kdf):
    # struct {
    #    opaque external_identity<1...2^16-1>;
    #    opaque context<0..2^16-1>;
    #    uint16 target_protocol;
    #    uint16 target_kdf;
    # } ImportedIdentity;
    assert 1 <= len(external_identity) <= 0xFFFF and len(context) <= 0xFFFF
    return (struct.pack(">H", len(external_identity)) + external_identity
            + struct.pack(">H", len(context)) + context
            + struct.pack(">HH", target_protocol, target_kdf))


def label_prefix(target_protocol):
    # RFC 9258 §5.1: "HKDF-Expand-Label uses a label corresponding to
    # ImportedIdentity.target_protocol", "tls13 " (RFC 8446 §7.1) or
    # "dtls13" (RFC 9147 §5.9).
    return {TLS13: b"tls13 ", DTLS13: b"dtls13"}[target_protocol]


def import_psk(epsk, epsk_hash, ident):
    target_protocol, target_kdf = struct.unpack(">HH", ident[-4:])
    length = HASHES[KDF_HASH[target_kdf]]().digest_size  # L of target_kdf
    # "The hash function used for HKDF is that which is associated with the
    # EPSK. It is not the hash function associated with target_kdf."
    epskx = hkdf_extract(epsk_hash, None, epsk)  # HKDF-Extract(0, epsk)
    ipskx = hkdf_expand_label(epsk_hash, epskx, b"derived psk",
                              HASHES[epsk_hash](ident).digest(), length,
                              label_prefix(target_protocol))
    return epskx, ipskx


def peers_context(client, server):
    return (struct.pack(">H", len(client)) + client
            + struct.pack(">H", len(server)) + server)


def vectors():
    k32 = bytes(range(0x00, 0x20))            # 32-byte EPSK
    k48 = bytes(range(0xA0, 0xD0))            # 48-byte EPSK
    ident = b"lwm2m-device-0001"
    ctx = peers_context(b"urn:dev:ops:32473-Node-1", b"lwm2m.example.com")
    long_ctx = peers_context(b"urn:imei:" + b"3" * 400, b"bs." + b"x" * 600 + b".example")
    binary_ident = bytes([0x00, 0xFF, 0x80, 0xC3, 0x28, 0x0A, 0x00, 0x7F, 0xFE])
    return [
        ("sha256-epsk/dtls13/sha256", k32, "sha256", ident, ctx, DTLS13, 0x0001),
        ("sha256-epsk/tls13/sha256", k32, "sha256", ident, ctx, TLS13, 0x0001),
        ("sha256-epsk/dtls13/sha384", k32, "sha256", ident, ctx, DTLS13, 0x0002),
        ("sha384-epsk/dtls13/sha256", k48, "sha384", ident, ctx, DTLS13, 0x0001),
        ("sha384-epsk/tls13/sha384", k48, "sha384", ident, ctx, TLS13, 0x0002),
        ("empty-context/dtls13/sha256", k32, "sha256", ident, b"", DTLS13, 0x0001),
        ("long-context/dtls13/sha256", k32, "sha256", ident, long_ctx, DTLS13, 0x0001),
        ("binary-identity/dtls13/sha384", k48[:16], "sha256", binary_ident, b"\x00", DTLS13, 0x0002),
    ]


def main():
    self_check()
    out = []
    for name, epsk, h, ext, ctx, proto, kdf in vectors():
        ident = imported_identity(ext, ctx, proto, kdf)
        epskx, ipskx = import_psk(epsk, h, ident)
        out.append({
            "name": name,
            "epsk": epsk.hex(),
            "epsk_hash": h,
            "external_identity": ext.hex(),
            "context": ctx.hex(),
            "target_protocol": proto,
            "target_kdf": kdf,
            "label_prefix": label_prefix(proto).decode(),
            "imported_identity": ident.hex(),
            "epskx": epskx.hex(),
            "ipskx": ipskx.hex(),
        })
    json.dump({
        "generator": "pskstore/importer/testdata/kat.py (python3 stdlib, RFC 5869/8446/9147/9258)",
        "vectors": out,
    }, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
