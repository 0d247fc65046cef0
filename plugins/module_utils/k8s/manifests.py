# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render the normalised stack model into Kubernetes manifests (private, pure).

``render(model, secrets)`` returns a list of plain dicts in a fixed apply order
(Namespace, ServiceAccounts, RBAC, Secrets, ConfigMaps, NetworkPolicies, Services, StatefulSets,
Deployments, DaemonSets, Jobs, HPAs, PodDisruptionBudgets, Ingresses), each kind sorted by name; the
monitoring and ELK components come from _kubernetes_obs. Nothing
here talks to a cluster: the ``kubernetes`` role applies the list (server-side apply).

- The proxy is the Ingress (class ``nginx``): one Ingress per routed service, because
  the route's rate limit, CORS and body size are per-Ingress annotations. Only plain,
  safe ingress-nginx annotations are used (no ``*-snippet``: recent ingress-nginx
  refuses them by default); security headers other than HSTS are the controller's
  ``add-headers`` ConfigMap's job, and HSTS is on by default for TLS hosts.
- A change of a secret rolls exactly the pods that mount it: their template carries an
  ``opsdeck.io/secrets-checksum`` annotation over per-secret digests. Secret values
  appear only in the Secret objects (base64), never in any other manifest.
- Pods run non-root with a read-only root filesystem, all capabilities dropped and the
  RuntimeDefault seccomp profile, so the namespace enforces the ``restricted`` Pod
  Security Standard. The host agents (node exporter, Filebeat) cannot: they run in a
  namespace of their own, ``<namespace>-agents``, of ``privileged`` Pod Security
  (_kubernetes_obs), and only their DaemonSets get the host-agent POLICY_SKIPS.
- Network: default deny (ingress and egress), DNS egress allowed, each workload gets
  exactly the flows the model implies (ingress controller -> routed apps, app ->
  postgres/redis it ``uses``, app -> apps it ``depends_on`` within the same tenant).
  Nothing selects other namespaces except kube-dns, the ingress controller and the
  stack's own agents namespace (Prometheus -> node exporter, Filebeat -> Logstash, see
  _kubernetes_obs), so no traffic crosses tenants (one stack = one namespace, plus
  ``<namespace>-agents`` for its host agents when monitoring or logging is on).

Optional per-service keys read defensively (the model does not define them yet):
``session_affinity`` (true, ``"ClientIP"`` or ``{"timeout": seconds}``) and ``tenant``;
``model.get("tenant")`` and ``model["proxy"].get("host")`` likewise.
"""

from __future__ import annotations

import base64
import json
import math
import re

from ansible_collections.opsdeck.stack.plugins.module_utils.common import digest as _digest
from ansible_collections.opsdeck.stack.plugins.module_utils.common import names
from ansible_collections.opsdeck.stack.plugins.module_utils.common import patch as _patch
from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import hpa as _hpa

MANAGED_BY = "opsdeck"
TENANT_LABEL = "opsdeck.io/tenant"
CHECKSUM_ANNOTATION = "opsdeck.io/secrets-checksum"
FILES_CHECKSUM_ANNOTATION = "opsdeck.io/files-checksum"
INGRESS_CLASS = "nginx"
INGRESS_NAMESPACE = "ingress-nginx"
NGINX = "nginx.ingress.kubernetes.io/"
SECRETS_DIR = "/run/secrets"
SESSION_AFFINITY_TIMEOUT = 3600
# The claim of a persistent volume whose model gives no size.
DEFAULT_VOLUME_SIZE = "1Gi"
DNS1123_LABEL = names.DNS1123_LABEL
DNS1123_SUBDOMAIN = names.DNS1123_SUBDOMAIN
RATE = re.compile(r"^([1-9][0-9]*)r/([sm])$")

# Kinds in the order they are applied (dependencies first).
KIND_ORDER = ("Namespace", "ServiceAccount", "Role", "RoleBinding", "Secret", "ConfigMap",
              "PersistentVolumeClaim", "NetworkPolicy", "Service", "StatefulSet", "Deployment",
              "DaemonSet", "Job",
              "HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress")
# The file name prefix of each kind (GitOps layout). Kinds added later share the prefix of
# the phase they are applied in (ConfigMaps with Secrets, DaemonSets and Jobs with the
# workloads; "04-configmap" < "04-secret" and "08-deployment" < "08-job" keep the order), so
# no existing file is ever renamed.
FILE_PREFIX = {"Namespace": 0, "ServiceAccount": 1, "Role": 2, "RoleBinding": 3, "Secret": 4,
               "ConfigMap": 4, "PersistentVolumeClaim": 4, "NetworkPolicy": 5, "Service": 6, "StatefulSet": 7,
               "Deployment": 8, "DaemonSet": 8, "Job": 8, "HorizontalPodAutoscaler": 9,
               "PodDisruptionBudget": 10, "Ingress": 11}
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")

# The API group of the kinds an Object metric may describe.
OBJECT_API_VERSIONS = {"Ingress": "networking.k8s.io/v1", "Deployment": "apps/v1",
                       "StatefulSet": "apps/v1", "Service": "v1"}

DATASTORE_PROBE = {"periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 6}

# Policy checks (checkov) the manifests knowingly do not meet, with the reason. Each one
# is written into the workload it concerns as a ``checkov.io/skipN: CHECK=reason``
# annotation, and only when the workload really falls short (e.g. an image already
# pinned by digest gets no CKV_K8S_43 skip), so a policy scan shows the reason next to
# the object instead of a silent exclusion list. tests/unit/test_kubernetes_policy.py
# runs checkov over every inventory and asserts zero failures.
POLICY_SKIPS = {
    "CKV_K8S_15": "imagePullPolicy IfNotPresent on purpose: images are pinned by version tag or digest "
                  "in the stack model, and Always would make every pod start depend on the registry",
    "CKV_K8S_43": "the stack model pins this image by version tag, not digest; "
                  "write image@sha256:... in the model to pin by digest",
    "CKV_K8S_10": "the stack model sets no resources.requests.cpu for this workload; "
                  "the renderer does not invent sizes",
    "CKV_K8S_11": "the stack model sets no resources.limits.cpu for this workload; "
                  "the renderer does not invent sizes",
    "CKV_K8S_12": "the stack model sets no resources.requests.memory for this workload; "
                  "the renderer does not invent sizes",
    "CKV_K8S_13": "the stack model sets no resources.limits.memory for this workload; "
                  "the renderer does not invent sizes",
    "CKV_K8S_38": "the stack model gives this workload a service account with token: true "
                  "(it calls the Kubernetes API); its Role says what the token may do",
}
# The host agents (node exporter, Filebeat: DaemonSets in the ``<namespace>-agents``
# namespace of privileged Pod Security, see _kubernetes_obs) knowingly fall short of these;
# they are written only into those two DaemonSets, and only where the pod really does it.
POLICY_SKIPS.update({
    "CKV_K8S_17": "the node exporter shares the host's PID namespace to report host metrics; "
                  "it runs in the <namespace>-agents namespace (privileged Pod Security) only",
    "CKV_K8S_23": "Filebeat runs as uid 0 to read the root-owned container logs (read-only "
                  "hostPaths, in the <namespace>-agents namespace of privileged Pod Security)",
    "CKV_K8S_40": "Filebeat runs as uid 0, not a high uid: the container logs it reads are "
                  "root's; every capability is dropped but DAC_READ_SEARCH",
    "CKV_K8S_25": "Filebeat adds DAC_READ_SEARCH only (read and traverse the runtime's log "
                  "files whatever their modes; it grants no write); all others are dropped",
})
POLICY_SKIP_ANNOTATION = "checkov.io/skip%d"
# The DaemonSets of the agents namespace: the only workloads that may get the skips above.
HOST_AGENTS = ("node-exporter", "filebeat")
AGENTS_SUFFIX = "-agents"


class RenderError(ValueError):
    """The model cannot be rendered for Kubernetes (names the field and the problem)."""


# --------------------------------------------------------------------------- helpers
digest = _digest.digest
_checksum = _digest.checksum


def k8s_name(name):
    """A secret/object name as a DNS-1123 name ("postgres_password" -> "postgres-password")."""
    out = str(name).lower().replace("_", "-").replace(".", "-")
    if len(out) > 63 or not DNS1123_LABEL.match(out):
        raise RenderError("%r cannot be made a DNS-1123 name (got %r)" % (name, out))
    return out


def agents_namespace(namespace):
    """The namespace of the stack's host agents (privileged Pod Security, see _kubernetes_obs)."""
    name = namespace + AGENTS_SUFFIX
    if len(name) > 63:
        raise RenderError("the agents namespace %r is longer than 63 characters: shorten "
                          "stack_name" % name)
    return name


