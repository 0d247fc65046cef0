#!/usr/bin/env bash
# The whole test suite (what .ci/run runs): setup, lint, unit tests, the live tests on the
# local Docker engine (Molecule scenarios included), then stop what setup started.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
bash scripts/setup.sh || exit 1
trap 'bash "$ROOT/scripts/stop-daemons.sh"' EXIT
export PATH="$ROOT/.venv/bin:$PATH"
export ANSIBLE_CONFIG="$ROOT/ansible.cfg"
export ANSIBLE_COLLECTIONS_PATH="$ROOT/build/collections"
export PYTHONPATH="$ROOT/build/collections"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 ANSIBLE_NOCOLOR=1

status=0
echo "== lint"
bash scripts/lint.sh || status=1

echo "== tests (unit, live daemons, Docker, Molecule)"
# pytest's exit 5 (no tests collected) is a failure here, like any other non-zero exit.
# Files run in parallel (each live test has its own stack name and ports).
python -m pytest -p no:cacheprovider -ra --durations=15 -n "${PYTEST_WORKERS:-3}" --dist loadfile tests/unit tests/integration "$@"
rc=$?
[ $rc -eq 0 ] || status=1
[ $rc -eq 5 ] && echo "pytest collected no tests: failing" >&2
exit $status
