#!/usr/bin/env bash
# Run a command with a throwaway PostgreSQL server: initdb in a temporary folder, a free
# port on loopback, stopped and removed afterwards. Installs the server with apt-get when
# it is missing. Exports RAPPORT_TEST_PG_URL for the test suite.
set -euo pipefail

find_bindir() {
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir; return
  fi
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return; }
  done
  command -v initdb >/dev/null 2>&1 && dirname "$(command -v initdb)"
}

BINDIR=$(find_bindir || true)
if [ -z "${BINDIR:-}" ]; then
  echo "with-postgres: PostgreSQL server not found; installing it with apt-get" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  BINDIR=$(find_bindir)
fi

PGTMP=$(mktemp -d /tmp/rapport-pg.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

RUNAS=()
if [ "$(id -u)" -eq 0 ]; then
  # initdb refuses to run as root: use an unprivileged account.
  id rapportpg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin rapportpg
  chown rapportpg "$PGTMP"
  RUNAS=(runuser -u rapportpg --)
fi

cleanup() {
  "${RUNAS[@]}" "$BINDIR/pg_ctl" -D "$PGTMP/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PGTMP"
}
trap cleanup EXIT

"${RUNAS[@]}" "$BINDIR/initdb" -D "$PGTMP/data" -A trust -U rapport -E UTF8 >/dev/null
"${RUNAS[@]}" "$BINDIR/pg_ctl" -D "$PGTMP/data" -l "$PGTMP/server.log" -w -t 60 \
  -o "-p $PORT -k $PGTMP -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
  start >/dev/null
echo "with-postgres: PostgreSQL $("$BINDIR/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT" >&2

export RAPPORT_TEST_PG_URL="postgresql://rapport@127.0.0.1:$PORT/postgres"
set +e
"$@"
status=$?
exit $status