def labels(stack, component, role=None, tenant=None):
    """The standard labels of every object of the stack."""
    out = {
        "app.kubernetes.io/name": component,
        "app.kubernetes.io/part-of": stack,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    if role:
        out["app.kubernetes.io/component"] = role
    if tenant:
        out[TENANT_LABEL] = tenant
    return out


def selector(stack, component):
    """Immutable selector labels of a workload (a subset of its pod labels)."""
    return {"app.kubernetes.io/name": component, "app.kubernetes.io/part-of": stack}


def _meta(name, namespace, lbls, annotations=None):
    meta = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = dict(lbls)
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def _tenant(model, svc=None):
    value = (svc or {}).get("tenant") or model.get("tenant")
    if value is None:
        return None
    value = str(value)
    if len(value) > 63 or not DNS1123_LABEL.match(value):
        raise RenderError("tenant: %r is not a DNS-1123 label" % value)
    return value


def session_affinity(svc):
    """The per-service ``session_affinity`` key (not in the model yet) as (on, timeout)."""
    value = svc.get("session_affinity")
    if value in (None, False, "None", "none"):
        return None
    if value is True or value in ("ClientIP", "client_ip", "clientip"):
        return SESSION_AFFINITY_TIMEOUT
    if isinstance(value, dict):
        timeout = value.get("timeout", value.get("timeoutSeconds", SESSION_AFFINITY_TIMEOUT))
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 86400:
            raise RenderError("stack_services.%s.session_affinity.timeout: %r is not allowed "
                              "(allowed: 1..86400 seconds)" % (svc.get("name"), timeout))
        return timeout
    raise RenderError("stack_services.%s.session_affinity: %r is not allowed (allowed: true, "
                      "ClientIP or {timeout: seconds})" % (svc.get("name"), value))


def rate_annotations(route):
    """ingress-nginx rate-limit annotations for a route's rate/burst/conn_limit.

    ``10r/s`` -> limit-rps 10; ``600r/m`` -> limit-rps 10; ``30r/m`` -> limit-rpm 30
    (limit-rps is an integer). ingress-nginx's burst is rate x multiplier, so the
    multiplier is ceil(burst / rate), at least 1. ingress-nginx always uses ``nodelay``.
    """
    match = RATE.match(route["rate"])
    if not match:
        raise RenderError("route rate %r is not valid (allowed e.g. 10r/s or 600r/m)" % route["rate"])
    amount, unit = int(match.group(1)), match.group(2)
    out = {}
    if unit == "s":
        out[NGINX + "limit-rps"] = str(amount)
        per_unit = amount
    elif amount % 60 == 0:
        out[NGINX + "limit-rps"] = str(amount // 60)
        per_unit = amount // 60
    else:
        out[NGINX + "limit-rpm"] = str(amount)
        per_unit = amount
    multiplier = max(1, int(math.ceil(float(route.get("burst") or 0) / per_unit)))
    out[NGINX + "limit-burst-multiplier"] = str(multiplier)
    if route.get("conn_limit"):
        out[NGINX + "limit-connections"] = str(route["conn_limit"])
    return out


def _secret_value(secrets, name):
    if name not in secrets or secrets[name] is None:
        raise RenderError("secret %r is used by the stack but has no value (set it in the vault)" % name)
    return str(secrets[name])


def _b64(text):
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


# --------------------------------------------------------------------------- pods
def _pod_security(uid, gid):
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "fsGroup": gid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container_security(read_only):
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": bool(read_only),
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _uid_gid(model, svc=None):
    user = (svc or {}).get("user")
    if user:
        parts = str(user).split(":")
        uid = int(parts[0])
        gid = int(parts[1]) if len(parts) > 1 else uid
    else:
        uid = gid = int(model["runtime_uid"])
    if uid == 0:
        raise RenderError("stack_services.%s.user: uid 0 is not allowed on Kubernetes "
                          "(pods run non-root)" % (svc or {}).get("name"))
    return uid, gid


def _secret_volume(names):
    """One projected volume at /run/secrets holding only the secrets a pod uses."""
    return {
        "name": "secrets",
        "projected": {
            "defaultMode": 0o440,
            "sources": [{"secret": {"name": k8s_name(name),
                                    "items": [{"key": name, "path": name}]}}
                        for name in sorted(names)],
        },
    }


def _pod_template(model, component, tenant, container, volumes, secret_names, secrets,
                  uid_gid, spread=True, env_secret_names=(), files=()):
    """A pod template; its checksum annotations roll the pods when a secret they mount or
    read into the environment changes (``secrets-checksum``), or a file (``files-checksum``)."""
    stack = model["name"]
    pod_labels = labels(stack, component, None, tenant)
    annotations = {CHECKSUM_ANNOTATION: _checksum(
        {name: digest(_secret_value(secrets, name), stack + ":" + name)
         for name in sorted(set(secret_names) | set(env_secret_names))})}
    if files:
        annotations[FILES_CHECKSUM_ANNOTATION] = _checksum({f["key"]: digest(f["content"]) for f in files})
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    vols = [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
    if secret_names:
        mounts.append({"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True})
        vols.append(_secret_volume(secret_names))
    container["volumeMounts"] = mounts + container.get("volumeMounts", [])
    spec = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": _pod_security(*uid_gid),
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
        "volumes": vols + volumes,
    }
    if spread:
        spec["topologySpreadConstraints"] = [{
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector(stack, component)},
        }]
    return {"metadata": {"labels": pod_labels, "annotations": annotations}, "spec": spec}


def _resources(svc):
    out = {}
    for kind in ("requests", "limits"):
        section = (svc.get("resources") or {}).get(kind) or {}
        values = {key: section[key] for key in ("cpu", "memory") if section.get(key)}
        if values:
            out[kind] = values
    return out


def _probe(spec):
    """One Kubernetes probe from a model probe (http, tcp or exec, with its timings)."""
    if spec["kind"] == "http":
        out = {"httpGet": {"path": spec["path"], "port": spec["port"]}}
    elif spec["kind"] == "tcp":
        out = {"tcpSocket": {"port": spec["port"]}}
    else:
        out = {"exec": {"command": list(spec["command"])}}
    if spec.get("initial_delay"):
        out["initialDelaySeconds"] = spec["initial_delay"]
    out.update({"periodSeconds": spec["period"], "timeoutSeconds": spec["timeout"],
                "failureThreshold": spec["failures"]})
    return out


def _app_probes(health):
    """Liveness and readiness as the model gives them. Without an explicit initial delay on
    the liveness probe, a startup probe (the liveness check) allows start_period first."""
    live, ready = health["live"], health["ready"]
    out = {"livenessProbe": _probe(live), "readinessProbe": _probe(ready)}
    if live.get("initial_delay") is None:
        startup = dict(live, failures=int(math.ceil(float(health["start_period"]) / live["period"]))
                       + live["failures"])
        out["startupProbe"] = _probe(startup)
    return out


def _exec_probes(command, start_period=60):
    base = dict(DATASTORE_PROBE)
    return {
        "startupProbe": dict(base, exec={"command": list(command)},
                             failureThreshold=int(math.ceil(float(start_period) / base["periodSeconds"]))),
        "livenessProbe": dict(base, exec={"command": list(command)}),
        "readinessProbe": dict(base, exec={"command": list(command)}, failureThreshold=3),
    }


def _env(mapping):
    return [{"name": key, "value": str(mapping[key])} for key in sorted(mapping)]


# --------------------------------------------------------------------------- workloads
def _app_volumes(svc, container):
    """The pod volumes and claim templates of a service's volumes and files.

    Returns (pod volumes, volumeClaimTemplates, shared claims): a persistent volume
    ReadWriteOnce gives each replica its own claim (the service becomes a StatefulSet),
    ReadWriteMany one PersistentVolumeClaim shared by every replica; tmpfs is an emptyDir
    in memory; files come from the service's ConfigMap, each at its path (subPath).
    A bind mount (a host directory) is not rendered: the fidelity report says so.
    """
    mounts, volumes, templates, shared = [], [], [], []
    for volume in svc.get("volumes") or []:
        name = "vol-%s" % volume["name"]
        if volume["type"] == "bind":
            continue
        mount = {"name": name, "mountPath": volume["path"]}
        if volume["read_only"]:
            mount["readOnly"] = True
        mounts.append(mount)
        if volume["type"] == "tmpfs":
            empty = {"medium": "Memory"}
            if volume["size"]:
                empty["sizeLimit"] = volume["size"]
            volumes.append({"name": name, "emptyDir": empty})
            continue
        claim = {"accessModes": [volume["access"]],
                 "resources": {"requests": {"storage": volume["size"] or DEFAULT_VOLUME_SIZE}}}
        if volume["class"]:
            claim["storageClassName"] = volume["class"]
        if volume["access"] == "ReadWriteOnce":
            templates.append({"metadata": {"name": name}, "spec": claim})
        else:
            claim_name = "%s-%s" % (svc["name"], volume["name"])
            shared.append((claim_name, claim))
            volumes.append({"name": name, "persistentVolumeClaim": {"claimName": claim_name}})
    if svc.get("files"):
        volumes.append({"name": "files", "configMap": {
            "name": "%s-files" % svc["name"],
            "items": [{"key": f["key"], "path": f["key"], "mode": int(f["mode"], 8)} for f in svc["files"]]}})
        mounts.extend({"name": "files", "mountPath": f["path"], "subPath": f["key"], "readOnly": True}
                      for f in svc["files"])
    container["volumeMounts"] = mounts
    return volumes, templates, shared


def _deployment(model, svc, secrets, namespace):
    """The workload of an app service: a Deployment, or a StatefulSet when each replica needs
    a persistent volume of its own."""
    stack = model["name"]
    name = svc["name"]
    tenant = _tenant(model, svc)
    container = {
        "name": name,
        "image": svc["image"],
        "imagePullPolicy": "IfNotPresent",
        "securityContext": _container_security(svc.get("read_only", True)),
    }
    if svc.get("entrypoint"):
        container["command"] = list(svc["entrypoint"])
    if svc.get("command"):
        container["args"] = list(svc["command"])
    env = _env(svc.get("env") or {}) + [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": k8s_name(secret), "key": secret}}}
        for key, secret in sorted((svc.get("env_secrets") or {}).items())]
    if env:
        container["env"] = sorted(env, key=lambda item: item["name"])
    if svc.get("ports"):
        container["ports"] = [{"name": port["name"], "containerPort": port["port"],
                               "protocol": port["protocol"].upper()} for port in svc["ports"]]
        if not svc.get("health") and svc["ports"][0]["protocol"] == "tcp":
            container["readinessProbe"] = {"tcpSocket": {"port": svc["ports"][0]["name"]},
                                           "periodSeconds": 10}
    if svc.get("health") and svc["health"]["probe"] != "none":
        container.update(_app_probes(svc["health"]))
    resources = _resources(svc)
    if resources:
        container["resources"] = resources
    volumes, templates, _shared = _app_volumes(svc, container)
    template = _pod_template(model, name, tenant, container, volumes, svc.get("secrets") or [],
                             secrets, _uid_gid(model, svc),
                             env_secret_names=(svc.get("env_secrets") or {}).values(),
                             files=svc.get("files") or ())
    _app_pod_settings(svc, template, selector(stack, name))
    account = svc.get("service_account")
    if account:
        token = any(a["name"] == account and a["token"]
                    for a in (model.get("kubernetes") or {}).get("service_accounts") or [])
        template["spec"]["serviceAccountName"] = account
        template["spec"]["automountServiceAccountToken"] = token
    spec = {
        "selector": {"matchLabels": selector(stack, name)},
        "revisionHistoryLimit": 5,
        "template": template,
    }
    kind = workload_kind(svc)
    if templates:
        spec.update({"serviceName": name, "podManagementPolicy": "Parallel",
                     "updateStrategy": {"type": "RollingUpdate"}, "volumeClaimTemplates": [
                         {"metadata": dict(t["metadata"], labels=labels(stack, name, "app", tenant)),
                          "spec": t["spec"]} for t in templates]})
    else:
        spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": _rolling(svc.get("update"))}
    if not svc.get("autoscaling"):
        spec = dict({"replicas": svc["replicas"]}, **spec)
    return {"apiVersion": "apps/v1", "kind": kind,
            "metadata": _meta(name, namespace, dict(svc.get("labels") or {}, **labels(stack, name, "app", tenant))),
            "spec": spec}


def _rolling(update):
    """maxSurge/maxUnavailable: the model's, else 1/0 (start-first) or 0/1 (stop-first)."""
    update = update or {}
    stop_first = update.get("order") == "stop-first"
    out = {}
    for key, model_key, default in (("maxUnavailable", "max_unavailable", 1 if stop_first else 0),
                                    ("maxSurge", "max_surge", 0 if stop_first else 1)):
        value = update.get(model_key)
        out[key] = default if value is None else (value if value.endswith("%") else int(value))
    return out


def _app_pod_settings(svc, template, match):
    """The model's labels, annotations, grace period and placement on an app's pods."""
    meta, pod = template["metadata"], template["spec"]
    if svc.get("labels"):
        meta["labels"] = dict(svc["labels"], **meta["labels"])
    if svc.get("annotations"):
        meta["annotations"] = dict(svc["annotations"], **meta["annotations"])
    grace = (svc.get("update") or {}).get("stop_grace_period")
    if grace:
        pod["terminationGracePeriodSeconds"] = grace
    placement = svc.get("placement") or {}
    if placement.get("node_labels"):
        pod["nodeSelector"] = dict(placement["node_labels"])
    if placement and not placement.get("spread", True):
        pod.pop("topologySpreadConstraints", None)
    if placement.get("max_per_node") == 1:
        pod["affinity"] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": dict(match)}}]}}


def workload_kind(svc):
    """Deployment, or StatefulSet when a persistent volume is ReadWriteOnce (one per replica)."""
    return "StatefulSet" if any(v["type"] == "volume" and v["access"] == "ReadWriteOnce"
                                for v in svc.get("volumes") or []) else "Deployment"


def _app_config(model, svc, namespace):
    """The ConfigMap of a service's files and the claims its replicas share."""
    stack = model["name"]
    out = []
    if svc.get("files"):
        out.append({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": _meta("%s-files" % svc["name"], namespace,
                                      labels(stack, svc["name"], "config", _tenant(model, svc))),
                    "data": {f["key"]: f["content"] for f in svc["files"]}})
    for claim_name, claim in _app_volumes(svc, {})[2]:
        out.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": _meta(claim_name, namespace,
                                      labels(stack, svc["name"], "storage", _tenant(model, svc))),
                    "spec": claim})
    return out


