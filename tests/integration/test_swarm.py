"""The stack on a real single-node Docker Swarm (the local engine), through playbooks/deploy.yml.

A stack of its own (opsdeck-swarm, proxy published in host mode on port 18580) is deployed
with stack_target: swarm. If the engine was not in a swarm before, the module fixture makes
it leave again at the end. Every answer through nginx that is neither 200 nor 429 during an
update counts as a failure.
"""

import json
import os
import stat
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import yaml

import helpers
from helpers import SWARM_LEAVE_MARKER, recap, run

NAME = "opsdeck-swarm"
PORT = 18580
PROJECT_DIR = "/opt/%s" % NAME
TOKEN_1 = "swarm-admin-token-1234"
TOKEN_2 = "swarm-admin-token-5678"
STACK = {
    "stack_name": NAME,
    "stack_environment": "dev",
    "stack_target": "swarm",
    "stack_project_dir": PROJECT_DIR,
    "api_version": "1.0.0",
    "api_fail_ready": "0",
    "admin_token": TOKEN_1,
    "stack_services": [{
        "name": "api", "image": "opsdeck/refapp:0.1.0", "build": "refapp", "port": 8000,
        "replicas": 2, "uses": ["redis"], "secrets": ["admin_token"],
        "env": {"APP_NAME": "api", "APP_VERSION": "{{ api_version }}",
                "APP_FAIL_READY": "{{ api_fail_ready }}",
                "ADMIN_TOKEN_FILE": "/run/secrets/admin_token", "TENANTS": "acme",
                "APP_SHUTDOWN_DELAY": "3"},
        "health": {"ready": "/health/ready", "interval": 2, "retries": 3, "start_period": 4},
        "route": {"path": "/api/", "rate": "200r/s", "burst": 200}}],
    "stack_redis": {"enabled": True, "persistence": "none"},
    "stack_proxy": {"port": PORT, "bind": "127.0.0.1"},
    "stack_monitoring": {"enabled": True, "scrape_interval": "5s",
                         "redis_queues": [{"key": "jobs:pending", "max_length": 1000}]},
    "stack_secrets": {"admin_token": "{{ admin_token }}", "grafana_admin_password": "grafana-pass-1234"},
}


def docker(*args):
    return subprocess.run(["docker"] + list(args), capture_output=True, text=True, check=True).stdout


def service(name):
    return json.loads(docker("service", "inspect", "%s_%s" % (NAME, name)))[0]


def api_tasks():
    return set(docker("ps", "-q", "--filter", "label=com.docker.swarm.service.name=%s_api" % NAME).split())


def version():
    with urllib.request.urlopen("http://127.0.0.1:%d/api/hello" % PORT, timeout=5) as response:
        return json.load(response)["version"]


