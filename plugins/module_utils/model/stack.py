# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The stack model: validation and normalisation.

One description of the stack (``stack_*`` inventory variables) is validated here once,
before any host is touched, and normalised into a plain dict that every renderer
(Compose, Swarm, Kubernetes) consumes.  Every error names the field path, the bad value
and what is allowed; all errors are collected and reported together.
"""

from __future__ import annotations

import copy
import json
import os
import re

from ansible_collections.opsdeck.stack.plugins.module_utils.common import quantity
from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import hpa as _hpa
from ansible_collections.opsdeck.stack.plugins.module_utils.model import fidelity as _fidelity
from ansible_collections.opsdeck.stack.plugins.module_utils.model import observability as _observability
from ansible_collections.opsdeck.stack.plugins.module_utils.model import secrets as _secret_rules
from ansible_collections.opsdeck.stack.plugins.module_utils.model import spec
from ansible_collections.opsdeck.stack.plugins.module_utils.model.schema import Context, item_label, short

# Names the platform uses for its own components: an app service may not take them.
RESERVED = ("postgres", "redis", "proxy") + _observability.COMPONENTS
# Label and annotation keys the renderers set themselves.
RESERVED_LABEL_PREFIXES = ("org.opsdeck.", "opsdeck.io/", "app.kubernetes.io/", "com.docker.")
DATASTORES = spec.DATASTORES
DEFAULT_IMAGES = spec.DEFAULT_IMAGES
BUILD_RECIPES = spec.BUILD_RECIPES

cpu_millis = quantity.cpu_millis
memory_bytes = quantity.to_bytes


class ModelError(Exception):
    """Raised with every problem found in a stack model."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__(self.render())

    def render(self):
        lines = ["the stack model is invalid (%d problem%s):" % (
            len(self.errors), "" if len(self.errors) == 1 else "s")]
        lines.extend("  - %s" % e for e in self.errors)
        return "\n".join(lines)


def service_path(svc):
    """The path of a service in messages: ``stack_services[api]``."""
    return "stack_services[%s]" % svc["name"]


def _item_paths(raw, section, items, key="name"):
    """(path, item) for each loaded item of a list, named as the schema named it."""
    raw_items = raw.get(section) if isinstance(raw, dict) else None
    raw_items = raw_items if isinstance(raw_items, list) else []
    return [("stack_%s[%s]" % (section, item_label(raw_items[i] if i < len(raw_items) else None, key, i)),
             item) for i, item in enumerate(items)]


def _resources(resources, path, ctx):
    """Add the parsed amounts (cpu_millis, memory_bytes) and check requests <= limits."""
    out = {}
    for kind in ("requests", "limits"):
        parsed = {}
        for field, parse, unit in (("cpu", quantity.cpu_millis, "_millis"),
                                   ("memory", quantity.to_bytes, "_bytes")):
            value = (resources.get(kind) or {}).get(field)
            if value is not None:
                parsed[field] = str(value)
                parsed[field + unit] = parse(value)
        if parsed:
            out[kind] = parsed
    for field, unit in (("cpu", "_millis"), ("memory", "_bytes")):
        req = out.get("requests", {}).get(field + unit)
        lim = out.get("limits", {}).get(field + unit)
        if req is not None and lim is not None and req > lim:
            ctx.err("%s.requests.%s" % (path, field), "%s is above limits.%s %s" % (
                out["requests"][field], field, out["limits"][field]))
    return out


