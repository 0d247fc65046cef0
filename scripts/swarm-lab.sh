#!/usr/bin/env bash
# swarm-lab.sh - a multi-node Docker Swarm on this one machine, for the tests and for trying
# the swarm target: every node is a container with its own Docker engine (Debian's docker.io,
# built on the project's debootstrap base), on a bridge network of the local engine, plus a
# local image registry (Debian's docker-registry) that every node trusts.
#
#   scripts/swarm-lab.sh build                 images: opsdeck-swarmlab/node, opsdeck-swarmlab/registry
#   scripts/swarm-lab.sh up [-m 3] [-w 2]      network, registry, engines (builds first; the swarm
#                                              itself is formed by the swarm role, not here)
#   scripts/swarm-lab.sh inventory [--edge 3,5] [--data 1]
#                                              an Ansible inventory of the running nodes (YAML)
#   scripts/swarm-lab.sh push [--build] IMAGE...
#                                              host image -> lab registry; prints the name nodes use
#   scripts/swarm-lab.sh status                containers, addresses, swarm state per node
#   scripts/swarm-lab.sh down [--purge]        remove what up made (--purge: also the registry
#                                              cache volume and the lab images)
#
# Options before or after the command: --name NAME (SWARMLAB_NAME, default opsdeck-swarmlab;
# several labs may run side by side) and --subnet A.B.C.0/24 (SWARMLAB_SUBNET, default
# 172.31.250.0/24; node i gets .(10+i), the registry .5). SWARMLAB_TIMEOUT bounds every wait
# (default 180 s). Everything made is named <NAME>-* and labelled org.opsdeck.swarmlab=<NAME>;
# `down` removes only that. Traffic stays on this machine (a local bridge).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAB=$ROOT/scripts/swarm-lab
NAME=${SWARMLAB_NAME:-opsdeck-swarmlab}
SUBNET=${SWARMLAB_SUBNET:-172.31.250.0/24}
TIMEOUT=${SWARMLAB_TIMEOUT:-180}
BASE=opsdeck/debian:bookworm
NODE_IMAGE=opsdeck-swarmlab/node:latest
REGISTRY_IMAGE=opsdeck-swarmlab/registry:latest
export DOCKER_BUILDKIT=0
T0=$EPOCHREALTIME

log() { awk -v a="$T0" -v b="$EPOCHREALTIME" -v m="$*" 'BEGIN{printf "[swarm-lab +%.1fs] %s\n", b-a, m}' >&2; }
die() { echo "swarm-lab: $*" >&2; exit 1; }
usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

# ------------------------------------------------------------ arguments
CMD="" ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME=$2; shift 2;;
    --subnet) SUBNET=$2; shift 2;;
    -h|--help) usage 0;;
    *) if [ -z "$CMD" ]; then CMD=$1; else ARGS+=("$1"); fi; shift;;
  esac
done
[[ $NAME =~ ^[a-z][a-z0-9-]{0,40}$ ]] || die "--name: lower-case letters, digits and '-' (got '$NAME')"
[[ $SUBNET =~ ^([0-9]+\.[0-9]+\.[0-9]+)\.0/24$ ]] || die "--subnet: an A.B.C.0/24 network (got '$SUBNET')"
PREFIX=${BASH_REMATCH[1]}
NET=$NAME-net
REGISTRY=$NAME-registry
REGISTRY_VOLUME=$NAME-registry-cache
LABEL=org.opsdeck.swarmlab=$NAME

node_ip() { echo "$PREFIX.$((10 + $1))"; }
cstate() { # true | false | none
  local s
  s=$(docker container inspect -f '{{.State.Running}}' "$1" 2>/dev/null) || s=none
  echo "${s:-none}" | tail -n 1
}
# Node numbers of this lab's node containers (running or not), sorted.
nodes() {
  docker ps -a --filter "label=$LABEL" --filter label=org.opsdeck.swarmlab.role --format '{{.Names}}' \
    | sed -n "s/^$NAME-node\([0-9][0-9]*\)\$/\1/p" | sort -n
}
role_of() { docker inspect -f '{{index .Config.Labels "org.opsdeck.swarmlab.role"}}' "$NAME-node$1"; }

