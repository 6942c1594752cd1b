#!/usr/bin/env bash
# bench/run.sh [--smoke|--quick] — the benchmarks in one command (make bench).
#
# Builds the gateway, the raw pion echo server (bench/pionecho), the
# forwarding floor (bench/floor), the load tool (cmd/devsim) and the runner
# (bench/runner), then runs every comparison side by side on loopback and
# prints one table. The full run writes bench/BENCHMARKS.md and takes about
# 30 minutes on 2 cores (its scale step holds 100,000 sessions: about 2 GB
# of memory for the gateway and the devices); --quick gives indicative
# numbers at medium sizes in about ten minutes; --smoke runs every
# measurement at a tiny size in seconds and exits 0 only if every step
# worked (for CI). Needs Linux (/proc; /proc/slabinfo as root for the
# kernel memory per socket), Go, and libcoap's coap-server-gnutls
# (apt-get install -y libcoap3-bin). Set GATEWAY_BIN to measure a prebuilt
# binary.
set -euo pipefail

size=""
case "${1:-}" in
  "") ;;
  --smoke) size="--smoke" ;;
  --quick) size="--quick" ;;
  *) echo "usage: bench/run.sh [--smoke|--quick]" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
work=$(mktemp -d "${TMPDIR:-/tmp}/gwbench.XXXXXX")
keep=0
trap '[ "$keep" = 1 ] || rm -rf "$work"' EXIT
bin="$work/bin"
mkdir -p "$bin"
# GATEWAY_BIN=path measures a gateway binary built elsewhere (a release, a
# branch) instead of building ./cmd/gateway.
if [ -n "${GATEWAY_BIN:-}" ]; then
  cp "$GATEWAY_BIN" "$bin/gateway"
else
  go build -o "$bin/gateway" ./cmd/gateway
fi
for p in pionecho:./bench/pionecho floor:./bench/floor devsim:./cmd/devsim runner:./bench/runner; do
  go build -o "$bin/${p%%:*}" "${p#*:}"
done

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if ! git diff --quiet HEAD 2>/dev/null || [ -n "$(git ls-files --others --exclude-standard 2>/dev/null | head -1)" ]; then
  commit="$commit + uncommitted changes"
fi

md=()
if [ -z "$size" ]; then # --quick and --smoke leave BENCHMARKS.md alone
  md=(--md bench/BENCHMARKS.md)
fi
status=0
# The runner bounds every step itself; timeout is the last resort.
timeout 5400 "$bin/runner" --bin "$bin" --work "$work" --commit "$commit" $size "${md[@]}" || status=$?
if [ "$status" -ne 0 ]; then
  keep=1
  echo "bench/run.sh: failed (status $status); logs kept in $work" >&2
fi
exit "$status"
