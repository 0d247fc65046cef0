# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""opsdeck reference application ("refapp").

A small multi-tenant web service used to exercise every part of opsdeck.stack:
health checks, Prometheus metrics, JSON logs, PostgreSQL and Redis dependencies,
and the drain API that ``opsdeck.stack.tenant_drain`` drives during rolling upgrades.

Python 3.11 standard library only (the image has python3 and nothing else), so the
PostgreSQL (wire protocol v3: startup, SCRAM-SHA-256/md5/cleartext auth, simple
query) and Redis (RESP2) clients below are minimal, self-contained implementations.

Configuration comes from the environment; see README.md next to this file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import socket
import struct
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------


def _env_int(name, default):
    raw = os.environ.get(name, "")
    if raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit("refapp: %s must be an integer, got %r" % (name, raw))


def _env_float(name, default):
    raw = os.environ.get(name, "")
    if raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit("refapp: %s must be a number, got %r" % (name, raw))


def _env_bool(name, default=False):
    raw = os.environ.get(name, "").strip().lower()
    if raw == "":
        return default
    return raw in ("1", "true", "yes", "on")


def _read_secret_file(path):
    """Content of a secret file without its trailing newline; None when unset/unreadable."""
    if not path:
        return None
    try:
        with open(path, "r", encoding="utf-8") as fh:
            return fh.read().rstrip("\r\n")
    except OSError:
        return None


TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Config:
    def __init__(self, env=None):
        env = os.environ if env is None else env
        self.app_name = env.get("APP_NAME") or "refapp"
        self.host = env.get("APP_HOST") or "0.0.0.0"
        self.port = _env_int("APP_PORT", 8000)
        # More ports served by the same application (a service with several ports).
        self.extra_ports = [int(p) for p in (env.get("APP_EXTRA_PORTS") or "").split(",") if p.strip()]
        self.version = env.get("APP_VERSION") or "0.0.0"
        self.fail_ready = _env_bool("APP_FAIL_READY")
        # Answer not-ready for this long after start (a slow start, for tests).
        self.ready_after = _env_float("APP_READY_AFTER", 0.0)
        self.drain_unready = _env_bool("APP_DRAIN_UNREADY")
        self.work_ms = _env_int("APP_WORK_MS", 100)
        self.max_work_ms = _env_int("APP_MAX_WORK_MS", 60000)
        self.retry_after = _env_int("APP_RETRY_AFTER", 5)
        self.shutdown_timeout = _env_float("APP_SHUTDOWN_TIMEOUT", 10.0)
        # Keep serving this long after SIGTERM (answering not-ready) so that proxies still
        # holding this instance's address from DNS (Swarm dnsrr) are not refused.
        self.shutdown_delay = _env_float("APP_SHUTDOWN_DELAY", 0.0)
        self.log_level = (env.get("LOG_LEVEL") or "info").lower()
        self.tenants = [t.strip() for t in (env.get("TENANTS") or "").split(",") if t.strip()]
        # Redis keys of the tenants' data: <prefix>config:<tenant>, <prefix>tenants
        # (playbooks/migrate_tenant.yml moves the same keys).
        self.key_prefix = env.get("REDIS_KEY_PREFIX", "app:")
        self.admin_token_file = env.get("ADMIN_TOKEN_FILE") or None

        self.db_host = env.get("DATABASE_HOST") or None
        self.db_port = _env_int("DATABASE_PORT", 5432)
        self.db_name = env.get("DATABASE_NAME") or "app"
        self.db_user = env.get("DATABASE_USER") or "app"
        self.db_password_file = env.get("DATABASE_PASSWORD_FILE") or None
        self.db_timeout = _env_float("DATABASE_TIMEOUT", 2.0)
        self.db_pool = max(1, _env_int("DATABASE_POOL_SIZE", 4))

        self.redis_host = env.get("REDIS_HOST") or None
        self.redis_port = _env_int("REDIS_PORT", 6379)
        self.redis_user = env.get("REDIS_USER") or None
        self.redis_password_file = env.get("REDIS_PASSWORD_FILE") or None
        self.redis_db = _env_int("REDIS_DB", 0)
        self.redis_timeout = _env_float("REDIS_TIMEOUT", 2.0)
        self.redis_pool = max(1, _env_int("REDIS_POOL_SIZE", 4))

    def public(self):
        """Configuration safe to log (no secrets, only whether they are set)."""
        return {
            "app_name": self.app_name,
            "version": self.version,
            "port": self.port,
            "extra_ports": self.extra_ports,
            "tenants": self.tenants,
            "redis_key_prefix": self.key_prefix,
            "database": ("%s:%s/%s" % (self.db_host, self.db_port, self.db_name)) if self.db_host else None,
            "redis": ("%s:%s" % (self.redis_host, self.redis_port)) if self.redis_host else None,
            "admin_api": bool(self.admin_token_file),
            "fail_ready": self.fail_ready,
        }


