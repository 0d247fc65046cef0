#!/usr/bin/env bash
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# stream_to_file.sh DIR PREFIX SUFFIX -- COMMAND [ARG...]
#
# Runs COMMAND and streams its standard output into DIR/<PREFIX><UTC stamp><SUFFIX>, the way
# opsdeck.stack.redis_backup writes its files: a temporary file in DIR (mode 0600), fsynced,
# a <file>.sha256 beside it in sha256sum format written first, then the file renamed into place
# and DIR fsynced. A failed or empty run leaves nothing behind. Prints one JSON line:
# {"file": ..., "sha256": ..., "size": ...}.
#
# With STREAM_REPORTED_SIZE_RE set (an extended regex whose first group is a byte count),
# COMMAND's standard error must report the size of the payload; the file is cut to that size.
# `redis-cli --rdb -` needs this: writing to a pipe, it cannot remove the 40-byte end mark of a
# diskless (EOF-marked) transfer, and says "Transfer finished with success after N bytes".
set -euo pipefail
umask 077
dir=$1 prefix=$2 suffix=$3
shift 3
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "stream_to_file.sh: no command given" >&2; exit 2; }
[ -d "$dir" ] || { echo "stream_to_file.sh: $dir is not a directory" >&2; exit 2; }

stamp=$(date -u +%Y%m%dT%H%M%S.%3NZ)
name="$prefix$stamp$suffix"
serial=1
while [ -e "$dir/$name" ] || [ -e "$dir/$name.sha256" ]; do
  name="$prefix$stamp-$serial$suffix"
  serial=$((serial + 1))
done

tmp=$(mktemp -p "$dir" ".$name.XXXXXX.part")
cleanup() { rm -f -- "$tmp" "$tmp.sha256" "$tmp.err"; }
trap cleanup EXIT

if [ -n "${STREAM_REPORTED_SIZE_RE:-}" ]; then
  "$@" >"$tmp" 2>"$tmp.err" || { cat -- "$tmp.err" >&2; exit 1; }
  reported=$(sed -En "s/.*${STREAM_REPORTED_SIZE_RE}.*/\1/p" -- "$tmp.err" | tail -n 1)
  if [ -z "$reported" ]; then
    cat -- "$tmp.err" >&2
    echo "stream_to_file.sh: the command did not report the size of what it sent; no backup was kept" >&2
    exit 1
  fi
  if [ "$(stat -c %s -- "$tmp")" -lt "$reported" ]; then
    echo "stream_to_file.sh: got fewer bytes than the $reported reported; no backup was kept" >&2
    exit 1
  fi
  truncate -s "$reported" -- "$tmp"
  rm -f -- "$tmp.err"
else
  "$@" >"$tmp"
fi
size=$(stat -c %s -- "$tmp")
if [ "$size" -eq 0 ]; then
  echo "stream_to_file.sh: the command wrote nothing; no backup was kept" >&2
  exit 1
fi
sync -- "$tmp"
sum=$(sha256sum -- "$tmp" | cut -d ' ' -f 1)
printf '%s  %s\n' "$sum" "$name" >"$tmp.sha256"
sync -- "$tmp.sha256"
mv -T -- "$tmp.sha256" "$dir/$name.sha256"
if ! mv -T -n -- "$tmp" "$dir/$name" || [ -e "$tmp" ]; then
  rm -f -- "$dir/$name.sha256"
  echo "stream_to_file.sh: $dir/$name appeared while the backup was written; not overwriting it" >&2
  exit 1
fi
sync -- "$dir"
trap - EXIT
printf '{"file": "%s", "name": "%s", "sha256": "%s", "size": %s}\n' "$dir/$name" "$name" "$sum" "$size"
