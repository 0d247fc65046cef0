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
    Any, Bool, Data, Either, Enum, Int, Map, Num, Obj, ObjList, Quantity, Scalar, Str, StrList)

TARGETS = ("compose", "swarm", "kubernetes")
PERSISTENCE = ("aof", "rdb", "none")
PROBES = ("auto", "curl", "wget", "python", "none")
DATASTORES = ("postgres", "redis")
RATE = re.compile(r"^([1-9][0-9]*)r/([sm])$")
RATE_DESC = 'requests per second or minute, e.g. "10r/s" or "600r/m"'
ROUTE_PATH = re.compile(r"^/([A-Za-z0-9._~-]+/)*([A-Za-z0-9._~-]+)?$")
ROUTE_PATH_DESC = ('a URL path prefix starting with "/", e.g. /api/ (also /api/...) or /api/v1/auth '
                   '(also /api/v1/auth/..., not /api/v1/authors)')
# Kubernetes' IANA_SVC_NAME: at most 15 characters, lowercase letters, digits and '-', a letter
PORT_NAME = re.compile(r"^(?=.{1,15}$)(?=.*[a-z])[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
PUBLISH = re.compile(r"^(([0-9]{1,3}\.){3}[0-9]{1,3}:)?[0-9]{1,5}$")
HTTP_PATH = re.compile(r"^/[A-Za-z0-9._~/?=&%-]*$")
HOST = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)+$")
SQL_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
ABS_PATH = re.compile(r"^/[A-Za-z0-9._/-]+$")
SESSION_AFFINITY_TIMEOUT = 3600
FILE_MODE = re.compile(r"^0?[0-7]{3}$")
STORAGE_CLASS = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
VOLUME_TYPES = ("volume", "bind", "tmpfs")
ACCESS_MODES = ("ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany")
USER = re.compile(r"^([0-9]+|[a-z_][a-z0-9_-]{0,31})(:([0-9]+|[a-z_][a-z0-9_-]{0,31}))?$")
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                       r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")

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

ROUTE_FIELDS = {
    "name": label("Names the route (the Ingress, the nginx rate-limit zone); default: the service's "
                  "name for its first route, <service>-<n> for the others."),
    "path": Str("URL path prefix routed to the service.", required=True, pattern=ROUTE_PATH,
                desc=ROUTE_PATH_DESC),
    "port": Str("The service port (by name) requests go to; default: the first port.",
                pattern=PORT_NAME, desc="the name of one of the service's ports"),
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
}
ROUTE = Obj(ROUTE_FIELDS, doc="How the proxy routes requests to the service.",
            example={"path": "/api/", "rate": "10r/s", "burst": 20})
PORT = Obj({
    "name": Str("The port's name (Kubernetes port name).", required=True, pattern=PORT_NAME,
                desc="at most 15 lowercase letters, digits and '-', with a letter"),
    "port": Int("The port the service listens on.", low=1, high=65535, required=True),
    "protocol": Str("tcp or udp.", choices=("tcp", "udp"), default="tcp"),
    "publish": Str("Publish on the host: a port, or address:port (default address 127.0.0.1). "
                   "Compose and Swarm (host mode) only; refused where stack_allow_host_ports is "
                   "false (the default in prod).", pattern=PUBLISH,
                   desc='a host port such as 18000, or "0.0.0.0:8000"'),
}, doc="A port the service listens on.", example={"name": "admin", "port": 8080, "publish": 18080})

PROBE_FIELDS = {
    "path": Str("HTTP GET this path (the default kind).", pattern=HTTP_PATH,
                desc="an HTTP path starting with /"),
    "tcp": Bool("Only open a TCP connection to the port.", default=False),
    "exec": StrList("Run this command in the container (exit 0: healthy)."),
    "port": Str("The port (by name); default health.port.", pattern=PORT_NAME,
                desc="the name of one of the service's ports"),
    "initial_delay": duration("Seconds before the first probe (default: health.start_period "
                              "as a startup allowance).", None),
    "period": Int("Seconds between probes (default health.interval).", low=1, high=3600),
    "timeout": Int("Seconds a probe may take (default health.timeout).", low=1, high=3600),
    "failures": Int("Failed probes in a row before it counts (default health.retries).",
                    low=1, high=100),
}

