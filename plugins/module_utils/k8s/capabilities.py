# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rendering that follows the server: adapt rendered manifests to what a cluster serves.

The renderers write for a current Kubernetes (autoscaling/v2, policy/v1, batch/v1
CronJob, Pod Security Admission labels, ...). An older API server does not serve some of
those group versions and refuses fields added after it was released (server-side apply
answers "field not declared in schema"). ``adapt`` takes the rendered manifest list and
the server's capabilities, as Helm's ``.Capabilities`` has them:

    {"version": "1.20.2",
     "api_versions": ["v1", "apps/v1", "autoscaling/v2beta2",
                      "autoscaling/v2beta2/HorizontalPodAutoscaler", ...]}

(group versions, and ``<group version>/<Kind>`` for the kinds each serves), and returns
the manifests the server accepts with the same meaning: the newest served group version
of a kind that was renamed across versions, fields the server's schema lacks dropped
where that keeps the behaviour (``explain`` says what was done, so the deploy can report
it), and an error naming the object where it does not. ``discover`` reads the capabilities
from a live API server; ``for_version`` derives them from a version alone (GitOps
directories rendered for a cluster that is not reachable).

Independently of the version, a NetworkPolicy never carries an empty ``ingress``/``egress``
list (the server drops it, so every server-side apply would bump the generation: not
idempotent) and every Service and container port names its protocol (1.20's server-side
apply refuses a port without it: "associative list with keys has an element that omits
key field protocol").
"""

from __future__ import annotations

import copy
import re

# Kinds whose group version changed: the versions to try, newest first. The schemas of
# these pairs are the same for every field the renderers write (autoscaling/v2 is
# v2beta2 made GA; policy/v1 and batch/v1 likewise), apart from the fields below.
ALTERNATIVES = {
    "HorizontalPodAutoscaler": ("autoscaling/v2", "autoscaling/v2beta2"),
    "PodDisruptionBudget": ("policy/v1", "policy/v1beta1"),
    "CronJob": ("batch/v1", "batch/v1beta1"),
}

# What each Kubernetes minor release serves, for the kinds above (first and last minor
# serving it; None: still served). Used only when the capabilities come from a version
# number instead of the server.
SERVED = {
    ("autoscaling/v2", "HorizontalPodAutoscaler"): (23, None),
    ("autoscaling/v2beta2", "HorizontalPodAutoscaler"): (12, 25),
    ("policy/v1", "PodDisruptionBudget"): (21, None),
    ("policy/v1beta1", "PodDisruptionBudget"): (5, 24),
    ("batch/v1", "CronJob"): (21, None),
    ("batch/v1beta1", "CronJob"): (8, 24),
    ("networking.k8s.io/v1", "Ingress"): (19, None),
    ("networking.k8s.io/v1", "NetworkPolicy"): (7, None),
}

# Group versions every release this collection supports serves (1.19 and later).
BASE_API_VERSIONS = ("v1", "apps/v1", "batch/v1", "networking.k8s.io/v1", "rbac.authorization.k8s.io/v1",
                     "storage.k8s.io/v1", "autoscaling/v1", "policy/v1beta1")

OLDEST_MINOR = 19  # networking.k8s.io/v1 Ingress

POD_PATHS = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}

# Fields a server older than their minor release does not know, dropped because without
# them the object behaves as the model says (or as close as that server can):
# (kinds, path from the object or "POD"/"CONTAINER", first minor with the field, why it is safe).
DROPPABLE = (
    (("StatefulSet",), ("spec", "persistentVolumeClaimRetentionPolicy"), 23,
     "claims were always retained before 1.23, which is what the renderers ask for"),
    (("StatefulSet",), ("spec", "minReadySeconds"), 22, "pods count as available once ready"),
    (("PodDisruptionBudget",), ("spec", "unhealthyPodEvictionPolicy"), 26,
     "unhealthy pods then count against the budget (evictions of them may wait)"),
    (("DaemonSet",), ("spec", "updateStrategy", "rollingUpdate", "maxSurge"), 21,
     "rolling updates replace one pod at a time without surge"),
    (("CronJob",), ("spec", "timeZone"), 25, "the schedule is read in the controller manager's time zone"),
    (("Service",), ("spec", "internalTrafficPolicy"), 21, "in-cluster traffic goes to any endpoint"),
    (("Service",), ("spec", "trafficDistribution"), 30, "traffic is spread over every endpoint"),
    (("POD",), ("os",), 23, "the node's operating system is not checked"),
    (("POD",), ("hostUsers",), 25, "pods share the host's user namespace (the default)"),
    (("CONTAINER",), ("resizePolicy",), 27, "resources are not resized in place"),
)

# Fields that change what runs: an older server cannot be given the object without them.
REFUSED = (
    (("CONTAINER",), ("livenessProbe", "grpc"), 24, "a gRPC probe"),
    (("CONTAINER",), ("readinessProbe", "grpc"), 24, "a gRPC probe"),
    (("CONTAINER",), ("startupProbe", "grpc"), 24, "a gRPC probe"),
    (("INIT",), ("restartPolicy",), 28, "a sidecar init container (restartPolicy)"),
)

PSA_LABEL = re.compile(r"^pod-security\.kubernetes\.io/")
PSA_MINOR = 23  # Pod Security Admission on by default (beta)


class CapabilityError(Exception):
    """The manifests cannot be given to this server with their meaning intact."""


def parse_version(version):
    """(major, minor) of ``v1.20.2``, ``1.20``, ``1.20.2-gke.1``; ValueError otherwise."""
    match = re.match(r"^v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+].*)?$", str(version or "").strip())
    if not match:
        raise ValueError("%r is not a Kubernetes version (e.g. 1.20 or v1.20.2)" % (version,))
    return int(match.group(1)), int(match.group(2))


def for_version(version):
    """Capabilities of a Kubernetes release, from the version alone (no server asked)."""
    major, minor = parse_version(version)
    if major != 1 or minor < OLDEST_MINOR:
        raise ValueError("Kubernetes %s is not supported (1.%d or later)" % (version, OLDEST_MINOR))
    api_versions = set(BASE_API_VERSIONS)
    for (api_version, _kind), (first, last) in SERVED.items():
        if minor >= first and (last is None or minor <= last):
            api_versions.add(api_version)  # the kinds: SERVED again, in serves()
    return {"version": "%d.%d" % (major, minor), "api_versions": sorted(api_versions)}


def discover(request):
    """Capabilities of a live API server; ``request(method, path)`` returns decoded JSON.

    Reads /version, /api and /apis, and each served group version's resource list (the
    kinds), as ``helm`` does for ``.Capabilities.APIVersions``.
    """
    version = request("GET", "/version").get("gitVersion") or ""
    group_versions = ["v1"] if "v1" in (request("GET", "/api").get("versions") or []) else []
    for group in request("GET", "/apis").get("groups") or []:
        for item in group.get("versions") or []:
            group_versions.append(item["groupVersion"])
    api_versions = set()
    for group_version in group_versions:
        api_versions.add(group_version)
        prefix = "/api/" if group_version == "v1" else "/apis/"
        for resource in request("GET", prefix + group_version).get("resources") or []:
            if "/" not in resource.get("name", "") and resource.get("kind"):
                api_versions.add("%s/%s" % (group_version, resource["kind"]))
    return {"version": version.lstrip("v"), "api_versions": sorted(api_versions)}


def from_cluster_info(info):
    """Capabilities from kubernetes.core.k8s_cluster_info's result (``apis``, ``version``)."""
    api_versions = set()
    for group_version, kinds in (info.get("apis") or {}).items():
        api_versions.add(group_version)
        api_versions.update("%s/%s" % (group_version, kind) for kind in kinds or {})
    server = ((info.get("version") or {}).get("server") or {}).get("kubernetes") or {}
    return {"version": str(server.get("gitVersion") or "").lstrip("v"), "api_versions": sorted(api_versions)}


