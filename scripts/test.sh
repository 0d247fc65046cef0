#!/usr/bin/env bash
# The whole test suite (what .ci/run runs): setup, lint, unit tests, the live tests on the
# local Docker engine (Molecule scenarios included) and on a local one-node Kubernetes
# (scripts/k8s-local.sh: built from Debian's source on a machine's first run, then cached),
# then stop what setup and this script started.
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
# The Kubernetes cluster comes up while lint runs (its first build takes 12-15 minutes on
# 2 cores; later runs reuse the cached binaries). A cluster that already ran is left running
# at the end; one started here is stopped and its state deleted (scripts/stop-daemons.sh).
k8s_log=$ROOT/build/k8s-local.log
k8s_pid=""
if bash scripts/k8s-local.sh status >/dev/null 2>&1; then
  echo "== kubernetes: a local cluster already runs; the tests use it and leave it running"
else
  : >build/k8s-local.started
  echo "== kubernetes: starting the local cluster in the background (log: $k8s_log)"
  bash scripts/k8s-local.sh up >"$k8s_log" 2>&1 &
  k8s_pid=$!
fi

echo "== lint"
bash scripts/lint.sh || status=1

k8s_ok=1
if [ -n "$k8s_pid" ]; then
  wait "$k8s_pid" || k8s_ok=0
  tail -n 3 "$k8s_log"
fi
if [ $k8s_ok = 1 ] && env_lines=$(bash scripts/k8s-local.sh env) && bash scripts/k8s-local.sh status >/dev/null; then
  eval "$env_lines"
  export KUBECONFIG OPSDECK_TEST_PAUSE_IMAGE OPSDECK_K8S_OPENAPI_V2
  echo "== kubernetes: up (KUBECONFIG=$KUBECONFIG)"
else
  status=1 k8s_ok=0
  echo "!! THE LOCAL KUBERNETES CLUSTER DID NOT COME UP: the live Kubernetes tests cannot run and this run FAILS" >&2
  tail -n 30 "$k8s_log" >&2
  bash scripts/k8s-local.sh status >&2 || true
fi

echo "== tests (unit, live daemons, Docker, Molecule, Kubernetes), files in parallel"
# pytest's exit 5 (no tests collected) is a failure here, like any other non-zero exit.
# Files run in parallel (each live test has its own stack name and ports), except those
# marked serial (load measured on a multi-node lab), which run alone afterwards.
python -m pytest -p no:cacheprovider -ra --durations=15 -n "${PYTEST_WORKERS:-3}" --dist loadfile \
  -m "not serial" tests/unit tests/integration "$@"
rc=$?
[ $rc -eq 0 ] || status=1
[ $rc -eq 5 ] && echo "pytest collected no tests: failing" >&2

# The cluster's control plane is not needed any more: a cluster this script started is
# stopped now, so that the serial tests have the machine to themselves.
if [ -f build/k8s-local.started ]; then
  bash scripts/k8s-local.sh down >>"$k8s_log" 2>&1 || true
fi
echo "== tests under load on a multi-node lab, alone (marked serial)"
python -m pytest -p no:cacheprovider -ra --durations=15 -m serial tests/integration "$@"
rc=$?
[ $rc -eq 0 ] || status=1
[ $rc -eq 5 ] && echo "pytest collected no serial tests: failing" >&2
[ $k8s_ok = 1 ] || echo "!! failing: the local Kubernetes cluster did not come up (see $k8s_log)" >&2
exit $status
