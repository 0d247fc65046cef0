"""A service with two named ports, one published on the host, and two routes, one of them
a path without a trailing slash (seeds 000, 003, 004), deployed on Compose for real.

The reference app serves the same endpoints on APP_PORT and APP_EXTRA_PORTS and says which
port answered, so each route is seen to reach the port the model names.
"""

import json
import subprocess
import urllib.error
import urllib.request

import pytest

from helpers import local_inventory, recap, run

NAME = "opsdeck-ports"
PROJECT_DIR = "/opt/%s" % NAME
PROXY_PORT = 18680
ADMIN_PUBLISHED = 18681


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read().decode() or "null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    inventory = local_inventory(tmp_path_factory.mktemp("ports"), {
        "stack_name": NAME,
        "stack_environment": "dev",
        "stack_project_dir": PROJECT_DIR,
        "stack_proxy": {"port": PROXY_PORT, "bind": "127.0.0.1"},
        "stack_services": [
            {"name": "api", "image": "opsdeck/refapp:0.1.0", "build": "refapp",
             "ports": [{"name": "http", "port": 8000},
                       {"name": "admin", "port": 8081, "publish": ADMIN_PUBLISHED}],
             "env": {"APP_EXTRA_PORTS": "8081"},
             "health": {"port": "http", "ready": "/health/ready"},
             "routes": [{"path": "/api/"},
                        {"name": "api-hello", "path": "/api/hello", "port": "admin", "rate": "50r/s"}]},
        ],
    })
    try:
        first = run(["ansible-playbook", "playbooks/deploy.yml", "-i", inventory], timeout=900)
        second = run(["ansible-playbook", "playbooks/deploy.yml", "-i", inventory], timeout=900)
        yield {"first": first, "second": second}
    finally:
        subprocess.run(["docker", "compose", "-p", NAME, "down", "-v", "--timeout", "3"],
                       capture_output=True, check=False)
        subprocess.run(["rm", "-rf", PROJECT_DIR], check=False)


def test_deploys_and_a_second_run_changes_nothing(deployed):
    assert deployed["first"].returncode == 0, deployed["first"].stdout[-3000:]
    assert deployed["second"].returncode == 0, deployed["second"].stdout[-3000:]
    assert recap(deployed["second"].stdout)["changed"] == 0, deployed["second"].stdout[-3000:]


def test_each_route_reaches_the_port_the_model_names(deployed):
    base = "http://127.0.0.1:%d" % PROXY_PORT
    assert get(base + "/api/hello")[1]["port"] == 8081, "/api/hello is routed to the admin port"
    assert get(base + "/api/hello/")[1]["port"] == 8081
    status, body = get(base + "/api/work?ms=1")
    assert status == 200 and body["port"] == 8000
    # /api/hellox is not under the route /api/hello: it falls to /api/, the main port
    status, body = get(base + "/api/hellox")
    assert status == 200 and body["port"] == 8000, body


def test_the_published_port_answers_on_the_host_only_where_asked(deployed):
    status, body = get("http://127.0.0.1:%d/api/hello" % ADMIN_PUBLISHED)
    assert status == 200 and body["port"] == 8081
    ports = subprocess.run(["docker", "port", NAME + "-api-1"], capture_output=True, text=True,
                           check=True).stdout
    assert ports.split() == ["8081/tcp", "->", "127.0.0.1:%d" % ADMIN_PUBLISHED], ports
