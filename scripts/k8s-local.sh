#!/usr/bin/env bash
# A real one-node Kubernetes on this machine, built from Debian's `kubernetes` source
# package with Debian's Go toolchain (what the live Kubernetes tests run against).
#
#   scripts/k8s-local.sh build    build (first run) or reuse the cached binaries + pause image
#   scripts/k8s-local.sh up       build if needed, start the cluster, wait for the node Ready
#   scripts/k8s-local.sh down     stop what `up` started; `down --purge` also deletes the state
#   scripts/k8s-local.sh status   what runs (exit 0 only when the cluster answers and the node is Ready)
#   scripts/k8s-local.sh env      shell exports: eval "$(scripts/k8s-local.sh env)"
#
# What `up` runs: etcd (Debian etcd-server, 127.0.0.1), kube-apiserver with real TLS (an
# openssl CA, client certificates per component), kube-controller-manager, kube-scheduler,
# a kubelet on the local Docker engine through the dockershim with bridge CNI (Debian
# containernetworking-plugins), kube-proxy (iptables mode), dnsmasq as the cluster DNS and
# scripts/k8s_local_agent.py, which feeds dnsmasq from the API (Service, headless and
# StatefulSet pod names) and provisions hostPath PersistentVolumes for claims of the
# default StorageClass `local-hostpath`.
#
# Images built into the local engine (the images role's opsdeck/* images, the pause image
# built here from the source's build/pause/linux/pause.c) are used by the kubelet
# directly: nothing is pulled (no registry), pods use `imagePullPolicy: Never` or a tagged
# image with IfNotPresent.
#
# Where things go (all outside the clone):
#   binaries  $OPSDECK_K8S_CACHE/<debian version>/bin  (default ${XDG_CACHE_HOME:-~/.cache}/opsdeck/k8s)
#   state     $OPSDECK_K8S_STATE (default /var/lib/opsdeck-k8s): pki/, kubeconfig/, etcd/,
#             kubelet/, volumes/, log/<component>.log, run/<component>.pid
# `down` stops only the processes whose pids `up` wrote (checking each pid is still that
# program), removes only the Docker containers the dockershim created (label
# io.kubernetes.docker.type), our bridge and the KUBE-*/CNI-* iptables chains.
#
# The Debian mirror is read from this machine's apt sources at run time; the source
# package is fetched with a private apt list (the machine's apt configuration is not
# changed). Needs root (apt, iptables, the kubelet).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

CACHE=${OPSDECK_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/opsdeck/k8s}
STATE=${OPSDECK_K8S_STATE:-/var/lib/opsdeck-k8s}
NODE_NAME=${OPSDECK_K8S_NODE:-opsdeck-k8s}
API_PORT=${OPSDECK_K8S_API_PORT:-6443}
ETCD_PORT=${OPSDECK_K8S_ETCD_PORT:-12379}
POD_CIDR=${OPSDECK_K8S_POD_CIDR:-10.244.0.0/24}
CLUSTER_CIDR=${OPSDECK_K8S_CLUSTER_CIDR:-10.244.0.0/16}
SERVICE_CIDR=${OPSDECK_K8S_SERVICE_CIDR:-10.0.0.0/24}
SERVICE_IP=${OPSDECK_K8S_SERVICE_IP:-10.0.0.1}
BRIDGE=${OPSDECK_K8S_BRIDGE:-opsdeck-k8s0}
CNI_BIN=${OPSDECK_K8S_CNI_BIN:-/usr/lib/cni}
NICE=${OPSDECK_K8S_NICE:-10}
UP_TIMEOUT=${OPSDECK_K8S_UP_TIMEOUT:-180}
BINARIES="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"
PKI=$STATE/pki RUN=$STATE/run LOG=$STATE/log KCFG=$STATE/kubeconfig
ADMIN_KUBECONFIG=$KCFG/admin.kubeconfig

