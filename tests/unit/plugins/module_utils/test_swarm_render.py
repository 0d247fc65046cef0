"""The Swarm renderer: what `docker stack deploy` gets from the model."""

import copy
import subprocess

import yaml

from ansible_collections.opsdeck.stack.plugins.filter.swarm import swarm_stack
from ansible_collections.opsdeck.stack.plugins.module_utils.swarm import render as _swarm
from ansible_collections.opsdeck.stack.plugins.module_utils.model.stack import normalize

RAW = {
    "name": "shop",
    "target": "swarm",
    "services": [
        {"name": "api", "image": "opsdeck/refapp:0.1.0", "port": 8000, "replicas": 2,
         "uses": ["postgres", "redis"], "secrets": ["admin_token"],
         "health": {"ready": "/health/ready", "interval": 5, "retries": 3, "start_period": 10},
         "autoscaling": {"min": 3, "max": 6, "cpu": 70},
         "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                       "limits": {"cpu": "500m", "memory": "256Mi"}},
         "route": {"path": "/api/"}},
        {"name": "worker", "image": "opsdeck/refapp:0.1.0", "uses": ["redis"]},
    ],
    "postgres": {"enabled": True},
    "redis": {"enabled": True, "password_secret": "redis_password"},
    "proxy": {"port": 8080, "replicas": 2},
    "secrets": {"admin_token": "tok-123", "postgres_password": "pg-pass-1",
                "redis_password": "redis-pass-1"},
}
PROXY_FILES = [{"path": "nginx.conf", "content": "events {}\n", "mode": "0644", "secret": False},
               {"path": "htpasswd", "content": "u:$2b$hash\n", "mode": "0600", "secret": True}]


def render(raw=None, **kwargs):
    raw = copy.deepcopy(raw or RAW)
    return _swarm.render(normalize(raw), raw["secrets"], PROXY_FILES, **kwargs)


def test_secrets_and_configs_are_named_by_content_and_a_change_renames_only_that_one():
    first = render()
    raw = copy.deepcopy(RAW)
    raw["secrets"]["admin_token"] = "tok-456"
    second = render(raw)
    assert first["secrets"]["admin_token"] != second["secrets"]["admin_token"]
    assert first["secrets"]["postgres_password"] == second["secrets"]["postgres_password"]
    assert first["configs"] == second["configs"]
    for name in list(first["secrets"].values()) + list(first["configs"].values()):
        assert name.startswith("shop_") and len(name) <= 64
    # Only the services using the changed secret get a different spec.
    before, after = first["stack"]["services"], second["stack"]["services"]
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"api"}


def test_secret_values_never_appear_in_the_stack_file():
    text = swarm_stack(normalize(copy.deepcopy(RAW)), RAW["secrets"], PROXY_FILES)["yaml"]
    for value in RAW["secrets"].values():
        assert value not in text
    assert "&id" not in text and "*id" not in text, "no YAML aliases in the stack file"


def test_update_config_rolls_back_and_monitors_longer_than_the_health_check():
    api = render()["stack"]["services"]["api"]["deploy"]
    update = api["update_config"]
    assert update["order"] == "start-first" and update["failure_action"] == "rollback"
    # start 10 s, then 4 probes of interval 5 s + timeout: the default timeout is 3 s.
    assert int(update["monitor"].rstrip("s")) >= 10 + 4 * (5 + 3)
    assert api["rollback_config"]["order"] == "start-first"


def test_autoscaling_runs_its_minimum_and_stateful_services_are_pinned():
    services = render()["stack"]["services"]
    assert services["api"]["deploy"]["replicas"] == 3
    for name in ("postgres", "redis"):
        deploy = services[name]["deploy"]
        assert deploy["replicas"] == 1
        assert deploy["placement"]["constraints"] == ["node.labels.opsdeck.data == true"]
        assert deploy["update_config"]["order"] == "stop-first"
    assert render(data_label="db")["stack"]["services"]["redis"]["deploy"]["placement"] == {
        "constraints": ["node.labels.db == true"]}


def test_edge_publishes_in_host_mode_one_task_per_node():
    proxy = render()["stack"]["services"]["proxy"]
    assert proxy["ports"] == [{"target": 8080, "published": 8080, "protocol": "tcp", "mode": "host"}]
    assert proxy["deploy"]["replicas"] == 2
    assert proxy["deploy"]["placement"] == {"max_replicas_per_node": 1}
    assert proxy["deploy"]["update_config"]["order"] == "stop-first"
    assert proxy["configs"] == [{"source": "config-proxy-nginx-conf",
                                 "target": "/etc/nginx/opsdeck/nginx.conf", "mode": 0o444}]


def test_edge_label_puts_the_proxy_on_the_labelled_nodes_only():
    placement = render(edge_label="opsdeck.edge")["stack"]["services"]["proxy"]["deploy"]["placement"]
    assert placement == {"max_replicas_per_node": 1,
                         "constraints": ["node.labels.opsdeck.edge == true"]}
    services = render(edge_label="opsdeck.edge")["stack"]["services"]
    assert "constraints" not in services["api"]["deploy"].get("placement", {}), "the app spreads"
    text = swarm_stack(normalize(copy.deepcopy(RAW)), RAW["secrets"], PROXY_FILES,
                       edge_label="opsdeck.edge")["yaml"]
    assert "node.labels.opsdeck.edge == true" in text


def test_every_service_has_an_address_and_no_option_swarm_ignores():
    stack = render()["stack"]
    for name, svc in stack["services"].items():
        assert svc["networks"], "%s must be on a network to get an address" % name
        assert svc["deploy"]["endpoint_mode"] == "dnsrr"
        for key in _swarm.UNSUPPORTED:
            assert key not in svc, "%s.%s is ignored by docker stack deploy" % (name, key)
    assert stack["networks"]["backend"]["internal"] is True
    assert all(n["driver"] == "overlay" for n in stack["networks"].values())
    encrypted = render(encrypted=True)["stack"]["networks"]
    assert all(n["driver_opts"] == {"encrypted": ""} for n in encrypted.values())


def test_the_stack_file_passes_compose_schema_validation(tmp_path):
    out = swarm_stack(normalize(copy.deepcopy(RAW)), RAW["secrets"], PROXY_FILES)
    for item in out["files"]:
        path = tmp_path / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(item["content"])
    (tmp_path / "stack.yaml").write_text(out["yaml"])
    result = subprocess.run(["docker", "compose", "--project-directory", str(tmp_path), "-f",
                             str(tmp_path / "stack.yaml"), "config", "--quiet"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(out["yaml"])["version"] == "3.8"


def test_monitor_seconds_covers_the_health_check():
    health = {"start_period": "20s", "interval": "5s", "timeout": "3s", "retries": 10}
    assert _swarm.monitor_seconds(health) == 20 + 11 * 8 + 5
    assert _swarm.monitor_seconds(None) == 10
