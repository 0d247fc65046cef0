# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests of opsdeck.stack.redis_backup against real redis-server processes.

Every server is started by these tests on 127.0.0.1 (random port, temporary directory,
``--save ''``) and stopped afterwards. The main paths run the module for real through
ansible-playbook; the rest call the logic in module_utils/backup/redis.py directly.
Data is compared with DEBUG DIGEST (a digest of every key, type and value that does not
depend on the encoding) plus the exact expiry time of every key (PEXPIRETIME).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

HERE = Path(__file__).resolve()
ROOT = HERE.parents[4]
sys.path.insert(0, str(HERE.parents[2]))  # tests/unit, for redis_fixtures

from redis_fixtures import RedisServer, free_port  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.opsdeck.stack.plugins.module_utils.backup import redis as rb  # noqa: E402
from ansible_collections.opsdeck.stack.plugins.module_utils.clients.resp import (  # noqa: E402
    RespConnection,
    RespError,
    encode_command,
)

COLLECTIONS = ROOT / "build" / "collections"
BIN = Path(sys.executable).parent
HOUR_MS = 3600 * 1000


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
@pytest.fixture
def servers(tmp_path):
    """Start redis-servers on demand; all of them are stopped at the end of the test."""
    started = []

    def start(name="redis", **kwargs):
        server = RedisServer(tmp_path / ("srv-" + name), name=name, **kwargs)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