HEALTH = Obj({
    "port": Str("The port (by name) the probes call; default: the first port.", pattern=PORT_NAME,
                desc="the name of one of the service's ports"),
    "live": Obj(PROBE_FIELDS, doc="Liveness: a failing replica is restarted (default: the ready "
                                  "probe). A path (HTTP), tcp: true or exec: [command], with its "
                                  "own timings.", shorthand="path", optional=True,
                example={"path": "/health", "initial_delay": 30, "period": 10}),
    "ready": Obj(PROBE_FIELDS, doc="Readiness: a failing replica gets no traffic (default: the "
                                   "live probe; the Compose and Swarm health check uses it).",
                 shorthand="path", optional=True),
    "probe": Str("The HTTP client the container's health check uses (Compose, Swarm).",
                 choices=PROBES, default="auto"),
    "interval": duration("Seconds between probes.", 5),
    "timeout": duration("Seconds a probe may take.", 3),
    "retries": Int("Failed probes before the replica counts as unhealthy.", low=1, high=100, default=5),
    "start_period": duration("Seconds after start during which failures do not count.", 10),
}, doc="Health probes on the service's port.", optional=True,
    example={"live": {"path": "/health", "initial_delay": 30, "period": 10},
             "ready": {"path": "/health/ready", "initial_delay": 10, "period": 5}})

UPDATE = Obj({
    "max_surge": Str("Extra replicas during a rolling update: a count or a percentage "
                     "(Kubernetes; default 1, 0 with order stop-first).", pattern=re.compile(r"^[0-9]+%?$"),
                     desc='a count such as 1 or a percentage such as "25%"'),
    "max_unavailable": Str("Replicas that may be down during a rolling update: a count or a "
                           "percentage (Kubernetes; default 0, 1 with order stop-first).",
                           pattern=re.compile(r"^[0-9]+%?$"),
                           desc='a count such as 0 or a percentage such as "25%"'),
    "order": Str("start-first (the new replica starts before the old stops) or stop-first.",
                 choices=("start-first", "stop-first"), default="start-first"),
    "parallelism": Int("Replicas updated at once (Swarm, and Compose's upgrade.yml).", low=1,
                       high=100, default=1),
    "delay": Int("Seconds between two batches (Swarm).", low=0, high=3600, default=5),
    "stop_grace_period": Int("Seconds a replica gets between SIGTERM and SIGKILL.", low=1,
                             high=3600),
}, doc="How a new version replaces the old.", optional=True,
    example={"max_surge": "25%", "max_unavailable": 0, "stop_grace_period": 30})

PLACEMENT = Obj({
    "node_labels": Map(Str(), doc="Run only on nodes with these labels (Swarm node labels, "
                                  "Kubernetes nodeSelector)."),
    "constraints": StrList("More Swarm placement constraints, e.g. node.role == worker."),
    "spread": Bool("Spread the replicas over the nodes.", default=True),
    "max_per_node": Int("Most replicas of the service on one node.", low=1, high=1000),
}, doc="Where the replicas run (Swarm and Kubernetes; one host on Compose).", optional=True,
    example={"node_labels": {"tier": "app"}, "max_per_node": 1})

SCALING_RULES = Obj({
    "percent": Int("Change by this percent of the current replicas per period.", low=1, high=1000),
    "pods": Int("Change by this many pods per period.", low=1, high=1000),
    "period": Int("Seconds each policy counts over.", low=1, high=1800, default=60),
    "select": Str("max: the policy that changes most; min: the one that changes least; disabled: "
                  "never in this direction.", choices=("max", "min", "disabled"), default="max"),
    "stabilization": Int("Seconds of recommendations considered before changing (default: "
                         "Kubernetes' own, 0 up and 300 down).", low=0, high=3600),
}, doc="One direction of the scaling behaviour.", optional=True,
    example={"percent": 50, "pods": 2, "period": 60, "select": "max"})

