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

from ansible_collections.opsdeck.stack.plugins.module_utils.model import fidelity as _fidelity
from ansible_collections.opsdeck.stack.plugins.module_utils.model import observability as _observability
from ansible_collections.opsdeck.stack.plugins.module_utils.common.names import IMAGE_REF, SECRET_NAME

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RATE = re.compile(r"^([1-9][0-9]*)r/([sm])$")
CPU = re.compile(r"^([0-9]+(\.[0-9]+)?)(m?)$")
MEMORY = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|K|M|G|T|k)?$")
ROUTE_PATH = re.compile(r"^/([A-Za-z0-9._~-]+/)*$")
HTTP_PATH = re.compile(r"^/[A-Za-z0-9._~/?=&%-]*$")
HOST = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)+$")

TARGETS = ("compose", "swarm", "kubernetes")
PERSISTENCE = ("aof", "rdb", "none")
PROBES = ("auto", "curl", "wget", "python", "none")
DATASTORES = ("postgres", "redis")
# Names the platform uses for its own components: an app service may not take them.
RESERVED = ("postgres", "redis", "proxy") + _observability.COMPONENTS
PLACEHOLDER = re.compile(
    r"^(|change[_-]?(this|me|it)|changeme|password|passw0rd|secret|admin|default|"
    r"example|todo|xxx+|senha|senha-segura|123456+|<.*>|\$\{.*\})$",
    re.IGNORECASE,
)
MIN_PROD_SECRET_LEN = 12
SESSION_AFFINITY_TIMEOUT = 3600
BOOL_WORDS = {"true": True, "yes": True, "false": False, "no": False}

MEMORY_FACTORS = {None: 1, "k": 1000, "K": 1000, "M": 1000 ** 2, "G": 1000 ** 3,
                  "T": 1000 ** 4, "Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3,
                  "Ti": 1024 ** 4}

# Images the platform builds itself from Debian packages (see roles/images).
DEFAULT_IMAGES = {
    "postgres": "opsdeck/postgres:15",
    "redis": "opsdeck/redis:7",
    "proxy": "opsdeck/nginx:1.22",
}
BUILD_RECIPES = {
    "opsdeck/postgres": "postgres",
    "opsdeck/redis": "redis",
    "opsdeck/nginx": "nginx",
    "opsdeck/refapp": "refapp",
}
BUILD_RECIPES.update(_observability.BUILD_RECIPES)


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


def _join(path, key):
    """Field path of ``key`` under ``path``; top-level fields are the stack_* variables."""
    if path in ("", "stack"):
        return "stack_%s" % key
    return "%s.%s" % (path, key)


def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Checker:
    """Collects errors while reading a raw model with typed accessors."""

    def __init__(self):
        self.errors = []

    def err(self, path, message):
        self.errors.append("%s: %s" % (path, message))

    def mapping(self, data, path, allowed):
        if data is None:
            return {}
        if not isinstance(data, dict):
            self.err(path, "must be a mapping (got %s)" % _short(data))
            return {}
        for key in data:
            if key not in allowed:
                self.err(_join(path, key),
                         "unknown field (allowed: %s)" % ", ".join(sorted(allowed)))
        return data

    def boolean(self, data, key, path, default):
        value = data.get(key, default)
        if value is None:
            return default
        if isinstance(value, str) and value.lower() in BOOL_WORDS:
            # As given on the command line: -e stack_strict=true
            return BOOL_WORDS[value.lower()]
        if not isinstance(value, bool):
            self.err(_join(path, key), "must be true or false (got %s)" % _short(value))
            return default
        return value

    def integer(self, data, key, path, default, low=None, high=None):
        value = data.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value.strip())
            else:
                self.err(_join(path, key), "must be an integer (got %s)" % _short(value))
                return default
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = "%s..%s" % ("" if low is None else low, "" if high is None else high)
            self.err(_join(path, key), "%s is out of range (allowed: %s)" % (value, bounds))
            return default
        return value

    def string(self, data, key, path, default=None, pattern=None, allowed_desc=None,
               choices=None, required=False):
        value = data.get(key, default)
        if value is None:
            if required:
                self.err(_join(path, key), "is required")
            return default
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            self.err(_join(path, key), "must be a string (got %s)" % _short(value))
            return default
        if choices is not None and value not in choices:
            self.err(_join(path, key), "%s is not allowed (allowed: %s)" % (
                _short(value), ", ".join(choices)))
            return default
        if pattern is not None and not pattern.match(value):
            self.err(_join(path, key), "%s is not valid (allowed: %s)" % (
                _short(value), allowed_desc or pattern.pattern))
            return default
        return value

    def string_list(self, data, key, path, pattern=None, allowed_desc=None):
        value = data.get(key)
        if value is None:
            return []
        if isinstance(value, str) or not isinstance(value, list):
            self.err(_join(path, key), "must be a list of strings (got %s)" % _short(value))
            return []
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or (pattern is not None and not pattern.match(item)):
                self.err("%s[%d]" % (_join(path, key), i), "%s is not valid (allowed: %s)" % (
                    _short(item), allowed_desc or "a string"))
                continue
            out.append(item)
        return out


