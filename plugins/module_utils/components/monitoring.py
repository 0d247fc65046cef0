# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the monitoring components get, as data: Prometheus, Alertmanager and Grafana files.

``render(model, secrets)`` returns ``[{path, content, mode, secret}]`` with paths relative
to the monitoring configuration directory:

    prometheus/prometheus.yml                    scrape configs, rule files, alerting
    prometheus/rules/opsdeck.rules.yml           the built-in recording rules and alerts
    prometheus/rules/queues.rules.yml            Redis list backlogs (stack_monitoring.redis_queues)
    prometheus/rules/custom.rules.yml            the user's groups (stack_monitoring.rules)
    alertmanager/alertmanager.yml                routes and receivers (secret, 0600)
    grafana/grafana.ini                          admin password read from a secret file
    grafana/provisioning/datasources/prometheus.yml
    grafana/provisioning/dashboards/opsdeck.yml
    grafana/dashboards/<folder>/<name>.json      built-in (folder opsdeck) and the user's

The target decides how these are shipped (bind mounts, Swarm configs, ConfigMaps); only the
scrape discovery depends on it (DNS on Compose and Swarm, kubernetes_sd on Kubernetes).
Nothing here touches a host.
"""

from __future__ import annotations

import json
import re

from ansible_collections.opsdeck.stack.plugins.module_utils.model import observability as _observability

try:
    import yaml
except ImportError:  # pragma: no cover - ansible-core's controller always has PyYAML
    yaml = None  # module_utils must import without it (ansible-test sanity "import")

DATASOURCE_UID = "opsdeck-prometheus"
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
NGINX_STATUS_PORT = 8081
EXPORTERS = {
    # name: (port, needs)
    "redis-exporter": (9121, "redis"),
    "postgres-exporter": (9187, "postgres"),
    "nginx-exporter": (9113, "proxy"),
    "node-exporter": (9100, None),
}
SEVERITIES = ("critical", "warning", "info")
EXCLUDED_FS = "tmpfs|ramfs|overlay|squashfs|nsfs|devtmpfs|autofs"


def _str(dumper, data):
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_DUMPER = []


def dump(data, header=None):
    """Block YAML; multi-line strings as literal blocks."""
    if not _DUMPER:
        dumper = type("_Dumper", (yaml.SafeDumper,), {})
        dumper.add_representer(str, _str)
        _DUMPER.append(dumper)
    text = yaml.dump(data, Dumper=_DUMPER[0], sort_keys=False, default_flow_style=False, width=120,
                     allow_unicode=True)
    return ("# %s\n" % header if header else "") + text


# Exporters a Kubernetes target does not run: there is no nginx of ours to read stub_status
# from (the Ingress is the cluster's ingress-nginx, which exports its own metrics). The node
# exporter runs there as a DaemonSet of the agents namespace (hostPID and hostPath need the
# privileged Pod Security level; the stack's namespace stays restricted): see
# _kubernetes_obs, and HOST_AGENTS below for how Prometheus finds it.
NOT_ON_KUBERNETES = ("nginx-exporter",)
# Exporters that run in the agents namespace on Kubernetes, not in the stack's.
HOST_AGENTS = ("node-exporter",)
NODE_EXPORTER_ARGS = ("--path.procfs=/host/proc", "--path.sysfs=/host/sys",
                      "--path.rootfs=/host/root",
                      "--collector.filesystem.mount-points-exclude="
                      "^/(dev|proc|sys|run|var/lib/docker/.+)($|/)",
                      # Debian's build enables it; a container has no host D-Bus to ask
                      "--no-collector.systemd")


def redis_exporter_args(model):
    """The Redis exporter's arguments on every target (address, the keys of redis_queues)."""
    args = ["redis", "--redis.addr=redis://redis:%d" % model["redis"]["port"]]
    queues = model["monitoring"]["redis_queues"]
    if queues:
        args.append("--check-single-keys=" + ",".join("db0=%s" % q["key"] for q in queues))
    return args


