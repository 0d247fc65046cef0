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
import re

from ansible_collections.opsdeck.stack.plugins.module_utils.common import quantity
from ansible_collections.opsdeck.stack.plugins.module_utils.model import fidelity as _fidelity
from ansible_collections.opsdeck.stack.plugins.module_utils.model import observability as _observability
from ansible_collections.opsdeck.stack.plugins.module_utils.model import spec
from ansible_collections.opsdeck.stack.plugins.module_utils.model.schema import Context, item_label, short

# Names the platform uses for its own components: an app service may not take them.
RESERVED = ("postgres", "redis", "proxy") + _observability.COMPONENTS
PLACEHOLDER = re.compile(
    r"^(|change[_-]?(this|me|it)|changeme|password|passw0rd|secret|admin|default|"
    r"example|todo|xxx+|senha|senha-segura|123456+|<.*>|\$\{.*\})$",
    re.IGNORECASE,
)
MIN_PROD_SECRET_LEN = 12
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


def _service(path, svc, proxy, ctx):
    """The rules of one service beyond its schema; fills the defaults that depend on others."""
    if svc["name"] in RESERVED:
        ctx.err(path + ".name", "%s is reserved for a platform component (reserved: %s)" % (
            short(svc["name"]), ", ".join(RESERVED)))
    health = svc["health"]
    if health is not None:
        if not health["live"] and not health["ready"]:
            svc["health"] = None
        else:
            health["ready"] = health["ready"] or health["live"]
            health["live"] = health["live"] or health["ready"]
    route = svc["route"]
    if route is not None:
        for key in ("rate", "burst", "conn_limit"):
            if route[key] is None:
                route[key] = proxy[key]
        route["cors_origins"] = route["cors_origins"] or list(proxy["cors_origins"])
        if svc["port"] is None:
            ctx.err(path + ".route", "needs the service's port (set %s.port)" % path)
    affinity = svc["session_affinity"]
    if affinity in (None, False, "None"):
        svc["session_affinity"] = None
    elif affinity is True or affinity == "ClientIP":
        svc["session_affinity"] = {"timeout": spec.SESSION_AFFINITY_TIMEOUT}
    svc["resources"] = _resources(svc["resources"], path + ".resources", ctx)
    auto = svc["autoscaling"]
    if auto and auto["max"] is not None:
        if auto["min"] > auto["max"]:
            ctx.err(path + ".autoscaling", "min %s > max %s" % (auto["min"], auto["max"]))
        if auto["cpu"] is None and auto["memory"] is None:
            ctx.err(path + ".autoscaling", "needs a cpu or memory utilisation target (percent, 1..100)")
        for metric in ("cpu", "memory"):
            if auto[metric] and metric not in svc["resources"].get("requests", {}):
                ctx.err(path + ".autoscaling.%s" % metric,
                        "a %s target needs resources.requests.%s" % (metric, metric))


def _secrets(raw, refuse, environment, ctx):
    """The usable secrets: prod (or refuse_placeholders) refuses placeholders and short ones."""
    clean = {}
    for key, value in raw.items():
        if refuse and (PLACEHOLDER.match(value.strip()) or "CHANGE_THIS" in value.upper()
                       or len(value) < MIN_PROD_SECRET_LEN):
            ctx.err("stack_secrets.%s" % key, "is a placeholder or shorter than %d characters: %s "
                    "refuses it; set a real value in the vault" % (
                        MIN_PROD_SECRET_LEN, "prod" if environment == "prod" else "this inventory"))
            continue
        clean[key] = value
    return clean


def normalize(raw, files=None):
    """Validate ``raw`` (a dict of the stack_* variables without the prefix).

    Returns the normalised model (its ``warnings`` list says what was accepted but is
    worth knowing); raises ModelError listing every problem. ``files``: the files the model
    names beside the inventory, as read by the stack_model action (model/observability.check).
    """
    ctx = Context()
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
    for path, svc in _item_paths(raw, "services", services):
        _service(path, svc, proxy, ctx)
        route = svc["route"]
        if route and route["path"]:
            other = routes.get(route["path"])
            if other:
                ctx.err(path + ".route.path", "%s is already routed to %s" % (route["path"], other))
            routes[route["path"]] = svc["name"]
            if route["basic_auth"] and not proxy["basic_auth_users"]:
                ctx.err(path + ".route.basic_auth", "needs stack_proxy.basic_auth_users (none defined)")
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
    if proxy["enabled"] and not routes:
        ctx.err("stack_proxy.enabled", "the proxy is enabled but no service has a route "
                                       "(add a route to a service or disable the proxy)")

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
    if "postgres" in svc["uses"]:
        env.setdefault("DATABASE_HOST", "postgres")
        env.setdefault("DATABASE_PORT", str(postgres["port"]))
        env.setdefault("DATABASE_NAME", postgres["database"])
        env.setdefault("DATABASE_USER", postgres["user"])
        env.setdefault("DATABASE_PASSWORD_FILE", "/run/secrets/%s" % postgres["password_secret"])
        if postgres["password_secret"] not in svc["secrets"]:
            svc["secrets"].append(postgres["password_secret"])
        if "postgres" not in svc["depends_on"]:
            svc["depends_on"].append("postgres")
    if "redis" in svc["uses"]:
        env.setdefault("REDIS_HOST", "redis")
        env.setdefault("REDIS_PORT", str(redis["port"]))
        if redis["password_secret"]:
            env.setdefault("REDIS_PASSWORD_FILE", "/run/secrets/%s" % redis["password_secret"])
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
    routes = []
    for svc in model["services"]:
        route = svc.get("route")
        if not route or not svc.get("port"):
            continue
        item = dict(route)
        item["name"] = svc["name"]
        item["upstreams"] = ["%s:%d" % (svc["name"], svc["port"])]
        if svc.get("health"):
            item["health_path"] = svc["health"]["ready"]
        routes.append(item)
    return routes