def cpu_millis(text):
    """Return a Kubernetes CPU quantity ("250m", "0.5", "2") in millicores."""
    match = CPU.match(str(text))
    if not match:
        raise ValueError(text)
    number = float(match.group(1))
    return int(round(number if match.group(3) else number * 1000))


def memory_bytes(text):
    """Return a memory quantity ("256Mi", "1Gi", "512M") in bytes."""
    match = MEMORY.match(str(text))
    if not match:
        raise ValueError(text)
    return int(match.group(1)) * MEMORY_FACTORS[match.group(2)]


def _duration(checker, data, key, path, default):
    return checker.integer(data, key, path, default, low=0, high=3600)


def _resources(checker, raw, path):
    data = checker.mapping(raw, path, ("requests", "limits"))
    out = {}
    for kind in ("requests", "limits"):
        section = checker.mapping(data.get(kind), "%s.%s" % (path, kind), ("cpu", "memory"))
        parsed = {}
        for field, parse, desc in (("cpu", cpu_millis, 'a CPU quantity such as "250m" or "1.5"'),
                                   ("memory", memory_bytes,
                                    'a memory quantity such as "256Mi" or "1Gi"')):
            if section.get(field) is None:
                continue
            try:
                amount = parse(section[field])
            except ValueError:
                checker.err("%s.%s.%s" % (path, kind, field), "%s is not valid (allowed: %s)" % (
                    _short(section[field]), desc))
                continue
            if amount <= 0:
                checker.err("%s.%s.%s" % (path, kind, field), "must be greater than zero")
                continue
            parsed[field] = str(section[field])
            parsed[field + ("_millis" if field == "cpu" else "_bytes")] = amount
        if parsed:
            out[kind] = parsed
    for field, unit in (("cpu", "_millis"), ("memory", "_bytes")):
        req = out.get("requests", {}).get(field + unit)
        lim = out.get("limits", {}).get(field + unit)
        if req is not None and lim is not None and req > lim:
            checker.err("%s.requests.%s" % (path, field), "%s is above limits.%s %s" % (
                out["requests"][field], field, out["limits"][field]))
    return out


def _route(checker, raw, path, proxy):
    data = checker.mapping(raw, path, ("path", "rate", "burst", "nodelay", "conn_limit",
                                       "basic_auth", "cors_origins", "strip_prefix", "timeout"))
    route = {
        "path": checker.string(data, "path", path, required=True, pattern=ROUTE_PATH,
                               allowed_desc='a URL path that starts and ends with "/", e.g. /api/'),
        "rate": checker.string(data, "rate", path, default=proxy["rate"], pattern=RATE,
                               allowed_desc='requests per second or minute, e.g. "10r/s" or "600r/m"'),
        "burst": checker.integer(data, "burst", path, proxy["burst"], low=0, high=100000),
        "nodelay": checker.boolean(data, "nodelay", path, True),
        "conn_limit": checker.integer(data, "conn_limit", path, proxy["conn_limit"], low=1, high=100000),
        "basic_auth": checker.boolean(data, "basic_auth", path, False),
        "cors_origins": checker.string_list(data, "cors_origins", path) or list(proxy["cors_origins"]),
        "strip_prefix": checker.boolean(data, "strip_prefix", path, False),
        "timeout": checker.integer(data, "timeout", path, 60, low=1, high=3600),
    }
    return route