def exporters(model):
    """The exporters this stack runs: [(name, port)]."""
    out = []
    for name, (port, needs) in EXPORTERS.items():
        if model.get("target") == "kubernetes" and name in NOT_ON_KUBERNETES:
            continue
        if needs is None or (model.get(needs) or {}).get("enabled"):
            out.append((name, port))
    return out


def agents_namespace(model):
    """The Kubernetes namespace of the stack's host agents (``<namespace>-agents``)."""
    from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import manifests as _kubernetes
    return _kubernetes.agents_namespace(_kubernetes.namespace_of(model))


def _targets(model, name, port):
    """Discovery for a component: every replica, whatever the target.

    On Kubernetes, pods of the stack's own namespace; a host agent's pods (the node
    exporter's DaemonSet) are found in the agents namespace only, and each is labelled
    ``instance`` with its node's name (one per node, like a Compose host's one exporter).
    """
    target = model["target"]
    if target == "kubernetes":
        agent = name in HOST_AGENTS
        namespaces = {"names": [agents_namespace(model)]} if agent else {"own_namespace": True}
        relabel = [
            {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_part_of",
                               "__meta_kubernetes_pod_label_app_kubernetes_io_name"],
             "regex": "%s;%s" % (model["name"], name), "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Running",
             "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_ip"], "regex": "(.+)",
             "target_label": "__address__", "replacement": "$1:%d" % port},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ]
        if agent:
            relabel.append({"source_labels": ["__meta_kubernetes_pod_node_name"],
                            "target_label": "instance"})
        return {"kubernetes_sd_configs": [{"role": "pod", "namespaces": namespaces}],
                "relabel_configs": relabel}
    dns = "tasks.%s" % name if target == "swarm" else name
    # Docker's DNS answers one A record per replica: each container is its own target.
    return {"dns_sd_configs": [{"names": [dns], "type": "A", "port": port,
                                "refresh_interval": "30s"}]}


def scrape_port(svc):
    """The port Prometheus scrapes a service on (stack_services[].metrics), or None: not scraped."""
    metrics = svc.get("metrics") or {}
    if not metrics.get("enabled", True) or svc.get("replicas", 1) == 0:
        return None
    return metrics.get("port") or svc.get("port") or None


def prometheus_config(model):
    mon = model["monitoring"]
    scrape = [{"job_name": "prometheus",
               "static_configs": [{"targets": ["localhost:%d" % PROMETHEUS_PORT]}]}]
    for svc in model["services"]:
        port = scrape_port(svc)
        if port is None:
            continue
        metrics = svc.get("metrics") or {}
        job = {"job_name": svc["name"], "metrics_path": metrics.get("path") or "/metrics"}
        if metrics.get("interval"):
            job["scrape_interval"] = metrics["interval"]
        if metrics.get("timeout"):
            job["scrape_timeout"] = metrics["timeout"]
        job.update(_targets(model, svc["name"], port))
        scrape.append(job)
    scrape.append(dict({"job_name": "alertmanager"},
                       **_targets(model, "alertmanager", ALERTMANAGER_PORT)))
    for name, port in exporters(model):
        job = {"job_name": name.replace("-exporter", "")}
        job.update(_targets(model, name, port))
        scrape.append(job)
    return {
        "global": {
            "scrape_interval": mon["scrape_interval"],
            "evaluation_interval": mon["evaluation_interval"],
            "external_labels": {"stack": model["name"], "environment": model["environment"]},
        },
        "rule_files": ["rules/*.rules.yml"],
        "alerting": {"alertmanagers": [dict({"api_version": "v2"},
                                            **_targets(model, "alertmanager", ALERTMANAGER_PORT))]},
        "scrape_configs": scrape,
    }


