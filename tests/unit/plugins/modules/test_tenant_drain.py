# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""opsdeck.stack.tenant_drain, run through ansible-playbook against the real reference
app (roles/images/files/refapp/app.py), a TLS terminator with a self-signed certificate
and a scripted fault server; plus in-process tests of the retry policy of _http."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

TOKEN = "test-admin-token"


def _args(app_or_url, **extra):
    url = app_or_url if isinstance(app_or_url, str) else app_or_url.url
    args = {"url": url, "token": TOKEN, "poll_interval": 0.1, "request_timeout": 3}
    args.update(extra)
    return args


def _status(app, tenant=None):
    path = "/admin/status" if tenant is None else "/api/tenants/%s/status" % tenant
    return app.get(path, auth=True).json()


def _posts(app, suffix):
    return [r for r in app.logs() if r.get("event") == "http_request" and r["method"] == "POST"
            and r["path"].endswith(suffix)]


# -------------------------------------------------------------- whole-instance lifecycle


def test_instance_drain_lifecycle_check_apply_idempotent_undrain(
        drain_refapp, drain_ansible, drain_background, drain_wait_request):
    app = drain_refapp

    def start_work_after_check_task():
        # 6 s of work starts once the check-mode task has read the status, so it is in
        # flight when the drain task runs, however slow ansible-playbook is on this machine
        drain_wait_request(app, "GET", "/admin/status")
        drain_background.work(app, 6000, tenant="acme")

    r = drain_ansible.run(
        {"args": _args(app), "check": True, "diff": True},          # 0 check: predicts a change
        {"args": _args(app), "diff": True},                         # 1 drain + wait
        {"args": _args(app), "check": True},                        # 2 check: nothing to do
        {"args": _args(app)},                                       # 3 apply: nothing to do
        {"args": _args(app, state="active"), "check": True},        # 4 check undrain
        {"args": _args(app, state="active"), "diff": True},         # 5 undrain
        {"args": _args(app, state="active")},                       # 6 undrain again
        during=start_work_after_check_task,
    )
    for i, res in enumerate(r):
        assert not res.get("failed"), (i, res.get("msg"))

    check = r[0]
    assert check["changed"] is True
    assert check["diff"]["before"] == {"instance": {"draining": False, "inflight": 0}}
    assert check["diff"]["after"] == {"instance": {"draining": True, "inflight": 0}}
    assert check["instance"]["waited"] == 0

    drained = r[1]
    assert drained["changed"] is True
    assert drained["instance"]["draining"] is True
    assert drained["inflight"] == 0 and drained["instance"]["inflight"] == 0
    assert drained["timed_out"] is False
    # the module waited for the rest of the 6 s of work
    assert 0.3 <= drained["waited"] <= 6.5, drained["waited"]
    assert drained["tenants"]["acme"] == {"draining": False, "inflight": 0}
    assert drained["diff"]["before"] == {"instance": {"draining": False, "inflight": 1}}
    assert drained["diff"]["after"] == {"instance": {"draining": True, "inflight": 0}}
    assert drain_background.join() == [200], "the in-flight request was allowed to finish"

    assert r[2]["changed"] is False
    assert r[3]["changed"] is False and r[3]["instance"]["draining"] is True
    assert r[4]["changed"] is True
    assert r[5]["changed"] is True and r[5]["instance"]["draining"] is False
    assert r[5]["diff"] == {"before": {"instance": {"draining": True, "inflight": 0}},
                            "after": {"instance": {"draining": False, "inflight": 0}}}
    assert r[6]["changed"] is False

    # what the application saw: exactly one drain and one undrain, check mode changed nothing
    assert len(_posts(app, "/admin/drain")) == 1
    assert len(_posts(app, "/admin/undrain")) == 1
    assert _status(app)["draining"] is False
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in r[1]["_raw_stdout"]
    assert TOKEN not in r[1]["_raw_stdout"], "the token must never be printed"


# ------------------------------------------------------------------------------ tenants


