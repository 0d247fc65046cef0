#!/usr/bin/env bash
# Stop only the daemons that scripts/setup.sh started (their PIDs are in build/*.pid).
cd "$(dirname "$0")/.." || exit 0
for f in build/*.pid; do
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
done
