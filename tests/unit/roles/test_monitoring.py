"""The monitoring role's files, checked with the REAL promtool and amtool (Debian packages).

- every rendered rule file passes `promtool check rules`, and `promtool test rules` shows
  each alert (the built-in ones the model switches on, with its thresholds, and the user's
  own rules) firing on bad series and staying silent on good ones;
- the rendered prometheus.yml passes `promtool check config` (Compose and Swarm as
  rendered; Kubernetes through a validation copy, because Debian's Prometheus is built
  without kubernetes_sd: the copy only swaps kubernetes_sd_configs for a static target);
- alertmanager.yml passes `amtool check-config` and routes alerts by severity and labels
  where the model says (`amtool config routes test`); tests/unit/roles/test_alertmanager_live.py
  runs the real Alertmanager with it and receives what it sends.
Grafana cannot run on this machine: its provisioning YAML and dashboard JSON are checked
statically (structure, the datasource uid every panel names, unique ids, and every panel's
PromQL parses: the expressions are wrapped in a rule file for `promtool check rules`).
"""

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from ansible_collections.opsdeck.stack.plugins.module_utils.components import monitoring as _monitoring
from obs_support import AMTOOL, PROMTOOL, REPO_ROOT, SECRETS, model, require, tool, write


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
            "prometheus/rules/queues.rules.yml", "prometheus/rules/custom.rules.yml",
            "alertmanager/alertmanager.yml", "grafana/grafana.ini",
            "grafana/provisioning/datasources/prometheus.yml",
            "grafana/provisioning/dashboards/opsdeck.yml", "grafana/dashboards/opsdeck/system-overview.json",
            "grafana/dashboards/opsdeck/application-performance.json"} == set(paths)
    assert [p for p, f in paths.items() if f["secret"]] == ["alertmanager/alertmanager.yml"]
    assert paths["alertmanager/alertmanager.yml"]["mode"] == "0600"
    for path, item in paths.items():
        if path != "alertmanager/alertmanager.yml":
            for value in SECRETS.values():
                assert value not in item["content"], "a secret leaked into %s" % path


