#!/usr/bin/env bash
# Run the registry's HTTP test suite against a throwaway PostgreSQL (Debian's `postgresql` package):
# the same code and migrations as the SQLite default. Installs PostgreSQL when apt is available.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$PGBIN" ]; then
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
PORT=${PGPORT:-54329}
DIR=$(mktemp -d /tmp/vicugna-pg.XXXXXX)
# PostgreSQL refuses to run as root: use the `postgres` account then.
RUN=(); if [ "$(id -u)" = 0 ]; then chown postgres "$DIR"; RUN=(runuser -u postgres --); fi
"${RUN[@]}" "$PGBIN/initdb" -D "$DIR/db" -U postgres -A trust >/dev/null
"${RUN[@]}" "$PGBIN/pg_ctl" -D "$DIR/db" -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off" -l "$DIR/log" -w start >/dev/null
trap '"${RUN[@]}" "$PGBIN/pg_ctl" -D "$DIR/db" -m fast stop >/dev/null; rm -rf "$DIR"' EXIT
echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT"
# the registry suite's binary exactly as `make test` built it (selecting one test target would
# resolve features differently and rebuild half the dependency tree)
bin=$(cargo test --workspace --all-targets --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "registry" and m.get("executable"):
        print(m["executable"])')
[ -n "$bin" ] || { echo "test-postgres: no registry test binary" >&2; exit 1; }
(cd server && VICUGNA_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PORT/postgres" "$bin" "$@")
