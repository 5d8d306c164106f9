#!/usr/bin/env bash
# Stops the PostgreSQL server the tests started under target/test-pg, if running.
set -u
cd "$(dirname "$0")/.."
data=target/test-pg/pg/data
[ -f "$data/PG_VERSION" ] || exit 0
data=$(readlink -f "$data")
pgctl=$(ls -d /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -1)
[ -n "$pgctl" ] || exit 0
if [ "$(id -u)" = 0 ]; then
  runuser -u postgres -- "$pgctl" stop -D "$data" -m fast -w >/dev/null 2>&1 || true
else
  "$pgctl" stop -D "$data" -m fast -w >/dev/null 2>&1 || true
fi