HPA_METRIC = Obj({
    "name": Str("The metric's name (as the metrics adapter serves it).", required=True,
                pattern=re.compile(r"^[A-Za-z_:][A-Za-z0-9_:.-]*$"), desc="a metric name"),
    "type": Str("pods: averaged over the pods; external: from outside the cluster (a queue's "
                "length, a consumer lag); object: of one object (object_kind/object_name).",
                choices=("pods", "external", "object"), default="pods"),
    "target": Str("Target value (pods: average per pod; external/object: the value, or the "
                  "average per pod with average: true).", required=True,
                  pattern=re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|Ki|Mi|Gi)?$"),
                  desc='a quantity such as "100", "1.5" or "500m"'),
    "average": Bool("external/object: compare the value per pod (AverageValue).", default=False),
    "selector": Map(Str(), doc="Labels selecting the series."),
    "object_kind": Str("object: the object's kind (e.g. Ingress).", pattern=re.compile(r"^[A-Z][A-Za-z]+$"),
                       desc="a kind such as Ingress"),
    "object_name": label("object: the object's name."),
}, doc="A custom or external metric the autoscaler follows.",
    example={"name": "kafka_consumergroup_lag", "type": "external", "target": "100",
             "selector": {"topic": "checkin"}})

CAPACITY = Obj({
    "peak_rate": Num("The total rate to serve at peak.", low=0, high=10 ** 9, required=True),
    "per_pod_rate": Num("The rate one replica sustains.", low=0, high=10 ** 9, required=True),
    "headroom_percent": Num("Extra capacity above the peak, percent.", low=0, high=1000, default=0),
    "baseline_rate": Num("The rate always present (sets min).", low=0, high=10 ** 9),
    "min_baseline": Int("Fewest replicas whatever the baseline.", low=1, high=10000),
    "unit": Str("The rate's unit, for messages.", default="req/s"),
}, doc="Capacity figures: max (and min) replicas are derived from them when not given "
       "(max = ceil(peak x (1 + headroom) / per_pod)).", optional=True,
    example={"peak_rate": 1000, "per_pod_rate": 50, "unit": "msg/s"})

AUTOSCALING = Obj({
    "min": Int("Fewest replicas (the count run on Compose and Swarm; default 1, or derived from "
               "capacity).", low=1, high=10000),
    "max": Int("Most replicas (required unless capacity derives it).", low=1, high=10000),
    "cpu": Int("Target average CPU utilisation, percent of requests.cpu.", low=1, high=100),
    "memory": Int("Target average memory utilisation, percent of requests.memory.", low=1, high=100),
    "metrics": ObjList(HPA_METRIC, doc="Custom and external metrics (Kubernetes needs a metrics "
                                       "adapter that serves them)."),
    "behavior": Obj({"scale_up": SCALING_RULES, "scale_down": SCALING_RULES},
                    doc="How fast to scale (default: Kubernetes' own behaviour).",
                    example={"scale_up": {"percent": 50, "pods": 2, "period": 60, "select": "max"},
                             "scale_down": {"percent": 10, "pods": 1, "period": 60, "select": "min",
                                            "stabilization": 300}}),
    "capacity": CAPACITY,
}, doc="Horizontal autoscaling (a HorizontalPodAutoscaler on Kubernetes; on Compose and Swarm "
       "min replicas run).", optional=True, example={"min": 2, "max": 20, "cpu": 70})

ENV_VALUE = Either(
    Scalar(),
    Obj({"secret": secret_ref("The secret whose value the variable takes.", required=True)}),
    doc="A value, or {secret: <name>}: the value of a secret of stack_secrets.")