def test_several_tenants_are_drained_concurrently(drain_refapp, drain_ansible, drain_background,
                                                  drain_wait_request):
    app = drain_refapp

    def start_work_after_check_task():
        drain_wait_request(app, "GET", "/api/tenants/globex/status")
        for tenant in ("acme", "globex", "globex"):
            drain_background.work(app, 6000, tenant=tenant)

    check, res, again, undrain_one, undrain_both = drain_ansible.run(
        {"args": _args(app, tenants=["acme", "globex"]), "check": True},
        {"args": _args(app, tenants=["acme", "globex", "acme"]), "diff": True},
        {"args": _args(app, tenants=["acme", "globex"])},
        {"args": _args(app, tenants=["acme"], state="active")},
        {"args": _args(app, tenants=["acme", "globex"], state="active")},
        during=start_work_after_check_task,
    )
    # check mode predicts the change and changes nothing
    assert check["changed"] is True and check["tenants"]["acme"]["changed"] is True
    assert check["tenants"]["globex"]["draining"] is True and check["tenants"]["globex"]["changed"] is True
    assert not res.get("failed"), res.get("msg")
    assert res["changed"] is True
    assert set(res["tenants"]) == {"acme", "globex"}, "duplicates are dropped"
    for tenant in ("acme", "globex"):
        assert res["tenants"][tenant]["draining"] is True
        assert res["tenants"][tenant]["inflight"] == 0
        assert res["tenants"][tenant]["changed"] is True
        assert res["tenants"][tenant]["waited"] > 0.2
    assert res["diff"]["before"]["globex"] == {"draining": False, "inflight": 2}
    assert res["diff"]["after"]["globex"] == {"draining": True, "inflight": 0}
    # concurrent waits: the per-tenant waits overlap (the call waited once, not once per tenant)
    assert res["waited"] == max(res["tenants"][t]["waited"] for t in ("acme", "globex"))
    assert res["tenants"]["acme"]["waited"] + res["tenants"]["globex"]["waited"] > res["waited"] + 0.2
    assert len(_posts(app, "/drain")) == 2, "one POST per tenant, none in check mode"
    assert drain_background.join() == [200, 200, 200], "in-flight work was allowed to finish"
    # the instance and the other tenants kept serving
    assert _status(app)["draining"] is False
    assert not [r for r in app.logs() if r.get("event") == "http_request" and r.get("status") == 503]

    assert again["changed"] is False
    assert undrain_one["changed"] is True and undrain_one["tenants"]["acme"]["draining"] is False
    assert undrain_both["changed"] is True
    assert undrain_both["tenants"]["acme"]["changed"] is False
    assert undrain_both["tenants"]["globex"]["changed"] is True
    assert _status(app, "globex")["draining"] is False
    assert len(_posts(app, "/undrain")) == 2


def test_undrain_rereads_state_of_a_restarted_instance(drain_refapp_factory, drain_ansible):
    first = drain_refapp_factory()
    assert first.post("/api/tenants/acme/drain", auth=True).json()["draining"] is True
    port = first.port
    first.stop()
    restarted = drain_refapp_factory(port=port)  # drain state lived in the old process
    res = drain_ansible.one(**_args(restarted, tenants=["acme"], state="active"))
    assert not res.get("failed"), res.get("msg")
    assert res["changed"] is False
    assert res["tenants"]["acme"] == {"draining": False, "inflight": 0, "changed": False,
                                      "waited": 0.0, "timed_out": False}
    assert _posts(restarted, "/undrain") == []


# ------------------------------------------------------------------------------- errors
# One playbook (one ansible-playbook start) runs every error case against one app.

ERROR_CASES = ("wrong_token", "unknown_tenant", "refused", "bad_url", "bad_template",
               "tls_verify", "tls_ca_path", "tls_insecure")