def _health(path, health, port_numbers, ctx):
    """Each probe's kind (http, tcp, exec), port and timings, defaults from the section."""
    health["port"] = health["port"] or next(iter(port_numbers), None)
    if health["port"] is not None and health["port"] not in port_numbers:
        ctx.err(path + ".port", "%s is not a port of this service (ports: %s)" % (
            short(health["port"]), ", ".join(port_numbers) or "none"))
    health["target_port"] = port_numbers.get(health["port"])
    given = {key: health[key] for key in ("live", "ready") if health[key]}
    for key, probe in given.items():
        ppath = "%s.%s" % (path, key)
        kinds = [kind for kind in ("path", "tcp", "exec") if probe[kind]]
        if len(kinds) != 1:
            ctx.err(ppath, "needs exactly one of path, tcp and exec (got %s)" % (", ".join(kinds) or "none"))
        kind = {"path": "http", "tcp": "tcp", "exec": "exec"}[kinds[0]] if kinds else None
        port = probe["port"] or health["port"]
        if kind in ("http", "tcp") and port not in port_numbers:
            ctx.err(ppath + (".port" if probe["port"] else ""), "needs a port of the service (ports: %s)"
                    % (", ".join(port_numbers) or "none"))
        given[key] = {
            "kind": kind, "path": probe["path"], "command": list(probe["exec"]),
            "port": port if kind in ("http", "tcp") else None,
            "target_port": port_numbers.get(port) if kind in ("http", "tcp") else None,
            "initial_delay": probe["initial_delay"],
            "period": probe["period"] or health["interval"],
            "timeout": probe["timeout"] or health["timeout"],
            # readiness decides traffic: it trips sooner than liveness restarts
            "failures": probe["failures"] or (health["retries"] if key == "live"
                                              else max(1, min(3, health["retries"]))),
        }
    if given:
        health["live"] = given.get("live") or dict(given["ready"], failures=health["retries"])
        health["ready"] = given.get("ready") or dict(given["live"],
                                                     failures=max(1, min(3, health["retries"])))


def _autoscaling(path, svc, ctx):
    """min/max (derived from capacity when not given), targets and custom metrics."""
    auto = svc["autoscaling"]
    capacity = auto["capacity"]
    if capacity and not (capacity["peak_rate"] and capacity["per_pod_rate"]):
        ctx.err(path + ".capacity", "needs peak_rate and per_pod_rate greater than zero")
        auto["capacity"] = capacity = None
    if capacity:
        derived = _hpa.derive_capacity(auto["capacity"])
        auto["derived"] = derived["explanation"]
        if auto["max"] is None:
            auto["max"] = derived["max_replicas"]
        if auto["min"] is None:
            auto["min"] = derived["min_replicas"]
    if auto["min"] is None:
        auto["min"] = 1
    if auto["max"] is None:
        ctx.err(path + ".max", "is required (or give capacity to derive it)")
    elif auto["min"] > auto["max"]:
        ctx.err(path, "min %s > max %s" % (auto["min"], auto["max"]))
    if auto["cpu"] is None and auto["memory"] is None and not auto["metrics"]:
        ctx.err(path, "needs a target: cpu or memory utilisation (percent, 1..100), or metrics")
    for metric in ("cpu", "memory"):
        if auto[metric] and metric not in svc["resources"].get("requests", {}):
            ctx.err(path + ".%s" % metric, "a %s target needs resources.requests.%s" % (metric, metric))
    for metric in auto["metrics"]:
        mpath = "%s.metrics[%s]" % (path, metric["name"])
        is_object = metric["type"] == "object"
        for key in ("object_kind", "object_name"):
            if is_object and not metric[key]:
                ctx.err("%s.%s" % (mpath, key), "is required for a metric of type object")
            if not is_object and metric[key]:
                ctx.err("%s.%s" % (mpath, key), "applies to a metric of type object only")
        if metric["type"] == "pods" and metric["average"]:
            ctx.err(mpath + ".average", "a pods metric is always an average per pod")


def _kubernetes(section, name, services, ctx):
    """The namespace, and the roles and service accounts the services name."""
    section["namespace"] = section["namespace"] or name
    roles = {role["name"] for role in section["roles"] if role["name"]}
    accounts = {account["name"]: account for account in section["service_accounts"] if account["name"]}
    for account in section["service_accounts"]:
        for role in account["roles"]:
            if role not in roles:
                ctx.err("stack_kubernetes.service_accounts[%s].roles" % account["name"],
                        "%s is not a role of stack_kubernetes.roles (roles: %s)" % (
                            short(role), ", ".join(sorted(roles)) or "none"))
    for svc in services:
        if svc.get("service_account") and svc["service_account"] not in accounts:
            ctx.err(service_path(svc) + ".service_account", "%s is not in stack_kubernetes.service_accounts "
                    "(service accounts: %s)" % (short(svc["service_account"]), ", ".join(sorted(accounts)) or "none"))


