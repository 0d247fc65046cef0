# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers that run the reference app and its real dependencies on 127.0.0.1.

Shared by tests/unit/refapp and tests/unit/plugins/modules (tenant_drain). Every daemon
is started with a temp dir on a random port and stopped by the fixture that started it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
APP_PY = os.path.join(REPO_ROOT, "roles", "images", "files", "refapp", "app.py")
REDIS_SERVER = "/usr/bin/redis-server"
PG_BIN = "/usr/lib/postgresql/15/bin"
# the app runs in the image's Debian python3; in tests use the interpreter running pytest
APP_PYTHON = sys.executable


def require_binary(path, what):
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise RuntimeError(
            "%s not found at %s: it is installed by the project's setup script "
            "(make setup / scripts/setup.sh); these tests do not skip without it" % (what, path))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port, proc=None, timeout=15.0, what="daemon", log_path=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s exited with %s before listening on %d%s"
                               % (what, proc.returncode, port, _tail(log_path)))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("%s did not listen on 127.0.0.1:%d within %.0fs%s" % (what, port, timeout, _tail(log_path)))


def _tail(path, lines=20):
    if not path or not os.path.exists(path):
        return ""
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        return "\n--- log tail ---\n" + "".join(fh.readlines()[-lines:])


def stop_process(proc, timeout=10.0):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return proc.returncode


class HttpResult:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)