def storage_flags(model):
    """Prometheus command-line flags for retention (time and size, from the model)."""
    mon = model["monitoring"]
    flags = ["--storage.tsdb.retention.time=%s" % mon["retention_time"]]
    if mon.get("retention_size"):
        flags.append("--storage.tsdb.retention.size=%s" % mon["retention_size"])
    return flags


def _alert(name, expr, duration, severity, summary, description, extra_labels=None):
    rule = {"alert": name, "expr": expr, "for": duration,
            "labels": dict({"severity": severity}, **(extra_labels or {})),
            "annotations": {"summary": summary, "description": description}}
    return rule


def _builtin(model, key, expr, summary, description):
    """The built-in alert ``key`` as the model sets it, or None when it is switched off."""
    spec = model["monitoring"]["alerts"][key]
    if not spec["enabled"]:
        return None
    threshold = spec.get("threshold")
    fill = {"threshold": threshold, "for": spec["for"]}
    return _alert(_ALERT_NAMES[key], expr % fill, spec["for"], spec["severity"], summary,
                  description % fill, spec["labels"])


_ALERT_NAMES = {spec[0]: spec[1] for spec in _observability.BUILTIN_ALERTS}
_ALERT_GROUPS = {spec[0]: spec[2] for spec in _observability.BUILTIN_ALERTS}
# Each built-in alert: (expression, summary, description); %(threshold)s and %(for)s are the
# model's. Only what every stack exports is read: up, the apps' http_requests_total and
# http_request_duration_seconds (through the recording rules), the exporters' metrics.
_ALERT_TEXTS = {
    "target_down": (
        "up == 0",
        "{{ $labels.job }} target {{ $labels.instance }} is down",
        "Prometheus could not scrape {{ $labels.instance }} (job {{ $labels.job }}) for %(for)s."),
    "error_ratio": (
        "job:http_errors:ratio_rate5m > %(threshold)s",
        "{{ $labels.job }} answers too many 5xx",
        "{{ $value | humanizePercentage }} of the requests of {{ $labels.job }} failed with 5xx over "
        "5 minutes (threshold %(threshold)s)."),
    "error_rate_per_second": (
        "job:http_errors:rate5m > %(threshold)s",
        "{{ $labels.job }} answers too many 5xx per second",
        "{{ $labels.job }} answered {{ $value | printf \"%%.2f\" }} 5xx per second over 5 minutes "
        "(threshold %(threshold)s)."),
    "latency_p95_seconds": (
        "job:http_request_duration_seconds:p95_5m > %(threshold)s",
        "{{ $labels.job }} p95 latency is high",
        "p95 latency of {{ $labels.job }} is {{ $value | humanizeDuration }} (threshold %(threshold)ss)."),
    "disk_free_percent": (
        '100 * node_filesystem_avail_bytes{fstype!~"%s"} / node_filesystem_size_bytes{fstype!~"%s"} '
        "< %%(threshold)s" % (EXCLUDED_FS, EXCLUDED_FS),
        "Disk almost full on {{ $labels.instance }}",
        "{{ $labels.mountpoint }} has {{ $value | printf \"%%.1f\" }}%% free (threshold %(threshold)s%%)."),
    "redis_memory_percent": (
        "100 * redis_memory_used_bytes / (redis_memory_max_bytes > 0) > %(threshold)s",
        "Redis {{ $labels.instance }} is close to maxmemory",
        "Redis uses {{ $value | printf \"%%.0f\" }}%% of maxmemory (threshold %(threshold)s%%)."),
    "postgres_connections_percent": (
        "100 * sum by (job, instance) (pg_stat_activity_count) / on (job, instance) "
        "max by (job, instance) (pg_settings_max_connections) > %(threshold)s",
        "PostgreSQL {{ $labels.instance }} is running out of connections",
        "{{ $value | printf \"%%.0f\" }}%% of max_connections are in use (threshold %(threshold)s%%)."),
    "redis_down": (
        "redis_up == 0",
        "Redis is not answering its exporter",
        "redis_up is 0 on {{ $labels.instance }} for %(for)s."),
    "postgres_down": (
        "pg_up == 0",
        "PostgreSQL is not answering its exporter",
        "pg_up is 0 on {{ $labels.instance }} for %(for)s."),
}
# Alerts on a data store's exporter: rendered only when the stack runs that store.
_NEEDS = {"redis_memory_percent": "redis", "redis_down": "redis",
          "postgres_connections_percent": "postgres", "postgres_down": "postgres"}
