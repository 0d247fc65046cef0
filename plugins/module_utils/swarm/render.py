# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render the normalised stack model into a Docker Swarm stack file.

The Swarm stack starts from the Compose rendering (same services, networks, healthchecks,
users, limits) and turns it into what ``docker stack deploy`` understands:

- Secrets and configs are immutable in Swarm, so each one is named after its content
  (``<stack>_<name>_<digest>``): a changed value gives a new name, which changes the spec
  of exactly the services that use it, which Swarm then rolls. Old versions are removed
  by the ``swarm`` role once no service uses them.
- ``deploy.update_config``: start-first, parallelism and delay from ``stack_update``,
  ``failure_action: rollback``, and a ``monitor`` longer than the healthcheck needs to
  declare a new task unhealthy (start period + retries x interval), else Swarm would
  call an update good before the health check could fail it and never roll back.
- Stateful services (PostgreSQL, Redis, Prometheus, Alertmanager, Grafana, each
  Elasticsearch node) are pinned to nodes carrying a label; node exporter and Filebeat
  run on every node.
- The edge nginx publishes its ports in ``host`` mode so that nginx sees real client
  addresses (its per-IP rate limits depend on them); one proxy task per node.
- Services are found by DNS round robin (``endpoint_mode: dnsrr``, the default): the
  name resolves to the addresses of the healthy tasks, nginx balances and retries across
  them itself, and nothing depends on the IPVS virtual IPs (which some kernels lack).
  ``vip`` is available for clients that cannot re-resolve.
- Options ``docker stack deploy`` ignores are not emitted (``restart``,
  ``depends_on``, ``container_name``, ``security_opt``, ``expose``); what that costs is
  reported by the fidelity report (module_utils/model/fidelity.py), not silently dropped.

Nothing here touches a host: the result is data the ``swarm`` role writes and deploys.
"""

from __future__ import annotations

import copy

from ansible_collections.opsdeck.stack.plugins.module_utils.common import digest as _digest
from ansible_collections.opsdeck.stack.plugins.module_utils.compose import render as _compose

STACK_FILE_VERSION = "3.8"
NAME_MAX = 64
DATA_LABEL = "opsdeck.data"
UNSUPPORTED = ("restart", "depends_on", "container_name", "security_opt", "expose", "build")
# Services with a local volume that only one task may write: pinned, stop-first.
STATEFUL = ("postgres", "redis", "prometheus", "alertmanager", "grafana")
# One task on every node, wherever the swarm grows.
GLOBAL = ("node-exporter", "filebeat")
DEFAULT_UPDATE = {"parallelism": 1, "delay": 5, "order": "start-first",
                  "failure_action": "rollback", "monitor": None}


def versioned_name(stack, name, content):
    """``<stack>_<name>_<12 hex of sha256(content)>``, at most 64 characters."""
    tag = _digest.short_hash(content, 12)
    room = NAME_MAX - len(stack) - len(tag) - 2
    return "%s_%s_%s" % (stack, name[:max(room, 1)], tag)


def _seconds(text):
    """Seconds of a Compose duration such as ``"5s"`` (the renderer only emits seconds)."""
    return int(str(text).rstrip("s") or 0)


def monitor_seconds(healthcheck, floor=10):
    """How long Swarm must watch a new task: long enough for its health check to fail it.

    Docker marks a container unhealthy after ``retries`` failed probes once the start
    period is over; each probe may take ``timeout`` on top of its ``interval``.
    """
    if not healthcheck:
        return floor
    start = _seconds(healthcheck.get("start_period", "0s"))
    interval = _seconds(healthcheck.get("interval", "30s"))
    timeout = _seconds(healthcheck.get("timeout", "30s"))
    retries = int(healthcheck.get("retries", 3))
    return max(floor, start + (interval + timeout) * (retries + 1) + 5)


def _host_port(spec):
    """Compose's ``address:published:target[/udp]`` as a Swarm host-mode port (the address
    does not apply: host mode publishes on every interface of the node)."""
    _address, published, target = spec.rsplit(":", 2)
    target, _sep, protocol = target.partition("/")
    return {"target": int(target), "published": int(published), "protocol": protocol or "tcp",
            "mode": "host"}


def _placement(placement):
    """A service's deploy.placement from the model (node labels, constraints, per node)."""
    if not placement:
        return {}
    out = {}
    constraints = ["node.labels.%s == %s" % (key, value)
                   for key, value in sorted((placement.get("node_labels") or {}).items())]
    constraints += list(placement.get("constraints") or [])
    if constraints:
        out["constraints"] = constraints
    if placement.get("max_per_node"):
        out["max_replicas_per_node"] = placement["max_per_node"]
    return out


def _tmpfs_mounts(svc):
    return [{"type": "tmpfs", "target": path} for path in svc.pop("tmpfs", [])]