def _ports(path, svc, allow_host_ports, ctx):
    """``port`` is shorthand for one port named http; published ports only where allowed."""
    if svc["port"] is not None and svc["ports"]:
        ctx.err(path + ".port", "give either port or ports, not both")
    if svc["port"] is not None and not svc["ports"]:
        svc["ports"] = [{"name": "http", "port": svc["port"], "protocol": "tcp", "publish": None}]
    seen = {}
    for port in svc["ports"]:
        ppath = "%s.ports[%s]" % (path, port["name"])
        key = (port["port"], port["protocol"])
        if key in seen:
            ctx.err(ppath + ".port", "%d/%s is already the port %s" % (key[0], key[1], seen[key]))
        seen[key] = port["name"]
        if port["publish"] is not None:
            if not allow_host_ports:
                ctx.err(ppath + ".publish", "publishing on the host is refused here (stack_allow_host_ports "
                                            "is false, the default in prod)")
            address, _sep, number = port["publish"].rpartition(":")
            if not 1 <= int(number) <= 65535:
                ctx.err(ppath + ".publish", "%s is out of range (allowed: 1..65535)" % number)
            port["publish"] = {"address": address or "127.0.0.1", "port": int(number)}
    svc["port"] = svc["ports"][0]["port"] if svc["ports"] else None


def _routes(path, svc, proxy, port_numbers, ctx):
    """``route`` is shorthand for one route; defaults come from the proxy; ports by name."""
    shorthand = svc.pop("route")
    if shorthand is not None and svc["routes"]:
        ctx.err(path + ".route", "give either route or routes, not both")
    routes = svc["routes"] or ([shorthand] if shorthand is not None else [])
    for index, route in enumerate(routes):
        route["name"] = route["name"] or (svc["name"] if index == 0 else "%s-%d" % (svc["name"], index + 1))
        rpath = path + (".route" if shorthand is not None and not svc["routes"] else ".routes[%s]" % route["name"])
        for key in ("rate", "burst", "conn_limit"):
            if route[key] is None:
                route[key] = proxy[key]
        route["cors_origins"] = route["cors_origins"] or list(proxy["cors_origins"])
        if not port_numbers:
            ctx.err(rpath, "needs the service's port (set %s.port or %s.ports)" % (path, path))
            continue
        route["port"] = route["port"] or next(iter(port_numbers))
        if route["port"] not in port_numbers:
            ctx.err(rpath + ".port", "%s is not a port of this service (ports: %s)" % (
                short(route["port"]), ", ".join(port_numbers)))
        elif [p for p in svc["ports"] if p["name"] == route["port"]][0]["protocol"] != "tcp":
            ctx.err(rpath + ".port", "%s is a UDP port (a route needs TCP)" % short(route["port"]))
        route["target_port"] = port_numbers.get(route["port"])
        route["where"] = rpath
    svc["routes"] = routes


def _env(path, svc, need_secret):
    """Split the environment into plain values and values taken from secrets (env_secrets)."""
    plain, from_secrets = {}, {}
    for key, value in svc["env"].items():
        if isinstance(value, dict):
            from_secrets[key] = value["secret"]
            need_secret(value["secret"], "%s.env.%s" % (path, key))
        else:
            plain[key] = value
    svc["env"], svc["env_secrets"] = plain, from_secrets


def _volumes(path, svc, base_dir, ctx):
    """Each volume's type, its source made absolute (bind), and what each type allows."""
    for volume in svc["volumes"]:
        vpath = "%s.volumes[%s]" % (path, volume["name"])
        volume["type"] = volume["type"] or ("bind" if volume["source"] else "volume")
        if volume["type"] == "bind":
            if not volume["source"]:
                ctx.err(vpath + ".source", "is required for a bind mount (the host directory)")
            elif not os.path.isabs(volume["source"]):
                if base_dir is None:
                    ctx.err(vpath + ".source", "%s is relative: validate with the opsdeck.stack."
                            "stack_model action (it knows the inventory directory) or give an absolute "
                            "path" % short(volume["source"]))
                else:
                    volume["source"] = os.path.normpath(os.path.join(base_dir, volume["source"]))
            for key in ("size", "class"):
                if volume[key] is not None:
                    ctx.err("%s.%s" % (vpath, key), "does not apply to a bind mount")
        elif volume["source"] is not None:
            ctx.err(vpath + ".source", "only a bind mount has a source (type is %s)" % volume["type"])
        if volume["type"] == "tmpfs" and volume["class"] is not None:
            ctx.err(vpath + ".class", "does not apply to tmpfs")