def tenant_status(token):
    request = urllib.request.Request("http://127.0.0.1:%d/api/tenants/acme/status" % PORT,
                                     headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def deploy(inventory, *extra, timeout=900):
    argv = ["ansible-playbook", "playbooks/deploy.yml", "-i", inventory]
    for item in extra:
        argv += ["-e", item]
    return run(argv, timeout=timeout)


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    state = docker("info", "--format", "{{.Swarm.LocalNodeState}}").strip()
    inv = tmp_path_factory.mktemp("swarm-inventory")
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local",
        "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}}}))
    (inv / "group_vars" / "all" / "stack.yml").write_text(yaml.safe_dump(STACK))
    result = deploy(str(inv))
    assert result.returncode == 0, result.stdout[-3000:]
    yield str(inv)
    subprocess.run(["docker", "stack", "rm", NAME], capture_output=True, check=False)
    for _attempt in range(30):
        if not docker("ps", "-aq", "--filter", "label=com.docker.stack.namespace=%s" % NAME).strip():
            break
        time.sleep(1)
    subprocess.run(["docker", "volume", "rm", "%s_redisdata" % NAME], capture_output=True, check=False)
    subprocess.run(["rm", "-rf", PROJECT_DIR], check=False)
    if state != "active":
        # Not now: on this engine (20.10) `docker swarm leave` breaks name resolution on the
        # bridge networks that exist at that moment, for the containers started after it
        # (nginx of a Compose test running in parallel then fails "host not found in
        # upstream"). tests/conftest.py leaves the swarm once every test has finished.
        with open(SWARM_LEAVE_MARKER, "w", encoding="utf-8") as handle:
            handle.write("the tests initialised this swarm\n")


def test_deploy_runs_the_stack_the_swarm_way(inventory):
    assert version() == "1.0.0"
    assert docker("info", "--format", "{{.Swarm.LocalNodeState}}").strip() == "active"
    # Secrets: 0600 files on the manager, Swarm secrets named after their content.
    mode = stat.S_IMODE(os.stat(os.path.join(PROJECT_DIR, "secrets", "admin_token")).st_mode)
    assert mode == 0o600
    names = [s["SecretName"] for s in service("api")["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"]]
    assert any(n.startswith("%s_admin_token_" % NAME) for n in names), names
    # The edge publishes in host mode; the data store is pinned to the labelled node.
    ports = service("proxy")["Spec"]["EndpointSpec"]["Ports"]
    assert ports == [{"Protocol": "tcp", "TargetPort": 8080, "PublishedPort": PORT,
                      "PublishMode": "host"}]
    constraints = service("redis")["Spec"]["TaskTemplate"]["Placement"]["Constraints"]
    assert constraints == ["node.labels.opsdeck.data == true"]
    node = json.loads(docker("node", "inspect", "self"))[0]
    assert node["Spec"]["Labels"].get("opsdeck.data") == "true"
    # Updates: start-first, automatic rollback, monitored longer than the health check needs
    # (start 4 s + 4 probes of 2 s interval + 3 s timeout).
    update = service("api")["Spec"]["UpdateConfig"]
    assert update["Order"] == "start-first" and update["FailureAction"] == "rollback"
    assert update["Monitor"] / 1e9 >= 4 + 4 * (2 + 3)


def test_prometheus_on_swarm_scrapes_every_task_and_exporter(inventory):
    """Prometheus runs as a Swarm service (configs versioned like the rest) and finds the app's
    tasks and the exporters by DNS; asked from inside its container (not published on Swarm)."""
    (prometheus,) = docker("ps", "-q", "--filter",
                           "label=com.docker.swarm.service.name=%s_prometheus" % NAME).split()
    script = ("import json, urllib.request; print(json.dumps([(t['labels']['job'], t['health']) for t in "
              "json.load(urllib.request.urlopen('http://127.0.0.1:9090/api/v1/targets'))"
              "['data']['activeTargets']]))")
    wanted = {"prometheus", "api", "alertmanager", "redis", "nginx", "node"}
    targets = []
    for _attempt in range(24):  # DNS service discovery refreshes every 30 s
        targets = json.loads(docker("exec", prometheus, "python3", "-c", script))
        if wanted <= {job for job, health in targets if health == "up"} and \
                sum(1 for job, health in targets if job == "api" and health == "up") == 2:
            break
        time.sleep(5)
    assert wanted <= {job for job, health in targets if health == "up"}, targets
    assert sorted(h for job, h in targets if job == "api") == ["up", "up"], "one target per api task"
    assert service("node-exporter")["Spec"]["Mode"] == {"Global": {}}
    assert not service("prometheus")["Spec"].get("EndpointSpec", {}).get("Ports"), "not published"


def test_second_deploy_changes_nothing(inventory):
    result = deploy(inventory, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    assert recap(result.stdout)["changed"] == 0, result.stdout[-3000:]


def test_rolling_update_under_load_has_no_failed_request(inventory):
    before = api_tasks()
    with helpers.Load(PORT) as load:
        time.sleep(2)
        result = deploy(inventory, "api_version=1.1.0")
        time.sleep(2)
    assert result.returncode == 0, result.stdout[-3000:]
    assert load.counts.get(200, 0) > 50, load.counts
    assert load.failures == [], "failed requests during the update: %s (all: %s)" % (
        load.failures[:10], load.counts)
    assert version() == "1.1.0"
    after = api_tasks()
    assert len(after) == 2 and not after & before, "both tasks must be new"


def test_broken_version_is_rolled_back_automatically(inventory):
    before = api_tasks()
    with helpers.Load(PORT) as load:
        result = deploy(inventory, "api_version=2.0.0", "api_fail_ready=1")
        time.sleep(2)
    assert result.returncode != 0
    assert "Swarm did not accept the new version of api and rolled it back" in result.stdout, \
        result.stdout[-3000:]
    assert load.failures == [], "failed requests during the rollback: %s" % load.failures[:10]
    assert version() == "1.1.0", "the previous version must still serve"
    assert api_tasks() == before
    # Back on the good version, nothing is left to do.
    result = deploy(inventory, "api_version=1.1.0", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    assert recap(result.stdout)["changed"] == 0, result.stdout[-3000:]


def test_changed_secret_rolls_its_services_and_old_versions_go(inventory):
    old = set(docker("secret", "ls", "--format", "{{.Name}}").split())
    before = api_tasks()
    assert tenant_status(TOKEN_1) == 200
    result = deploy(inventory, "api_version=1.1.0", "admin_token=" + TOKEN_2, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    assert TOKEN_2 not in result.stdout, "secret values never appear in output"
    assert "secret admin_token changed" in result.stdout
    assert not api_tasks() & before, "the api tasks use the new secret: they were replaced"
    assert tenant_status(TOKEN_2) == 200 and tenant_status(TOKEN_1) == 401
    current = set(docker("secret", "ls", "--format", "{{.Name}}").split())
    admin = {n for n in current if n.startswith("%s_admin_token_" % NAME)}
    assert len(admin) == 1 and not admin & old, "only the new version remains: %s" % admin
