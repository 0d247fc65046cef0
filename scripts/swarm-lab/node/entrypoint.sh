#!/bin/sh
# Entry point of a Swarm lab node: make the container able to run dockerd without
# --privileged, then exec dockerd.
#   SWARMLAB_INSECURE_REGISTRIES  space-separated host:port list (the lab's registry)
#   SWARMLAB_DOCKERD_ARGS         extra dockerd arguments
set -eu
# A restarted node keeps its file system: no pid file of the previous run may block dockerd.
rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid 2>/dev/null || true
# swarm-lab.sh runs the nodes with --cap-add ALL --cap-drop SYS_RESOURCE and unconfined
# seccomp/apparmor/systempaths instead of --privileged (which cannot start on a host that
# withholds CAP_SYS_RESOURCE). What --privileged would also give and dockerd needs: a
# writable /sys and cgroup tree (a bind remount works where a plain remount is "busy").
if grep -q ' /sys sysfs ro' /proc/mounts; then
  mount -o remount,rw /sys
fi
for d in /sys/fs/cgroup /sys/fs/cgroup/*; do
  if grep -q " $d cgroup2\? ro" /proc/mounts; then
    mount -o remount,bind,rw "$d" 2>/dev/null || mount -o remount,rw "$d"
  fi
done
# Mount propagation for the volumes and bind mounts of the tasks.
mount --make-rshared / 2>/dev/null || true

set -- --host=unix:///var/run/docker.sock --storage-driver=overlay2
for r in ${SWARMLAB_INSECURE_REGISTRIES:-}; do
  set -- "$@" --insecure-registry="$r"
done
# Without CAP_SYS_RESOURCE a negative OOM score cannot be set: ask for none.
set -- "$@" --oom-score-adjust=0 --log-opt max-size=10m --log-opt max-file=2
# shellcheck disable=SC2086
exec dockerd "$@" ${SWARMLAB_DOCKERD_ARGS:-}