def file_key(path):
    """The name of a file in a ConfigMap or a project directory: its path, / as _."""
    return path.strip("/").replace("/", "_")


def _read(base_dir, source):
    """The text of a file beside the inventory, or (None, why)."""
    try:
        with open(os.path.join(base_dir, source), encoding="utf-8") as handle:
            return handle.read(), None
    except (OSError, UnicodeDecodeError) as exc:
        return None, getattr(exc, "strerror", None) or str(exc)


def _files(path, svc, base_dir, ctx):
    """Each file's text: content as given, data written as YAML or JSON, source read from
    beside the inventory (templated sources come already rendered from the stack_model action)."""
    out = []
    for item in svc["files"]:
        if item["path"] is None:
            continue  # reported by the schema
        fpath = "%s.files[%s]" % (path, item["path"])
        given = [key for key in ("content", "data", "source") if item[key] is not None]
        if len(given) != 1:
            ctx.err(fpath, "needs exactly one of content, data and source (got %s)" % (
                ", ".join(given) or "none"))
            continue
        text = item["content"]
        if item["template"]:
            ctx.err(fpath + ".template", "templates a source file, with the inventory's variables: "
                                         "validate with the opsdeck.stack.stack_model action")
        if item["source"] is not None:
            if base_dir is None and not os.path.isabs(item["source"]):
                ctx.err(fpath + ".source", "%s is relative: validate with the opsdeck.stack.stack_model "
                        "action (it knows the inventory directory)" % short(item["source"]))
                continue
            text, why = _read(base_dir or "/", item["source"])
            if text is None:
                ctx.err(fpath + ".source", "%s cannot be read from %s (%s)" % (
                    short(item["source"]), base_dir, why))
                continue
        if item["data"] is not None:
            # controller-side only; PyYAML comes with ansible-core (imported here, not at the top,
            # so that module_utils import without it, as ansible-test's import check requires)
            import yaml  # pylint: disable=import-outside-toplevel
            fmt = item["format"] or ("json" if item["path"].endswith(".json") else "yaml")
            text = json.dumps(item["data"], indent=2, sort_keys=True) + "\n" if fmt == "json" else \
                yaml.safe_dump(item["data"], default_flow_style=False, sort_keys=False, allow_unicode=True)
        out.append({"path": item["path"], "key": file_key(item["path"]), "content": text,
                    "mode": "0" + item["mode"].lstrip("0").rjust(3, "0")})
    mounts = [v["path"] for v in svc["volumes"]] + [f["path"] for f in out]
    for dup in sorted(set(m for m in mounts if mounts.count(m) > 1)):
        ctx.err(path, "%s is mounted more than once (volumes and files each need a path of their own)" % dup)
    keys = [f["key"] for f in out]
    for dup in sorted(set(k for k in keys if keys.count(k) > 1)):
        ctx.err(path + ".files", "two paths become the same file name %s" % dup)
    svc["files"] = out


def _service(path, svc, proxy, allow_host_ports, ctx, need_secret, base_dir):
    """The rules of one service beyond its schema; fills the defaults that depend on others."""
    _env(path, svc, need_secret)
    for key in list(svc["labels"]) + list(svc["annotations"]):
        if key.startswith(RESERVED_LABEL_PREFIXES):
            ctx.err("%s.labels.%s" % (path, key) if key in svc["labels"] else "%s.annotations.%s" % (path, key),
                    "is set by the platform (reserved prefixes: %s)" % ", ".join(RESERVED_LABEL_PREFIXES))
    _volumes(path, svc, base_dir, ctx)
    _files(path, svc, base_dir, ctx)
    if svc["name"] in RESERVED:
        ctx.err(path + ".name", "%s is reserved for a platform component (reserved: %s)" % (
            short(svc["name"]), ", ".join(RESERVED)))
    _ports(path, svc, allow_host_ports, ctx)
    port_numbers = {p["name"]: p["port"] for p in svc["ports"] if p["name"]}
    health = svc["health"]
    if health is not None:
        _health(path + ".health", health, port_numbers, ctx)
        if not health["live"]:
            svc["health"] = None
    _routes(path, svc, proxy, port_numbers, ctx)
    affinity = svc["session_affinity"]
    if affinity in (None, False, "None"):
        svc["session_affinity"] = None
    elif affinity is True or affinity == "ClientIP":
        svc["session_affinity"] = {"timeout": spec.SESSION_AFFINITY_TIMEOUT}
    svc["resources"] = _resources(svc["resources"], path + ".resources", ctx)
    if svc["autoscaling"]:
        _autoscaling(path + ".autoscaling", svc, ctx)