RECORDING_GROUP = "opsdeck.http.recording"


def builtin_rules(model):
    """The built-in groups: the HTTP recording rules, then the alerts the model switches on."""
    groups = [{"name": RECORDING_GROUP, "rules": [
        {"record": "job:http_requests:rate5m",
         "expr": "sum by (job) (rate(http_requests_total[5m]))"},
        {"record": "job:http_errors:rate5m",
         "expr": 'sum by (job) (rate(http_requests_total{status=~"5.."}[5m]))'},
        {"record": "job:http_errors:ratio_rate5m",
         "expr": "job:http_errors:rate5m / job:http_requests:rate5m"},
        {"record": "job:http_request_duration_seconds:p95_5m",
         "expr": "histogram_quantile(0.95, sum by (job, le) "
                 "(rate(http_request_duration_seconds_bucket[5m])))"},
    ]}]
    by_group = {}
    for spec in _observability.BUILTIN_ALERTS:
        key = spec[0]
        if key in _NEEDS and not (model.get(_NEEDS[key]) or {}).get("enabled"):
            continue
        rule = _builtin(model, key, *_ALERT_TEXTS[key])
        if rule is not None:
            by_group.setdefault(_ALERT_GROUPS[key], []).append(rule)
    for name in sorted(by_group):
        groups.append({"name": name, "rules": by_group[name]})
    return groups


def user_rules(model):
    """The user's groups (stack_monitoring.rules) in Prometheus' rule-file format."""
    groups = []
    for group in model["monitoring"]["rules"]:
        out = {"name": group["name"]}
        if group.get("interval"):
            out["interval"] = group["interval"]
        rules = []
        for rule in group["rules"]:
            item = {"alert": rule["alert"]} if rule.get("alert") else {"record": rule["record"]}
            item["expr"] = rule["expr"]
            if rule.get("for"):
                item["for"] = rule["for"]
            if rule.get("labels"):
                item["labels"] = dict(rule["labels"])
            if rule.get("annotations"):
                item["annotations"] = dict(rule["annotations"])
            rules.append(item)
        out["rules"] = rules
        groups.append(out)
    return groups


USER_RULES_FILE = "custom.rules.yml"


def rule_files(model):
    """{file name: rule-file dict}: the built-in rules, the Redis list backlogs, the user's."""
    files = {"opsdeck.rules.yml": {"groups": builtin_rules(model)}}
    queues = model["monitoring"]["redis_queues"]
    if queues and model["redis"]["enabled"]:
        selector = "|".join(_regex_escape(q["key"]) for q in queues)
        rules = [{"record": "opsdeck:redis_queue_length:max",
                  "expr": 'max by (key) (redis_key_size{key=~"%s"})' % selector}]
        for q in queues:
            rules.append(_alert(
                "QueueBacklog", 'opsdeck:redis_queue_length:max{key="%s"} > %d'
                % (_label_escape(q["key"]), q["max_length"]), q["for"], q.get("severity") or "warning",
                "Redis list {{ $labels.key }} is backing up",
                "{{ $labels.key }} holds {{ $value }} items (threshold %d) for more than %s: add "
                "consumers or check the one that reads it." % (q["max_length"], q["for"])))
        files["queues.rules.yml"] = {"groups": [{"name": "opsdeck.queues", "rules": rules}]}
    if model["monitoring"]["rules"]:
        files[USER_RULES_FILE] = {"groups": user_rules(model)}
    return files


