"""The monitoring role's files, checked with the REAL promtool and amtool (Debian packages).

- every rendered rule file passes `promtool check rules`, and `promtool test rules` shows
  each alert (platform defaults and the seeds' rules) firing on bad series and staying
  silent on good ones;
- the rendered prometheus.yml passes `promtool check config` (Compose and Swarm as
  rendered; Kubernetes through a validation copy, because Debian's Prometheus is built
  without kubernetes_sd: the copy only swaps kubernetes_sd_configs for a static target);
- alertmanager.yml passes `amtool check-config` and routes each severity where the model says
  (`amtool config routes test`).
Grafana cannot run on this machine: its provisioning YAML and dashboard JSON are checked
statically (structure, the datasource uid every panel names, unique ids, and every panel's
PromQL parses: the expressions are wrapped in a rule file for `promtool check rules`).
"""

import json
import re

import pytest
import yaml

from ansible_collections.opsdeck.stack.plugins.module_utils.components import monitoring as _monitoring
from obs_support import AMTOOL, PROMTOOL, SECRETS, model, require, tool, write


@pytest.fixture(scope="module", autouse=True)
def tools():
    require(PROMTOOL, "prometheus")
    require(AMTOOL, "prometheus-alertmanager")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    base = tmp_path_factory.mktemp("monitoring")
    files = _monitoring.render(model(), SECRETS)
    write(files, base)
    return base, files


def by_path(files):
    return {f["path"]: f for f in files}


def test_files_and_modes(rendered):
    _base, files = rendered
    paths = by_path(files)
    assert {"prometheus/prometheus.yml", "prometheus/rules/opsdeck.rules.yml",
            "prometheus/rules/billing.rules.yml", "prometheus/rules/orchestration.rules.yml",
            "prometheus/rules/errors.rules.yml", "prometheus/rules/queues.rules.yml",
            "alertmanager/alertmanager.yml", "grafana/grafana.ini",
            "grafana/provisioning/datasources/prometheus.yml",
            "grafana/provisioning/dashboards/opsdeck.yml", "grafana/dashboards/system-overview.json",
            "grafana/dashboards/application-performance.json",
            "grafana/dashboards/tenants.json"} == set(paths)
    assert [p for p, f in paths.items() if f["secret"]] == ["alertmanager/alertmanager.yml"]
    assert paths["alertmanager/alertmanager.yml"]["mode"] == "0600"
    for path, item in paths.items():
        if path != "alertmanager/alertmanager.yml":
            for value in SECRETS.values():
                assert value not in item["content"], "a secret leaked into %s" % path


def test_every_rule_file_passes_promtool_check_rules(rendered):
    base, files = rendered
    rules = sorted(f["path"] for f in files if f["path"].startswith("prometheus/rules/"))
    result = tool([PROMTOOL, "check", "rules"] + rules, base)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("target", ["compose", "swarm"])