VOLUME = Obj({
    "name": label("The volume's name within the service.", required=True),
    "path": Str("Where it is mounted in the container.", required=True, pattern=ABS_PATH,
                desc="an absolute path"),
    "type": Str("volume (persistent, the default), bind (a host directory, default when source "
                "is given) or tmpfs (memory).", choices=VOLUME_TYPES),
    "source": Str("bind: the host directory, relative to the inventory directory or absolute "
                  "(dev, where the controller is the Docker host)."),
    "size": size("Size (a Kubernetes claim; tmpfs: its limit)."),
    "class": Str("Kubernetes storage class.", pattern=STORAGE_CLASS,
                 desc="a storage class name such as ssd"),
    "access": Str("Kubernetes access mode: ReadWriteOnce gives each replica a volume of its own "
                  "(a StatefulSet), ReadWriteMany one volume shared by all.", choices=ACCESS_MODES,
                  default="ReadWriteOnce"),
    "read_only": Bool("Mount read-only.", default=False),
}, doc="A volume mounted into the service.",
    example={"name": "uploads", "path": "/data", "size": "10Gi", "class": "ssd"})

FILE = Obj({
    "path": Str("Where the file appears in the container.", required=True, pattern=ABS_PATH,
                desc="an absolute path"),
    "content": Str("The file's text."),
    "data": Data("A mapping or list written as YAML (or JSON, see format)."),
    "source": Str("A file to copy, relative to the inventory directory (read on the controller)."),
    "template": Bool("Template the source with the inventory's variables first (done by the "
                     "opsdeck.stack.stack_model action).", default=False),
    "format": Str("How data is written (default: json for a .json path, else yaml).",
                  choices=("yaml", "json")),
    "mode": Str("File mode.", pattern=FILE_MODE, desc='an octal mode such as "0444"', default="0444"),
}, doc="A configuration file mounted into the service (exactly one of content, data, source).",
    example={"path": "/etc/app/config.yaml", "data": {"cluster": {"enabled": True}}})

SERVICE = Obj({
    "name": label("The service's name (its DNS name inside the stack).", max_len=40, required=True),
    "image": image("The image to run.", required=True),
    "build": Str("A built-in recipe to build the image from when it cannot be pulled.",
                 choices=sorted(set(BUILD_RECIPES.values()))),
    "port": Int("The port the service listens on (shorthand for ports: [{name: http, port: ...}]).",
                low=1, high=65535),
    "ports": ObjList(PORT, doc="The ports the service listens on (the first is its main port).",
                     example=[{"name": "http", "port": 8000}, {"name": "admin", "port": 8080}]),
    "replicas": Int("How many replicas run.", low=0, high=1000, default=1),
    "command": StrList("The command's arguments (Kubernetes args)."),
    "entrypoint": StrList("Replaces the image's entrypoint (Kubernetes command)."),
    "env": Map(ENV_VALUE, doc="Environment variables.",
               key=Str(pattern=names.ENV_NAME, desc="a variable name"),
               example={"LOG_FORMAT": "json", "DATABASE_URL": {"secret": "db_url"}}),
    "volumes": ObjList(VOLUME, doc="Volumes: persistent, host directories (dev) or memory."),
    "files": ObjList(FILE, key="path", doc="Configuration files, rolled out with the service "
                                           "(a change restarts exactly the services using it)."),
    "secrets": StrList("Secrets mounted as files in /run/secrets/<name>.",
                       item=secret_ref()),
    "health": HEALTH,
    "resources": RESOURCES,
    "autoscaling": AUTOSCALING,
    "route": Obj(ROUTE_FIELDS, doc="Shorthand for routes: [<route>].", optional=True),
    "routes": ObjList(ROUTE, doc="How the proxy routes requests to the service, one item per path.",
                      example=[{"path": "/api/"}, {"path": "/admin/", "port": "admin", "basic_auth": True}]),
    "uses": StrList("Data stores the service connects to (wires their settings and secrets).",
                    item=Str(choices=DATASTORES)),
    "depends_on": StrList("Services that must be up (healthy) first.",
                          item=Str(pattern=names.DNS1123_LABEL, desc=names.DNS1123_DESC)),
    "user": Str("The user the container runs as: uid[:gid] or a name of the image (Kubernetes "
                "needs numbers).", pattern=USER, desc='"uid", "uid:gid" or a user name such as app'),
    "read_only": Bool("A read-only root file system.", default=True),
    "session_affinity": Either(
        Enum(values=(True, False, "ClientIP", "None"),
             desc='true, false, "ClientIP", "None" or {timeout: 1..86400}'),
        Obj({"timeout": Int("Seconds a client sticks to a replica.", low=1, high=86400,
                            default=SESSION_AFFINITY_TIMEOUT)}),
        doc='Keep a client on one replica: true or "ClientIP" (%d s), or {timeout: seconds}.'
            % SESSION_AFFINITY_TIMEOUT),
    "tenant": label("The tenant this service belongs to (network isolation on Kubernetes)."),
    "labels": Map(Str(pattern=LABEL_VALUE, desc="a label value (at most 63 letters, digits, -_.)"),
                  doc="Labels of the service's containers, tasks or pods.",
                  key=Str(pattern=LABEL_KEY, desc="a label key such as team or example.com/team")),
    "annotations": Map(Str(), doc="Annotations of the service's pods (Kubernetes) and containers "
                                  "(Compose).", key=Str(pattern=LABEL_KEY, desc="an annotation key")),
    "update": UPDATE,
    "placement": PLACEMENT,
    "service_account": label("Kubernetes: run as this service account of stack_kubernetes."
                             "service_accounts (its API token mounted when it has token: true)."),
    "metrics": observability.SERVICE_METRICS,
}, doc="An application service.")