def _secrets(raw, refuse, environment, ctx):
    """The usable secrets: prod (or refuse_placeholders) refuses placeholders, published and
    weak passwords (model/secrets.py), naming the secret, never showing its value."""
    clean = {}
    for key, value in raw.items():
        why = _secret_rules.weakness(value) if refuse else None
        if why:
            ctx.err("stack_secrets.%s" % key, "is %s: %s refuses it; set a real value in the vault "
                    "(at least %d characters, not a placeholder or a published password)" % (
                        why, "prod" if environment == "prod" else "this inventory", _secret_rules.MIN_LENGTH))
            continue
        clean[key] = value
    return clean


def dashboard_files(raw, base_dir):
    """The dashboard files stack_monitoring.grafana.dashboards names, read from beside the
    inventory: {file as written: {"path": resolved, "content": text} or {"error": message}};
    model/observability.check parses them and reports problems under the field's path."""
    out = {}
    monitoring = raw.get("monitoring") if isinstance(raw, dict) else None
    grafana = monitoring.get("grafana") if isinstance(monitoring, dict) else None
    boards = grafana.get("dashboards") if isinstance(grafana, dict) else None
    for board in boards if isinstance(boards, list) else []:
        name = board.get("file") if isinstance(board, dict) else None
        if not isinstance(name, str) or not name or name in out:
            continue
        path = os.path.normpath(os.path.join(base_dir, os.path.expanduser(name)))
        text, why = _read(base_dir, path)
        out[name] = {"path": path, "content": text} if why is None else {
            "error": "cannot read %s (relative to the inventory directory %s): %s" % (path, base_dir, why)}
    return out


