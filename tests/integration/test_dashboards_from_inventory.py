"""Dashboards from JSON files beside the inventory and the user's own rules, through the real
stack_model action and monitoring role.

An inventory holds a Grafana dashboard exported "for sharing externally" in
dashboards/orders.json and names it in stack_monitoring.grafana.dashboards, and has a rule
whose annotation is a Prometheus template marked !unsafe (as an inventory must write it); a
playbook runs opsdeck.stack.stack_model (which reads the file on the controller, relative to
the inventory directory) and the monitoring role, which checks its files with promtool and
amtool and writes them into a directory: the dashboard is there in its folder, bound to the
stack's Prometheus, beside the built-in ones, and the annotation is Prometheus' template, not
Ansible's. Nothing is deployed.
"""

import json

import yaml

from helpers import local_inventory, run

EXPORTED = {
    "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource", "pluginId": "prometheus"}],
    "id": 7, "uid": "orders", "title": "Orders",
    "panels": [{"id": 1, "type": "timeseries", "title": "Orders per second",
                "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
                "targets": [{"refId": "A", "expr": "sum(rate(orders_total[5m]))",
                             "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}}]}],
}
RULES = """
shop_rules:
  - name: shop
    rules:
      - alert: OrdersStalled
        expr: sum(rate(orders_total[5m])) == 0
        for: 10m
        labels: {severity: warning}
        annotations:
          summary: !unsafe "No order on {{ $labels.job }} for 10 minutes ({{ $value }})"
"""
PLAYBOOK = """
- name: Render the monitoring files of the inventory's model
  hosts: all
  gather_facts: false
  tasks:
    - name: Validate the model (reads the dashboard files beside the inventory)
      opsdeck.stack.stack_model:
    - name: Render, check and write the monitoring files
      ansible.builtin.include_role:
        name: opsdeck.stack.monitoring
      vars:
        monitoring_dest: "{{ out_dir }}"
"""


def test_a_dashboard_file_beside_the_inventory_is_provisioned(tmp_path):
    inventory = local_inventory(tmp_path / "inventory", {
        "stack_name": "dash", "stack_environment": "dev",
        "stack_services": [{"name": "api", "image": "opsdeck/refapp:0.1.0", "port": 8000,
                            "route": {"path": "/api/"}}],
        "stack_monitoring": {"enabled": True, "rules": "{{ shop_rules }}", "grafana": {"dashboards": [
            {"name": "orders", "file": "dashboards/orders.json", "folder": "shop"}]}},
        "stack_secrets": {"grafana_admin_password": "dash-grafana-password"}})
    # the user's rule, with a Prometheus template Ansible must leave alone
    with open(tmp_path / "inventory" / "group_vars" / "all" / "rules.yml", "w", encoding="utf-8") as handle:
        handle.write(RULES)
    (tmp_path / "inventory" / "dashboards").mkdir()
    (tmp_path / "inventory" / "dashboards" / "orders.json").write_text(json.dumps(EXPORTED))
    (tmp_path / "render.yml").write_text(PLAYBOOK)
    out_dir = tmp_path / "out"
    result = run(["ansible-playbook", str(tmp_path / "render.yml"), "-i", inventory, "-e",
                  "out_dir=%s" % out_dir], timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    board = json.loads((out_dir / "grafana" / "dashboards" / "shop" / "orders.json").read_text())
    assert board["title"] == "Orders" and board["id"] is None and "__inputs" not in board
    assert board["panels"][0]["datasource"]["uid"] == "opsdeck-prometheus"
    assert (out_dir / "grafana" / "dashboards" / "opsdeck" / "system-overview.json").exists()
    provider = yaml.safe_load((out_dir / "grafana" / "provisioning" / "dashboards" / "opsdeck.yml").read_text())
    assert provider["providers"][0]["options"]["foldersFromFilesStructure"] is True
    assert "dash-grafana-password" not in result.stdout
    rules = yaml.safe_load((out_dir / "prometheus" / "rules" / "custom.rules.yml").read_text())
    assert rules["groups"][0]["rules"][0]["annotations"]["summary"] == \
        "No order on {{ $labels.job }} for 10 minutes ({{ $value }})"
