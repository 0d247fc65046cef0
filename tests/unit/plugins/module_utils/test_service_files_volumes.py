"""Environment values from secrets (seed 003's DATABASE_URL), configuration files rendered
from the model (seed 000's cluster/tenants YAML), and volumes: persistent with size and
class (seed 001), bind mounts for hot reload in dev (seed 004), tmpfs; on every target."""

import copy

import pytest
import yaml
from k8s_support import by, validation_errors

from ansible_collections.opsdeck.stack.plugins.module_utils.compose import render as compose
from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import manifests as k8s
from ansible_collections.opsdeck.stack.plugins.module_utils.model import fidelity
from ansible_collections.opsdeck.stack.plugins.module_utils.model.stack import ModelError, normalize
from ansible_collections.opsdeck.stack.plugins.module_utils.swarm import render as swarm

SECRETS = {"db_url": 'mysql://app:p4ss"w$rd#1@db:3306/app', "admin_token": "t0ken-value-0123"}
CLUSTER = {"cluster": {"enabled": True, "redis_address": "redis-sentinel:26379", "geo_routing": True},
           "tenants": {"region_routing": {"enabled": True, "default_region": "us-east"}}}
RAW = {
    "name": "edu",
    "environment": "dev",
    "proxy": {"enabled": False},
    "services": [
        {"name": "checkin", "image": "registry.example.com/edu/checkin:1.0", "port": 3000, "replicas": 2,
         "env": {"LOG_LEVEL": "info", "DATABASE_URL": {"secret": "db_url"}},
         "files": [{"path": "/etc/checkin/config.yaml", "data": CLUSTER},
                   {"path": "/etc/checkin/limits.json", "data": {"max": 5}, "mode": "0440"},
                   {"path": "/etc/checkin/motd", "content": "hello\n"}],
         "volumes": [{"name": "uploads", "path": "/data", "size": "10Gi", "class": "ssd"},
                     {"name": "cache", "path": "/cache", "type": "tmpfs", "size": "64Mi"}]},
        {"name": "dev-api", "image": "registry.example.com/edu/api:dev", "port": 8000,
         "volumes": [{"name": "code", "path": "/app", "source": "."},
                     {"name": "shared", "path": "/shared", "access": "ReadWriteMany", "size": "1Gi"}]},
    ],
    "secrets": SECRETS,
}


def model(target="compose", base_dir="/srv/inventory", **changes):
    raw = copy.deepcopy(RAW)
    raw.update(changes, target=target)
    return normalize(raw, base_dir=base_dir)


def errors_of(raw, base_dir="/srv/inventory"):
    with pytest.raises(ModelError) as info:
        normalize(raw, base_dir=base_dir)
    return info.value.errors


def test_normalised_env_files_and_volumes():
    checkin = model()["services"][0]
    assert checkin["env"] == {"LOG_LEVEL": "info"} and checkin["env_secrets"] == {"DATABASE_URL": "db_url"}
    files = {f["key"]: f for f in checkin["files"]}
    assert yaml.safe_load(files["etc_checkin_config.yaml"]["content"]) == CLUSTER
    assert files["etc_checkin_limits.json"]["content"].startswith("{\n") and files["etc_checkin_limits.json"]["mode"] == "0440"
    assert files["etc_checkin_motd"] == {"path": "/etc/checkin/motd", "key": "etc_checkin_motd",
                                         "content": "hello\n", "mode": "0444"}
    assert [(v["name"], v["type"]) for v in checkin["volumes"]] == [("uploads", "volume"), ("cache", "tmpfs")]
    code = model()["services"][1]["volumes"][0]
    assert (code["type"], code["source"]) == ("bind", "/srv/inventory")
    assert "p4ss" not in repr(model()), "secret values stay out of the model"


