#!/usr/bin/env bash
# A throwaway PostgreSQL server for the service's tests.
#   scripts/ci_postgres.sh start DIR   installs Debian's `postgresql` if needed (as root), starts a
#                                      server in DIR (initdb, unix socket + 127.0.0.1 on a free
#                                      port, trust auth) and prints its SQLAlchemy URL
#   scripts/ci_postgres.sh stop DIR    stops it and removes DIR
set -euo pipefail
cmd=${1:?usage: ci_postgres.sh start|stop DIR}
dir=${2:?usage: ci_postgres.sh start|stop DIR}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

as_owner() {  # run as the unprivileged `postgres` user when we are root (initdb refuses root)
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
  if [ -z "$(pg_bin)" ]; then
    if [ "$(id -u)" != 0 ]; then echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
  fi
  bin=$(pg_bin)
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_owner "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 >"$dir/initdb.log" 2>&1
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-k $dir -p $port -c listen_addresses=127.0.0.1 -c max_connections=200" start >&2
  echo "postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
  ;;
stop)
  bin=$(pg_bin)
  if [ -d "$dir/data" ]; then as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true; fi
  rm -rf "$dir"
  ;;
*) echo "usage: ci_postgres.sh start|stop DIR" >&2; exit 2 ;;
esac
