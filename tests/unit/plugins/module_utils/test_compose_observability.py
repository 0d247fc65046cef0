"""Grafana and the ELK as Compose services and Swarm services, checked with the real Compose.

Grafana, Elasticsearch, Logstash, Kibana and Filebeat cannot run on this machine (no
registry, no Debian package), so these tests do not start them: the rendered projects go
through the real `docker compose config` (Compose v2's schema and interpolation, for the
Compose project and the Swarm stack file), and the tests check what an operator relies
on: every Elasticsearch node gets its own configuration and volume, the transport
certificates and passwords arrive as secrets (never in the document), Logstash and Kibana
read their passwords from secret files, a changed pipeline rolls only Logstash, only
loopback ports are published, and Filebeat runs on every Swarm node.
"""

import json
import os
import subprocess
import sys

import pytest
import yaml

from ansible_collections.opsdeck.stack.plugins.module_utils.compose import render as _compose
from ansible_collections.opsdeck.stack.plugins.module_utils.components import elk as _elk
from ansible_collections.opsdeck.stack.plugins.module_utils.components import monitoring as _monitoring
from ansible_collections.opsdeck.stack.plugins.module_utils.swarm import render as _swarm

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "roles"))
from obs_support import SECRETS, model  # noqa: E402  pylint: disable=wrong-import-position


def rendered(target="compose", **changes):
    mdl = model(target, **changes)
    return mdl, _compose.render(mdl, SECRETS, [], _monitoring.render(mdl, SECRETS), _elk.render(mdl))


