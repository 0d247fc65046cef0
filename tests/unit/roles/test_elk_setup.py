"""The rendered Elasticsearch setup script (elasticsearch/setup.sh), run for real.

Elasticsearch cannot run on this machine (no package, no registry), so the script's
counterpart is a FAKE Elasticsearch: a small HTTP server on 127.0.0.1 that checks basic
auth, answers the cluster health call (red for the first calls, like a starting cluster)
and records every request. The script itself runs unchanged under the real /bin/sh (dash)
and curl, exactly as the targets run it inside the Elasticsearch container. What this
shows: it waits for the cluster, loads both ILM policies and both index templates with
the rendered bodies, sets kibana_system's password and creates Logstash's role and user,
never puts a password on a command line, and stops with Elasticsearch's answer on an error.
"""

import base64
import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.opsdeck.stack.plugins.module_utils.components import elk as _elk
from obs_support import SECRETS, model

PASSWORD = 'el"astic\\pw'


class FakeElasticsearch(ThreadingHTTPServer):
    """Records requests; ``red_calls`` health answers before green; ``fail`` maps a path to a status."""

    def __init__(self, red_calls=2, fail=None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests = []
        self.red_calls = red_calls
        self.fail = fail or {}


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass

    def _handle(self):
        server = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        expected = "Basic " + base64.b64encode(("elastic:" + PASSWORD).encode()).decode()
        if self.headers.get("Authorization") != expected:
            return self._answer(401, {"error": "security_exception"})
        server.requests.append((self.command, self.path, body))
        if self.path.startswith("/_cluster/health"):
            if server.red_calls > 0:
                server.red_calls -= 1
                return self._answer(408, {"status": "red", "timed_out": True})
            return self._answer(200, {"status": "yellow"})
        if self.path in server.fail:
            return self._answer(server.fail[self.path], {"error": {"reason": "mapper_parsing_exception"}})
        return self._answer(200, {"acknowledged": True})

    do_GET = do_PUT = do_POST = _handle

    def _answer(self, status, data):
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def setup_dir(tmp_path):
    """The elasticsearch/ subtree of the rendered files, and the secret files, on disk."""
    files = _elk.render(model("compose"))
    for item in files:
        if item["path"].startswith("elasticsearch/"):
            dest = tmp_path / "setup" / item["path"][len("elasticsearch/"):]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(item["content"])
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name, value in (("elastic", PASSWORD), ("kibana", SECRETS["kibana_system_password"]),
                        ("logstash", SECRETS["logstash_writer_password"])):
        (secrets / name).write_text(value + "\n")
    return tmp_path


def run(setup_dir, server, **env):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        environ = dict(os.environ, ES_URL="http://127.0.0.1:%d" % server.server_address[1],
                       ES_WAIT_SECONDS="20",
                       ELASTIC_PASSWORD_FILE=str(setup_dir / "secrets" / "elastic"),
                       KIBANA_PASSWORD_FILE=str(setup_dir / "secrets" / "kibana"),
                       LOGSTASH_PASSWORD_FILE=str(setup_dir / "secrets" / "logstash"))
        environ.update(env)
        return subprocess.run(["/bin/sh", "-x", str(setup_dir / "setup" / "setup.sh"),
                               str(setup_dir / "setup")], env=environ, capture_output=True,
                              text=True, timeout=60, check=False)
    finally:
        server.shutdown()
        server.server_close()


def test_setup_loads_policies_templates_and_users(setup_dir):
    server = FakeElasticsearch(red_calls=2)
    result = run(setup_dir, server)
    assert result.returncode == 0, result.stderr
    calls = [(method, path) for method, path, _body in server.requests]
    # waited through two red answers before loading anything
    assert calls[:3] == [("GET", "/_cluster/health?wait_for_status=yellow&timeout=5s")] * 3
    assert calls[3:] == [
        ("PUT", "/_ilm/policy/opsdeck-app"), ("PUT", "/_ilm/policy/opsdeck-audit"),
        ("PUT", "/_index_template/opsdeck-app"), ("PUT", "/_index_template/opsdeck-audit"),
        ("POST", "/_security/user/kibana_system/_password"),
        ("PUT", "/_security/role/opsdeck_logstash_writer"),
        ("PUT", "/_security/user/opsdeck_logstash"),
    ]
    bodies = {path: json.loads(body) for _method, path, body in server.requests[3:]}
    rendered = {f["path"]: json.loads(f["content"]) for f in _elk.render(model("compose"))
                if f["path"].endswith(".json")}
    assert bodies["/_ilm/policy/opsdeck-audit"] == rendered["elasticsearch/ilm/opsdeck-audit.json"]
    assert bodies["/_ilm/policy/opsdeck-audit"]["policy"]["phases"]["delete"]["min_age"] == "90d"
    assert bodies["/_index_template/opsdeck-app"] == rendered["elasticsearch/index_templates/opsdeck-app.json"]
    assert bodies["/_security/user/kibana_system/_password"] == {
        "password": SECRETS["kibana_system_password"]}
    user = bodies["/_security/user/opsdeck_logstash"]
    assert user["password"] == SECRETS["logstash_writer_password"]
    assert user["roles"] == ["opsdeck_logstash_writer"]
    role = bodies["/_security/role/opsdeck_logstash_writer"]
    assert role["indices"][0]["names"] == ["logs-opsdeck.*-*"]
    assert "all" not in role["cluster"] and "create_doc" in role["indices"][0]["privileges"]
    # -x traces every command: no password may be on a command line
    for value in (PASSWORD, SECRETS["kibana_system_password"], SECRETS["logstash_writer_password"]):
        assert value not in result.stderr and value not in result.stdout
    assert "opsdeck-elk-setup: done" in result.stdout


def test_setup_stops_with_elasticsearch_answer(setup_dir):
    server = FakeElasticsearch(red_calls=0, fail={"/_index_template/opsdeck-app": 400})
    result = run(setup_dir, server)
    assert result.returncode == 1
    assert "PUT /_index_template/opsdeck-app failed (HTTP 400)" in result.stderr
    assert "mapper_parsing_exception" in result.stderr
    # nothing after the failed call
    assert ("POST", "/_security/user/kibana_system/_password") not in [
        (m, p) for m, p, _body in server.requests]


def test_setup_gives_up_on_a_cluster_that_never_turns_yellow(setup_dir):
    server = FakeElasticsearch(red_calls=10 ** 6)
    result = run(setup_dir, server, ES_WAIT_SECONDS="3")
    assert result.returncode == 1
    assert "did not report a yellow or green cluster within 3s (last answer: HTTP 408)" in result.stderr
    assert all(request[1].startswith("/_cluster/health") for request in server.requests)


def test_setup_refuses_a_missing_secret_file(setup_dir):
    server = FakeElasticsearch()
    result = run(setup_dir, server, KIBANA_PASSWORD_FILE=str(setup_dir / "nope"))
    assert result.returncode == 2
    assert "KIBANA_PASSWORD_FILE must name a readable secret file" in result.stderr
    assert server.requests == []


def test_setup_stops_at_once_on_a_refused_password(setup_dir):
    (setup_dir / "secrets" / "elastic").write_text("wrong\n")
    server = FakeElasticsearch()
    result = run(setup_dir, server)
    assert result.returncode == 1
    assert "refuses the elastic user's password (HTTP 401)" in result.stderr
    assert "wrong" not in result.stderr
