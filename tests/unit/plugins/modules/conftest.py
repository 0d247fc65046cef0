# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures for the tenant_drain tests: the real reference app, a TLS terminator in front
of it, a scripted fault server, and a runner that executes the module through
ansible-playbook (AnsiballZ, real module_utils imports) and returns each task's result.

Every fixture name starts with ``drain_`` so that it cannot clash with fixtures of
other modules' tests.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "unit", "refapp"))

import refapp_support  # noqa: E402  pylint: disable=wrong-import-position

OPENSSL = "/usr/bin/openssl"


# --------------------------------------------------------------------------- ansible


class AnsibleRunner(object):
    """Runs tasks of opsdeck.stack.tenant_drain in one ansible-playbook process."""

    def __init__(self, workdir):
        self.workdir = workdir
        collections = os.path.join(workdir, "collections")
        os.makedirs(os.path.join(collections, "ansible_collections", "opsdeck"))
        os.symlink(REPO_ROOT, os.path.join(collections, "ansible_collections", "opsdeck", "stack"))
        cfg = os.path.join(workdir, "ansible.cfg")
        with open(cfg, "w", encoding="utf-8") as fh:
            fh.write("[defaults]\nretry_files_enabled = false\nnocows = true\n")
        bindir = os.path.dirname(sys.executable)
        self.playbook_bin = os.path.join(bindir, "ansible-playbook")
        refapp_support.require_binary(self.playbook_bin, "ansible-playbook (the project venv)")
        self.env = dict(os.environ)
        self.env.update({
            "ANSIBLE_CONFIG": cfg,
            "ANSIBLE_COLLECTIONS_PATH": collections,
            "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
            "ANSIBLE_HOST_KEY_CHECKING": "0",
            "ANSIBLE_LOCAL_TEMP": os.path.join(workdir, "tmp"),
            "ANSIBLE_NOCOLOR": "1",
        })
        self.env.pop("OPSDECK_ADMIN_TOKEN", None)
        self.count = 0

    def run(self, *tasks, timeout=120, during=None):
        """Each task: dict(args=..., check=False, diff=False). Returns a list of results.

        Every result is the task's registered result plus ``_duration`` (seconds, from the
        callback's timestamps); failures do not stop the play (ignore_errors).
        ``during``, if given, is called while ansible-playbook runs (e.g. to start in-flight
        work once the first task has talked to the app, whatever the machine's load).
        """
        self.count += 1
        play_tasks = []
        for i, task in enumerate(tasks):
            play_tasks.append({
                "name": "t%d" % i,
                "opsdeck.stack.tenant_drain": task["args"],
                "check_mode": bool(task.get("check")),
                "diff": bool(task.get("diff")),
                "ignore_errors": True,
            })
        playbook = [{"hosts": "localhost", "gather_facts": False, "tasks": play_tasks}]
        path = os.path.join(self.workdir, "playbook-%d.yml" % self.count)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(playbook, fh)
        proc = subprocess.Popen(
            [self.playbook_bin, "-i", "localhost,", "-c", "local",
             "-e", "ansible_python_interpreter=%s" % sys.executable, path],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=self.workdir)
        try:
            if during is not None:
                during()
            stdout, stderr = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        try:
            out = json.loads(stdout)
        except ValueError:
            raise AssertionError("ansible-playbook did not print JSON (rc=%d)\nstdout: %s\nstderr: %s"
                                 % (proc.returncode, stdout[-3000:], stderr[-3000:]))
        results = []
        for task in out["plays"][0]["tasks"]:
            res = dict(task["hosts"]["localhost"])
            dur = task["task"]["duration"]
            res["_duration"] = _ts(dur["end"]) - _ts(dur["start"])
            res["_raw_stdout"] = stdout
            results.append(res)
        assert len(results) == len(tasks), stdout[-3000:] + stderr[-3000:]
        return results

    def one(self, check=False, diff=False, **args):
        return self.run({"args": args, "check": check, "diff": diff})[0]


def _ts(value):
    from datetime import datetime
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="session")
def drain_ansible(tmp_path_factory):
    return AnsibleRunner(str(tmp_path_factory.mktemp("tenant-drain-ansible")))


@pytest.fixture(scope="session")
def drain_http(drain_ansible):
    """The _http module_utils imported in-process (through the runner's collection tree)."""
    import importlib
    root = drain_ansible.env["ANSIBLE_COLLECTIONS_PATH"]
    if root not in sys.path:
        sys.path.append(root)
    return importlib.import_module("ansible_collections.opsdeck.stack.plugins.module_utils.clients.http")


# ---------------------------------------------------------------------------- refapp


@pytest.fixture
def drain_refapp_factory(tmp_path):
    apps = []

    def start(env=None, **kwargs):
        full = {"TENANTS": "acme,globex,initech", "APP_SHUTDOWN_TIMEOUT": "1"}
        full.update(env or {})
        app = refapp_support.RefApp(str(tmp_path), env=full, **kwargs)
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.stop()


@pytest.fixture
def drain_refapp(drain_refapp_factory):
    """The reference app (tenants acme, globex, initech) on 127.0.0.1:<random>."""
    return drain_refapp_factory()


class Background(object):
    """Requests of in-flight work started in threads; ``join()`` returns their statuses."""

    def __init__(self):
        self.threads = []
        self.statuses = []

    def work(self, app, ms, tenant=None):
        path = "/api/work?ms=%d" % ms + ("&tenant=%s" % tenant if tenant else "")

        def run():
            try:
                self.statuses.append(app.get(path, timeout=30).status)
            except OSError as exc:
                self.statuses.append(repr(exc))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self, timeout=30):
        for thread in self.threads:
            thread.join(timeout)
        return sorted(self.statuses, key=str)