def normalize(raw, base_dir=None, files=None):
    """Validate ``raw`` (a dict of the stack_* variables without the prefix).

    ``base_dir`` is the inventory directory: the files the model names (service files, bind
    mount sources, dashboards) are taken from there. ``files`` gives the dashboard files
    instead (as dashboard_files returns them); with neither, dashboards are not read.
    Returns the normalised model (its ``warnings`` list says what was accepted but is
    worth knowing); raises ModelError listing every problem.
    """
    ctx = Context()
    if files is None and base_dir is not None:
        files = dashboard_files(raw, base_dir)
    secret_values = raw.get("secrets") if isinstance(raw, dict) else None
    if isinstance(secret_values, dict):
        for key, value in secret_values.items():
            if value is None or isinstance(value, (dict, list, bool)):
                ctx.err("stack_secrets.%s" % key, "must be a string (set it in the vault)")
        raw = dict(raw, secrets={k: v for k, v in secret_values.items()
                                 if not (v is None or isinstance(v, (dict, list, bool)))})
    data = spec.STACK.load(raw, "", ctx)
    name = data["name"]
    environment = data["environment"]
    refuse = data["refuse_placeholders"]
    if refuse is None:
        refuse = environment == "prod"
    model = {
        "name": name,
        "target": data["target"],
        "environment": environment,
        "project_dir": data["project_dir"] or "/opt/%s" % (name or "stack"),
        "runtime_uid": data["runtime_uid"],
        "strict": data["strict"],
        "tenant": data["tenant"],
        "allow_host_ports": data["allow_host_ports"] if data["allow_host_ports"] is not None
        else environment != "prod",
    }
    secrets = data["secrets"]
    clean_secrets = _secrets(secrets, refuse, environment, ctx)
    known = secrets  # a refused value is reported once, under stack_secrets
    model["secret_names"] = sorted(clean_secrets)

    def need_secret(secret, where):
        if secret not in known:
            ctx.err(where, "secret %s is not defined in stack_secrets (defined: %s)" % (
                short(secret), ", ".join(sorted(known)) or "none"))

    proxy = data["proxy"]
    postgres, redis = data["postgres"], data["redis"]
    sql_name = (name or "app").replace("-", "_")
    postgres["database"] = postgres["database"] or sql_name
    postgres["user"] = postgres["user"] or sql_name
    postgres["port"] = 5432
    redis["port"] = 6379
    for store in (postgres, redis):
        store["storage_set"] = False
    for store, key in ((postgres, "postgres"), (redis, "redis")):
        section = raw.get(key) if isinstance(raw, dict) else None
        store["storage_set"] = isinstance(section, dict) and section.get("storage") is not None
    model["monitoring"], model["logging"] = data["monitoring"], data["logging"]
    model_for_checks = dict(model, services=data["services"], secrets=data["secrets"])
    _observability.check(model_for_checks, ctx, need_secret, files)

    services = data["services"]
    names = {svc["name"] for svc in services if svc["name"]}
    routes = {}
    route_names = {}
    allow_host_ports = data["allow_host_ports"]
    if allow_host_ports is None:
        allow_host_ports = environment != "prod"
    for path, svc in _item_paths(raw, "services", services):
        _service(path, svc, proxy, allow_host_ports, ctx, need_secret, base_dir)
        for route in svc["routes"]:
            rpath = route.pop("where", path + ".routes[%s]" % route["name"])
            if route["path"]:
                other = routes.get(route["path"].rstrip("/") or "/")
                if other:
                    ctx.err(rpath + ".path", "%s is already routed to %s" % (route["path"], other))
                routes[route["path"].rstrip("/") or "/"] = svc["name"]
            if route["name"] in route_names:
                ctx.err(rpath + ".name", "%s is already the name of a route of %s (allowed: each route "
                        "name once in the stack)" % (short(route["name"]), route_names[route["name"]]))
            route_names[route["name"]] = svc["name"]
            if route["basic_auth"] and not proxy["basic_auth_users"]:
                ctx.err(rpath + ".basic_auth", "needs stack_proxy.basic_auth_users (none defined)")
        for dep in svc["depends_on"]:
            if dep not in names and dep not in DATASTORES:
                ctx.err(path + ".depends_on", "%s is not a service of this stack" % short(dep))
        for use in svc["uses"]:
            store = postgres if use == "postgres" else redis
            if not store["enabled"]:
                ctx.err(path + ".uses", "%s is used but stack_%s.enabled is false" % (use, use))
        for secret in svc["secrets"]:
            need_secret(secret, path + ".secrets")
    if postgres["enabled"]:
        need_secret(postgres["password_secret"], "stack_postgres.password_secret")
    if redis["enabled"] and redis["password_secret"] is not None:
        need_secret(redis["password_secret"], "stack_redis.password_secret")
    if redis["password_secret"] is None and "redis_password" in secrets:
        redis["password_secret"] = "redis_password"
    if proxy["enabled"] and proxy["tls"]["enabled"]:
        for key in ("cert_secret", "key_secret"):
            if proxy["tls"][key] not in secrets:
                need_secret(proxy["tls"][key], "stack_proxy.tls.%s" % key)
    for user in proxy["basic_auth_users"]:
        if user["password_secret"] and user["password_secret"] not in secrets:
            need_secret(user["password_secret"],
                        "stack_proxy.basic_auth_users[%s].password_secret" % user["name"])
    if model["target"] == "compose":
        for path, svc in _item_paths(raw, "services", services):
            count = max(svc["replicas"] or 0, (svc["autoscaling"] or {}).get("min") or 0)
            for port in svc["ports"]:
                if port.get("publish") and count > 1:
                    ctx.err("%s.ports[%s].publish" % (path, port["name"]), "%d replicas would all publish "
                            "host port %d on compose (allowed: 1 replica with a published port; route "
                            "it through the proxy instead)" % (count, port["publish"]["port"]))
    if proxy["enabled"] and proxy["replicas"] > 1 and model["target"] == "compose":
        ctx.err("stack_proxy.replicas", "%d is not allowed on compose: every replica would publish the "
                "same host port (allowed on compose: 1; Swarm runs one per node)" % proxy["replicas"])
    if proxy["tls"]["enabled"] and not proxy["tls"]["protocols"]:
        ctx.err("stack_proxy.tls.protocols", "is empty (allowed: TLSv1.2, TLSv1.3)")
    if proxy["enabled"] and not routes:
        ctx.err("stack_proxy.enabled", "the proxy is enabled but no service has a route "
                                       "(add a route to a service or disable the proxy)")

    _kubernetes(data["kubernetes"], name, services, ctx)
    if model["target"] == "kubernetes":
        for path, svc in _item_paths(raw, "services", services):
            if svc["user"] and not re.match(r"^[0-9]+(:[0-9]+)?$", svc["user"]):
                ctx.err(path + ".user", "%s is a name: Kubernetes runs containers by number (allowed "
                        'on kubernetes: "uid" or "uid:gid")' % short(svc["user"]))
    model["kubernetes"] = data["kubernetes"]
    model["overrides"] = data["overrides"]
    for patch in model["overrides"]["kubernetes"]:
        if (patch["patch"] is None) == (not patch["json_patch"]):
            ctx.err("stack_overrides.kubernetes[%s]" % patch["target"], "needs exactly one of patch and json_patch")
    raw_overrides = raw.get("overrides") if isinstance(raw, dict) else None
    raw_patches = (raw_overrides or {}).get("kubernetes") if isinstance(raw_overrides, dict) else None
    for index, patch in enumerate(model["overrides"]["kubernetes"]):
        where = "stack_overrides.kubernetes[%s]" % patch["target"]
        raw_ops = (raw_patches[index] or {}).get("json_patch") if isinstance(raw_patches, list) and \
            isinstance(raw_patches[index], dict) else None
        for number, operation in enumerate(patch["json_patch"]):
            given = isinstance(raw_ops, list) and isinstance(raw_ops[number], dict) and "value" in raw_ops[number]
            if operation["op"] == "remove" and given:
                ctx.err(where + ".json_patch", "remove %s takes no value" % operation["path"])
            elif operation["op"] != "remove" and not given:
                ctx.err(where + ".json_patch", "%s %s needs a value" % (operation["op"], operation["path"]))
    model["host_ports"] = _host_ports(proxy, model["monitoring"], model["logging"], services, ctx) \
        if model["target"] in ("compose", "swarm") else []
    if ctx.errors:
        raise ModelError(ctx.errors)

    for svc in services:
        _wire_datastores(svc, postgres, redis)
        if svc["autoscaling"]:
            if isinstance(raw.get("services"), list):
                _replicas_warning(raw["services"], svc, ctx)
            # Every target starts (and, without an autoscaler, stays) at the minimum.
            svc["replicas"] = svc["autoscaling"]["min"]
    model.update({"services": services, "postgres": postgres, "redis": redis, "proxy": proxy,
                  "warnings": ctx.warnings})
    model["images"] = images(model)
    # stack_strict: refuse a model its target cannot render in full (see model/fidelity).
    strict = _fidelity.strict_errors(model)
    if strict:
        raise ModelError(strict)
    return model


