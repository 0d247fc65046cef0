"""The Compose renderer with stack_monitoring enabled (the live run is tests/integration/test_monitoring_live.py)."""

import copy
import os
import sys

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "roles"))

from ansible_collections.opsdeck.stack.plugins.module_utils.components import monitoring as _monitoring  # noqa: E402
from ansible_collections.opsdeck.stack.plugins.module_utils.compose.render import render  # noqa: E402
from obs_support import RAW, SECRETS, model  # noqa: E402


def rendered(**changes):
    m = model(**changes)
    return render(m, SECRETS, [], _monitoring.render(m, SECRETS))


def test_monitoring_services_and_networks():
    out = rendered()
    services = out["project"]["services"]
    assert {"prometheus", "alertmanager", "redis-exporter", "postgres-exporter", "nginx-exporter",
            "node-exporter"} <= set(services)
    assert services["grafana"]["networks"] == ["monitoring"] and "ports" not in services["grafana"]
    assert "ports" not in services["prometheus"]
    assert services["prometheus"]["networks"] == ["backend", "monitoring"]
    assert "--storage.tsdb.retention.time=30d" in services["prometheus"]["command"]
    assert "--check-single-keys=db0=jobs:pending" in services["redis-exporter"]["command"]
    assert services["nginx-exporter"]["networks"] == ["frontend", "backend"]
    for name in ("prometheus", "alertmanager", "redis-exporter", "node-exporter"):
        assert services[name]["user"] == "10001:10001" and services[name]["read_only"] is True
    assert out["project"]["networks"]["monitoring"] == {}


def test_prometheus_is_published_on_loopback_only():
    out = rendered(monitoring={"enabled": True, "port": 19090})
    assert out["project"]["services"]["prometheus"]["ports"] == ["127.0.0.1:19090:9090"]


def test_secrets_stay_in_0600_files_and_out_of_the_project():
    out = rendered()
    files = {f["path"]: f for f in out["files"]}
    am = files["secrets/monitoring-alertmanager-alertmanager-yml"]
    assert am["mode"] == "0600" and am["secret"] is True
    assert SECRETS["pagerduty_routing_key"] in am["content"]
    text = yaml.safe_dump(out["project"])
    for value in SECRETS.values():
        assert value not in text
    assert files["config/monitoring/prometheus/prometheus.yml"]["mode"] == "0644"
    env = out["project"]["services"]["postgres-exporter"]["environment"]
    assert env["DATA_SOURCE_PASS_FILE"] == "/run/secrets/postgres_password"


def test_a_rule_change_rolls_prometheus_only():
    first = rendered()
    mon = copy.deepcopy(RAW["monitoring"])
    mon["redis_queues"][0]["max_length"] = 5
    second = rendered(monitoring=mon)
    changed = {name for name in first["hashes"] if first["hashes"][name] != second["hashes"].get(name)}
    assert changed == {"prometheus"}


def test_disabled_monitoring_adds_nothing():
    out = rendered(monitoring={"enabled": False})
    assert not {"prometheus", "alertmanager", "node-exporter"} & set(out["project"]["services"])
    assert "monitoring" not in out["project"]["networks"]
