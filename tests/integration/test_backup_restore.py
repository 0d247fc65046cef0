"""playbooks/backup.yml and playbooks/restore.yml on the real local Docker engine.

A stack of its own (project opsdeck-backup, proxy on 127.0.0.1:18280, /opt/opsdeck-backup; the
reference app, PostgreSQL and Redis with a password and AOF persistence) is deployed once for the
module. Data is written (Redis keys of several types, with and without TTLs, in two databases,
including the reference app's app:config:<tenant>, its default REDIS_KEY_PREFIX; PostgreSQL rows
through `docker compose exec postgres psql`), backed up into /var/backups/opsdeck/opsdeck-backup, the files, modes, checksums and
retention are checked, then the stack is destroyed with its volumes, deployed again empty, and
the backup is restored into that fresh instance and compared exactly. Everything is torn down
at the end.
"""

import hashlib
import json
import os
import re
import stat
import subprocess
import time
import urllib.request

import pytest
import redis
import yaml

from helpers import recap, run

NAME = "opsdeck-backup"
PORT = 18280
PROJECT_DIR = "/opt/%s" % NAME
BACKUP_DIR = "/var/backups/opsdeck/%s" % NAME
SECRETS = {
    "postgres_password": "backup-test-pg-Secret-7731",
    "redis_password": "backup-test-redis-Secret-4409",
    "admin_token": "backup-test-admin-Secret-1958",
}
STACK = {
    "stack_name": NAME,
    "stack_environment": "dev",
    "stack_project_dir": PROJECT_DIR,
    "stack_services": [{
        "name": "api", "image": "opsdeck/refapp:0.1.0", "build": "refapp", "port": 8000,
        "replicas": 1, "uses": ["postgres", "redis"], "secrets": ["admin_token"],
        "env": {"APP_NAME": "api", "ADMIN_TOKEN_FILE": "/run/secrets/admin_token", "TENANTS": "acme,globex"},
        "health": {"ready": "/health/ready", "interval": 2, "retries": 5, "start_period": 4},
        "route": {"path": "/api/", "rate": "100r/s", "burst": 100}}],
    "stack_postgres": {"enabled": True, "database": "shop", "user": "shop", "storage": "1Gi"},
    "stack_redis": {"enabled": True, "persistence": "aof", "password_secret": "redis_password"},
    "stack_proxy": {"port": PORT, "bind": "127.0.0.1"},
    "stack_secrets": SECRETS,
}
SQL = """
CREATE TABLE orders (id serial PRIMARY KEY, tenant text NOT NULL, amount numeric(10,2),
                     note text, payload jsonb, created timestamptz NOT NULL);
INSERT INTO orders (tenant, amount, note, payload, created) VALUES
  ('acme', 99.90, 'São Paulo – pedido', '{"plan": "pro", "seats": 12}', '2025-06-12T15:04:05Z'),
  ('globex', 0.01, NULL, '[1, 2, 3]', '2025-06-13T00:00:00Z'),
  ('acme', 1234.50, E'two\\nlines', '{}', '2025-06-14T08:30:00Z');
CREATE INDEX orders_tenant ON orders (tenant);
CREATE VIEW acme_orders AS SELECT * FROM orders WHERE tenant = 'acme';
"""
OUTPUTS = []


def playbook(name, inventory, *args, timeout=900, expect_ok=True):
    result = run(["ansible-playbook", "playbooks/%s" % name, "-i", inventory] + list(args), timeout=timeout)
    OUTPUTS.append(result.stdout + result.stderr)
    if expect_ok:
        assert result.returncode == 0, "%s failed:\n%s" % (name, result.stdout[-4000:])
    return result


def compose(*args, check=True, **kwargs):
    return subprocess.run(["docker", "compose", "-p", NAME] + list(args), capture_output=True, text=True,
                          check=check, timeout=120, **kwargs)


def psql(sql):
    return compose("exec", "-T", "postgres", "psql", "-h", "/tmp", "-U", "shop", "-d", "shop",
                   "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql).stdout


def redis_client(db=0):
    cid = compose("ps", "-q", "redis").stdout.split()[0]
    ip = subprocess.run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", cid],
                        capture_output=True, text=True, check=True).stdout.split()[0]
    return redis.Redis(host=ip, port=6379, password=SECRETS["redis_password"], db=db, socket_timeout=5)


