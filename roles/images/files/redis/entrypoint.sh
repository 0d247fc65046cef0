#!/bin/sh
# Write redis.conf (password from a secret file, persistence from the model) to /tmp
# (mode 0600, never on the command line) and run redis-server in the foreground.
set -eu
conf=/tmp/redis.conf
umask 077
{
  echo "bind 0.0.0.0"
  echo "port 6379"
  echo "dir /data"
  echo "maxmemory-policy ${REDIS_MAXMEMORY_POLICY:-noeviction}"
  [ -n "${REDIS_MAXMEMORY:-}" ] && echo "maxmemory $REDIS_MAXMEMORY"
  case "${REDIS_PERSISTENCE:-aof}" in
    aof)  echo "appendonly yes"; echo "appendfsync everysec"; echo "save 3600 1 300 100 60 10000" ;;
    rdb)  echo "appendonly no"; echo "save 3600 1 300 100 60 10000" ;;
    none) echo "appendonly no"; echo 'save ""' ;;
  esac
  if [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
    printf 'requirepass "%s"\n' "$(cat "$REDIS_PASSWORD_FILE")"
  else
    echo "protected-mode no"
  fi
} >"$conf"
exec redis-server "$conf"