@pytest.fixture(scope="module")
def drain_error_runs(drain_ansible, drain_tls_cert, drain_server_classes, tmp_path_factory):
    import refapp_support  # on sys.path through conftest.py
    app = refapp_support.RefApp(str(tmp_path_factory.mktemp("errors")), env={"TENANTS": "acme,globex"})
    proxy = drain_server_classes["TlsProxy"](drain_tls_cert[0], drain_tls_cert[1], app.port)
    closed = "http://127.0.0.1:%d" % _free_port()
    try:
        tasks = {
            "wrong_token": _args(app, token="not-the-token", tenants=["acme"]),
            "unknown_tenant": _args(app, tenants=["acme", "nosuchtenant"]),
            # a retry would sleep 10 s first: the duration tells whether it retried
            "refused": _args(closed, retry_backoff=10),
            "bad_url": _args("127.0.0.1:8000"),
            "bad_template": _args(closed, tenants=["acme"], tenant_status_path="/status"),
            "tls_verify": _args(proxy.url, tenants=["acme"], retry_backoff=10),
            "tls_ca_path": _args(proxy.url, tenants=["globex"], ca_path=drain_tls_cert[0]),
            "tls_insecure": _args(proxy.url, tenants=["globex"], state="active", validate_certs=False),
        }
        results = drain_ansible.run(*({"args": tasks[name]} for name in ERROR_CASES))
        runs = dict(zip(ERROR_CASES, results))
        runs["_app"] = app
        runs["_closed"] = closed
        runs["_proxy"] = proxy
        runs["_statuses"] = {t: _status(app, t) for t in ("acme", "globex")}
        runs["_posts"] = [(r["path"]) for r in app.logs() if r.get("method") == "POST"]
        yield runs
    finally:
        proxy.close()
        app.stop()


def test_wrong_token_is_a_clear_401_error(drain_error_runs):
    res = drain_error_runs["wrong_token"]
    assert res["failed"] is True
    assert "HTTP 401" in res["msg"] and "check the token" in res["msg"]
    assert res["msg"].startswith("nothing was changed")
    assert res["error_kinds"] == ["auth"]
    assert "not-the-token" not in res["_raw_stdout"], "the token is never printed"


def test_unknown_tenant_is_404_and_nothing_is_drained(drain_error_runs):
    res = drain_error_runs["unknown_tenant"]
    assert res["failed"] is True
    assert "unknown tenant 'nosuchtenant'" in res["msg"]
    assert "HTTP 404" in res["msg"]
    assert res["error_kinds"] == ["not_found"]
    # known tenants are not drained when one of the list is unknown
    assert drain_error_runs["_statuses"]["acme"]["draining"] is False
    assert "/api/tenants/acme/drain" not in drain_error_runs["_posts"]


def test_connection_refused_is_clear_and_not_retried(drain_error_runs):
    res = drain_error_runs["refused"]
    assert res["failed"] is True
    assert "connection refused" in res["msg"]
    assert drain_error_runs["_closed"][len("http://"):] in res["msg"]
    assert res["error_kinds"] == ["refused"]
    assert res["_duration"] < 10, "connection refused is not retried with backoff"


def test_bad_parameters_are_refused_before_any_request(drain_error_runs):
    assert drain_error_runs["bad_url"]["failed"] is True
    assert "url must start with http:// or https://" in drain_error_runs["bad_url"]["msg"]
    assert drain_error_runs["bad_template"]["failed"] is True
    assert "tenant_status_path must contain {tenant}" in drain_error_runs["bad_template"]["msg"]


def test_tls_verification(drain_error_runs):
    res = drain_error_runs["tls_verify"]
    assert res["failed"] is True
    assert "TLS certificate verification failed" in res["msg"]
    assert "ca_path" in res["msg"] and "validate_certs" in res["msg"]
    assert res["error_kinds"] == ["tls"]
    assert res["_duration"] < 10, "TLS failures are not retried"
    assert drain_error_runs["_proxy"].handshake_failures >= 1
    ok = drain_error_runs["tls_ca_path"]
    assert not ok.get("failed"), ok.get("msg")
    assert ok["changed"] is True and ok["tenants"]["globex"]["draining"] is True
    insecure = drain_error_runs["tls_insecure"]
    assert not insecure.get("failed"), insecure.get("msg")
    assert insecure["changed"] is True and insecure["tenants"]["globex"]["draining"] is False
    assert drain_error_runs["_posts"].count("/api/tenants/globex/drain") == 1
    assert drain_error_runs["_posts"].count("/api/tenants/globex/undrain") == 1


# ------------------------------------------------------------------------------ timeouts