def redis_state(client):
    """Every key with its type, its exact value and its remaining TTL in ms (-1 without)."""
    state = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        value = {"string": client.get, "hash": client.hgetall, "list": lambda k: client.lrange(k, 0, -1),
                 "set": client.smembers, "zset": lambda k: client.zrange(k, 0, -1, withscores=True)}[kind](key)
        state[key] = (kind, value, client.pttl(key))
    return state


def same_redis(before, after, elapsed_ms):
    assert set(after) == set(before), "keys differ: missing %s, extra %s" % (
        set(before) - set(after), set(after) - set(before))
    for key, (kind, value, ttl) in before.items():
        assert after[key][:2] == (kind, value), key
        if ttl < 0:
            assert after[key][2] == ttl, key
        else:
            assert ttl - elapsed_ms - 2000 <= after[key][2] <= ttl, (key, ttl, after[key][2])


def pg_state():
    return {
        "rows": psql("SELECT id, tenant, amount, note, payload, created FROM orders ORDER BY id"),
        "sequence": psql("SELECT last_value FROM orders_id_seq"),
        "objects": psql("SELECT relname, relkind FROM pg_class WHERE relnamespace = 'public'::regnamespace ORDER BY 1"),
        "owner": psql("SELECT tableowner FROM pg_tables WHERE tablename = 'orders'"),
    }


def listing():
    return sorted(os.listdir(BACKUP_DIR))


def named(pattern, exclude=()):
    return [n for n in listing() if re.match(pattern, n) and n not in exclude]


def flat(text):
    return " ".join(text.split())


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    inv = tmp_path_factory.mktemp("backup-inventory")
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local",
        "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}}}))
    (inv / "group_vars" / "all" / "stack.yml").write_text(yaml.safe_dump(STACK, allow_unicode=True))
    subprocess.run(["rm", "-rf", BACKUP_DIR], check=False)
    playbook("deploy.yml", str(inv))
    yield str(inv)
    compose("down", "-v", "--timeout", "5", check=False)
    subprocess.run(["docker", "rm", "-f", NAME + "-redis-restore"], capture_output=True, check=False)
    subprocess.run(["rm", "-rf", PROJECT_DIR, BACKUP_DIR], check=False)
    try:
        os.rmdir(os.path.dirname(BACKUP_DIR))  # only when empty: it may hold other stacks' backups
    except OSError:
        pass


@pytest.fixture(scope="module")
def data(inventory):
    """Write the data that is backed up; return what it looks like."""
    db0, db1 = redis_client(0), redis_client(1)
    db0.set("app:config:acme", json.dumps({"plan": "pro", "limits": {"rps": 100}}), ex=3600)
    db0.set("app:config:globex", json.dumps({"plan": "free"}))
    db0.hset("app:config:acme:features", mapping={"beta": "1", "sso": "0"})
    db0.pexpire("app:config:acme:features", 7_200_000)
    db0.rpush("app:queue:acme", "a", "b", "c")
    db0.sadd("app:tenants", "acme", "globex")
    db0.zadd("app:usage", {"acme": 12.5, "globex": 3})
    db0.set(b"bin:\x00\xff", b"\x00\x01\xfe\xff" * 64)
    db1.set("other-db", "kept by snapshots", ex=86400)
    compose("exec", "-T", "postgres", "psql", "-h", "/tmp", "-U", "shop", "-d", "shop", "-v", "ON_ERROR_STOP=1",
            "-q", "-f", "-", input=SQL)
    # TTLs count down from when they are read: take the time first, not after pg_state().
    at = time.monotonic()
    return {"redis0": redis_state(db0), "redis1": redis_state(db1), "pg": pg_state(), "at": at}


