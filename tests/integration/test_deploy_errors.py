"""Bad input stops deploy.yml before any change, with a message naming the problem."""

import os
import socket

import yaml

from helpers import run

BASE = {
    "stack_name": "opsdeck-bad",
    "stack_environment": "dev",
    "stack_project_dir": "/opt/opsdeck-bad-input",
    "stack_services": [{"name": "api", "image": "opsdeck/refapp:0.1.0", "build": "refapp",
                        "port": 8000, "route": {"path": "/api/"}}],
    "stack_proxy": {"port": 18099, "bind": "127.0.0.1"},
    "stack_secrets": {},
}


def deploy(tmp_path, overrides, **env):
    variables = dict(BASE)
    variables.update(overrides)
    inv = tmp_path / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local",
        "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}}}))
    (inv / "group_vars" / "all" / "stack.yml").write_text(yaml.safe_dump(variables))
    result = run(["ansible-playbook", "playbooks/deploy.yml", "-i", str(inv)], timeout=300, **env)
    assert result.returncode != 0, "deploy.yml accepted bad input:\n" + result.stdout[-3000:]
    assert not os.path.exists(BASE["stack_project_dir"]), "something was deployed"
    return result.stdout + result.stderr


def test_malformed_model_names_every_field(tmp_path):
    out = deploy(tmp_path, {"stack_services": [
        {"name": "Api", "image": "x", "port": 8000, "replicas": -1,
         "autoscaling": {"min": 5, "max": 3, "cpu": 70}, "route": {"path": "/api/"}}]})
    assert "stack_services[Api].name: 'Api' is not valid" in out
    assert "stack_services[Api].replicas: -1 is out of range" in out
    assert "stack_services[Api].autoscaling: min 5 > max 3" in out
    assert "Check the Docker engine" not in out, "validation must come before any host check"


def test_unknown_target(tmp_path):
    out = deploy(tmp_path, {"stack_target": "nomad"})
    assert "stack_target: 'nomad' is not allowed (allowed: compose, swarm, kubernetes)" in out


def test_missing_secret(tmp_path):
    services = [dict(BASE["stack_services"][0], secrets=["api_key"])]
    out = deploy(tmp_path, {"stack_services": services})
    assert "stack_services[api].secrets: secret 'api_key' is not defined in stack_secrets" in out


def test_prod_refuses_placeholder_passwords(tmp_path):
    out = deploy(tmp_path, {"stack_environment": "prod", "stack_postgres": {"enabled": True},
                            "stack_secrets": {"postgres_password": "CHANGE_THIS"}})
    assert "stack_secrets.postgres_password: is a placeholder" in out
    assert "CHANGE_THIS" not in out.replace("stack_secrets.postgres_password", "")


def test_missing_engine(tmp_path):
    out = deploy(tmp_path, {}, DOCKER_HOST="unix:///nonexistent/docker.sock")
    assert "No Docker engine answers on localhost" in out