@pytest.fixture
def drain_background():
    bg = Background()
    yield bg
    bg.join(timeout=0.1)  # leftover work is cut short when its app stops


@pytest.fixture
def drain_wait_request():
    """wait_request(app, method, path, count=1): block until the app logged such requests."""
    return wait_request


def wait_request(app, method, path, count=1, timeout=60.0):
    """Block until the app has logged ``count`` requests ``method path``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = [r for r in app.logs() if r.get("event") == "http_request"
                and r.get("method") == method and r.get("path") == path]
        if len(seen) >= count:
            return
        time.sleep(0.05)
    raise AssertionError("the app never saw %d x %s %s" % (count, method, path))


# ------------------------------------------------------------------------------- TLS


@pytest.fixture(scope="session")
def drain_tls_cert(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 made by ``openssl req``: (cert, key)."""
    refapp_support.require_binary(OPENSSL, "openssl")
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=opsdeck-tenant-drain-test",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class TlsProxy(object):
    """TLS terminator on 127.0.0.1:<random> forwarding bytes to an upstream port.

    Each accepted connection is served by one thread that does the handshake, relays
    both directions with a selector and closes both sockets itself. Nothing else ever
    touches those sockets: an SSL object is not safe to read in one thread and write in
    another, and a socket closed by one thread while another still waits on it frees its
    file descriptor number, which the next accepted connection gets at once; the stale
    SSL object then reads that client's ClientHello and answers it with an encrypted
    record ("[SSL: UNEXPECTED_MESSAGE]" / "bad record mac" on the client).
    """

    IDLE_TIMEOUT = 10.0

    def __init__(self, cert, key, upstream_port):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.upstream = upstream_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.url = "https://127.0.0.1:%d" % self.port
        self.handshake_failures = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _addr = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        conn.settimeout(self.IDLE_TIMEOUT)
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            with self._lock:
                self.handshake_failures += 1
            conn.close()
            return
        try:
            up = socket.create_connection(("127.0.0.1", self.upstream), timeout=self.IDLE_TIMEOUT)
        except OSError:
            tls.close()
            return
        try:
            self._relay(tls, up)
        finally:
            up.close()
            tls.close()

    def _relay(self, tls, up):
        """Copy bytes both ways until either side closes (or errors, or idles too long)."""
        peer = {tls: up, up: tls}
        sel = selectors.DefaultSelector()
        sel.register(tls, selectors.EVENT_READ)
        sel.register(up, selectors.EVENT_READ)
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                ready = [key.fileobj for key, _events in sel.select(timeout=0.2)]
                if tls not in ready and tls.pending():
                    ready.append(tls)  # decrypted bytes already buffered in the SSL object
                if not ready:
                    if time.monotonic() - idle_since > self.IDLE_TIMEOUT:
                        return
                    continue
                idle_since = time.monotonic()
                for src in ready:
                    data = src.recv(65536)
                    if not data:
                        return
                    peer[src].sendall(data)
        except OSError:  # includes ssl.SSLError and socket.timeout
            return
        finally:
            sel.close()

    def close(self):
        self._stop.set()
        self._thread.join(10)
        self.sock.close()


@pytest.fixture
def drain_tls_proxy(drain_tls_cert):
    proxies = []

    def start(upstream_port):
        proxy = TlsProxy(drain_tls_cert[0], drain_tls_cert[1], upstream_port)
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.close()


# ----------------------------------------------------------------------- fault server


class FaultServer(object):
    """A scripted HTTP server on 127.0.0.1: ``script[(method, path)]`` is a list of
    responses served in order (the last one repeats). A response is a dict with
    ``status``, ``body`` (JSON-able), ``headers``, ``delay`` (seconds before answering)
    or ``action: reset`` (close the connection with a TCP RST, no answer)."""

    def __init__(self, script):
        self.script = {k: list(v) for k, v in script.items()}
        self.log = []  # (monotonic time, method, path, authorization)
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with owner._lock:
                    owner.log.append((time.monotonic(), self.command, self.path,
                                      self.headers.get("Authorization")))
                    queue = owner.script.get((self.command, self.path))
                    if not queue:
                        spec = {"status": 404, "body": {"error": "no script for %s %s" % (self.command, self.path)}}
                    else:
                        spec = queue.pop(0) if len(queue) > 1 else queue[0]
                if spec.get("delay"):
                    time.sleep(spec["delay"])
                if spec.get("action") == "reset":
                    # SO_LINGER on, timeout 0: close() sends a TCP RST
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                body = json.dumps(spec.get("body", {})).encode()
                try:
                    self.send_response(spec.get("status", 200))
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for key, value in spec.get("headers", {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    self.close_connection = True

            do_GET = _serve
            do_POST = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)
        self._thread.start()

    def requests(self, method=None, path=None):
        with self._lock:
            return [e for e in self.log if (method is None or e[1] == method) and (path is None or e[2] == path)]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def drain_fault_server():
    servers = []

    def start(script):
        server = FaultServer(script)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture(scope="session")
def drain_server_classes():
    """TlsProxy and FaultServer, for module-scoped fixtures that start their own."""
    return {"TlsProxy": TlsProxy, "FaultServer": FaultServer}