def _health(checker, raw, path):
    data = checker.mapping(raw, path, ("live", "ready", "probe", "interval", "timeout",
                                       "retries", "start_period"))
    if not data:
        return None
    live = checker.string(data, "live", path, default=None, pattern=HTTP_PATH,
                          allowed_desc="an HTTP path starting with /")
    ready = checker.string(data, "ready", path, default=live, pattern=HTTP_PATH,
                           allowed_desc="an HTTP path starting with /")
    return {
        "live": live or ready,
        "ready": ready,
        "probe": checker.string(data, "probe", path, default="auto", choices=PROBES),
        "interval": _duration(checker, data, "interval", path, 5),
        "timeout": _duration(checker, data, "timeout", path, 3),
        "retries": checker.integer(data, "retries", path, 5, low=1, high=100),
        "start_period": _duration(checker, data, "start_period", path, 10),
    }


def _autoscaling(checker, raw, path):
    data = checker.mapping(raw, path, ("min", "max", "cpu", "memory"))
    if not data:
        return None
    out = {
        "min": checker.integer(data, "min", path, 1, low=1, high=10000),
        "max": checker.integer(data, "max", path, None, low=1, high=10000),
        "cpu": checker.integer(data, "cpu", path, None, low=1, high=100),
        "memory": checker.integer(data, "memory", path, None, low=1, high=100),
    }
    if out["max"] is None:
        checker.err(path + ".max", "is required")
    elif out["min"] > out["max"]:
        checker.err(path, "min %s > max %s" % (out["min"], out["max"]))
    if out["cpu"] is None and out["memory"] is None:
        checker.err(path, "needs a cpu or memory utilisation target (percent, 1..100)")
    return out


def _host(checker, data, path):
    """The DNS name the Ingress answers for (``*.`` allowed in front), or None."""
    host = checker.string(data, "host", path, None, pattern=HOST,
                          allowed_desc="a lowercase DNS name such as shop.example.com "
                                       "(or *.example.com), without scheme or port")
    if host and len(host) > 253:
        checker.err(path + ".host", "%s is longer than 253 characters" % _short(host))
        return None
    return host


def _label(checker, data, key, path):
    """An optional DNS-1123 label of at most 63 characters (a tenant name)."""
    value = checker.string(data, key, path, None, pattern=DNS1123_LABEL,
                           allowed_desc="a DNS-1123 label: lowercase letters, digits and '-', "
                                        "starting and ending with a letter or digit, e.g. acme")
    if value and len(value) > 63:
        checker.err(_join(path, key), "%s is longer than 63 characters" % _short(value))
        return None
    return value


def _session_affinity(checker, data, path):
    """``session_affinity``: true/false, "ClientIP", "None" or {timeout: 1..86400}.

    Normalised to None (off) or {"timeout": seconds}; true and "ClientIP" mean 3600 s.
    """
    value = data.get("session_affinity")
    spath = path + ".session_affinity"
    allowed = 'true, false, "ClientIP", "None" or {timeout: 1..86400}'
    if value is None or value is False or value == "None":
        return None
    if value is True or value == "ClientIP":
        return {"timeout": SESSION_AFFINITY_TIMEOUT}
    if isinstance(value, dict):
        section = checker.mapping(value, spath, ("timeout",))
        timeout = checker.integer(section, "timeout", spath, SESSION_AFFINITY_TIMEOUT,
                                  low=1, high=86400)
        return {"timeout": timeout}
    checker.err(spath, "%s is not allowed (allowed: %s)" % (_short(value), allowed))
    return None


