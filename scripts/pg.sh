#!/usr/bin/env bash
# pg.sh start|stop|dsn|status — a throwaway PostgreSQL cluster for the tests
# of the PostgreSQL store. scripts/test.sh starts one per run (in its own
# temporary directory); go test starts one per test binary when none is
# given (internal/pgtest).
#
#   eval "$(scripts/pg.sh start)"   # exports GATEWAY_TEST_PG_DSN
#   go test ./pskstore/postgres/
#   scripts/pg.sh stop              # stops the cluster and deletes it
#
# start  initializes a cluster in $GATEWAY_PG_DIR (default /tmp/gateway-pg)
#        unless one exists, starts it unless it runs, creates the database
#        gateway_test, and prints one line on stdout:
#          export GATEWAY_TEST_PG_DSN='postgres://postgres@127.0.0.1:PORT/gateway_test?sslmode=disable'
#        Everything else goes to stderr, so the output can be eval'ed.
#        Running it again reuses the running cluster and prints the same line.
# dsn    prints the bare DSN of the running cluster (exit 1 if none).
# stop   stops the cluster and removes its directory; a no-op if none.
# status exits 0 if the cluster runs.
#
# The server listens on a unix socket in the directory and on 127.0.0.1 at a
# free port, never on other addresses; authentication is "trust" for these
# local connections only. fsync is off: the data is disposable. Run as root,
# the server runs as the postgres OS user (initdb refuses root). The newest
# /usr/lib/postgresql/*/bin is used; without one it says what to install.
set -euo pipefail

DIR=${GATEWAY_PG_DIR:-/tmp/gateway-pg}
DATA=$DIR/data
DB=gateway_test

log() { echo "pg.sh: $*" >&2; }

find_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$d" ] || [ ! -x "$d/initdb" ] || [ ! -x "$d/pg_ctl" ]; then
    log "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin; install them with:"
    echo "apt-get install -y postgresql" >&2
    exit 1
  fi
  BIN=$d
}

# as_pg runs a command as the cluster's owner: postgres when we are root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

running() {
  [ -f "$DATA/PG_VERSION" ] && as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

port() { cat "$DIR/port"; }

dsn() { echo "postgres://postgres@127.0.0.1:$(port)/$DB?sslmode=disable"; }

psql_admin() {
  "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$(port)" -U postgres -d postgres "$@"
}

# free_port prints a TCP port on 127.0.0.1 that nothing listens on.
free_port() {
  local p i
  for i in $(seq 1 100); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  log "no free port found"
  return 1
}

init_cluster() {
  rm -rf "$DIR"
  mkdir -p "$DIR"
  chmod 0755 "$DIR"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$DIR"
  fi
  log "initdb in $DATA ($BIN)"
  as_pg "$BIN/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C --auth=trust --no-sync >"$DIR/initdb.log" 2>&1 ||
    { cat "$DIR/initdb.log" >&2; exit 1; }
  # Only local connections exist, and they are trusted.
  as_pg tee "$DATA/pg_hba.conf" >/dev/null <<'EOF'
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   127.0.0.1/32  trust
EOF
}

start() {
  find_bin
  if running; then
    log "reusing the cluster in $DIR (port $(port))"
  else
    [ -f "$DATA/PG_VERSION" ] || init_cluster
    local attempt p
    for attempt in 1 2 3 4 5; do
      p=$(free_port)
      as_pg tee "$DATA/postgresql.auto.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $p
unix_socket_directories = '$DIR'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
      echo "$p" | as_pg tee "$DIR/port" >/dev/null
      log "starting PostgreSQL on 127.0.0.1:$p and $DIR"
      if as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 60 start >/dev/null 2>&1; then
        break
      fi
      if [ "$attempt" = 5 ]; then
        log "PostgreSQL did not start; its log:"
        tail -n 30 "$DIR/server.log" >&2 || true
        exit 1
      fi
      log "start failed (port $p taken?), retrying"
    done
  fi
  if [ "$(psql_admin -At -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
    psql_admin -c "CREATE DATABASE $DB"
  fi
  echo "export GATEWAY_TEST_PG_DSN='$(dsn)'"
}

stop() {
  find_bin
  if running; then
    log "stopping the cluster in $DIR"
    as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
  fi
  rm -rf "$DIR"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
dsn)
  find_bin
  running || { log "no cluster runs in $DIR: run '$0 start'"; exit 1; }
  dsn
  ;;
status)
  find_bin
  running
  ;;
*)
  echo "usage: $0 start|stop|dsn|status" >&2
  exit 2
  ;;
esac