# ansible-playbook from the project's tool chain, with the collection under development.
ansible_playbook() {
  [ -x "$ROOT/.venv/bin/ansible-playbook" ] || die "no .venv: run 'make setup' (scripts/setup.sh) first"
  mkdir -p "$ROOT/build/collections/ansible_collections/opsdeck"
  [ -e "$ROOT/build/collections/ansible_collections/opsdeck/stack" ] \
    || ln -sfn "$ROOT" "$ROOT/build/collections/ansible_collections/opsdeck/stack"
  PATH="$ROOT/.venv/bin:$PATH" ANSIBLE_CONFIG="$ROOT/ansible.cfg" \
    ANSIBLE_COLLECTIONS_PATH="$ROOT/build/collections" ANSIBLE_NOCOLOR=1 \
    "$ROOT/.venv/bin/ansible-playbook" "$@"
}

# ------------------------------------------------------------ build
compose_binary() {
  local bin
  bin=$("$ROOT/.venv/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))' 2>/dev/null) || true
  if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    bin=$(readlink -f "$HOME/.docker/cli-plugins/docker-compose" 2>/dev/null || true)
  fi
  if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    die "Docker Compose v2 binary not found (run 'make setup')"
  fi
  echo "$bin"
}

# build_image TAG DIR [FILE...]: build DIR (+ FILEs copied into the context) FROM the base,
# unless the image already carries the hash of exactly these inputs.
build_image() {
  local tag=$1 dir=$2; shift 2
  local want have ctx
  want=$( { docker image inspect -f '{{.Id}}' "$BASE"; cd "$dir" && sha256sum ./*; \
            for f in "$@"; do sha256sum "$f" | cut -d' ' -f1; done; } | sha256sum | cut -c1-16)
  have=$(docker image inspect -f '{{index .Config.Labels "org.opsdeck.swarmlab.hash"}}' "$tag" 2>/dev/null || true)
  if [ "$want" = "$have" ]; then
    log "$tag is up to date ($want)"
    return
  fi
  log "docker build $tag"
  ctx=$(mktemp -d "/tmp/$NAME-build.XXXXXX")
  cp -a "$dir/." "$ctx/"
  for f in "$@"; do cp "$f" "$ctx/"; done
  if ! docker build -q --label "org.opsdeck.swarmlab.hash=$want" -t "$tag" "$ctx" >"$ctx.log" 2>&1; then
    tail -n 30 "$ctx.log" >&2; rm -rf "$ctx" "$ctx.log"; die "building $tag failed"
  fi
  rm -rf "$ctx" "$ctx.log"
}

cmd_build() {
  docker info >/dev/null 2>&1 || die "no Docker engine answers"
  if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    log "$BASE missing: making it with the opsdeck.stack.images role (debootstrap)"
    ansible_playbook "$LAB/images.yml" >"$ROOT/build/swarm-lab-base.log" 2>&1 \
      || { tail -n 30 "$ROOT/build/swarm-lab-base.log" >&2; die "building $BASE failed"; }
  fi
  build_image "$NODE_IMAGE" "$LAB/node" "$(compose_binary)"
  build_image "$REGISTRY_IMAGE" "$LAB/registry"
  # dangling leftovers of earlier lab builds only (never a global prune)
  local id
  for id in $(docker images -q --filter dangling=true --filter label=org.opsdeck.swarmlab.image); do
    docker rmi "$id" >/dev/null 2>&1 || true
  done
  log "images ready: $NODE_IMAGE, $REGISTRY_IMAGE"
}

# ------------------------------------------------------------ up
cmd_up() {
  local managers=3 workers=2
  while [ ${#ARGS[@]} -gt 0 ]; do
    case "${ARGS[0]}" in
      -m|--managers) managers=${ARGS[1]}; ARGS=("${ARGS[@]:2}");;
      -w|--workers) workers=${ARGS[1]}; ARGS=("${ARGS[@]:2}");;
      *) die "up: unknown option ${ARGS[0]}";;
    esac
  done
  if ! [[ $managers =~ ^[0-9]+$ && $workers =~ ^[0-9]+$ ]] || [ "$managers" -lt 1 ] \
      || [ $((managers + workers)) -gt 50 ]; then
    die "up: need -m >= 1, -w >= 0, at most 50 nodes"
  fi
  local n=$((managers + workers)) i name role state have
  cmd_build

  # network
  if docker network inspect "$NET" >/dev/null 2>&1; then
    have=$(docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' "$NET")
    [ "$have" = "$SUBNET" ] || die "$NET exists with subnet $have, not $SUBNET ('down' first)"
  else
    local other
    for other in $(docker network ls -q); do
      if docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' "$other" | grep -qw "$SUBNET"; then
        die "$SUBNET is used by Docker network $(docker network inspect -f '{{.Name}}' "$other"): choose --subnet"
      fi
    done
    if ip route | grep -q "^${PREFIX}\."; then die "$SUBNET overlaps a route of this machine: choose --subnet"; fi
    log "network $NET $SUBNET"
    docker network create --driver bridge --subnet "$SUBNET" --gateway "$PREFIX.1" \
      --label "$LABEL" "$NET" >/dev/null
  fi

  # registry: nodes reach it as $REGISTRY:5000, the host on 127.0.0.1:<random port>
  state=$(cstate "$REGISTRY")
  case "$state" in
    true) ;;
    false) log "start $REGISTRY"; docker start "$REGISTRY" >/dev/null;;
    *)
      log "registry $REGISTRY ($PREFIX.5:5000; cache volume $REGISTRY_VOLUME)"
      docker volume create --label "$LABEL" "$REGISTRY_VOLUME" >/dev/null
      docker run -d --name "$REGISTRY" --hostname registry --label "$LABEL" \
        --network "$NET" --ip "$PREFIX.5" -p 127.0.0.1::5000 \
        -v "$REGISTRY_VOLUME:/var/lib/docker-registry" "$REGISTRY_IMAGE" >/dev/null;;
  esac

  # Node containers. Not --privileged: it cannot start where the host withholds
  # CAP_SYS_RESOURCE ("unable to apply caps"); all other capabilities, unconfined
  # seccomp/apparmor/systempaths and every device give dockerd what it needs. A private
  # cgroup namespace nests the tasks' cgroups under the node's; fixed addresses keep the
  # raft peers valid when a node restarts; /run is a tmpfs (no stale pid files).
  local sec=(--cap-add ALL --cap-drop SYS_RESOURCE --security-opt seccomp=unconfined
             --security-opt apparmor=unconfined --security-opt systempaths=unconfined
             --device-cgroup-rule 'a *:* rwm' --cgroupns private)
  for i in $(seq 1 "$n"); do
    name=$NAME-node$i
    if [ "$i" -le "$managers" ]; then role=manager; else role=worker; fi
    state=$(cstate "$name")
    if [ "$state" != none ]; then
      have=$(role_of "$i")
      [ "$have" = "$role" ] || die "$name exists as a $have, wanted a $role ('down' first)"
    fi
    case "$state" in
      true) ;;
      false) log "start $name"; docker start "$name" >/dev/null;;
      *)
        log "node $name ($role, $(node_ip "$i"))"
        docker volume create --label "$LABEL" "$name-docker" >/dev/null
        docker run -d --name "$name" --hostname "node$i" "${sec[@]}" \
          --network "$NET" --ip "$(node_ip "$i")" --tmpfs /run \
          -v "$name-docker:/var/lib/docker" \
          --label "$LABEL" --label "org.opsdeck.swarmlab.role=$role" \
          -e SWARMLAB_INSECURE_REGISTRIES="$REGISTRY:5000" \
          "$NODE_IMAGE" >/dev/null;;
    esac
  done
  local extra
  extra=$(nodes | awk -v n="$n" '$1 > n')
  [ -z "$extra" ] || log "note: more nodes than asked for are running: $(echo "$extra" | sed 's/^/node/' | tr '\n' ' ')"

  # engines answering
  local end
  for i in $(seq 1 "$n"); do
    end=$(( ${EPOCHREALTIME%.*} + TIMEOUT ))
    until docker exec "$NAME-node$i" docker info >/dev/null 2>&1; do
      [ "$(cstate "$NAME-node$i")" = true ] \
        || { docker logs --tail 20 "$NAME-node$i" >&2; die "$NAME-node$i stopped"; }
      [ "${EPOCHREALTIME%.*}" -lt "$end" ] \
        || { docker logs --tail 20 "$NAME-node$i" >&2; die "the engine of $NAME-node$i did not answer in $TIMEOUT s"; }
      sleep 0.3
    done
  done
  log "up: $n engines ($managers managers, $workers workers) on $NET, registry $REGISTRY:5000"
}

# ------------------------------------------------------------ inventory
cmd_inventory() {
  local edge="" data="" i role ip labels
  while [ ${#ARGS[@]} -gt 0 ]; do
    case "${ARGS[0]}" in
      --edge) edge=${ARGS[1]}; ARGS=("${ARGS[@]:2}");;
      --data) data=${ARGS[1]}; ARGS=("${ARGS[@]:2}");;
      *) die "inventory: unknown option ${ARGS[0]}";;
    esac
  done
  local all managers=() workers=()
  all=$(nodes)
  [ -n "$all" ] || die "no node of lab $NAME ('up' first)"
  for i in $all; do
    if [ "$(role_of "$i")" = manager ]; then managers+=("$i"); else workers+=("$i"); fi
  done
  # Defaults: the data stores on the first node; the edge on the last worker and, with
  # three managers or more, on the last manager too (so no node holds both roles).
  [ -n "$data" ] || data=${managers[0]}
  if [ -z "$edge" ]; then
    if [ ${#workers[@]} -gt 0 ]; then edge=${workers[${#workers[@]}-1]}; fi
    if [ ${#managers[@]} -ge 3 ] || [ -z "$edge" ]; then edge="${managers[${#managers[@]}-1]}${edge:+,$edge}"; fi
  fi
  host_line() {
    ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$NAME-node$1")
    labels=""
    if [[ ,$data, == *,$1,* ]]; then labels="opsdeck.data: \"true\""; fi
    if [[ ,$edge, == *,$1,* ]]; then labels="${labels:+$labels, }opsdeck.edge: \"true\""; fi
    echo "            node$1: {ansible_host: $NAME-node$1, swarm_advertise_addr: $ip, swarm_node_labels: {$labels}}"
  }
  cat <<EOF
# Generated by scripts/swarm-lab.sh inventory (lab $NAME): the lab's nodes as Ansible hosts.
# Modules run inside each node container (docker exec) against that node's own engine.
all:
  children:
    ${NAME//-/_}:
      vars:
        ansible_connection: community.docker.docker
        ansible_user: root
        ansible_python_interpreter: /usr/bin/python3
        ansible_pipelining: true
        swarm_lab_registry: $REGISTRY:5000
      children:
        swarm_managers:
          hosts:
EOF
  for i in "${managers[@]}"; do host_line "$i"; done
  if [ ${#workers[@]} -gt 0 ]; then
    printf '        swarm_workers:\n          hosts:\n'
    for i in "${workers[@]}"; do host_line "$i"; done
  fi
}

# ------------------------------------------------------------ push
cmd_push() {
  local build=0 imgs=() img port tmp end json=""
  for img in "${ARGS[@]}"; do
    if [ "$img" = --build ]; then build=1; else imgs+=("$img"); fi
  done
  [ ${#imgs[@]} -gt 0 ] || die "push: name at least one image"
  if [ "$build" = 1 ]; then
    # images of the opsdeck/ namespace are built (or rebuilt when their recipe changed)
    # by the images role; their recipe is the repository's last path element
    for img in "${imgs[@]}"; do
      case "$img" in
        opsdeck/*) json+="${json:+,}{\"image\": \"$img\", \"recipe\": \"$(basename "${img%%:*}")\"}";;
      esac
    done
    if [ -n "$json" ]; then
      log "build (when their recipe changed) ${imgs[*]}"
      mkdir -p "$ROOT/build"
      ansible_playbook "$LAB/images.yml" -e "{\"swarm_lab_images\": [$json]}" \
        >"$ROOT/build/$NAME-images.log" 2>&1 \
        || { tail -n 30 "$ROOT/build/$NAME-images.log" >&2; die "building the images failed"; }
    fi
  fi
  [ "$(cstate "$REGISTRY")" = true ] || die "$REGISTRY is not running ('up' first)"
  port=$(docker port "$REGISTRY" 5000/tcp | sed -n 's/^127\.0\.0\.1:\([0-9]*\)$/\1/p' | head -1)
  [ -n "$port" ] || die "cannot read the host port of $REGISTRY"
  end=$(( ${EPOCHREALTIME%.*} + 30 ))
  until curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1; do
    [ "${EPOCHREALTIME%.*}" -lt "$end" ] || die "$REGISTRY does not answer on 127.0.0.1:$port"
    sleep 0.3
  done
  for img in "${imgs[@]}"; do
    docker image inspect "$img" >/dev/null 2>&1 || die "$img is not on this engine (push --build for opsdeck/* images)"
    # The host engine treats 127.0.0.0/8 as an insecure registry: no change to its daemon.
    tmp=127.0.0.1:$port/$img
    docker tag "$img" "$tmp"
    if ! docker push -q "$tmp" >/dev/null 2>"$ROOT/build/$NAME-push.log"; then
      docker rmi "$tmp" >/dev/null 2>&1 || true
      cat "$ROOT/build/$NAME-push.log" >&2; die "pushing $img failed"
    fi
    docker rmi "$tmp" >/dev/null        # only the temporary tag
    log "pushed $img"
    echo "$REGISTRY:5000/$img"
  done
}

# ------------------------------------------------------------ status
cmd_status() {
  local i all state
  all=$(nodes)
  echo "lab $NAME: network $NET ($SUBNET), registry $REGISTRY: $(cstate "$REGISTRY" | sed 's/true/running/;s/false/stopped/')"
  [ -n "$all" ] || { echo "no nodes"; return 0; }
  for i in $all; do
    state=$(cstate "$NAME-node$i")
    if [ "$state" = true ]; then
      state=$(docker exec "$NAME-node$i" docker info --format \
        'swarm {{.Swarm.LocalNodeState}}{{if .Swarm.ControlAvailable}}, manager{{end}}' 2>/dev/null || echo "engine not answering")
    else
      state=stopped
    fi
    printf 'node%-3s %-24s %-15s %-8s %s\n' "$i" "$NAME-node$i" "$(node_ip "$i")" "$(role_of "$i")" "$state"
  done
}

# ------------------------------------------------------------ down
cmd_down() {
  local purge=0 ctrs vols imgs users
  case "${ARGS[0]:-}" in --purge) purge=1;; "") ;; *) die "down: unknown option ${ARGS[0]}";; esac
  ctrs=$(docker ps -a --filter "label=$LABEL" --format '{{.Names}}' | grep -E "^$NAME-(node[0-9]+|registry)\$" || true)
  if [ -n "$ctrs" ]; then
    log "remove containers: ${ctrs//$'\n'/ }"
    # shellcheck disable=SC2086
    docker rm -f -v $ctrs >/dev/null
  fi
  vols=$(docker volume ls -q --filter "label=$LABEL" | grep -E "^$NAME-node[0-9]+-docker\$" || true)
  if [ "$purge" = 1 ]; then
    vols+=$'\n'$(docker volume ls -q --filter "label=$LABEL" | grep -xF "$REGISTRY_VOLUME" || true)
  fi
  vols=$(echo "$vols" | sed '/^$/d')
  if [ -n "$vols" ]; then
    log "remove volumes: ${vols//$'\n'/ }"
    # shellcheck disable=SC2086
    docker volume rm $vols >/dev/null
  fi
  if [ "$(docker network inspect -f '{{index .Labels "org.opsdeck.swarmlab"}}' "$NET" 2>/dev/null)" = "$NAME" ]; then
    log "remove network $NET"
    docker network rm "$NET" >/dev/null
  fi
  if [ "$purge" = 1 ]; then
    users=$(docker ps -a --filter label=org.opsdeck.swarmlab --format '{{.Names}}')
    if [ -n "$users" ]; then
      log "images kept: other labs use them (${users//$'\n'/ })"
    else
      imgs=$(docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '^opsdeck-swarmlab/' || true)
      if [ -n "$imgs" ]; then
        log "remove images: ${imgs//$'\n'/ }"
        # shellcheck disable=SC2086
        docker rmi $imgs >/dev/null
      fi
    fi
  fi
  log "down: lab $NAME removed"
}

case "$CMD" in
  build) cmd_build;;
  up) cmd_up;;
  inventory) cmd_inventory;;
  push) cmd_push;;
  status) cmd_status;;
  down) cmd_down;;
  ""|help) usage 0;;
  *) echo "swarm-lab: unknown command '$CMD'" >&2; usage 2;;
esac
