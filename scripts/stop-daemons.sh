#!/usr/bin/env bash
# Stop only the daemons that scripts/setup.sh started (their PIDs are in build/*.pid), and
# the local Kubernetes cluster when scripts/test.sh started it (build/k8s-local.started):
# its own `down` stops exactly the processes and pod containers it started, then its state
# is deleted so that the next run starts from a new cluster.
cd "$(dirname "$0")/.." || exit 0
if [ -f build/k8s-local.started ]; then
  bash scripts/k8s-local.sh down --purge >>build/k8s-local.log 2>&1 || echo "stop-daemons: k8s-local.sh down failed (see build/k8s-local.log)" >&2
  rm -f build/k8s-local.started
fi
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