def compose_config(tmp_path, document, files):
    for item in files:
        dest = tmp_path / item["path"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(item["content"])
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    result = subprocess.run(["docker", "compose", "--project-directory", str(tmp_path), "-f",
                             str(tmp_path / "compose.yaml"), "config", "--format", "json"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(params=["dev", "prod"])
def env(request):
    return request.param


def three_nodes(env):
    if env == "dev":
        return {}
    return {"environment": "prod", "logging": {"enabled": True, "elasticsearch": {"nodes": 3}}}


def test_compose_accepts_grafana_and_the_elk(tmp_path, env):
    mdl, out = rendered(**three_nodes(env))
    config = compose_config(tmp_path, out["project"], out["files"])
    services = config["services"]
    nodes = _elk.node_names(mdl)
    assert len(nodes) == (1 if env == "dev" else 3)
    assert {"grafana", "logstash", "kibana", "filebeat", *nodes} <= set(services)
    text = json.dumps(config)
    for value in SECRETS.values():
        assert value not in text, "a secret value is in the Compose document"
    for name in nodes:
        es = services[name]
        mounts = {v["target"]: v for v in es["volumes"]}
        assert mounts["/usr/share/elasticsearch/config/elasticsearch.yml"]["source"].endswith(
            "config/elk/elasticsearch/%s/elasticsearch.yml" % name)
        assert mounts["/usr/share/elasticsearch/data"]["source"] == name.replace("-", "data-")
        assert es["environment"]["ELASTIC_PASSWORD_FILE"] == "/run/secrets/elastic_password"
        assert es["networks"].keys() == {"logging"} and "ports" not in es
        targets = {s["target"] for s in es.get("secrets", [])}
        certs = {"/usr/share/elasticsearch/config/certs/%s" % f for f in ("ca.crt", "transport.crt", "transport.key")}
        assert certs <= targets if env == "prod" else not certs & targets
        assert es["user"] == "10001:0"
    assert config["networks"]["logging"]["internal"] is True
    # passwords come from secret files, read by a wrapper, never written in the document
    # (`config` prints the escaped $$ that the container receives as $)
    assert 'LOGSTASH_WRITER_PASSWORD="$$(cat /run/secrets/logstash_writer_password)"' in " ".join(
        services["logstash"]["command"])
    assert 'KIBANA_SYSTEM_PASSWORD="$$(cat /run/secrets/kibana_system_password)"' in " ".join(
        services["kibana"]["command"])
    graf = services["grafana"]
    assert graf["environment"]["GF_PATHS_CONFIG"] == "/etc/grafana/opsdeck/grafana.ini"
    assert [s["source"] for s in graf["secrets"]] == ["grafana_admin_password"]
    fb = services["filebeat"]
    assert fb["user"] == "0:0" and fb["read_only"] is True and fb["cap_drop"] == ["ALL"]
    assert {v["target"] for v in fb["volumes"]} >= {"/var/lib/docker/containers", "/var/run/docker.sock"}
    assert all(v.get("read_only") for v in fb["volumes"] if v["type"] == "bind")
    for svc in services.values():
        for port in svc.get("ports", []):
            assert port["host_ip"] in ("127.0.0.1", "0.0.0.0") and (
                port["host_ip"] == "127.0.0.1" or port["target"] == 8080)


def test_published_ports_are_loopback_only():
    out = rendered(monitoring={"enabled": True, "grafana": {"port": 3000}},
                   logging={"enabled": True, "kibana_port": 5601})[1]
    services = out["project"]["services"]
    assert services["grafana"]["ports"] == ["127.0.0.1:3000:3000"]
    assert services["kibana"]["ports"] == ["127.0.0.1:5601:5601"]
    assert "logging-edge" in services["kibana"]["networks"]


def test_a_pipeline_change_rolls_only_logstash():
    mdl, before = rendered()
    changed = [dict(f, content=f["content"] + "# changed\n") if f["path"] == "logstash/pipeline/opsdeck.conf"
               else f for f in _elk.render(mdl)]
    after = _compose.render(mdl, SECRETS, [], _monitoring.render(mdl, SECRETS), changed)
    moved = {name for name in before["hashes"] if before["hashes"][name] != after["hashes"][name]}
    assert moved == {"logstash"}


def test_an_ilm_change_restarts_no_elasticsearch_node_and_a_heap_change_rolls_them_all():
    before = rendered(**three_nodes("prod"))[1]
    after = rendered(environment="prod", logging={
        "enabled": True, "elasticsearch": {"nodes": 3}, "retention_days": {"app": 14, "audit": 90}})[1]
    moved = {name for name in before["hashes"] if before["hashes"][name] != after["hashes"][name]}
    # the policy is loaded through the API by setup.sh; Logstash's pipeline names the days
    assert moved == {"logstash"}
    after = rendered(environment="prod", logging={
        "enabled": True, "elasticsearch": {"nodes": 3, "heap": "3g"}})[1]
    moved = {name for name in before["hashes"] if before["hashes"][name] != after["hashes"][name]}
    assert moved == {"es-0", "es-1", "es-2"}


def test_setup_container_reads_files_and_passwords_read_only_on_the_logging_network():
    mdl = model("compose")
    params = _compose.setup_container(mdl, "/opt/opsdeck/shop", "shop_logging")
    assert params["networks"] == [{"name": "shop_logging"}]
    assert params["env"]["ES_URL"] == "http://es-0:9200"
    assert params["read_only"] and params["cap_drop"] == ["ALL"] and params["user"] == "10001:0"
    assert all(m["read_only"] for m in params["mounts"])
    sources = {m["target"]: m["source"] for m in params["mounts"]}
    assert sources["/usr/share/elasticsearch/opsdeck"] == "/opt/opsdeck/shop/config/elk/elasticsearch"
    assert sources[params["env"]["KIBANA_PASSWORD_FILE"]] == "/opt/opsdeck/shop/secrets/kibana_system_password"
    assert params["command"] == ["/usr/share/elasticsearch/opsdeck/setup.sh", "/usr/share/elasticsearch/opsdeck"]
    for value in SECRETS.values():
        assert value not in json.dumps(params)


def test_swarm_stack_ships_the_elk_and_grafana(tmp_path):
    mdl = model("swarm", environment="prod", logging={"enabled": True, "elasticsearch": {"nodes": 3}})
    out = _swarm.render(mdl, SECRETS, [], monitoring_files=_monitoring.render(mdl, SECRETS),
                        elk_files=_elk.render(mdl))
    stack = out["stack"]
    config = compose_config(tmp_path, stack, out["files"])
    services = config["services"]
    assert services["filebeat"]["deploy"]["mode"] == "global"
    for name in ("es-0", "es-1", "es-2", "grafana"):
        deploy = services[name]["deploy"]
        assert deploy["replicas"] == 1
        assert deploy["placement"]["constraints"] == ["node.labels.opsdeck.data == true"]
        assert deploy["update_config"]["order"] == "stop-first"
    for name in ("kibana", "grafana"):
        assert "ports" not in services[name], "only the edge publishes on Swarm"
    targets = {c["target"] for c in services["es-0"]["configs"]}
    assert targets == {"/usr/share/elasticsearch/config/elasticsearch.yml",
                       "/usr/share/elasticsearch/config/jvm.options.d/heap.options"}
    # the role's one-off setup container joins the logging network
    assert config["networks"]["logging"]["attachable"] is True
    assert any(name.startswith("shop_elastic_transport_key_") for name in out["secrets"].values())
    for value in SECRETS.values():
        assert value not in json.dumps(stack)


def test_missing_images_leave_out_grafana_or_the_whole_elk():
    from ansible_collections.opsdeck.stack.plugins.module_utils.model import observability as _observability
    mdl = model("compose")
    assert [entry[0] for entry in _observability.images(mdl)] == [
        "prometheus", "alertmanager", "exporters", "grafana",
        "elasticsearch", "filebeat", "kibana", "logstash"]
    without = _observability.without_components(mdl, ["grafana", "kibana"])
    assert without["monitoring"]["enabled"] and not without["monitoring"]["grafana"]["enabled"]
    assert not without["logging"]["enabled"]
    out = _compose.render(without, SECRETS, [], _monitoring.render(without, SECRETS), [])
    assert not {"grafana", "kibana", "es-0", "filebeat"} & set(out["project"]["services"])


def test_elasticsearch_resources_on_compose_and_swarm(tmp_path):
    mdl, out = rendered()
    es = out["project"]["services"]["es-0"]
    # the default: cpu 500m/2, memory twice the 512m heap (as on Kubernetes)
    assert es["deploy"]["resources"] == {"limits": {"cpus": "2", "memory": str(2 ** 30)},
                                         "reservations": {"cpus": "0.5", "memory": str(2 ** 30)}}
    mdl, out = rendered(logging={"enabled": True, "elasticsearch": {"heap": "1g", "resources": {
        "requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}}})
    config = compose_config(tmp_path, out["project"], out["files"])
    resources = config["services"]["es-0"]["deploy"]["resources"]
    assert float(resources["limits"]["cpus"]) == 1 and int(resources["limits"]["memory"]) == 2 * 2 ** 30
    assert int(resources["reservations"]["memory"]) == 2 * 2 ** 30
    swarm = _swarm.render(mdl, SECRETS, [], monitoring_files=_monitoring.render(mdl, SECRETS),
                          elk_files=_elk.render(mdl))["stack"]["services"]["es-0"]["deploy"]
    assert swarm["resources"]["limits"] == {"cpus": "1", "memory": str(2 * 2 ** 30)}
    assert swarm["replicas"] == 1 and swarm["placement"]["constraints"]