def test_backup_writes_private_checksummed_files_with_retention(inventory, data):
    os.makedirs(BACKUP_DIR, mode=0o700, exist_ok=True)
    foreign = {"notes.txt": b"my notes", "postgres-manual.dump": b"not ours",
               # named like ours but not in the Redis manifest: redis_backup never deletes it
               "redis-20200101T000000.000Z.rdb": b"REDIS0010", "redis-20200101T000000.000Z.rdb.sha256": b"x",
               # a PostgreSQL dump without its .sha256 is not ours either
               "postgres-20200101T000000.000Z.dump": b"PGDMP"}
    now = time.time()
    ours = {  # name and .sha256 beside it: ours. Count limit 2 keeps the new dump and yesterday's;
        # the one of 2 days ago goes (count), the one of 2021 goes (age limit, 30 days)
        "yesterday": time.strftime("postgres-%Y%m%dT%H%M%S.000Z.dump", time.gmtime(now - 86400)),
        "two_days": time.strftime("postgres-%Y%m%dT%H%M%S.000Z.dump", time.gmtime(now - 2 * 86400)),
        "old": "postgres-20210101T000000.000Z.dump"}
    for name, content in list(foreign.items()) + [(n, b"PGDMP") for n in ours.values()] + \
            [(n + ".sha256", b"x") for n in ours.values()]:
        with open(os.path.join(BACKUP_DIR, name), "wb") as handle:
            handle.write(content)
    planted = set(listing())

    args = ["-e", '{"backup_redis_modes": ["snapshot", "keys"]}', "-e", "backup_retention_count=2"]
    check = playbook("backup.yml", inventory, "--check", "--diff", *args)
    assert recap(check.stdout)["changed"] > 0, "check mode must predict the backups"
    assert "Would dump database shop" in flat(check.stdout)
    assert ours["old"] in check.stdout and ours["two_days"] in check.stdout, "check mode must show what retention deletes"
    assert set(listing()) == planted, "check mode wrote or deleted files"

    playbook("backup.yml", inventory, "-v", *args)
    assert stat.S_IMODE(os.stat(BACKUP_DIR).st_mode) == 0o700
    for name, content in foreign.items():
        with open(os.path.join(BACKUP_DIR, name), "rb") as handle:
            assert handle.read() == content, "%s was touched" % name
    assert ours["yesterday"] in listing() and ours["yesterday"] + ".sha256" in listing(), "count limit 2 keeps it"
    for gone in (ours["two_days"], ours["old"]):
        assert gone not in listing() and gone + ".sha256" not in listing(), "retention kept %s" % gone

    stamp = r"[0-9]{8}T[0-9]{6}\.[0-9]{3}Z"
    made = {"rdb": named(r"^redis-%s\.rdb$" % stamp, foreign), "keys": named(r"^redis-%s\.keys$" % stamp),
            "dump": named(r"^postgres-%s\.dump$" % stamp, set(foreign) | {ours["yesterday"]})}
    magic = {"rdb": b"REDIS", "keys": b"OPSDECK-REDIS-KEYS\n", "dump": b"PGDMP"}
    for kind, names in made.items():
        assert len(names) == 1, (kind, listing())
        path = os.path.join(BACKUP_DIR, names[0])
        with open(path, "rb") as handle:
            body = handle.read()
        assert body.startswith(magic[kind]), kind
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        assert stat.S_IMODE(os.stat(path + ".sha256").st_mode) == 0o600, path
        with open(path + ".sha256", encoding="ascii") as handle:
            assert handle.read() == "%s  %s\n" % (hashlib.sha256(body).hexdigest(), names[0])
        assert subprocess.run(["sha256sum", "--check", "--strict", names[0] + ".sha256"], cwd=BACKUP_DIR,
                              capture_output=True, check=False).returncode == 0
    assert not [n for n in listing() if n.endswith(".part")], "temporary files left behind"


