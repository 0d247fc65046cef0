#!/usr/bin/env bash
# Benchmarks: print figures, assert nothing (speed goals live here, not in tests).
set -euo pipefail
cd "$(dirname "$0")/.." || exit 1
export PATH="$PWD/.venv/bin:$PATH" PYTHONPATH="$PWD/build/collections"
echo "== deploy (dev stack, local Docker engine)"
python tests/bench/bench_deploy.py
if [ -f tests/bench/bench_redis_backup.py ]; then
  echo "== redis_backup (BENCH_REDIS_MB=${BENCH_REDIS_MB:=1024})"
  BENCH_REDIS_MB=$BENCH_REDIS_MB python tests/bench/bench_redis_backup.py
fi
