# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fidelity report: how each target renders each field of the stack model.

One model, three targets, and not every target can express every field. For each field a
model actually sets, the report says whether the target renders it

- ``native``: with the target's own mechanism (a Kubernetes HPA, a Swarm update_config),
- ``emulated``: with something else that gives the same observable behaviour (Compose's
  rolling upgrade is the ``upgrade.yml`` playbook, not the engine), or
- ``dropped``: not at all; the stack still runs, without that behaviour.

With ``stack_strict: true`` a deploy refuses a model that would lose a field on its
target (``strict_errors``), before any host is touched.
"""

from __future__ import annotations

NATIVE, EMULATED, DROPPED = "native", "emulated", "dropped"
TARGETS = ("compose", "swarm", "kubernetes")


def _service_rules(svc, target):
    """(field, status, how) for the fields of one app service that are set."""
    rules = [("image", NATIVE, "image"), ("replicas", NATIVE, "%d replicas" % svc["replicas"])]
    if svc.get("autoscaling"):
        auto = svc["autoscaling"]
        if target == "kubernetes":
            rules.append(("autoscaling", NATIVE, "HorizontalPodAutoscaler %d..%d" % (
                auto["min"], auto["max"])))
        else:
            rules.append(("autoscaling", DROPPED, "no autoscaler on %s: runs autoscaling.min = %d "
                          "replicas (scale by hand or with the model)" % (target, auto["min"])))
    health = svc.get("health")
    if health:
        how = {"compose": "healthcheck (the ready probe); dependants wait for service_healthy",
               "swarm": "healthcheck (the ready probe); tasks get traffic once healthy; gates updates",
               "kubernetes": "readiness/liveness/startup probes"}[target]
        rules.append(("health", NATIVE, how))
        if target != "kubernetes" and health["live"] != dict(health["ready"], failures=health["live"]["failures"]):
            rules.append(("health.live", EMULATED, "one health check per container on %s: the ready "
                          "probe; an unhealthy container is restarted by %s" % (
                              target, "Swarm" if target == "swarm" else "nobody (Compose only reports it)")))
    update = svc.get("update")
    if update:
        if target == "kubernetes":
            rules.append(("update", NATIVE, "RollingUpdate maxSurge/maxUnavailable, terminationGracePeriodSeconds"))
        elif target == "swarm":
            rules.append(("update", NATIVE, "update_config parallelism/delay/order, stop_grace_period"))
            for key in ("max_surge", "max_unavailable"):
                if update.get(key) is not None:
                    rules.append(("update.%s" % key, DROPPED, "Swarm updates parallelism tasks at a time "
                                  "(update.parallelism, update.order)"))
        else:
            rules.append(("update", EMULATED, "stop_grace_period native; playbooks/upgrade.yml starts "
                          "the new replicas beside the old, then drains and stops the old"))
            for key in ("max_surge", "max_unavailable", "parallelism", "delay"):
                if update.get(key) is not None and (key in ("max_surge", "max_unavailable")
                                                    or update[key] != {"parallelism": 1, "delay": 5}[key]):
                    rules.append(("update.%s" % key, DROPPED, "upgrade.yml replaces all replicas of a "
                                  "service at once, start-first"))
    placement = svc.get("placement")
    if placement:
        if target == "compose":
            rules.append(("placement", DROPPED, "one Docker host"))
        elif target == "swarm":
            rules.append(("placement", NATIVE, "placement constraints, max_replicas_per_node"))
        else:
            rules.append(("placement", NATIVE, "nodeSelector, topology spread, pod anti-affinity"))
            if placement.get("constraints"):
                rules.append(("placement.constraints", DROPPED, "Swarm expressions: use node_labels"))
            if (placement.get("max_per_node") or 1) > 1:
                rules.append(("placement.max_per_node", DROPPED, "only 1 (pod anti-affinity) is "
                              "rendered; the topology spread keeps replicas within one of each other"))
    if svc.get("annotations") and target == "swarm":
        rules.append(("annotations", DROPPED, "docker stack deploy has no annotations"))
    if svc.get("secrets"):
        how = {"compose": "files 0600 bind-mounted at /run/secrets (Compose secrets)",
               "swarm": "Swarm secrets named by content at /run/secrets",
               "kubernetes": "Secrets mounted at /run/secrets, checksum annotation"}[target]
        rules.append(("secrets", EMULATED if target == "compose" else NATIVE, how))
    resources = svc.get("resources") or {}
    if resources.get("limits"):
        rules.append(("resources.limits", NATIVE, "limits"))
    if resources.get("requests"):
        if target == "compose":
            rules.append(("resources.requests", EMULATED, "deploy.resources.reservations "
                          "(not enforced by a scheduler on one host)"))
        else:
            rules.append(("resources.requests", NATIVE, "reservations/requests used to schedule"))
    for route in svc.get("routes") or []:
        field = "routes[%s]" % route["name"]
        how = "Ingress %s (ingress-nginx annotations)" % route["name"] if target == "kubernetes" else \
            "nginx location with limit_req/limit_conn"
        rules.append((field, NATIVE, how))
        if target == "kubernetes":
            rules.append((field + ".rate", EMULATED, "ingress-nginx limit-rps/limit-burst-multiplier; "
                          "a rejected request gets 503, not 429, unless the controller's ConfigMap "
                          "sets limit-req-status-code: \"429\" (cluster-wide)"))
        if target == "kubernetes" and route.get("basic_auth"):
            rules.append((field + ".basic_auth", NATIVE, "auth-type basic annotation"))
    for key in sorted(svc.get("env_secrets") or {}):
        field = "env.%s" % key
        if target == "compose":
            rules.append((field, NATIVE, "env_file 0600 beside compose.yaml (not in compose.yaml; the "
                          "value is in the container's environment)"))
        elif target == "swarm":
            rules.append((field, EMULATED, "env_file read by docker stack deploy: the value is part of "
                          "the service spec (docker service inspect shows it); a secret file is safer"))
        else:
            rules.append((field, NATIVE, "secretKeyRef to the Secret"))
    if svc.get("files"):
        how = {"compose": "bind-mounted read-only from the project directory; a change recreates "
                          "the service (config-hash label)",
               "swarm": "Swarm configs named by content; a change rolls the service",
               "kubernetes": "ConfigMap %s-files, one subPath mount per file; a change rolls the "
                             "pods (files-checksum annotation)" % svc["name"]}[target]
        rules.append(("files", NATIVE, how))
    for volume in svc.get("volumes") or []:
        rules.extend(_volume_rules(volume, target))
    for port in svc.get("ports") or []:
        if not port.get("publish"):
            continue
        field = "ports[%s].publish" % port["name"]
        if target == "compose":
            rules.append((field, NATIVE, "published on %s:%d" % (port["publish"]["address"],
                                                                 port["publish"]["port"])))
        elif target == "swarm":
            rules.append((field, NATIVE, "host-mode port %d on every interface of the node running "
                          "each task (the address does not apply)" % port["publish"]["port"]))
        else:
            rules.append((field, DROPPED, "nothing is published on a node: use kubectl port-forward "
                          "or a route"))
    if svc.get("depends_on"):
        how = {"compose": "depends_on with condition service_healthy",
               "swarm": "no start order in Swarm: tasks restart until what they need answers",
               "kubernetes": "no start order: readiness gates traffic, pods retry"}[target]
        rules.append(("depends_on", NATIVE if target == "compose" else EMULATED, how))
    if svc.get("session_affinity"):
        if target == "kubernetes":
            rules.append(("session_affinity", NATIVE, "Service sessionAffinity ClientIP; behind the "
                          "Ingress a cookie (ingress-nginx affinity annotations)"))
        elif target == "compose":
            rules.append(("session_affinity", EMULATED, "nginx hashes the client address onto one "
                          "replica (hash $binary_remote_addr): no timeout, and a change of replicas "
                          "may move a client"))
        else:
            rules.append(("session_affinity", DROPPED, "nginx resolves the service per request on "
                          "Swarm (dnsrr), so it cannot keep a client on one task"))
    if svc.get("service_account") and target != "kubernetes":
        rules.append(("service_account", DROPPED, "Kubernetes only: no API token on %s" % target))
    if svc.get("tenant"):
        if target == "kubernetes":
            rules.append(("tenant", NATIVE, "tenant label; NetworkPolicies keep tenants apart"))
        else:
            rules.append(("tenant", DROPPED, "no per-tenant network isolation on %s" % target))
    return rules


def _volume_rules(volume, target):
    """(field, status, how) of one volume of a service."""
    field = "volumes[%s]" % volume["name"]
    kind = volume["type"]
    if kind == "tmpfs":
        return [(field, NATIVE, "tmpfs" if target != "kubernetes" else "emptyDir in memory")]
    if kind == "bind":
        if target == "kubernetes":
            return [(field, DROPPED, "a host directory is not mounted on Kubernetes (hostPath breaks "
                     "the restricted Pod Security): use a volume or files")]
        how = "bind mount of %s" % volume["source"]
        if target == "swarm":
            how += " (the directory must exist on every node that runs a task)"
        return [(field, NATIVE, how)]
    if target == "kubernetes":
        how = ("a claim per replica (StatefulSet volumeClaimTemplates)" if volume["access"] == "ReadWriteOnce"
               else "one PersistentVolumeClaim shared by the replicas (%s)" % volume["access"])
        return [(field, NATIVE, how)]
    rules = [(field, NATIVE, "named volume" + (
        ", handed to the service's user by a one-off init container" if target == "compose"
        else " on the node running the task: the image must create %s owned by its user" % volume["path"]))]
    for key in ("size", "class"):
        if volume.get(key):
            rules.append(("%s.%s" % (field, key), DROPPED, "a local named volume has no %s on %s" % (
                "size limit" if key == "size" else "storage class", target)))
    return rules


def _namespaces(model):
    """The stack's Kubernetes namespace and that of its host agents."""
    from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import manifests as _kubernetes
    namespace = _kubernetes.namespace_of(model)
    return namespace, _kubernetes.agents_namespace(namespace)