def run_module(tmp_path, args, check=False, diff=False):
    """Run opsdeck.stack.redis_backup through ansible-playbook; return (result, stdout)."""
    assert (COLLECTIONS / "ansible_collections" / "opsdeck" / "stack").exists(), "run `make link` first"
    play = [{"name": "redis_backup", "hosts": "localhost", "gather_facts": False, "connection": "local",
             "tasks": [{"name": "run the module", "opsdeck.stack.redis_backup": args}]}]
    path = tmp_path / ("play-%d.yml" % int(time.time() * 1e6))
    path.write_text(json.dumps(play))
    env = dict(os.environ)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
    })
    cmd = [str(BIN / "ansible-playbook"), "-i", "localhost,", str(path)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("ansible-playbook output is not JSON:\n%s\n%s" % (proc.stdout, proc.stderr))
    return data["plays"][0]["tasks"][0]["hosts"]["localhost"], proc.stdout


class Pipe(object):
    """Raw pipelined writes with the module's RESP client (much faster than redis-py here)."""

    def __init__(self, port):
        self.conn = RespConnection(port=port, timeout=60).connect()
        self.parts = []

    def __call__(self, *args):
        self.parts.append(encode_command(args))
        if len(self.parts) >= 5000:
            self.flush()

    def flush(self):
        if self.parts:
            count = len(self.parts)
            self.conn.send(b"".join(self.parts))
            self.parts = []
            for _dummy in range(count):
                reply = self.conn.read_reply()
                assert not isinstance(reply, RespError), reply

    def close(self):
        self.flush()
        self.conn.close()


def populate(server, per_type=20000, streams=2000, seed=7):
    """Keys of every type, a third of them with a TTL of 1-2 h (random ms), plus big keys."""
    rnd = random.Random(seed)
    client = server.client()
    now_ms = int(client.time()[0]) * 1000
    cmd = Pipe(server.port)
    for i in range(per_type):
        ttl = now_ms + HOUR_MS + rnd.randrange(HOUR_MS) if i % 3 == 0 else None
        names = ("s:%d" % i, "l:%d" % i, "S:%d" % i, "z:%d" % i, "h:%d" % i)
        cmd("SET", names[0], "v%d-%s" % (i, "x" * (i % 50)))
        cmd("RPUSH", names[1], "a%d" % i, i, "c" * (i % 20))
        cmd("SADD", names[2], i, "m%d" % i, "n")
        cmd("ZADD", names[3], i * 0.5, "p%d" % i, -i, "q", 1e300, "r")
        cmd("HSET", names[4], "f1", i, "f2", "t" * (i % 30), "tenant", "t%d" % (i % 97))
        if ttl:
            for offset, name in enumerate(names):
                cmd("PEXPIREAT", name, ttl + offset * 7)
        if i < streams:
            sid = "x:%d" % i
            cmd("XADD", sid, "*", "event", "e%d" % i, "n", i)
            cmd("XADD", sid, "*", "event", "second")
            if i % 10 == 0:
                cmd("XGROUP", "CREATE", sid, "g", "0")
            if ttl:
                cmd("PEXPIREAT", sid, ttl)
    for tenant in range(50):  # seed 000: the tenant configuration keys
        cmd("HSET", "vf:config:tenant%d" % tenant, "plan", "pro", "region", "eu-west", "rate", 10)
    cmd("SET", "big:str", os.urandom(3 * 1024 * 1024))
    for start in range(0, 20000, 10000):
        fields = []
        for j in range(start, start + 10000):
            fields += ["f%d" % j, "v%d" % j]
        cmd("HSET", "big:hash", *fields)
    for start in range(0, 50000, 25000):
        cmd("RPUSH", "big:list", *range(start, start + 25000))
    cmd("PEXPIREAT", "big:hash", now_ms + 2 * HOUR_MS + 123)
    cmd.close()


def expiries(client):
    """{key: absolute expiry in ms} for every key that has one (SCAN + pipelined PEXPIRETIME)."""
    kwargs = client.connection_pool.connection_kwargs
    conn = RespConnection(port=kwargs["port"], timeout=60).connect()
    out = {}
    try:
        if kwargs.get("password"):
            conn.command("AUTH", kwargs["password"])
        cursor = b"0"
        while True:
            cursor, keys = conn.command("SCAN", cursor, "COUNT", 5000)
            for key, value in zip(keys, conn.pipeline([("PEXPIRETIME", k) for k in keys])):
                if value >= 0:
                    out[key] = value
            if cursor == b"0":
                return out
    finally:
        conn.close()


def state_of(client):
    return {"digest": client.execute_command("DEBUG", "DIGEST"), "dbsize": client.dbsize(),
            "expiries": expiries(client)}


def load_rdb(servers, rdb_path, name):
    """Start a second redis-server with the backup as its dbfilename."""
    server = servers(name, dbfilename="dump.rdb")
    server.stop()
    target = Path(server.directory) / "dump.rdb"
    if str(rdb_path).endswith(".gz"):
        with gzip.open(rdb_path, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    else:
        shutil.copyfile(rdb_path, target)
    return server.start()


def listing(path):
    """Names, sizes and mtimes of everything in a directory (to prove nothing changed)."""
    out = {}
    for entry in sorted(os.listdir(path)):
        stat = os.stat(os.path.join(path, entry))
        out[entry] = (stat.st_size, stat.st_mtime_ns)
    return out


def sha256sum_check(path):
    proc = subprocess.run(["sha256sum", "-c", os.path.basename(path) + ".sha256"],
                          cwd=os.path.dirname(path), capture_output=True, text=True, check=False)
    return proc.returncode == 0 and ": OK" in proc.stdout


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """One server holding 100k+ keys of every type, shared by the read-only round trips."""
    server = RedisServer(tmp_path_factory.mktemp("dataset"), name="dataset").start()
    try:
        client = server.client()
        populate(server)
        assert client.dbsize() >= 100000
        yield server, state_of(client)
    finally:
        server.stop()


# ---------------------------------------------------------------------------
# round trips through ansible
# ---------------------------------------------------------------------------
def test_snapshot_round_trip_through_ansible(tmp_path, servers, dataset):
    source, expected = dataset
    dest = tmp_path / "backups"
    result, _out = run_module(tmp_path, source.params(dest=str(dest), name_prefix="shop-"))
    assert result["changed"] is True, result
    assert not result.get("failed"), result
    assert result["transfer"] == "eof"  # Redis 7 default: diskless, EOF-mark form
    assert result["rdb_version"] == 10 and result["redis_version"].startswith("7.")
    path = result["file"]
    assert os.path.basename(path).startswith("shop-") and path.endswith(".rdb")
    assert sha256sum_check(path)
    assert result["size"] == os.path.getsize(path) == result["rdb_size"]
    assert sorted(os.listdir(dest)) == sorted([".redis_backup_manifest.json", os.path.basename(path),
                                              os.path.basename(path) + ".sha256"])
    assert os.stat(path).st_mode & 0o777 == 0o600
    manifest = json.loads((dest / ".redis_backup_manifest.json").read_text())
    assert [e["file"] for e in manifest["files"]] == [os.path.basename(path)]
    assert manifest["files"][0]["sha256"] == result["sha256"]

    restored = load_rdb(servers, path, "from-rdb")
    assert state_of(restored.client()) == expected


def test_keys_round_trip_through_ansible(tmp_path, servers, dataset):
    source, expected = dataset
    dest = tmp_path / "exports"
    result, _out = run_module(tmp_path, source.params(
        dest=str(dest), mode="keys", patterns=["*"], compress=True, scan_count=2000, pipeline=500))
    assert result["changed"] is True and not result.get("failed"), result
    assert result["keys"] == expected["dbsize"]
    assert result["rdb_version"] == 10 and result["ttl_source"] == "pexpiretime"
    assert sha256sum_check(result["file"])
    with open(result["file"], "rb") as handle:
        assert handle.read(19) == b"OPSDECK-REDIS-KEYS\n"
    reader = rb.KeysReader(result["file"])
    try:
        assert reader.header["rdb_version"] == 10
        assert reader.header["redis_version"] == result["redis_version"]
        assert reader.header["records"] == result["keys"]
        assert reader.header["compression"] == "gzip"
    finally:
        reader.close()

    target = servers("target")
    restore, _out = run_module(tmp_path, target.params(state="restored", src=result["file"]))
    assert restore["changed"] is True and not restore.get("failed"), restore
    assert restore["restored"] == expected["dbsize"]
    assert restore["skipped_existing"] == 0 and restore["restore_errors"] == 0 and restore["expired"] == 0
    assert restore["checksum_verified"] is True
    assert state_of(target.client()) == expected

    again, _out = run_module(tmp_path, target.params(state="restored", src=result["file"]))
    assert not again.get("failed"), again
    assert again["changed"] is False and again["restored"] == 0
    assert again["skipped_existing"] == expected["dbsize"] and len(again["skipped_keys"]) == 100


def test_wrong_password_fails_clearly_and_is_not_logged(tmp_path, servers):
    server = servers("auth", password="right-secret-1")
    wrong = "wrong-secret-xyz"
    result, out = run_module(tmp_path, server.params(password=wrong, dest=str(tmp_path / "b")))
    assert result["failed"] is True
    assert "authentication to Redis at 127.0.0.1:%d" % server.port in result["msg"]
    assert "check password" in result["msg"]
    assert wrong not in out
    assert not (tmp_path / "b").exists() or os.listdir(tmp_path / "b") == []

    with pytest.raises(rb.BackupError, match="requires authentication: set password"):
        rb.run({"port": server.port, "dest": str(tmp_path / "b")})


def test_sync_refused_for_acl_user_suggests_keys_mode(tmp_path, servers):
    server = servers("acl")
    client = server.client()
    client.execute_command("ACL", "SETUSER", "backup", "on", ">pw-backup", "~*", "&*", "+@all", "-sync", "-psync")
    client.set("vf:config:tenant1", "cfg")
    args = server.params(username="backup", password="pw-backup", dest=str(tmp_path / "b"))
    result, out = run_module(tmp_path, args)
    assert result["failed"] is True
    assert "refused to stream an RDB snapshot" in result["msg"]
    assert "NOPERM" in result["msg"] and "mode: keys" in result["msg"]
    assert "pw-backup" not in out
    assert os.listdir(tmp_path / "b") == []  # nothing left behind

    args.update(mode="keys", patterns=["vf:config:*"])
    result = rb.run(args)
    assert result["changed"] is True and result["keys"] == 1


def test_renamed_replication_commands_suggest_keys_mode(tmp_path, servers):
    server = servers("renamed", extra=["--rename-command", "SYNC", "", "--rename-command", "PSYNC", ""])
    with pytest.raises(rb.BackupError) as info:
        rb.run(server.params(dest=str(tmp_path / "b")))
    assert "PSYNC ? -1 answered 'ERR unknown command" in info.value.msg and "mode: keys" in info.value.msg
    assert os.listdir(tmp_path / "b") == []


def test_databases_other_than_zero(tmp_path, servers):
    source = servers("db-src")
    client = source.client(db=3)
    client.set("vf:config:tenant7", "in db 3")
    source.client().set("vf:config:tenant7", "in db 0")
    export = rb.run(source.params(db=3, dest=str(tmp_path / "b"), mode="keys", patterns=["vf:config:*"]))
    target = servers("db-dst")
    rb.run(target.params(db=5, state="restored", src=export["file"]))
    assert target.client(db=5).get("vf:config:tenant7") == b"in db 3"
    assert target.client().dbsize() == 0
    snap = rb.run(source.params(dest=str(tmp_path / "b")))
    loaded = load_rdb(servers, snap["file"], "db-rdb")  # a snapshot holds every database
    assert loaded.client(db=3).get("vf:config:tenant7") == b"in db 3"
    assert loaded.client().get("vf:config:tenant7") == b"in db 0"


def test_check_mode_writes_nothing_and_diff_shows_files(tmp_path, servers):
    server = servers("check")
    server.client().set("k", "v")
    dest = tmp_path / "b"
    first = rb.run(server.params(dest=str(dest), name_prefix="cm-"))
    second = rb.run(server.params(dest=str(dest), name_prefix="cm-"))
    before = listing(dest)
    manifest_before = (dest / rb.MANIFEST_NAME).read_bytes()

    result, _out = run_module(tmp_path, server.params(dest=str(dest), name_prefix="cm-", retention_count=1),
                              check=True, diff=True)
    assert result["changed"] is True and not result.get("failed"), result
    assert listing(dest) == before
    assert (dest / rb.MANIFEST_NAME).read_bytes() == manifest_before
    new = result["file"]
    assert not os.path.exists(new)
    assert result["would_write"] == [new, new + ".sha256", str(dest / rb.MANIFEST_NAME)]
    assert sorted(result["would_delete"]) == sorted([first["file"], first["file"] + ".sha256",
                                                     second["file"], second["file"] + ".sha256"])
    diff = result["diff"]
    assert os.path.basename(first["file"]) in diff["before"]
    assert os.path.basename(first["file"]) not in diff["after"]
    assert os.path.basename(new) in diff["after"]

    # a restore in check mode predicts and writes nothing either
    export = rb.run(server.params(dest=str(dest), mode="keys", patterns=["*"]))
    target = servers("check-target")
    target.client().set("k", "already here")
    result = rb.run(target.params(state="restored", src=export["file"]), check_mode=True)
    assert result["would_restore"] == 0 and result["would_skip"] == 1 and result["changed"] is False
    assert target.client().get("k") == b"already here" and target.client().dbsize() == 1

    # missing dest in check mode: reported, not created
    result = rb.run(server.params(dest=str(tmp_path / "new" / "dir")), check_mode=True)
    assert result["dest_created"] is True and not (tmp_path / "new").exists()


def test_ansible_doc_renders():
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS))
    proc = subprocess.run([str(BIN / "ansible-doc"), "--json", "opsdeck.stack.redis_backup"],
                          env=env, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)["opsdeck.stack.redis_backup"]
    assert doc["doc"]["options"]["password"]["type"] == "str"
    assert set(doc["doc"]["attributes"]) == {"check_mode", "diff_mode", "idempotent"}
    assert "app:config:*" in doc["examples"]
    assert "restored" in doc["return"]
    from ansible_collections.opsdeck.stack.plugins.modules import redis_backup  # pylint: disable=import-outside-toplevel
    spec = redis_backup.argument_spec()
    assert spec["password"]["no_log"] is True
    assert set(spec) == set(doc["doc"]["options"])