def _statefulset(model, component, role, container, secret_names, secrets, namespace,
                 storage, data_path):
    stack = model["name"]
    tenant = _tenant(model)
    volumes = []
    claims = []
    container["volumeMounts"] = [{"name": "data", "mountPath": data_path}]
    if storage:
        claims.append({
            "metadata": {"name": "data", "labels": labels(stack, component, role, tenant)},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage}}},
        })
    else:
        volumes.append({"name": "data", "emptyDir": {}})
    template = _pod_template(model, component, tenant, container, volumes, secret_names, secrets,
                             _uid_gid(model), spread=False)
    spec = {
        "serviceName": component,
        "replicas": 1,
        "selector": {"matchLabels": selector(stack, component)},
        "podManagementPolicy": "OrderedReady",
        "updateStrategy": {"type": "RollingUpdate"},
        "template": template,
    }
    if claims:
        spec["volumeClaimTemplates"] = claims
        spec["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": "Retain", "whenScaled": "Retain"}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": _meta(component, namespace, labels(stack, component, role, tenant)),
            "spec": spec}


def _postgres(model, secrets, namespace):
    pg = model["postgres"]
    secret = pg["password_secret"]
    probe = ["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(pg["port"]),
             "-U", pg["user"], "-d", pg["database"]]
    container = {
        "name": "postgres",
        "image": pg["image"],
        "imagePullPolicy": "IfNotPresent",
        "securityContext": _container_security(True),
        "env": _env({
            "POSTGRES_DB": pg["database"],
            "POSTGRES_USER": pg["user"],
            "POSTGRES_PASSWORD_FILE": "%s/%s" % (SECRETS_DIR, secret),
            "POSTGRES_MAX_CONNECTIONS": str(pg["max_connections"]),
            "PGDATA": "/var/lib/postgresql/data/pgdata",
        }),
        "ports": [{"name": "postgres", "containerPort": pg["port"], "protocol": "TCP"}],
    }
    container.update(_exec_probes(probe, 120))
    return _statefulset(model, "postgres", "database", container, [secret], secrets, namespace,
                        pg["storage"], "/var/lib/postgresql/data")