def _update_rule(target):
    return {"compose": (EMULATED, "playbooks/upgrade.yml: new containers beside the old, "
                                  "health-gated, drained, rolled back on failure"),
            "swarm": (NATIVE, "update_config start-first, failure_action rollback"),
            "kubernetes": (NATIVE, "RollingUpdate maxUnavailable 0, maxSurge 1")}[target]


def report(model, target=None):
    """{"target", "native": [...], "emulated": [...], "dropped": [...]} for ``target``.

    Each entry is {"field": stack_* path, "how": what the target does}.
    """
    target = target or model["target"]
    if target not in TARGETS:
        raise ValueError("target %r is not one of %s" % (target, ", ".join(TARGETS)))
    out = {"target": target, NATIVE: [], EMULATED: [], DROPPED: []}

    def add(field, status, how):
        out[status].append({"field": field, "how": how})

    for svc in model["services"]:
        for field, status, how in _service_rules(svc, target):
            add("stack_services[%s].%s" % (svc["name"], field), status, how)
    section = model.get("kubernetes") or {}
    for key in ("roles", "service_accounts", "network_policies"):
        for item in section.get(key) or []:
            field = "stack_kubernetes.%s[%s]" % (key, item["name"])
            if target == "kubernetes":
                add(field, NATIVE, {"roles": "Role", "service_accounts": "ServiceAccount (and its "
                                    "RoleBindings)", "network_policies": "NetworkPolicy"}[key])
            else:
                add(field, DROPPED, "Kubernetes only: nothing on %s" % target)
    overrides = (model.get("overrides") or {}).get(target)
    if target == "kubernetes":
        for item in overrides or []:
            add("stack_overrides.kubernetes[%s]" % item["target"], NATIVE, "escape hatch: %s patch of "
                "the rendered object, not checked by the model" % (
                    "strategic-merge" if item.get("patch") is not None else "RFC 6902 JSON"))
    else:
        for name in sorted(overrides or {}):
            add("stack_overrides.%s.%s" % (target, name), NATIVE, "escape hatch: merged into the "
                "rendered service, not checked by the model")
    status, how = _update_rule(target)
    add("rolling updates", status, how)
    for store in ("postgres", "redis"):
        section = model[store]
        if not section["enabled"]:
            continue
        add("stack_%s.enabled" % store, NATIVE,
            "StatefulSet" if target == "kubernetes" else "container with a named volume")
        if section.get("storage") and section.get("storage_set", True):
            if target == "kubernetes":
                add("stack_%s.storage" % store, NATIVE, "volumeClaimTemplates %s" % section["storage"])
            else:
                add("stack_%s.storage" % store, DROPPED,
                    "local named volume: no size limit on %s" % target)
    proxy = model["proxy"]
    if proxy["enabled"]:
        if proxy["tls"]["enabled"]:
            add("stack_proxy.tls", NATIVE, "TLS secret on the Ingress" if target == "kubernetes"
                else "nginx TLS listener")
        if proxy.get("security_headers"):
            if target == "kubernetes":
                add("stack_proxy.security_headers", EMULATED, "HSTS by ingress-nginx on TLS hosts; "
                    "other headers belong in the controller's add-headers ConfigMap")
            else:
                add("stack_proxy.security_headers", NATIVE, "nginx add_header")
        if proxy["replicas"] > 1:
            if target == "kubernetes":
                add("stack_proxy.replicas", DROPPED, "the ingress controller's replicas are the "
                    "cluster's; rates in annotations count per controller pod")
            else:
                add("stack_proxy.replicas", NATIVE, "%d nginx tasks (one per node), each at rate / %d"
                    % (proxy["replicas"], proxy["replicas"]))
        if target == "kubernetes":
            add("stack_proxy upstream keepalive", EMULATED, "keepalive to the pods is the ingress "
                "controller's (ConfigMap upstream-keepalive-connections, 320 by default), not the "
                "proxy's 32")
            if proxy["tls"]["enabled"] and proxy["tls"]["protocols"] != ["TLSv1.2", "TLSv1.3"]:
                add("stack_proxy.tls.protocols", DROPPED, "TLS versions are the ingress controller's "
                    "ConfigMap setting (ssl-protocols): set it to %s there" % " ".join(proxy["tls"]["protocols"]))
        if proxy.get("host"):
            add("stack_proxy.host", NATIVE if target == "kubernetes" else DROPPED,
                "Ingress host" if target == "kubernetes" else "nginx answers any host name")
    if (model.get("monitoring") or {}).get("enabled"):
        if target == "compose":
            add("stack_monitoring.enabled", NATIVE, "Prometheus, Alertmanager, exporter and Grafana "
                "containers")
        elif target == "swarm":
            add("stack_monitoring.enabled", NATIVE, "Prometheus, Alertmanager, exporter and Grafana "
                "services (node exporter global; nothing but the edge published)")
        else:
            mon = model["monitoring"]
            agents = _namespaces(model)[1]
            add("stack_monitoring.enabled", NATIVE, "Prometheus StatefulSet (kubernetes_sd on its "
                "own namespace, read-only namespaced Role), Alertmanager and exporter Deployments%s, "
                "ConfigMaps with checksum annotations, exact NetworkPolicies" % (
                    ", Grafana" if mon["grafana"]["enabled"] else ""))
            add("stack_monitoring node exporter", NATIVE, "DaemonSet in %s (privileged Pod "
                "Security), hostPID, /proc, /sys and / read-only, scraped by kubernetes_sd in "
                "that namespace; no hostNetwork: network-device metrics are the pod's own"
                % agents)
            if model["proxy"]["enabled"]:
                add("stack_monitoring nginx exporter", DROPPED, "no nginx of the stack on Kubernetes: "
                    "the Ingress is the cluster's ingress-nginx, which exports its own metrics")
            if mon["images"]["prometheus"].startswith("opsdeck/prometheus"):
                add("stack_monitoring.images.prometheus", DROPPED, "%s is Debian's build, which has "
                    "no kubernetes_sd: Prometheus would refuse its configuration; set an upstream "
                    "image (e.g. quay.io/prometheus/prometheus)" % mon["images"]["prometheus"])
            add("stack_monitoring alertmanager storage", EMULATED, "emptyDir: silences and "
                "notification state do not survive a restart of the pod")
    if (model.get("logging") or {}).get("enabled"):
        if target in ("compose", "swarm"):
            add("stack_logging.enabled", NATIVE, "Elasticsearch (one %s per node), Logstash, Kibana "
                "and Filebeat%s; ILM, templates and users loaded by setup.sh" % (
                    "service" if target == "swarm" else "container",
                    " on every node" if target == "swarm" else ""))
        else:
            add("stack_logging.enabled", NATIVE, "Elasticsearch StatefulSet (%d pods, headless "
                "Service for discovery, node.store.allow_mmap false), Logstash and Kibana "
                "Deployments; ILM, templates and users loaded by setup.sh in a Job named by "
                "its inputs" % model["logging"]["elasticsearch"]["nodes"])
            namespace, agents = _namespaces(model)
            add("stack_logging Filebeat", NATIVE, "DaemonSet in %s (privileged Pod Security): "
                "the stack namespace's kubelet log files, read-only, as uid 0 with only "
                "DAC_READ_SEARCH, to logstash.%s.svc:5044; no Kubernetes metadata (no API "
                "access)" % (agents, namespace))
    return out


def strict_errors(model):
    """Error lines for ``stack_strict``: each field the model's target would drop."""
    if not model.get("strict"):
        return []
    return ["%s: dropped on %s (%s); stack_strict is true" % (d["field"], model["target"], d["how"])
            for d in report(model)[DROPPED]]


def summary(rep):
    """One line per status, for the deploy output."""
    lines = ["fidelity on %s: %d native, %d emulated, %d dropped" % (
        rep["target"], len(rep[NATIVE]), len(rep[EMULATED]), len(rep[DROPPED]))]
    for status in (EMULATED, DROPPED):
        for entry in rep[status]:
            lines.append("%s %s: %s" % (status, entry["field"], entry["how"]))
    return lines