def serves(capabilities, api_version, kind):
    """Whether the server serves ``kind`` in ``api_version``."""
    served = set(capabilities.get("api_versions") or [])
    if api_version not in served:
        return False
    prefix = api_version + "/"
    kinds = [entry[len(prefix):] for entry in served if entry.startswith(prefix) and "/" not in entry[len(prefix):]]
    if kinds:
        return kind in kinds
    first_last = SERVED.get((api_version, kind))  # group versions listed without their kinds
    if first_last is None or not capabilities.get("version"):
        return True
    minor = parse_version(capabilities["version"])[1]
    return minor >= first_last[0] and (first_last[1] is None or minor <= first_last[1])


def _name(obj):
    meta = obj.get("metadata") or {}
    where = "%s/%s" % (meta.get("namespace"), meta.get("name")) if meta.get("namespace") else meta.get("name")
    return "%s %s" % (obj.get("kind"), where)


def _pod_spec(obj):
    path = POD_PATHS.get(obj.get("kind"))
    node = obj
    for key in path or ():
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def _targets(obj, scope):
    """The dicts a rule applies to: the object, its pod spec, or its (init) containers."""
    if scope == obj.get("kind"):
        return [obj]
    pod = _pod_spec(obj)
    if pod is None:
        return []
    if scope == "POD":
        return [pod]
    if scope == "INIT":
        return [c for c in pod.get("initContainers") or [] if isinstance(c, dict)]
    if scope == "CONTAINER":
        return [c for key in ("containers", "initContainers") for c in pod.get(key) or [] if isinstance(c, dict)]
    return []