@pytest.mark.parametrize("change, expected", [
    ({"env": {"X": {"secret": "nope"}}}, "stack_services[checkin].env.X: secret 'nope' is not defined"),
    ({"env": {"X": {"secrett": "db_url"}}}, "stack_services[checkin].env.X.secrett: unknown field"),
    ({"files": [{"path": "/a", "content": "x", "data": {"a": 1}}]},
     "stack_services[checkin].files[/a]: needs exactly one of content, data and source (got content, data)"),
    ({"files": [{"path": "/a"}]}, "stack_services[checkin].files[/a]: needs exactly one of content, data and source"),
    ({"files": [{"path": "/a", "source": "a.yml"}]},
     "stack_services[checkin].files[/a].source: 'a.yml' cannot be read from /srv/inventory (No such file"),
    ({"files": [{"path": "/a", "content": "x", "template": True}]},
     "stack_services[checkin].files[/a].template: templates a source file"),
    ({"files": [{"path": "/a", "data": {"when": object()}}]}, "stack_services[checkin].files[/a].data: holds"),
    ({"files": [{"path": "/a", "content": "x", "mode": "999"}]}, "stack_services[checkin].files[/a].mode: '999' is not valid"),
    ({"files": [{"path": "/data", "content": "x"}]}, "stack_services[checkin]: /data is mounted more than once"),
    ({"volumes": [{"name": "v", "path": "/v", "type": "bind"}]},
     "stack_services[checkin].volumes[v].source: is required for a bind mount"),
    ({"volumes": [{"name": "v", "path": "/v", "source": "/x", "size": "1Gi"}]},
     "stack_services[checkin].volumes[v].size: does not apply to a bind mount"),
    ({"volumes": [{"name": "v", "path": "/v", "type": "tmpfs", "source": "/x"}]},
     "stack_services[checkin].volumes[v].source: only a bind mount has a source"),
    ({"volumes": [{"name": "v", "path": "relative"}]}, "stack_services[checkin].volumes[v].path: 'relative' is not valid"),
])
def test_errors_name_the_variable_file_or_volume(change, expected):
    raw = copy.deepcopy(RAW)
    raw["services"][0].update(change)
    errors = errors_of(raw)
    assert any(e.startswith(expected) for e in errors), errors


def test_a_relative_bind_source_needs_the_inventory_directory():
    errors = errors_of(copy.deepcopy(RAW), base_dir=None)
    assert any(e.startswith("stack_services[dev-api].volumes[code].source: '.' is relative") for e in errors)


def test_compose_env_file_files_volumes_and_the_volumes_to_hand_over():
    rendered = compose.render(model(), SECRETS)
    project, files = rendered["project"], {f["path"]: f for f in rendered["files"]}
    checkin = project["services"]["checkin"]
    assert checkin["env_file"] == ["./secrets/env-checkin"]
    env_file = files["secrets/env-checkin"]
    assert env_file["mode"] == "0600" and env_file["secret"] is True
    assert env_file["content"] == 'DATABASE_URL="mysql://app:p4ss\\"w\\$rd#1@db:3306/app"\n'
    assert "p4ss" not in yaml.safe_dump(project), "secret values stay out of compose.yaml"
    assert "./config/services/checkin/etc_checkin_config.yaml:/etc/checkin/config.yaml:ro" in checkin["volumes"]
    assert files["config/services/checkin/etc_checkin_limits.json"]["mode"] == "0440"
    assert "checkin-uploads:/data" in checkin["volumes"] and "checkin-uploads" in project["volumes"]
    assert {"type": "tmpfs", "target": "/cache", "tmpfs": {"size": 64 * 1024 ** 2}} in checkin["volumes"]
    # the role creates this volume and hands it to the service's user before Compose starts
    assert rendered["volume_init"][0] == {"key": "checkin-uploads", "volume": "edu_checkin-uploads",
                                          "image": "registry.example.com/edu/checkin:1.0",
                                          "owner": "10001:10001", "path": "/data"}
    assert [v["key"] for v in rendered["volume_init"]] == ["checkin-uploads", "dev-api-shared"]
    assert files["config/services/checkin/etc_checkin_limits.json"]["owner"] == 10001
    assert "/srv/inventory:/app" in project["services"]["dev-api"]["volumes"]


