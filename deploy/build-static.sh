#!/usr/bin/env bash
# build-static.sh OUTDIR — build the gateway binary exactly as deploy/Dockerfile
# builds it (same command, same flags) into OUTDIR/gateway, then prove it is
# a static executable: `file` must say "statically linked" and `ldd` must say
# "not a dynamic executable". This is CI's proof of what the image contains,
# since CI cannot build images (deploy/binary_test.go runs it).
#
# Needs: go (the version of go.mod), file, ldd (libc-bin).
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
for tool in go file ldd; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$0: $tool not found (Debian: apt-get install -y file libc-bin)" >&2
    exit 1
  fi
done

root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
cd "$root"

export GOTOOLCHAIN=local
# The same line as the builder stage of deploy/Dockerfile, with /out replaced
# by the output directory; TestDockerfileMatchesBuildScript compares them.
# VERSION and COMMIT stamp the binary as the Dockerfile's build arguments do
# (unset: the module version, "(devel)" for a checkout).
VERSION=${VERSION:-}
COMMIT=${COMMIT:-}
CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" -o "$out/gateway" ./cmd/gateway

bin="$out/gateway"
desc=$(file -b "$bin")
case "$desc" in
  *"statically linked"*) ;;
  *) echo "$0: $bin is not statically linked: $desc" >&2; exit 1 ;;
esac
# ldd exits non-zero for a static binary; its message is what counts.
ldd_out=$(LC_ALL=C ldd "$bin" 2>&1 || true)
case "$ldd_out" in
  *"not a dynamic executable"*) ;;
  *) echo "$0: ldd lists dynamic dependencies of $bin:" >&2; echo "$ldd_out" >&2; exit 1 ;;
esac
echo "$bin: $desc"
