"""The Compose renderer: what the rendered project does when Compose runs it."""

import copy
import json
import os
import shutil
import subprocess

import yaml

from ansible_collections.opsdeck.stack.plugins.filter.stack import compose_project
from ansible_collections.opsdeck.stack.plugins.module_utils.compose.render import render
from ansible_collections.opsdeck.stack.plugins.module_utils.model.stack import normalize

RAW = {
    "name": "shop",
    "services": [
        {"name": "api", "image": "opsdeck/refapp:0.1.0", "port": 8000, "replicas": 2,
         "uses": ["postgres", "redis"], "secrets": ["admin_token"],
         "health": {"ready": "/health/ready"},
         "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                       "limits": {"cpu": "500m", "memory": "256Mi"}},
         "route": {"path": "/api/"}},
        {"name": "worker", "image": "opsdeck/refapp:0.1.0", "uses": ["redis"]},
    ],
    "postgres": {"enabled": True},
    "redis": {"enabled": True, "password_secret": "redis_password"},
    "secrets": {"admin_token": "tok-123", "postgres_password": "pg-pass-1",
                "redis_password": "redis-pass-1"},
}
PROXY_FILES = [{"path": "nginx.conf", "content": "events {}\n", "mode": "0644", "secret": False},
               {"path": "htpasswd", "content": "u:$2b$hash\n", "mode": "0600", "secret": True}]


def rendered(raw=None, secrets=None, proxy_files=None):
    raw = copy.deepcopy(raw or RAW)
    model = normalize(raw)
    return render(model, secrets or raw["secrets"], proxy_files or PROXY_FILES)


def test_secret_values_stay_out_of_the_document_and_files_are_0600():
    out = compose_project(normalize(copy.deepcopy(RAW)), RAW["secrets"], PROXY_FILES)
    for value in RAW["secrets"].values():
        assert value not in out["yaml"]
    secret_files = [f for f in out["files"] if f["secret"]]
    assert {f["path"] for f in secret_files} == {
        "secrets/admin_token", "secrets/postgres_password", "secrets/redis_password",
        "secrets/proxy-htpasswd"}
    assert all(f["mode"] == "0600" for f in secret_files)
    labels = yaml.safe_load(out["yaml"])["services"]["api"]["labels"]
    assert labels["org.opsdeck.secret.admin_token"].startswith("sha256:")


def test_changing_the_proxy_config_rolls_only_the_proxy():
    before = rendered()["hashes"]
    files = copy.deepcopy(PROXY_FILES)
    files[0]["content"] = "events { worker_connections 512; }\n"
    after = rendered(proxy_files=files)["hashes"]
    assert {name for name in before if before[name] != after[name]} == {"proxy"}


def test_changing_a_secret_rolls_exactly_its_users():
    before = rendered()["hashes"]
    secrets = dict(RAW["secrets"], redis_password="redis-pass-2")
    after = rendered(secrets=secrets)["hashes"]
    # redis itself and the two services that use it (api, worker), not postgres or proxy.
    assert {name for name in before if before[name] != after[name]} == {"redis", "api", "worker"}


def test_networks_health_and_resources():
    project = rendered()["project"]
    services = project["services"]
    assert project["networks"]["backend"] == {"internal": True}
    assert services["postgres"]["networks"] == ["backend"]
    assert services["redis"]["networks"] == ["backend"]
    assert services["proxy"]["networks"] == ["frontend"]
    assert services["api"]["networks"] == ["frontend", "backend"]
    assert services["worker"]["networks"] == ["backend"]
    assert services["api"]["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                             "redis": {"condition": "service_healthy"}}
    assert services["proxy"]["depends_on"] == {"api": {"condition": "service_healthy"}}
    assert services["api"]["deploy"] == {"replicas": 2, "resources": {
        "limits": {"cpus": "0.5", "memory": str(256 * 1024 ** 2)},
        "reservations": {"cpus": "0.1", "memory": str(64 * 1024 ** 2)}}}
    assert services["proxy"]["ports"] == ["0.0.0.0:8080:8080"]
    assert "ports" not in services["api"], "only the proxy publishes ports"
    for svc in services.values():
        assert svc["user"] == "10001:10001" and svc["read_only"] is True
        assert svc["cap_drop"] == ["ALL"]
    assert "/health/ready" in " ".join(services["api"]["healthcheck"]["test"])


def test_docker_compose_accepts_the_project(tmp_path):
    """Run the real `docker compose config` (Compose v2) over the rendered project."""
    compose = shutil.which("docker")
    assert compose, "the docker CLI is required (scripts/setup.sh installs it)"
    out = compose_project(normalize(copy.deepcopy(RAW)), RAW["secrets"], PROXY_FILES)
    for item in out["files"]:
        dest = tmp_path / item["path"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(item["content"])
        os.chmod(dest, int(item["mode"], 8))
    (tmp_path / "compose.yaml").write_text(out["yaml"])
    result = subprocess.run(["docker", "compose", "--project-directory", str(tmp_path), "-f",
                             str(tmp_path / "compose.yaml"), "config", "--format", "json"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["name"] == "shop"
    assert set(config["services"]) == {"api", "worker", "postgres", "redis", "proxy"}
    assert config["services"]["proxy"]["secrets"][0]["target"] == "htpasswd"
