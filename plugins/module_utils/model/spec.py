# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The stack model, declared once (the single source of truth).

``STACK`` declares every ``stack_*`` variable: model/stack.py loads a raw model with it
(then checks the rules that span several fields), model/export.py turns it into the
published JSON Schema (docs/stack-model.schema.json) and the field reference
(docs/stack-model.md). Defaults here are neutral: nothing any one platform chose.
"""

from __future__ import annotations

import re

from ansible_collections.opsdeck.stack.plugins.module_utils.common import names, quantity
from ansible_collections.opsdeck.stack.plugins.module_utils.model import observability
from ansible_collections.opsdeck.stack.plugins.module_utils.model.schema import (
    Bool, Either, Enum, Int, Map, Obj, ObjList, Quantity, Scalar, Str, StrList)

TARGETS = ("compose", "swarm", "kubernetes")
PERSISTENCE = ("aof", "rdb", "none")
PROBES = ("auto", "curl", "wget", "python", "none")
DATASTORES = ("postgres", "redis")
RATE = re.compile(r"^([1-9][0-9]*)r/([sm])$")
RATE_DESC = 'requests per second or minute, e.g. "10r/s" or "600r/m"'
ROUTE_PATH = re.compile(r"^/([A-Za-z0-9._~-]+/)*$")
HTTP_PATH = re.compile(r"^/[A-Za-z0-9._~/?=&%-]*$")
HOST = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)+$")
SQL_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
ABS_PATH = re.compile(r"^/[A-Za-z0-9._/-]+$")
SESSION_AFFINITY_TIMEOUT = 3600
UID_GID = re.compile(r"^[0-9]+(:[0-9]+)?$")

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
BUILD_RECIPES.update(observability.BUILD_RECIPES)


def image(doc="", default=None, **kw):
    """An image reference field."""
    return Str(doc, pattern=names.IMAGE_REF, desc=names.IMAGE_DESC, default=default, **kw)


def secret_ref(doc="", default=None, **kw):
    """The name of a secret in stack_secrets."""
    return Str(doc, pattern=names.SECRET_NAME, desc=names.SECRET_DESC, default=default, **kw)


def label(doc="", max_len=63, **kw):
    """A DNS-1123 label."""
    return Str(doc, pattern=names.DNS1123_LABEL, desc=names.DNS1123_DESC, max_len=max_len, **kw)


def duration(doc, default):
    """Seconds, 0..3600."""
    return Int(doc, low=0, high=3600, default=default)


def rate(doc, default=None):
    return Str(doc, pattern=RATE, desc=RATE_DESC, default=default)


def size(doc, default=None, **kw):
    return Quantity(doc, parse=quantity.to_bytes, desc=quantity.BYTES_DESC, pattern=quantity.BYTES,
                    default=default, **kw)


RESOURCE_AMOUNTS = Obj({
    "cpu": Quantity("CPU, e.g. 250m or 1.5.", parse=quantity.cpu_millis, desc=quantity.CPU_DESC,
                    pattern=quantity.CPU),
    "memory": size("Memory, e.g. 256Mi or 1.5Gi."),
})
RESOURCES = Obj({
    "requests": Obj(RESOURCE_AMOUNTS.fields, doc="What the scheduler reserves for each replica."),
    "limits": Obj(RESOURCE_AMOUNTS.fields, doc="The most each replica may use."),
}, doc="CPU and memory per replica (Kubernetes quantities).",
    example={"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}})

ROUTE = Obj({
    "path": Str("URL path prefix routed to the service.", required=True, pattern=ROUTE_PATH,
                desc='a URL path that starts and ends with "/", e.g. /api/'),
    "rate": rate("Per-client request rate (nginx limit_req); default stack_proxy.rate."),
    "burst": Int("Requests above the rate queued (or served at once with nodelay); "
                 "default stack_proxy.burst.", low=0, high=100000),
    "nodelay": Bool("Serve the burst at once instead of spacing it out.", default=True),
    "conn_limit": Int("Concurrent connections per client; default stack_proxy.conn_limit.",
                      low=1, high=100000),
    "basic_auth": Bool("Ask for HTTP basic authentication (users in stack_proxy.basic_auth_users).",
                       default=False),
    "cors_origins": StrList("Origins allowed by CORS; default stack_proxy.cors_origins."),
    "strip_prefix": Bool("Remove the path prefix before passing the request on.", default=False),
    "timeout": Int("Seconds to wait for the service's response.", low=1, high=3600, default=60),
}, doc="How the proxy routes requests to the service.", optional=True,
    example={"path": "/api/", "rate": "10r/s", "burst": 20})

HEALTH = Obj({
    "live": Str("Liveness path (default: the ready path).", pattern=HTTP_PATH,
                desc="an HTTP path starting with /"),
    "ready": Str("Readiness path (default: the live path).", pattern=HTTP_PATH,
                 desc="an HTTP path starting with /"),
    "probe": Str("The HTTP client the container's health check uses (Compose, Swarm).",
                 choices=PROBES, default="auto"),
    "interval": duration("Seconds between probes.", 5),
    "timeout": duration("Seconds a probe may take.", 3),
    "retries": Int("Failed probes before the replica counts as unhealthy.", low=1, high=100, default=5),
    "start_period": duration("Seconds after start during which failures do not count.", 10),
}, doc="HTTP health checks on the service's port.", optional=True,
    example={"live": "/health/live", "ready": "/health/ready"})

AUTOSCALING = Obj({
    "min": Int("Fewest replicas (the count run on Compose and Swarm).", low=1, high=10000, default=1),
    "max": Int("Most replicas.", low=1, high=10000, required=True),
    "cpu": Int("Target average CPU utilisation, percent of requests.cpu.", low=1, high=100),
    "memory": Int("Target average memory utilisation, percent of requests.memory.", low=1, high=100),
}, doc="Horizontal autoscaling (a HorizontalPodAutoscaler on Kubernetes).", optional=True,
    example={"min": 2, "max": 20, "cpu": 70})

SERVICE = Obj({
    "name": label("The service's name (its DNS name inside the stack).", max_len=40, required=True),
    "image": image("The image to run.", required=True),
    "build": Str("A built-in recipe to build the image from when it cannot be pulled.",
                 choices=sorted(set(BUILD_RECIPES.values()))),
    "port": Int("The port the service listens on.", low=1, high=65535),
    "replicas": Int("How many replicas run.", low=0, high=1000, default=1),
    "command": StrList("The command's arguments."),
    "env": Map(Scalar(), doc="Environment variables.",
               key=Str(pattern=names.ENV_NAME, desc="a variable name")),
    "secrets": StrList("Secrets mounted as files in /run/secrets/<name>.",
                       item=secret_ref()),
    "health": HEALTH,
    "resources": RESOURCES,
    "autoscaling": AUTOSCALING,
    "route": ROUTE,
    "uses": StrList("Data stores the service connects to (wires their settings and secrets).",
                    item=Str(choices=DATASTORES)),
    "depends_on": StrList("Services that must be up (healthy) first.",
                          item=Str(pattern=names.DNS1123_LABEL, desc=names.DNS1123_DESC)),
    "user": Str("The user the container runs as.", pattern=UID_GID, desc='a numeric "uid:gid"'),
    "read_only": Bool("A read-only root file system.", default=True),
    "session_affinity": Either(
        Enum(values=(True, False, "ClientIP", "None"),
             desc='true, false, "ClientIP", "None" or {timeout: 1..86400}'),
        Obj({"timeout": Int("Seconds a client sticks to a replica.", low=1, high=86400,
                            default=SESSION_AFFINITY_TIMEOUT)}),
        doc='Keep a client on one replica: true or "ClientIP" (%d s), or {timeout: seconds}.'
            % SESSION_AFFINITY_TIMEOUT),
    "tenant": label("The tenant this service belongs to (network isolation on Kubernetes)."),
    "metrics": observability.SERVICE_METRICS,
}, doc="An application service.")

TLS = Obj({
    "enabled": Bool("Terminate TLS at the proxy.", default=False),
    "port": Int("The TLS port published.", low=1, high=65535, default=8443),
    "cert_secret": secret_ref("The secret holding the PEM certificate chain.", default="tls_cert"),
    "key_secret": secret_ref("The secret holding the PEM private key.", default="tls_key"),
    "redirect_http": Bool("Redirect plain HTTP to HTTPS.", default=True),
})

PROXY = Obj({
    "enabled": Bool("Run the rate-limiting nginx proxy (the Ingress on Kubernetes).", default=True),
    "image": image("The nginx image.", default=DEFAULT_IMAGES["proxy"]),
    "port": Int("The HTTP port published on the host.", low=1, high=65535, default=8080),
    "bind": Str("The host address the ports are published on.", default="0.0.0.0"),
    "replicas": Int("nginx replicas.", low=1, high=100, default=1),
    "tls": TLS,
    "security_headers": Bool("Add X-Frame-Options, X-Content-Type-Options, Referrer-Policy "
                             "and (with TLS) HSTS.", default=True),
    "hsts_max_age": Int("HSTS max-age in seconds (0: no HSTS).", low=0, default=31536000),
    "rate": rate("Default per-client request rate of a route.", default="10r/s"),
    "burst": Int("Default burst of a route.", low=0, high=100000, default=20),
    "conn_limit": Int("Default concurrent connections per client.", low=1, high=100000, default=100),
    "cors_origins": StrList("Default CORS origins of a route.",
                            item=Str(pattern=re.compile(r"^https?://[^/\s]+$"),
                                     desc="an origin such as https://app.example.com")),
    "basic_auth_users": ObjList(Obj({
        "name": Str("User name.", required=True, pattern=re.compile(r"^[A-Za-z0-9._-]+$"),
                    desc="letters, digits, . _ -"),
        "password_secret": secret_ref("The secret holding the password.", required=True),
    }), doc="Users of routes with basic_auth."),
    "client_max_body_size": Str("Largest request body.", default="10m",
                                pattern=re.compile(r"^[0-9]+[kmg]?$"), desc='a size such as "10m"'),
    "real_ip_from": StrList("Addresses of trusted proxies in front (their X-Forwarded-For is used)."),
    "host": Str("The DNS name the Ingress answers for.", pattern=HOST, max_len=253,
                desc="a lowercase DNS name such as shop.example.com (or *.example.com), "
                     "without scheme or port"),
}, doc="The edge: nginx with per-route rate limits (Compose, Swarm) or the Ingress (Kubernetes).")


def _store(name, extra, doc):
    fields = {
        "enabled": Bool("Run %s." % name, default=False),
        "image": image("The image.", default=DEFAULT_IMAGES[name]),
        "storage": size("Size of the data volume.", default="1Gi"),
    }
    fields.update(extra)
    return Obj(fields, doc=doc)


POSTGRES = _store("postgres", {
    "version": Str("Major version.", default="15", pattern=re.compile(r"^[0-9]+(\.[0-9]+)?$"),
                   desc='a major version such as "15"'),
    "database": Str("Database name (default: the stack name, - as _).", pattern=SQL_NAME,
                    desc="a lowercase SQL identifier"),
    "user": Str("User name (default: the stack name, - as _).", pattern=SQL_NAME,
                desc="a lowercase SQL identifier"),
    "password_secret": secret_ref("The secret holding the password.", default="postgres_password"),
    "max_connections": Int("max_connections.", low=10, high=10000, default=100),
}, "PostgreSQL.")

REDIS = _store("redis", {
    "persistence": Str("aof (append-only file), rdb (snapshots) or none.", choices=PERSISTENCE,
                       default="aof"),
    "password_secret": secret_ref("The secret holding the password (default: redis_password "
                                  "when that secret exists, else no password)."),
    "maxmemory": Str("maxmemory.", pattern=re.compile(r"^[0-9]+(kb|mb|gb)?$"),
                     desc='a size such as "256mb"'),
    "maxmemory_policy": Str("maxmemory-policy.", default="noeviction",
                            choices=("noeviction", "allkeys-lru", "volatile-lru", "allkeys-lfu",
                                     "volatile-lfu", "allkeys-random", "volatile-random",
                                     "volatile-ttl")),
}, "Redis.")

STACK = Obj({
    "name": label("The stack's name: Compose project, Swarm stack, Kubernetes namespace.",
                  max_len=30, required=True, example="shop"),
    "target": Str("Where the stack runs.", choices=TARGETS, default="compose"),
    "environment": label("dev, staging, prod... (prod refuses placeholder and weak secrets).",
                         default="dev"),
    "project_dir": Str("Where the Compose/Swarm files live on the host (default /opt/<name>).",
                       pattern=ABS_PATH, desc="an absolute path"),
    "runtime_uid": Int("The uid (and gid) containers run as.", low=1, high=2 ** 31, default=10001),
    "strict": Bool("Refuse a model the target cannot render in full (see the fidelity report).",
                   default=False),
    "refuse_placeholders": Bool("Refuse placeholder and weak secrets (default: true in prod)."),
    "tenant": label("The tenant the whole stack belongs to."),
    "services": ObjList(SERVICE, doc="The application's services."),
    "postgres": POSTGRES,
    "redis": REDIS,
    "proxy": PROXY,
    "monitoring": observability.MONITORING,
    "logging": observability.LOGGING,
    "secrets": Map(Scalar(), doc="Secret values by name (set them from the vault).",
                   key=Str(pattern=names.SECRET_NAME,
                           desc="lowercase letters, digits, - and _")),
})
