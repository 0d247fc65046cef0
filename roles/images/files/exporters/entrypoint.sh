#!/bin/sh
# Run one exporter: opsdeck-exporter <redis|postgres|nginx|node> [flags...].
# Passwords come from secret files (REDIS_PASSWORD_FILE, DATA_SOURCE_PASS_FILE), never
# from the command line or the Compose file.
set -eu
kind=${1:?usage: opsdeck-exporter redis|postgres|nginx|node [flags]}
shift
case "$kind" in
  redis)
    if [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
      REDIS_PASSWORD=$(cat "$REDIS_PASSWORD_FILE"); export REDIS_PASSWORD
    fi
    exec /usr/bin/prometheus-redis-exporter "$@" ;;
  postgres) exec /usr/bin/prometheus-postgres-exporter "$@" ;;
  nginx) exec /usr/bin/prometheus-nginx-exporter "$@" ;;
  node) exec /usr/bin/prometheus-node-exporter "$@" ;;
  *) echo "opsdeck-exporter: unknown exporter $kind" >&2; exit 2 ;;
esac