def _redis(model, secrets, namespace):
    rd = model["redis"]
    env = {"REDIS_PERSISTENCE": rd["persistence"], "REDIS_MAXMEMORY_POLICY": rd["maxmemory_policy"]}
    if rd.get("maxmemory"):
        env["REDIS_MAXMEMORY"] = rd["maxmemory"]
    ping = "redis-cli -h 127.0.0.1 -p %d ping | grep -q PONG" % rd["port"]
    secret_names = []
    if rd.get("password_secret"):
        secret_names.append(rd["password_secret"])
        env["REDIS_PASSWORD_FILE"] = "%s/%s" % (SECRETS_DIR, rd["password_secret"])
        # Backticks, not "$(...)": the kubelet expands $(VAR) in probe commands.
        ping = 'REDISCLI_AUTH="`cat %s`" %s' % (env["REDIS_PASSWORD_FILE"], ping)
    container = {
        "name": "redis",
        "image": rd["image"],
        "imagePullPolicy": "IfNotPresent",
        "securityContext": _container_security(True),
        "env": _env(env),
        "ports": [{"name": "redis", "containerPort": rd["port"], "protocol": "TCP"}],
    }
    container.update(_exec_probes(["sh", "-c", ping], 60))
    storage = rd["storage"] if rd["persistence"] != "none" else None
    return _statefulset(model, "redis", "cache", container, secret_names, secrets, namespace,
                        storage, "/data")