def _regex_escape(text):
    out = []
    for ch in text:
        out.append("\\\\" + ch if ch in ".^$*+?()[]{}|\\" else ch)
    return "".join(out)


def _label_escape(text):
    """A label value inside a PromQL or matcher string in double quotes."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# Alertmanager ------------------------------------------------------------------------------

def _slack(cfg, secrets, model, send_resolved):
    return {"api_url": str(secrets.get(cfg["webhook_secret"], "")), "channel": cfg["channel"],
            "send_resolved": send_resolved,
            "title": '[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} (%s)' % model["name"],
            "text": "{{ range .Alerts }}{{ .Annotations.summary }}\n{{ .Annotations.description }}\n{{ end }}"}


def _email(cfg, secrets, send_resolved):
    out = {"to": cfg["to"], "from": cfg["from"], "smarthost": cfg["smarthost"],
           "require_tls": cfg["require_tls"], "send_resolved": send_resolved}
    if cfg.get("auth_username"):
        out["auth_username"] = cfg["auth_username"]
    if cfg.get("auth_password_secret"):
        out["auth_password"] = str(secrets.get(cfg["auth_password_secret"], ""))
    return out


# PagerDuty knows critical, error, warning and info: other severities are sent as error.
PAGERDUTY_SEVERITY = ('{{ if eq .CommonLabels.severity "critical" "error" "warning" "info" }}'
                      '{{ .CommonLabels.severity }}{{ else }}error{{ end }}')


def _pagerduty(cfg, secrets, send_resolved):
    return {"routing_key": str(secrets.get(cfg["routing_key_secret"], "")),
            "severity": PAGERDUTY_SEVERITY, "send_resolved": send_resolved,
            "description": "{{ .CommonLabels.alertname }}: {{ .CommonAnnotations.summary }}"}


def _webhook(cfg, secrets, send_resolved):
    url = cfg["url"] if cfg.get("url") else str(secrets.get(cfg["url_secret"], ""))
    return {"url": url, "send_resolved": send_resolved, "max_alerts": cfg.get("max_alerts") or 0}


def _receiver(name, section, secrets, model, send_resolved=True):
    out = {"name": name}
    if section.get("slack"):
        out["slack_configs"] = [_slack(section["slack"], secrets, model, send_resolved)]
    if section.get("email"):
        out["email_configs"] = [_email(section["email"], secrets, send_resolved)]
    if section.get("pagerduty"):
        out["pagerduty_configs"] = [_pagerduty(section["pagerduty"], secrets, send_resolved)]
    if section.get("webhook"):
        out["webhook_configs"] = [_webhook(section["webhook"], secrets, send_resolved)]
    return out


def _matchers(route):
    out = ['%s="%s"' % (label, _label_escape(value)) for label, value in sorted(route["match"].items())]
    out += ['%s=~"%s"' % (label, _label_escape(value)) for label, value in sorted(route["match_re"].items())]
    return out


def alertmanager_config(model, secrets):
    """alertmanager.yml: the shorthands' receivers routed by severity, then the user's routes.

    Each shorthand (``alerting.slack``/``email``/``pagerduty``) is a receiver of that name with
    a route matching its severities that lets the next routes match too (``continue``); the
    user's routes follow in order. Alerts no route takes go to ``default_receiver``, or are
    dropped (the receiver ``discard`` has no integration).
    """
    alerting = model["monitoring"]["alerting"]
    receivers, routes = [], []
    for kind in _observability.SHORTHAND_RECEIVERS:
        cfg = alerting.get(kind)
        if not cfg:
            continue
        receivers.append(_receiver(kind, {kind: cfg}, secrets, model))
        severities = [sev for sev in SEVERITIES if sev in cfg["severities"]]
        if severities:
            routes.append({"receiver": kind, "matchers": ['severity=~"%s"' % "|".join(severities)],
                           "continue": True})
    for rec in alerting["receivers"]:
        receivers.append(_receiver(rec["name"], rec, secrets, model, rec["send_resolved"]))
    for route in alerting["routes"]:
        item = {"receiver": route["receiver"]}
        matchers = _matchers(route)
        if matchers:
            item["matchers"] = matchers
        if route["group_by"]:
            item["group_by"] = list(route["group_by"])
        for key in ("group_wait", "group_interval", "repeat_interval"):
            if route.get(key):
                item[key] = route[key]
        if route["continue"]:
            item["continue"] = True
        routes.append(item)
    default = alerting.get("default_receiver")
    if not default:
        default = _observability.DISCARD_RECEIVER
        receivers.insert(0, {"name": default})
    root = {
        "receiver": default,
        "group_by": list(alerting["group_by"]),
        "group_wait": alerting["group_wait"],
        "group_interval": alerting["group_interval"],
        "repeat_interval": alerting["repeat_interval"],
    }
    if routes:
        root["routes"] = routes
    return {
        "global": {"resolve_timeout": "5m"},
        "route": root,
        "inhibit_rules": [{"source_matchers": ['severity="critical"'],
                           "target_matchers": ['severity="warning"'],
                           "equal": ["alertname", "job", "instance"]}],
        "receivers": receivers,
    }


def alertmanager_ports(model, secrets):
    """TCP ports Alertmanager sends notifications to: 443, the SMTP servers', the webhooks'."""
    alerting = model["monitoring"]["alerting"]
    ports = set()
    sections = [alerting] + list(alerting["receivers"])
    for section in sections:
        if section.get("slack") or section.get("pagerduty"):
            ports.add(443)
        if section.get("email"):
            ports.add(int(section["email"]["smarthost"].rsplit(":", 1)[1]))
        hook = section.get("webhook")
        if hook:
            url = hook["url"] if hook.get("url") else str(secrets.get(hook["url_secret"], ""))
            match = re.match(r"^(https?)://[^/:]+(?::([0-9]+))?", url)
            if match:
                ports.add(int(match.group(2)) if match.group(2) else
                          (443 if match.group(1) == "https" else 80))
    return sorted(ports)


# Grafana ------------------------------------------------------------------------------

def _panel(pid, title, exprs, x, y, w=12, h=8, kind="timeseries", unit=None, legend=None):
    targets = []
    for i, expr in enumerate(exprs):
        targets.append({"refId": chr(ord("A") + i), "expr": expr,
                        "datasource": {"type": "prometheus", "uid": DATASOURCE_UID},
                        "legendFormat": (legend or [None] * len(exprs))[i] or "__auto"})
    panel = {"id": pid, "type": kind, "title": title,
             "datasource": {"type": "prometheus", "uid": DATASOURCE_UID},
             "gridPos": {"x": x, "y": y, "w": w, "h": h}, "targets": targets,
             "fieldConfig": {"defaults": {}, "overrides": []}, "options": {}}
    if unit:
        panel["fieldConfig"]["defaults"]["unit"] = unit
    return panel


def _dashboard(uid, title, panels, tags, templating=None):
    return {
        "uid": uid, "title": title, "tags": ["opsdeck"] + tags, "timezone": "browser",
        "schemaVersion": 39, "version": 1, "editable": False, "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": templating or []},
        "panels": panels,
    }


def _var(name, query, label):
    return {"name": name, "label": label, "type": "query", "query": query,
            "definition": query, "refresh": 2, "includeAll": True, "multi": True,
            "datasource": {"type": "prometheus", "uid": DATASOURCE_UID}, "current": {}}


def builtin_dashboards(model):
    """{name: dashboard} of the built-in dashboards the model switches on (folder opsdeck)."""
    wanted = model["monitoring"]["grafana"].get("builtin_dashboards") or {}
    out = {}
    if wanted.get("system", True):
        out["system-overview"] = _dashboard("opsdeck-system", "opsdeck / System overview", [
            _panel(1, "Targets up", ["sum by (job) (up)"], 0, 0, kind="stat"),
            _panel(2, "CPU busy", ['100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m])))'],
                   12, 0, unit="percent"),
            _panel(3, "Memory used", ["100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)"],
                   0, 8, unit="percent"),
            _panel(4, "Disk free", ['100 * node_filesystem_avail_bytes{fstype!~"%s"} / node_filesystem_size_bytes{fstype!~"%s"}'
                                    % (EXCLUDED_FS, EXCLUDED_FS)], 12, 8, unit="percent",
                   legend=["{{mountpoint}}"]),
            _panel(5, "Network received", ['sum by (instance) (rate(node_network_receive_bytes_total{device!="lo"}[5m]))'],
                   0, 16, unit="Bps"),
            _panel(6, "Redis memory", ["redis_memory_used_bytes", "redis_memory_max_bytes"], 12, 16, unit="bytes"),
            _panel(7, "PostgreSQL connections", ["sum by (datname) (pg_stat_activity_count)",
                                                 "max(pg_settings_max_connections)"], 0, 24),
            _panel(8, "Redis list lengths", ["opsdeck:redis_queue_length:max"], 12, 24,
                   legend=["{{key}}"]),
        ], ["system"])
    if wanted.get("application", True):
        out["application-performance"] = _dashboard("opsdeck-application", "opsdeck / Application performance", [
            _panel(1, "Requests per second", ["job:http_requests:rate5m"], 0, 0, unit="reqps",
                   legend=["{{job}}"]),
            _panel(2, "5xx ratio", ["job:http_errors:ratio_rate5m"], 12, 0, unit="percentunit",
                   legend=["{{job}}"]),
            _panel(3, "p95 latency", ["job:http_request_duration_seconds:p95_5m"], 0, 8, unit="s",
                   legend=["{{job}}"]),
            _panel(4, "Requests by route and status",
                   ['sum by (job, route, status) (rate(http_requests_total{job=~"$job"}[$__rate_interval]))'],
                   12, 8, unit="reqps"),
            _panel(5, "In-flight requests", ['sum by (job) (app_inflight_requests{job=~"$job"})'], 0, 16),
            _panel(6, "Proxy connections", ["nginx_connections_active", "rate(nginx_http_requests_total[5m])"],
                   12, 16),
        ], ["application"], [_var("job", "label_values(http_requests_total, job)", "Service")])
    return out


def _bind_inputs(board):
    """An exported dashboard's ${DS_...} datasource inputs, bound to the stack's Prometheus.

    Grafana's "Export for sharing externally" replaces datasources by inputs
    (``__inputs``), which file provisioning does not fill in: each input of a Prometheus
    datasource is replaced by this stack's datasource uid, and the dashboard id is dropped
    (provisioning gives its own).
    """
    inputs = [i.get("name") for i in board.get("__inputs") or []
              if isinstance(i, dict) and i.get("type") == "datasource" and i.get("pluginId") == "prometheus"
              and isinstance(i.get("name"), str)]
    text = json.dumps(board, sort_keys=True)
    for name in inputs:
        text = text.replace("${%s}" % name, DATASOURCE_UID)
    out = json.loads(text)
    out.pop("__inputs", None)
    out["id"] = None
    return out


def user_dashboards(model):
    """[(folder, name, dashboard)] of the user's dashboards, loaded by the model."""
    out = []
    for item in model["monitoring"]["grafana"].get("dashboards") or []:
        board = _bind_inputs(item["json"])
        board.setdefault("uid", item["name"])
        if not board.get("uid"):
            board["uid"] = item["name"]
        out.append((item["folder"], item["name"], board))
    return out