def _host_ports(proxy, monitoring, logging, services, ctx):
    """Every port the stack publishes on a Docker host, [{port, field}]; each one once."""
    wanted = []
    if proxy["enabled"]:
        wanted.append((proxy["port"], "stack_proxy.port"))
        if proxy["tls"]["enabled"]:
            wanted.append((proxy["tls"]["port"], "stack_proxy.tls.port"))
    if monitoring["enabled"]:
        wanted.append((monitoring["port"], "stack_monitoring.port"))
        if monitoring["grafana"]["enabled"]:
            wanted.append((monitoring["grafana"]["port"], "stack_monitoring.grafana.port"))
    if logging["enabled"]:
        wanted.append((logging["kibana_port"], "stack_logging.kibana_port"))
    for svc in services:
        for port in svc["ports"]:
            if port.get("publish"):
                wanted.append((port["publish"]["port"], "stack_services[%s].ports[%s].publish" % (
                    svc["name"], port["name"])))
    out, seen = [], {}
    for number, field in wanted:
        if not number:
            continue
        if number in seen:
            ctx.err(field, "%d is already published by %s" % (number, seen[number]))
            continue
        seen[number] = field
        out.append({"port": number, "field": field})
    return out


def _replicas_warning(raw_services, svc, ctx):
    """``replicas`` beside ``autoscaling``: the autoscaler's minimum wins; say so."""
    for item in raw_services:
        if isinstance(item, dict) and item.get("name") == svc["name"] and \
                item.get("replicas") is not None and str(item["replicas"]) != str(svc["autoscaling"]["min"]):
            ctx.warn(service_path(svc) + ".replicas",
                     "%s is not used: autoscaling.min (%d) is the starting count (and, on Compose "
                     "and Swarm, the count); remove replicas or make it equal" % (
                         item["replicas"], svc["autoscaling"]["min"]))