def render(model, secrets, proxy_files=None, update=None, data_label=DATA_LABEL,
           encrypted=False, endpoint_mode="dnsrr", monitoring_files=None, elk_files=None,
           edge_label=None):
    """Return {"stack": stack file dict, "files": [...], "secrets": {...}, "configs": {...}}.

    ``edge_label``: when set, the edge proxy runs only on nodes carrying that label
    (value ``true``); the model has no placement field yet.

    ``files`` are the same files the Compose rendering writes (secrets 0600, component
    configuration); ``secrets``/``configs`` map each stack-file key to the versioned
    Swarm object name, so the role can clean up the versions no longer in use.
    """
    rendered = _compose.render(model, secrets, proxy_files, monitoring_files, elk_files, overrides=False)
    project = copy.deepcopy(rendered["project"])
    stack = model["name"]
    upd = dict(DEFAULT_UPDATE)
    upd.update({k: v for k, v in (update or model.get("update") or {}).items() if v is not None})
    by_path = {f["path"]: f for f in rendered["files"]}

    secret_names = {}
    for key, definition in (project.get("secrets") or {}).items():
        path = definition["file"][2:]
        content = by_path[path]["content"] if path in by_path else ""
        secret_names[key] = versioned_name(stack, key, content)
        definition["name"] = secret_names[key]
        definition["labels"] = {"org.opsdeck.stack": stack}

    config_defs, config_names = {}, {}
    services = project["services"]

    published_apps = {app["name"] for app in model["services"]
                      if any(port.get("publish") for port in app.get("ports") or [])}
    apps = {app["name"]: app for app in model["services"]}
    for name, svc in services.items():
        component = svc["labels"].get("org.opsdeck.component", name)
        health = svc.get("healthcheck")
        mounts = _tmpfs_mounts(svc)
        configs = []
        for volume in svc.pop("volumes", []):
            if isinstance(volume, str) and volume.startswith("./"):
                # Bind-mounted configuration (a file, or a directory of files) becomes
                # versioned Swarm configs, one per file.
                source, target = volume[2:].rsplit(":ro", 1)[0].split(":", 1)
                if source in by_path:
                    pairs = [(source, target)]
                else:
                    pairs = [(path, target + path[len(source):]) for path in sorted(by_path)
                             if path.startswith(source + "/") and not by_path[path].get("secret")]
                for path, dest in pairs:
                    key = path.replace("/", "-").replace(".", "-")
                    content = by_path[path]["content"]
                    config_names[key] = versioned_name(stack, key, content)
                    config_defs[key] = {"file": "./" + path, "name": config_names[key],
                                        "labels": {"org.opsdeck.stack": stack}}
                    configs.append({"source": key, "target": dest, "mode": 0o444})
            else:
                mounts.append(volume)
        if mounts:
            svc["volumes"] = mounts
        if configs:
            svc["configs"] = configs
        for key in UNSUPPORTED + ("annotations",):
            svc.pop(key, None)
        deploy = svc.setdefault("deploy", {})
        deploy["restart_policy"] = {"condition": "any", "delay": "5s", "window": "30s"}
        deploy["labels"] = {"org.opsdeck.stack": stack, "org.opsdeck.component": component}
        deploy["endpoint_mode"] = endpoint_mode
        if name in GLOBAL:
            # One per node, wherever the swarm grows.
            deploy.pop("replicas", None)
            deploy["mode"] = "global"
        elif name in published_apps:
            # The model asked for these: host mode, on every interface of the task's node.
            svc["ports"] = [_host_port(spec) for spec in svc.pop("ports")]
        elif name != "proxy" and svc.get("ports"):
            # Only the edge publishes on Swarm (host-mode ports bind every interface there);
            # reach the others from a manager with `docker exec` or an SSH tunnel.
            svc.pop("ports")
        if name in STATEFUL or component == "elasticsearch":
            deploy["replicas"] = 1
            deploy["placement"] = {"constraints": ["node.labels.%s == true" % data_label]}
            # One writer on its volume: never two tasks at once.
            deploy["update_config"] = {"parallelism": 1, "order": "stop-first",
                                       "failure_action": "rollback",
                                       "monitor": "%ds" % monitor_seconds(health)}
            deploy["rollback_config"] = {"parallelism": 1, "order": "stop-first"}
            continue
        svc_upd = dict(upd)
        if name == "proxy":
            svc["ports"] = [_host_port(spec) for spec in svc.pop("ports", [])]
            deploy["replicas"] = model["proxy"]["replicas"]
            # Host-mode ports: one task per node, and the old task must free the port first.
            deploy["placement"] = {"max_replicas_per_node": 1}
            if edge_label:
                deploy["placement"]["constraints"] = ["node.labels.%s == true" % edge_label]
            svc_upd["order"] = "stop-first"
        elif name in apps:
            svc_upd.update({key: value for key, value in (apps[name].get("update") or {}).items()
                            if key in ("parallelism", "delay", "order") and value is not None})
            placement = _placement(apps[name].get("placement"))
            if name in published_apps:
                # host-mode ports: one task per node
                placement["max_replicas_per_node"] = 1
            if placement:
                deploy["placement"] = placement
        monitor = svc_upd["monitor"] or monitor_seconds(health)
        deploy["update_config"] = {
            "parallelism": svc_upd["parallelism"], "delay": "%ds" % svc_upd["delay"],
            "order": svc_upd["order"], "failure_action": svc_upd["failure_action"],
            "monitor": "%ds" % monitor,
        }
        deploy["rollback_config"] = {"parallelism": svc_upd["parallelism"], "order": svc_upd["order"],
                                     "monitor": "%ds" % monitor}

    _compose.apply_overrides(services, (model.get("overrides") or {}).get("swarm"), "swarm")
    networks = {}
    for key, definition in project["networks"].items():
        net = {"driver": "overlay", "labels": {"org.opsdeck.stack": stack}}
        if definition.get("internal"):
            net["internal"] = True
        if key == "logging":
            # the role's one-off Elasticsearch setup container (docker run) joins it
            net["attachable"] = True
        if encrypted:
            net["driver_opts"] = {"encrypted": ""}
        networks[key] = net
    out = {"version": STACK_FILE_VERSION, "services": services, "networks": networks}
    for key in ("volumes", "secrets"):
        if project.get(key):
            out[key] = project[key]
    if config_defs:
        out["configs"] = {k: config_defs[k] for k in sorted(config_defs)}
    return {"stack": out, "files": rendered["files"], "secrets": secret_names,
            "configs": config_names}
