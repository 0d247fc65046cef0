"""The rendered alertmanager.yml, run by the REAL Alertmanager (Debian's prometheus-alertmanager).

Receivers and routes are checked statically with amtool in test_monitoring.py; here the
alertmanager.yml the monitoring renderer writes for a model with several receivers and
routes by severity and labels is loaded by a real Alertmanager on 127.0.0.1, alerts are
posted to its API, and what it sends is received by a local HTTP server standing in for
Slack, PagerDuty and a webhook: each alert reaches exactly the receivers the model's routes
name (the Slack channel, the webhook's JSON, PagerDuty's severity from our template), and an
alert no route takes is dropped.
"""

import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request

import pytest
import yaml

from ansible_collections.opsdeck.stack.plugins.module_utils.components import monitoring as _monitoring
from obs_support import SECRETS, model, require

ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Sink(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append((self.path, json.loads(body or b"null")))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "success"}')

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def sink():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:%d" % server.server_address[1], _Sink.received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def alertmanager(sink, tmp_path_factory):
    require(ALERTMANAGER, "prometheus-alertmanager")
    url, _received = sink
    secrets = dict(SECRETS, slack_webhook_url=url + "/slack/shorthand", incidents_hook=url + "/slack/incidents",
                   ops_hook=url + "/slack/ops")
    m = model(monitoring={"enabled": True, "alerting": {
        "slack": {"channel": "#alerts", "severities": ["critical"]},
        "receivers": [
            {"name": "incidents", "slack": {"channel": "#incidents", "webhook_secret": "incidents_hook"},
             "pagerduty": {}},
            {"name": "ops", "slack": {"channel": "#ops", "webhook_secret": "ops_hook"}},
            {"name": "shop-team", "webhook": {"url": url + "/hook/shop"}}],
        "routes": [
            {"receiver": "incidents", "match_re": {"severity": "critical|page"}},
            {"receiver": "shop-team", "match": {"team": "shop"}, "continue": True},
            {"receiver": "ops", "match_re": {"severity": "warning|info"}}],
        "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"}}, secrets=secrets)
    config = yaml.safe_load([f for f in _monitoring.render(m, secrets)
                             if f["path"] == "alertmanager/alertmanager.yml"][0]["content"])
    # PagerDuty's Events API stands in at the local server (the only change to the rendered file)
    for receiver in config["receivers"]:
        for pager in receiver.get("pagerduty_configs", []):
            pager["url"] = url + "/pagerduty"
    base = tmp_path_factory.mktemp("alertmanager")
    (base / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    proc = subprocess.Popen([ALERTMANAGER, "--config.file=%s" % (base / "alertmanager.yml"),
                             "--storage.path=%s" % (base / "data"),
                             "--web.listen-address=127.0.0.1:%d" % port, "--cluster.listen-address="],
                            stdout=subprocess.DEVNULL, stderr=open(base / "log", "w"))
    api = "http://127.0.0.1:%d" % port
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(api + "/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError("Alertmanager did not start: %s" % (base / "log").read_text())
            time.sleep(0.2)
        yield api
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _post(api, *alerts):
    body = json.dumps([{"labels": labels, "annotations": {"summary": "%s happened" % labels["alertname"],
                                                          "description": "details"}}
                       for labels in alerts]).encode()
    request = urllib.request.Request(api + "/api/v2/alerts", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 200


def _wait(received, predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [item for item in list(received) if predicate(item)]
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("nothing matched within %ds; received: %r" % (timeout, received))


def _alertname(path, body):
    if path.startswith("/slack/"):
        return body["attachments"][0]["title"]
    if path == "/pagerduty":
        return body["payload"]["summary"]
    return " ".join(a["labels"]["alertname"] for a in body["alerts"])


def _to(received, alertname):
    """The paths that received notifications about ``alertname``."""
    return sorted({path for path, body in list(received) if alertname in _alertname(path, body)})


def test_each_alert_reaches_the_receivers_its_labels_route_it_to(alertmanager, sink):
    _url, received = sink
    _post(alertmanager,
          {"alertname": "DatabaseGone", "severity": "critical", "job": "postgres"},
          {"alertname": "OrdersStalled", "severity": "warning", "team": "shop", "job": "shop"},
          {"alertname": "CacheCold", "severity": "info", "job": "redis"},
          {"alertname": "NobodysAlert", "job": "x"})
    _wait(received, lambda item: "CacheCold" in _alertname(*item))
    _wait(received, lambda item: "OrdersStalled" in _alertname(*item) and item[0] == "/slack/ops")
    _wait(received, lambda item: "DatabaseGone" in _alertname(*item) and item[0] == "/pagerduty")
    time.sleep(3)  # anything else would have been sent by now (group_wait 1s)
    # critical: the Slack shorthand (critical only, continue) and the incidents receiver
    # (Slack and PagerDuty); its route does not continue, so nothing else
    assert _to(received, "DatabaseGone") == ["/pagerduty", "/slack/incidents", "/slack/shorthand"]
    # warning + team=shop: the shop route continues to the severity route
    assert _to(received, "OrdersStalled") == ["/hook/shop", "/slack/ops"]
    assert _to(received, "CacheCold") == ["/slack/ops"]
    # no route takes it and there is no default receiver: dropped
    assert _to(received, "NobodysAlert") == []


def test_what_each_integration_sends(alertmanager, sink):
    _url, received = sink
    _post(alertmanager, {"alertname": "PaymentsDown", "severity": "critical", "job": "payments"},
          {"alertname": "ShopSlow", "severity": "warning", "team": "shop", "job": "shop"})
    (slack,) = _wait(received, lambda item: item[0] == "/slack/incidents" and "PaymentsDown" in _alertname(*item))
    body = slack[1]
    assert body["channel"] == "#incidents"
    assert body["attachments"][0]["title"] == "[FIRING] PaymentsDown (shop)"
    assert "PaymentsDown happened" in body["attachments"][0]["text"]
    (pager,) = _wait(received, lambda item: item[0] == "/pagerduty" and "PaymentsDown" in item[1]["payload"]["summary"])
    assert pager[1]["routing_key"] == SECRETS["pagerduty_routing_key"]
    assert pager[1]["payload"]["severity"] == "critical"
    assert pager[1]["event_action"] == "trigger"
    (hook,) = _wait(received, lambda item: item[0] == "/hook/shop" and "ShopSlow" in _alertname(*item))
    assert hook[1]["receiver"] == "shop-team" and hook[1]["status"] == "firing"
    assert hook[1]["alerts"][0]["labels"]["team"] == "shop"
    assert hook[1]["commonAnnotations"]["summary"] == "ShopSlow happened"


def test_pagerduty_gets_error_for_a_severity_it_does_not_know(alertmanager, sink):
    _url, received = sink
    _post(alertmanager, {"alertname": "PageMe", "severity": "page", "job": "odd"})
    (pager,) = _wait(received, lambda item: item[0] == "/pagerduty" and "PageMe" in item[1]["payload"]["summary"])
    # PagerDuty knows critical, error, warning and info: "page" is sent as error
    assert pager[1]["payload"]["severity"] == "error"