# --------------------------------------------------------------------------- services
def _service(model, svc, namespace):
    stack = model["name"]
    name = svc["name"]
    spec = {
        "type": "ClusterIP",
        "selector": selector(stack, name),
        "ports": [{"name": port["name"], "port": port["port"], "targetPort": port["name"],
                   "protocol": port["protocol"].upper()} for port in svc["ports"]],
    }
    timeout = session_affinity(svc)
    if timeout:
        spec["sessionAffinity"] = "ClientIP"
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": timeout}}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(name, namespace, labels(stack, name, "app", _tenant(model, svc))),
            "spec": spec}


def _headless(model, component, role, port, namespace):
    stack = model["name"]
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(component, namespace, labels(stack, component, role, _tenant(model))),
            "spec": {
                "clusterIP": "None",
                "selector": selector(stack, component),
                "ports": [{"name": component, "port": port, "targetPort": component,
                           "protocol": "TCP"}],
            }}


# --------------------------------------------------------------------------- ingress
def _ingress(model, svc, route, namespace, tls_secret, auth_secret):
    stack = model["name"]
    proxy = model["proxy"]
    annotations = rate_annotations(route)
    annotations[NGINX + "proxy-body-size"] = proxy["client_max_body_size"]
    annotations[NGINX + "proxy-read-timeout"] = str(route["timeout"])
    annotations[NGINX + "proxy-send-timeout"] = str(route["timeout"])
    if route.get("cors_origins"):
        annotations[NGINX + "enable-cors"] = "true"
        annotations[NGINX + "cors-allow-origin"] = ", ".join(route["cors_origins"])
    if tls_secret:
        annotations[NGINX + "ssl-redirect"] = "true" if proxy["tls"]["redirect_http"] else "false"
    if route.get("basic_auth"):
        annotations[NGINX + "auth-type"] = "basic"
        annotations[NGINX + "auth-secret"] = auth_secret
        annotations[NGINX + "auth-realm"] = "Authentication required"
    timeout = session_affinity(svc)
    if timeout:
        # ingress-nginx balances to endpoints itself: the Service's ClientIP affinity does not
        # apply behind it, so the same stickiness is asked for with a cookie.
        annotations[NGINX + "affinity"] = "cookie"
        annotations[NGINX + "session-cookie-name"] = "%s-%s" % (stack, route["name"])
        annotations[NGINX + "session-cookie-max-age"] = str(timeout)
    if route.get("strip_prefix"):
        prefix = route["path"].rstrip("/")
        path, path_type = "%s(/|$)(.*)" % prefix, "ImplementationSpecific"
        annotations[NGINX + "use-regex"] = "true"
        annotations[NGINX + "rewrite-target"] = "/$2"
    else:
        # Prefix matches whole path elements: /api/v1/auth takes /api/v1/auth/x, not /api/v1/authors
        path, path_type = route["path"], "Prefix"
    rule = {"http": {"paths": [{
        "path": path, "pathType": path_type,
        "backend": {"service": {"name": svc["name"], "port": {"name": route["port"]}}},
    }]}}
    host = proxy.get("host")
    if host:
        rule = dict({"host": host}, **rule)
    spec = {"ingressClassName": INGRESS_CLASS, "rules": [rule]}
    if tls_secret:
        tls = {"secretName": tls_secret}
        if host:
            tls["hosts"] = [host]
        spec["tls"] = [tls]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": _meta(route["name"], namespace,
                              labels(stack, svc["name"], "ingress", _tenant(model, svc)),
                              dict(sorted(annotations.items()))),
            "spec": spec}


# --------------------------------------------------------------------------- network
def _policy(stack, name, namespace, pod_selector, types, ingress=None, egress=None):
    spec = {"podSelector": pod_selector, "policyTypes": types}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _meta(name, namespace, labels(stack, name, "network-policy")),
            "spec": spec}


def _peer(model, component, tenant=None):
    match = selector(model["name"], component)
    if tenant:
        match[TENANT_LABEL] = tenant
    return {"podSelector": {"matchLabels": match}}


def dns_egress():
    """The egress rule to the cluster's DNS (kube-dns in kube-system)."""
    return {
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }


def network_policies(model, namespace, ingress_namespace=INGRESS_NAMESPACE):
    """Default deny, DNS egress, and exactly the flows the model implies."""
    stack = model["name"]
    out = [
        _policy(stack, "default-deny", namespace, {}, ["Ingress", "Egress"]),
        _policy(stack, "allow-dns", namespace, {}, ["Egress"], egress=[dns_egress()]),
    ]
    apps = {svc["name"]: svc for svc in model["services"]}
    stores = {key: model[key] for key in ("postgres", "redis") if model[key]["enabled"]}
    ingress_rules = {name: [] for name in list(apps) + list(stores)}
    egress_rules = {name: [] for name in list(apps) + list(stores)}
    for name, svc in sorted(apps.items()):
        tenant = _tenant(model, svc)
        routed_ports = sorted({route["target_port"] for route in svc.get("routes") or []})
        if routed_ports:
            ingress_rules[name].append({
                "from": [{"namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": ingress_namespace}}}],
                "ports": [{"protocol": "TCP", "port": port} for port in routed_ports],
            })
        for dep in svc.get("depends_on") or []:
            if dep in stores and dep in (svc.get("uses") or []):
                ports = [{"protocol": "TCP", "port": stores[dep]["port"]}]
                target_tenant = _tenant(model)
            elif dep in apps and apps[dep].get("ports"):
                ports = [{"protocol": port["protocol"].upper(), "port": port["port"]}
                         for port in apps[dep]["ports"]]
                target_tenant = _tenant(model, apps[dep])
                if tenant != target_tenant:
                    continue  # never across tenants
            else:
                continue
            egress_rules[name].append({"to": [_peer(model, dep, target_tenant)], "ports": ports})
            ingress_rules[dep].append({"from": [_peer(model, name, tenant)], "ports": ports})
    for policy in (model.get("kubernetes") or {}).get("network_policies") or []:
        item = _policy(stack, policy["name"], namespace, {}, [])
        item["spec"] = dict(policy["spec"])
        out.append(item)
    for name in sorted(ingress_rules):
        out.append(_policy(stack, "allow-%s" % name, namespace,
                           {"matchLabels": selector(stack, name)}, ["Ingress", "Egress"],
                           ingress=ingress_rules[name], egress=egress_rules[name]))
    return out


# --------------------------------------------------------------------------- rbac
def rbac(model, namespace):
    """The model's Roles, service accounts and their RoleBindings (none by default)."""
    stack = model["name"]
    section = model.get("kubernetes") or {}
    out = []
    for role in section.get("roles") or []:
        out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                    "metadata": _meta(role["name"], namespace, labels(stack, role["name"], "rbac")),
                    "rules": [_policy_rule(rule) for rule in role["rules"]]})
    for account in section.get("service_accounts") or []:
        lbls = labels(stack, account["name"], "rbac")
        out.append({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": _meta(account["name"], namespace, lbls),
                    "automountServiceAccountToken": bool(account["token"])})
        for role in account["roles"]:
            out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                        "metadata": _meta("%s-%s" % (account["name"], role), namespace, lbls),
                        "subjects": [{"kind": "ServiceAccount", "name": account["name"],
                                      "namespace": namespace}],
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role}})
    return out


def _policy_rule(rule):
    out = {"apiGroups": list(rule["api_groups"]), "resources": list(rule["resources"]),
           "verbs": list(rule["verbs"])}
    if rule.get("resource_names"):
        out["resourceNames"] = list(rule["resource_names"])
    return out


def namespace_of(model):
    """The stack's namespace: stack_kubernetes.namespace, else its name."""
    return k8s_name((model.get("kubernetes") or {}).get("namespace") or model["name"])


# --------------------------------------------------------------------------- scaling
def hpa_params(model, svc, namespace):
    """hpa_tune's parameters for a service's autoscaling: the deploy renders its HPA from them
    and playbooks/autoscale.yml passes the same to hpa_tune, so both make the same HPA."""
    auto = svc["autoscaling"]
    params = {
        "name": svc["name"],
        "namespace": namespace,
        "target": {"kind": workload_kind(svc), "name": svc["name"]},
        "min_replicas": auto["min"],
        "max_replicas": auto["max"],
        "cpu_utilization": auto.get("cpu"),
        "memory_utilization": auto.get("memory"),
    }
    behavior = auto.get("behavior") or {}
    for direction in ("scale_up", "scale_down"):
        rules = behavior.get(direction)
        if rules:
            params[direction] = {key: value for key, value in rules.items() if value is not None}
    return params


def metric_spec(metric):
    """An HPA metric (Pods, External or Object) from a model's autoscaling.metrics item."""
    selector = {"matchLabels": dict(metric["selector"])} if metric.get("selector") else None
    ident = {"name": metric["name"]}
    if selector:
        ident["selector"] = selector
    average = metric["type"] == "pods" or metric.get("average")
    target = {"type": "AverageValue", "averageValue": metric["target"]} if average else \
        {"type": "Value", "value": metric["target"]}
    if metric["type"] == "pods":
        return {"type": "Pods", "pods": {"metric": ident, "target": target}}
    if metric["type"] == "external":
        return {"type": "External", "external": {"metric": ident, "target": target}}
    return {"type": "Object", "object": {
        "metric": ident, "target": target,
        "describedObject": {"kind": metric["object_kind"], "name": metric["object_name"],
                            "apiVersion": OBJECT_API_VERSIONS.get(metric["object_kind"], "v1")}}}


def hpa(model, svc, namespace):
    """The autoscaling/v2 HPA of a service, built by hpa_tune's own spec builder."""
    params = hpa_params(model, svc, namespace)
    errors = _hpa.validate_params(params)
    if errors:
        raise RenderError("stack_services[%s].autoscaling: %s" % (svc["name"], "; ".join(errors)))
    desired = _hpa.build_desired(params)[0]
    spec = _hpa.merge_spec({}, desired)
    extra = [metric_spec(metric) for metric in svc["autoscaling"].get("metrics") or []]
    if extra:
        spec["metrics"] = list(spec.get("metrics") or []) + extra
    return _hpa.render_manifest(svc["name"], namespace, spec,
                                labels=labels(model["name"], svc["name"], "autoscaler",
                                              _tenant(model, svc)))


def pdb(model, svc, namespace):
    """A PodDisruptionBudget, only when at least two pods run (else it blocks drains)."""
    pods = svc["autoscaling"]["min"] if svc.get("autoscaling") else svc["replicas"]
    if pods < 2:
        return None
    stack = model["name"]
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": _meta(svc["name"], namespace,
                              labels(stack, svc["name"], "app", _tenant(model, svc))),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(stack, svc["name"])},
                     "unhealthyPodEvictionPolicy": "AlwaysAllow"}}


# --------------------------------------------------------------------------- secrets
def _secret(model, name, data, namespace, secret_type="Opaque", role="secret"):
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": _meta(name, namespace, labels(model["name"], name, role)),
            "type": secret_type,
            "data": {key: _b64(value) for key, value in sorted(data.items())}}


