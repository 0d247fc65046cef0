# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``stack_monitoring`` and ``stack_logging`` sections of the stack model.

Declared here with the model's schema types (model/spec.py assembles the whole model);
``check`` holds their rules that span several fields. Both sections default to disabled.
"""

from __future__ import annotations

import re

from ansible_collections.opsdeck.stack.plugins.module_utils.common import names
from ansible_collections.opsdeck.stack.plugins.module_utils.model.schema import (
    Bool, Int, Num, Obj, ObjList, Str, StrList)

DURATION = re.compile(r"^[1-9][0-9]*(ms|s|m|h|d|w|y)$")
RETENTION_SIZE = re.compile(r"^[1-9][0-9]*(B|KB|MB|GB|TB|PB)$")
HEAP = re.compile(r"^[1-9][0-9]*[mg]$")
REDIS_KEY = re.compile(r"^[A-Za-z0-9:_.{}@#-]{1,200}$")
SLACK_CHANNEL = re.compile(r"^[#@][A-Za-z0-9._-]{1,80}$")
EMAIL = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$")
HOSTPORT = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?:[0-9]{1,5}$")
EVENT = re.compile(r"^[a-z][a-z0-9_.-]{0,80}$")
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

ALERT_DEFAULTS = {
    # seed 001: HighErrorRate, 5xx per second per series
    "error_rate_per_second": 0.1,
    # ErrorRate: share of 5xx over all requests of a job
    "error_ratio": 0.05,
    "latency_p95_seconds": 0.5,
    "disk_free_percent": 10,
    "redis_memory_percent": 90,
    "postgres_connections_percent": 80,
    # seed 000
    "quota_usage_percent": 80,
    "pod_health_ratio": 0.5,
}
# PEM transport certificates of a multi-node Elasticsearch: secret name -> file name in
# Elasticsearch's config/certs directory (made by playbooks/elk_certs.yml).
TRANSPORT_SECRETS = {
    "elastic_transport_ca_crt": "ca.crt",
    "elastic_transport_crt": "transport.crt",
    "elastic_transport_key": "transport.key",
}
AUDIT_EVENTS = ("tenant_config_updated", "drain_started", "drain_stopped",
                "tenant_migrated", "login", "permission_changed")


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


ALERTING = Obj({
    "slack": Obj({
        "channel": Str("Channel.", required=True, pattern=SLACK_CHANNEL,
                       desc="a channel such as #devops-alerts"),
        "webhook_secret": _secret("The secret holding the incoming-webhook URL.",
                                  default="slack_webhook_url"),
        "severities": _severities(["warning", "critical"]),
    }, doc="Slack receiver.", optional=True),
    "email": Obj({
        "to": Str("Recipient.", required=True, pattern=EMAIL,
                  desc="an e-mail address such as alerts@example.com"),
        "from": Str("Sender.", required=True, pattern=EMAIL, desc="an e-mail address"),
        "smarthost": Str("SMTP server.", required=True, pattern=HOSTPORT,
                         desc="host:port such as smtp.example.com:587"),
        "auth_username": Str("SMTP user."),
        "auth_password_secret": _secret("The secret holding the SMTP password."),
        "require_tls": Bool("Require STARTTLS.", default=True),
        "severities": _severities(["warning", "critical"]),
    }, doc="E-mail receiver.", optional=True),
    "pagerduty": Obj({
        "routing_key_secret": _secret("The secret holding the Events API v2 routing key.",
                                      default="pagerduty_routing_key"),
        "severities": _severities(["critical"]),
    }, doc="PagerDuty receiver.", optional=True),
    "group_wait": _duration("Alertmanager group_wait.", "30s"),
    "group_interval": _duration("Alertmanager group_interval.", "5m"),
    "repeat_interval": _duration("Alertmanager repeat_interval.", "4h"),
}, doc="Where alerts go (Alertmanager receivers).")

ALERT_LIMITS = {"error_rate_per_second": 1e6, "error_ratio": 1, "latency_p95_seconds": 3600,
                "disk_free_percent": 100, "redis_memory_percent": 100,
                "postgres_connections_percent": 100, "quota_usage_percent": 1000,
                "pod_health_ratio": 1}

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
    }, shorthand="key"), key="key", doc="Redis lists whose length is measured and alerted on."),
    "alerts": Obj({key: Num("Threshold %s." % key, low=0, high=ALERT_LIMITS[key], default=value)
                   for key, value in ALERT_DEFAULTS.items()}, doc="Alert thresholds."),
    "alerting": ALERTING,
    "grafana": Obj({
        "enabled": Bool("Run Grafana.", default=True),
        "admin_user": Str("Admin user.", default="admin", pattern=re.compile(r"^[A-Za-z0-9._@-]{1,64}$"),
                          desc="letters, digits and ._@-"),
        "admin_password_secret": _secret("The secret holding the admin password.",
                                         default="grafana_admin_password"),
        "port": Int("Grafana's port published on 127.0.0.1 of a Docker host (0: not published).",
                    low=0, high=65535, default=0),
    }, doc="Grafana."),
}, doc="Prometheus, Alertmanager, exporters and Grafana.")

LOGGING = Obj({
    "enabled": Bool("Run the ELK stack (Elasticsearch, Logstash, Kibana, Filebeat).", default=False),
    "version": Str("Elastic version.", default=ELASTIC_VERSION, pattern=re.compile(r"^8\.[0-9]+\.[0-9]+$"),
                   desc="an Elastic 8.x version such as 8.13.4"),
    "retention_days": Obj({
        "app": Int("Days application logs are kept.", low=1, high=3650, default=30),
        "audit": Int("Days audit logs are kept.", low=1, high=3650, default=90),
    }, doc="Index lifecycle: days before deletion."),
    "elasticsearch": Obj({
        "nodes": Int("Nodes (odd; default 3 in prod, else 1).", low=1, high=9),
        "heap": Str("JVM heap (default 2g in prod, else 512m).", pattern=HEAP,
                    desc='a JVM heap size such as "512m" or "4g"'),
        "storage": Str("Data volume per node (default 20Gi in prod, else 5Gi).",
                       pattern=re.compile(r"^[0-9]+(Mi|Gi|Ti)$"), desc='a volume size such as "20Gi"'),
    }, doc="Elasticsearch."),
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


def check(model, ctx, need_secret):
    """The rules of stack_monitoring and stack_logging that span several fields.

    ``need_secret(name, path)`` records an error when a secret is not in stack_secrets.
    """
    mon = model["monitoring"]
    keys = [q["key"] for q in mon["redis_queues"] if q["key"]]
    for key in sorted(set(k for k in keys if keys.count(k) > 1)):
        ctx.err("stack_monitoring.redis_queues", "lists the key %r more than once (allowed: each key once)" % key)
    if mon["enabled"]:
        alerting = mon["alerting"]
        if alerting["slack"]:
            need_secret(alerting["slack"]["webhook_secret"], "stack_monitoring.alerting.slack.webhook_secret")
        if alerting["email"] and alerting["email"]["auth_password_secret"]:
            need_secret(alerting["email"]["auth_password_secret"],
                        "stack_monitoring.alerting.email.auth_password_secret")
        if alerting["pagerduty"]:
            need_secret(alerting["pagerduty"]["routing_key_secret"],
                        "stack_monitoring.alerting.pagerduty.routing_key_secret")
        if mon["grafana"]["enabled"]:
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
    if prod and log["enabled"] and nodes == 1:
        ctx.err(epath + ".nodes", "1 is not allowed in prod (allowed: 3, 5, 7, 9)")
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