@pytest.fixture(scope="module")
def drain_timeout_runs(drain_ansible, tmp_path_factory):
    """One app with 2 requests of tenant acme in flight for 60 s (cut short when the app
    stops), and one playbook: on_timeout=undrain, then fail, then continue."""
    import refapp_support  # on sys.path through conftest.py
    from http.client import HTTPConnection
    app = refapp_support.RefApp(str(tmp_path_factory.mktemp("timeouts")),
                                env={"TENANTS": "acme,globex", "APP_SHUTDOWN_TIMEOUT": "1"})
    conns = []
    try:
        for _i in range(2):
            conn = HTTPConnection("127.0.0.1", app.port, timeout=120)
            conn.request("GET", "/api/work?ms=60000&tenant=acme")
            conns.append(conn)
        deadline = time.monotonic() + 10
        while _status(app, "acme")["inflight"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _status(app, "acme")["inflight"] == 2
        undo, fail, cont = drain_ansible.run(
            {"args": _args(app, tenants=["acme", "globex"], wait_timeout=0.6, on_timeout="undrain")},
            {"args": _args(app, tenants=["acme"], wait_timeout=1, poll_interval=0.3, request_timeout=2)},
            {"args": _args(app, tenants=["acme", "globex"], wait_timeout=0.6, on_timeout="continue")},
        )
        yield {"undrain": undo, "fail": fail, "continue": cont,
               "final": {t: _status(app, t) for t in ("acme", "globex")}}
    finally:
        app.stop()
        for conn in conns:
            conn.close()


def test_on_timeout_undrain_rolls_back_what_it_drained(drain_timeout_runs):
    undo = drain_timeout_runs["undrain"]
    assert undo["failed"] is True and undo["timed_out"] is True
    assert "tenant 'acme' still has 2 in flight" in undo["msg"]
    assert "undrained again: acme, globex" in undo["msg"]
    assert undo["undrained_after_timeout"] == ["acme", "globex"]
    assert undo["tenants"]["acme"]["draining"] is False
    assert undo["tenants"]["globex"]["draining"] is False


def test_wait_timeout_fails_with_last_inflight_count_within_bound(drain_timeout_runs):
    res = drain_timeout_runs["fail"]
    assert res["failed"] is True
    assert res["timed_out"] is True
    assert "timed out" in res["msg"] and "tenant 'acme' still has 2 in flight" in res["msg"]
    assert res["tenants"]["acme"] == {"draining": True, "inflight": 2, "changed": True,
                                      "waited": res["waited"], "timed_out": True}
    # bound: wait_timeout + one poll_interval + one request_timeout
    assert 1.0 <= res["waited"] <= 1.0 + 0.3 + 2.0


def test_on_timeout_continue_warns_and_leaves_targets_drained(drain_timeout_runs):
    cont = drain_timeout_runs["continue"]
    assert not cont.get("failed"), cont.get("msg")
    assert cont["timed_out"] is True and cont["inflight"] == 2
    # acme was left drained by on_timeout=fail: only globex changes now
    assert cont["tenants"]["acme"]["changed"] is False and cont["tenants"]["globex"]["changed"] is True
    assert any("still has 2 in flight" in w for w in cont.get("warnings", []))
    assert drain_timeout_runs["final"]["acme"]["draining"] is True
    assert drain_timeout_runs["final"]["globex"]["draining"] is True


# -------------------------------------------------------------------- retries (fault server)
# One scripted server and one playbook for every fault scenario; each scenario has its own paths.

FAULT_SCRIPT = {
    # "hang": status polls hang longer than request_timeout
    ("GET", "/hang/status"): [{"body": {"draining": False, "inflight": 2}},
                              {"delay": 3, "body": {"draining": True, "inflight": 2}}],
    ("POST", "/hang/drain"): [{"body": {"draining": True, "inflight": 2}}],
    # "flaky": 503 + Retry-After, then a TCP reset and a 429 before success
    ("GET", "/flaky/acme/status"): [
        {"status": 503, "body": {"error": "restarting"}, "headers": {"Retry-After": "1"}},
        {"body": {"tenant_id": "acme", "draining": False, "inflight": 0}}],
    ("POST", "/flaky/acme/drain"): [
        {"action": "reset"},
        {"status": 429, "body": {"error": "slow down"}},
        {"body": {"tenant_id": "acme", "draining": True, "inflight": 0}}],
    # "down": always 502
    ("GET", "/down/status"): [{"status": 502, "body": {"error": "bad gateway"}}],
}


@pytest.fixture(scope="module")
def drain_fault_runs(drain_ansible, drain_server_classes):
    srv = drain_server_classes["FaultServer"](FAULT_SCRIPT)
    try:
        hang, flaky, down = drain_ansible.run(
            {"args": _args(srv.url, status_path="/hang/status", drain_path="/hang/drain", wait_timeout=1,
                           poll_interval=0.2, request_timeout=0.5, retries=3)},
            {"args": _args(srv.url, tenants=["acme"], tenant_status_path="/flaky/{tenant}/status",
                           tenant_drain_path="/flaky/{tenant}/drain", retry_backoff=0.1)},
            {"args": _args(srv.url, status_path="/down/status", retries=2, retry_backoff=0.05)},
        )
        yield {"hang": hang, "flaky": flaky, "down": down, "server": srv}
    finally:
        srv.close()


def test_hanging_status_polls_do_not_stretch_the_wait(drain_fault_runs):
    res = drain_fault_runs["hang"]
    assert res["failed"] is True and res["timed_out"] is True
    assert "the instance still has 2 in flight" in res["msg"]
    assert "within request_timeout=0.5s" in res["msg"]
    # wait_timeout + one poll_interval + one request_timeout (+ scheduling slack)
    assert res["waited"] <= 1.0 + 0.2 + 0.5 + 0.5, res["waited"]


def test_503_then_200_is_retried_after_retry_after(drain_fault_runs):
    res = drain_fault_runs["flaky"]
    assert not res.get("failed"), res.get("msg")
    assert res["changed"] is True and res["tenants"]["acme"]["draining"] is True
    srv = drain_fault_runs["server"]
    gets = srv.requests("GET", "/flaky/acme/status")
    assert len(gets) == 2
    assert gets[1][0] - gets[0][0] >= 0.95, "Retry-After: 1 was honoured"
    posts = srv.requests("POST", "/flaky/acme/drain")
    assert len(posts) == 3, "the reset and the 429 were retried"
    assert all(p[3] == "Bearer %s" % TOKEN for p in gets + posts)


def test_retries_are_bounded_and_reported(drain_fault_runs):
    res = drain_fault_runs["down"]
    assert res["failed"] is True
    assert "HTTP 502" in res["msg"] and "after 3 attempts" in res["msg"]
    assert len(drain_fault_runs["server"].requests("GET", "/down/status")) == 3


# ----------------------------------------------------------------------------- ansible-doc


def test_ansible_doc_renders(drain_ansible):
    doc = os.path.join(os.path.dirname(sys.executable), "ansible-doc")
    proc = subprocess.run([doc, "--json", "opsdeck.stack.tenant_drain"], env=drain_ansible.env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)["opsdeck.stack.tenant_drain"]
    options = data["doc"]["options"]
    assert options["token"]["required"] is True
    assert options["on_timeout"]["choices"] == ["fail", "continue", "undrain"]
    assert data["doc"]["attributes"]["check_mode"]["support"] == "full"
    assert "waited" in data["return"] and "tenants" in data["return"]
    assert "opsdeck.stack.tenant_drain:" in data["examples"]


# ------------------------------------------------------------------ _http, in-process


class FakeClock(object):
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(round(seconds, 3))
        self.now += seconds


def _scripted_opener(answers, calls):
    def opener(method, url, data, headers, timeout):
        calls.append((method, url, headers.get("Authorization"), timeout))
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        status, headers_, body = answer
        return status, headers_, body
    return opener


def test_http_backoff_retry_after_and_deadline(drain_http):
    fake = FakeClock()
    calls = []
    answers = [(503, {"Retry-After": "4"}, b"{}"), (500, {}, b""), (429, {}, b""), (200, {}, b'{"ok": true}')]
    client = drain_http.JsonHttpClient("http://h:1/", token="t", timeout=2, retries=3, backoff=0.5,
                                       opener=_scripted_opener(answers, calls), sleep=fake.sleep, clock=fake.clock)
    resp = client.request("GET", "/admin/status")
    assert resp.data == {"ok": True} and resp.attempts == 4
    assert fake.sleeps == [4.0, 1.0, 2.0], "Retry-After wins over a shorter backoff, then 2**n backoff"
    assert calls[0] == ("GET", "http://h:1/admin/status", "Bearer t", 2.0)

    # a deadline stops retrying instead of sleeping past it
    fake2 = FakeClock()
    answers = [(503, {"Retry-After": "5"}, b"")] * 5
    client = drain_http.JsonHttpClient("http://h:1", timeout=2, retries=5, opener=_scripted_opener(answers, []),
                                       sleep=fake2.sleep, clock=fake2.clock)
    with pytest.raises(drain_http.HttpError) as err:
        client.request("GET", "/x", deadline=3.0)
    assert err.value.kind == "http" and err.value.status == 503
    assert fake2.sleeps == [] and "deadline" in err.value.message

    # max_delay caps a huge Retry-After; an HTTP date is understood
    assert drain_http.JsonHttpClient("http://h", max_delay=30).retry_delay(1, 3600) == 30
    assert drain_http.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470) == 10
    assert drain_http.parse_retry_after("garbage") is None


