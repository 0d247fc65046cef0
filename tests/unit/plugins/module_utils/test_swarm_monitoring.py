"""The Swarm renderer with stack_monitoring enabled (the live run is in tests/integration/test_swarm.py)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "roles"))

from ansible_collections.opsdeck.stack.plugins.module_utils.model import fidelity as _fidelity  # noqa: E402
from ansible_collections.opsdeck.stack.plugins.module_utils.components import monitoring as _monitoring  # noqa: E402
from ansible_collections.opsdeck.stack.plugins.module_utils.swarm import render as _swarm  # noqa: E402
from obs_support import SECRETS, model  # noqa: E402


def rendered(**changes):
    m = model(target="swarm", **changes)
    return m, _swarm.render(m, SECRETS, [], monitoring_files=_monitoring.render(m, SECRETS))


def test_prometheus_gets_every_file_of_its_directory_as_a_versioned_config():
    m, out = rendered()
    prometheus = out["stack"]["services"]["prometheus"]
    files = [f for f in _monitoring.render(m, SECRETS) if not f.get("secret")
             and f["path"].startswith("prometheus/")]
    targets = sorted(c["target"] for c in prometheus["configs"])
    assert targets == sorted("/etc/prometheus/opsdeck/" + f["path"][len("prometheus/"):] for f in files)
    assert all(out["configs"][c["source"]].startswith(m["name"] + "_") for c in prometheus["configs"])
    assert [v for v in prometheus["volumes"] if isinstance(v, str)] == ["promdata:/prometheus"]


def test_stateful_monitoring_is_pinned_node_exporter_is_global_nothing_else_published():
    _m, out = rendered(monitoring={"enabled": True, "port": 19090})
    services = out["stack"]["services"]
    for name in ("prometheus", "alertmanager"):
        assert services[name]["deploy"]["placement"] == {
            "constraints": ["node.labels.opsdeck.data == true"]}
    assert services["node-exporter"]["deploy"]["mode"] == "global"
    assert "replicas" not in services["node-exporter"]["deploy"]
    assert [name for name, svc in services.items() if svc.get("ports")] == ["proxy"]
    assert "$$|/)" in " ".join(services["node-exporter"]["command"]), "a literal $ is escaped"


def test_a_rule_change_renames_only_prometheus_configs():
    m, first = rendered()
    files = _monitoring.render(m, SECRETS)
    changed = [dict(f, content=f["content"] + "\n# changed\n") if f["path"].endswith(".rules.yml")
               and f is next(g for g in files if g["path"].endswith(".rules.yml")) else f for f in files]
    second = _swarm.render(m, SECRETS, [], monitoring_files=changed)
    differ = {n for n in first["stack"]["services"]
              if first["stack"]["services"][n] != second["stack"]["services"][n]}
    assert differ == {"prometheus"}


def test_fidelity_says_monitoring_runs_on_swarm():
    m, _out = rendered()
    native = {e["field"] for e in _fidelity.report(m)["native"]}
    assert "stack_monitoring.enabled" in native


def test_grafana_gets_the_dashboards_of_every_folder_as_configs():
    board = {"title": "Orders", "panels": []}
    _m, out = rendered(monitoring={"enabled": True, "grafana": {"dashboards": [
        {"name": "orders", "json": board, "folder": "shop"}]}})
    targets = sorted(c["target"] for c in out["stack"]["services"]["grafana"]["configs"]
                     if c["target"].startswith("/var/lib/grafana/dashboards/"))
    assert targets == ["/var/lib/grafana/dashboards/opsdeck/opsdeck/application-performance.json",
                       "/var/lib/grafana/dashboards/opsdeck/opsdeck/system-overview.json",
                       "/var/lib/grafana/dashboards/opsdeck/shop/orders.json"]