# --------------------------------------------------------------------------------------
# JSON logs
# --------------------------------------------------------------------------------------

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class JsonLogger:
    """One JSON object per line on stdout: ts, level, component, event, ...fields."""

    def __init__(self, component, level="info", stream=None):
        self.component = component
        self.threshold = _LEVELS.get(level, 20)
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def log(self, level, event, **fields):
        if _LEVELS.get(level, 20) < self.threshold:
            return
        now = datetime.now(timezone.utc)
        record = {
            "ts": now.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (now.microsecond // 1000),
            "level": level,
            "component": self.component,
            "event": event,
        }
        for key, value in fields.items():
            if value is not None:
                record[key] = value
        line = json.dumps(record, separators=(",", ":"), default=str)
        with self._lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass


# --------------------------------------------------------------------------------------
# PostgreSQL: minimal protocol v3 client
# --------------------------------------------------------------------------------------


class DependencyError(Exception):
    """A dependency (PostgreSQL, Redis) failed or is unreachable."""


class ConnectionLost(DependencyError):
    """The connection broke (closed, protocol error): it must not be reused."""


class PgError(DependencyError):
    def __init__(self, fields):
        self.fields = fields
        msg = "%s: %s" % (fields.get("S", "ERROR"), fields.get("M", "unknown error"))
        if fields.get("C"):
            msg += " (SQLSTATE %s)" % fields["C"]
        super().__init__(msg)


def _recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionLost("connection closed by server")
        buf += chunk
    return bytes(buf)


def _cstr(value):
    return value.encode("utf-8") + b"\x00"


def _parse_error_fields(payload):
    fields = {}
    for part in payload.split(b"\x00"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


def _scram_sha256(password, client_nonce, server_first, client_first_bare):
    """Return (client_final_message, expected_server_signature) for SCRAM-SHA-256."""
    attrs = dict(item.split("=", 1) for item in server_first.split(","))
    server_nonce = attrs["r"]
    if not server_nonce.startswith(client_nonce):
        raise DependencyError("SCRAM: server nonce does not extend the client nonce")
    salt = base64.b64decode(attrs["s"])
    iterations = int(attrs["i"])
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = "c=biws,r=" + server_nonce
    auth_message = ",".join((client_first_bare, server_first, without_proof)).encode("utf-8")
    client_sig = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, client_sig))
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    server_sig = hmac.new(server_key, auth_message, hashlib.sha256).digest()
    final = without_proof + ",p=" + base64.b64encode(proof).decode("ascii")
    return final, server_sig