def _check_secret_names(names):
    seen = {}
    for name in names:
        target = k8s_name(name)
        if target in seen and seen[target] != name:
            raise RenderError("stack_secrets: %r and %r both become the Secret %r on Kubernetes; "
                              "rename one" % (seen[target], name, target))
        seen[target] = name


# --------------------------------------------------------------------------- render
def render(model, secrets, htpasswd=None, ingress_namespace=INGRESS_NAMESPACE,
           monitoring_files=None, elk_files=None, api_server_cidrs=None):
    """The stack's manifests, as a list of dicts in apply order.

    ``secrets`` maps secret names to values (from the vault). ``htpasswd`` is the
    htpasswd text for routes with ``basic_auth`` (the nginx_proxy role computes it).
    ``monitoring_files`` / ``elk_files`` are the files of the monitoring and elk roles:
    with monitoring / logging enabled, their components are rendered (_kubernetes_obs);
    when they are not passed (None), those components are not rendered. ``api_server_cidrs``
    narrows Prometheus' egress to the API server (default: any address, ports 443/6443).
    Raises RenderError when something the manifests need is missing.
    """
    from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import observability as _kubernetes_obs

    secrets = dict(secrets or {})
    stack = model["name"]
    namespace = namespace_of(model)
    tenant = _tenant(model)
    proxy = model["proxy"]
    out = []

    pod_security = (model.get("kubernetes") or {}).get("pod_security") or "restricted"
    ns_labels = labels(stack, stack, "namespace", tenant)
    ns_labels.update({
        "kubernetes.io/metadata.name": namespace,
        "pod-security.kubernetes.io/enforce": pod_security,
        "pod-security.kubernetes.io/enforce-version": "latest",
    })
    out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(namespace, None, ns_labels)})
    out.extend(rbac(model, namespace))

    # Secrets: one Opaque Secret per stack secret a pod uses (key = the secret's name);
    # the TLS pair becomes one kubernetes.io/tls Secret for the Ingress.
    routed = [svc for svc in model["services"] if svc.get("routes")]
    tls_secret = None
    tls_names = set()
    if proxy["enabled"] and proxy["tls"]["enabled"] and routed:
        tls_names = {proxy["tls"]["cert_secret"], proxy["tls"]["key_secret"]}
        tls_secret = "%s-tls" % namespace
        out.append(_secret(model, tls_secret, {
            "tls.crt": _secret_value(secrets, proxy["tls"]["cert_secret"]),
            "tls.key": _secret_value(secrets, proxy["tls"]["key_secret"]),
        }, namespace, "kubernetes.io/tls", "tls"))
    used = set()
    for svc in model["services"]:
        used.update(svc.get("secrets") or [])
        used.update((svc.get("env_secrets") or {}).values())
    if model["postgres"]["enabled"]:
        used.add(model["postgres"]["password_secret"])
    if model["redis"]["enabled"] and model["redis"].get("password_secret"):
        used.add(model["redis"]["password_secret"])
    used.update(_kubernetes_obs.secret_names(model, monitoring_files, elk_files))
    # Stack secrets no pod uses are still shipped (the tenant's tools may read them),
    # except the TLS pair and basic-auth passwords, which only the Ingress needs.
    basic_auth_users = {u["password_secret"] for u in proxy.get("basic_auth_users") or []}
    extra = set(model.get("secret_names") or []) - tls_names - basic_auth_users
    wanted = sorted(used | {name for name in extra if name in secrets})
    _check_secret_names(wanted)
    for name in wanted:
        out.append(_secret(model, k8s_name(name), {name: _secret_value(secrets, name)}, namespace))
    auth_secret = None
    if any(route.get("basic_auth") for svc in routed for route in svc["routes"]):
        if not htpasswd:
            raise RenderError("a route has basic_auth: pass the htpasswd content "
                              "(from the nginx_proxy role) to render the Ingress' auth Secret")
        auth_secret = "%s-basic-auth" % namespace
        out.append(_secret(model, auth_secret, {"auth": str(htpasswd)}, namespace, "Opaque", "auth"))

    out.extend(network_policies(model, namespace, ingress_namespace))

    for svc in model["services"]:
        if svc.get("ports"):
            out.append(_service(model, svc, namespace))
    if model["postgres"]["enabled"]:
        out.append(_headless(model, "postgres", "database", model["postgres"]["port"], namespace))
        out.append(_postgres(model, secrets, namespace))
    if model["redis"]["enabled"]:
        out.append(_headless(model, "redis", "cache", model["redis"]["port"], namespace))
        out.append(_redis(model, secrets, namespace))
    for svc in model["services"]:
        out.extend(_app_config(model, svc, namespace))
        out.append(_deployment(model, svc, secrets, namespace))
        if svc.get("autoscaling"):
            out.append(hpa(model, svc, namespace))
        budget = pdb(model, svc, namespace)
        if budget:
            out.append(budget)
    if proxy["enabled"]:
        for svc in routed:
            for route in svc["routes"]:
                out.append(_ingress(model, svc, route, namespace, tls_secret, auth_secret))
    out.extend(_kubernetes_obs.render(model, secrets, namespace, monitoring_files, elk_files,
                                      api_server_cidrs))

    out = apply_overrides(out, (model.get("overrides") or {}).get("kubernetes") or [])
    for item in out:
        annotate_policy_skips(item)
    check_names(out)
    return sorted(out, key=lambda m: (KIND_ORDER.index(m["kind"]), m["metadata"]["name"]))


def apply_overrides(manifests, patches):
    """``stack_overrides.kubernetes``: each patch applied to the object it names (strategic-
    merge style or RFC 6902); a patch of an object that is not rendered is an error."""
    out = list(manifests)
    for item in patches:
        kind, name = item["target"].split("/", 1)
        found = [i for i, m in enumerate(out) if m["kind"] == kind and m["metadata"]["name"] == name
                 and (not item.get("namespace") or m["metadata"].get("namespace") == item["namespace"])]
        where = "stack_overrides.kubernetes[%s]" % item["target"]
        if len(found) != 1:
            raise RenderError("%s: %s rendered object is %s/%s%s" % (
                where, "no" if not found else "more than one", kind, name,
                "" if not found else " (give namespace)"))
        try:
            if item.get("patch") is not None:
                out[found[0]] = _patch.merge(out[found[0]], item["patch"])
            else:
                out[found[0]] = _patch.json_patch(out[found[0]], item["json_patch"])
        except _patch.PatchError as exc:
            raise RenderError("%s: %s" % (where, exc)) from None
    return out


