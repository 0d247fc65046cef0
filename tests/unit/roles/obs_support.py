"""Shared helpers for the monitoring and ELK tests: a stack model with both sections on."""

import copy
import os
import shutil
import subprocess

from ansible_collections.opsdeck.stack.plugins.module_utils.model.stack import normalize

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"

SECRETS = {
    "postgres_password": "pg-secret-value-1", "redis_password": "redis-secret-value-1",
    "admin_token": "admin-token-value-1", "grafana_admin_password": "grafana-secret-value-1",
    "slack_webhook_url": "https://hooks.slack.com/services/T000/B000/secretslack",
    "pagerduty_routing_key": "pagerduty-secret-key-1", "smtp_password": "smtp-secret-value-1",
    "elastic_password": "elastic-secret-value-1", "kibana_system_password": "kibana-secret-value-1",
    "logstash_writer_password": "logstash-secret-value-1",
    # stand-ins: only their presence is checked by the model (playbooks/elk_certs.yml makes real ones)
    "elastic_transport_ca_crt": "-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n",
    "elastic_transport_crt": "-----BEGIN CERTIFICATE-----\nnode\n-----END CERTIFICATE-----\n",
    "elastic_transport_key": "-----BEGIN PRIVATE KEY-----\nkey\n-----END PRIVATE KEY-----\n",
}

RAW = {
    "name": "shop", "environment": "dev", "target": "compose",
    "services": [
        {"name": "api", "image": "opsdeck/refapp:0.1.0", "port": 8000, "replicas": 2,
         "uses": ["postgres", "redis"], "secrets": ["admin_token"],
         "route": {"path": "/api/"}},
        {"name": "worker", "image": "opsdeck/refapp:0.1.0", "port": 8000, "uses": ["redis"]},
    ],
    "postgres": {"enabled": True},
    "redis": {"enabled": True, "password_secret": "redis_password"},
    "monitoring": {
        "enabled": True, "retention_time": "30d", "retention_size": "20GB",
        "redis_queues": [{"key": "jobs:pending", "max_length": 1000, "for": "5m"}],
        # the opt-in built-in alert on, with its own threshold
        "alerts": {"error_rate_per_second": {"enabled": True, "threshold": 0.5, "for": "2m"}},
        # the user's own rules (a recording and an alerting rule)
        "rules": [{"name": "shop-orders", "rules": [
            {"record": "job:orders:rate5m", "expr": "sum by (job) (rate(orders_total[5m]))"},
            {"alert": "OrdersStalled", "expr": "job:orders:rate5m == 0", "for": "10m",
             "labels": {"severity": "warning", "team": "shop"},
             "annotations": {"summary": "No order on {{ $labels.job }} for 10 minutes",
                             "description": "Check the checkout service."}}]}],
        "alerting": {
            "slack": {"channel": "#alerts"},
            "email": {"to": "alerts@example.com", "from": "alertmanager@example.com",
                      "smarthost": "smtp.example.com:587", "auth_username": "alertmanager",
                      "auth_password_secret": "smtp_password"},
            "pagerduty": {},
            "receivers": [{"name": "shop-team", "webhook": {"url": "https://hooks.example.com/shop"}}],
            "routes": [{"receiver": "shop-team", "match": {"team": "shop"}}],
        },
    },
    "logging": {"enabled": True, "retention_days": {"app": 30, "audit": 90}},
    "secrets": SECRETS,
}


def model(target="compose", **changes):
    raw = copy.deepcopy(RAW)
    raw["target"] = target
    raw.update(changes)
    return normalize(raw)


def require(binary, package):
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise RuntimeError("%s not found: install the Debian package %s (scripts/setup.sh does); "
                           "these tests do not skip without it" % (binary, package))


def write(files, base):
    for item in files:
        path = os.path.join(str(base), item["path"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(item["content"])


def tool(argv, cwd):
    return subprocess.run(argv, cwd=str(cwd), capture_output=True, text=True, timeout=120, check=False)