def test_compose_rolls_exactly_the_service_whose_file_or_env_secret_changed():
    before = compose.render(model(), SECRETS)["hashes"]
    after = compose.render(model(), dict(SECRETS, db_url="mysql://other"))["hashes"]
    assert before["checkin"] != after["checkin"] and before["dev-api"] == after["dev-api"]
    raw = copy.deepcopy(RAW)
    raw["services"][0]["files"][2]["content"] = "changed\n"
    changed = compose.render(normalize(raw, base_dir="/srv/inventory"), SECRETS)["hashes"]
    assert changed["checkin"] != before["checkin"] and changed["dev-api"] == before["dev-api"]


def test_swarm_versions_the_files_as_configs():
    rendered = swarm.render(model("swarm"), SECRETS)
    stack = rendered["stack"]
    targets = {c["target"] for c in stack["services"]["checkin"]["configs"]}
    assert targets == {"/etc/checkin/config.yaml", "/etc/checkin/limits.json", "/etc/checkin/motd"}
    assert stack["services"]["checkin"]["env_file"] == ["./secrets/env-checkin"]
    rep = fidelity.report(model("swarm"))
    dropped = {e["field"] for e in rep["dropped"]}
    assert "stack_services[checkin].volumes[uploads].size" in dropped
    assert "stack_services[checkin].env.DATABASE_URL" in {e["field"] for e in rep["emulated"]}


def test_kubernetes_statefulset_claims_configmap_and_secret_env():
    manifests = k8s.render(model("kubernetes"), SECRETS)
    assert validation_errors(manifests) == []
    checkin = by(manifests, "StatefulSet", "checkin")
    claim = checkin["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}},
                             "storageClassName": "ssd"}
    pod = checkin["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "db-url", "key": "db_url"}}} in container["env"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/checkin/config.yaml"] == {"name": "files", "mountPath": "/etc/checkin/config.yaml",
                                                  "subPath": "etc_checkin_config.yaml", "readOnly": True}
    assert mounts["/data"]["name"] == "vol-uploads"
    assert {"name": "vol-cache", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}} in pod["volumes"]
    config_map = by(manifests, "ConfigMap", "checkin-files")
    assert yaml.safe_load(config_map["data"]["etc_checkin_config.yaml"]) == CLUSTER
    assert by(manifests, "Secret", "db-url")
    # a shared claim for ReadWriteMany, and the bind mount is not rendered (reported dropped)
    assert by(manifests, "PersistentVolumeClaim", "dev-api-shared")["spec"]["accessModes"] == ["ReadWriteMany"]
    dev_api = by(manifests, "Deployment", "dev-api")["spec"]["template"]["spec"]
    assert "/app" not in {m["mountPath"] for m in dev_api["containers"][0]["volumeMounts"]}
    rep = fidelity.report(model("kubernetes"))
    assert "stack_services[dev-api].volumes[code]" in {e["field"] for e in rep["dropped"]}
    assert not k8s.secret_values_in(manifests, SECRETS)


def test_kubernetes_rolls_the_pods_of_a_changed_file():
    before = by(k8s.render(model("kubernetes"), SECRETS), "StatefulSet", "checkin")
    raw = copy.deepcopy(RAW)
    raw["services"][0]["files"][2]["content"] = "changed\n"
    raw["target"] = "kubernetes"
    after = by(k8s.render(normalize(raw, base_dir="/srv"), SECRETS), "StatefulSet", "checkin")
    key = k8s.FILES_CHECKSUM_ANNOTATION
    assert before["spec"]["template"]["metadata"]["annotations"][key] != \
        after["spec"]["template"]["metadata"]["annotations"][key]
