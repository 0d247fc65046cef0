"""Rolling upgrades on the real local Docker engine, with load running through nginx.

A stack of its own (project opsdeck-upgrade, proxy on 127.0.0.1:18180) is deployed, then
upgraded to a new version and to a broken one while a bounded load generator sends requests
through nginx; every answer that is neither 200 nor 429 counts as a failure.
"""

import json
import os
import subprocess
import time
import urllib.request

import pytest
import yaml

import helpers
from helpers import recap, run

NAME = "opsdeck-upgrade"
PORT = 18180
PROJECT_DIR = "/opt/%s" % NAME
STACK = {
    "stack_name": NAME,
    "stack_environment": "dev",
    "stack_project_dir": PROJECT_DIR,
    "api_version": "1.0.0",
    "api_fail_ready": "0",
    "stack_services": [{
        "name": "api", "image": "opsdeck/refapp:0.1.0", "build": "refapp", "port": 8000,
        "replicas": 2, "uses": ["redis"], "secrets": ["admin_token"],
        "env": {"APP_NAME": "api", "APP_VERSION": "{{ api_version }}",
                "APP_FAIL_READY": "{{ api_fail_ready }}",
                "ADMIN_TOKEN_FILE": "/run/secrets/admin_token", "TENANTS": "acme"},
        "health": {"ready": "/health/ready", "interval": 2, "retries": 3, "start_period": 4},
        "route": {"path": "/api/", "rate": "200r/s", "burst": 200}}],
    "stack_redis": {"enabled": True, "persistence": "none"},
    "stack_proxy": {"port": PORT, "bind": "127.0.0.1"},
    "stack_secrets": {"admin_token": "upgrade-admin-token-1234"},
}


def version():
    with urllib.request.urlopen("http://127.0.0.1:%d/api/hello" % PORT, timeout=5) as response:
        return json.load(response)["version"]


def api_containers():
    out = subprocess.run(["docker", "compose", "-p", NAME, "ps", "-q", "api"], capture_output=True,
                         text=True, check=True).stdout.split()
    return out


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    inv = tmp_path_factory.mktemp("upgrade-inventory")
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local",
        "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}}}))
    (inv / "group_vars" / "all" / "stack.yml").write_text(yaml.safe_dump(STACK))
    result = run(["ansible-playbook", "playbooks/deploy.yml", "-i", str(inv)], timeout=900)
    assert result.returncode == 0, result.stdout[-3000:]
    yield str(inv)
    subprocess.run(["docker", "compose", "-p", NAME, "down", "-v", "--timeout", "5"],
                   capture_output=True, check=False)
    subprocess.run(["rm", "-rf", PROJECT_DIR], check=False)


def test_rolling_upgrade_under_load_has_no_failed_request(inventory):
    assert version() == "1.0.0"
    before = set(api_containers())
    with helpers.Load(PORT) as load:
        time.sleep(2)
        result = run(["ansible-playbook", "playbooks/upgrade.yml", "-i", inventory,
                      "-e", "api_version=1.1.0"], timeout=900)
        time.sleep(2)
    assert result.returncode == 0, result.stdout[-3000:]
    assert load.counts.get(200, 0) > 50, load.counts
    assert load.failures == [], "failed requests during the upgrade: %s (all: %s)" % (
        load.failures[:10], load.counts)
    assert version() == "1.1.0"
    after = set(api_containers())
    assert len(after) == 2 and not after & before, "both replicas must be new containers"


def test_second_upgrade_run_changes_nothing(inventory):
    result = run(["ansible-playbook", "playbooks/upgrade.yml", "-i", inventory,
                  "-e", "api_version=1.1.0"], timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    assert recap(result.stdout)["changed"] == 0, result.stdout[-3000:]


def test_broken_version_is_rolled_back_without_failed_requests(inventory):
    before = set(api_containers())
    with helpers.Load(PORT) as load:
        result = run(["ansible-playbook", "playbooks/upgrade.yml", "-i", inventory,
                      "-e", "api_version=2.0.0", "-e", "api_fail_ready=1"], timeout=900)
        time.sleep(2)
    assert result.returncode != 0
    assert "The upgrade of api was rolled back" in result.stdout, result.stdout[-3000:]
    assert load.failures == [], "failed requests during the rollback: %s" % load.failures[:10]
    assert version() == "1.1.0", "the previous version must still serve"
    assert set(api_containers()) == before
    with open(os.path.join(PROJECT_DIR, "compose.yaml"), encoding="utf-8") as handle:
        assert "APP_VERSION: 1.1.0" in handle.read().replace("'", "")


def test_check_mode_on_a_stack_stopped_by_hand_predicts_the_start(inventory):
    """`deploy.yml --check` on stopped containers says what it would start, and fails nothing."""
    subprocess.run(["docker", "compose", "-p", NAME, "stop", "--timeout", "5"], capture_output=True,
                   check=True)
    try:
        result = run(["ansible-playbook", "playbooks/deploy.yml", "-i", inventory, "--check",
                      "-e", "api_version=1.1.0"], timeout=600)
        assert result.returncode == 0, result.stdout[-3000:]
        assert "would start: %s-" % NAME in result.stdout
        assert recap(result.stdout)["changed"] >= 1
    finally:
        result = run(["ansible-playbook", "playbooks/deploy.yml", "-i", inventory,
                      "-e", "api_version=1.1.0"], timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    assert version() == "1.1.0"