def _proxy(checker, raw, path):
    data = checker.mapping(raw, path, ("enabled", "image", "port", "bind", "replicas", "tls",
                                       "security_headers", "hsts_max_age", "rate", "burst",
                                       "conn_limit", "cors_origins", "basic_auth_users",
                                       "client_max_body_size", "real_ip_from", "host"))
    tls_raw = checker.mapping(data.get("tls"), path + ".tls",
                              ("enabled", "port", "cert_secret", "key_secret", "redirect_http"))
    tls = {
        "enabled": checker.boolean(tls_raw, "enabled", path + ".tls", False),
        "port": checker.integer(tls_raw, "port", path + ".tls", 8443, low=1, high=65535),
        "cert_secret": checker.string(tls_raw, "cert_secret", path + ".tls", "tls_cert",
                                      pattern=SECRET_NAME),
        "key_secret": checker.string(tls_raw, "key_secret", path + ".tls", "tls_key",
                                     pattern=SECRET_NAME),
        "redirect_http": checker.boolean(tls_raw, "redirect_http", path + ".tls", True),
    }
    users = []
    raw_users = data.get("basic_auth_users") or []
    if not isinstance(raw_users, list):
        checker.err(path + ".basic_auth_users", "must be a list of {name, password_secret}")
        raw_users = []
    for i, item in enumerate(raw_users):
        upath = "%s.basic_auth_users[%d]" % (path, i)
        item = checker.mapping(item, upath, ("name", "password_secret"))
        users.append({
            "name": checker.string(item, "name", upath, required=True,
                                   pattern=re.compile(r"^[A-Za-z0-9._-]+$"),
                                   allowed_desc="letters, digits, . _ -"),
            "password_secret": checker.string(item, "password_secret", upath, required=True,
                                              pattern=SECRET_NAME),
        })
    return {
        "enabled": checker.boolean(data, "enabled", path, True),
        "image": checker.string(data, "image", path, DEFAULT_IMAGES["proxy"], pattern=IMAGE_REF,
                                allowed_desc="an image reference such as nginx:1.27"),
        "port": checker.integer(data, "port", path, 8080, low=1, high=65535),
        "bind": checker.string(data, "bind", path, "0.0.0.0"),
        "replicas": checker.integer(data, "replicas", path, 1, low=1, high=100),
        "tls": tls,
        "security_headers": checker.boolean(data, "security_headers", path, True),
        "hsts_max_age": checker.integer(data, "hsts_max_age", path, 31536000, low=0),
        "rate": checker.string(data, "rate", path, "10r/s", pattern=RATE,
                               allowed_desc='requests per second or minute, e.g. "10r/s"'),
        "burst": checker.integer(data, "burst", path, 20, low=0, high=100000),
        "conn_limit": checker.integer(data, "conn_limit", path, 100, low=1, high=100000),
        "cors_origins": checker.string_list(data, "cors_origins", path,
                                            pattern=re.compile(r"^https?://[^/\s]+$"),
                                            allowed_desc="an origin such as https://app.example.com"),
        "basic_auth_users": users,
        "client_max_body_size": checker.string(data, "client_max_body_size", path, "10m",
                                               pattern=re.compile(r"^[0-9]+[kmg]?$"),
                                               allowed_desc='a size such as "10m"'),
        "real_ip_from": checker.string_list(data, "real_ip_from", path),
        "host": _host(checker, data, path),
    }


def _datastore_common(checker, data, path, name, enabled_default=False):
    return {
        "enabled": checker.boolean(data, "enabled", path, enabled_default),
        "image": checker.string(data, "image", path, DEFAULT_IMAGES[name], pattern=IMAGE_REF,
                                allowed_desc="an image reference"),
        "storage": checker.string(data, "storage", path, "1Gi", pattern=MEMORY,
                                  allowed_desc='a size such as "20Gi"'),
        # Whether the size was asked for (the fidelity report only counts what was).
        "storage_set": isinstance(data, dict) and data.get("storage") is not None,
    }