def _pop(node, path):
    """Remove ``path`` under ``node``; whether something was removed."""
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict) and path[-1] in node:
        del node[path[-1]]
        return True
    return False


def _has(node, path):
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def _ports(obj):
    if obj.get("kind") == "Service":
        return [p for p in (obj.get("spec") or {}).get("ports") or [] if isinstance(p, dict)]
    pod = _pod_spec(obj)
    if pod is None:
        return []
    return [p for key in ("containers", "initContainers") for c in pod.get(key) or []
            for p in (c.get("ports") or []) if isinstance(p, dict)]


def _adapt(manifests, capabilities):
    minor = None
    if capabilities and capabilities.get("version"):
        minor = parse_version(capabilities["version"])[1]
    out, notes, refused = [], [], []
    for original in manifests:
        obj = copy.deepcopy(original)
        kind = obj.get("kind")
        # version-independent: what the API server would normalise away on every apply
        if kind == "NetworkPolicy":
            spec = obj.get("spec") or {}
            for key in ("ingress", "egress"):
                if spec.get(key) == []:
                    del spec[key]
        for port in _ports(obj):
            port.setdefault("protocol", "TCP")
        if capabilities:
            alternatives = ALTERNATIVES.get(kind)
            if alternatives and obj.get("apiVersion") in alternatives and not serves(capabilities, obj["apiVersion"], kind):
                served = [v for v in alternatives if serves(capabilities, v, kind)]
                if not served:
                    refused.append("%s: the server serves none of %s" % (_name(obj), ", ".join(alternatives)))
                else:
                    notes.append("%s: %s instead of %s" % (_name(obj), served[0], obj["apiVersion"]))
                    obj["apiVersion"] = served[0]
        if minor is not None:
            for scopes, path, since, why in DROPPABLE:
                if minor >= since:
                    continue
                for scope in scopes:
                    for target in _targets(obj, scope):
                        if _pop(target, path):
                            notes.append("%s: %s dropped (Kubernetes 1.%d has it from 1.%d: %s)"
                                         % (_name(obj), ".".join(path), minor, since, why))
            for scopes, path, since, what in REFUSED:
                if minor >= since:
                    continue
                for scope in scopes:
                    if any(_has(target, path) for target in _targets(obj, scope)):
                        refused.append("%s uses %s, which Kubernetes 1.%d does not have (from 1.%d)"
                                       % (_name(obj), what, minor, since))
            if kind == "Namespace" and minor < PSA_MINOR:
                labels = (obj.get("metadata") or {}).get("labels") or {}
                dropped = sorted(key for key in labels if PSA_LABEL.match(key))
                for key in dropped:
                    del labels[key]
                if dropped:
                    notes.append("%s: Pod Security labels dropped (no Pod Security Admission before 1.%d; "
                                 "the pod specs stay restricted)" % (_name(obj), PSA_MINOR))
        out.append(obj)
    if refused:
        raise CapabilityError("the manifests cannot be applied to Kubernetes %s without changing what they do: %s"
                              % ((capabilities or {}).get("version"), "; ".join(refused)))
    return out, notes


def adapt(manifests, capabilities=None):
    """The manifests adapted to the server's capabilities (None: version-independent fixes only)."""
    return _adapt(manifests, capabilities)[0]


def explain(manifests, capabilities=None):
    """What ``adapt`` changes, one line per change (for the deploy's report)."""
    return _adapt(manifests, capabilities)[1]
