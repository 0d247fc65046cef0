"""The service part of the model deployed on Compose for real (one stack for all tests):

- two named ports, one published on the host, and two routes, one of them a path without a
  trailing slash (seeds 000, 003, 004). The reference app serves the same endpoints on
  APP_PORT and APP_EXTRA_PORTS and says which port answered, so each route is seen to reach
  the port the model names;
- session affinity on Compose, emulated by the proxy (a client stays on one of two replicas);
- an environment value taken from a secret whose value holds quotes, $ and # (seed 003's
  DATABASE_URL), configuration files from data, inline content and a file beside the
  inventory (seed 000's cluster YAML), a persistent volume the non-root app can write (seed
  001), a bind mount of a directory beside the inventory (seed 004's hot reload) and tmpfs.
"""

import json
import os
import subprocess

import yaml
import urllib.error
import urllib.request

import pytest

from helpers import ROOT, local_inventory, recap, run

NAME = "opsdeck-ports"
PROJECT_DIR = "/opt/%s" % NAME
PROXY_PORT = 18680
ADMIN_PUBLISHED = 18681
TRICKY = 'api "quoted" $HOME #not-a-comment'
CLUSTER = {"cluster": {"enabled": True, "redis_address": "redis-sentinel:26379"}}


def in_container(*argv):
    return subprocess.run(["docker", "exec", NAME + "-box-1"] + list(argv), capture_output=True,
                          text=True, check=False)


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read().decode() or "null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("service-model")
    inventory = local_inventory(folder / "inventory", {
        "stack_name": NAME,
        "stack_environment": "dev",
        "stack_project_dir": PROJECT_DIR,
        "stack_proxy": {"port": PROXY_PORT, "bind": "127.0.0.1"},
        "stack_services": [
            {"name": "api", "image": "opsdeck/refapp:0.1.0", "build": "refapp",
             "ports": [{"name": "http", "port": 8000}, {"name": "admin", "port": 8081}],
             "replicas": 2, "session_affinity": True,
             "env": {"APP_EXTRA_PORTS": "8081", "APP_NAME": {"secret": "app_name"}},
             "health": {"port": "http", "ready": "/health/ready"},
             "routes": [{"path": "/api/"},
                        {"name": "api-hello", "path": "/api/hello", "port": "admin", "rate": "50r/s"}]},
            {"name": "box", "image": "opsdeck/refapp:0.1.0", "build": "refapp",
             "ports": [{"name": "http", "port": 8000, "publish": ADMIN_PUBLISHED}],
             "files": [{"path": "/etc/api/cluster.yaml", "data": CLUSTER},
                       {"path": "/etc/api/motd", "content": "hello\n", "mode": "0440"},
                       {"path": "/etc/api/beside.txt", "source": ".files/beside.txt"}],
             "volumes": [{"name": "data", "path": "/data", "size": "1Gi"},
                         {"name": "code", "path": "/code", "source": "../code", "read_only": True},
                         {"name": "scratch", "path": "/scratch", "type": "tmpfs", "size": "16Mi"}],
             "health": {"ready": {"tcp": True}}},
        ],
        "stack_secrets": {"app_name": TRICKY},
    })
    # Ansible reads every file of an inventory directory as inventory, but hidden ones: the
    # stack's files sit in .files/, the code of the dev bind mount outside the inventory.
    (folder / "inventory" / ".files").mkdir()
    (folder / "inventory" / ".files" / "beside.txt").write_text("from the inventory\n")
    (folder / "code").mkdir()
    (folder / "code" / "app.py").write_text("print('hot reload')\n")
    try:
        first = run(["ansible-playbook", "playbooks/deploy.yml", "-i", inventory], timeout=900,
                    log=os.path.join(ROOT, "build", "logs", "service-model-first.log"))
        second = run(["ansible-playbook", "playbooks/deploy.yml", "-i", inventory], timeout=900,
                     log=os.path.join(ROOT, "build", "logs", "service-model-second.log"))
        yield {"first": first, "second": second}
    finally:
        if not os.environ.get("OPSDECK_KEEP_STACK"):  # set it to look at the stack afterwards
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
    assert status == 200 and body["port"] == 8000 and body["app"] == "refapp"
    ports = subprocess.run(["docker", "port", NAME + "-box-1"], capture_output=True, text=True,
                           check=True).stdout
    assert ports.split() == ["8000/tcp", "->", "127.0.0.1:%d" % ADMIN_PUBLISHED], ports
    assert subprocess.run(["docker", "port", NAME + "-api-1"], capture_output=True, text=True,
                          check=True).stdout == ""


def test_an_environment_value_from_a_secret_arrives_as_written_and_stays_out_of_compose_yaml(deployed):
    status, body = get("http://127.0.0.1:%d/api/hello" % PROXY_PORT)
    assert status == 200 and body["app"] == TRICKY
    with open(PROJECT_DIR + "/compose.yaml", encoding="utf-8") as handle:
        assert "quoted" not in handle.read()
    mode = subprocess.run(["stat", "-c", "%a", PROJECT_DIR + "/secrets/env-api"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert mode == "600"


def test_files_from_data_content_and_beside_the_inventory(deployed):
    assert yaml.safe_load(in_container("cat", "/etc/api/cluster.yaml").stdout) == CLUSTER
    assert in_container("cat", "/etc/api/motd").stdout == "hello\n"
    assert in_container("cat", "/etc/api/beside.txt").stdout == "from the inventory\n"
    assert in_container("sh", "-c", "echo x > /etc/api/motd").returncode != 0, "files are read-only"


def test_volumes_persistent_writable_by_the_app_bind_and_tmpfs(deployed):
    write = in_container("sh", "-c", "echo kept > /data/probe && id -u")
    assert write.returncode == 0, write.stderr
    assert write.stdout.strip() == "10001", "the app runs non-root and still writes its volume"
    assert in_container("cat", "/code/app.py").stdout == "print('hot reload')\n"
    assert in_container("sh", "-c", "touch /code/x").returncode != 0, "read_only bind mount"
    mounts = in_container("cat", "/proc/mounts").stdout
    assert any(line.split()[1] == "/scratch" and line.split()[0] == "tmpfs" for line in mounts.splitlines())


def test_a_client_stays_on_one_of_the_two_replicas(deployed):
    hosts = {get("http://127.0.0.1:%d/api/work?ms=1" % PROXY_PORT)[1]["hostname"] for _attempt in range(12)}
    assert len(hosts) == 1, hosts
    replicas = subprocess.run(["docker", "ps", "-q", "--filter", "label=com.docker.compose.project=" + NAME,
                               "--filter", "label=com.docker.compose.service=api"],
                              capture_output=True, text=True, check=True).stdout.split()
    assert len(replicas) == 2