def _service(checker, raw, path, proxy):
    data = checker.mapping(raw, path, ("name", "image", "build", "port", "replicas", "command",
                                       "env", "secrets", "health", "resources", "autoscaling",
                                       "route", "uses", "depends_on", "user", "read_only",
                                       "session_affinity", "tenant"))
    svc = {
        "name": checker.string(data, "name", path, required=True, pattern=DNS1123_LABEL,
                               allowed_desc="a DNS-1123 label: lowercase letters, digits and '-', "
                                            "starting and ending with a letter or digit"),
        "image": checker.string(data, "image", path, required=True, pattern=IMAGE_REF,
                                allowed_desc="an image reference such as registry.example.com/shop/api:1.4.2"),
        "build": checker.string(data, "build", path, None, choices=sorted(set(BUILD_RECIPES.values()))),
        "port": checker.integer(data, "port", path, None, low=1, high=65535),
        "replicas": checker.integer(data, "replicas", path, 1, low=0, high=1000),
        "command": checker.string_list(data, "command", path),
        "secrets": checker.string_list(data, "secrets", path, pattern=SECRET_NAME,
                                       allowed_desc="a secret name from stack_secrets"),
        "uses": checker.string_list(data, "uses", path),
        "depends_on": checker.string_list(data, "depends_on", path, pattern=DNS1123_LABEL),
        "user": checker.string(data, "user", path, None, pattern=re.compile(r"^[0-9]+(:[0-9]+)?$"),
                               allowed_desc='a numeric "uid:gid"'),
        "read_only": checker.boolean(data, "read_only", path, True),
        "health": _health(checker, data.get("health"), path + ".health"),
        "resources": _resources(checker, data.get("resources"), path + ".resources"),
        "autoscaling": _autoscaling(checker, data.get("autoscaling"), path + ".autoscaling"),
        "route": None,
        "env": {},
        "session_affinity": _session_affinity(checker, data, path),
        "tenant": _label(checker, data, "tenant", path),
    }
    if svc["name"] and len(svc["name"]) > 40:
        checker.err(path + ".name", "%s is longer than 40 characters" % _short(svc["name"]))
    if svc["name"] in RESERVED:
        checker.err(path + ".name", "%s is reserved for a platform component (reserved: %s)" % (
            _short(svc["name"]), ", ".join(RESERVED)))
    for i, use in enumerate(svc["uses"]):
        if use not in DATASTORES:
            checker.err("%s.uses[%d]" % (path, i), "%s is not allowed (allowed: %s)" % (
                _short(use), ", ".join(DATASTORES)))
    env = data.get("env") or {}
    if not isinstance(env, dict):
        checker.err(path + ".env", "must be a mapping of variable names to values")
        env = {}
    for key, value in env.items():
        if not isinstance(key, str) or not ENV_NAME.match(key):
            checker.err("%s.env.%s" % (path, key), "is not a valid variable name")
            continue
        if isinstance(value, (dict, list)) or value is None:
            checker.err("%s.env.%s" % (path, key), "must be a string, number or boolean")
            continue
        svc["env"][key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    if data.get("route") is not None:
        svc["route"] = _route(checker, data.get("route"), path + ".route", proxy)
        if svc["port"] is None:
            checker.err(path + ".route", "needs the service's port (set %s.port)" % path)
    if svc["autoscaling"] and svc["autoscaling"].get("max"):
        autoscaling = svc["autoscaling"]
        for metric in ("cpu", "memory"):
            if autoscaling.get(metric) and metric not in svc["resources"].get("requests", {}):
                checker.err(path + ".autoscaling.%s" % metric,
                            "a %s target needs resources.requests.%s" % (metric, metric))
    return svc


def _require_secret(checker, secrets, name, path):
    if name not in secrets:
        checker.err(path, "secret %s is not defined in stack_secrets (defined: %s)" % (
            _short(name), ", ".join(sorted(secrets)) or "none"))


def normalize(raw):
    """Validate ``raw`` (a dict of the stack_* variables without the prefix).

    Returns the normalised model; raises ModelError listing every problem.
    """
    checker = _Checker()
    data = checker.mapping(raw, "", ("name", "target", "environment", "services", "postgres",
                                     "redis", "proxy", "monitoring", "logging", "secrets",
                                     "project_dir", "runtime_uid", "strict",
                                     "refuse_placeholders", "tenant"))
    name = checker.string(data, "name", "stack", required=True, pattern=DNS1123_LABEL,
                          allowed_desc="a DNS-1123 label such as shop")
    if name and len(name) > 30:
        checker.err("stack_name", "%s is longer than 30 characters" % _short(name))
    environment = checker.string(data, "environment", "stack", "dev", pattern=DNS1123_LABEL,
                                 allowed_desc="a DNS-1123 label such as dev, staging or prod")
    model = {
        "name": name,
        "target": checker.string(data, "target", "stack", "compose", choices=TARGETS),
        "environment": environment,
        "project_dir": checker.string(data, "project_dir", "stack", "/opt/%s" % (name or "stack"),
                                      pattern=re.compile(r"^/[A-Za-z0-9._/-]+$"),
                                      allowed_desc="an absolute path"),
        "runtime_uid": checker.integer(data, "runtime_uid", "stack", 10001, low=1, high=2 ** 31),
        "strict": checker.boolean(data, "strict", "stack", False),
        "tenant": _label(checker, data, "tenant", "stack"),
    }
    refuse = checker.boolean(data, "refuse_placeholders", "stack", environment == "prod")

    # Secrets: values come from the vault; only their names and hashes ever leave here.
    secrets = data.get("secrets") or {}
    if not isinstance(secrets, dict):
        checker.err("stack_secrets", "must be a mapping of secret names to values")
        secrets = {}
    clean_secrets = {}
    for key, value in secrets.items():
        spath = "stack_secrets.%s" % key
        if not isinstance(key, str) or not SECRET_NAME.match(key):
            checker.err(spath, "is not a valid secret name (allowed: lowercase letters, digits, - and _)")
            continue
        if value is None or isinstance(value, (dict, list, bool)):
            checker.err(spath, "must be a string (set it in the vault)")
            continue
        value = str(value)
        if refuse and (PLACEHOLDER.match(value.strip()) or "CHANGE_THIS" in value.upper()
                       or len(value) < MIN_PROD_SECRET_LEN):
            checker.err(spath, "is a placeholder or shorter than %d characters: %s refuses it; "
                               "set a real value in the vault" % (MIN_PROD_SECRET_LEN,
                                                                  "prod" if environment == "prod"
                                                                  else "this inventory"))
            continue
        clean_secrets[key] = value
    model["secret_names"] = sorted(clean_secrets)

    proxy = _proxy(checker, data.get("proxy"), "stack_proxy")
    sql_name = (name or "app").replace("-", "_")
    pg_raw = checker.mapping(data.get("postgres"), "stack_postgres",
                             ("enabled", "image", "version", "storage", "database", "user",
                              "password_secret", "max_connections"))
    postgres = _datastore_common(checker, pg_raw, "stack_postgres", "postgres")
    postgres.update({
        "version": checker.string(pg_raw, "version", "stack_postgres", "15",
                                  pattern=re.compile(r"^[0-9]+(\.[0-9]+)?$"),
                                  allowed_desc='a major version such as "15"'),
        "database": checker.string(pg_raw, "database", "stack_postgres", sql_name,
                                   pattern=re.compile(r"^[a-z_][a-z0-9_]{0,62}$"),
                                   allowed_desc="a lowercase SQL identifier"),
        "user": checker.string(pg_raw, "user", "stack_postgres", sql_name,
                               pattern=re.compile(r"^[a-z_][a-z0-9_]{0,62}$"),
                               allowed_desc="a lowercase SQL identifier"),
        "password_secret": checker.string(pg_raw, "password_secret", "stack_postgres",
                                          "postgres_password", pattern=SECRET_NAME),
        "max_connections": checker.integer(pg_raw, "max_connections", "stack_postgres", 100,
                                           low=10, high=10000),
        "port": 5432,
    })
    redis_raw = checker.mapping(data.get("redis"), "stack_redis",
                                ("enabled", "image", "persistence", "storage", "password_secret",
                                 "maxmemory", "maxmemory_policy"))
    redis = _datastore_common(checker, redis_raw, "stack_redis", "redis")
    redis.update({
        "persistence": checker.string(redis_raw, "persistence", "stack_redis", "aof",
                                      choices=PERSISTENCE),
        "password_secret": checker.string(redis_raw, "password_secret", "stack_redis",
                                          "redis_password", pattern=SECRET_NAME),
        "maxmemory": checker.string(redis_raw, "maxmemory", "stack_redis", None,
                                    pattern=re.compile(r"^[0-9]+(kb|mb|gb)?$"),
                                    allowed_desc='a size such as "256mb"'),
        "maxmemory_policy": checker.string(redis_raw, "maxmemory_policy", "stack_redis",
                                           "noeviction",
                                           choices=("noeviction", "allkeys-lru", "volatile-lru",
                                                    "allkeys-lfu", "volatile-lfu", "allkeys-random",
                                                    "volatile-random", "volatile-ttl")),
        "port": 6379,
    })
    known = clean_secrets if refuse else secrets
    for section in ("monitoring", "logging"):
        model[section] = getattr(_observability, section)(
            checker, data.get(section), "stack_%s" % section, model,
            lambda name, where: _require_secret(checker, known, name, where))

    services = data.get("services") or []
    if not isinstance(services, list):
        checker.err("stack_services", "must be a list of services")
        services = []
    normalised = []
    seen = {}
    for i, raw_svc in enumerate(services):
        path = "stack_services[%d]" % i
        svc = _service(checker, raw_svc, path, proxy)
        if svc["name"] in seen:
            checker.err(path + ".name", "%s is already used by stack_services[%d]" % (
                _short(svc["name"]), seen[svc["name"]]))
        elif svc["name"]:
            seen[svc["name"]] = i
        normalised.append((path, svc))

    routes = {}
    for path, svc in normalised:
        if svc["route"]:
            other = routes.get(svc["route"]["path"])
            if other:
                checker.err(path + ".route.path", "%s is already routed to %s" % (
                    svc["route"]["path"], other))
            routes[svc["route"]["path"]] = svc["name"]
            if svc["route"]["basic_auth"] and not proxy["basic_auth_users"]:
                checker.err(path + ".route.basic_auth",
                            "needs stack_proxy.basic_auth_users (none defined)")
        for j, dep in enumerate(svc["depends_on"]):
            if dep not in seen and dep not in ("postgres", "redis"):
                checker.err("%s.depends_on[%d]" % (path, j), "%s is not a service of this stack" % _short(dep))
        for use in svc["uses"]:
            store = postgres if use == "postgres" else redis
            if use in DATASTORES and not store["enabled"]:
                checker.err(path + ".uses", "%s is used but stack_%s.enabled is false" % (use, use))
        for j, secret in enumerate(svc["secrets"]):
            _require_secret(checker, clean_secrets if refuse else secrets, secret,
                            "%s.secrets[%d]" % (path, j))
    if postgres["enabled"]:
        _require_secret(checker, clean_secrets if refuse else secrets, postgres["password_secret"],
                        "stack_postgres.password_secret")
    if redis["enabled"] and redis_raw.get("password_secret") is not None:
        _require_secret(checker, clean_secrets if refuse else secrets, redis["password_secret"],
                        "stack_redis.password_secret")
    if redis["enabled"] and redis_raw.get("password_secret") is None \
            and redis["password_secret"] not in secrets:
        redis["password_secret"] = None
    if proxy["enabled"] and proxy["tls"]["enabled"]:
        for key in ("cert_secret", "key_secret"):
            _require_secret(checker, secrets, proxy["tls"][key], "stack_proxy.tls.%s" % key)
    for i, user in enumerate(proxy["basic_auth_users"]):
        if user["password_secret"]:
            _require_secret(checker, secrets, user["password_secret"],
                            "stack_proxy.basic_auth_users[%d].password_secret" % i)
    if proxy["enabled"] and not routes:
        checker.err("stack_proxy.enabled", "the proxy is enabled but no service has a route "
                                           "(add a route to a service or disable the proxy)")

    if checker.errors:
        raise ModelError(checker.errors)

    for _path, svc in normalised:
        _wire_datastores(svc, postgres, redis)
        if svc["autoscaling"]:
            # Every target starts (and, without an autoscaler, stays) at the minimum.
            svc["replicas"] = svc["autoscaling"]["min"]
    model.update({
        "services": [svc for _path, svc in normalised],
        "postgres": postgres,
        "redis": redis,
        "proxy": proxy,
    })
    model["images"] = images(model)
    # stack_strict: refuse a model its target cannot render in full (see _fidelity).
    strict = _fidelity.strict_errors(model)
    if strict:
        raise ModelError(strict)
    return model


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
    for component in ("postgres", "redis", "proxy"):
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