class PgConnection:
    def __init__(self, host, port, user, password, database, timeout=2.0, app_name="refapp"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.params = {}
        try:
            self._startup(user, password, database, app_name)
        except BaseException:
            self.close()
            raise

    def _send(self, type_byte, payload):
        self.sock.sendall(type_byte + struct.pack("!I", len(payload) + 4) + payload)

    def _read(self):
        head = _recv_exact(self.sock, 5)
        length = struct.unpack("!I", head[1:5])[0]
        return head[0:1], _recv_exact(self.sock, length - 4)

    def _startup(self, user, password, database, app_name):
        body = struct.pack("!I", 196608)
        for key, value in (("user", user), ("database", database), ("application_name", app_name)):
            body += _cstr(key) + _cstr(value)
        body += b"\x00"
        self.sock.sendall(struct.pack("!I", len(body) + 4) + body)
        scram = None
        while True:
            mtype, payload = self._read()
            if mtype == b"E":
                raise PgError(_parse_error_fields(payload))
            if mtype == b"R":
                code = struct.unpack("!I", payload[:4])[0]
                if code == 0:  # AuthenticationOk
                    continue
                if password is None:
                    raise DependencyError("PostgreSQL asks for a password but DATABASE_PASSWORD_FILE is not set/readable")
                if code == 3:  # cleartext
                    self._send(b"p", _cstr(password))
                elif code == 5:  # md5
                    salt = payload[4:8]
                    inner = hashlib.md5((password + user).encode("utf-8")).hexdigest()
                    outer = hashlib.md5(inner.encode("ascii") + salt).hexdigest()
                    self._send(b"p", _cstr("md5" + outer))
                elif code == 10:  # SASL
                    mechanisms = [m.decode() for m in payload[4:].split(b"\x00") if m]
                    if "SCRAM-SHA-256" not in mechanisms:
                        raise DependencyError("no supported SASL mechanism in %s" % mechanisms)
                    nonce = base64.b64encode(secrets.token_bytes(18)).decode("ascii")
                    first_bare = "n=,r=" + nonce
                    first = ("n,," + first_bare).encode("utf-8")
                    self._send(b"p", _cstr("SCRAM-SHA-256") + struct.pack("!i", len(first)) + first)
                    scram = {"nonce": nonce, "first_bare": first_bare}
                elif code == 11:  # SASLContinue
                    if scram is None:
                        raise DependencyError("unexpected SASLContinue")
                    final, scram["server_sig"] = _scram_sha256(
                        password, scram["nonce"], payload[4:].decode("utf-8"), scram["first_bare"])
                    self._send(b"p", final.encode("utf-8"))
                elif code == 12:  # SASLFinal
                    attrs = dict(i.split("=", 1) for i in payload[4:].decode("utf-8").split(","))
                    if scram is None or not hmac.compare_digest(
                            base64.b64decode(attrs.get("v", "")), scram["server_sig"]):
                        raise DependencyError("SCRAM: server signature mismatch")
                else:
                    raise DependencyError("unsupported PostgreSQL authentication method %d" % code)
            elif mtype == b"S":
                key, value = payload.split(b"\x00")[:2]
                self.params[key.decode()] = value.decode()
            elif mtype == b"Z":
                return
            # BackendKeyData ("K"), NoticeResponse ("N"): ignored

    def query(self, sql):
        """Run a simple query; return (column_names, rows) of the last result set (text values)."""
        self._send(b"Q", _cstr(sql))
        columns, rows, error = [], [], None
        while True:
            mtype, payload = self._read()
            if mtype == b"T":
                count = struct.unpack("!H", payload[:2])[0]
                pos, columns, rows = 2, [], []
                for _col in range(count):
                    end = payload.index(b"\x00", pos)
                    columns.append(payload[pos:end].decode("utf-8"))
                    pos = end + 1 + 18
            elif mtype == b"D":
                count = struct.unpack("!H", payload[:2])[0]
                pos, row = 2, []
                for _col in range(count):
                    size = struct.unpack("!i", payload[pos:pos + 4])[0]
                    pos += 4
                    if size < 0:
                        row.append(None)
                    else:
                        row.append(payload[pos:pos + size].decode("utf-8"))
                        pos += size
                rows.append(row)
            elif mtype == b"E":
                error = PgError(_parse_error_fields(payload))
            elif mtype == b"Z":
                if error is not None:
                    raise error
                return columns, rows
            # CommandComplete, EmptyQuery, Notice, ParameterStatus: ignored

    def close(self):
        try:
            self.sock.sendall(b"X\x00\x00\x00\x04")
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------------------
# Redis: minimal RESP2 client
# --------------------------------------------------------------------------------------


class RedisError(DependencyError):
    pass


class RedisConnection:
    def __init__(self, host, port, password=None, username=None, db=0, timeout=2.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.reader = self.sock.makefile("rb")
        try:
            if password is not None:
                if username:
                    self.command("AUTH", username, password)
                else:
                    self.command("AUTH", password)
            if db:
                self.command("SELECT", str(db))
        except BaseException:
            self.close()
            raise

    def command(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode("utf-8")
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _line(self):
        line = self.reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionLost("connection closed by server")
        return line[:-2]

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode("utf-8")
        if kind == b"-":
            raise RedisError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.reader.read(size + 2)
            if len(data) != size + 2:
                raise ConnectionLost("connection closed by server")
            return data[:-2]
        if kind == b"*":
            size = int(rest)
            if size < 0:
                return None
            return [self._reply() for _item in range(size)]
        raise ConnectionLost("protocol error: unexpected reply %r" % line[:32])

    def close(self):
        for obj in (self.reader, self.sock):
            try:
                obj.close()
            except OSError:
                pass


# --------------------------------------------------------------------------------------
# a tiny connection pool: lazy connect, drop broken connections, reconnect on next use
# --------------------------------------------------------------------------------------


class Pool:
    """Idle connections are reused; a connection that fails with an I/O error is dropped
    and, if it was a reused one (the server may have restarted since), the call is retried
    once on a fresh connection."""

    def __init__(self, factory, size, timeout):
        self.factory = factory
        self.timeout = timeout
        self._idle = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)

    def run(self, func):
        if not self._slots.acquire(timeout=self.timeout):
            raise DependencyError("connection pool exhausted")
        try:
            for attempt in (1, 2):
                with self._lock:
                    conn = self._idle.pop() if self._idle else None
                reused = conn is not None
                try:
                    if conn is None:
                        conn = self.factory()
                    result = func(conn)
                except (PgError, RedisError):
                    # an error reply from the server: the connection itself is fine
                    if conn is not None:
                        self._release(conn)
                    raise
                except (OSError, DependencyError) as exc:
                    if conn is not None:
                        conn.close()
                    if reused and attempt == 1:
                        continue
                    if isinstance(exc, DependencyError):
                        raise
                    raise DependencyError(("%s: %s" % (type(exc).__name__, exc)) if str(exc) else type(exc).__name__)
                except BaseException:
                    if conn is not None:
                        conn.close()
                    raise
                self._release(conn)
                return result
        finally:
            self._slots.release()

    def _release(self, conn):
        with self._lock:
            self._idle.append(conn)

    def close(self):
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


# --------------------------------------------------------------------------------------
# application state: in-flight work and drain flags
# --------------------------------------------------------------------------------------


class DrainState:
    def __init__(self):
        self._lock = threading.Lock()
        self.draining = False
        self.inflight = 0
        self.tenant_draining = set()
        self.tenant_inflight = {}

    def try_begin(self, tenant):
        """Register new work; returns a refusal reason (str) when draining, else None."""
        with self._lock:
            if self.draining:
                return "instance is draining"
            if tenant is not None and tenant in self.tenant_draining:
                return "tenant %s is draining" % tenant
            self.inflight += 1
            if tenant is not None:
                self.tenant_inflight[tenant] = self.tenant_inflight.get(tenant, 0) + 1
            return None

    def end(self, tenant):
        with self._lock:
            self.inflight -= 1
            if tenant is not None:
                self.tenant_inflight[tenant] = self.tenant_inflight.get(tenant, 1) - 1

    def set_instance(self, draining):
        with self._lock:
            changed = self.draining != draining
            self.draining = draining
            return changed

    def set_tenant(self, tenant, draining):
        with self._lock:
            changed = (tenant in self.tenant_draining) != draining
            if draining:
                self.tenant_draining.add(tenant)
            else:
                self.tenant_draining.discard(tenant)
            return changed

    def tenant_status(self, tenant):
        with self._lock:
            return {
                "tenant_id": tenant,
                "draining": tenant in self.tenant_draining,
                "inflight": self.tenant_inflight.get(tenant, 0),
                "instance_draining": self.draining,
            }

    def snapshot(self, known=()):
        with self._lock:
            names = set(known) | self.tenant_draining | {t for t, n in self.tenant_inflight.items() if n}
            return {
                "draining": self.draining,
                "inflight": self.inflight,
                "tenants": {
                    t: {"draining": t in self.tenant_draining, "inflight": self.tenant_inflight.get(t, 0)}
                    for t in sorted(names)
                },
            }


# --------------------------------------------------------------------------------------
# metrics (Prometheus text exposition format 0.0.4)
# --------------------------------------------------------------------------------------

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _esc(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests = {}  # (method, route, status) -> count
        self.durations = {}  # (method, route) -> [bucket counts..., sum, count]
        self.inflight_requests = 0
        self.start_time = time.time()

    def request_started(self):
        with self._lock:
            self.inflight_requests += 1

    def request_finished(self, method, route, status, seconds):
        with self._lock:
            self.inflight_requests -= 1
            key = (method, route, str(status))
            self.requests[key] = self.requests.get(key, 0) + 1
            hist = self.durations.get((method, route))
            if hist is None:
                hist = self.durations[(method, route)] = [0] * len(BUCKETS) + [0.0, 0]
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    hist[i] += 1
            hist[-2] += seconds
            hist[-1] += 1

    def inflight(self):
        with self._lock:
            return self.inflight_requests

    def render(self, app_name, version, drain, tenants=()):
        snap = drain.snapshot(tenants)
        lines = []
        with self._lock:
            lines += ["# HELP http_requests_total Total HTTP requests by method, route and status.",
                      "# TYPE http_requests_total counter"]
            for (method, route, status), count in sorted(self.requests.items()):
                lines.append('http_requests_total{method="%s",route="%s",status="%s"} %d'
                             % (_esc(method), _esc(route), _esc(status), count))
            lines += ["# HELP http_request_duration_seconds HTTP request duration in seconds.",
                      "# TYPE http_request_duration_seconds histogram"]
            for (method, route), hist in sorted(self.durations.items()):
                labels = 'method="%s",route="%s"' % (_esc(method), _esc(route))
                for i, bound in enumerate(BUCKETS):
                    lines.append('http_request_duration_seconds_bucket{%s,le="%s"} %d' % (labels, repr(bound), hist[i]))
                lines.append('http_request_duration_seconds_bucket{%s,le="+Inf"} %d' % (labels, hist[-1]))
                lines.append("http_request_duration_seconds_sum{%s} %.6f" % (labels, hist[-2]))
                lines.append("http_request_duration_seconds_count{%s} %d" % (labels, hist[-1]))
            inflight_requests = self.inflight_requests
        lines += ["# HELP app_inflight_requests HTTP requests being served right now.",
                  "# TYPE app_inflight_requests gauge",
                  "app_inflight_requests %d" % inflight_requests,
                  "# HELP app_inflight_work Application work (drainable requests) in flight.",
                  "# TYPE app_inflight_work gauge",
                  "app_inflight_work %d" % snap["inflight"],
                  "# HELP app_draining 1 while the whole instance is draining.",
                  "# TYPE app_draining gauge",
                  "app_draining %d" % (1 if snap["draining"] else 0),
                  "# HELP app_tenant_inflight Application work in flight per tenant.",
                  "# TYPE app_tenant_inflight gauge"]
        for tenant, st in snap["tenants"].items():
            lines.append('app_tenant_inflight{tenant="%s"} %d' % (_esc(tenant), st["inflight"]))
        lines += ["# HELP app_tenant_draining 1 while a tenant is draining.",
                  "# TYPE app_tenant_draining gauge"]
        for tenant, st in snap["tenants"].items():
            lines.append('app_tenant_draining{tenant="%s"} %d' % (_esc(tenant), 1 if st["draining"] else 0))
        lines += ["# HELP app_info Application name and version.",
                  "# TYPE app_info gauge",
                  'app_info{app="%s",version="%s"} 1' % (_esc(app_name), _esc(version)),
                  "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.",
                  "# TYPE process_start_time_seconds gauge",
                  "process_start_time_seconds %.3f" % self.start_time]
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# the application
# --------------------------------------------------------------------------------------


class App:
    def __init__(self, config):
        self.config = config
        self.log = JsonLogger(config.app_name, config.log_level)
        self.metrics = Metrics()
        self.drain = DrainState()
        self.hostname = socket.gethostname()
        self.shutting_down = False
        self.started = time.monotonic()
        self._counter_table_ready = False
        self._counter_lock = threading.Lock()
        self.db = None
        self.redis = None
        self.tenants_key = config.key_prefix + "tenants"
        if config.db_host:
            self.db = Pool(self._pg_connect, config.db_pool, config.db_timeout)
        if config.redis_host:
            self.redis = Pool(self._redis_connect, config.redis_pool, config.redis_timeout)

    def _pg_connect(self):
        c = self.config
        return PgConnection(c.db_host, c.db_port, c.db_user, _read_secret_file(c.db_password_file),
                            c.db_name, timeout=c.db_timeout, app_name=c.app_name)

    def _redis_connect(self):
        c = self.config
        return RedisConnection(c.redis_host, c.redis_port, password=_read_secret_file(c.redis_password_file),
                               username=c.redis_user, db=c.redis_db, timeout=c.redis_timeout)

    # dependencies ------------------------------------------------------------------
    def check_dependencies(self):
        checks = {}
        for name, pool, probe in (("database", self.db, lambda conn: conn.query("SELECT 1")),
                                  ("redis", self.redis, lambda conn: conn.command("PING"))):
            if pool is None:
                checks[name] = {"status": "disabled"}
                continue
            started = time.monotonic()
            try:
                pool.run(probe)
                checks[name] = {"status": "up", "latency_ms": round((time.monotonic() - started) * 1000, 2)}
            except DependencyError as exc:
                checks[name] = {"status": "down", "error": str(exc)}
        healthy = all(c["status"] != "down" for c in checks.values())
        return healthy, checks

    def known_tenant(self, tenant):
        """True/False, or raise DependencyError if it can only be answered by a failing Redis."""
        if tenant in self.config.tenants:
            return True
        if self.redis is None:
            return False
        members = self.redis.run(lambda conn: conn.command("SMEMBERS", self.tenants_key)) or []
        return tenant.encode("utf-8") in members

    def known_tenants(self):
        names = list(self.config.tenants)
        if self.redis is not None:
            try:
                members = self.redis.run(lambda conn: conn.command("SMEMBERS", self.tenants_key)) or []
                names += [m.decode("utf-8", "replace") for m in members]
            except DependencyError:
                pass
        return sorted(set(names))

    def db_counter(self):
        def ensure(conn):
            conn.query("CREATE TABLE IF NOT EXISTS refapp_counter (name text PRIMARY KEY, value bigint NOT NULL)")

        if not self._counter_table_ready:
            with self._counter_lock:
                if not self._counter_table_ready:
                    try:
                        self.db.run(ensure)
                    except PgError:
                        self.db.run(ensure)  # concurrent CREATE by another replica: retry once
                    self._counter_table_ready = True

        def run(conn):
            _cols, one = conn.query("SELECT 1")
            _cols, rows = conn.query(
                "INSERT INTO refapp_counter (name, value) VALUES ('hits', 1) "
                "ON CONFLICT (name) DO UPDATE SET value = refapp_counter.value + 1 RETURNING value")
            return int(one[0][0]), int(rows[0][0])

        return self.db.run(run)

    def admin_token(self):
        return _read_secret_file(self.config.admin_token_file)


# route table for metric labels (bounded cardinality)
_STATIC_ROUTES = {
    "/health", "/health/live", "/health/ready", "/metrics", "/api/", "/api/hello", "/api/work",
    "/api/db", "/api/cache", "/api/config", "/api/charge", "/admin/drain", "/admin/undrain",
    "/admin/status",
}
_TENANT_ROUTE_RE = re.compile(r"^/api/tenants/([^/]+)/(drain|undrain|status)$")


def route_of(path):
    if path in _STATIC_ROUTES:
        return path
    if path == "/api":
        return "/api/"
    m = _TENANT_ROUTE_RE.match(path)
    if m:
        return "/api/tenants/{tenant}/" + m.group(2)
    if path.startswith("/api/"):
        return "/api/*"
    return "other"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "refapp"
    timeout = 60  # idle keep-alive connections
    app = None  # set by make_server

    def version_string(self):
        return self.server_version

    # silence the default stderr access log: we write JSON logs instead
    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")

    def do_HEAD(self):
        self._handle("HEAD")

    # plumbing -----------------------------------------------------------------
    def _handle(self, method):
        app = self.app
        started = time.monotonic()
        app.metrics.request_started()
        split = urlsplit(self.path)
        self.req_path = split.path or "/"
        self.query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        self.tenant = None
        self.log_fields = {}
        self.status = 500
        route = route_of(self.req_path)
        try:
            self._read_body()
            self._dispatch(method)
        except DependencyError as exc:
            self._json(503, {"error": "dependency unavailable", "detail": str(exc)})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # pragma: no cover - last resort
            app.log.log("error", "unhandled_exception", path=self.req_path, error=repr(exc))
            try:
                self._json(500, {"error": "internal error"})
            except OSError:
                self.close_connection = True
        finally:
            elapsed = time.monotonic() - started
            app.metrics.request_finished(method, route, self.status, elapsed)
            quiet = route in ("/health", "/health/live", "/health/ready", "/metrics")
            app.log.log("debug" if quiet else ("warning" if self.status >= 500 else "info"),
                        "http_request", tenant_id=self.tenant, method=method, path=self.req_path,
                        route=route, status=self.status, duration_ms=round(elapsed * 1000, 2),
                        remote=self.client_address[0] if self.client_address else None,
                        **self.log_fields)

    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > 1024 * 1024:
            self.close_connection = True
            raise ValueError("request body too large")
        self.body = self.rfile.read(length) if length > 0 else b""

    def _send(self, status, body, content_type, headers=None):
        self.status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.app.shutting_down:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status, obj, headers=None):
        body = (json.dumps(obj, sort_keys=True) + "\n").encode("utf-8")
        self._send(status, body, "application/json", headers)

    def _pick_tenant(self):
        tenant = self.query.get("tenant") or self.headers.get("X-Tenant-ID") or None
        if tenant is not None and not TENANT_RE.match(tenant):
            self._json(400, {"error": "invalid tenant id", "tenant": tenant[:80]})
            return False
        self.tenant = tenant
        return True

    def _authorized(self):
        token = self.app.admin_token()
        if token is None or token == "":
            self._json(503, {"error": "admin token not configured"})
            return False
        header = self.headers.get("Authorization") or ""
        supplied = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(supplied.encode("utf-8"), token.encode("utf-8")) or not supplied:
            self._json(401, {"error": "missing or invalid bearer token"},
                       headers={"WWW-Authenticate": 'Bearer realm="refapp-admin"'})
            return False
        return True

    # routing -------------------------------------------------------------------
    def _dispatch(self, method):
        path = self.req_path
        app = self.app
        if path == "/health/live":
            return self._json(200, {"status": "alive"})
        if path == "/health":
            healthy, checks = app.check_dependencies()
            return self._json(200 if healthy else 503, {
                "status": "ok" if healthy else "degraded", "app": app.config.app_name,
                "version": app.config.version, "draining": app.drain.draining, "checks": checks})
        if path == "/health/ready":
            healthy, checks = app.check_dependencies()
            reasons = [] if healthy else ["dependency down"]
            if app.config.fail_ready:
                reasons.append("APP_FAIL_READY is set")
            if time.monotonic() - app.started < app.config.ready_after:
                reasons.append("starting (APP_READY_AFTER)")
            if app.config.drain_unready and app.drain.draining:
                reasons.append("draining")
            if app.shutting_down:
                reasons.append("shutting down")
            return self._json(503 if reasons else 200, {
                "status": "not ready" if reasons else "ready", "reasons": reasons, "checks": checks})
        if path == "/metrics":
            body = app.metrics.render(app.config.app_name, app.config.version, app.drain,
                                      app.config.tenants).encode("utf-8")
            return self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")
        if path.startswith("/admin/"):
            return self._admin(method, path)
        m = _TENANT_ROUTE_RE.match(path)
        if m:
            return self._tenant_admin(method, m.group(1), m.group(2))
        if path == "/api" or path.startswith("/api/"):
            return self._api(method, path)
        return self._json(404, {"error": "not found", "path": path})

    def _admin(self, method, path):
        app = self.app
        action = path[len("/admin/"):]
        if action not in ("drain", "undrain", "status"):
            return self._json(404, {"error": "not found", "path": path})
        expected = "GET" if action == "status" else "POST"
        if method != expected:
            return self._json(405, {"error": "method not allowed"}, headers={"Allow": expected})
        if not self._authorized():
            return None
        if action != "status":
            draining = action == "drain"
            if app.drain.set_instance(draining):
                app.log.log("info", "drain_started" if draining else "drain_stopped",
                            inflight=app.drain.inflight)
        return self._json(200, app.drain.snapshot(app.known_tenants()))

    def _tenant_admin(self, method, tenant, action):
        app = self.app
        expected = "GET" if action == "status" else "POST"
        if method != expected:
            return self._json(405, {"error": "method not allowed"}, headers={"Allow": expected})
        if not self._authorized():
            return None
        if not TENANT_RE.match(tenant) or not app.known_tenant(tenant):
            return self._json(404, {"error": "unknown tenant", "tenant_id": tenant[:80]})
        self.tenant = tenant
        if action != "status":
            draining = action == "drain"
            if app.drain.set_tenant(tenant, draining):
                app.log.log("info", "drain_started" if draining else "drain_stopped", tenant_id=tenant,
                            inflight=app.drain.tenant_status(tenant)["inflight"])
        return self._json(200, app.drain.tenant_status(tenant))

    def _api(self, method, path):
        app = self.app
        if not self._pick_tenant():
            return None
        refusal = app.drain.try_begin(self.tenant)
        if refusal is not None:
            return self._json(503, {"error": "draining", "detail": refusal, "tenant_id": self.tenant},
                              headers={"Retry-After": str(app.config.retry_after)})
        try:
            return self._api_work(method, path)
        finally:
            app.drain.end(self.tenant)

    def _api_work(self, method, path):
        app = self.app
        base = {"app": app.config.app_name, "version": app.config.version, "hostname": app.hostname,
                "port": self.server.server_address[1]}
        if path in ("/api", "/api/", "/api/hello"):
            return self._json(200, dict(base, message="hello", tenant_id=self.tenant))
        if path == "/api/work":
            try:
                ms = int(self.query.get("ms", app.config.work_ms))
            except ValueError:
                return self._json(400, {"error": "ms must be an integer"})
            ms = max(0, min(ms, app.config.max_work_ms))
            time.sleep(ms / 1000.0)
            return self._json(200, dict(base, worked_ms=ms, tenant_id=self.tenant))
        if path == "/api/db":
            if app.db is None:
                return self._json(503, {"error": "database not configured"})
            one, counter = app.db_counter()
            return self._json(200, dict(base, database="ok", select=one, counter=counter))
        if path == "/api/cache":
            if app.redis is None:
                return self._json(503, {"error": "redis not configured"})
            key = "refapp:hits:" + (self.tenant or "_")
            hits = app.redis.run(lambda conn: conn.command("INCR", key))
            return self._json(200, dict(base, cache="ok", key=key, hits=hits))
        if path == "/api/config":
            return self._tenant_config(method)
        if path == "/api/charge":
            return self._charge()
        return self._json(200, dict(base, echo=True, method=method, path=path, query=self.query,
                                    tenant_id=self.tenant,
                                    forwarded_for=self.headers.get("X-Forwarded-For"),
                                    real_ip=self.headers.get("X-Real-IP")))

    def _tenant_config(self, method):
        """GET/POST /api/config?tenant=T: the tenant's JSON config in Redis key <prefix>config:<T>."""
        app = self.app
        if app.redis is None:
            return self._json(503, {"error": "redis not configured"})
        if self.tenant is None:
            return self._json(400, {"error": "tenant is required (?tenant= or X-Tenant-ID)"})
        key = app.config.key_prefix + "config:" + self.tenant
        if method == "GET":
            raw = app.redis.run(lambda conn: conn.command("GET", key))
            if raw is None:
                return self._json(404, {"error": "no config", "tenant_id": self.tenant, "key": key})
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw.decode("utf-8", "replace")
            return self._json(200, {"tenant_id": self.tenant, "key": key, "config": value})
        if method in ("POST", "PUT"):
            if not self._authorized():
                return None
            try:
                value = json.loads(self.body or b"null")
            except ValueError:
                return self._json(400, {"error": "body must be JSON"})
            app.redis.run(lambda conn: conn.command("SET", key, json.dumps(value, sort_keys=True)))
            app.redis.run(lambda conn: conn.command("SADD", app.tenants_key, self.tenant))
            app.log.log("info", "tenant_config_updated", tenant_id=self.tenant, key=key)
            return self._json(200, {"tenant_id": self.tenant, "key": key, "config": value})
        return self._json(405, {"error": "method not allowed"}, headers={"Allow": "GET, POST, PUT"})

    def _charge(self):
        """A business event with typed fields: event charge with plan/amount/currency/metadata."""
        if self.tenant is None:
            return self._json(400, {"error": "tenant is required"})
        plan = self.query.get("plan") or "free"
        currency = (self.query.get("currency") or "USD").upper()
        try:
            amount = round(float(self.query.get("amount", "0")), 2)
        except ValueError:
            return self._json(400, {"error": "amount must be a number"})
        charge_id = "ch_" + secrets.token_hex(6)
        metadata = {"charge_id": charge_id, "period": datetime.now(timezone.utc).strftime("%Y-%m")}
        self.app.log.log("info", "charge", tenant_id=self.tenant, plan=plan, amount=amount,
                         currency=currency, metadata=metadata)
        self.log_fields = {"plan": plan, "amount": amount, "currency": currency}
        return self._json(200, {"tenant_id": self.tenant, "plan": plan, "amount": amount,
                                "currency": currency, "metadata": metadata})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def make_server(config):
    app = App(config)
    handler = type("BoundHandler", (Handler,), {"app": app})
    server = Server((config.host, config.port), handler)
    return app, server


def extra_servers(app, config):
    """The servers of APP_EXTRA_PORTS, each serving in a thread of its own."""
    handler = type("BoundHandler", (Handler,), {"app": app})
    servers = [Server((config.host, port), handler) for port in config.extra_ports]
    for extra in servers:
        threading.Thread(target=extra.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    return servers


def main():
    config = Config()
    app, server = make_server(config)
    extras = extra_servers(app, config)
    stop = threading.Event()

    def on_signal(signum, _frame):
        if stop.is_set():
            return
        stop.set()
        app.shutting_down = True
        app.log.log("info", "shutdown_started", signal=signal.Signals(signum).name,
                    inflight=app.metrics.inflight())
        # shutdown() blocks until serve_forever() returns: call it from another thread,
        # after the shutdown delay during which requests are still served.

        def stop_serving():
            time.sleep(max(0.0, config.shutdown_delay))
            for extra in extras:
                extra.shutdown()
            server.shutdown()
        threading.Thread(target=stop_serving, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    app.log.log("info", "startup", listen="%s:%d" % server.server_address[:2], config=config.public())
    server.serve_forever(poll_interval=0.2)
    server.server_close()  # stop accepting: the listening socket is closed now
    for extra in extras:
        extra.server_close()
    deadline = time.monotonic() + config.shutdown_timeout
    while app.metrics.inflight() > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    left = app.metrics.inflight()
    for pool in (app.db, app.redis):
        if pool is not None:
            pool.close()
    app.log.log("info" if left == 0 else "warning", "shutdown_complete", inflight=left)
    return 0


if __name__ == "__main__":
    sys.exit(main())