# ---------------------------------------------------------------------------
# snapshot edge cases (logic called directly)
# ---------------------------------------------------------------------------
def test_snapshot_bulk_form_compressed(tmp_path, servers):
    server = servers("disk", extra=["--repl-diskless-sync", "no"])
    client = server.client()
    populate(server, per_type=500, streams=50)
    expected = state_of(client)
    result = rb.run(server.params(dest=str(tmp_path / "b"), compress=True, compress_level=1))
    assert result["transfer"] == "bulk"
    assert result["file"].endswith(".rdb.gz") and sha256sum_check(result["file"])
    assert result["size"] < result["rdb_size"]
    restored = load_rdb(servers, result["file"], "from-gz")
    assert state_of(restored.client()) == expected


def make_pki(directory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate (openssl CLI)."""
    def ossl(*args):
        subprocess.run(["openssl"] + list(args), cwd=directory, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ossl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=test-ca")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        ossl("req", *ec, "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name)
        ossl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", name + ".crt", "-days", "2", "-extfile", "san.ext")
    return {n: str(directory / n) for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


def test_tls_with_client_certificate_and_unix_socket(tmp_path, servers):
    pki = make_pki(tmp_path)
    sock = str(tmp_path / "redis.sock")
    tls_port = free_port()
    server = servers("tls", extra=[
        "--port", "0", "--tls-port", str(tls_port), "--tls-cert-file", pki["server.crt"],
        "--tls-key-file", pki["server.key"], "--tls-ca-cert-file", pki["ca.crt"], "--tls-auth-clients", "yes",
        "--unixsocket", sock, "--unixsocketperm", "700"], ping=False)
    server.port = tls_port
    tls = {"port": server.port, "tls": True, "ca_path": pki["ca.crt"],
           "client_cert": pki["client.crt"], "client_key": pki["client.key"], "timeout": 10}
    via_socket = {"unix_socket": sock, "timeout": 10}
    conn = rb.connect(via_socket)
    try:
        conn.command("SET", "vf:config:tenant1", "cfg")
        conn.command("SET", "session", "s", "PX", HOUR_MS)
    finally:
        conn.close()

    snap = rb.run(dict(tls, dest=str(tmp_path / "b")))
    assert snap["transfer"] == "eof" and sha256sum_check(snap["file"])
    export = rb.run(dict(via_socket, dest=str(tmp_path / "b"), mode="keys", patterns=["*"]))
    assert export["keys"] == 2

    with pytest.raises(rb.BackupError, match="TLS handshake with Redis at 127.0.0.1:%d failed.*CERTIFICATE_VERIFY_FAILED"
                       % server.port):
        rb.run(dict(tls, ca_path=None, dest=str(tmp_path / "b")))
    insecure = dict(tls, ca_path=None, validate_certs=False)
    assert rb.run(dict(insecure, dest=str(tmp_path / "b"), mode="keys", patterns=["session"]))["keys"] == 1
    with pytest.raises(rb.BackupError, match="requires TLS client certificates .*set client_cert"):
        rb.run(dict(insecure, client_cert=None, client_key=None, dest=str(tmp_path / "b")))


def test_consistent_snapshot_while_a_writer_runs(tmp_path, servers):
    server = servers("busy")
    client = server.client()
    client.execute_command("DEBUG", "POPULATE", "50000", "fill", "200")
    stop = threading.Event()
    done = []

    def writer():
        local = server.client()
        i = 0
        deadline = time.monotonic() + 30
        while not stop.is_set() and i < 500000 and time.monotonic() < deadline:
            pipe = local.pipeline(transaction=True)
            pipe.incr("a")
            pipe.set("w:%d" % i, i)
            pipe.incr("b")
            pipe.execute()
            i += 1
        done.append(i)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while int(client.get("a") or 0) < 200:
            time.sleep(0.01)
        snap = rb.run(server.params(dest=str(tmp_path / "b")))
        export = rb.run(server.params(dest=str(tmp_path / "b"), mode="keys", patterns=["w:*", "a", "b"]))
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join(60)
    written = done[0]
    loaded = load_rdb(servers, snap["file"], "busy-rdb").client()
    a, b = int(loaded.get("a")), int(loaded.get("b"))
    assert a == b == len(list(loaded.scan_iter("w:*", count=10000)))  # one point in time
    assert 200 <= a < written  # the writer went on after the snapshot
    assert loaded.dbsize() == 50000 + a + 2

    target = servers("busy-keys")
    restore = rb.run(target.params(state="restored", src=export["file"]))
    assert restore["restored"] == export["keys"] and restore["restore_errors"] == 0
    tclient = target.client()
    assert all(int(tclient.get(k)) == int(k.split(b":")[1]) for k in tclient.scan_iter("w:*", count=10000))
    assert a <= export["keys"] - 2 <= written


def test_redis_killed_mid_stream_leaves_no_file(tmp_path, servers):
    server = servers("victim", extra=["--rdb-key-save-delay", "200"])
    server.client().execute_command("DEBUG", "POPULATE", "30000", "key", "500")
    dest = tmp_path / "b"
    dest.mkdir()
    (dest / "foreign.txt").write_text("not ours")
    killed = []

    def killer():
        # the stream takes several seconds (rdb-key-save-delay): kill the server (and its
        # fork child, as a dying container would) one second into it
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            parts = [p for p in os.listdir(dest) if p.endswith(".part")]
            if parts:
                time.sleep(1.0)
                server.kill()
                killed.append(parts[0])
                return
            time.sleep(0.005)

    thread = threading.Thread(target=killer)
    thread.start()
    with pytest.raises(rb.BackupError) as info:
        rb.run(server.params(dest=str(dest), timeout=10))
    thread.join(30)
    assert killed, "the stream finished before the server could be killed"
    assert "the RDB stream from 127.0.0.1:%d broke after" % server.port in info.value.msg
    assert info.value.details["bytes_received"] > 0
    assert "No backup file was written" in info.value.msg
    assert os.listdir(dest) == ["foreign.txt"]  # no final file, no partial file, no manifest


def test_unwritable_destinations_fail_before_touching_redis(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    params = {"port": 1, "timeout": 1}
    with pytest.raises(rb.BackupError, match="cannot be created.*writable directory"):
        rb.run(dict(params, dest=str(blocker / "sub")))
    with pytest.raises(rb.BackupError, match="exists and is not a directory"):
        rb.run(dict(params, dest=str(blocker)))
    with pytest.raises(rb.BackupError, match="is not a directory"):
        rb.run(dict(params, dest=str(blocker / "sub")), check_mode=True)
    assert blocker.read_text() == "x"


def test_rdb_cannot_be_restored_online(tmp_path, servers):
    server = servers("rdb-src")
    server.client().set("k", "v")
    snap = rb.run(server.params(dest=str(tmp_path / "b")))
    with pytest.raises(rb.BackupError, match="is an RDB snapshot.*dbfilename.*mode: keys"):
        rb.run(server.params(state="restored", src=snap["file"]))


# ---------------------------------------------------------------------------
# retention
# ---------------------------------------------------------------------------
def test_retention_by_count_and_age_only_deletes_manifest_files(tmp_path, servers):
    server = servers("retention")
    server.client().set("k", "v")
    dest = tmp_path / "b"
    dest.mkdir()
    foreign = {"notes.txt": "mine", "redis-19990101T000000.000Z.rdb": "looks like a backup"}
    for name, text in foreign.items():
        (dest / name).write_text(text)
        os.utime(dest / name, (0, 0))
    outside = tmp_path / "escape"
    outside.write_text("outside dest")

    made = [rb.run(server.params(dest=str(dest), retention_count=2)) for _dummy in range(3)]
    names = set(os.listdir(dest))
    assert os.path.basename(made[0]["file"]) not in names
    assert made[2]["deleted"] == [made[0]["file"], made[0]["file"] + ".sha256"]
    for kept in made[1:]:
        assert os.path.basename(kept["file"]) in names and sha256sum_check(kept["file"])
    assert set(foreign) <= names

    # age: make the older kept backup 10 days old, add a key export and an old entry of
    # another prefix and a forged entry that points outside dest
    manifest = json.loads((dest / rb.MANIFEST_NAME).read_text())
    for entry in manifest["files"]:
        if entry["file"] == os.path.basename(made[1]["file"]):
            entry["created"] = time.time() - 10 * 86400
    other = rb.run(server.params(dest=str(dest), name_prefix="other-"))
    manifest["files"].append(json.loads((dest / rb.MANIFEST_NAME).read_text())["files"][-1])
    manifest["files"][-1]["created"] = 0
    manifest["files"].append({"file": "../escape", "prefix": "redis-", "mode": "snapshot", "created": 0})
    (dest / rb.MANIFEST_NAME).write_text(json.dumps(manifest))

    export = rb.run(server.params(dest=str(dest), mode="keys", patterns=["*"], retention_days=5))
    assert export["deleted"] == []  # keys exports are rotated separately from snapshots
    latest = rb.run(server.params(dest=str(dest), retention_days=5))
    assert latest["deleted"] == [made[1]["file"], made[1]["file"] + ".sha256"]
    names = set(os.listdir(dest))
    assert {os.path.basename(p) for p in (made[2]["file"], latest["file"], other["file"], export["file"])} <= names
    assert set(foreign) <= names and outside.read_text() == "outside dest"
    listed = {e["file"] for e in json.loads((dest / rb.MANIFEST_NAME).read_text())["files"]}
    assert listed == {os.path.basename(p) for p in (made[2]["file"], latest["file"], other["file"], export["file"])}


def test_plan_retention_rules():
    now = 1000000.0
    entries = [{"file": "p-%d" % i, "prefix": "p-", "mode": "snapshot", "created": now - i * 86400}
               for i in range(5)]
    entries.append({"file": "q-0", "prefix": "q-", "mode": "snapshot", "created": 0})
    keep, delete = rb.plan_retention(entries, "p-", now, count=3)
    assert [e["file"] for e in keep] == ["p-0", "p-1", "p-2"]
    assert [e["file"] for e in delete] == ["p-3", "p-4"]
    keep, delete = rb.plan_retention(entries, "p-", now, days=1.5)
    assert [e["file"] for e in delete] == ["p-2", "p-3", "p-4"]
    keep, delete = rb.plan_retention(entries, "p-", now, count=1, days=0, protect=("p-0",))
    assert [e["file"] for e in keep] == ["p-0"]
    assert all(e["prefix"] == "p-" for e in delete)


def test_corrupt_manifest_is_reported_not_overwritten(tmp_path, servers):
    server = servers("badmanifest")
    dest = tmp_path / "b"
    dest.mkdir()
    (dest / rb.MANIFEST_NAME).write_text("{not json")
    with pytest.raises(rb.BackupError, match="not valid JSON.*repair"):
        rb.run(server.params(dest=str(dest)))
    assert (dest / rb.MANIFEST_NAME).read_text() == "{not json"


# ---------------------------------------------------------------------------
# key exports: patterns, TTLs, replace, integrity, versions
# ---------------------------------------------------------------------------
def test_key_patterns_literals_and_overlaps(tmp_path, servers):
    server = servers("patterns")
    client = server.client()
    for tenant in range(30):
        client.hset("vf:config:tenant%d" % tenant, mapping={"plan": "pro", "id": tenant})
    client.set("vf:session:1", "s", px=HOUR_MS)
    client.set("other", "o")
    client.set("we*ird", "glob chars in a key")
    result = rb.run(server.params(dest=str(tmp_path / "b"), mode="keys", patterns=[
        "vf:config:*", "vf:config:tenant1", "vf:config:tenant1*", "missing:key", r"we\*ird", "vf:session:1"]))
    # 30 tenant keys once each, the escaped literal, the session key; missing one reported
    assert result["keys"] == 32
    assert result["missing_keys"] == ["missing:key"] and result["missing_count"] == 1

    target = servers("patterns-target")
    restore = rb.run(target.params(state="restored", src=result["file"], patterns=["vf:config:tenant1*"]))
    assert restore["restored"] == 11 and restore["filtered_out"] == 21
    tclient = target.client()
    assert sorted(tclient.keys()) == sorted(("vf:config:tenant%d" % i).encode() for i in [1] + list(range(10, 20)))
    assert tclient.hgetall("vf:config:tenant12") == {b"plan": b"pro", b"id": b"12"}


def test_restore_skips_existing_keys_unless_replace(tmp_path, servers):
    source = servers("replace-src")
    source.client().mset({"a": "new-a", "b": "new-b", "c": "new-c"})
    export = rb.run(source.params(dest=str(tmp_path / "b"), mode="keys", patterns=["a", "b", "c"]))
    target = servers("replace-dst")
    tclient = target.client()
    tclient.set("a", "old-a", px=HOUR_MS)
    result = rb.run(target.params(state="restored", src=export["file"]))
    assert (result["restored"], result["skipped_existing"], result["restore_errors"]) == (2, 1, 0)
    assert result["skipped_keys"] == ["a"] and tclient.get("a") == b"old-a"
    result = rb.run(target.params(state="restored", src=export["file"], replace=True))
    assert (result["restored"], result["skipped_existing"]) == (3, 0)
    assert tclient.get("a") == b"new-a" and tclient.pttl("a") == -1  # REPLACE also drops the old TTL


def test_ttls_are_absolute_and_expired_records_are_not_restored(tmp_path, servers):
    source = servers("ttl-src")
    client = source.client()
    client.set("short", "gone soon", px=400)
    client.set("long", "stays", px=HOUR_MS)
    client.set("forever", "no ttl")
    want = client.pexpiretime("long")
    export = rb.run(source.params(dest=str(tmp_path / "b"), mode="keys", patterns=["*"]))
    assert export["keys"] == 3
    time.sleep(0.6)
    target = servers("ttl-dst")
    result = rb.run(target.params(state="restored", src=export["file"]))
    assert (result["restored"], result["expired"]) == (2, 1)
    tclient = target.client()
    assert tclient.pexpiretime("long") == want  # exactly the source's expiry instant
    assert tclient.pttl("forever") == -1 and tclient.exists("short") == 0


def test_pttl_fallback_is_precise_to_the_millisecond_window(tmp_path, servers):
    server = servers("pttl")
    client = server.client()
    for i in range(50):
        client.set("k%d" % i, i, px=HOUR_MS + i)
    want = {("k%d" % i).encode(): client.pexpiretime("k%d" % i) for i in range(50)}
    conn = rb.connect(server.params())
    records = []
    try:
        before = int(time.time() * 1000)
        stats, used = rb.export_keys(conn, lambda d: records.append(bytes(d)), ["k*"], use_pexpiretime=False)
    finally:
        conn.close()
    assert used is False and stats.records == 50 and before > 0
    path = tmp_path / "pttl.keys"
    with open(path, "wb") as handle:
        writer = rb.KeysWriter(handle, {"redis_version": "7.0"})
        writer.write(b"".join(records))
        writer.finish(stats.records, {"rdb_version": stats.rdb_version})
    reader = rb.KeysReader(str(path))
    try:
        got = {}
        while True:
            record = reader.next_record()
            if record is None:
                break
            key, expire_at, size = record
            reader.read(size)
            got[key] = expire_at
    finally:
        reader.close()
    for key, expire_at in want.items():
        assert expire_at - 50 <= got[key] <= expire_at  # never later; at most the pipeline's time earlier


def test_checksum_mismatch_and_truncation_are_refused(tmp_path, servers):
    server = servers("integrity")
    server.client().mset({"k%d" % i: "v%d" % i for i in range(100)})
    export = rb.run(server.params(dest=str(tmp_path / "b"), mode="keys", patterns=["*"]))
    path = Path(export["file"])
    data = bytearray(path.read_bytes())
    data[-30] ^= 0xFF
    path.write_bytes(bytes(data))
    target = servers("integrity-dst")
    with pytest.raises(rb.BackupError, match="does not match its checksum file"):
        rb.run(target.params(state="restored", src=str(path)))
    assert target.client().dbsize() == 0

    truncated = tmp_path / "cut.keys"
    truncated.write_bytes(bytes(data[:len(data) // 2]))
    with pytest.raises(rb.BackupError, match="truncated"):
        rb.run(target.params(state="restored", src=str(truncated)))


def crc64(data, crc=0):
    """Redis' CRC-64 (Jones polynomial, reflected), as in src/crc64.c."""
    table = crc64.table
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def _crc_table():
    poly = 0x95AC9329AC4BC9B5
    table = []
    for i in range(256):
        crc = i
        for _dummy in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return table


crc64.table = _crc_table()


def forge_export(src, dst, version=None, fix_crc=True, header_version=None):
    """Copy a key export, changing the RDB version bytes of every payload (and header)."""
    reader = rb.KeysReader(src)
    try:
        header = dict(reader.header)
        if header_version is not None:
            header["rdb_version"] = header_version
        with open(dst, "wb") as handle:
            writer = rb.KeysWriter(handle, {k: v for k, v in header.items()
                                            if k not in ("format", "version", "compression", "ttl")})
            while True:
                record = reader.next_record()
                if record is None:
                    break
                key, expire_at, size = record
                payload = bytearray(reader.read(size))
                if version is not None:
                    payload[-10:-8] = version.to_bytes(2, "little")
                    if fix_crc:
                        payload[-8:] = crc64(bytes(payload[:-8])).to_bytes(8, "little")
                writer.write(rb._RECORD.pack(b"K", len(key), expire_at, len(payload)))  # pylint: disable=protected-access
                writer.write(key)
                writer.write(bytes(payload))
            writer.finish(reader.count, {"rdb_version": header.get("rdb_version")})
    finally:
        reader.close()


def test_newer_dump_payloads_are_refused_with_both_versions(tmp_path, servers, monkeypatch):
    source = servers("new-src")
    source.client().mset({"vf:config:tenant%d" % i: "cfg" for i in range(5)})
    export = rb.run(source.params(dest=str(tmp_path / "b"), mode="keys", patterns=["vf:config:*"]))

    # the CRC64 helper matches Redis: a real payload checks out
    dump = source.client().dump("vf:config:tenant0")
    assert crc64(dump[:-8]).to_bytes(8, "little") == dump[-8:]

    target = servers("new-dst")
    tclient = target.client()

    # 1. header claims a newer RDB: refused before anything is restored
    forged = tmp_path / "header.keys"
    forge_export(export["file"], str(forged), header_version=99)
    with pytest.raises(rb.BackupError) as info:
        rb.run(target.params(state="restored", src=str(forged)))
    assert "RDB format version 99" in info.value.msg and "only loads RDB versions up to 10" in info.value.msg
    assert tclient.dbsize() == 0

    # 2. payload footers forged (valid CRC): the first record's version bytes stop it
    forged = tmp_path / "payload.keys"
    forge_export(export["file"], str(forged), version=11)
    with pytest.raises(rb.BackupError) as info:
        rb.run(target.params(state="restored", src=str(forged)))
    assert "RDB format version 11 (written by Redis 7.0.15)" in info.value.msg
    assert "target Redis 7.0.15" in info.value.msg and "up to 10" in info.value.msg
    assert "restore into a Redis at least as new as the source" in info.value.msg
    assert tclient.dbsize() == 0

    # 3. target version unknown: Redis' own "DUMP payload version or checksum are wrong"
    #    plus the version bytes give the same diagnosis
    monkeypatch.setattr(rb, "target_rdb_version", lambda conn, info: (None, "unknown"))
    forged = tmp_path / "payload-nocrc.keys"
    forge_export(export["file"], str(forged), version=200, fix_crc=False)
    with pytest.raises(rb.BackupError, match=r"RDB format version 200 .*RESTORE refuses payloads from newer"):
        rb.run(target.params(state="restored", src=str(forged)))
    assert tclient.dbsize() == 0

    # 4. same version, broken CRC: a corrupt record, not a version problem
    forged = tmp_path / "corrupt.keys"
    forge_export(export["file"], str(forged))
    data = bytearray(forged.read_bytes())
    data[-10] ^= 0x01  # last byte of the last payload's CRC (before the 9-byte end marker)
    forged.write_bytes(bytes(data))
    with pytest.raises(rb.BackupError, match="1 of the keys .* failed to restore.*CRC64") as info:
        rb.run(target.params(state="restored", src=str(forged)))
    assert info.value.details["restored"] == 4 and info.value.details["restore_errors"] == 1


# ---------------------------------------------------------------------------
# BGSAVE
# ---------------------------------------------------------------------------
def test_bgsave_joins_a_running_save(tmp_path, servers):
    server = servers("bgsave", extra=["--rdb-key-save-delay", "5000"])
    client = server.client()
    client.execute_command("DEBUG", "POPULATE", "300", "k", "10")
    saves = int(client.info("persistence")["rdb_saves"])
    client.bgsave()
    assert client.info("persistence")["rdb_bgsave_in_progress"] == 1
    result = rb.run(server.params(mode="bgsave", bgsave_timeout=60))
    assert result["changed"] is True and result["bgsave"]["action"] == "joined"
    info = client.info("persistence")
    assert info["rdb_bgsave_in_progress"] == 0 and info["rdb_last_bgsave_status"] == "ok"
    assert int(info["rdb_saves"]) == saves + 1  # joined, not a second save

    # a diskless transfer (someone's redis-cli --rdb) is an RDB child too, but it writes
    # nothing to disk: it is waited for, then a real save follows
    os.unlink(os.path.join(server.directory, "dump.rdb"))
    streamer = subprocess.Popen(["redis-cli", "-p", str(server.port), "--rdb", str(tmp_path / "other.rdb")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while client.info("persistence")["rdb_bgsave_in_progress"] != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        client.config_set("rdb-key-save-delay", 0)  # the running child keeps its own setting
        result = rb.run(server.params(mode="bgsave", bgsave_timeout=60))
    finally:
        streamer.wait(30)
    assert result["bgsave"]["action"] == "triggered" and result["bgsave"]["waited_for_running_child"] is True
    assert result["bgsave"]["rdb_saves"] == saves + 2
    assert os.path.exists(os.path.join(server.directory, "dump.rdb"))

    # bgsave before a key export
    result = rb.run(server.params(mode="keys", patterns=["k:1"], bgsave=True, dest=str(tmp_path / "b")))
    assert result["bgsave"]["action"] == "triggered" and result["keys"] == 1
    assert result["bgsave"]["rdb_saves"] == saves + 3


def test_bgsave_failure_is_reported(tmp_path, servers):
    server = servers("bgsave-fail", extra=["--enable-protected-configs", "yes"])
    client = server.client()
    client.set("k", "v")
    gone = tmp_path / "gone"
    gone.mkdir()
    client.config_set("dir", str(gone))
    gone.rmdir()
    with pytest.raises(rb.BackupError, match="BGSAVE on Redis at .* failed .*rdb_last_bgsave_status:err"):
        rb.run(server.params(mode="bgsave", bgsave_timeout=30))


# ---------------------------------------------------------------------------
# Redis glob semantics
# ---------------------------------------------------------------------------
GLOB_KEYS = [b"", b"a", b"b", b"ab", b"abc", b"a*c", b"a?c", b"[a]", b"a\\b", b"-", b"]", b"^", b"a-c",
             b"vf:config:1", b"vf:config:tenant1", b"x\nb", b"\xff\x00"]


@pytest.fixture(scope="module")
def glob_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("glob"), name="glob").start()
    client = server.client()
    for key in GLOB_KEYS:
        client.set(key, 1)
    yield client
    server.stop()


def _redis_keys(client, pattern):
    return set(client.keys(pattern))


@pytest.mark.parametrize("pattern", [
    b"*", b"a*", b"*c", b"a?c", b"a\\*c", b"[ab]", b"[^a]", b"[a-c]", b"[c-a]", b"[\\]]", b"[]]",
    b"[", b"[ab", b"\\", b"a\\", b"[^]", b"[]", b"vf:config:*", b"vf:config:tenant1", b"[a-]",
    b"*\\\\*", b"?", b"??", b"*\n*", b"\xff*",
])
def test_glob_translation_matches_redis(glob_server, pattern):
    regex = rb.glob_to_regex(pattern)
    assert {k for k in GLOB_KEYS if regex.fullmatch(k)} == _redis_keys(glob_server, pattern)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=6).map(lambda b: bytes(c % 8 for c in b)).map(
    lambda b: b.translate(bytes.maketrans(bytes(range(8)), b"ab*?[]^\\"))))
def test_glob_translation_matches_redis_on_random_patterns(glob_server, pattern):
    regex = rb.glob_to_regex(pattern)
    assert {k for k in GLOB_KEYS if regex.fullmatch(k)} == _redis_keys(glob_server, pattern)