def test_snapshot_through_docker_compose_exec(inventory, data):
    """The fallback for hosts that cannot reach the internal network: redis-cli --rdb - in the container."""
    before = set(listing())
    result = playbook("backup.yml", inventory, "-e", "backup_redis_access=exec", "-e", '{"backup_components": ["redis"]}')
    assert "backup_redis_access is exec" in flat(result.stdout)
    new = sorted(set(listing()) - before)
    assert len(new) == 2 and re.match(r"^redis-exec-[0-9]{8}T[0-9]{6}\.[0-9]{3}Z\.rdb$", new[0]), new
    with open(os.path.join(BACKUP_DIR, new[0]), "rb") as handle:
        body = handle.read()
    # a complete RDB ends with the EOF opcode and an 8-byte checksum: redis-cli's 40-byte end mark was cut off
    assert body.startswith(b"REDIS") and body[-9] == 0xFF, body[-48:]
    assert stat.S_IMODE(os.stat(os.path.join(BACKUP_DIR, new[0])).st_mode) == 0o600
    assert subprocess.run(["sha256sum", "--check", "--strict", new[1]], cwd=BACKUP_DIR, capture_output=True,
                          check=False).returncode == 0


def test_restore_into_a_fresh_instance_gives_back_the_same_data(inventory, data):
    compose("down", "--volumes", "--timeout", "5")  # what playbooks/destroy.yml -e destroy_volumes=true does
    assert compose("ps", "-a", "-q").stdout.strip() == ""
    assert not [v for v in subprocess.run(["docker", "volume", "ls", "-q"], capture_output=True, text=True,
                                          check=True).stdout.split() if v.startswith(NAME + "_")]
    playbook("deploy.yml", inventory)
    assert redis_client(0).dbsize() == 0 and redis_client(1).dbsize() == 0, "the new instance is not empty"
    assert psql("SELECT count(*) FROM pg_tables WHERE tablename = 'orders'").strip() == "0"

    check = playbook("restore.yml", inventory, "--check")
    assert "Would restore into %s" % NAME in flat(check.stdout)
    assert redis_client(0).dbsize() == 0, "check mode restored something"

    # the snapshot redis_backup took (a chosen file; the newest is the exec one), the newest dump
    snapshot = named(r"^redis-[0-9]{8}T[0-9]{6}\.[0-9]{3}Z\.rdb$", {"redis-20200101T000000.000Z.rdb"})
    assert len(snapshot) == 1
    result = playbook("restore.yml", inventory, "-v", "-e", "backup_restore_redis_file=%s" % snapshot[0])
    assert recap(result.stdout)["changed"] > 0, "an offline restore always reports a change"
    assert "restored from %s" % snapshot[0] in flat(result.stdout)
    elapsed = (time.monotonic() - data["at"]) * 1000
    same_redis(data["redis0"], redis_state(redis_client(0)), elapsed)
    same_redis(data["redis1"], redis_state(redis_client(1)), elapsed)
    assert pg_state() == data["pg"]
    # what a user sees: the app serves the restored tenant configuration through the proxy
    with urllib.request.urlopen("http://127.0.0.1:%d/api/config?tenant=acme" % PORT, timeout=10) as response:
        assert json.load(response)["config"] == {"plan": "pro", "limits": {"rps": 100}}
    # Redis was restarted with appendonly yes: the restored data is in its AOF and survives a restart
    compose("restart", "redis")
    for _attempt in range(30):
        try:
            if redis_client(0).ping():
                break
        except redis.RedisError:
            time.sleep(1)
    same_redis(data["redis0"], redis_state(redis_client(0)), (time.monotonic() - data["at"]) * 1000)


def test_key_export_restore_is_online_and_idempotent(inventory, data):
    args = ["-e", "backup_restore_redis_from=keys", "-e", '{"backup_restore_components": ["redis"]}']
    again = playbook("restore.yml", inventory, *args)
    assert recap(again.stdout)["changed"] == 0, again.stdout[-3000:]
    assert "0 restored, %d skipped because they exist" % len(data["redis0"]) in flat(again.stdout)

    client = redis_client(0)
    client.flushdb()
    result = playbook("restore.yml", inventory, *args)
    assert recap(result.stdout)["changed"] > 0
    same_redis(data["redis0"], redis_state(client), (time.monotonic() - data["at"]) * 1000)


def test_no_secret_in_any_output(inventory, data):
    assert OUTPUTS, "no playbook ran"
    for text in OUTPUTS:
        for name, value in SECRETS.items():
            assert value not in text, "secret %s appears in a playbook's output" % name
