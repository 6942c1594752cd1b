#!/usr/bin/env bash
# The whole test suite, runnable on a fresh Debian machine with Go installed.
# It installs what the tests need (libcoap3-bin for the real CoAP peers,
# postgresql for the shared store, file, wolfSSL's example client built from
# Debian's source package) when run as root, and says what to install
# otherwise; it starts a throwaway PostgreSQL cluster on loopback.
# Nothing is skipped: GATEWAY_REQUIRE_PG=1 turns a PostgreSQL test that
# would skip into a failure. Everything it writes goes to a directory of
# its own run (mktemp), removed at exit, so two runs never share a path.
set -euo pipefail
cd "$(dirname "$0")/.."

run_dir=$(mktemp -d "${TMPDIR:-/tmp}/gateway-test.XXXXXX")
# The PostgreSQL server runs as the postgres user (as root) and must reach
# its data directory below this one: traversal only, no listing.
chmod 0711 "$run_dir"
export GATEWAY_PG_DIR=$run_dir/pg
export GATEWAY_REQUIRE_PG=1
cleanup() {
  scripts/pg.sh stop >/dev/null 2>&1 || true
  rm -rf "$run_dir"
}
trap cleanup EXIT

need_pkgs=()
for bin in coap-client-gnutls coap-client-openssl coap-server-notls coap-client-notls; do
  command -v "$bin" >/dev/null 2>&1 || { need_pkgs+=(libcoap3-bin); break; }
done
command -v file >/dev/null 2>&1 || need_pkgs+=(file) # deploy/build-static.sh checks the binary is static
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pkgs+=(postgresql) # pskstore/postgres tests
if ((${#need_pkgs[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "== installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "missing ${need_pkgs[*]}: run 'sudo apt-get install -y ${need_pkgs[*]}' or run 'make test' as root" >&2
    exit 1
  fi
fi

# wolfSSL's example client, the DTLS 1.3 peer of integration/wolfssl_test.go:
# built once from Debian's source package (about a minute) into a cache
# outside the repository, reused afterwards; without root and without a
# cached build this fails and says what to run.
echo "== wolfSSL example client (scripts/wolfssl/build.sh)"
scripts/wolfssl/build.sh >/dev/null

# A throwaway PostgreSQL cluster for pskstore/postgres (and the replica
# tests): started here, stopped on exit.
echo "== starting PostgreSQL"
pg_env=$(scripts/pg.sh start) # a failed start ends the run here (set -e)
eval "$pg_env"

# The independent LwM2M server (Telefonica's lwm2m-node-lib) that
# integration/lwm2m_interop_test.go puts behind the gateway, installed
# exactly as integration/node/package-lock.json pins it.
echo "== npm ci (integration/node: lwm2m-node-lib)"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "node or npm not found: install nodejs and npm (e.g. 'apt-get install -y nodejs npm'), then run 'make test'" >&2
    exit 1
  fi
fi
npm ci --prefix integration/node --no-audit --no-fund

echo "== go mod tidy -diff (go.mod and go.sum as go mod tidy leaves them)"
go mod tidy -diff

echo "== go vet"
go vet ./...

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt needed:" >&2; echo "$unformatted" >&2; exit 1
fi

echo "== go test -race (all packages)"
go test -race -count=1 -timeout 20m ./...

echo "== benchmark smoke run (every measurement at tiny size)"
./bench/run.sh --smoke > "$run_dir/bench-smoke.log" 2>&1 || { cat "$run_dir/bench-smoke.log" >&2; exit 1; }
tail -n 3 "$run_dir/bench-smoke.log"

echo "== gateway package on the fallback data plane (sessions.data_plane: pion)"
GATEWAY_TEST_DATA_PLANE=pion go test -count=1 -timeout 10m ./gateway/

echo "== load-sensitive tests without -race (build tag !race)"
go test -count=1 -run 'Flood' -v ./gateway/ | grep -E '^(=== RUN|--- |\s+flood_test|ok|FAIL)'

# Count-based: a time budget makes the fuzz coordinator fail with "context
# deadline exceeded" when a worker is mid-input as the time runs out.
echo "== fuzz smoke (${FUZZTIME:=3000x} per target)"
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    echo "-- $pkg $target"
    if ! out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" 2>&1); then
      echo "$out" >&2; exit 1
    fi
  done
done
echo "== all tests passed"
