# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The reference app as a user (or nginx, Prometheus, tenant_drain) sees it over HTTP."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
import time
from datetime import datetime

import pytest

import refapp_support


def _wait_until(predicate, timeout=5.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met within %.1fs" % timeout)


def _background(app, path, results, **kwargs):
    def run():
        try:
            results.append(app.get(path, **kwargs))
        except OSError as exc:  # the server may be gone (shutdown tests)
            results.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# ----------------------------------------------------------------------------- health


def test_health_endpoints_without_dependencies(refapp):
    health = refapp.get("/health")
    assert health.status == 200
    body = health.json()
    assert body["status"] == "ok"
    assert body["version"] == "1.2.3"
    assert body["checks"] == {"database": {"status": "disabled"}, "redis": {"status": "disabled"}}
    assert refapp.get("/health/live").status == 200
    assert refapp.get("/health/ready").json()["status"] == "ready"


def test_app_fail_ready_makes_only_readiness_fail(refapp_factory):
    app = refapp_factory({"APP_FAIL_READY": "1"})
    ready = app.get("/health/ready")
    assert ready.status == 503
    assert "APP_FAIL_READY is set" in ready.json()["reasons"]
    assert app.get("/health/live").status == 200
    assert app.get("/api/hello").status == 200


def test_configured_but_unreachable_dependencies_make_health_503(refapp_factory):
    closed = refapp_support.free_port()
    app = refapp_factory({"DATABASE_HOST": "127.0.0.1", "DATABASE_PORT": str(closed),
                          "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(closed),
                          "DATABASE_TIMEOUT": "0.5", "REDIS_TIMEOUT": "0.5"})
    health = app.get("/health")
    assert health.status == 503
    checks = health.json()["checks"]
    assert checks["database"]["status"] == "down"
    assert checks["redis"]["status"] == "down"
    assert "ConnectionRefusedError" in checks["redis"]["error"]
    assert app.get("/health/ready").status == 503
    assert app.get("/health/live").status == 200
    assert app.get("/api/db").status == 503


# ---------------------------------------------------------------------------- metrics

_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (-?[0-9.e+]+|\+Inf|NaN)$')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Strict-enough parser of the Prometheus text format: {(name, frozenset(labels)): value}."""
    types, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split(" ", 3)[2:]
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in types, "duplicate TYPE for %s" % name
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        match = _SAMPLE_RE.match(line)
        assert match, "not a valid sample line: %r" % line
        name, labels = match.group(1), frozenset(_LABEL_RE.findall(match.group(3) or ""))
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, "sample %s has no # TYPE line before it" % name
        key = (name, labels)
        assert key not in samples, "duplicate sample %r" % line
        samples[key] = float(match.group(4))
    return types, samples


def test_metrics_exposition_parses_and_counts_requests(refapp):
    for _i in range(3):
        assert refapp.get("/api/hello").status == 200
    assert refapp.get("/api/nothing/here").status == 200
    assert refapp.get("/nope").status == 404
    resp = refapp.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    types, samples = parse_metrics(resp.body)
    assert types["http_requests_total"] == "counter"
    assert types["http_request_duration_seconds"] == "histogram"
    for gauge in ("app_inflight_requests", "app_draining", "app_tenant_inflight", "app_info"):
        assert types[gauge] == "gauge"

    hello = frozenset({("method", "GET"), ("route", "/api/hello"), ("status", "200")})
    assert samples[("http_requests_total", hello)] == 3
    # unknown paths are folded into bounded routes (no label explosion)
    assert samples[("http_requests_total", frozenset({("method", "GET"), ("route", "/api/*"), ("status", "200")}))] == 1
    assert samples[("http_requests_total", frozenset({("method", "GET"), ("route", "other"), ("status", "404")}))] == 1

    labels = {("method", "GET"), ("route", "/api/hello")}
    buckets = sorted(
        (float(dict(k[1])["le"]), v) for k, v in samples.items()
        if k[0] == "http_request_duration_seconds_bucket" and labels <= k[1])
    assert buckets[-1][0] == float("inf")
    counts = [count for _le, count in buckets]
    assert counts == sorted(counts), "buckets must be cumulative"
    assert buckets[-1][1] == samples[("http_request_duration_seconds_count", frozenset(labels))] == 3
    assert samples[("app_info", frozenset({("app", "refapp"), ("version", "1.2.3")}))] == 1
    assert samples[("app_draining", frozenset())] == 0
    assert samples[("app_tenant_inflight", frozenset({("tenant", "acme")}))] == 0
    # the /metrics request itself is in flight while it renders
    assert samples[("app_inflight_requests", frozenset())] == 1


def test_metrics_pass_promtool_lint(refapp):
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    refapp_support.require_binary(promtool, "promtool (prometheus)")
    refapp.get("/api/hello")
    body = refapp.get("/metrics").body
    res = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr


# ------------------------------------------------------------------------------ admin


@pytest.mark.parametrize("method,path", [
    ("POST", "/admin/drain"), ("POST", "/admin/undrain"), ("GET", "/admin/status"),
    ("POST", "/api/tenants/acme/drain"), ("GET", "/api/tenants/acme/status"),
])
def test_admin_api_rejects_missing_or_wrong_token(refapp, method, path):
    missing = refapp.request(method, path)
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert refapp.request(method, path, token="wrong-token").status == 401
    assert refapp.request(method, path, token="").status == 401
    assert refapp.request(method, path, headers={"Authorization": "Basic dGVzdA=="}).status == 401
    # nothing was drained by the rejected calls
    assert refapp.get("/admin/status", auth=True).json()["draining"] is False
    assert refapp.request(method, path, auth=True).status == 200


def test_admin_api_without_configured_token_answers_503(refapp_factory):
    app = refapp_factory({"TENANTS": "acme"}, token=None)
    resp = app.post("/admin/drain", token="anything")
    assert resp.status == 503
    assert resp.json()["error"] == "admin token not configured"
    assert app.get("/api/tenants/acme/status", token="x").status == 503


def test_unknown_tenant_is_404_known_tenant_is_200(refapp):
    resp = refapp.get("/api/tenants/initech/status", auth=True)
    assert resp.status == 404
    assert resp.json()["error"] == "unknown tenant"
    assert refapp.post("/api/tenants/initech/drain", auth=True).status == 404
    assert refapp.get("/api/tenants/initech/status").status == 401, "auth is checked before existence"
    assert refapp.get("/api/tenants/globex/status", auth=True).json() == {
        "tenant_id": "globex", "draining": False, "inflight": 0, "instance_draining": False}


def test_instance_drain_waits_for_inflight_work_and_refuses_new_work(refapp):
    results = []
    worker = _background(refapp, "/api/work?ms=1500&tenant=acme", results)
    _wait_until(lambda: refapp.get("/admin/status", auth=True).json()["inflight"] == 1)

    drained = refapp.post("/admin/drain", auth=True)
    assert drained.status == 200
    body = drained.json()
    assert body["draining"] is True
    assert body["inflight"] == 1
    assert body["tenants"]["acme"] == {"draining": False, "inflight": 1}
    assert body["tenants"]["globex"] == {"draining": False, "inflight": 0}

    refused = refapp.get("/api/work?ms=10&tenant=globex")
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "5"
    assert refapp.get("/api/hello").status == 503
    # drain is idempotent
    assert refapp.post("/admin/drain", auth=True).json()["draining"] is True
    # health endpoints are not work: they still answer while draining
    assert refapp.get("/health/live").status == 200
    assert refapp.get("/health/ready").status == 200

    worker.join(timeout=5)
    assert results and results[0].status == 200, "in-flight work finished normally"
    status = refapp.get("/admin/status", auth=True).json()
    assert status["inflight"] == 0 and status["draining"] is True

    assert refapp.post("/admin/undrain", auth=True).json()["draining"] is False
    assert refapp.post("/admin/undrain", auth=True).json()["draining"] is False
    assert refapp.get("/api/work?ms=1").status == 200
    events = [r["event"] for r in refapp.logs()]
    assert events.count("drain_started") == 1 and events.count("drain_stopped") == 1


def test_tenant_drain_only_affects_that_tenant(refapp):
    results = []
    worker = _background(refapp, "/api/work?ms=1500", results, headers={"X-Tenant-ID": "acme"})
    _wait_until(lambda: refapp.get("/api/tenants/acme/status", auth=True).json()["inflight"] == 1)

    drained = refapp.post("/api/tenants/acme/drain", auth=True)
    assert drained.json() == {"tenant_id": "acme", "draining": True, "inflight": 1, "instance_draining": False}
    refused = refapp.get("/api/work?ms=1&tenant=acme")
    assert refused.status == 503 and refused.headers["Retry-After"] == "5"
    assert refapp.get("/api/work?ms=1&tenant=globex").status == 200
    assert refapp.get("/api/work?ms=1").status == 200, "work without a tenant is not affected"
    assert refapp.get("/metrics").body.count('app_tenant_inflight{tenant="acme"} 1') == 1

    worker.join(timeout=5)
    assert results[0].status == 200
    assert refapp.get("/api/tenants/acme/status", auth=True).json()["inflight"] == 0
    assert refapp.get("/admin/status", auth=True).json()["tenants"]["acme"]["draining"] is True
    assert refapp.post("/api/tenants/acme/undrain", auth=True).json()["draining"] is False
    assert refapp.get("/api/work?ms=1&tenant=acme").status == 200


def test_drain_unready_option_takes_instance_out_of_readiness(refapp_factory):
    app = refapp_factory({"APP_DRAIN_UNREADY": "1"})
    assert app.get("/health/ready").status == 200
    app.post("/admin/drain", auth=True)
    ready = app.get("/health/ready")
    assert ready.status == 503 and "draining" in ready.json()["reasons"]
    app.post("/admin/undrain", auth=True)
    assert app.get("/health/ready").status == 200


def test_api_routes_and_echo(refapp):
    hello = refapp.get("/api/hello").json()
    assert hello["app"] == "refapp" and hello["version"] == "1.2.3" and hello["hostname"]
    assert refapp.get("/api/").json()["message"] == "hello"
    echo = refapp.get("/api/orders/42?x=1", headers={"X-Forwarded-For": "203.0.113.9"})
    assert echo.status == 200
    assert echo.json()["echo"] is True
    assert echo.json()["path"] == "/api/orders/42"
    assert echo.json()["query"] == {"x": "1"}
    assert echo.json()["forwarded_for"] == "203.0.113.9"
    assert refapp.post("/api/orders", body={"a": 1}).json()["method"] == "POST"
    assert refapp.get("/api/work?ms=abc").status == 400
    assert refapp.get("/api/hello?tenant=../etc").status == 400
    assert refapp.get("/elsewhere").status == 404


# ------------------------------------------------------------------------------- logs


def test_logs_are_json_lines_with_required_fields(refapp_factory):
    app = refapp_factory({"APP_NAME": "shop-api", "TENANTS": "acme"})
    app.get("/api/hello?tenant=acme")
    app.get("/api/hello", headers={"X-Tenant-ID": "globex"})
    app.get("/api/tenants/acme/status", auth=True)
    charge = app.get("/api/charge?tenant=acme&plan=pro&amount=9.90&currency=EUR")
    assert charge.status == 200
    records = app.logs()  # raises if any stdout line is not JSON
    for rec in records:
        for field in ("ts", "level", "component", "event"):
            assert field in rec, rec
        assert rec["component"] == "shop-api"
        datetime.fromisoformat(rec["ts"].replace("Z", "+00:00"))
        assert rec["ts"].endswith("Z")
    assert records[0]["event"] == "startup"
    assert "token" not in str(records[0]).lower().replace("admin_api", "")

    requests_ = [r for r in records if r["event"] == "http_request"]
    by_path = {(r["path"], r.get("tenant_id")): r for r in requests_}
    hello = by_path[("/api/hello", "acme")]
    assert hello["method"] == "GET" and hello["status"] == 200 and isinstance(hello["duration_ms"], float)
    assert ("/api/hello", "globex") in by_path, "X-Tenant-ID header sets tenant_id"
    assert ("/api/tenants/acme/status", "acme") in by_path, "tenant path sets tenant_id"

    charges = [r for r in records if r["event"] == "charge"]
    assert len(charges) == 1
    assert charges[0]["tenant_id"] == "acme"
    assert charges[0]["plan"] == "pro"
    assert charges[0]["amount"] == 9.9
    assert charges[0]["currency"] == "EUR"
    assert charges[0]["metadata"]["charge_id"].startswith("ch_")


def test_health_probes_are_not_logged_at_info(refapp):
    refapp.get("/health/live")
    refapp.get("/metrics")
    assert not [r for r in refapp.logs() if r.get("path") in ("/health/live", "/metrics")]


# ----------------------------------------------------------------------------- SIGTERM


def test_sigterm_lets_inflight_requests_finish_then_exits_0(refapp):
    results = []
    worker = _background(refapp, "/api/work?ms=1200&tenant=acme", results)
    _wait_until(lambda: refapp.get("/admin/status", auth=True).json()["inflight"] == 1)
    started = time.monotonic()
    refapp.proc.send_signal(signal.SIGTERM)

    def refused():
        try:
            refapp.get("/health/live", timeout=1)
            return False
        except OSError:
            return True

    _wait_until(refused, timeout=2)
    assert refapp.proc.poll() is None, "still running while work is in flight"
    worker.join(timeout=5)
    assert results and results[0].status == 200
    assert refapp.proc.wait(timeout=5) == 0
    assert time.monotonic() - started < 4
    events = [r["event"] for r in refapp.logs()]
    assert events[-2:] == ["shutdown_started", "shutdown_complete"] or events[-1] == "shutdown_complete"


def test_sigterm_shutdown_wait_is_bounded(refapp_factory):
    app = refapp_factory({"APP_SHUTDOWN_TIMEOUT": "1"})
    _background(app, "/api/work?ms=30000", [], timeout=40)
    _wait_until(lambda: app.get("/admin/status", auth=True).json()["inflight"] == 1)
    started = time.monotonic()
    app.proc.send_signal(signal.SIGTERM)
    assert app.proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 3
    last = app.logs()[-1]
    assert last["event"] == "shutdown_complete" and last["inflight"] == 1
