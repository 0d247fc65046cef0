# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``stack_monitoring`` and ``stack_logging`` sections of the stack model.

Called from one place in ``_model.normalize()`` with its ``_Checker``: every error names
the field path, the bad value and what is allowed. Both sections default to disabled.
"""

from __future__ import annotations

import re

from ansible_collections.opsdeck.stack.plugins.module_utils.common.names import IMAGE_REF, SECRET_NAME

DURATION = re.compile(r"^[1-9][0-9]*(ms|s|m|h|d|w|y)$")
RETENTION_SIZE = re.compile(r"^[1-9][0-9]*(B|KB|MB|GB|TB|PB)$")
HEAP = re.compile(r"^[1-9][0-9]*[mg]$")
REDIS_KEY = re.compile(r"^[A-Za-z0-9:_.{}@#-]{1,200}$")
SLACK_CHANNEL = re.compile(r"^[#@][A-Za-z0-9._-]{1,80}$")
EMAIL = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$")
HOSTPORT = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?:[0-9]{1,5}$")
EVENT = re.compile(r"^[a-z][a-z0-9_.-]{0,80}$")

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


def _num(checker, data, key, path, default, low, high):
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(str(value))
        except ValueError:
            checker.err("%s.%s" % (path, key), "must be a number (got %r)" % (value,))
            return default
    if value < low or value > high:
        checker.err("%s.%s" % (path, key), "%s is out of range (allowed: %s..%s)" % (value, low, high))
        return default
    return value


def _image(checker, data, key, path, default):
    return checker.string(data, key, path, default, pattern=IMAGE_REF,
                          allowed_desc="an image reference such as opsdeck/prometheus:2.42")


def _alerting(checker, raw, path, need_secret):
    data = checker.mapping(raw, path, ("slack", "email", "pagerduty", "group_wait",
                                       "group_interval", "repeat_interval"))
    out = {
        "group_wait": checker.string(data, "group_wait", path, "30s", pattern=DURATION,
                                     allowed_desc="a duration such as 30s or 5m"),
        "group_interval": checker.string(data, "group_interval", path, "5m", pattern=DURATION,
                                         allowed_desc="a duration such as 5m"),
        "repeat_interval": checker.string(data, "repeat_interval", path, "4h", pattern=DURATION,
                                          allowed_desc="a duration such as 4h"),
        "slack": None, "email": None, "pagerduty": None,
    }
    if data.get("slack") is not None:
        spath = path + ".slack"
        slack = checker.mapping(data["slack"], spath, ("channel", "webhook_secret", "severities"))
        out["slack"] = {
            "channel": checker.string(slack, "channel", spath, required=True, pattern=SLACK_CHANNEL,
                                      allowed_desc="a channel such as #devops-alerts"),
            "webhook_secret": checker.string(slack, "webhook_secret", spath, "slack_webhook_url",
                                             pattern=SECRET_NAME),
            "severities": _severities(checker, slack, spath, ["warning", "critical"]),
        }
        need_secret(out["slack"]["webhook_secret"], spath + ".webhook_secret")
    if data.get("email") is not None:
        epath = path + ".email"
        email = checker.mapping(data["email"], epath, ("to", "from", "smarthost", "auth_username",
                                                       "auth_password_secret", "require_tls",
                                                       "severities"))
        out["email"] = {
            "to": checker.string(email, "to", epath, required=True, pattern=EMAIL,
                                 allowed_desc="an e-mail address such as alerts@example.com"),
            "from": checker.string(email, "from", epath, required=True, pattern=EMAIL,
                                   allowed_desc="an e-mail address"),
            "smarthost": checker.string(email, "smarthost", epath, required=True, pattern=HOSTPORT,
                                        allowed_desc="host:port such as smtp.example.com:587"),
            "auth_username": checker.string(email, "auth_username", epath, None),
            "auth_password_secret": checker.string(email, "auth_password_secret", epath, None,
                                                   pattern=SECRET_NAME),
            "require_tls": checker.boolean(email, "require_tls", epath, True),
            "severities": _severities(checker, email, epath, ["warning", "critical"]),
        }
        if out["email"]["auth_password_secret"]:
            need_secret(out["email"]["auth_password_secret"], epath + ".auth_password_secret")
    if data.get("pagerduty") is not None:
        ppath = path + ".pagerduty"
        pager = checker.mapping(data["pagerduty"], ppath, ("routing_key_secret", "severities"))
        out["pagerduty"] = {
            "routing_key_secret": checker.string(pager, "routing_key_secret", ppath,
                                                 "pagerduty_routing_key", pattern=SECRET_NAME),
            "severities": _severities(checker, pager, ppath, ["critical"]),
        }
        need_secret(out["pagerduty"]["routing_key_secret"], ppath + ".routing_key_secret")
    return out


def _severities(checker, data, path, default):
    value = checker.string_list(data, "severities", path) or list(default)
    for i, item in enumerate(value):
        if item not in ("info", "warning", "critical"):
            checker.err("%s.severities[%d]" % (path, i),
                        "%r is not allowed (allowed: info, warning, critical)" % (item,))
    return value


def monitoring(checker, raw, path, model, need_secret):
    """Validate ``stack_monitoring``; ``need_secret(name, path)`` checks a vault secret exists."""
    data = checker.mapping(raw, path, ("enabled", "retention_time", "retention_size",
                                       "scrape_interval", "evaluation_interval", "port",
                                       "images", "redis_queues", "alerts", "alerting", "grafana"))
    enabled = checker.boolean(data, "enabled", path, False)
    out = {
        "enabled": enabled,
        "retention_time": checker.string(data, "retention_time", path, "15d", pattern=DURATION,
                                         allowed_desc="a Prometheus duration such as 15d or 12h"),
        "retention_size": checker.string(data, "retention_size", path, None, pattern=RETENTION_SIZE,
                                         allowed_desc="a size such as 10GB or 512MB"),
        "scrape_interval": checker.string(data, "scrape_interval", path, "15s", pattern=DURATION,
                                          allowed_desc="a duration such as 15s"),
        "evaluation_interval": checker.string(data, "evaluation_interval", path, "15s",
                                              pattern=DURATION, allowed_desc="a duration such as 15s"),
        # Prometheus' port published on 127.0.0.1 of a Compose host (0: not published).
        "port": checker.integer(data, "port", path, 0, low=0, high=65535),
    }
    ipath = path + ".images"
    images = checker.mapping(data.get("images"), ipath,
                             ("prometheus", "alertmanager", "exporters", "grafana"))
    out["images"] = {key: _image(checker, images, key, ipath, default)
                     for key, default in list(MONITORING_IMAGES.items()) + [("grafana", GRAFANA_IMAGE)]}

    queues = data.get("redis_queues") or []
    if not isinstance(queues, list):
        checker.err(path + ".redis_queues", "must be a list of {key, max_length, for}")
        queues = []
    out["redis_queues"] = []
    for i, item in enumerate(queues):
        qpath = "%s.redis_queues[%d]" % (path, i)
        if isinstance(item, str):
            item = {"key": item}
        item = checker.mapping(item, qpath, ("key", "max_length", "for"))
        out["redis_queues"].append({
            "key": checker.string(item, "key", qpath, required=True, pattern=REDIS_KEY,
                                  allowed_desc="a Redis key made of letters, digits and :_.{}@#-"),
            "max_length": checker.integer(item, "max_length", qpath, 1000, low=1, high=10 ** 9),
            "for": checker.string(item, "for", qpath, "5m", pattern=DURATION,
                                  allowed_desc="a duration such as 5m"),
        })
    keys = [q["key"] for q in out["redis_queues"] if q["key"]]
    for key in sorted(set(k for k in keys if keys.count(k) > 1)):
        checker.err(path + ".redis_queues", "lists the key %r more than once (allowed: each key once)" % key)

    apath = path + ".alerts"
    alerts = checker.mapping(data.get("alerts"), apath, tuple(ALERT_DEFAULTS))
    limits = {"error_rate_per_second": 1e6, "error_ratio": 1, "latency_p95_seconds": 3600,
              "disk_free_percent": 100, "redis_memory_percent": 100,
              "postgres_connections_percent": 100, "quota_usage_percent": 1000,
              "pod_health_ratio": 1}
    out["alerts"] = {key: _num(checker, alerts, key, apath, default, 0, limits[key])
                     for key, default in ALERT_DEFAULTS.items()}

    secret_check = need_secret if enabled else (lambda name, where: None)
    out["alerting"] = _alerting(checker, data.get("alerting"), path + ".alerting", secret_check)

    gpath = path + ".grafana"
    grafana = checker.mapping(data.get("grafana"), gpath,
                              ("enabled", "admin_user", "admin_password_secret", "port"))
    out["grafana"] = {
        "enabled": checker.boolean(grafana, "enabled", gpath, True),
        "admin_user": checker.string(grafana, "admin_user", gpath, "admin",
                                     pattern=re.compile(r"^[A-Za-z0-9._@-]{1,64}$"),
                                     allowed_desc="letters, digits and ._@-"),
        "admin_password_secret": checker.string(grafana, "admin_password_secret", gpath,
                                                "grafana_admin_password", pattern=SECRET_NAME),
        # Grafana's port published on 127.0.0.1 of a Docker host (0: not published).
        "port": checker.integer(grafana, "port", gpath, 0, low=0, high=65535),
    }
    if enabled and out["grafana"]["enabled"]:
        need_secret(out["grafana"]["admin_password_secret"], gpath + ".admin_password_secret")
    return out


def logging(checker, raw, path, model, need_secret):
    """Validate ``stack_logging`` (ELK)."""
    data = checker.mapping(raw, path, ("enabled", "retention_days", "elasticsearch",
                                       "audit_events", "version", "elastic_password_secret",
                                       "kibana_password_secret", "logstash_password_secret",
                                       "kibana_port"))
    enabled = checker.boolean(data, "enabled", path, False)
    rpath = path + ".retention_days"
    retention = checker.mapping(data.get("retention_days"), rpath, ("app", "audit"))
    epath = path + ".elasticsearch"
    es = checker.mapping(data.get("elasticsearch"), epath, ("nodes", "heap", "storage"))
    prod = model.get("environment") == "prod"
    out = {
        "enabled": enabled,
        "version": checker.string(data, "version", path, ELASTIC_VERSION,
                                  pattern=re.compile(r"^8\.[0-9]+\.[0-9]+$"),
                                  allowed_desc="an Elastic 8.x version such as 8.13.4"),
        "retention_days": {
            "app": checker.integer(retention, "app", rpath, 30, low=1, high=3650),
            "audit": checker.integer(retention, "audit", rpath, 90, low=1, high=3650),
        },
        "elasticsearch": {
            "nodes": checker.integer(es, "nodes", epath, 3 if prod else 1, low=1, high=9),
            "heap": checker.string(es, "heap", epath, "2g" if prod else "512m", pattern=HEAP,
                                   allowed_desc='a JVM heap size such as "512m" or "4g"'),
            "storage": checker.string(es, "storage", epath, "20Gi" if prod else "5Gi",
                                      pattern=re.compile(r"^[0-9]+(Mi|Gi|Ti)$"),
                                      allowed_desc='a volume size such as "20Gi"'),
        },
        "audit_events": checker.string_list(data, "audit_events", path, pattern=EVENT,
                                            allowed_desc="an event name such as tenant_migrated")
        or list(AUDIT_EVENTS),
        "elastic_password_secret": checker.string(data, "elastic_password_secret", path,
                                                  "elastic_password", pattern=SECRET_NAME),
        "kibana_password_secret": checker.string(data, "kibana_password_secret", path,
                                                 "kibana_system_password", pattern=SECRET_NAME),
        # Logstash writes as its own user (role opsdeck_logstash_writer), not as elastic.
        "logstash_password_secret": checker.string(data, "logstash_password_secret", path,
                                                   "logstash_writer_password", pattern=SECRET_NAME),
        # Kibana's port published on 127.0.0.1 of a Docker host (0: not published).
        "kibana_port": checker.integer(data, "kibana_port", path, 0, low=0, high=65535),
    }
    nodes = out["elasticsearch"]["nodes"]
    if nodes is not None and nodes % 2 == 0:
        checker.err(epath + ".nodes", "%d is even: a cluster needs an odd number of master-eligible "
                                      "nodes (allowed: 1, 3, 5, 7, 9)" % nodes)
    if prod and enabled and nodes == 1:
        checker.err(epath + ".nodes", "1 is not allowed in prod (allowed: 3, 5, 7, 9)")
    if out["retention_days"]["audit"] < out["retention_days"]["app"]:
        checker.err(rpath + ".audit", "%d is shorter than retention_days.app %d (audit logs are kept "
                                      "at least as long as application logs)"
                    % (out["retention_days"]["audit"], out["retention_days"]["app"]))
    if enabled:
        need_secret(out["elastic_password_secret"], path + ".elastic_password_secret")
        need_secret(out["kibana_password_secret"], path + ".kibana_password_secret")
        need_secret(out["logstash_password_secret"], path + ".logstash_password_secret")
        if nodes and nodes > 1:
            # Nodes talk TLS to each other: playbooks/elk_certs.yml makes these three.
            for name in TRANSPORT_SECRETS:
                need_secret(name, epath + ".nodes (%d nodes need the transport certificates "
                                          "of playbooks/elk_certs.yml)" % nodes)
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