log() { printf '[k8s-local %s] %s\n' "$(date -u +%T)" "$*"; }
die() { printf 'k8s-local: %s\n' "$*" >&2; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root (apt-get, iptables, the kubelet)"; }

# ------------------------------------------------------------------ apt (private lists)
# The source package comes through a private sources list that points at the machine's
# own Debian mirror (read from its apt sources now, never written into this repository);
# /etc/apt is left as it is.
APT_DIR=$CACHE/apt
apt_opts() {
  printf '%s\n' -q -o "Dir::Etc::SourceList=$APT_DIR/sources.list" -o "Dir::Etc::SourceParts=$APT_DIR/none" \
    -o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
}
debian_mirror() {
  local f u
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # first URIs: of a "Types: deb" stanza whose suites include the release
    u=$(awk -v rel="$1" 'BEGIN{RS="";FS="\n"}
      /(^|\n)Types:[^\n]*deb( |$|\n)/ && $0 ~ ("Suites:[^\n]*" rel "( |$|\n)") {
        for (i = 1; i <= NF; i++) if ($i ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", $i); split($i, a, " "); print a[1]; exit } }' "$f")
    [ -n "$u" ] && { echo "$u"; return 0; }
  done
  [ -f /etc/apt/sources.list ] && awk -v rel="$1" '$1 == "deb" && $0 ~ (" " rel " ") {
      for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; exit } }' /etc/apt/sources.list
}
apt_source_lists() {
  local codename mirror
  # shellcheck source=/dev/null
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  mirror=$(debian_mirror "$codename")
  [ -n "$mirror" ] || die "no 'deb' entry for $codename in the apt sources: cannot find Debian's mirror"
  mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/none"
  printf 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' "$mirror" "$codename" \
    >"$APT_DIR/sources.list"
  # shellcheck disable=SC2046
  apt-get $(apt_opts) update >"$APT_DIR/update.log" 2>&1 || { tail -n 20 "$APT_DIR/update.log" >&2; die "apt-get update (deb-src) failed"; }
}
# The Debian version of the `kubernetes` source package (e.g. 1.20.5+really1.20.2-1.1+deb12u1).
debian_version() {
  local v
  if [ -n "${OPSDECK_K8S_DEBIAN_VERSION:-}" ]; then echo "$OPSDECK_K8S_DEBIAN_VERSION"; return; fi
  if [ "${OPSDECK_K8S_REFRESH:-0}" = 1 ] || ! ls "$APT_DIR"/lists/*Sources* >/dev/null 2>&1; then apt_source_lists; fi
  # remembered until the lists change (OPSDECK_K8S_REFRESH=1 fetches them again)
  if [ "$APT_DIR/version" -nt "$APT_DIR/lists" ]; then cat "$APT_DIR/version"; return; fi
  # shellcheck disable=SC2046
  v=$(apt-cache $(apt_opts) showsrc kubernetes 2>/dev/null | sed -n 's/^Version: //p' | sort -V | tail -n 1)
  [ -n "$v" ] || die "Debian has no 'kubernetes' source package in the mirror's lists ($APT_DIR)"
  echo "$v" | tee "$APT_DIR/version"
}
# 1.20.5+really1.20.2-1.1+deb12u1 -> 1.20.2
upstream_version() { echo "$1" | sed -e 's/-[^-]*$//' -e 's/.*really//' -e 's/+ds.*//' -e 's/^[0-9]*://'; }

APT_PACKAGES=(golang-go etcd-server containernetworking-plugins dnsmasq-base busybox-static dpkg-dev gcc libc6-dev
              openssl iptables conntrack curl python3 iproute2)
ensure_packages() {
  local missing=() p installed
  installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${APT_PACKAGES[@]}" 2>/dev/null | awk '$NF == "installed" {print $1}')
  for p in "${APT_PACKAGES[@]}"; do grep -qx "$p" <<<"$installed" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  need_root "installing ${missing[*]}"
  log "installing Debian packages: ${missing[*]}"
  mkdir -p "$CACHE"
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
    >"$CACHE/apt-install.log" 2>&1 || { tail -n 20 "$CACHE/apt-install.log" >&2; die "apt-get install failed"; }
}

# ------------------------------------------------------------------ build
set_version() {
  DEBVER=$(debian_version)
  VERSION=$(upstream_version "$DEBVER")
  VDIR=$CACHE/$DEBVER
  BIN=$VDIR/bin
}

# This VM's capability bounding set may lack CAP_SYS_RESOURCE: then no process may get a
# negative oom_score_adj and runc fails every pod sandbox ("can't get final child's PID
# from pipe: EOF") because the dockershim asks for -998 (and -997 for Guaranteed pods).
# The kubelet is then built with 0 instead (OPSDECK_K8S_NO_NEGATIVE_OOM=auto|0|1).
no_negative_oom() {
  local want=${OPSDECK_K8S_NO_NEGATIVE_OOM:-auto} capbnd
  if [ "$want" = auto ]; then
    capbnd=$(awk '/^CapBnd:/{print $2}' /proc/self/status)
    if (( (0x$capbnd >> 24) & 1 )); then want=0; else want=1; fi
  fi
  echo "$want"
}

fetch_source() {
  local src=$VDIR/src
  if [ ! -d "$src/k8s/cmd/kube-apiserver" ]; then
    log "fetching the kubernetes $DEBVER source package"
    rm -rf "$src" && mkdir -p "$src"
    # shellcheck disable=SC2046
    ( cd "$src" && apt-get $(apt_opts) source --download-only "kubernetes=$DEBVER" >"$VDIR/source.log" 2>&1 \
      && dpkg-source -x ./*.dsc k8s >>"$VDIR/source.log" 2>&1 ) \
      || { tail -n 20 "$VDIR/source.log" >&2; die "could not fetch/unpack the kubernetes source package"; }
  fi
  # Go 1.19 refuses module mode on this go.mod ("updates to go.mod needed, disabled by
  # -mod=vendor"): build as upstream 1.20 did, in GOPATH mode with vendor/.
  mkdir -p "$src/gopath/src/k8s.io"
  ln -sfn ../../../k8s "$src/gopath/src/k8s.io/kubernetes"
  GOSRC=$src/gopath/src/k8s.io/kubernetes
}

go_env() {
  env GOPATH="$VDIR/src/gopath" GO111MODULE=off CGO_ENABLED=0 GOFLAGS= GOCACHE="$CACHE/go-build" \
    nice -n "$NICE" "$@"
}

# kube-apiserver needs pkg/generated/openapi/zz_generated.openapi.go, which upstream's
# make generates and the source package does not ship: generate it the way
# Makefile.generated_files does, with the vendored openapi-gen.
gen_openapi() {
  [ -f "$GOSRC/pkg/generated/openapi/zz_generated.openapi.go" ] && return 0
  log "generating pkg/generated/openapi (vendored openapi-gen)"
  ( cd "$GOSRC" \
    && go_env go build -o "$VDIR/src/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen \
    && dirs=$(grep -Rl --include='*.go' '+k8s:openapi-gen=' pkg vendor cmd plugin 2>/dev/null \
         | grep -v '^vendor/k8s.io/code-generator/\|^vendor/k8s.io/sample-apiserver/\|^vendor/k8s.io/kube-openapi/\|_test.go$' \
         | xargs -n1 dirname | LC_ALL=C sort -u | sed 's#^#k8s.io/kubernetes/#' | paste -sd,) \
    && go_env "$VDIR/src/openapi-gen" --logtostderr -i "$dirs" \
         -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
         -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r "$VDIR/src/openapi-violations.report" ) \
    >>"$VDIR/build.log" 2>&1 || { tail -n 20 "$VDIR/build.log" >&2; die "openapi-gen failed (see $VDIR/build.log)"; }
}

build_binaries() {
  local missing=() b t0 major minor ldflags pkg oom
  oom=$(no_negative_oom)
  # a kubelet built for the other OOM setting is rebuilt
  if [ -x "$BIN/kubelet" ] && [ "$(cat "$VDIR/kubelet-no-negative-oom" 2>/dev/null)" != "$oom" ]; then rm -f "$BIN/kubelet"; fi
  for b in $BINARIES; do [ -x "$BIN/$b" ] || missing+=("$b"); done
  [ ${#missing[@]} -eq 0 ] && { keep_from_source; return 0; }
  need_root "building Kubernetes"
  ensure_packages
  fetch_source
  mkdir -p "$BIN"
  if [ "$oom" = 1 ] && grep -q 'defaultSandboxOOMAdj int = -998' "$GOSRC/pkg/kubelet/dockershim/docker_sandbox.go"; then
    log "kubelet: oom_score_adj 0 instead of -998/-997 (no CAP_SYS_RESOURCE on this machine)"
    sed -i 's/defaultSandboxOOMAdj int = -998/defaultSandboxOOMAdj int = 0/' "$GOSRC/pkg/kubelet/dockershim/docker_sandbox.go"
    sed -i 's/^\t\treturn guaranteedOOMScoreAdj$/\t\treturn 0/' "$GOSRC/pkg/kubelet/qos/policy.go"
  fi
  major=${VERSION%%.*}; minor=$(echo "$VERSION" | cut -d. -f2)
  ldflags="-s -w"
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version \
             k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version \
             k8s.io/kubernetes/vendor/k8s.io/component-base/version; do
    ldflags+=" -X $pkg.gitVersion=v$VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  case " ${missing[*]} " in *" kube-apiserver "*) gen_openapi ;; esac
  log "building ${missing[*]} (Go $(go env GOVERSION), GOPATH mode; log: $VDIR/build.log)"
  for b in "${missing[@]}"; do
    t0=$(date +%s)
    ( cd "$GOSRC" && go_env go build -ldflags "$ldflags" -o "$BIN/.$b.tmp" "./cmd/$b" ) >>"$VDIR/build.log" 2>&1 \
      || { tail -n 30 "$VDIR/build.log" >&2; die "building $b failed (see $VDIR/build.log)"; }
    mv "$BIN/.$b.tmp" "$BIN/$b"
    [ "$b" = kubelet ] && echo "$oom" >"$VDIR/kubelet-no-negative-oom"
    echo "$b $(( $(date +%s) - t0 ))s $(date -u +%FT%TZ)" >>"$VDIR/build-times.txt"
    log "$b built in $(( $(date +%s) - t0 ))s"
  done
  keep_from_source
}

# Kept beside the binaries so that nothing later needs the source tree: what the pause
# image is built from, and the API's OpenAPI v2 document (the unit tests validate the
# manifests adapted to this version against it).
keep_from_source() {
  local k=$VDIR/src/k8s
  [ -f "$VDIR/pause/pause.c" ] && [ -f "$VDIR/openapi-v2.json" ] && return 0
  [ -d "$k" ] || die "the source tree $k is gone: delete $VDIR and build again"
  mkdir -p "$VDIR/pause"
  cp "$k/build/pause/linux/pause.c" "$VDIR/pause/pause.c"
  sed -n 's/^TAG ?*= *//p' "$k/build/pause/Makefile" | head -n 1 >"$VDIR/pause/tag"
  cp "$k/api/openapi-spec/swagger.json" "$VDIR/openapi-v2.json"
}

# The pod sandbox image, built locally from the source's pause.c (FROM scratch), and a
# busybox image from Debian's busybox-static (shell, wget, nslookup, httpd) for test pods.
# Tagged: an untagged image would make the kubelet pull (Always), and nothing can be pulled.
pause_image() { echo "opsdeck-k8s/pause:$(cat "$VDIR/pause/tag")"; }
busybox_image() { echo "opsdeck-k8s/busybox:$(/bin/busybox 2>&1 | sed -n '1s/^BusyBox v\([0-9.]*\).*/\1/p')"; }
docker_build() { # image directory
  docker build -q -t "$1" "$2" >"$CACHE/image-build.log" 2>&1 || { cat "$CACHE/image-build.log" >&2; die "building $1 failed"; }
}
build_images() {
  local img dir a
  img=$(pause_image)
  if ! docker image inspect "$img" >/dev/null 2>&1; then
    log "building $img from the source's build/pause/linux/pause.c"
    dir=$(mktemp -d)
    gcc -Os -static -DVERSION="v$(cat "$VDIR/pause/tag")-opsdeck" -o "$dir/pause" "$VDIR/pause/pause.c"
    strip "$dir/pause"
    printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$dir/Dockerfile"
    docker_build "$img" "$dir"
    rm -rf "$dir"
  fi
  img=$(busybox_image)
  if ! docker image inspect "$img" >/dev/null 2>&1; then
    log "building $img from Debian's busybox-static"
    dir=$(mktemp -d)
    mkdir -p "$dir/root/bin" "$dir/root/tmp"
    cp /bin/busybox "$dir/root/bin/busybox"
    for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$dir/root/bin/$a"; done
    chmod 1777 "$dir/root/tmp"
    printf 'FROM scratch\nCOPY root/ /\nENV PATH=/bin\nUSER 65534:65534\nCMD ["/bin/sh"]\n' >"$dir/Dockerfile"
    docker_build "$img" "$dir"
    rm -rf "$dir"
  fi
}

cmd_build() {
  local t0
  t0=$(date +%s)
  ensure_packages
  set_version
  build_binaries
  build_images
  ln -sfn "$DEBVER" "$CACHE/current"
  log "Kubernetes $VERSION (Debian $DEBVER) ready in $BIN ($(( $(date +%s) - t0 ))s)"
}

# ------------------------------------------------------------------ up
# The node's own address (a local route lookup, no packet is sent).
node_ip() {
  local ip
  ip=${OPSDECK_K8S_NODE_IP:-$(ip -4 route get 192.0.2.255 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -n 1)}
  [ -n "$ip" ] || ip=$(hostname -I | awk '{print $1}')
  echo "$ip"
}

cert() { # name CN O [SANs]: a key and a certificate signed by the cluster CA, made once
  local name=$1 cn=$2 o=$3 san=${4:-} subj
  [ -f "$PKI/$name.crt" ] && return 0
  subj="/CN=$cn"; [ -n "$o" ] && subj="/O=$o/CN=$cn"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$PKI/$name.key" \
    -out "$PKI/$name.csr" -subj "$subj" 2>/dev/null
  { echo "basicConstraints=CA:FALSE"; echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [ -n "$san" ]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$san"
    else echo "extendedKeyUsage=clientAuth"; fi; } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

kubeconfig() { # file user cert
  ( umask 077
    cat >"$KCFG/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: opsdeck-k8s
    cluster:
      certificate-authority: $PKI/ca.crt
      server: https://127.0.0.1:$API_PORT
users:
  - name: $2
    user:
      client-certificate: $PKI/$3.crt
      client-key: $PKI/$3.key
contexts:
  - name: opsdeck-k8s
    context: {cluster: opsdeck-k8s, user: $2}
current-context: opsdeck-k8s
EOF
  )
}

# Real TLS (ECDSA P-256, quick to make): a CA made here, the API server's serving certificate, one client certificate
# per component (kept in $STATE/pki and reused by later runs).
pki() {
  ( umask 077; mkdir -p "$PKI" "$KCFG" )
  if [ ! -f "$PKI/ca.crt" ]; then
    log "creating the cluster CA and certificates ($PKI)"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$PKI/ca.key" \
      -out "$PKI/ca.crt" -days 3650 -subj "/CN=opsdeck-k8s-ca" 2>/dev/null
  fi
  cert apiserver kube-apiserver "" "IP:127.0.0.1,IP:$SERVICE_IP,IP:$NODE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert admin admin system:masters
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cert controller-manager system:kube-controller-manager ""
  cert scheduler system:kube-scheduler ""
  cert kube-proxy system:kube-proxy ""
  cert kubelet "system:node:$NODE_NAME" system:nodes
  cert kubelet-serving "$NODE_NAME" "" "IP:127.0.0.1,IP:$NODE_IP,DNS:$NODE_NAME,DNS:localhost"
  if [ ! -f "$PKI/sa.key" ]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null && openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  chmod 600 "$PKI"/*.key
  kubeconfig admin admin admin
  kubeconfig controller-manager system:kube-controller-manager controller-manager
  kubeconfig scheduler system:kube-scheduler scheduler
  kubeconfig kube-proxy system:kube-proxy kube-proxy
  kubeconfig kubelet "system:node:$NODE_NAME" kubelet
}

pid_of() { cat "$RUN/$1.pid" 2>/dev/null || true; }
# alive and not a zombie waiting for its parent (init) to reap it
alive() { kill -0 "$1" 2>/dev/null && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null; }
# A remembered pid counts only while it is alive and still runs the program it was started as.
ours() { # component program
  local pid
  pid=$(pid_of "$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n 1 | grep -q "\(^\|/\)$2\$"
}
start() { # component program args...: detached, output in $LOG/<component>.log, pid remembered
  local name=$1; shift
  if ours "$name" "$(basename "$1")"; then log "$name already running (pid $(pid_of "$name"))"; return 0; fi
  log "starting $name (log: $LOG/$name.log)"
  setsid nohup "$@" >>"$LOG/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}
wait_for() { # what seconds command...
  local what=$1 n=$2 i; shift 2
  for ((i = 0; i < n; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 1
  done
  die "timed out after ${n}s waiting for $what; see the logs in $LOG"
}
kc() { "$BIN/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }
port_in_use() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
node_ready() { [ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; }
# the node posted its status after $1 (epoch seconds): a restarted kubelet is really back
node_heartbeat_since() {
  local hb
  hb=$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}' 2>/dev/null) \
    && [ -n "$hb" ] && [ "$(date -u -d "$hb" +%s)" -ge $(( $1 - 1 )) ]
}
dns_listening() { ss -Hlun "sport = :53" 2>/dev/null | grep -q "$NODE_IP:53"; }

# One kubelet per Docker engine: a second one would garbage-collect the other's pod containers.
foreign_kubelets() {
  local pid mine
  mine=$(pid_of kubelet)
  for pid in $(pgrep -x kubelet 2>/dev/null || true); do [ "$pid" = "$mine" ] || echo "$pid"; done
}

cmd_up() {
  local t0 since="" other
  t0=$(date +%s)
  need_root "up"
  cmd_build
  docker info >/dev/null 2>&1 || die "no Docker engine answers (the kubelet runs pods on it): start dockerd first"
  other=$(foreign_kubelets)
  [ -z "$other" ] || die "another kubelet runs on this machine (pid $other, not started by this script): one kubelet per Docker engine; stop that cluster first"
  NODE_IP=$(node_ip)
  [ -n "$NODE_IP" ] || die "cannot find this machine's IPv4 address"
  mkdir -p "$RUN" "$LOG" "$STATE/cni/net.d" "$STATE/kubelet" "$STATE/dns/hosts"
  ( umask 077; mkdir -p "$STATE/volumes" )
  ours etcd etcd || ! port_in_use "$ETCD_PORT" || die "port $ETCD_PORT (etcd) is in use by another program (OPSDECK_K8S_ETCD_PORT)"
  ours kube-apiserver kube-apiserver || ! port_in_use "$API_PORT" || die "port $API_PORT (kube-apiserver) is in use by another program (OPSDECK_K8S_API_PORT)"
  pki

  start etcd /usr/bin/etcd --name opsdeck-k8s --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "opsdeck-k8s=http://127.0.0.1:$((ETCD_PORT + 1))" \
    --listen-metrics-urls "http://127.0.0.1:$((ETCD_PORT + 2))"
  wait_for etcd 60 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --secure-port "$API_PORT" --insecure-port 0 --advertise-address "$NODE_IP" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --allow-privileged=true --profiling=false
  wait_for "kube-apiserver /readyz" 180 kc get --raw /readyz

  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$KCFG/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$KCFG/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$KCFG/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --profiling=false \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --use-service-account-credentials=true \
    --allocate-node-cidrs=true --cluster-cidr "$CLUSTER_CIDR" --node-cidr-mask-size 24 \
    --service-cluster-ip-range "$SERVICE_CIDR"
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$KCFG/scheduler.kubeconfig" \
    --authentication-kubeconfig "$KCFG/scheduler.kubeconfig" \
    --authorization-kubeconfig "$KCFG/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --profiling=false

  # Cluster DNS: dnsmasq on the node's address answers <service>.<namespace>.svc.cluster.local
  # (and a StatefulSet pod's <pod>.<service>.<namespace>.svc.cluster.local) from the hosts
  # files the agent writes from the API, answers other cluster.local names NXDOMAIN, and
  # forwards everything else to the machine's resolvers.
  start dnsmasq /usr/sbin/dnsmasq --keep-in-foreground --log-facility=- --no-hosts \
    --listen-address="$NODE_IP" --bind-interfaces --port=53 \
    --hostsdir="$STATE/dns/hosts" --local=/cluster.local/ --domain-needed --no-negcache \
    --pid-file="$RUN/dnsmasq.pidfile" --user=root
  wait_for "dnsmasq on $NODE_IP:53" 30 dns_listening
  # The agent: DNS records from Services and Endpoints, hostPath volumes for claims.
  start agent /usr/bin/python3 "$HERE/k8s_local_agent.py" --server "https://127.0.0.1:$API_PORT" \
    --ca "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    --hosts-dir "$STATE/dns/hosts" --volumes-dir "$STATE/volumes"

  # Bridge CNI (Debian's containernetworking-plugins); the firewall plugin is chained
  # because Docker's FORWARD policy is DROP; pods reach the outside world masqueraded.
  cat >"$STATE/cni/net.d/10-opsdeck-k8s.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "opsdeck-k8s",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$STATE/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "firewall", "backend": "iptables"},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  # Image garbage collection is off (high threshold 100) and eviction thresholds are tiny:
  # the Docker engine is shared, and the kubelet must never delete images or containers it
  # did not create.
  ours kubelet kubelet || since=$(date -u +%s)
  # shellcheck disable=SC2086
  start kubelet "$BIN/kubelet" \
    --kubeconfig "$KCFG/kubelet.kubeconfig" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
    --container-runtime docker --cgroup-driver "$(docker info -f '{{.CgroupDriver}}')" --fail-swap-on=false \
    --pod-infra-container-image "$(pause_image)" \
    --network-plugin cni --cni-bin-dir "$CNI_BIN" --cni-conf-dir "$STATE/cni/net.d" \
    --root-dir "$STATE/kubelet" --cert-dir "$STATE/kubelet/pki" \
    --client-ca-file "$PKI/ca.crt" --anonymous-auth=false --authorization-mode Webhook \
    --tls-cert-file "$PKI/kubelet-serving.crt" --tls-private-key-file "$PKI/kubelet-serving.key" \
    --read-only-port 0 --healthz-bind-address 127.0.0.1 \
    --cluster-domain cluster.local --cluster-dns "$NODE_IP" \
    --image-gc-high-threshold 100 --image-gc-low-threshold 99 \
    --eviction-hard "memory.available<100Mi,nodefs.available<1%,imagefs.available<1%" \
    --serialize-image-pulls=false --max-pods 110 ${OPSDECK_K8S_KUBELET_ARGS:-}
  wait_for "kubelet /healthz" 120 curl -fsS http://127.0.0.1:10248/healthz
  # after a restart the node still shows its old Ready condition: wait for a fresh heartbeat
  [ -z "$since" ] || wait_for "a heartbeat of node $NODE_NAME" 120 node_heartbeat_since "$since"
  wait_for "node $NODE_NAME Ready" "$UP_TIMEOUT" node_ready

  start kube-proxy "$BIN/kube-proxy" \
    --kubeconfig "$KCFG/kube-proxy.kubeconfig" --hostname-override "$NODE_NAME" \
    --proxy-mode iptables --cluster-cidr "$CLUSTER_CIDR" \
    --bind-address "$NODE_IP" --metrics-bind-address 127.0.0.1:10249 \
    --healthz-bind-address 127.0.0.1:10256 --conntrack-max-per-core 0
  wait_for kube-proxy 60 curl -fsS http://127.0.0.1:10256/healthz

  # What a cluster of today has and 1.20 lacks or this one does not run: the
  # kubernetes.io/metadata.name label on kube-system (NetworkPolicies select by it) and a
  # default StorageClass whose claims the agent binds to hostPath volumes.
  kc label --overwrite namespace kube-system kubernetes.io/metadata.name=kube-system >/dev/null
  kc apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-hostpath
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: opsdeck.local/hostpath
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF
  # pods can be created in a namespace once its default ServiceAccount exists
  wait_for "the default ServiceAccount" 60 kc -n default get serviceaccount default
  log "cluster up in $(( $(date +%s) - t0 ))s: Kubernetes $VERSION, node $NODE_NAME Ready, cluster DNS $NODE_IP"
  echo "export KUBECONFIG=$ADMIN_KUBECONFIG"
}

# ------------------------------------------------------------------ down
stop() { # component program
  local name=$1 exe=$2 pid i
  pid=$(pid_of "$name")
  [ -n "$pid" ] || return 0
  if ! ours "$name" "$exe"; then rm -f "$RUN/$name.pid"; return 0; fi
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 120; i++)); do alive "$pid" || break; sleep 0.25; done
  if alive "$pid"; then log "$name did not stop: SIGKILL $pid"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$RUN/$name.pid"
}

# iptables: only the KUBE-* (kubelet, kube-proxy) and CNI-* (firewall, portmap plugins)
# chains and the jumps to them; Docker's rules are left as they are. -w: Docker and the
# other engines' containers take the xtables lock often.
clean_iptables() {
  local t rules chains c r
  for t in filter nat mangle; do
    rules=$(iptables -w 10 -t "$t" -S 2>/dev/null) || continue
    { grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j (KUBE|CNI)-' <<<"$rules" || true; } \
      | sed 's/^-A /-D /' | while read -r r; do eval "iptables -w 10 -t $t $r" 2>/dev/null || true; done
    chains=$(sed -n 's/^-N \(\(KUBE\|CNI\)-[A-Za-z0-9_-]*\)$/\1/p' <<<"$rules")
    for c in $chains; do iptables -w 10 -t "$t" -F "$c" 2>/dev/null || true; done
    for c in $chains; do iptables -w 10 -t "$t" -X "$c" 2>/dev/null || true; done
  done
}

cmd_down() {
  local t0 uids="" ids foreign
  t0=$(date +%s)
  need_root "down"
  [ -d "$STATE" ] || { log "nothing to stop ($STATE does not exist)"; return 0; }
  BIN=$(readlink -f "$CACHE/current" 2>/dev/null || true)/bin
  foreign=$(foreign_kubelets)
  # this cluster's pods, to remove exactly their containers once the kubelet is stopped
  if ours kube-apiserver kube-apiserver && [ -x "$BIN/kubectl" ]; then
    uids=$(kc get pods -A -o jsonpath='{range .items[*]}{.metadata.uid}{"\n"}{end}' 2>/dev/null || true)
  fi
  stop kube-proxy kube-proxy
  stop kubelet kubelet
  # the containers the dockershim made (label io.kubernetes.docker.type) for this cluster's
  # pods; with no other kubelet on the machine, leftovers of an earlier run as well
  ids=$(docker ps -a --filter label=io.kubernetes.docker.type \
        --format '{{.ID}} {{.Label "io.kubernetes.pod.uid"}}' 2>/dev/null \
        | while read -r id uid; do
            if [ -z "$foreign" ] || { [ -n "$uid" ] && grep -qx "$uid" <<<"$uids"; }; then echo "$id"; fi
          done || true)
  if [ -n "$ids" ]; then
    log "removing $(wc -w <<<"$ids") pod containers (dockershim label)"
    xargs docker rm -f >/dev/null <<<"$ids" || true
  fi
  stop agent python3
  stop dnsmasq dnsmasq
  stop kube-scheduler kube-scheduler
  stop kube-controller-manager kube-controller-manager
  stop kube-apiserver kube-apiserver
  stop etcd etcd
  # what the bridge CNI left: our bridge and its address records
  if ip link show "$BRIDGE" >/dev/null 2>&1; then log "deleting bridge $BRIDGE"; ip link del "$BRIDGE" || true; fi
  rm -rf "$STATE/cni/ipam"
  # kept while another cluster's kubelet runs (they would be its chains too)
  if [ -z "$foreign" ] && [ "${OPSDECK_K8S_KEEP_IPTABLES:-0}" != 1 ]; then
    local try left
    for try in 1 2 3; do
      clean_iptables
      left=$({ iptables-save 2>/dev/null || true; } | { grep -cE '^:(KUBE|CNI)-' || true; })
      [ "$left" = 0 ] && break
      sleep "$try"
    done
    [ "$left" = 0 ] || log "iptables: $left KUBE-/CNI- chains could not be removed (in use?)"
  fi
  # the kubelet's mounts (Secret and projected volumes are tmpfs) under our state
  { grep -E " $STATE/kubelet(/| )" /proc/mounts || true; } | awk '{print $2}' | sort -r \
    | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  if [ "${1:-}" = --purge ]; then
    log "deleting $STATE (certificates, etcd data, volumes)"
    rm -rf "$STATE"
  fi
  log "down in $(( $(date +%s) - t0 ))s"
}

# ------------------------------------------------------------------ status, env
cmd_status() {
  local c exe rc=0 ready
  BIN=$(readlink -f "$CACHE/current" 2>/dev/null || true)/bin
  printf 'binaries: %s\nstate:    %s\n' "$(readlink -f "$CACHE/current" 2>/dev/null || echo 'not built')/bin" "$STATE"
  for c in etcd:etcd kube-apiserver:kube-apiserver kube-controller-manager:kube-controller-manager \
           kube-scheduler:kube-scheduler dnsmasq:dnsmasq agent:python3 kubelet:kubelet kube-proxy:kube-proxy; do
    exe=${c#*:}; c=${c%%:*}
    if ours "$c" "$exe"; then printf '  %-24s running (pid %s)\n' "$c" "$(pid_of "$c")"
    else printf '  %-24s stopped\n' "$c"; rc=1; fi
  done
  if [ -x "$BIN/kubectl" ] && [ -f "$ADMIN_KUBECONFIG" ] \
     && ready=$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null); then
    printf 'node %s Ready=%s\nKUBECONFIG=%s\n' "$NODE_NAME" "$ready" "$ADMIN_KUBECONFIG"
    [ "$ready" = True ] || rc=1
  else
    echo "the API server does not answer"; rc=1
  fi
  return $rc
}

cmd_env() {
  local v
  v=$(readlink -f "$CACHE/current" 2>/dev/null || true)
  if [ -z "$v" ] || [ ! -x "$v/bin/kubectl" ]; then die "not built yet: run $0 build (or up)"; fi
  echo "export KUBECONFIG=$ADMIN_KUBECONFIG"
  echo "export PATH=$v/bin:\$PATH"
  echo "export OPSDECK_TEST_PAUSE_IMAGE=opsdeck-k8s/pause:$(cat "$v/pause/tag")"
  echo "export OPSDECK_TEST_BUSYBOX_IMAGE=$(busybox_image)"
  echo "export OPSDECK_K8S_OPENAPI_V2=$v/openapi-v2.json"
}

# ------------------------------------------------------------------ main
case "${1:-}" in
  build) cmd_build ;;
  up) cmd_up ;;
  down) cmd_down "${2:-}" ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) echo "usage: $0 build|up|down [--purge]|status|env" >&2; exit 2 ;;
esac