def test_port_in_use(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        out = deploy(tmp_path, {"stack_proxy": {"port": port, "bind": "127.0.0.1"}})
    assert "Port(s) %d on localhost are already in use by another program" % port in out


def test_shipped_prod_inventory_refuses_its_placeholders():
    """The prod inventory ships with CHANGE_THIS values: deploy.yml must refuse them by name."""
    result = run(["ansible-playbook", "playbooks/deploy.yml", "-i", "inventories/prod"], timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    for name in ("postgres_password", "redis_password", "admin_token", "tls_cert", "tls_key"):
        assert "stack_secrets.%s: is a placeholder" % name in out, out[-2000:]


def test_shipped_staging_inventory_validates_without_touching_a_host(tmp_path):
    """staging's Swarm model (with real-looking secrets) validates with `--tags validate`,
    which contacts no host (its hosts are TEST-NET addresses), and prints the fidelity report."""
    result = run(["ansible-playbook", "playbooks/deploy.yml", "-i", "inventories/staging",
                  "-e", "vault_postgres_password=x vault_redis_password=y vault_admin_token=z",
                  # with monitoring, validate also checks Alertmanager's configuration: the
                  # webhook must be one
                  "-e", "vault_slack_webhook_url=https://hooks.slack.com/services/T0/B0/staging",
                  "--tags", "validate"], timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-2000:]
    assert "fidelity on swarm:" in out
    assert "dropped stack_services[api].autoscaling: no autoscaler on swarm" in out
    assert "unreachable=0" in out and "changed=0" in out
    # the rules and Alertmanager's configuration were checked, on the controller
    assert "Validate | Run promtool check config and amtool check-config" in out
    # its vault's placeholder for the Slack webhook is not a URL: said before any host, by name
    result = run(["ansible-playbook", "playbooks/deploy.yml", "-i", "inventories/staging",
                  "-e", "vault_postgres_password=x vault_redis_password=y vault_admin_token=z",
                  "--tags", "validate"], timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert ("stack_monitoring.alerting.slack.webhook_secret: secret 'slack_webhook_url' does not hold an "
            "http(s) URL (it must hold a Slack incoming-webhook URL; its value is not shown)") in out


def test_strict_refuses_a_model_whose_target_drops_a_field():
    result = run(["ansible-playbook", "playbooks/deploy.yml", "-i", "inventories/staging",
                  "-e", "vault_postgres_password=x vault_redis_password=y vault_admin_token=z",
                  "-e", "vault_slack_webhook_url=https://hooks.slack.com/services/T0/B0/staging",
                  "-e", "stack_strict=true", "--tags", "validate"], timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "stack_services[api].autoscaling: dropped on swarm" in out, out[-2000:]
    assert "stack_postgres.storage: dropped on swarm" in out


MONITORED = {"stack_monitoring": {"enabled": True, "grafana": {"enabled": False}},
             "stack_redis": {"enabled": True}, "stack_postgres": {"enabled": True},
             "stack_secrets": {"postgres_password": "bad-input-pg-pass"}}


def test_a_rule_promtool_refuses_stops_the_deploy_before_any_host(tmp_path):
    monitoring = dict(MONITORED["stack_monitoring"], rules=[{"name": "shop", "rules": [
        {"record": "job:orders:rate5m", "expr": "sum(rate(orders_total[5m])"},
        {"alert": "OrdersStalled", "expr": "job:orders:rate5m == 0", "for": "10m"}]}])
    out = deploy(tmp_path, dict(MONITORED, stack_monitoring=monitoring))
    assert ("stack_monitoring.rules[shop].rules[job:orders:rate5m]: promtool check rules: could not parse "
            "expression: 1:27: parse error: unclosed left parenthesis") in out
    assert "Check the Docker engine" not in out, "the rules are checked before any host"


def test_a_dashboard_file_that_is_not_there_is_named(tmp_path):
    monitoring = dict(MONITORED["stack_monitoring"], grafana={"enabled": True, "dashboards": [
        {"name": "shop", "file": "dashboards/shop.json"}]})
    secrets = dict(MONITORED["stack_secrets"], grafana_admin_password="bad-input-grafana")
    out = deploy(tmp_path, dict(MONITORED, stack_monitoring=monitoring, stack_secrets=secrets))
    wanted = "stack_monitoring.grafana.dashboards[shop].file: cannot read %s/inventory/dashboards/shop.json " \
             "(relative to the inventory directory %s/inventory): No such file or directory" % (tmp_path, tmp_path)
    assert wanted in out
    assert "Check the Docker engine" not in out


def test_a_prometheus_template_not_marked_unsafe_is_explained(tmp_path):
    monitoring = dict(MONITORED["stack_monitoring"], rules=[{"name": "shop", "rules": [
        {"alert": "Down", "expr": "up == 0", "annotations": {"summary": "{{ $labels.job }} is down"}}]}])
    out = deploy(tmp_path, dict(MONITORED, stack_monitoring=monitoring))
    assert "stack_monitoring: " in out
    assert "must be marked !unsafe, or Ansible templates it itself" in out
    assert "Check the Docker engine" not in out


def test_destroy_keeps_the_data_unless_the_stack_is_named(tmp_path):
    """destroy_volumes=true alone (or with another stack's name) stops before anything is removed."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "compose.yaml").write_text("services: {}\n")
    variables = dict(BASE, stack_project_dir=str(project))
    inv = tmp_path / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}}}))
    (inv / "group_vars" / "all" / "stack.yml").write_text(yaml.safe_dump(variables))
    for extra in ([], ["-e", "destroy_confirm=shop"]):
        result = run(["ansible-playbook", "playbooks/destroy.yml", "-i", str(inv),
                      "-e", "destroy_volumes=true"] + extra, timeout=300)
        out = result.stdout + result.stderr
        assert result.returncode != 0, out[-3000:]
        assert "destroy_volumes=true deletes the data of stack opsdeck-bad for good: confirm with " \
               "-e destroy_confirm=opsdeck-bad" in " ".join(out.split()), out[-3000:]
        assert (project / "compose.yaml").exists(), "the project was removed"