def test_prometheus_yml_passes_promtool_check_config(tmp_path, target):
    files = _monitoring.render(model(target), SECRETS)
    write(files, tmp_path)
    result = tool([PROMTOOL, "check", "config", "prometheus/prometheus.yml"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(by_path(files)["prometheus/prometheus.yml"]["content"])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"prometheus", "api", "worker", "alertmanager", "redis", "postgres",
                         "nginx", "node"}
    dns = "tasks.api" if target == "swarm" else "api"
    assert jobs["api"]["dns_sd_configs"] == [{"names": [dns], "type": "A", "port": 8000,
                                              "refresh_interval": "30s"}]
    assert jobs["api"]["metrics_path"] == "/metrics"
    assert config["rule_files"] == ["rules/*.rules.yml"]


def test_kubernetes_uses_kubernetes_sd(tmp_path):
    files = _monitoring.render(model("kubernetes"), SECRETS)
    config = yaml.safe_load(by_path(files)["prometheus/prometheus.yml"]["content"])
    for job in config["scrape_configs"][1:]:
        assert "static_configs" not in job and "dns_sd_configs" not in job, job
        # the node exporter's DaemonSet runs in the agents namespace, everything else in the stack's
        namespaces = {"names": ["shop-agents"]} if job["job_name"] == "node" else {
            "own_namespace": True}
        assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": namespaces}]
        keep = job["relabel_configs"][0]
        assert keep["action"] == "keep" and keep["regex"].startswith("shop;")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert "nginx" not in jobs
    # the same job name as on Compose (job="node"), one instance per node, named after it
    assert jobs["node"]["relabel_configs"][0]["regex"] == "shop;node-exporter"
    assert {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "instance"} in \
        jobs["node"]["relabel_configs"]
    compose = yaml.safe_load(
        by_path(_monitoring.render(model(), SECRETS))["prometheus/prometheus.yml"]["content"])
    assert "node" in {job["job_name"] for job in compose["scrape_configs"]}
    write(files, tmp_path)
    copy = _monitoring.validation_copy(by_path(files)["prometheus/prometheus.yml"]["content"])
    (tmp_path / "prometheus" / "prometheus.yml").write_text(copy)
    result = tool([PROMTOOL, "check", "config", "prometheus/prometheus.yml"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_retention_comes_from_the_model():
    assert _monitoring.storage_flags(model()) == ["--storage.tsdb.retention.time=30d",
                                                  "--storage.tsdb.retention.size=20GB"]


def test_redis_exporter_gets_no_job_without_redis():
    m = model(redis={"enabled": False}, services=[{"name": "api", "image": "x/api:1", "port": 8000}],
              proxy={"enabled": False})
    files = by_path(_monitoring.render(m, SECRETS))
    config = yaml.safe_load(files["prometheus/prometheus.yml"]["content"])
    assert {job["job_name"] for job in config["scrape_configs"]} == {
        "prometheus", "api", "alertmanager", "postgres", "node"}
    assert "prometheus/rules/queues.rules.yml" not in files


# --- promtool test rules: each alert fires on bad series, stays silent on good ones -------

def _counter(per_minute, steps=40):
    return "0+%sx%d" % (per_minute, steps)


CASES = {
    # alert: (eval time, bad series, good series)
    "TargetDown": ("5m", {'up{job="api",instance="10.0.0.2:8000"}': "0x10"},
                   {'up{job="api",instance="10.0.0.2:8000"}': "1x10"}),
    "ErrorRate": ("15m", {'http_requests_total{job="api",status="200"}': _counter(60),
                          'http_requests_total{job="api",status="500"}': _counter(30)},
                  {'http_requests_total{job="api",status="200"}': _counter(60),
                   'http_requests_total{job="api",status="500"}': _counter(1)}),
    "HighLatency": ("20m", {'http_request_duration_seconds_bucket{job="api",le="0.1"}': _counter(0),
                            'http_request_duration_seconds_bucket{job="api",le="1.0"}': _counter(0),
                            'http_request_duration_seconds_bucket{job="api",le="2.5"}': _counter(60),
                            'http_request_duration_seconds_bucket{job="api",le="+Inf"}': _counter(60)},
                    {'http_request_duration_seconds_bucket{job="api",le="0.1"}': _counter(60),
                     'http_request_duration_seconds_bucket{job="api",le="1.0"}': _counter(60),
                     'http_request_duration_seconds_bucket{job="api",le="2.5"}': _counter(60),
                     'http_request_duration_seconds_bucket{job="api",le="+Inf"}': _counter(60)}),
    "DiskSpace": ("15m", {'node_filesystem_avail_bytes{instance="n",mountpoint="/",fstype="ext4"}': "5x20",
                          'node_filesystem_size_bytes{instance="n",mountpoint="/",fstype="ext4"}': "100x20"},
                  {'node_filesystem_avail_bytes{instance="n",mountpoint="/",fstype="ext4"}': "50x20",
                   'node_filesystem_size_bytes{instance="n",mountpoint="/",fstype="ext4"}': "100x20",
                   # an almost full tmpfs is not a disk
                   'node_filesystem_avail_bytes{instance="n",mountpoint="/run",fstype="tmpfs"}': "1x20",
                   'node_filesystem_size_bytes{instance="n",mountpoint="/run",fstype="tmpfs"}': "100x20"}),
    "RedisMemory": ("10m", {'redis_memory_used_bytes{job="redis",instance="r"}': "95x20",
                            'redis_memory_max_bytes{job="redis",instance="r"}': "100x20"},
                    {'redis_memory_used_bytes{job="redis",instance="r"}': "50x20",
                     'redis_memory_max_bytes{job="redis",instance="r"}': "100x20",
                     # no maxmemory (0): nothing to compare with
                     'redis_memory_used_bytes{job="redis",instance="r2"}': "95x20",
                     'redis_memory_max_bytes{job="redis",instance="r2"}': "0x20"}),
    "PostgresConnections": ("10m", {'pg_stat_activity_count{job="postgres",instance="p",datname="a",state="active"}': "45x20",
                                    'pg_stat_activity_count{job="postgres",instance="p",datname="b",state="idle"}': "40x20",
                                    'pg_settings_max_connections{job="postgres",instance="p"}': "100x20"},
                            {'pg_stat_activity_count{job="postgres",instance="p",datname="a",state="active"}': "20x20",
                             'pg_settings_max_connections{job="postgres",instance="p"}': "100x20"}),
    "RedisDown": ("5m", {'redis_up{job="redis",instance="r"}': "0x10"}, {'redis_up{job="redis",instance="r"}': "1x10"}),
    "PostgresDown": ("5m", {'pg_up{job="postgres",instance="p"}': "0x10"},
                     {'pg_up{job="postgres",instance="p"}': "1x10"}),
    # seed 000
    "QuotaLimitApproaching": ("15m", {'veloflux_tenant_resource_usage{tenant_id="t1",resource="cpu"}': "90x20",
                                      'veloflux_tenant_resource_limit{tenant_id="t1",resource="cpu"}': "100x20"},
                              {'veloflux_tenant_resource_usage{tenant_id="t1",resource="cpu"}': "50x20",
                               'veloflux_tenant_resource_limit{tenant_id="t1",resource="cpu"}': "100x20"}),
    "TenantInstanceUnhealthy": ("10m", {'veloflux_orchestration_pods_ready{tenant_id="t1"}': "1x20",
                                        'veloflux_orchestration_pods_total{tenant_id="t1"}': "4x20"},
                                {'veloflux_orchestration_pods_ready{tenant_id="t1"}': "4x20",
                                 'veloflux_orchestration_pods_total{tenant_id="t1"}': "4x20"}),
    # seed 001
    "HighErrorRate": ("10m", {'http_requests_total{job="api",status="503"}': _counter(12)},
                      {'http_requests_total{job="api",status="503"}': _counter(3)}),
    # seed 002
    "QueueBacklog": ("10m", {'redis_key_size{job="redis",db="db0",key="ifinu:fila:whatsapp"}': "5000x20"},
                     {'redis_key_size{job="redis",db="db0",key="ifinu:fila:whatsapp"}': "10x20",
                      # another key is not watched
                      'redis_key_size{job="redis",db="db0",key="other"}': "5000x20"}),
}


def _series(mapping):
    return [{"series": name, "values": values} for name, values in mapping.items()]


def test_every_alert_has_a_case(rendered):
    _base, files = rendered
    alerts = set()
    for item in files:
        if item["path"].startswith("prometheus/rules/"):
            for group in yaml.safe_load(item["content"])["groups"]:
                alerts |= {r["alert"] for r in group["rules"] if "alert" in r}
    assert alerts == set(CASES)


@pytest.mark.parametrize("alert", sorted(CASES))
def test_alert_fires_on_bad_series_and_stays_silent_on_good_ones(rendered, alert):
    base, files = rendered
    at, bad, good = CASES[alert]
    rules = sorted(f["path"] for f in files if f["path"].startswith("prometheus/rules/"))
    firing = 'max(ALERTS{alertname="%s", alertstate="firing"})' % alert
    tests = {
        "rule_files": rules,
        "evaluation_interval": "1m",
        "tests": [
            {"name": "%s fires" % alert, "interval": "1m", "input_series": _series(bad),
             "promql_expr_test": [{"expr": firing, "eval_time": at,
                                   "exp_samples": [{"labels": "{}", "value": 1}]}]},
            {"name": "%s silent" % alert, "interval": "1m", "input_series": _series(good),
             "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": []}]},
        ],
    }
    (base / ("test-%s.yml" % alert)).write_text(yaml.safe_dump(tests, sort_keys=False))
    result = tool([PROMTOOL, "test", "rules", "test-%s.yml" % alert], base)
    assert result.returncode == 0, result.stdout + result.stderr


def test_recording_rules_of_seed_000_compute_what_the_seed_says(rendered):
    base, files = rendered
    rules = sorted(f["path"] for f in files if f["path"].startswith("prometheus/rules/"))
    tests = {"rule_files": rules, "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": _series({
            'veloflux_tenant_billing_amount_total{tenant_id="t1",period="daily",plan="pro"}': "100x5",
            'veloflux_tenant_billing_amount_total{tenant_id="t1",period="daily",plan="addon"}': "50x5",
            'veloflux_tenant_billing_amount_total{tenant_id="t1",period="monthly"}': "999x5",
            'veloflux_tenant_resource_usage{tenant_id="t1",resource="cpu"}': "3x5",
            'veloflux_tenant_resource_limit{tenant_id="t1",resource="cpu"}': "4x5",
            'veloflux_orchestration_pods_ready{tenant_id="t1",pod="a"}': "1x5",
            'veloflux_orchestration_pods_ready{tenant_id="t1",pod="b"}': "0x5",
            'veloflux_orchestration_pods_total{tenant_id="t1",pod="a"}': "1x5",
            'veloflux_orchestration_pods_total{tenant_id="t1",pod="b"}': "1x5",
            'redis_key_size{job="redis",db="db0",key="ifinu:fila:whatsapp",instance="a"}': "7x5",
        }),
        "promql_expr_test": [
            {"expr": "veloflux:billing:daily_revenue", "eval_time": "2m",
             "exp_samples": [{"labels": 'veloflux:billing:daily_revenue{tenant_id="t1"}', "value": 150}]},
            {"expr": "veloflux:billing:quota_usage_percent", "eval_time": "2m",
             "exp_samples": [{"labels": 'veloflux:billing:quota_usage_percent{tenant_id="t1",resource="cpu"}',
                              "value": 75}]},
            {"expr": "veloflux:orchestration:pod_health_ratio", "eval_time": "2m",
             "exp_samples": [{"labels": 'veloflux:orchestration:pod_health_ratio{tenant_id="t1"}', "value": 0.5}]},
            {"expr": "opsdeck:redis_queue_length:max", "eval_time": "2m",
             "exp_samples": [{"labels": 'opsdeck:redis_queue_length:max{key="ifinu:fila:whatsapp"}', "value": 7}]},
        ]}]}
    (base / "test-recording.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = tool([PROMTOOL, "test", "rules", "test-recording.yml"], base)
    assert result.returncode == 0, result.stdout + result.stderr


# --- Alertmanager ---------------------------------------------------------------------

def test_alertmanager_yml_passes_amtool_and_routes_by_severity(rendered):
    base, files = rendered
    result = tool([AMTOOL, "check-config", "alertmanager/alertmanager.yml"], base)
    assert result.returncode == 0, result.stdout + result.stderr
    for severity in ("critical", "warning", "info"):
        routed = tool([AMTOOL, "config", "routes", "test", "--config.file=alertmanager/alertmanager.yml",
                       "severity=%s" % severity, "alertname=X"], base)
        assert routed.stdout.strip() == severity, routed.stdout + routed.stderr
    config = yaml.safe_load(by_path(files)["alertmanager/alertmanager.yml"]["content"])
    receivers = {r["name"]: r for r in config["receivers"]}
    assert set(receivers["critical"]) == {"name", "slack_configs", "email_configs", "pagerduty_configs"}
    assert set(receivers["warning"]) == {"name", "slack_configs", "email_configs"}
    assert set(receivers["info"]) == {"name"}
    assert receivers["critical"]["pagerduty_configs"][0]["routing_key"] == SECRETS["pagerduty_routing_key"]
    assert config["global"]["slack_api_url"] == SECRETS["slack_webhook_url"]


def test_alertmanager_without_receivers_is_still_valid(tmp_path):
    m = model(monitoring={"enabled": True})
    write(_monitoring.render(m, SECRETS), tmp_path)
    result = tool([AMTOOL, "check-config", "alertmanager/alertmanager.yml"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- Grafana (static: Grafana does not run here) ----------------------------------------

def _dashboards(files):
    return {p: json.loads(f["content"]) for p, f in by_path(files).items() if p.endswith(".json")}


def test_grafana_provisioning_is_consistent(rendered):
    _base, files = rendered
    paths = by_path(files)
    ds = yaml.safe_load(paths["grafana/provisioning/datasources/prometheus.yml"]["content"])
    assert ds["apiVersion"] == 1
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == _monitoring.DATASOURCE_UID
    assert source["url"] == "http://prometheus:9090" and source["isDefault"] is True
    prov = yaml.safe_load(paths["grafana/provisioning/dashboards/opsdeck.yml"]["content"])
    assert prov["apiVersion"] == 1 and prov["providers"][0]["type"] == "file"
    assert prov["providers"][0]["options"]["path"].startswith("/")
    ini = paths["grafana/grafana.ini"]["content"]
    assert "admin_password = $__file{/run/secrets/grafana_admin_password}" in ini
    boards = _dashboards(files)
    assert {b["title"] for b in boards.values()} == {
        "opsdeck / System overview", "opsdeck / Application performance", "opsdeck / Tenants"}
    assert len({b["uid"] for b in boards.values()}) == 3
    for path, board in boards.items():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), path
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == source["uid"], (path, panel["title"])
            assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
            assert panel["targets"], (path, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == source["uid"]
        for var in board["templating"]["list"]:
            assert var["datasource"]["uid"] == source["uid"]
            assert re.match(r"^label_values\([a-z_:]+, [a-z_]+\)$", var["query"]), var["query"]


def _as_promql(expr):
    expr = expr.replace("$__rate_interval", "5m")
    return re.sub(r"\$[a-z_]+", ".*", expr)


def test_every_panel_query_parses(rendered):
    base, files = rendered
    rules, n = [], 0
    for path, board in _dashboards(files).items():
        for panel in board["panels"]:
            for target in panel["targets"]:
                n += 1
                rules.append({"record": "opsdeck:dashboard_check:%d" % n, "expr": _as_promql(target["expr"])})
        for var in board["templating"]["list"]:
            metric = re.match(r"^label_values\(([a-z_:]+),", var["query"]).group(1)
            n += 1
            rules.append({"record": "opsdeck:dashboard_check:%d" % n, "expr": metric})
    (base / "dashboards-as-rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "dash", "rules": rules}]}))
    result = tool([PROMTOOL, "check", "rules", "dashboards-as-rules.yml"], base)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: %d rules found" % n in result.stdout
