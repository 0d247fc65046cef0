# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the monitoring components get, as data: Prometheus, Alertmanager and Grafana files.

``render(model, secrets)`` returns ``[{path, content, mode, secret}]`` with paths relative
to the monitoring configuration directory:

    prometheus/prometheus.yml                    scrape configs, rule files, alerting
    prometheus/rules/*.rules.yml                 recording and alerting rules
    alertmanager/alertmanager.yml                routes and receivers (secret, 0600)
    grafana/grafana.ini                          admin password read from a secret file
    grafana/provisioning/datasources/prometheus.yml
    grafana/provisioning/dashboards/opsdeck.yml
    grafana/dashboards/*.json                    system overview, application, tenants

The target decides how these are shipped (bind mounts, Swarm configs, ConfigMaps); only the
scrape discovery depends on it (DNS on Compose and Swarm, kubernetes_sd on Kubernetes).
Nothing here touches a host.
"""

from __future__ import annotations

import json

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
    """The Redis exporter's arguments on every target (address, seed 002's queue keys)."""
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


def prometheus_config(model):
    mon = model["monitoring"]
    scrape = [{"job_name": "prometheus",
               "static_configs": [{"targets": ["localhost:%d" % PROMETHEUS_PORT]}]}]
    for svc in model["services"]:
        if not svc.get("port") or svc.get("replicas", 1) == 0:
            continue
        job = {"job_name": svc["name"], "metrics_path": "/metrics"}
        job.update(_targets(model, svc["name"], svc["port"]))
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


def rule_files(model):
    """{file name: rule-file dict}: the platform defaults plus the seeds' rules."""
    a = model["monitoring"]["alerts"]
    files = {}
    files["opsdeck.rules.yml"] = {"groups": [
        {"name": "opsdeck.http.recording", "rules": [
            {"record": "job:http_requests:rate5m",
             "expr": "sum by (job) (rate(http_requests_total[5m]))"},
            {"record": "job:http_errors:rate5m",
             "expr": 'sum by (job) (rate(http_requests_total{status=~"5.."}[5m]))'},
            {"record": "job:http_errors:ratio_rate5m",
             "expr": "job:http_errors:rate5m / job:http_requests:rate5m"},
            {"record": "job:http_request_duration_seconds:p95_5m",
             "expr": "histogram_quantile(0.95, sum by (job, le) "
                     "(rate(http_request_duration_seconds_bucket[5m])))"},
        ]},
        {"name": "opsdeck.availability", "rules": [
            _alert("TargetDown", "up == 0", "2m", "critical",
                   "{{ $labels.job }} target {{ $labels.instance }} is down",
                   "Prometheus could not scrape {{ $labels.instance }} (job {{ $labels.job }}) "
                   "for 2 minutes."),
            _alert("ErrorRate", "job:http_errors:ratio_rate5m > %s" % a["error_ratio"], "5m",
                   "warning", "{{ $labels.job }} answers too many 5xx",
                   "{{ $value | humanizePercentage }} of the requests of {{ $labels.job }} failed "
                   "with 5xx over 5 minutes (threshold %s)." % a["error_ratio"]),
            _alert("HighLatency", "job:http_request_duration_seconds:p95_5m > %s"
                   % a["latency_p95_seconds"], "10m", "warning",
                   "{{ $labels.job }} p95 latency is high",
                   "p95 latency of {{ $labels.job }} is {{ $value | humanizeDuration }} "
                   "(threshold %ss)." % a["latency_p95_seconds"]),
        ]},
        {"name": "opsdeck.resources", "rules": [
            _alert("DiskSpace",
                   '100 * node_filesystem_avail_bytes{fstype!~"%s"} / '
                   'node_filesystem_size_bytes{fstype!~"%s"} < %s'
                   % (EXCLUDED_FS, EXCLUDED_FS, a["disk_free_percent"]),
                   "10m", "critical", "Disk almost full on {{ $labels.instance }}",
                   "{{ $labels.mountpoint }} has {{ $value | printf \"%.1f\" }}% free "
                   "(threshold " + str(a["disk_free_percent"]) + "%)."),
            _alert("RedisMemory",
                   "100 * redis_memory_used_bytes / (redis_memory_max_bytes > 0) > %s"
                   % a["redis_memory_percent"], "5m", "warning",
                   "Redis {{ $labels.instance }} is close to maxmemory",
                   "Redis uses {{ $value | printf \"%.0f\" }}% of maxmemory (threshold "
                   + str(a["redis_memory_percent"]) + "%)."),
            _alert("PostgresConnections",
                   "100 * sum by (job, instance) (pg_stat_activity_count) / on (job, instance) "
                   "max by (job, instance) (pg_settings_max_connections) > %s"
                   % a["postgres_connections_percent"], "5m", "warning",
                   "PostgreSQL {{ $labels.instance }} is running out of connections",
                   "{{ $value | printf \"%.0f\" }}% of max_connections are in use (threshold "
                   + str(a["postgres_connections_percent"]) + "%)."),
            _alert("RedisDown", "redis_up == 0", "2m", "critical",
                   "Redis is not answering its exporter", "redis_up is 0 on {{ $labels.instance }}."),
            _alert("PostgresDown", "pg_up == 0", "2m", "critical",
                   "PostgreSQL is not answering its exporter", "pg_up is 0 on {{ $labels.instance }}."),
        ]},
    ]}
    # Seed 000: billing and quotas.
    files["billing.rules.yml"] = {"groups": [{"name": "VeloFluxBilling", "rules": [
        {"record": "veloflux:billing:daily_revenue",
         "expr": 'sum by (tenant_id) (veloflux_tenant_billing_amount_total{period="daily"})'},
        {"record": "veloflux:billing:quota_usage_percent",
         "expr": "(veloflux_tenant_resource_usage / on(tenant_id, resource) "
                 "veloflux_tenant_resource_limit) * 100"},
        _alert("QuotaLimitApproaching", "veloflux:billing:quota_usage_percent > %s"
               % a["quota_usage_percent"], "10m", "warning",
               "Tenant {{ $labels.tenant_id }} se aproximando do limite de cota para "
               "{{ $labels.resource }}",
               "Uso atual é {{ $value }}% do limite permitido"),
    ]}]}
    # Seed 000: orchestration (dedicated tenant instances).
    files["orchestration.rules.yml"] = {"groups": [{"name": "VeloFluxOrchestration", "rules": [
        {"record": "veloflux:orchestration:pod_health_ratio",
         "expr": "sum by (tenant_id) (veloflux_orchestration_pods_ready) / "
                 "sum by (tenant_id) (veloflux_orchestration_pods_total)"},
        _alert("TenantInstanceUnhealthy", "veloflux:orchestration:pod_health_ratio < %s"
               % a["pod_health_ratio"], "5m", "critical",
               "Instância do tenant {{ $labels.tenant_id }} com saúde abaixo de 50%",
               "Verifique eventos e logs do Kubernetes para detalhes"),
    ]}]}
    # Seed 001: HighErrorRate, 5xx per second.
    files["errors.rules.yml"] = {"groups": [{"name": "aiecommerce-alerts", "rules": [
        _alert("HighErrorRate", 'rate(http_requests_total{status=~"5.."}[5m]) > %s'
               % a["error_rate_per_second"], "2m", "warning", "High error rate detected",
               "Error rate is {{ $value }} errors per second"),
    ]}]}
    # Seed 002: Redis list backlogs (ifinu:fila:whatsapp), measured by redis_exporter.
    queues = model["monitoring"]["redis_queues"]
    if queues and model["redis"]["enabled"]:
        selector = "|".join(_regex_escape(q["key"]) for q in queues)
        rules = [{"record": "opsdeck:redis_queue_length:max",
                  "expr": 'max by (key) (redis_key_size{key=~"%s"})' % selector}]
        for q in queues:
            rules.append(_alert(
                "QueueBacklog", 'opsdeck:redis_queue_length:max{key="%s"} > %d'
                % (q["key"], q["max_length"]), q["for"], "warning",
                "Fila {{ $labels.key }} acumulando mensagens",
                "{{ $labels.key }} tem {{ $value }} mensagens (limite %d) há mais de %s: "
                "aumente os workers ou verifique o consumidor." % (q["max_length"], q["for"])))
        files["queues.rules.yml"] = {"groups": [{"name": "opsdeck.queues", "rules": rules}]}
    return files


def _regex_escape(text):
    out = []
    for ch in text:
        out.append("\\\\" + ch if ch in ".^$*+?()[]{}|\\" else ch)
    return "".join(out)


def alertmanager_config(model, secrets):
    alerting = model["monitoring"]["alerting"]
    receivers = {sev: {"name": sev} for sev in SEVERITIES}
    global_cfg = {"resolve_timeout": "5m"}
    slack, email, pager = alerting["slack"], alerting["email"], alerting["pagerduty"]
    if slack:
        global_cfg["slack_api_url"] = str(secrets.get(slack["webhook_secret"], ""))
    for sev in SEVERITIES:
        rec = receivers[sev]
        if slack and sev in slack["severities"]:
            rec.setdefault("slack_configs", []).append({
                "channel": slack["channel"], "send_resolved": True,
                "title": '[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} (%s)' % model["name"],
                "text": "{{ range .Alerts }}{{ .Annotations.summary }}\n{{ .Annotations.description }}\n{{ end }}",
            })
        if email and sev in email["severities"]:
            cfg = {"to": email["to"], "from": email["from"], "smarthost": email["smarthost"],
                   "require_tls": email["require_tls"], "send_resolved": True}
            if email.get("auth_username"):
                cfg["auth_username"] = email["auth_username"]
            if email.get("auth_password_secret"):
                cfg["auth_password"] = str(secrets.get(email["auth_password_secret"], ""))
            rec.setdefault("email_configs", []).append(cfg)
        if pager and sev in pager["severities"]:
            rec.setdefault("pagerduty_configs", []).append({
                "routing_key": str(secrets.get(pager["routing_key_secret"], "")),
                "severity": sev, "send_resolved": True,
                "description": "{{ .CommonLabels.alertname }}: {{ .CommonAnnotations.summary }}",
            })
    return {
        "global": global_cfg,
        "route": {
            "receiver": "warning",
            "group_by": ["alertname", "job", "tenant_id"],
            "group_wait": alerting["group_wait"],
            "group_interval": alerting["group_interval"],
            "repeat_interval": alerting["repeat_interval"],
            "routes": [{"receiver": sev, "matchers": ['severity="%s"' % sev]} for sev in SEVERITIES],
        },
        "inhibit_rules": [{"source_matchers": ['severity="critical"'],
                           "target_matchers": ['severity="warning"'],
                           "equal": ["alertname", "job", "instance"]}],
        "receivers": [receivers[sev] for sev in SEVERITIES],
    }


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


def dashboards(model):
    system = _dashboard("opsdeck-system", "opsdeck / System overview", [
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
        _panel(8, "Redis queues (seed 002)", ["opsdeck:redis_queue_length:max"], 12, 24,
               legend=["{{key}}"]),
    ], ["system"])
    app = _dashboard("opsdeck-application", "opsdeck / Application performance", [
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
    tenants = _dashboard("opsdeck-tenants", "opsdeck / Tenants", [
        _panel(1, "Daily revenue", ['veloflux:billing:daily_revenue{tenant_id=~"$tenant_id"}'], 0, 0,
               legend=["{{tenant_id}}"]),
        _panel(2, "Quota usage", ['veloflux:billing:quota_usage_percent{tenant_id=~"$tenant_id"}'], 12, 0,
               unit="percent", legend=["{{tenant_id}} {{resource}}"]),
        _panel(3, "Pod health ratio", ['veloflux:orchestration:pod_health_ratio{tenant_id=~"$tenant_id"}'],
               0, 8, unit="percentunit", legend=["{{tenant_id}}"]),
        _panel(4, "Work in flight", ['sum by (tenant) (app_tenant_inflight{tenant=~"$tenant_id"})'], 12, 8,
               legend=["{{tenant}}"]),
        _panel(5, "Draining", ['max by (tenant) (app_tenant_draining{tenant=~"$tenant_id"})'], 0, 16,
               kind="stat"),
    ], ["tenants"], [_var("tenant_id", "label_values(app_tenant_inflight, tenant)", "Tenant")])
    return {"system-overview.json": system, "application-performance.json": app,
            "tenants.json": tenants}


def grafana_files(model):
    graf = model["monitoring"]["grafana"]
    prom_url = "http://prometheus:%d" % PROMETHEUS_PORT
    datasources = {"apiVersion": 1, "datasources": [{
        "name": "Prometheus", "type": "prometheus", "uid": DATASOURCE_UID, "access": "proxy",
        "url": prom_url, "isDefault": True, "editable": False,
        "jsonData": {"timeInterval": model["monitoring"]["scrape_interval"]}}]}
    providers = {"apiVersion": 1, "providers": [{
        "name": "opsdeck", "orgId": 1, "folder": "opsdeck", "type": "file",
        "disableDeletion": True, "allowUiUpdates": False, "updateIntervalSeconds": 60,
        "options": {"path": "/var/lib/grafana/dashboards/opsdeck", "foldersFromFilesStructure": False}}]}
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
