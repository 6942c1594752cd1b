#!/usr/bin/env bash
# wolfSSL's example client, a DTLS 1.3 peer not written here, built from
# Debian's source package for integration/wolfssl_test.go (issue 10).
#
#   scripts/wolfssl/build.sh           build it once (root), print its path
#   scripts/wolfssl/build.sh --cached  print its path if built, else fail
#
# Debian ships libwolfssl built without DTLS 1.3, PSK or Connection IDs, and
# no example client, so the client is built from the source package that
# `apt-get source wolfssl` fetches (with Debian's own patches), configured
# with what the gateway needs. Three patches are applied on top:
# coap-register.patch makes the client's first message a CoAP LwM2M Register
# instead of "hello wolfssl!", which a CoAP gateway drops;
# dtls12-psk-key.patch gives the client a 32-byte DTLS 1.2 key instead of the
# 4-byte one compiled in, which R1 refuses (its DTLS 1.3 key is wolfSSL's
# own); dtls13-chacha-counter.patch fixes the one wolfSSL bug found here
# that touches DTLS itself: 5.5.4 masks DTLS 1.3 record numbers under
# ChaCha20 with a byte-reversed counter on Linux (glibc defines BIG_ENDIAN
# on every host), so TLS_CHACHA20_POLY1305_SHA256 fails against pion (the
# gateway's handshake stack) and the gateway's own record layer; later
# wolfSSL releases read it little endian, as the fix does.
#
# The build (about a minute on 2 cores) goes into a cache directory outside
# the repository, named after the configuration and the patches, and is reused
# while both stay the same: GATEWAY_PEER_CACHE, default
# /var/cache/lwm2m-gateway-test. Building needs root (apt-get: a deb-src entry
# for this Debian release when there is none, autoconf, automake, libtool);
# without root and without a cached build it fails and says what to run.
# Everything but the client's path goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
patches=("$here"/*.patch)

# DTLS 1.3 needs DTLS and TLS 1.3 (on by default); Connection IDs need DTLS
# 1.3 in this version (5.5.4: RFC 9146 CIDs for DTLS 1.2 came later).
# curve25519 lets the client offer an X25519 key share as well as P-256;
# aesccm adds the RFC 7925 CCM suites and WOLFSSL_STATIC_PSK the DTLS 1.2
# plain-PSK suites (no configure switch: wolfSSL builds only (EC)DHE-PSK by
# default). Static, so the client needs no LD_LIBRARY_PATH; no wolfCrypt
# test and benchmark programs, which are not used and would double the
# build time.
configure_flags=(
  --enable-dtls --enable-dtls13 --enable-dtlscid --enable-psk
  --enable-curve25519 --enable-aesccm
  --enable-static --disable-shared --disable-crypttests
  CPPFLAGS=-DWOLFSSL_STATIC_PSK
)

cache_root=${GATEWAY_PEER_CACHE:-/var/cache/lwm2m-gateway-test}
stamp=$( (printf '%s\n' "${configure_flags[@]}"; cat "${patches[@]}") | sha256sum | cut -c1-16)
dest=$cache_root/wolfssl-$stamp

if [ -x "$dest/client" ]; then
  echo "$dest/client"
  exit 0
fi
if [ "${1:-}" = --cached ]; then
  echo "wolfSSL example client not built (no $dest/client): run 'sudo scripts/wolfssl/build.sh' or 'make test' as root" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "wolfSSL example client not built (no $dest/client) and building it needs root (apt-get source, apt-get install): run 'sudo scripts/wolfssl/build.sh' or 'make test' as root" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
start=$(date +%s)

# A deb-src entry for this release, derived from the deb entries apt already
# uses (same mirrors, suites and keys), when apt knows no wolfssl source.
if ! apt-cache showsrc wolfssl 2>/dev/null | grep '^Package: wolfssl' >/dev/null; then # no -q: with pipefail an early exit of grep fails the pipe
  src_list=/etc/apt/sources.list.d/lwm2m-gateway-deb-src.sources
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed 's/^Types:.*$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$src_list"
  elif grep -qs '^deb ' /etc/apt/sources.list; then
    src_list=/etc/apt/sources.list.d/lwm2m-gateway-deb-src.list
    grep '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' >"$src_list"
  else
    . /etc/os-release
    cat >"$src_list" <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $VERSION_CODENAME $VERSION_CODENAME-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: $VERSION_CODENAME-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  fi
  echo "== wolfssl: added $src_list (deb-src for apt-get source)" >&2
  apt-get update -qq >&2
fi

need=()
for tool in autoconf:autoconf automake:automake libtoolize:libtool dpkg-source:dpkg-dev gcc:gcc make:make patch:patch; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
if ((${#need[@]})); then
  echo "== wolfssl: installing ${need[*]}" >&2
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/wolfssl-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
# apt-get source as root downloads unsandboxed and says so; -qq keeps the rest quiet.
apt-get source -qq wolfssl >build.log 2>&1 || { cat build.log >&2; exit 1; }
dsc=$(ls wolfssl_*.dsc)
version=${dsc#wolfssl_}
version=${version%.dsc}
cd wolfssl-*/
echo "== wolfssl $version: patching, configuring (${configure_flags[*]}), building examples/client/client" >&2
for p in "${patches[@]}"; do
  patch -p1 --forward --quiet <"$p" >&2
done
{
  ./autogen.sh
  ./configure "${configure_flags[@]}"
  make -j"$(nproc)" examples/client/client
} >>"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; exit 1; }

# The client looks for ./certs/dh2048.pem to find "the wolfSSL root" and
# chdirs there (ChangeToWolfRoot): it runs with the cache directory as its
# working directory.
mkdir -p "$cache_root"
tmp=$(mktemp -d "$cache_root/.wolfssl-$stamp.XXXXXX")
mkdir "$tmp/certs"
cp examples/client/client "$tmp/client"
cp certs/dh2048.pem "$tmp/certs/"
echo "$version" >"$tmp/VERSION"
printf '%s\n' "${configure_flags[@]}" >"$tmp/CONFIGURE"
cp "${patches[@]}" "$tmp/"
chmod -R a+rX "$tmp"
if ! mv -T "$tmp" "$dest" 2>/dev/null; then
  rm -rf "$tmp" # built concurrently by another run: keep the first
fi
echo "== wolfssl $version built in $(($(date +%s) - start)) s into $dest" >&2
echo "$dest/client"