TLS = Obj({
    "enabled": Bool("Terminate TLS at the proxy.", default=False),
    "port": Int("The TLS port published.", low=1, high=65535, default=8443),
    "cert_secret": secret_ref("The secret holding the PEM certificate chain.", default="tls_cert"),
    "key_secret": secret_ref("The secret holding the PEM private key.", default="tls_key"),
    "redirect_http": Bool("Redirect plain HTTP to HTTPS.", default=True),
    "protocols": StrList("TLS versions the proxy accepts (e.g. TLSv1.3 only).",
                         default=["TLSv1.2", "TLSv1.3"], item=Str(choices=("TLSv1.2", "TLSv1.3"))),
})

PROXY = Obj({
    "enabled": Bool("Run the rate-limiting nginx proxy (the Ingress on Kubernetes).", default=True),
    "image": image("The nginx image.", default=DEFAULT_IMAGES["proxy"]),
    "port": Int("The HTTP port published on the host.", low=1, high=65535, default=8080),
    "bind": Str("The host address the ports are published on.", default="0.0.0.0"),
    "replicas": Int("nginx replicas (Swarm: one per node; Compose runs one, the host port is one).",
                    low=1, high=100, default=1),
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

POLICY_RULE = Obj({
    "api_groups": StrList("API groups (\"\" is the core group).", default=[""]),
    "resources": StrList("Resources, e.g. pods, deployments, deployments/scale.", required=True),
    "verbs": StrList("Verbs.", required=True, item=Str(choices=(
        "get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "*"))),
    "resource_names": StrList("Only these objects."),
})

KUBERNETES = Obj({
    "namespace": label("The namespace (default: the stack's name)."),
    "pod_security": Str("The Pod Security Standard the namespace enforces.",
                        choices=("restricted", "baseline", "privileged"), default="restricted"),
    "roles": ObjList(Obj({
        "name": label("The Role's name.", required=True),
        "rules": ObjList(POLICY_RULE, doc="What it allows (items are numbered in messages)."),
    }), doc="Roles in the namespace.",
        example=[{"name": "reader", "rules": [
            {"api_groups": ["", "apps", "autoscaling"],
             "resources": ["deployments", "services", "pods", "horizontalpodautoscalers"],
             "verbs": ["get", "list", "watch"]}]}]),
    "service_accounts": ObjList(Obj({
        "name": label("The service account's name.", required=True),
        "token": Bool("Mount its API token into the pods that use it.", default=False),
        "roles": StrList("Roles of stack_kubernetes.roles bound to it.",
                         item=Str(pattern=names.DNS1123_LABEL, desc="a role name")),
    }), doc="Service accounts the services run as (stack_services[].service_account).",
        example=[{"name": "app", "token": True, "roles": ["reader"]}]),
    "network_policies": ObjList(Obj({
        "name": label("The NetworkPolicy's name.", required=True),
        "spec": Data("Its spec, as Kubernetes writes it (podSelector, policyTypes, ingress, egress).",
                     required=True),
    }), doc="NetworkPolicies beside the default deny and the flows the model implies."),
}, doc="Kubernetes-only settings of the stack.")

JSON_PATCH_OP = Obj({
    "op": Str("The operation.", required=True, choices=("add", "remove", "replace", "test")),
    "path": Str("Where (an RFC 6901 pointer such as /spec/template/spec/hostAliases).", required=True,
                pattern=re.compile(r"^(/[^/]*)+$"), desc="a JSON pointer such as /spec/replicas"),
    "value": Any("The value (add, replace, test), of any JSON type."),
})

OVERRIDES = Obj({
    "compose": Map(Data("Merged into the service as rendered (mappings merge, lists are replaced, "
                        "null removes a key)."),
                   doc="Compose: per service of the rendered project (app services and platform "
                       "components such as proxy, postgres, redis), a mapping merged into it.",
                   example={"api": {"extra_hosts": ["legacy.internal:10.0.0.5"]}}),
    "swarm": Map(Data("Merged into the service of the stack file."),
                 doc="Swarm: per service of the rendered stack file, a mapping merged into it.",
                 example={"api": {"deploy": {"labels": {"traefik.enable": "false"}}}}),
    "kubernetes": ObjList(Obj({
        "target": Str("The object: <Kind>/<name>.", required=True,
                      pattern=re.compile(r"^[A-Z][A-Za-z]+/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
                      desc="Kind/name such as Deployment/api"),
        "namespace": label("Its namespace, where two objects of a kind share a name."),
        "patch": Data("A strategic-merge-style patch: mappings merge, lists of named items merge "
                      "by name (containers, env, volumes), other lists are replaced, null removes."),
        "json_patch": ObjList(JSON_PATCH_OP, doc="RFC 6902 operations, applied in order."),
    }), key="target", doc="Kubernetes: patches of rendered objects, as kustomize applies them.",
        example=[{"target": "Deployment/api", "patch": {"spec": {"template": {"spec": {
            "hostAliases": [{"ip": "10.0.0.5", "hostnames": ["legacy.internal"]}]}}}}}]),
}, doc="Escape hatches: changes to what a target renders, applied after the renderer and "
       "listed by the fidelity report. The model does not check what they change.")

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
    "allow_host_ports": Bool("Allow services to publish ports on the host (ports[].publish); "
                             "default: true except in prod."),
    "refuse_placeholders": Bool("Refuse placeholder and weak secrets (default: true in prod)."),
    "tenant": label("The tenant the whole stack belongs to."),
    "services": ObjList(SERVICE, doc="The application's services."),
    "postgres": POSTGRES,
    "redis": REDIS,
    "proxy": PROXY,
    "kubernetes": KUBERNETES,
    "overrides": OVERRIDES,
    "monitoring": observability.MONITORING,
    "logging": observability.LOGGING,
    "secrets": Map(Scalar(), doc="Secret values by name (set them from the vault).",
                   key=Str(pattern=names.SECRET_NAME,
                           desc="lowercase letters, digits, - and _")),
})