def test_http_errors_that_are_not_retried(drain_http):
    for status, kind in ((401, "auth"), (403, "auth"), (404, "not_found"), (400, "http"), (302, "redirect")):
        calls = []
        client = drain_http.JsonHttpClient(
            "http://h", retries=3, opener=_scripted_opener([(status, {"Location": "http://x/"}, b"no")], calls),
            sleep=lambda s: None)
        with pytest.raises(drain_http.HttpError) as err:
            client.request("POST", "/admin/drain")
        assert err.value.kind == kind and len(calls) == 1, status
    # not JSON
    client = drain_http.JsonHttpClient("http://h", opener=_scripted_opener([(200, {}, b"<html>")], []))
    with pytest.raises(drain_http.HttpError) as err:
        client.request("GET", "/admin/status")
    assert err.value.kind == "invalid_response"


def test_http_real_socket_errors_are_classified(drain_http, drain_tls_cert):
    # connection refused, with the real ansible urls opener
    client = drain_http.JsonHttpClient("http://127.0.0.1:%d" % _free_port(), timeout=1, retries=2)
    with pytest.raises(drain_http.HttpError) as err:
        client.request("GET", "/admin/status")
    assert err.value.kind == "refused" and err.value.attempts == 1

    # a server that accepts but never answers: request timeout, retried, then reported
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        fake = FakeClock()
        client = drain_http.JsonHttpClient("http://127.0.0.1:%d" % silent.getsockname()[1], timeout=0.3,
                                           retries=1, backoff=0.01, sleep=fake.sleep)
        started = time.monotonic()
        with pytest.raises(drain_http.HttpError) as err:
            client.request("GET", "/admin/status")
        assert err.value.kind == "timeout" and err.value.attempts == 2
        assert time.monotonic() - started < 2

    # self-signed certificate: TLS verification error, not retried
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*drain_tls_cert)
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(8)
        lsock.settimeout(5)

        def accept_once():
            try:
                conn, _addr = lsock.accept()
                try:
                    ctx.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    pass
                conn.close()
            except OSError:
                pass

        t = threading.Thread(target=accept_once, daemon=True)
        t.start()
        client = drain_http.JsonHttpClient("https://127.0.0.1:%d" % lsock.getsockname()[1], timeout=2, retries=3)
        with pytest.raises(drain_http.HttpError) as err:
            client.request("GET", "/admin/status")
        t.join(5)
    assert err.value.kind == "tls" and err.value.attempts == 1
    assert "ca_path" in err.value.message


def test_safe_url_hides_credentials(drain_http):
    assert drain_http.safe_url("https://user:secret@host:8443/a?b=1") == "https://host:8443/a?b=1"


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