def dashboards(model):
    """{path under grafana/dashboards/: dashboard}: the built-in ones (folder opsdeck), the user's.

    Grafana makes one folder per directory (``foldersFromFilesStructure``).
    """
    out = {"%s/%s.json" % (_observability.DASHBOARD_FOLDER, name): board
           for name, board in builtin_dashboards(model).items()}
    for folder, name, board in user_dashboards(model):
        out["%s/%s.json" % (folder, name)] = board
    return out


def grafana_files(model):
    graf = model["monitoring"]["grafana"]
    prom_url = "http://prometheus:%d" % PROMETHEUS_PORT
    datasources = {"apiVersion": 1, "datasources": [{
        "name": "Prometheus", "type": "prometheus", "uid": DATASOURCE_UID, "access": "proxy",
        "url": prom_url, "isDefault": True, "editable": False,
        "jsonData": {"timeInterval": model["monitoring"]["scrape_interval"]}}]}
    # One provider; each directory below its path is a folder (opsdeck: the built-in ones).
    providers = {"apiVersion": 1, "providers": [{
        "name": "opsdeck", "orgId": 1, "type": "file",
        "disableDeletion": True, "allowUiUpdates": False, "updateIntervalSeconds": 60,
        "options": {"path": "/var/lib/grafana/dashboards/opsdeck", "foldersFromFilesStructure": True}}]}
    ini = "\n".join([
        "; Rendered by opsdeck.stack: the admin password is read from a secret file, never written here.",
        "[security]",
        "admin_user = %s" % graf["admin_user"],
        "admin_password = $__file{/run/secrets/%s}" % graf["admin_password_secret"],
        "disable_gravatar = true",
        "cookie_secure = true",
        "[users]",
        "allow_sign_up = false",
        "[auth.anonymous]",
        "enabled = false",
        "[analytics]",
        "reporting_enabled = false",
        "check_for_updates = false",
        "[paths]",
        "provisioning = /etc/grafana/provisioning",
        "",
    ])
    files = [
        ("grafana/grafana.ini", ini),
        ("grafana/provisioning/datasources/prometheus.yml", dump(datasources)),
        ("grafana/provisioning/dashboards/opsdeck.yml", dump(providers)),
    ]
    for name, board in dashboards(model).items():
        files.append(("grafana/dashboards/%s" % name, json.dumps(board, indent=2, sort_keys=True) + "\n"))
    return files


