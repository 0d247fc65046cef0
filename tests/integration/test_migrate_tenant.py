"""playbooks/migrate_tenant.yml for real: the move of a tenant from the shared instance to a
dedicated one, with two small stacks on the local Docker engine.

opsdeck-mig-shared (proxy 127.0.0.1:18380, two replicas of the reference app, Redis with a
password) is deployed by the module fixture and holds three tenants' configuration: acme,
globex and acme2 (whose keys share acme's prefix and must not move). The playbook deploys
opsdeck-mig-dedicated (127.0.0.1:18381) from a second inventory directory and moves acme there.
The app keeps its tenants' data under a key prefix of its own (REDIS_KEY_PREFIX in the
service's environment), which the playbook reads from the shared model. Both stacks are torn
down at the end.
"""

import json
import os
import stat
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import redis
import yaml

from helpers import recap, run

SHARED, DEDICATED = "opsdeck-mig-shared", "opsdeck-mig-dedicated"
PORTS = {SHARED: 18380, DEDICATED: 18381}
VAULTS = {
    SHARED: {"vault_redis_password": "mig-shared-redis-Secret-5521", "vault_admin_token": "mig-shared-admin-Secret-8812"},
    DEDICATED: {"vault_redis_password": "mig-dedicated-redis-Secret-3390",
                "vault_admin_token": "mig-dedicated-admin-Secret-6604"},
}
EXPORT_DIR = "/var/backups/opsdeck/%s/migrations" % SHARED
# the app's key prefix (not the reference app's default app:): the playbook must find it
PREFIX = "acct:"
OUTPUTS = []


def stack(name, replicas):
    return {
        "stack_name": name,
        "stack_environment": "dev",
        "stack_project_dir": "/opt/%s" % name,
        "stack_services": [{
            # a tag of its own: suites of other checkouts on the same Docker engine build
            # opsdeck/refapp:0.1.0 from their own recipe (this app reads REDIS_KEY_PREFIX)
            "name": "api", "image": "opsdeck/refapp:mig-live", "build": "refapp", "port": 8000,
            "replicas": replicas, "uses": ["redis"], "secrets": ["admin_token"],
            "env": {"APP_NAME": "api", "ADMIN_TOKEN_FILE": "/run/secrets/admin_token",
                    "REDIS_KEY_PREFIX": PREFIX},
            "health": {"ready": "/health/ready", "interval": 2, "retries": 5, "start_period": 4},
            "route": {"path": "/api/", "rate": "100r/s", "burst": 100}}],
        "stack_redis": {"enabled": True, "persistence": "aof", "password_secret": "redis_password"},
        "stack_proxy": {"port": PORTS[name], "bind": "127.0.0.1"},
        "stack_secrets": {"redis_password": "{{ vault_redis_password }}", "admin_token": "{{ vault_admin_token }}"},
    }