def policy_skips(manifest):
    """The POLICY_SKIPS that apply to a workload manifest, as [(check, reason)]."""
    if manifest["kind"] not in WORKLOAD_KINDS:
        return []
    wanted = set()
    pod = manifest["spec"]["template"]["spec"]
    for container in pod["containers"] + pod.get("initContainers", []):
        if container.get("imagePullPolicy") != "Always":
            wanted.add("CKV_K8S_15")
        if "@sha256:" not in container["image"]:
            wanted.add("CKV_K8S_43")
        resources = container.get("resources") or {}
        for check, kind, field in (("CKV_K8S_10", "requests", "cpu"), ("CKV_K8S_11", "limits", "cpu"),
                                   ("CKV_K8S_12", "requests", "memory"),
                                   ("CKV_K8S_13", "limits", "memory")):
            if not (resources.get(kind) or {}).get(field):
                wanted.add(check)
    if pod.get("automountServiceAccountToken") and manifest["kind"] in ("Deployment", "StatefulSet") \
            and manifest["metadata"]["labels"].get("app.kubernetes.io/component") == "app":
        wanted.add("CKV_K8S_38")
    if manifest["kind"] == "DaemonSet" and manifest["metadata"]["name"] in HOST_AGENTS:
        wanted.update(_host_agent_skips(pod))
    return [(check, POLICY_SKIPS[check]) for check in sorted(wanted)]


def _host_agent_skips(pod):
    """The host-agent checks a DaemonSet of the agents namespace really falls short of."""
    wanted = set()
    if pod.get("hostPID"):
        wanted.add("CKV_K8S_17")
    pod_uid = (pod.get("securityContext") or {}).get("runAsUser")
    for container in pod["containers"] + pod.get("initContainers", []):
        sec = container.get("securityContext") or {}
        if sec.get("runAsUser", pod_uid) == 0:
            wanted.update(("CKV_K8S_23", "CKV_K8S_40"))
        if (sec.get("capabilities") or {}).get("add"):
            wanted.add("CKV_K8S_25")
    return wanted


def annotate_policy_skips(manifest):
    """Write the workload's policy skips into its annotations (checkov's format)."""
    skips = policy_skips(manifest)
    if not skips:
        return
    annotations = manifest["metadata"].setdefault("annotations", {})
    for index, (check, reason) in enumerate(skips, 1):
        annotations[POLICY_SKIP_ANNOTATION % index] = "%s=%s" % (check, reason)


def check_names(manifests):
    """Every object name is a DNS-1123 name and unique per kind."""
    seen = set()
    for item in manifests:
        name = item["metadata"]["name"]
        pattern = DNS1123_LABEL if item["kind"] in ("Namespace", "Service") else DNS1123_SUBDOMAIN
        limit = 63 if item["kind"] in ("Namespace", "Service") else 253
        if len(name) > limit or not pattern.match(name):
            raise RenderError("%s name %r is not a valid DNS-1123 name" % (item["kind"], name))
        key = (item["kind"], name)
        if key in seen:
            raise RenderError("two %s objects are named %r" % key)
        seen.add(key)


def secret_values_in(manifests, secrets):
    """Names of secrets whose value shows up in a non-Secret manifest (should be none)."""
    found = set()
    for item in manifests:
        if item["kind"] == "Secret":
            continue
        blob = json.dumps(item, sort_keys=True)
        for name, value in (secrets or {}).items():
            if value and str(value) in blob:
                found.add(name)
    return sorted(found)


# --------------------------------------------------------------------------- GitOps files
FILE_HEADER = ("# Managed by opsdeck.stack (role opsdeck.stack.kubernetes), rendered from the stack model.\n"
               "# Edit the inventory's stack_* variables, not this file.\n")
SECRET_KEYS_ANNOTATION = "opsdeck.io/secret-keys"


def manifest_file_name(manifest):
    """Stable file name of a manifest: ``<kind order>-<kind>-<name>.yaml``.

    The prefix keeps ``kubectl apply -f <dir>`` (lexical order) in dependency order, and a
    new object never renames the files of the others (no churn in a GitOps repository).
    """
    kind = manifest["kind"]
    return "%02d-%s-%s.yaml" % (FILE_PREFIX[kind], kind.lower(), manifest["metadata"]["name"])


def without_secret_data(manifest):
    """A Secret with its data removed; the keys it must hold are named in an annotation."""
    out = json.loads(json.dumps(manifest))
    keys = sorted((out.pop("data", None) or {}).keys()) + sorted((out.pop("stringData", None) or {}).keys())
    annotations = out["metadata"].setdefault("annotations", {})
    annotations[SECRET_KEYS_ANNOTATION] = ",".join(keys)
    return out


def manifest_files(manifests, write_secrets=True, dump=None):
    """The GitOps layout: [{path, kind, name, secret, content}] in apply order.

    ``secret`` is true for a Secret written with its data (the role writes it 0600 and never
    shows it). ``dump`` turns one manifest into YAML text (the filter passes yaml.safe_dump).
    """
    out = []
    for manifest in manifests:
        is_secret = manifest["kind"] == "Secret"
        if is_secret and not write_secrets:
            manifest = without_secret_data(manifest)
        out.append({
            "path": manifest_file_name(manifest),
            "kind": manifest["kind"],
            "name": manifest["metadata"]["name"],
            "secret": bool(is_secret and write_secrets),
            "content": FILE_HEADER + "---\n" + dump(manifest),
        })
    return out


# --------------------------------------------------------------------------- rollback
# Fields the API server owns: never sent back when an object is restored.
SERVER_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
                   "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences")
SERVER_ANNOTATIONS = ("deployment.kubernetes.io/revision",
                      "kubectl.kubernetes.io/last-applied-configuration")


def restorable(obj):
    """An object as read from the cluster, made fit to be applied again (the rollback of a
    failed rollout, like ``kubectl rollout undo`` but to exactly the spec that ran before):
    status and server-owned metadata are dropped, the spec is kept whole."""
    out = json.loads(json.dumps(obj))
    out.pop("status", None)
    meta = out.get("metadata") or {}
    for key in SERVER_METADATA:
        meta.pop(key, None)
    annotations = meta.get("annotations") or {}
    for key in SERVER_ANNOTATIONS:
        annotations.pop(key, None)
    if "annotations" in meta and not annotations:
        meta.pop("annotations")
    return out
