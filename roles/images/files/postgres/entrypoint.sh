#!/bin/sh
# Initialise the cluster on first start (database, owner and password from a secret file),
# then run postgres in the foreground.
set -eu
: "${PGDATA:=/var/lib/postgresql/data/pgdata}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${POSTGRES_MAX_CONNECTIONS:=100}"
pwfile=${POSTGRES_PASSWORD_FILE:-}
if [ -z "$pwfile" ] || [ ! -r "$pwfile" ]; then
  echo "opsdeck-postgres: POSTGRES_PASSWORD_FILE is not set or not readable" >&2
  exit 1
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  # Initialise into a scratch directory and rename it into place only when complete,
  # so an interrupted first start never leaves a half-initialised cluster behind.
  final=$PGDATA
  PGDATA=$final.init
  rm -rf "$PGDATA" && mkdir -p "$PGDATA" && chmod 700 "$PGDATA"
  initdb -D "$PGDATA" -U postgres -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k /tmp" -w start >/dev/null
  psql -q -v ON_ERROR_STOP=1 -h /tmp -U postgres -d postgres \
    -v user="$POSTGRES_USER" -v db="$POSTGRES_DB" <<SQL
\set pw \`cat "$pwfile"\`
SELECT format('CREATE ROLE %I LOGIN', :'user') WHERE :'user' <> 'postgres' \gexec
ALTER ROLE :"user" PASSWORD :'pw';
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  rm -rf "$final" && mv "$PGDATA" "$final"
  PGDATA=$final
  echo '{"component":"postgres","event":"initialised","database":"'"$POSTGRES_DB"'"}'
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -k /tmp \
  -c max_connections="$POSTGRES_MAX_CONNECTIONS" -c password_encryption=scram-sha-256