def write_inventory(root, name, replicas):
    (root / "group_vars" / "all").mkdir(parents=True)
    (root / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local",
        "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}}}))
    (root / "group_vars" / "all" / "stack.yml").write_text(yaml.safe_dump(stack(name, replicas)))
    (root / "group_vars" / "all" / "vault.yml").write_text(yaml.safe_dump(VAULTS[name]))
    return str(root)


def playbook(name, inventory, *args, timeout=900):
    result = run(["ansible-playbook", "playbooks/%s" % name, "-i", inventory] + list(args), timeout=timeout)
    OUTPUTS.append(result.stdout + result.stderr)
    return result


def containers(name, service):
    ids = subprocess.run(["docker", "compose", "-p", name, "ps", "-q", service], capture_output=True, text=True,
                         check=True).stdout.split()
    out = []
    for cid in ids:
        nets = json.loads(subprocess.run(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", cid],
                                         capture_output=True, text=True, check=True).stdout)
        out.append(sorted(n["IPAddress"] for n in nets.values() if n["IPAddress"])[0])
    return out


def redis_of(name):
    return redis.Redis(host=containers(name, "redis")[0], port=6379, socket_timeout=5,
                       password=VAULTS[name]["vault_redis_password"])


def get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def post_config(tenant, config):
    request = urllib.request.Request(
        "http://127.0.0.1:%d/api/config?tenant=%s" % (PORTS[SHARED], tenant), data=json.dumps(config).encode(),
        headers={"Authorization": "Bearer " + VAULTS[SHARED]["vault_admin_token"],
                 "Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def teardown_stacks():
    for name in (SHARED, DEDICATED):
        subprocess.run(["docker", "compose", "-p", name, "down", "-v", "--timeout", "5"], capture_output=True,
                       check=False)
        subprocess.run(["rm", "-rf", "/opt/%s" % name, "/var/backups/opsdeck/%s" % name], check=False)
    try:
        os.rmdir("/var/backups/opsdeck")  # only when empty: it may hold other stacks' backups
    except OSError:
        pass


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    teardown_stacks()
    root = tmp_path_factory.mktemp("migrate")
    shared = write_inventory(root / "shared", SHARED, 2)
    dedicated = write_inventory(root / "dedicated", DEDICATED, 1)
    result = playbook("deploy.yml", shared)
    assert result.returncode == 0, result.stdout[-3000:]
    post_config("acme", {"plan": "enterprise", "region": "sa-east"})
    post_config("globex", {"plan": "free"})
    post_config("acme2", {"plan": "pro"})
    client = redis_of(SHARED)
    client.hset(PREFIX + "config:acme:features", mapping={"ai": "on", "sso": "saml"})
    client.pexpire(PREFIX + "config:acme:features", 7_200_000)
    client.set(PREFIX + "config:acme:limits", "rps=100", ex=3600)
    client.set("refapp:hits:acme", 41)  # not configuration: stays behind
    yield {"shared": shared, "dedicated": dedicated, "written": time.monotonic()}
    teardown_stacks()


def test_tenant_moves_to_its_dedicated_instance(stacks):
    source = redis_of(SHARED)
    acme_keys = {(PREFIX + k).encode() for k in ("config:acme", "config:acme:features", "config:acme:limits")}
    before = {k: (source.dump(k), source.pttl(k)) for k in acme_keys}

    result = playbook("migrate_tenant.yml", stacks["shared"], "-v", "-e", "migrate_tenant=acme",
                      "-e", "migrate_target_vars=%s" % stacks["dedicated"])
    assert result.returncode == 0, result.stdout[-4000:]
    elapsed = (time.monotonic() - stacks["written"]) * 1000

    # the dedicated Redis holds acme's configuration, and only acme's, with the TTLs carried over
    target = redis_of(DEDICATED)
    assert set(target.keys("*")) == acme_keys | {(PREFIX + "tenants").encode()}, "other tenants' keys must not move"
    assert target.smembers(PREFIX + "tenants") == {b"acme"}
    for key, (payload, ttl) in before.items():
        assert target.dump(key) == payload, key
        if ttl < 0:
            assert target.pttl(key) == -1, key
        else:
            assert ttl - elapsed - 2000 <= target.pttl(key) <= ttl, key

    # the dedicated app answers for the tenant through its own proxy
    status, body = get("http://127.0.0.1:%d/api/config?tenant=acme" % PORTS[DEDICATED])
    assert (status, body["config"]) == (200, {"plan": "enterprise", "region": "sa-east"})

    # on the shared instance acme stays drained on every replica, the other tenants are served
    replicas = containers(SHARED, "api")
    assert len(replicas) == 2
    for ip in replicas:
        status, body = get("http://%s:8000/api/config?tenant=acme" % ip)
        assert (status, body["error"]) == (503, "draining"), ip
        assert get("http://%s:8000/api/config?tenant=globex" % ip)[0] == 200, ip
        assert get("http://%s:8000/api/config?tenant=acme2" % ip)[0] == 200, ip

    # the switch is recorded on the shared Redis, whose copy is kept as the rollback
    assert source.get(PREFIX + "tenant:acme:home") == b"dedicated:" + DEDICATED.encode()
    assert all(source.exists(k) for k in acme_keys)

    exports = [n for n in os.listdir(EXPORT_DIR) if n.startswith("acme-") and n.endswith(".keys")]
    assert len(exports) == 1
    path = os.path.join(EXPORT_DIR, exports[0])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(EXPORT_DIR).st_mode) == 0o700
    assert subprocess.run(["sha256sum", "--check", "--strict", exports[0] + ".sha256"], cwd=EXPORT_DIR,
                          capture_output=True, check=False).returncode == 0


def test_second_run_changes_nothing(stacks):
    result = playbook("migrate_tenant.yml", stacks["shared"], "-e", "migrate_tenant=acme",
                      "-e", "migrate_target_vars=%s" % stacks["dedicated"])
    assert result.returncode == 0, result.stdout[-4000:]
    assert recap(result.stdout)["changed"] == 0, result.stdout[-4000:]
    assert "already lives on %s" % DEDICATED in " ".join(result.stdout.split())
    assert len([n for n in os.listdir(EXPORT_DIR) if n.endswith(".keys")]) == 1, "nothing is exported again"


def test_no_secret_in_any_output(stacks):
    assert OUTPUTS
    for text in OUTPUTS:
        for vault in VAULTS.values():
            for name, value in vault.items():
                assert value not in text, "%s appears in a playbook's output" % name
