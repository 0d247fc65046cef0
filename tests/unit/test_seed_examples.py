"""examples/seed-observability.md: each seed's observability, written in the model, still works.

What the seeds chose (their rules, receivers, dashboards, queues, log fields) left the generic
code; the document keeps it in the model's fields. Each of its ``# stack model of seed ...``
blocks is completed into a small stack, validated by the model (with its dashboard file read
as the stack_model action reads it), rendered, and checked with the real promtool and amtool
as the preflight does; the seeds' alerts are unit-tested with ``promtool test rules`` and their
routes with ``amtool config routes test``.
"""

import copy
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from ansible_collections.opsdeck.stack.plugins.module_utils.components import elk as _elk
from ansible_collections.opsdeck.stack.plugins.module_utils.components import monitoring as _monitoring
from ansible_collections.opsdeck.stack.plugins.module_utils.model.stack import from_vars, normalize

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOC = os.path.join(ROOT, "examples", "seed-observability.md")
VALIDATE = os.path.join(ROOT, "roles", "monitoring", "files", "monitoring_validate.py")
PROMTOOL = "/usr/bin/promtool"
AMTOOL = "/usr/bin/amtool"
SECRETS = {name: "seed-example-%s-value" % name for name in (
    "grafana_admin_password", "slack_webhook_url", "slack_incidents_webhook", "slack_devops_alerts_webhook",
    "pagerduty_routing_key", "elastic_password", "kibana_system_password", "logstash_writer_password",
    "redis_password", "postgres_password")}
SECRETS.update(slack_incidents_webhook="https://hooks.slack.com/services/T0/B0/incidents",
               slack_devops_alerts_webhook="https://hooks.slack.com/services/T0/B0/devops",
               slack_webhook_url="https://hooks.slack.com/services/T0/B0/default")


class _Loader(yaml.SafeLoader):
    """YAML as an inventory writes it: !unsafe marks text Ansible must not template."""