def _wire_datastores(svc, postgres, redis):
    """Give a service the connection settings of the data stores it uses."""
    env = svc["env"]
    taken = set(svc.get("env_secrets") or {})

    def put(key, value):
        if key not in env and key not in taken:
            env[key] = value

    if "postgres" in svc["uses"]:
        put("DATABASE_HOST", "postgres")
        put("DATABASE_PORT", str(postgres["port"]))
        put("DATABASE_NAME", postgres["database"])
        put("DATABASE_USER", postgres["user"])
        put("DATABASE_PASSWORD_FILE", "/run/secrets/%s" % postgres["password_secret"])
        if postgres["password_secret"] not in svc["secrets"]:
            svc["secrets"].append(postgres["password_secret"])
        if "postgres" not in svc["depends_on"]:
            svc["depends_on"].append("postgres")
    if "redis" in svc["uses"]:
        put("REDIS_HOST", "redis")
        put("REDIS_PORT", str(redis["port"]))
        if redis["password_secret"]:
            put("REDIS_PASSWORD_FILE", "/run/secrets/%s" % redis["password_secret"])
            if redis["password_secret"] not in svc["secrets"]:
                svc["secrets"].append(redis["password_secret"])
        if "redis" not in svc["depends_on"]:
            svc["depends_on"].append("redis")


def images(model):
    """Every image the stack needs, with how to get it: pull, or build from a recipe."""
    wanted = []
    for svc in model.get("services", []):
        wanted.append((svc["name"], svc["image"], svc.get("build")))
    for component in DATASTORES + ("proxy",):
        section = model.get(component) or {}
        if section.get("enabled"):
            wanted.append((component, section["image"], None))
    wanted.extend(_observability.images(model))
    out, seen = [], set()
    for component, image, build in wanted:
        if image in seen:
            continue
        seen.add(image)
        repo = image.rsplit("@", 1)[0]
        repo = repo.rsplit(":", 1)[0] if ":" in repo.rsplit("/", 1)[-1] else repo
        recipe = build or BUILD_RECIPES.get(repo)
        out.append({
            "component": component,
            "image": image,
            "recipe": recipe,
            # Images in the opsdeck/ namespace are ours: never pulled from a registry.
            "pull": not repo.startswith("opsdeck/"),
        })
    return out


def from_vars(variables):
    """Collect the ``stack_*`` variables into the raw model dict ``normalize`` reads."""
    raw = {}
    for key, value in variables.items():
        if key.startswith("stack_") and value is not None:
            raw[key[len("stack_"):]] = copy.deepcopy(value)
    return raw


def proxy_routes(model):
    """The nginx_proxy role's routes for a Compose or Swarm stack (upstream = service DNS)."""
    out = []
    for svc in model["services"]:
        health = svc.get("health")
        for route in svc.get("routes") or []:
            item = {key: value for key, value in route.items() if key not in ("port", "target_port")}
            item["upstreams"] = ["%s:%d" % (svc["name"], route["target_port"])]
            item["affinity"] = bool(svc.get("session_affinity"))
            ready = (health or {}).get("ready") or {}
            if ready.get("kind") == "http" and ready.get("target_port") == route["target_port"]:
                item["health_path"] = ready["path"]
            out.append(item)
    return out
