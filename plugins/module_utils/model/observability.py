# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``stack_monitoring`` and ``stack_logging`` sections of the stack model.

Declared here with the model's schema types (model/spec.py assembles the whole model);
``check`` holds their rules that span several fields. Both sections default to disabled,
and every default is neutral: no platform's own rules, receivers, dashboards, queues or
log fields are built in (examples/seed-observability.md shows how each seed sets its own).

- ``stack_monitoring.alerts``: the built-in alerts, each switchable, with its threshold,
  ``for``, severity and extra labels (kube-prometheus-stack's ``defaultRules`` idea);
- ``stack_monitoring.rules``: the user's own groups of recording and alerting rules
  (Prometheus' rule-file format), checked with ``promtool check rules`` on the controller
  before any host is touched (roles/preflight);
- ``stack_monitoring.alerting``: receivers (Slack, e-mail, PagerDuty, webhook) and routes by
  labels, plus the older ``slack``/``email``/``pagerduty`` shorthands (each a receiver routed
  by severity);
- ``stack_services[].metrics`` (``SERVICE_METRICS``): how each service is scraped;
- ``stack_monitoring.grafana.dashboards``: the user's dashboards, inline or from JSON files
  beside the inventory (read by the opsdeck.stack.stack_model action), beside the
  switchable built-in ones;
- ``stack_logging``: Elasticsearch's resources, data streams by service and level, the
  mapped log fields and time fields.
"""

from __future__ import annotations

import json
import re

from ansible_collections.opsdeck.stack.plugins.module_utils.common import names, quantity
from ansible_collections.opsdeck.stack.plugins.module_utils.model.schema import (
    BOOL_WORDS, Bool, Either, Int, Map, Num, Obj, ObjList, Quantity, Str, StrList, item_label, short)

DURATION = re.compile(r"^[1-9][0-9]*(ms|s|m|h|d|w|y)$")
DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
RETENTION_SIZE = re.compile(r"^[1-9][0-9]*(B|KB|MB|GB|TB|PB)$")
HEAP = re.compile(r"^[1-9][0-9]*[mg]$")
REDIS_KEY = re.compile(r"^[A-Za-z0-9:_.{}@#-]{1,200}$")
SLACK_CHANNEL = re.compile(r"^[#@][A-Za-z0-9._-]{1,80}$")
EMAIL = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$")
HOSTPORT = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?:[0-9]{1,5}$")
EVENT = re.compile(r"^[a-z][a-z0-9_.-]{0,80}$")
LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
LABEL_DESC = "a Prometheus label name (letters, digits and _, not starting with a digit)"
METRIC_NAME = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]{0,199}$")
ALERT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")
GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
RECEIVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SEVERITY = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
GROUP_BY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]{0,127}|\.\.\.)$")
URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s]*)?$")
# a URL held by a secret (it may carry user:password@ or a token)
URL_VALUE = re.compile(r"^https?://[^\s/]+(/\S*)?$")
HTTP_PATH = re.compile(r"^/[A-Za-z0-9._~/-]*$")
DASHBOARD_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
FOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
SEVERITIES = ("info", "warning", "critical")

# Platform images built from Debian packages (roles/images/files/<recipe>).
MONITORING_IMAGES = {
    "prometheus": "opsdeck/prometheus:2.42",
    "alertmanager": "opsdeck/alertmanager:0.25",
    "exporters": "opsdeck/exporters:bookworm",
}
# Nothing reachable here packages Grafana or the Elastic stack: these are pulled.
GRAFANA_IMAGE = "grafana/grafana-oss:10.4.2"
ELASTIC_VERSION = "8.13.4"
BUILD_RECIPES = {
    "opsdeck/prometheus": "prometheus",
    "opsdeck/alertmanager": "alertmanager",
    "opsdeck/exporters": "exporters",
}
# Names of the monitoring and logging containers: an app service may not take them.
COMPONENTS = ("prometheus", "alertmanager", "grafana", "redis-exporter", "postgres-exporter",
              "nginx-exporter", "node-exporter", "elasticsearch", "logstash", "kibana", "filebeat")

# The built-in alerts: key -> (alert name, rule group, threshold or None, for, severity, on,
# what it watches). A threshold is (description, default, low, high). Generic: they watch
# what every stack of this collection exports (up, the apps' http_requests_total and
# http_request_duration_seconds, the node, Redis and PostgreSQL exporters).
BUILTIN_ALERTS = (
    ("target_down", "TargetDown", "opsdeck.availability", None, "2m", "critical", True,
     "A scrape target does not answer (up == 0)."),
    ("error_ratio", "ErrorRate", "opsdeck.availability",
     ("Share of a job's requests answered 5xx over 5 minutes (0..1).", 0.05, 0, 1),
     "5m", "warning", True, "Too many 5xx answers, as a share of all requests of a job."),
    ("error_rate_per_second", "ErrorsPerSecond", "opsdeck.availability",
     ("5xx answers per second of a job over 5 minutes.", 1, 0, 1e6),
     "5m", "warning", False, "Too many 5xx answers per second of a job (off by default)."),
    ("latency_p95_seconds", "HighLatency", "opsdeck.availability",
     ("p95 latency of a job over 5 minutes, seconds.", 0.5, 0, 3600),
     "10m", "warning", True, "The 95th percentile latency of a job is high."),
    ("disk_free_percent", "DiskSpace", "opsdeck.resources",
     ("Free space of a file system, percent.", 10, 0, 100),
     "10m", "critical", True, "A file system of a node is almost full."),
    ("redis_memory_percent", "RedisMemory", "opsdeck.resources",
     ("Redis memory used, percent of maxmemory.", 90, 0, 100),
     "5m", "warning", True, "Redis is close to its maxmemory (with stack_redis)."),
    ("postgres_connections_percent", "PostgresConnections", "opsdeck.resources",
     ("Connections in use, percent of max_connections.", 80, 0, 100),
     "5m", "warning", True, "PostgreSQL is running out of connections (with stack_postgres)."),
    ("redis_down", "RedisDown", "opsdeck.resources", None, "2m", "critical", True,
     "Redis does not answer its exporter (with stack_redis)."),
    ("postgres_down", "PostgresDown", "opsdeck.resources", None, "2m", "critical", True,
     "PostgreSQL does not answer its exporter (with stack_postgres)."),
)
# Keys that were once built in and are a platform's own choice now: where they went.
REMOVED_ALERTS = {
    "quota_usage_percent": "the QuotaLimitApproaching alert on tenant quota metrics is no longer "
                           "built in: declare it in stack_monitoring.rules (examples/seed-observability.md)",
    "pod_health_ratio": "the TenantInstanceUnhealthy alert on tenant pod metrics is no longer built "
                        "in: declare it in stack_monitoring.rules (examples/seed-observability.md)",
}
# Receivers the model names itself: the shorthands, and the one that drops what no route takes.
SHORTHAND_RECEIVERS = ("slack", "email", "pagerduty")
DISCARD_RECEIVER = "discard"
BUILTIN_DASHBOARDS = ("system", "application")
# The default folder of every dashboard (Grafana folders are the files' directories).
DASHBOARD_FOLDER = "opsdeck"
# A ConfigMap holds at most 1 MiB: the dashboards' share on Kubernetes.
K8S_DASHBOARDS_MAX = 1000000
# Fields the platform itself maps in every log index; stack_logging.fields adds to them.
BASE_LOG_FIELDS = ("@timestamp", "level", "message", "event", "service", "stack", "environment",
                   "data_stream")
MAPPING_TYPES = ("keyword", "text", "match_only_text", "wildcard", "long", "integer", "short",
                 "byte", "double", "float", "half_float", "scaled_float", "unsigned_long",
                 "boolean", "date", "ip", "flattened", "object")
INDEX_BY = ("service", "level")
TIME_FIELDS = ["timestamp", "ts", "time"]

# PEM transport certificates of a multi-node Elasticsearch: secret name -> file name in
# Elasticsearch's config/certs directory (made by playbooks/elk_certs.yml).
TRANSPORT_SECRETS = {
    "elastic_transport_ca_crt": "ca.crt",
    "elastic_transport_crt": "transport.crt",
    "elastic_transport_key": "transport.key",
}
AUDIT_EVENTS = ("tenant_config_updated", "drain_started", "drain_stopped",
                "tenant_migrated", "login", "permission_changed")
# Elasticsearch's CPU when the model does not size it; memory is twice the heap.
ES_CPU = ("500m", "2")


def seconds(duration):
    """Seconds of a model duration ("30s", "5m", "250ms")."""
    match = re.match(r"^([0-9]+)([a-z]+)$", duration)
    return int(match.group(1)) * DURATION_SECONDS[match.group(2)]


def heap_bytes(heap):
    """Bytes of a JVM heap size ("512m", "2g")."""
    return int(heap[:-1]) * (2 ** 20 if heap[-1] == "m" else 2 ** 30)


def _image(doc, default):
    return Str(doc, pattern=names.IMAGE_REF, default=default,
               desc="an image reference such as opsdeck/prometheus:2.42")


def _duration(doc, default=None, **kw):
    return Str(doc, pattern=DURATION, default=default, desc=kw.pop("desc", "a duration such as 30s or 5m"),
               **kw)


def _severities(default):
    return StrList("Alert severities sent to this receiver.", default=list(default),
                   item=Str(choices=SEVERITIES))


def _secret(doc, default=None, **kw):
    return Str(doc, pattern=names.SECRET_NAME, desc=names.SECRET_DESC, default=default, **kw)


def _labels(doc, desc=LABEL_DESC):
    return Map(Str(required=True), doc=doc, key=Str(pattern=LABEL_NAME, desc=desc))


class Items(ObjList):
    """A list of mappings named in paths by the first of ``keys`` an item has (else its
    position); unlike ObjList, names may repeat (two alerts of one name, two routes to one
    receiver are both fine)."""

    def __init__(self, item, doc="", keys=("name",), **kw):
        super().__init__(item, doc, key=keys[0], **kw)
        self.keys = tuple(keys)

    def label(self, raw, index):
        for key in self.keys:
            label = item_label(raw, key, index)
            if label != index:
                return label
        return index

    def read(self, value, path, ctx):
        if not isinstance(value, list):
            ctx.err(path, "must be a list of mappings (got %s)" % short(value))
            return []
        return [self.item.load(raw, "%s[%s]" % (path, self.label(raw, index)), ctx)
                for index, raw in enumerate(value)]

    def allowed(self):
        return "a list of mappings"


class Switch(Obj):
    """A mapping with ``enabled``, also given as true/false (on or off), or (a built-in alert)
    as its threshold alone."""

    def read(self, value, path, ctx):
        if isinstance(value, bool) or (isinstance(value, str) and value.lower() in BOOL_WORDS):
            value = {"enabled": value}
        elif "threshold" in self.fields and isinstance(value, (int, float, str)):
            # a threshold alone asks for the alert: it switches an opt-in one on
            value = {"threshold": value, "enabled": True}
        return super().read(value, path, ctx)

    def allowed(self):
        return "a mapping, true/false" + (", or the threshold" if "threshold" in self.fields else "")

    def json_schema(self, prefix=""):
        out = super().json_schema(prefix)
        doc = {key: out.pop(key) for key in ("description", "default", "examples") if key in out}
        scalars = [{"type": "boolean"}]
        if "threshold" in self.fields:
            scalars.append(self.fields["threshold"].json_schema()["anyOf"][0])
        out = {"anyOf": [out] + scalars}
        out.update(doc)
        return out


class Alerts(Obj):
    """The built-in alerts; names of alerts that left the built-ins get a message saying where."""

    def read(self, value, path, ctx):
        if isinstance(value, dict):
            for key in sorted(set(value) & set(REMOVED_ALERTS)):
                ctx.err("%s.%s" % (path, key), REMOVED_ALERTS[key])
            value = {k: v for k, v in value.items() if k not in REMOVED_ALERTS}
        return super().read(value, path, ctx)


class JsonDoc(Str):
    """A JSON object given as a mapping or as its text (loaded as a mapping)."""

    type_name = "JSON object"

    def read(self, value, path, ctx):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                ctx.err(path, "is not valid JSON: %s" % exc)
                return None
        if not isinstance(value, dict):
            ctx.err(path, "must be a JSON object, as a mapping or its text (got %s)" % short(value))
            return None
        return value

    def allowed(self):
        return "a JSON object (a mapping, or its text)"

    def json_schema(self):
        return self.documented({"type": ["object", "string"]})


def _builtin_alert(_key, alert, _group, threshold, duration, severity, enabled, doc):
    fields = {"enabled": Bool("Render the %s alert." % alert, default=enabled)}
    if threshold:
        text, default, low, high = threshold
        fields["threshold"] = Num(text, low=low, high=high, default=default)
    fields.update({
        "for": _duration("How long the condition must hold before %s fires." % alert, duration),
        "severity": Str("The severity label (routes use it).", default=severity, pattern=SEVERITY,
                        desc="a lowercase word such as warning or critical"),
        "labels": _labels("Extra labels of the alert (e.g. team: platform, for routing)."),
    })
    return Switch(fields, doc="%s: %s" % (alert, doc))


ALERTS = Alerts({spec[0]: _builtin_alert(*spec) for spec in BUILTIN_ALERTS},
                doc="The built-in alerts, each switchable: true/false, its threshold alone (which "
                    "also switches it on), or a mapping with enabled, threshold, for, severity, labels.",
                example={"error_ratio": 0.02, "latency_p95_seconds": {"threshold": 1, "for": "15m"},
                         "disk_free_percent": False})

RULE = Obj({
    "alert": Str("The alert's name: an alerting rule.", pattern=ALERT_NAME,
                 desc="an alert name such as OrdersStalled (letters, digits and _)"),
    "record": Str("The name of the series it records: a recording rule.", pattern=METRIC_NAME,
                  desc="a metric name such as job:orders:rate5m"),
    "expr": Str("The PromQL expression (promtool checks it on the controller).", required=True),
    "for": _duration("How long the expression must hold before the alert fires (alerts only)."),
    "labels": _labels("Labels added to the alert or the recorded series (severity: routes use it)."),
    "annotations": _labels("Annotations of the alert (summary, description, runbook_url...); Go "
                           "templates such as {{ $labels.job }} and {{ $value }}.",
                           desc="an annotation name (letters, digits and _)"),
}, doc="A recording rule (record) or an alerting rule (alert), in Prometheus' rule-file format.")

RULE_GROUP = Obj({
    "name": Str("The group's name (unique; opsdeck.* are the built-in groups').", required=True,
                pattern=GROUP_NAME, desc="letters, digits and _.:- such as shop-business"),
    "interval": _duration("How often the group is evaluated (default: evaluation_interval)."),
    "rules": Items(RULE, keys=("alert", "record"), required=True,
                   doc="The group's rules, evaluated in order (named by alert or record)."),
}, doc="A group of recording and alerting rules.")

SLACK_FIELDS = {
    "channel": Str("Channel.", required=True, pattern=SLACK_CHANNEL,
                   desc="a channel such as #alerts"),
    "webhook_secret": _secret("The secret holding the incoming-webhook URL.",
                              default="slack_webhook_url"),
}
EMAIL_FIELDS = {
    "to": Str("Recipient.", required=True, pattern=EMAIL,
              desc="an e-mail address such as alerts@example.com"),
    "from": Str("Sender.", required=True, pattern=EMAIL, desc="an e-mail address"),
    "smarthost": Str("SMTP server.", required=True, pattern=HOSTPORT,
                     desc="host:port such as smtp.example.com:587"),
    "auth_username": Str("SMTP user."),
    "auth_password_secret": _secret("The secret holding the SMTP password."),
    "require_tls": Bool("Require STARTTLS.", default=True),
}
PAGERDUTY_FIELDS = {
    "routing_key_secret": _secret("The secret holding the Events API v2 routing key.",
                                  default="pagerduty_routing_key"),
}


def _with_severities(fields, default):
    out = dict(fields)
    out["severities"] = _severities(default)
    return out


RECEIVER = Obj({
    "name": Str("The receiver's name (routes name it).", required=True, pattern=RECEIVER_NAME,
                desc="letters, digits and _.- such as incidents"),
    "slack": Obj(SLACK_FIELDS, doc="Post to a Slack channel.", optional=True),
    "email": Obj(EMAIL_FIELDS, doc="Send an e-mail.", optional=True),
    "pagerduty": Obj(PAGERDUTY_FIELDS, doc="Open a PagerDuty incident (Events API v2).", optional=True),
    "webhook": Obj({
        "url": Str("The URL Alertmanager POSTs its JSON to.", pattern=URL, desc="an http(s) URL"),
        "url_secret": _secret("The secret holding the URL instead (when it carries a token)."),
        "max_alerts": Int("Most alerts per message (0: all).", low=0, high=10000, default=0),
    }, doc="POST Alertmanager's webhook JSON to a URL.", optional=True),
    "send_resolved": Bool("Also notify when the alert is resolved.", default=True),
}, doc="Where notifications go: any of slack, email, pagerduty, webhook (none: dropped).")

ROUTE = Obj({
    "receiver": Str("The receiver of the alerts this route takes.", required=True,
                    pattern=RECEIVER_NAME, desc="a receiver's name"),
    "match": _labels("Labels the alert must carry with exactly these values "
                     "(severity: critical, team: shop)."),
    "match_re": _labels("Labels whose value must match these regular expressions (anchored)."),
    "continue": Bool("Go on matching the routes after this one.", default=False),
    "group_by": StrList("Labels alerts are grouped by (default: alerting.group_by).",
                        item=Str(pattern=GROUP_BY, desc="a label name, or ...")),
    "group_wait": _duration("group_wait of this route (default: alerting.group_wait)."),
    "group_interval": _duration("group_interval of this route (default: alerting.group_interval)."),
    "repeat_interval": _duration("repeat_interval of this route (default: alerting.repeat_interval)."),
}, doc="A route: alerts whose labels match go to its receiver (the first match wins, unless "
       "continue).")

ALERTING = Obj({
    "receivers": ObjList(RECEIVER, doc="Receivers by name.",
                         example=[{"name": "incidents", "slack": {"channel": "#incidents"}},
                                  {"name": "ops", "email": {"to": "ops@example.com",
                                                            "from": "am@example.com",
                                                            "smarthost": "smtp.example.com:587"}}]),
    "routes": Items(ROUTE, keys=("receiver",), doc="Routes by labels, tried in order (after the "
                    "shorthands' own routes).",
                    example=[{"receiver": "incidents", "match": {"severity": "critical"}}]),
    "default_receiver": Str("The receiver of alerts no route takes (default: none, they are "
                            "dropped).", pattern=RECEIVER_NAME, desc="a receiver's name"),
    "slack": Obj(_with_severities(SLACK_FIELDS, ["warning", "critical"]),
                 doc="Shorthand: a receiver named slack, routed the listed severities.", optional=True),
    "email": Obj(_with_severities(EMAIL_FIELDS, ["warning", "critical"]),
                 doc="Shorthand: a receiver named email, routed the listed severities.", optional=True),
    "pagerduty": Obj(_with_severities(PAGERDUTY_FIELDS, ["critical"]),
                     doc="Shorthand: a receiver named pagerduty, routed the listed severities.",
                     optional=True),
    "group_by": StrList("Labels alerts are grouped by into one notification.",
                        default=["alertname", "job"],
                        item=Str(pattern=GROUP_BY, desc="a label name, or ...")),
    "group_wait": _duration("Alertmanager group_wait.", "30s"),
    "group_interval": _duration("Alertmanager group_interval.", "5m"),
    "repeat_interval": _duration("Alertmanager repeat_interval.", "4h"),
}, doc="Where alerts go: Alertmanager's receivers and routes.")

DASHBOARD = Obj({
    "name": Str("The dashboard's file name (without .json); its uid when the JSON has none.",
                required=True, pattern=DASHBOARD_NAME, desc="lowercase letters, digits and ._-"),
    "file": Str("A dashboard JSON file, relative to the inventory directory (or absolute); "
                "read on the controller by the opsdeck.stack.stack_model action.",
                pattern=re.compile(r"^[^\x00]+\.json$"), desc="a path ending in .json"),
    "json": JsonDoc("The dashboard's JSON inline, instead of file."),
    "folder": Str("The Grafana folder it is shown in.", default=DASHBOARD_FOLDER, pattern=FOLDER,
                  desc="letters, digits and ._- (no spaces)"),
}, doc="A Grafana dashboard (as exported: an exported dashboard's ${DS_...} datasource "
       "inputs are bound to the stack's Prometheus).")

RESOURCE_AMOUNTS = {
    "cpu": Quantity("CPU, e.g. 500m or 2.", parse=quantity.cpu_millis, desc=quantity.CPU_DESC,
                    pattern=quantity.CPU),
    "memory": Quantity("Memory, e.g. 2Gi.", parse=quantity.to_bytes, desc=quantity.BYTES_DESC,
                       pattern=quantity.BYTES),
}

SERVICE_METRICS = Switch({
    "enabled": Bool("Scrape the service (with stack_monitoring.enabled and a port).", default=True),
    "port": Int("The port of its metrics (default: the service's port).", low=1, high=65535),
    "path": Str("The HTTP path of its metrics.", default="/metrics", pattern=HTTP_PATH,
                desc="an HTTP path such as /metrics"),
    "interval": _duration("How often it is scraped (default: stack_monitoring.scrape_interval)."),
    "timeout": _duration("How long a scrape may take (at most the interval; default: Prometheus' "
                         "10s, capped at the interval)."),
}, doc="How Prometheus scrapes the service (false: not at all).",
    example={"port": 9100, "path": "/prometheus", "interval": "10s"})

MONITORING = Obj({
    "enabled": Bool("Run Prometheus, Alertmanager, the exporters and Grafana.", default=False),
    "retention_time": _duration("How long Prometheus keeps samples.", "15d",
                                desc="a Prometheus duration such as 15d or 12h"),
    "retention_size": Str("Most disk Prometheus uses.", pattern=RETENTION_SIZE,
                          desc="a size such as 10GB or 512MB"),
    "scrape_interval": _duration("Scrape interval.", "15s", desc="a duration such as 15s"),
    "evaluation_interval": _duration("Rule evaluation interval.", "15s", desc="a duration such as 15s"),
    "port": Int("Prometheus' port published on 127.0.0.1 of a Docker host (0: not published).",
                low=0, high=65535, default=0),
    "images": Obj({key: _image("The %s image." % key, default) for key, default in
                   list(MONITORING_IMAGES.items()) + [("grafana", GRAFANA_IMAGE)]},
                  doc="Images of the monitoring components."),
    "redis_queues": ObjList(Obj({
        "key": Str("The Redis list.", required=True, pattern=REDIS_KEY,
                   desc="a Redis key made of letters, digits and :_.{}@#-"),
        "max_length": Int("Alert when the list is longer.", low=1, high=10 ** 9, default=1000),
        "for": _duration("... for this long.", "5m"),
        "severity": Str("The severity label of its QueueBacklog alert.", default="warning",
                        pattern=SEVERITY, desc="a lowercase word such as warning or critical"),
    }, shorthand="key"), key="key", doc="Redis lists whose length is measured and alerted on "
                                        "(QueueBacklog).",
        example=[{"key": "jobs:pending", "max_length": 500, "for": "10m"}]),
    "alerts": ALERTS,
    "rules": ObjList(RULE_GROUP, doc="Your own groups of recording and alerting rules.",
                     example=[{"name": "shop", "rules": [
                         {"record": "job:orders:rate5m", "expr": "sum by (job) (rate(orders_total[5m]))"},
                         {"alert": "OrdersStalled", "expr": "job:orders:rate5m == 0", "for": "15m",
                          "labels": {"severity": "warning"},
                          "annotations": {"summary": "No order for 15 minutes"}}]}]),
    "alerting": ALERTING,
    "grafana": Obj({
        "enabled": Bool("Run Grafana.", default=True),
        "admin_user": Str("Admin user.", default="admin", pattern=re.compile(r"^[A-Za-z0-9._@-]{1,64}$"),
                          desc="letters, digits and ._@-"),
        "admin_password_secret": _secret("The secret holding the admin password.",
                                         default="grafana_admin_password"),
        "port": Int("Grafana's port published on 127.0.0.1 of a Docker host (0: not published).",
                    low=0, high=65535, default=0),
        "builtin_dashboards": Obj({
            "system": Bool("System overview (nodes, Redis, PostgreSQL, Redis lists).", default=True),
            "application": Bool("Application performance (requests, 5xx, p95, proxy).", default=True),
        }, doc="The built-in dashboards, each switchable."),
        "dashboards": ObjList(DASHBOARD, doc="Your own dashboards, from files beside the inventory "
                                             "or inline.",
                              example=[{"name": "shop-business", "file": "dashboards/shop-business.json",
                                        "folder": "shop"}]),
    }, doc="Grafana."),
}, doc="Prometheus, Alertmanager, exporters and Grafana.")

LOG_FIELD = Either(
    Str(choices=MAPPING_TYPES),
    Obj({
        "type": Str("The Elasticsearch field type.", required=True, choices=MAPPING_TYPES),
        "scaling_factor": Int("scaled_float's scaling factor (e.g. 100 for cents).", low=1, high=10 ** 9),
        "ignore_above": Int("keyword: longer strings are kept but not indexed.", low=1, high=32766),
    }),
    doc="A field's type, or {type, scaling_factor, ignore_above}.")

LOGGING = Obj({
    "enabled": Bool("Run the ELK stack (Elasticsearch, Logstash, Kibana, Filebeat).", default=False),
    "version": Str("Elastic version.", default=ELASTIC_VERSION, pattern=re.compile(r"^8\.[0-9]+\.[0-9]+$"),
                   desc="an Elastic 8.x version such as 8.13.4"),
    "retention_days": Obj({
        "app": Int("Days application logs are kept.", low=1, high=3650, default=30),
        "audit": Int("Days audit logs are kept.", low=1, high=3650, default=90),
    }, doc="Index lifecycle: days before deletion."),
    "elasticsearch": Obj({
        "nodes": Int("Nodes (odd; default 3 in prod, else 1; 1 in prod is allowed with a warning).",
                     low=1, high=9),
        "heap": Str("JVM heap (default 2g in prod, else 512m).", pattern=HEAP,
                    desc='a JVM heap size such as "512m" or "4g"'),
        "storage": Str("Data volume per node (default 20Gi in prod, else 5Gi).",
                       pattern=re.compile(r"^[0-9]+(Mi|Gi|Ti)$"), desc='a volume size such as "20Gi"'),
        "resources": Obj({
            "requests": Obj(RESOURCE_AMOUNTS, doc="Reserved per node (default: cpu %s, memory twice "
                                                  "the heap)." % ES_CPU[0]),
            "limits": Obj(RESOURCE_AMOUNTS, doc="The most a node may use (default: cpu %s, memory "
                                                "twice the heap)." % ES_CPU[1]),
        }, doc="CPU and memory per node, on every target.",
            example={"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}),
    }, doc="Elasticsearch."),
    "index_by": StrList("Split application logs into one data stream per service and/or level "
                        "(logs-opsdeck.app.<service>.<level>-<environment>); audit logs keep theirs.",
                        item=Str(choices=INDEX_BY), example=["service", "level"]),
    "fields": Map(LOG_FIELD, doc="Log fields mapped with a type in every log index, beside the "
                                 "platform's (%s); others are mapped dynamically (strings as "
                                 "keywords)." % ", ".join(BASE_LOG_FIELDS),
                  key=Str(pattern=FIELD_NAME, desc="a field name such as tenant_id or http.status"),
                  example={"tenant_id": "keyword", "amount": {"type": "scaled_float", "scaling_factor": 100}}),
    "time_fields": StrList("Fields holding the event's time (ISO 8601), tried in order for "
                           "@timestamp.", default=list(TIME_FIELDS),
                           item=Str(pattern=FIELD_NAME, desc="a field name")),
    "audit_events": StrList("Log events that go to the audit index.",
                            item=Str(pattern=EVENT, desc="an event name such as tenant_migrated")),
    "elastic_password_secret": _secret("The elastic user's password.", default="elastic_password"),
    "kibana_password_secret": _secret("The kibana_system user's password.",
                                      default="kibana_system_password"),
    "logstash_password_secret": _secret("Logstash's writer user's password.",
                                        default="logstash_writer_password"),
    "kibana_port": Int("Kibana's port published on 127.0.0.1 of a Docker host (0: not published).",
                       low=0, high=65535, default=0),
}, doc="Centralised logs (ELK).")


def _check_rules(mon, ctx):
    """One of alert/record per rule, what only alerts take, and the groups' names."""
    for gindex, group in enumerate(mon["rules"]):
        gpath = "stack_monitoring.rules[%s]" % (gindex if group["name"] is None else group["name"])
        if group["name"] and group["name"].startswith("opsdeck."):
            ctx.err(gpath + ".name", "%s starts with opsdeck., the built-in groups' prefix "
                                     "(allowed: another name)" % short(group["name"]))
        if group["rules"] == [] and group["name"]:
            ctx.err(gpath + ".rules", "is empty (allowed: at least one rule)")
        for index, rule in enumerate(group["rules"]):
            rpath = "%s.rules[%s]" % (gpath, rule["alert"] or rule["record"] or index)
            if bool(rule["alert"]) == bool(rule["record"]):
                ctx.err(rpath, "needs exactly one of alert (an alerting rule) or record (a recording rule)")
            elif rule["record"]:
                for key in ("for", "annotations"):
                    if rule[key]:
                        ctx.err("%s.%s" % (rpath, key), "only alerting rules take %s (this one records "
                                                        "%s)" % (key, rule["record"]))


def _check_alerting(mon, ctx, need_secret):
    alerting = mon["alerting"]
    apath = "stack_monitoring.alerting"
    names = set()
    for index, receiver in enumerate(alerting["receivers"]):
        name = receiver["name"]
        rpath = "%s.receivers[%s]" % (apath, index if name is None else name)
        if name in SHORTHAND_RECEIVERS + (DISCARD_RECEIVER,):
            ctx.err(rpath + ".name", "%s is the name of a receiver the model makes itself (reserved: "
                                     "%s)" % (short(name), ", ".join(SHORTHAND_RECEIVERS + (DISCARD_RECEIVER,))))
        if name is not None:
            names.add(name)
        hook = receiver["webhook"]
        if hook is not None and bool(hook["url"]) == bool(hook["url_secret"]):
            ctx.err(rpath + ".webhook", "needs exactly one of url or url_secret")
        if mon["enabled"]:
            _receiver_secrets(receiver, rpath, need_secret)
    names.update(kind for kind in SHORTHAND_RECEIVERS if alerting[kind])
    if mon["enabled"]:
        _receiver_secrets(alerting, apath, need_secret)
    defined = ", ".join(sorted(names)) or "none"
    if alerting["default_receiver"] and alerting["default_receiver"] not in names:
        ctx.err(apath + ".default_receiver", "%s is not a receiver (defined: %s)" % (
            short(alerting["default_receiver"]), defined))
    for index, route in enumerate(alerting["routes"]):
        rpath = "%s.routes[%s]" % (apath, route["receiver"] or index)
        if route["receiver"] and route["receiver"] not in names:
            ctx.err(rpath + ".receiver", "%s is not a receiver (defined: %s)" % (short(route["receiver"]), defined))
        for label, regex in route["match_re"].items():
            try:
                re.compile(regex)
            except re.error as exc:
                ctx.err("%s.match_re.%s" % (rpath, label), "%s is not a regular expression: %s" % (short(regex), exc))


def _url_secrets(model, ctx):
    """Secrets that hold a URL Alertmanager posts to (Slack webhooks, webhook url_secret) must
    hold an http(s) URL (amtool would only say "unsupported scheme"); the value is not shown."""
    alerting = model["monitoring"]["alerting"]
    secrets = model.get("secrets") or {}
    wanted = []
    if alerting["slack"]:
        wanted.append((alerting["slack"]["webhook_secret"], "stack_monitoring.alerting.slack.webhook_secret",
                       "a Slack incoming-webhook URL"))
    for index, receiver in enumerate(alerting["receivers"]):
        rpath = "stack_monitoring.alerting.receivers[%s]" % (index if receiver["name"] is None else receiver["name"])
        if receiver["slack"]:
            wanted.append((receiver["slack"]["webhook_secret"], rpath + ".slack.webhook_secret",
                           "a Slack incoming-webhook URL"))
        if receiver["webhook"] and receiver["webhook"]["url_secret"]:
            wanted.append((receiver["webhook"]["url_secret"], rpath + ".webhook.url_secret", "the webhook's URL"))
    for name, path, what in wanted:
        value = secrets.get(name)
        if isinstance(value, str) and not URL_VALUE.match(value.strip()):
            ctx.err(path, "secret %s does not hold an http(s) URL (it must hold %s; its value is not "
                          "shown)" % (short(name), what))


def _receiver_secrets(section, path, need_secret):
    """The secrets a receiver (or the shorthands) sends with: they must be in stack_secrets."""
    if section["slack"]:
        need_secret(section["slack"]["webhook_secret"], path + ".slack.webhook_secret")
    if section["email"] and section["email"]["auth_password_secret"]:
        need_secret(section["email"]["auth_password_secret"], path + ".email.auth_password_secret")
    if section["pagerduty"]:
        need_secret(section["pagerduty"]["routing_key_secret"], path + ".pagerduty.routing_key_secret")
    hook = section.get("webhook")
    if hook and hook["url_secret"]:
        need_secret(hook["url_secret"], path + ".webhook.url_secret")


def _check_alerts(mon, ctx):
    for key, alert in mon["alerts"].items():
        if "severity" in alert["labels"]:
            ctx.err("stack_monitoring.alerts.%s.labels.severity" % key,
                    "is set by stack_monitoring.alerts.%s.severity (allowed: other labels)" % key)


def _check_metrics(model, ctx):
    """Per service: a scrape may not take longer than its interval."""
    global_interval = model["monitoring"]["scrape_interval"]
    for svc in model.get("services") or []:
        metrics = svc.get("metrics")
        if not metrics or not metrics["timeout"] or not svc.get("name"):
            continue
        interval = metrics["interval"] or global_interval
        if interval and seconds(metrics["timeout"]) > seconds(interval):
            ctx.err("stack_services[%s].metrics.timeout" % svc["name"],
                    "%s is longer than the scrape interval %s (allowed: at most the interval)" % (
                        metrics["timeout"], interval))


def _check_dashboards(model, ctx, files):
    """Load each dashboard (inline, or a file the stack_model action read) and check it."""
    grafana = model["monitoring"]["grafana"]
    seen_uids = {"opsdeck-%s" % name: "the built-in %s dashboard" % name for name in BUILTIN_DASHBOARDS}
    titles = {}
    total = 0
    for index, board in enumerate(grafana["dashboards"]):
        path = "stack_monitoring.grafana.dashboards[%s]" % (board["name"] or index)
        if any(e.startswith(path + ".json:") for e in ctx.errors):
            continue
        if bool(board["file"]) == bool(board["json"]):
            ctx.err(path, "needs exactly one of file (a JSON file beside the inventory) or json (inline)")
            continue
        if board["file"]:
            loaded = (files or {}).get(board["file"])
            if files is None:
                ctx.err(path + ".file", "dashboard files are read by the opsdeck.stack.stack_model action "
                                        "(on the controller, beside the inventory); here give json instead")
                continue
            if loaded is None or "error" in loaded:
                ctx.err(path + ".file", (loaded or {}).get("error") or "was not read")
                continue
            try:
                board["json"] = json.loads(loaded["content"])
            except ValueError as exc:
                ctx.err(path + ".file", "%s is not valid JSON: %s" % (loaded.get("path", board["file"]), exc))
                continue
            if not isinstance(board["json"], dict):
                ctx.err(path + ".file", "%s holds no JSON object (a dashboard)" % loaded.get("path", board["file"]))
                board["json"] = None
                continue
            where = path + ".file"
        else:
            where = path + ".json"
        doc = board["json"]
        title = doc.get("title")
        if not isinstance(title, str) or not title.strip():
            ctx.err(where, "has no title (a Grafana dashboard needs one)")
        if "panels" in doc and not isinstance(doc["panels"], list):
            ctx.err(where, "its panels must be a list")
        uid = doc.get("uid") or board["name"]
        if not isinstance(uid, str) or len(uid) > 40:
            ctx.err(where, "its uid %s is not a string of at most 40 characters" % short(uid))
        elif uid in seen_uids:
            ctx.err(where, "its uid %s is already %s" % (short(uid), seen_uids[uid]))
        seen_uids[uid] = "dashboard %s's" % board["name"]
        if board["folder"] == DASHBOARD_FOLDER and board["name"] in ("system-overview", "application-performance"):
            ctx.err(path + ".name", "%s is a built-in dashboard's file in folder %s (allowed: another name "
                                    "or folder)" % (short(board["name"]), DASHBOARD_FOLDER))
        key = (board["folder"], title)
        if isinstance(title, str) and key in titles:
            ctx.err(where, "its title %s is already dashboard %s's in folder %s" % (
                short(title), titles[key], board["folder"]))
        titles[key] = board["name"]
        total += len(json.dumps(doc, indent=2, sort_keys=True))
    if model.get("target") == "kubernetes" and total > K8S_DASHBOARDS_MAX and grafana["enabled"]:
        ctx.err("stack_monitoring.grafana.dashboards", "hold %d bytes of JSON: more than one ConfigMap "
                "takes on Kubernetes (allowed: at most %d)" % (total, K8S_DASHBOARDS_MAX))


def _check_logging(model, ctx):
    log = model["logging"]
    prod = model.get("environment") == "prod"
    es = log["elasticsearch"]
    epath = "stack_logging.elasticsearch"
    nodes = es["nodes"]
    if prod and log["enabled"] and nodes == 1:
        ctx.warn(epath + ".nodes", "a single Elasticsearch node in prod: its indices have no replica, "
                                   "so losing that node or its volume loses the logs, and the cluster "
                                   "is unavailable while it restarts (3 nodes avoid both)")
    amounts = {}
    for kind in ("requests", "limits"):
        for field, parse in (("cpu", quantity.cpu_millis), ("memory", quantity.to_bytes)):
            value = (es["resources"][kind] or {}).get(field)
            if value is not None:
                amounts[(kind, field)] = parse(value)
    for field in ("cpu", "memory"):
        req, lim = amounts.get(("requests", field)), amounts.get(("limits", field))
        if req is not None and lim is not None and req > lim:
            ctx.err("%s.resources.requests.%s" % (epath, field), "%s is above limits.%s %s" % (
                es["resources"]["requests"][field], field, es["resources"]["limits"][field]))
    heap = heap_bytes(es["heap"]) if es["heap"] and HEAP.match(es["heap"]) else None
    for kind in ("limits", "requests"):
        memory = amounts.get((kind, "memory"))
        if heap and memory is not None and memory <= heap:
            ctx.err("%s.resources.%s.memory" % (epath, kind), "%s is not more than the heap %s "
                    "(Elasticsearch needs memory beyond its heap; twice the heap is usual)" % (
                        es["resources"][kind]["memory"], es["heap"]))
    for field, spec in log["fields"].items():
        fpath = "stack_logging.fields.%s" % field
        if field.split(".")[0] in BASE_LOG_FIELDS:
            ctx.err(fpath, "is mapped by the platform itself (platform fields: %s)" % ", ".join(BASE_LOG_FIELDS))
            continue
        parents = [field.rsplit(".", n)[0] for n in range(1, field.count(".") + 1)]
        for parent in parents:
            pspec = log["fields"].get(parent)
            ptype = pspec if isinstance(pspec, str) else (pspec or {}).get("type")
            if ptype and ptype != "object":
                ctx.err(fpath, "is inside %s, which is mapped as %s (allowed: make %s an object, or "
                               "another name)" % (parent, ptype, parent))
        if isinstance(spec, str):
            log["fields"][field] = spec = {"type": spec, "scaling_factor": None, "ignore_above": None}
        if spec["type"] == "scaled_float" and not spec["scaling_factor"]:
            ctx.err(fpath + ".scaling_factor", "is required by type scaled_float (e.g. 100)")
        if spec["scaling_factor"] and spec["type"] != "scaled_float":
            ctx.err(fpath + ".scaling_factor", "only type scaled_float takes it (type is %s)" % spec["type"])
        if spec["ignore_above"] and spec["type"] not in ("keyword", "wildcard", "flattened"):
            ctx.err(fpath + ".ignore_above", "only keyword, wildcard and flattened take it (type is %s)" % spec["type"])


def check(model, ctx, need_secret, files=None):
    """The rules of stack_monitoring and stack_logging that span several fields.

    ``need_secret(name, path)`` records an error when a secret is not in stack_secrets.
    ``model`` holds the loaded ``monitoring``, ``logging``, ``services``, ``secrets``, ``target``
    and ``environment``. ``files`` maps each dashboard ``file`` as written in the model to
    ``{"content": text, "path": resolved}`` or ``{"error": message}``: the
    opsdeck.stack.stack_model action reads them beside the inventory (None: nothing was read).
    """
    mon = model["monitoring"]
    keys = [q["key"] for q in mon["redis_queues"] if q["key"]]
    for key in sorted(set(k for k in keys if keys.count(k) > 1)):
        ctx.err("stack_monitoring.redis_queues", "lists the key %r more than once (allowed: each key once)" % key)
    _check_alerts(mon, ctx)
    _check_rules(mon, ctx)
    _check_alerting(mon, ctx, need_secret)
    if mon["enabled"]:
        _url_secrets(model, ctx)
    _check_metrics(model, ctx)
    _check_dashboards(model, ctx, files)
    if mon["enabled"] and mon["grafana"]["enabled"]:
        need_secret(mon["grafana"]["admin_password_secret"], "stack_monitoring.grafana.admin_password_secret")

    log = model["logging"]
    prod = model.get("environment") == "prod"
    es = log["elasticsearch"]
    epath = "stack_logging.elasticsearch"
    if es["nodes"] is None:
        es["nodes"] = 3 if prod else 1
    if es["heap"] is None:
        es["heap"] = "2g" if prod else "512m"
    if es["storage"] is None:
        es["storage"] = "20Gi" if prod else "5Gi"
    if not log["audit_events"]:
        log["audit_events"] = list(AUDIT_EVENTS)
    nodes = es["nodes"]
    if nodes % 2 == 0:
        ctx.err(epath + ".nodes", "%d is even: a cluster needs an odd number of master-eligible "
                                  "nodes (allowed: 1, 3, 5, 7, 9)" % nodes)
    _check_logging(model, ctx)
    retention = log["retention_days"]
    if retention["audit"] < retention["app"]:
        ctx.err("stack_logging.retention_days.audit", "%d is shorter than retention_days.app %d (audit "
                "logs are kept at least as long as application logs)" % (retention["audit"], retention["app"]))
    if log["enabled"]:
        for key in ("elastic_password_secret", "kibana_password_secret", "logstash_password_secret"):
            need_secret(log[key], "stack_logging.%s" % key)
        if nodes > 1:
            # Nodes talk TLS to each other: playbooks/elk_certs.yml makes these three.
            for name in TRANSPORT_SECRETS:
                need_secret(name, epath + ".nodes (%d nodes need the transport certificates "
                                          "of playbooks/elk_certs.yml)" % nodes)


def es_resources(model):
    """Elasticsearch's requests and limits per node: the model's, else cpu 500m/2 and twice the heap."""
    es = model["logging"]["elasticsearch"]
    heap = es["heap"]
    memory = "%d%s" % (int(heap[:-1]) * 2, "Gi" if heap[-1] == "g" else "Mi")
    given = es.get("resources") or {}
    out = {}
    for kind, cpu in (("requests", ES_CPU[0]), ("limits", ES_CPU[1])):
        amounts = given.get(kind) or {}
        out[kind] = {"cpu": str(amounts.get("cpu") or cpu), "memory": str(amounts.get("memory") or memory)}
    return out


ELASTIC_IMAGES = {
    "elasticsearch": "docker.elastic.co/elasticsearch/elasticsearch",
    "logstash": "docker.elastic.co/logstash/logstash",
    "kibana": "docker.elastic.co/kibana/kibana",
    "filebeat": "docker.elastic.co/beats/filebeat",
}


def elastic_image(model, component):
    """The pinned upstream image of an Elastic component (stack_logging.version)."""
    return "%s:%s" % (ELASTIC_IMAGES[component], model["logging"]["version"])


def images(model):
    """The monitoring and logging images a Docker target runs: [(component, image, build)].

    Prometheus, Alertmanager and the exporters are built from Debian packages; Grafana and
    the Elastic stack are pulled (their images exist on no Debian mirror).
    """
    if model.get("target") not in ("compose", "swarm"):
        return []
    out = []
    mon = model.get("monitoring") or {}
    if mon.get("enabled"):
        out.extend((name, mon["images"][name], None)
                   for name in ("prometheus", "alertmanager", "exporters"))
        if mon["grafana"]["enabled"]:
            out.append(("grafana", mon["images"]["grafana"], None))
    if (model.get("logging") or {}).get("enabled"):
        out.extend((name, elastic_image(model, name), None) for name in sorted(ELASTIC_IMAGES))
    return out


def without_components(model, names):
    """The model without the platform components in ``names`` (their images are missing).

    Used in dev when an image can be neither pulled nor built: Grafana is left out alone;
    any missing Elastic image leaves the whole ELK out (its parts are useless apart).
    """
    names = set(names)
    out = dict(model)
    if names & {"grafana"} and (out.get("monitoring") or {}).get("enabled"):
        out["monitoring"] = dict(out["monitoring"], grafana=dict(out["monitoring"]["grafana"], enabled=False))
    if names & set(ELASTIC_IMAGES) and (out.get("logging") or {}).get("enabled"):
        out["logging"] = dict(out["logging"], enabled=False)
    return out