def http(method, url, token=None, headers=None, body=None, timeout=10.0):
    """Plain urllib request returning status/headers/body, never raising on HTTP errors."""
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = "Bearer %s" % token
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return HttpResult(resp.status, dict(resp.headers), resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        return HttpResult(exc.code, dict(exc.headers), exc.read().decode("utf-8"))


class RefApp:
    """The reference app running as a subprocess; stdout (JSON logs) goes to a file."""

    def __init__(self, workdir, env=None, token="test-admin-token", port=None):
        self.workdir = workdir
        self.port = port or free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.token = token
        self.log_path = os.path.join(workdir, "refapp-%d.log" % self.port)
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "APP_HOST": "127.0.0.1",
            "APP_PORT": str(self.port),
            "APP_VERSION": "1.2.3",
        }
        if token is not None:
            token_file = os.path.join(workdir, "admin-token-%d" % self.port)
            with open(token_file, "w", encoding="utf-8") as fh:
                fh.write(token + "\n")
            full_env["ADMIN_TOKEN_FILE"] = token_file
        full_env.update(env or {})
        self.env = full_env
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([APP_PYTHON, "-u", APP_PY], env=full_env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_for_port(self.port, self.proc, what="refapp", log_path=self.log_path)
        except Exception:
            self.stop()
            raise

    def request(self, method, path, auth=False, **kwargs):
        if auth and "token" not in kwargs:
            kwargs["token"] = self.token
        return http(method, self.url + path, **kwargs)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self.request("POST", path, **kwargs)

    def logs(self):
        """Every stdout line parsed as JSON (raises if a line is not JSON)."""
        self._log.flush()
        with open(self.log_path, "r", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def stop(self):
        code = stop_process(self.proc)
        self._log.close()
        return code


class RedisServer:
    def __init__(self, workdir, password="redis-test-pw"):
        require_binary(REDIS_SERVER, "redis-server")
        self.port = free_port()
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="redis-", dir=workdir)
        self.log_path = os.path.join(self.dir, "redis.log")
        self.password_file = os.path.join(self.dir, "password")
        with open(self.password_file, "w", encoding="utf-8") as fh:
            fh.write(password + "\n")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--requirepass", password,
             "--daemonize", "no", "--protected-mode", "yes"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc, what="redis-server", log_path=self.log_path)

    def command(self, *args):
        """Send one command with redis-cli semantics, via a raw socket (no client library)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            payload = b""
            for cmd in (("AUTH", self.password), args):
                payload += b"*%d\r\n" % len(cmd)
                for arg in cmd:
                    data = str(arg).encode()
                    payload += b"$%d\r\n%s\r\n" % (len(data), data)
            sock.sendall(payload)
            reader = sock.makefile("rb")
            assert reader.readline() == b"+OK\r\n"
            line = reader.readline()
            if line.startswith(b"$"):
                size = int(line[1:])
                return None if size < 0 else reader.read(size + 2)[:-2].decode()
            if line.startswith(b":"):
                return int(line[1:])
            return line.strip().decode()

    def stop(self):
        stop_process(self.proc)
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresServer:
    """initdb + postgres on 127.0.0.1:<random>, password auth (scram-sha-256, and md5 for
    one role) over TCP. Runs as 'nobody' when the tests run as root."""

    SUPERUSER_PW = "pg-super-pw"
    APP_USER, APP_PW, APP_DB = "app", "app-scram-pw", "appdb"
    MD5_USER, MD5_PW = "legacy", "legacy-md5-pw"

    def __init__(self):
        for name in ("initdb", "postgres", "psql"):
            require_binary(os.path.join(PG_BIN, name), "PostgreSQL 15 " + name)
        self.port = free_port()
        # not under pytest's tmp dir: that one is 0700 and the server may run as 'nobody'
        self.dir = tempfile.mkdtemp(prefix="opsdeck-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "postgres.log")
        self._user = {}
        if os.geteuid() == 0:
            self._user = {"user": 65534, "group": 65534, "extra_groups": []}
            os.chown(self.dir, 65534, 65534)
        pwfile = os.path.join(self.dir, "pwfile")
        with open(pwfile, "w", encoding="utf-8") as fh:
            fh.write(self.SUPERUSER_PW + "\n")
        if self._user:
            os.chown(pwfile, 65534, 65534)
        self._run([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", "postgres", "--pwfile", pwfile,
                   "-E", "UTF8", "--locale=C", "--no-sync", "--auth-local=trust",
                   "--auth-host=scram-sha-256"])
        with open(os.path.join(self.data, "pg_hba.conf"), "w", encoding="utf-8") as fh:
            fh.write("local all all trust\n"
                     "host all %s 127.0.0.1/32 md5\n"
                     "host all all 127.0.0.1/32 scram-sha-256\n" % self.MD5_USER)
        self._log = open(self.log_path, "wb")
        if self._user:
            os.chown(self.log_path, 65534, 65534)
        self.proc = subprocess.Popen(
            [os.path.join(PG_BIN, "postgres"), "-D", self.data, "-p", str(self.port), "-h", "127.0.0.1",
             "-k", self.dir, "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=40"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **self._user)
        wait_for_port(self.port, self.proc, what="postgres", log_path=self.log_path, timeout=30)
        # the port opens before the server takes connections ("the database system is starting up")
        deadline = time.monotonic() + 60
        while subprocess.run([os.path.join(PG_BIN, "pg_isready"), "-q", "-h", self.dir, "-p", str(self.port)],
                             check=False, **self._user).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("postgres did not accept connections (log: %s)" % self.log_path)
            time.sleep(0.2)
        self.psql(
            "CREATE ROLE %s LOGIN PASSWORD '%s';" % (self.APP_USER, self.APP_PW),
            "CREATE DATABASE %s OWNER %s;" % (self.APP_DB, self.APP_USER),
            "SET password_encryption = 'md5'; CREATE ROLE %s LOGIN PASSWORD '%s';" % (self.MD5_USER, self.MD5_PW),
        )
        self.app_password_file = self._secret("app-pw", self.APP_PW)
        self.md5_password_file = self._secret("md5-pw", self.MD5_PW)

    def _secret(self, name, value):
        path = os.path.join(self.dir, name)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(value + "\n")
        return path

    def _run(self, argv):
        res = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, **self._user)
        if res.returncode != 0:
            raise RuntimeError("%s failed (%d): %s %s" % (argv[0], res.returncode, res.stdout, res.stderr))
        return res.stdout

    def psql(self, *statements, db="postgres"):
        out = ""
        for sql in statements:
            out += self._run([os.path.join(PG_BIN, "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-At",
                              "-h", self.dir, "-p", str(self.port), "-U", "postgres", "-d", db, "-c", sql])
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT: fast shutdown
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
