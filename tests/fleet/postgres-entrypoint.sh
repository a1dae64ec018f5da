#!/bin/sh
# Entrypoint of the buyonce-ci/postgres stand-in (tests/fleet/base-images.sh): the part of the
# official postgres image's interface docker/compose.yaml uses. On an empty $PGDATA: initdb with
# POSTGRES_USER as the superuser and the password from POSTGRES_PASSWORD_FILE, password
# (scram-sha-256) authentication from the network, and the database POSTGRES_DB. Then the
# server, on every address, in the foreground.
set -eu
: "${PGDATA:?}"
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile="${POSTGRES_PASSWORD_FILE:?POSTGRES_PASSWORD_FILE must name the password file}"
  initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 >/dev/null
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  if [ "$db" != postgres ]; then
    createdb -U "$user" "$db"
  fi
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "initialised $PGDATA: user $user, database $db"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