_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def blocks():
    """{seed number: the block's variables} of every tested block of the document."""
    with open(DOC, encoding="utf-8") as handle:
        text = handle.read()
    out = {}
    for body in re.findall(r"```yaml\n(.*?)```", text, re.S):
        match = re.match(r"# stack model of seed (\d{3})", body)
        if match:
            out[match.group(1)] = yaml.load(body, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    return out


BLOCKS = blocks()
BASE_DIRS = {"000": os.path.join(ROOT, "examples", "veloflux")}


def seed_model(seed):
    """The block completed into a stack: its services get an image and a port if they have none."""
    variables = copy.deepcopy(BLOCKS[seed])
    services = variables.pop("stack_services", None) or [{"name": "app"}]
    for svc in services:
        svc.setdefault("image", "registry.example.com/seed/%s:1.0.0" % svc["name"])
        svc.setdefault("port", 8000)
        svc.setdefault("uses", ["redis"])
    services[0].setdefault("route", {"path": "/api/"})
    variables.update(stack_name="seed%s" % seed, stack_services=services,
                     stack_redis={"enabled": True, "password_secret": "redis_password"},
                     stack_secrets=SECRETS)
    raw = from_vars(variables)
    files = {}
    for board in raw["monitoring"].get("grafana", {}).get("dashboards", []):
        path = os.path.join(BASE_DIRS[seed], board["file"])
        with open(path, encoding="utf-8") as handle:
            files[board["file"]] = {"path": path, "content": handle.read()}
    return normalize(raw, files=files)


def test_every_seed_has_its_block():
    assert sorted(BLOCKS) == ["000", "001", "002", "003", "004"]


@pytest.mark.parametrize("seed", sorted(BLOCKS))
def test_the_block_passes_promtool_and_amtool(seed):
    model = seed_model(seed)
    files = {f["path"]: f["content"] for f in _monitoring.render(model, SECRETS)}
    request = {"promtool": PROMTOOL, "amtool": AMTOOL, "files": files,
               "prometheus_copy": _monitoring.validation_copy(files["prometheus/prometheus.yml"])}
    result = subprocess.run([sys.executable, VALIDATE], input=json.dumps(request), capture_output=True,
                            text=True, timeout=120, check=True)
    assert json.loads(result.stdout)["errors"] == []
    if model["logging"]["enabled"]:
        for item in _elk.render(model):
            if item["path"].endswith(".json"):
                json.loads(item["content"])


def _promtool_test(tmp_path, model, tests):
    for item in _monitoring.render(model, SECRETS):
        path = tmp_path / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(item["content"])
    rules = sorted("prometheus/rules/" + name for name in os.listdir(tmp_path / "prometheus" / "rules"))
    (tmp_path / "t.yml").write_text(yaml.safe_dump({"rule_files": rules, "evaluation_interval": "1m",
                                                    "tests": tests}, sort_keys=False))
    result = subprocess.run([PROMTOOL, "test", "rules", "t.yml"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _series(mapping):
    return [{"series": name, "values": values} for name, values in mapping.items()]


def _fires(alert, at, bad, good):
    firing = 'max(ALERTS{alertname="%s", alertstate="firing"})' % alert
    return [{"interval": "1m", "input_series": _series(bad),
             "promql_expr_test": [{"expr": firing, "eval_time": at, "exp_samples": [{"labels": "{}", "value": 1}]}]},
            {"interval": "1m", "input_series": _series(good),
             "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": []}]}]


def test_seed_000_rules_compute_and_fire_as_the_guide_says(tmp_path):
    model = seed_model("000")
    usage = 'veloflux_tenant_resource_usage{tenant_id="t1",resource="cpu"}'
    limit = 'veloflux_tenant_resource_limit{tenant_id="t1",resource="cpu"}'
    ready, total = 'veloflux_orchestration_pods_ready{tenant_id="t1"}', 'veloflux_orchestration_pods_total{tenant_id="t1"}'
    tests = [{
        "interval": "1m",
        "input_series": _series({
            'veloflux_tenant_billing_amount_total{tenant_id="t1",period="daily",plan="pro"}': "100x5",
            'veloflux_tenant_billing_amount_total{tenant_id="t1",period="daily",plan="addon"}': "50x5",
            'veloflux_tenant_billing_amount_total{tenant_id="t1",period="monthly"}': "999x5",
            usage: "3x5", limit: "4x5",
            'veloflux_orchestration_pods_ready{tenant_id="t1",pod="a"}': "1x5",
            'veloflux_orchestration_pods_ready{tenant_id="t1",pod="b"}': "0x5",
            'veloflux_orchestration_pods_total{tenant_id="t1",pod="a"}': "1x5",
            'veloflux_orchestration_pods_total{tenant_id="t1",pod="b"}': "1x5"}),
        "promql_expr_test": [
            {"expr": "veloflux:billing:daily_revenue", "eval_time": "2m",
             "exp_samples": [{"labels": 'veloflux:billing:daily_revenue{tenant_id="t1"}', "value": 150}]},
            {"expr": "veloflux:billing:quota_usage_percent", "eval_time": "2m",
             "exp_samples": [{"labels": 'veloflux:billing:quota_usage_percent{tenant_id="t1",resource="cpu"}',
                              "value": 75}]},
            {"expr": "veloflux:orchestration:pod_health_ratio", "eval_time": "2m",
             "exp_samples": [{"labels": 'veloflux:orchestration:pod_health_ratio{tenant_id="t1"}', "value": 0.5}]}]}]
    tests += _fires("QuotaLimitApproaching", "15m", {usage: "90x20", limit: "100x20"}, {usage: "50x20", limit: "100x20"})
    tests += _fires("TenantInstanceUnhealthy", "10m", {ready: "1x20", total: "4x20"}, {ready: "4x20", total: "4x20"})
    # the annotations as the guide writes them
    tests.append({"interval": "1m", "input_series": _series({usage: "90x20", limit: "100x20"}),
                  "alert_rule_test": [{"eval_time": "15m", "alertname": "QuotaLimitApproaching", "exp_alerts": [{
                      "exp_labels": {"severity": "warning", "tenant_id": "t1", "resource": "cpu"},
                      "exp_annotations": {
                          "summary": "Tenant t1 se aproximando do limite de cota para cpu",
                          "description": "Uso atual é 90% do limite permitido"}}]}]})
    _promtool_test(tmp_path, model, tests)


def test_seed_000_tenants_dashboard_logs_and_grouping():
    model = seed_model("000")
    files = {f["path"]: f["content"] for f in _monitoring.render(model, SECRETS)}
    board = json.loads(files["grafana/dashboards/veloflux/tenants.json"])
    assert board["title"] == "VeloFlux / Tenants"
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    assert exprs == ['veloflux:billing:daily_revenue{tenant_id=~"$tenant_id"}',
                     'veloflux:billing:quota_usage_percent{tenant_id=~"$tenant_id"}',
                     'veloflux:orchestration:pod_health_ratio{tenant_id=~"$tenant_id"}']
    alertmanager = yaml.safe_load(files["alertmanager/alertmanager.yml"])
    assert alertmanager["route"]["group_by"] == ["alertname", "job", "tenant_id"]
    template = json.loads({f["path"]: f["content"] for f in _elk.render(model)}[
        "elasticsearch/index_templates/opsdeck-app.json"])
    properties = template["template"]["mappings"]["properties"]
    assert properties["amount"] == {"type": "scaled_float", "scaling_factor": 100}
    assert properties["metadata"] == {"type": "flattened"} and properties["tenant_id"] == {"type": "keyword"}
    assert model["services"][0]["env"]["REDIS_KEY_PREFIX"] == "vf:"


def test_seed_001_routes_and_high_error_rate(tmp_path):
    model = seed_model("001")
    for item in _monitoring.render(model, SECRETS):
        path = tmp_path / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(item["content"])

    def routes(*labels):
        result = subprocess.run([AMTOOL, "config", "routes", "test", "--config.file=alertmanager/alertmanager.yml"]
                                + list(labels), cwd=tmp_path, capture_output=True, text=True, check=True)
        return result.stdout.strip()
    assert routes("severity=critical", "alertname=X") == "incidents,devops-alerts"
    assert routes("severity=warning", "alertname=HighErrorRate") == "devops-alerts"
    assert routes("severity=info") == "discard"
    config = yaml.safe_load((tmp_path / "alertmanager" / "alertmanager.yml").read_text())
    channels = {r["name"]: [c["channel"] for c in r.get("slack_configs", [])] for r in config["receivers"]}
    assert channels["incidents"] == ["#incidents"] and channels["devops-alerts"] == ["#devops-alerts"]
    errors = 'http_requests_total{job="api",status="503"}'
    _promtool_test(tmp_path, model, _fires("HighErrorRate", "10m", {errors: "0+12x40"}, {errors: "0+3x40"}))
    assert model["logging"]["index_by"] == ["service", "level"]


def test_seed_002_queue_backlog(tmp_path):
    key = 'redis_key_size{job="redis",db="db0",key="ifinu:fila:whatsapp"}'
    _promtool_test(tmp_path, seed_model("002"), _fires("QueueBacklog", "10m", {key: "5000x20"}, {key: "10x20"}))


def test_seed_004_scrape_and_elasticsearch():
    model = seed_model("004")
    files = {f["path"]: f["content"] for f in _monitoring.render(model, SECRETS)}
    jobs = {j["job_name"]: j for j in yaml.safe_load(files["prometheus/prometheus.yml"])["scrape_configs"]}
    assert jobs["vision-api"]["scrape_interval"] == "10s" and jobs["vision-api"]["metrics_path"] == "/metrics"
    assert model["logging"]["elasticsearch"]["heap"] == "1g"
    assert model["logging"]["elasticsearch"]["resources"]["limits"] == {"cpu": "1", "memory": "2G"}