def render(model, secrets):
    """Every monitoring file as data: [{path, content, mode, secret}], sorted by path."""
    header = "Rendered by opsdeck.stack from the stack model: do not edit by hand."
    files = [{"path": "prometheus/prometheus.yml", "content": dump(prometheus_config(model), header),
              "mode": "0644", "secret": False}]
    for name, rules in rule_files(model).items():
        files.append({"path": "prometheus/rules/%s" % name, "content": dump(rules, header),
                      "mode": "0644", "secret": False})
    files.append({"path": "alertmanager/alertmanager.yml",
                  "content": dump(alertmanager_config(model, secrets), header),
                  "mode": "0600", "secret": True})
    if model["monitoring"]["grafana"]["enabled"]:
        for path, content in grafana_files(model):
            files.append({"path": path, "content": content, "mode": "0644", "secret": False})
    return sorted(files, key=lambda f: f["path"])


def validation_copy(config_text):
    """prometheus.yml for ``promtool check config`` on a build without kubernetes_sd.

    Debian's Prometheus is built without the Kubernetes service discovery, so the copy
    replaces each ``kubernetes_sd_configs`` by an equivalent static target; everything else
    (rule files, relabelling, alerting) is checked as rendered.
    """
    config = yaml.safe_load(config_text)

    def fix(section):
        if "kubernetes_sd_configs" in section:
            section.pop("kubernetes_sd_configs")
            section["static_configs"] = [{"targets": ["validation.invalid:9090"]}]
    for job in config.get("scrape_configs", []):
        fix(job)
    for am in (config.get("alerting") or {}).get("alertmanagers", []):
        fix(am)
    return dump(config)