def test_no_platform_content_without_the_model_asking(tmp_path):
    """A stack that asks for nothing gets only the generic built-ins: no seed's rules,
    queues, receivers or dashboards."""
    m = model(monitoring={"enabled": True})
    files = by_path(_monitoring.render(m, SECRETS))
    assert sorted(p for p in files if p.startswith(("prometheus/rules/", "grafana/dashboards/"))) == [
        "grafana/dashboards/opsdeck/application-performance.json",
        "grafana/dashboards/opsdeck/system-overview.json", "prometheus/rules/opsdeck.rules.yml"]
    text = "\n".join(f["content"] for f in files.values()).lower()
    for word in ("veloflux", "billing", "tenant_id", "aiecommerce", "ifinu", "whatsapp", "quota",
                 "orchestration", "fila", "limite", "cota"):
        assert word not in text, word
    groups = yaml.safe_load(files["prometheus/rules/opsdeck.rules.yml"]["content"])["groups"]
    assert [g["name"] for g in groups] == ["opsdeck.http.recording", "opsdeck.availability", "opsdeck.resources"]
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    assert alerts == {"TargetDown", "ErrorRate", "HighLatency", "DiskSpace", "RedisMemory",
                      "PostgresConnections", "RedisDown", "PostgresDown"}
    am = yaml.safe_load(files["alertmanager/alertmanager.yml"]["content"])
    assert am["route"]["receiver"] == "discard" and "routes" not in am["route"]
    assert am["receivers"] == [{"name": "discard"}]
    assert am["route"]["group_by"] == ["alertname", "job"]
    write(_monitoring.render(m, SECRETS), tmp_path)
    result = tool([AMTOOL, "check-config", "alertmanager/alertmanager.yml"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


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


def test_scrape_settings_per_service(tmp_path):
    services = [
        {"name": "api", "image": "opsdeck/refapp:0.1.0", "port": 8000, "route": {"path": "/api/"},
         "metrics": {"port": 9102, "path": "/internal/metrics", "interval": "10s", "timeout": "5s"}},
        {"name": "worker", "image": "opsdeck/refapp:0.1.0", "port": 8000, "metrics": False},
        {"name": "batch", "image": "opsdeck/refapp:0.1.0", "metrics": {"port": 9300}},
        {"name": "cron", "image": "opsdeck/refapp:0.1.0"}]
    for target in ("compose", "swarm", "kubernetes"):
        files = _monitoring.render(model(target, services=services), SECRETS)
        config = yaml.safe_load(by_path(files)["prometheus/prometheus.yml"]["content"])
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        # worker: metrics false; cron: no port at all
        assert "worker" not in jobs and "cron" not in jobs, target
        assert jobs["api"]["metrics_path"] == "/internal/metrics"
        assert jobs["api"]["scrape_interval"] == "10s" and jobs["api"]["scrape_timeout"] == "5s"
        assert jobs["batch"]["metrics_path"] == "/metrics" and "scrape_interval" not in jobs["batch"]
        if target == "kubernetes":
            assert jobs["api"]["relabel_configs"][2]["replacement"] == "$1:9102"
            assert jobs["batch"]["relabel_configs"][2]["replacement"] == "$1:9300"
            copy = _monitoring.validation_copy(by_path(files)["prometheus/prometheus.yml"]["content"])
            write(files, tmp_path)
            (tmp_path / "prometheus" / "prometheus.yml").write_text(copy)
        else:
            assert jobs["api"]["dns_sd_configs"][0]["port"] == 9102
            assert jobs["batch"]["dns_sd_configs"][0]["port"] == 9300
            write(files, tmp_path)
        result = tool([PROMTOOL, "check", "config", "prometheus/prometheus.yml"], tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr


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
    # nor Redis alerts: there is no Redis exporter to read
    alerts = {r.get("alert") for g in yaml.safe_load(files["prometheus/rules/opsdeck.rules.yml"]["content"])["groups"]
              for r in g["rules"]}
    assert "RedisDown" not in alerts and "RedisMemory" not in alerts and "PostgresDown" in alerts


def _rules(files, name="opsdeck.rules.yml"):
    return {r.get("alert") or r.get("record"): r
            for g in yaml.safe_load(by_path(files)["prometheus/rules/" + name]["content"])["groups"]
            for r in g["rules"]}


def test_builtin_alerts_follow_the_model():
    files = _monitoring.render(model(monitoring={"enabled": True, "alerts": {
        "target_down": False, "disk_free_percent": {"threshold": 20, "for": "30m", "severity": "warning"},
        "error_ratio": {"threshold": 0.2, "labels": {"team": "platform", "page": "yes"}},
        "latency_p95_seconds": 2}}), SECRETS)
    rules = _rules(files)
    assert "TargetDown" not in rules and "ErrorsPerSecond" not in rules
    disk = rules["DiskSpace"]
    assert disk["expr"].endswith("< 20") and disk["for"] == "30m" and disk["labels"] == {"severity": "warning"}
    assert "(threshold 20%)" in disk["annotations"]["description"]
    assert rules["ErrorRate"]["expr"] == "job:http_errors:ratio_rate5m > 0.2"
    assert rules["ErrorRate"]["labels"] == {"severity": "warning", "team": "platform", "page": "yes"}
    assert rules["HighLatency"]["expr"] == "job:http_request_duration_seconds:p95_5m > 2"
    # every alert switched off: the recording rules stay (the dashboards read them)
    off = {key: False for key in ("target_down", "error_ratio", "latency_p95_seconds", "disk_free_percent",
                                  "redis_memory_percent", "postgres_connections_percent", "redis_down",
                                  "postgres_down")}
    files = _monitoring.render(model(monitoring={"enabled": True, "alerts": off}), SECRETS)
    groups = yaml.safe_load(by_path(files)["prometheus/rules/opsdeck.rules.yml"]["content"])["groups"]
    assert [g["name"] for g in groups] == ["opsdeck.http.recording"]


def test_user_rules_are_rendered_as_written(rendered):
    _base, files = rendered
    groups = yaml.safe_load(by_path(files)["prometheus/rules/custom.rules.yml"]["content"])["groups"]
    assert groups == [{"name": "shop-orders", "rules": [
        {"record": "job:orders:rate5m", "expr": "sum by (job) (rate(orders_total[5m]))"},
        {"alert": "OrdersStalled", "expr": "job:orders:rate5m == 0", "for": "10m",
         "labels": {"severity": "warning", "team": "shop"},
         "annotations": {"summary": "No order on {{ $labels.job }} for 10 minutes",
                         "description": "Check the checkout service."}}]}]
    interval = _monitoring.render(model(monitoring={"enabled": True, "rules": [
        {"name": "slow", "interval": "1m", "rules": [{"record": "x:y", "expr": "up"}]}]}), SECRETS)
    assert yaml.safe_load(by_path(interval)["prometheus/rules/custom.rules.yml"]["content"])["groups"][0][
        "interval"] == "1m"


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
    # opt-in, on in this model with threshold 0.5 per second
    "ErrorsPerSecond": ("10m", {'http_requests_total{job="api",status="503"}': _counter(60)},
                        {'http_requests_total{job="api",status="503"}': _counter(6)}),
    "QueueBacklog": ("10m", {'redis_key_size{job="redis",db="db0",key="jobs:pending"}': "5000x20"},
                     {'redis_key_size{job="redis",db="db0",key="jobs:pending"}': "10x20",
                      # another key is not watched
                      'redis_key_size{job="redis",db="db0",key="other"}': "5000x20"}),
    # the user's own alert, on its own recording rule
    "OrdersStalled": ("20m", {'orders_total{job="shop"}': "100x30"},
                      {'orders_total{job="shop"}': _counter(5, 30)}),
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


def test_recording_rules_compute_what_they_say(rendered):
    base, files = rendered
    rules = sorted(f["path"] for f in files if f["path"].startswith("prometheus/rules/"))
    tests = {"rule_files": rules, "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": _series({
            'orders_total{job="shop",instance="a"}': "0+60x10",
            'orders_total{job="shop",instance="b"}': "0+120x10",
            'redis_key_size{job="redis",db="db0",key="jobs:pending",instance="a"}': "7x5",
        }),
        "promql_expr_test": [
            {"expr": "job:orders:rate5m", "eval_time": "6m",
             "exp_samples": [{"labels": 'job:orders:rate5m{job="shop"}', "value": 3}]},
            {"expr": "opsdeck:redis_queue_length:max", "eval_time": "2m",
             "exp_samples": [{"labels": 'opsdeck:redis_queue_length:max{key="jobs:pending"}', "value": 7}]},
        ]}]}
    (base / "test-recording.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = tool([PROMTOOL, "test", "rules", "test-recording.yml"], base)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_changed_threshold_changes_when_the_alert_fires(tmp_path):
    """error_ratio 0.5: a third of 5xx does not fire, two thirds do (the default 0.05 fires on both)."""
    files = _monitoring.render(model(monitoring={"enabled": True, "alerts": {"error_ratio": 0.5}}), SECRETS)
    write(files, tmp_path)
    third = {'http_requests_total{job="api",status="200"}': _counter(60),
             'http_requests_total{job="api",status="500"}': _counter(30)}
    two_thirds = {'http_requests_total{job="api",status="200"}': _counter(30),
                  'http_requests_total{job="api",status="500"}': _counter(60)}
    firing = 'max(ALERTS{alertname="ErrorRate", alertstate="firing"})'
    tests = {"rule_files": ["prometheus/rules/opsdeck.rules.yml"], "evaluation_interval": "1m", "tests": [
        {"interval": "1m", "input_series": _series(third),
         "alert_rule_test": [{"eval_time": "15m", "alertname": "ErrorRate", "exp_alerts": []}]},
        {"interval": "1m", "input_series": _series(two_thirds),
         "promql_expr_test": [{"expr": firing, "eval_time": "15m", "exp_samples": [{"labels": "{}", "value": 1}]}]},
    ]}
    (tmp_path / "t.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = tool([PROMTOOL, "test", "rules", "t.yml"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- Alertmanager ---------------------------------------------------------------------

def _routes(base, *labels):
    routed = tool([AMTOOL, "config", "routes", "test", "--config.file=alertmanager/alertmanager.yml"]
                  + list(labels), base)
    assert routed.returncode == 0, routed.stdout + routed.stderr
    return routed.stdout.strip()


def test_alertmanager_yml_passes_amtool_and_routes_by_severity_and_labels(rendered):
    base, files = rendered
    result = tool([AMTOOL, "check-config", "alertmanager/alertmanager.yml"], base)
    assert result.returncode == 0, result.stdout + result.stderr
    # the shorthands: each a receiver of its severities (slack and email: warning and critical,
    # pagerduty: critical); then the user's route by label
    assert _routes(base, "severity=critical", "alertname=X") == "slack,email,pagerduty"
    assert _routes(base, "severity=warning", "alertname=X") == "slack,email"
    assert _routes(base, "severity=info", "alertname=X") == "discard"
    assert _routes(base, "severity=warning", "team=shop", "alertname=OrdersStalled") == "slack,email,shop-team"
    assert _routes(base, "severity=info", "team=shop") == "shop-team"
    config = yaml.safe_load(by_path(files)["alertmanager/alertmanager.yml"]["content"])
    receivers = {r["name"]: r for r in config["receivers"]}
    assert set(receivers["slack"]) == {"name", "slack_configs"}
    assert receivers["slack"]["slack_configs"][0]["api_url"] == SECRETS["slack_webhook_url"]
    assert receivers["slack"]["slack_configs"][0]["channel"] == "#alerts"
    assert receivers["pagerduty"]["pagerduty_configs"][0]["routing_key"] == SECRETS["pagerduty_routing_key"]
    assert receivers["email"]["email_configs"][0]["auth_password"] == SECRETS["smtp_password"]
    assert receivers["shop-team"]["webhook_configs"] == [
        {"url": "https://hooks.example.com/shop", "send_resolved": True, "max_alerts": 0}]


def test_receivers_and_routes_by_labels(tmp_path):
    """Several receivers, routes by severity and team, continue, per-route timing, a default."""
    secrets = dict(SECRETS, incidents_hook="https://hooks.slack.com/services/T1/B1/incidents",
                   chatops_url="https://chat.example.com/hooks/abc")
    m = model(monitoring={"enabled": True, "alerting": {
        "receivers": [
            {"name": "incidents", "slack": {"channel": "#incidents", "webhook_secret": "incidents_hook"},
             "pagerduty": {}},
            {"name": "ops", "slack": {"channel": "#ops"}, "send_resolved": False},
            {"name": "shop", "email": {"to": "shop@example.com", "from": "am@example.com",
                                       "smarthost": "mail.example.com:2525"}},
            {"name": "chatops", "webhook": {"url_secret": "chatops_url", "max_alerts": 5}}],
        "routes": [
            {"receiver": "incidents", "match": {"severity": "critical"}, "continue": True,
             "repeat_interval": "30m"},
            {"receiver": "shop", "match": {"team": "shop"}, "match_re": {"job": "api|checkout"},
             "group_by": ["alertname", "job", "instance"]},
            {"receiver": "ops", "match_re": {"severity": "warning|critical"}}],
        "default_receiver": "chatops", "group_by": ["alertname"], "group_wait": "10s"}}, secrets=secrets)
    write(_monitoring.render(m, secrets), tmp_path)
    result = tool([AMTOOL, "check-config", "alertmanager/alertmanager.yml"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _routes(tmp_path, "severity=critical", "team=shop", "job=api") == "incidents,shop"
    assert _routes(tmp_path, "severity=critical", "team=shop", "job=worker") == "incidents,ops"
    assert _routes(tmp_path, "severity=warning", "team=shop", "job=checkout") == "shop"
    assert _routes(tmp_path, "severity=warning") == "ops"
    assert _routes(tmp_path, "severity=info") == "chatops"
    config = yaml.safe_load((tmp_path / "alertmanager" / "alertmanager.yml").read_text())
    route = config["route"]
    assert route["receiver"] == "chatops" and route["group_by"] == ["alertname"] and route["group_wait"] == "10s"
    assert route["routes"][0] == {"receiver": "incidents", "matchers": ['severity="critical"'],
                                  "repeat_interval": "30m", "continue": True}
    assert route["routes"][1]["matchers"] == ['team="shop"', 'job=~"api|checkout"']
    assert route["routes"][1]["group_by"] == ["alertname", "job", "instance"]
    receivers = {r["name"]: r for r in config["receivers"]}
    assert receivers["incidents"]["slack_configs"][0]["api_url"] == secrets["incidents_hook"]
    assert receivers["ops"]["slack_configs"][0]["send_resolved"] is False
    assert receivers["chatops"]["webhook_configs"][0] == {"url": secrets["chatops_url"], "send_resolved": True,
                                                          "max_alerts": 5}
    assert _monitoring.alertmanager_ports(m, secrets) == [443, 2525]


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
    # one folder per directory below the provider's path: opsdeck/ holds the built-in ones
    assert prov["providers"][0]["options"]["foldersFromFilesStructure"] is True
    assert "folder" not in prov["providers"][0]
    ini = paths["grafana/grafana.ini"]["content"]
    assert "admin_password = $__file{/run/secrets/grafana_admin_password}" in ini
    boards = _dashboards(files)
    assert {b["title"] for b in boards.values()} == {
        "opsdeck / System overview", "opsdeck / Application performance"}
    assert len({b["uid"] for b in boards.values()}) == 2
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


EXPORTED = {
    # a dashboard as Grafana's "Export for sharing externally" writes it
    "__inputs": [{"name": "DS_PROM", "label": "Prometheus", "type": "datasource", "pluginId": "prometheus"}],
    "__requires": [{"type": "datasource", "id": "prometheus", "name": "Prometheus"}],
    "id": 42, "uid": "shop-orders", "title": "Shop / Orders",
    "panels": [{"id": 1, "type": "timeseries", "title": "Orders per second",
                "datasource": {"type": "prometheus", "uid": "${DS_PROM}"},
                "gridPos": {"x": 0, "y": 0, "w": 12, "h": 8},
                "targets": [{"refId": "A", "expr": "job:orders:rate5m",
                             "datasource": {"type": "prometheus", "uid": "${DS_PROM}"}}]}],
}


def test_user_dashboards_beside_the_built_in_ones():
    m = model(monitoring={"enabled": True, "grafana": {
        "builtin_dashboards": {"application": False},
        "dashboards": [{"name": "orders", "json": EXPORTED, "folder": "shop"},
                       {"name": "plain", "json": json.dumps({"title": "Plain", "panels": []})}]}})
    files = by_path(_monitoring.render(m, SECRETS))
    boards = {p: json.loads(f["content"]) for p, f in files.items() if p.startswith("grafana/dashboards/")}
    assert sorted(boards) == ["grafana/dashboards/opsdeck/plain.json", "grafana/dashboards/opsdeck/system-overview.json",
                              "grafana/dashboards/shop/orders.json"]
    orders = boards["grafana/dashboards/shop/orders.json"]
    # bound to the stack's Prometheus; provisioning gives the id
    assert orders["id"] is None and "__inputs" not in orders and orders["uid"] == "shop-orders"
    assert orders["panels"][0]["datasource"] == {"type": "prometheus", "uid": _monitoring.DATASOURCE_UID}
    assert orders["panels"][0]["targets"][0]["datasource"]["uid"] == _monitoring.DATASOURCE_UID
    assert "${DS_PROM}" not in files["grafana/dashboards/shop/orders.json"]["content"]
    # a dashboard without uid gets its name
    assert boards["grafana/dashboards/opsdeck/plain.json"]["uid"] == "plain"
    none = by_path(_monitoring.render(model(monitoring={"enabled": True, "grafana": {
        "builtin_dashboards": {"system": False, "application": False}}}), SECRETS))
    assert not [p for p in none if p.startswith("grafana/dashboards/")]


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


# --- the role's check (files/monitoring_validate.py, run by preflight before any host) ------

VALIDATE = os.path.join(REPO_ROOT, "roles", "monitoring", "files", "monitoring_validate.py")


def _validate(files, promtool=PROMTOOL, amtool=AMTOOL):
    by = {f["path"]: f["content"] for f in files}
    request = {"promtool": promtool, "amtool": amtool, "files": by,
               "prometheus_copy": _monitoring.validation_copy(by["prometheus/prometheus.yml"])}
    result = subprocess.run([sys.executable, VALIDATE], input=json.dumps(request), capture_output=True,
                            text=True, timeout=120, check=True)
    return json.loads(result.stdout)["errors"]


def test_the_check_passes_the_rendered_files(rendered):
    _base, files = rendered
    assert _validate(files) == []
    assert _validate(_monitoring.render(model("kubernetes"), SECRETS)) == []


def test_promtool_problems_in_the_users_rules_are_named_by_their_model_path():
    files = _monitoring.render(model(monitoring={"enabled": True, "rules": [
        {"name": "shop", "rules": [
            {"record": "job:orders:rate5m", "expr": "sum(rate(orders_total[5m])"},
            {"alert": "OrdersStalled", "expr": "job:orders:rate5m == 0",
             "annotations": {"summary": "{{ $labels.job "}}]},
        {"name": "fine", "rules": [{"alert": "Fine", "expr": "up == 0"}]}]}), SECRETS)
    errors = _validate(files)
    assert errors == [
        "stack_monitoring.rules[shop].rules[job:orders:rate5m]: promtool check rules: could not parse "
        "expression: 1:27: parse error: unclosed left parenthesis",
        'stack_monitoring.rules[shop].rules[OrdersStalled]: promtool check rules: annotation "summary": '
        "template: __alert_OrdersStalled:1: unclosed action"], errors


def test_a_missing_tool_is_a_clear_error(rendered):
    _base, files = rendered
    errors = _validate(files, promtool="/nonexistent/promtool")
    assert errors == ["promtool not found at /nonexistent/promtool on the controller: install the Debian "
                      "package prometheus (scripts/setup.sh does), point monitoring_promtool_binary at it, "
                      "or set monitoring_validate: false to deploy without this check"]


def test_no_secret_in_what_the_check_says(tmp_path):
    # a URL the model lets through (it only checks the scheme) but Alertmanager refuses (no host)
    secrets = dict(SECRETS, hook="https://user:s3cr3t@/x")
    files = _monitoring.render(model(monitoring={"enabled": True, "alerting": {
        "receivers": [{"name": "x", "webhook": {"url_secret": "hook"}}]}}, secrets=secrets), secrets)
    errors = _validate(files)
    assert errors and "amtool check-config" in errors[0]
    assert "s3cr3t" not in json.dumps(errors)
