# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""opsdeck.stack.nginx_proxy, run for real through ansible-playbook.

One ansible-playbook run applies the role to several inventory hosts (all local), one
variable set per host, and saves what each got (the files and facts, or the error).
The tests then check the rendered nginx.conf with the real `nginx -t`, its key
properties, the role's input errors, and a live nginx on 127.0.0.1 serving the
rendered configuration in front of a small backend.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
ANSIBLE_PLAYBOOK = os.path.join(VENV_BIN, "ansible-playbook")
if not os.path.exists(ANSIBLE_PLAYBOOK):
    ANSIBLE_PLAYBOOK = shutil.which("ansible-playbook") or ANSIBLE_PLAYBOOK
NGINX = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")

PLAYBOOK = """
- name: Apply opsdeck.stack.nginx_proxy with this host's variables
  hosts: all
  gather_facts: false
  tasks:
    - name: Apply the role and keep what it produced
      block:
        - name: Apply the role
          ansible.builtin.include_role:
            name: opsdeck.stack.nginx_proxy
        - name: Keep the output
          ansible.builtin.set_fact:
            case_result:
              ok: true
              files: "{{ nginx_proxy_files }}"
              hash: "{{ nginx_proxy_config_hash }}"
              runtime: "{{ nginx_proxy_runtime }}"
              dest_changed: "{{ nginx_proxy_dest_changed }}"
        - name: Apply the role a second time
          ansible.builtin.include_role:
            name: opsdeck.stack.nginx_proxy
          when: case_twice | default(false)
        - name: Keep the second output
          ansible.builtin.set_fact:
            case_result: >-
              {{ case_result | combine({'second_hash': nginx_proxy_config_hash, 'second_files': nginx_proxy_files,
                                        'second_dest_changed': nginx_proxy_dest_changed}) }}
          when: case_twice | default(false)
      rescue:
        - name: Keep the error
          ansible.builtin.set_fact:
            case_result:
              ok: false
              task: "{{ ansible_failed_task.name | default('') }}"
              msg: "{{ ansible_failed_result.msg | default('') }}"
              errors: "{{ ansible_failed_result.argument_errors | default([]) }}"
    - name: Save the results of all cases in one file
      ansible.builtin.copy:
        content: "{{ dict(ansible_play_hosts_all | zip(ansible_play_hosts_all | map('extract', hostvars, 'case_result'))) | to_json }}"
        dest: "{{ case_out }}/results.json"
        mode: "0600"
      run_once: true
"""


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pem_pair(common_name):
    """A throw-away self-signed certificate and its key (PEM text)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def _route(name, path, upstream, **extra):
    route = {"name": name, "path": path, "upstreams": [upstream]}
    route.update(extra)
    return route


def _cases(tmp, ports):
    cert, key = _pem_pair("localhost")
    other_cert = _pem_pair("other")[0]
    api = _route("api", "/api/", "api:8000")
    cases = {
        # Defaults, an upstream name that only resolves inside the container network.
        "basic": {"nginx_proxy_routes": [api]},
        # Three edge replicas: limits divided per replica.
        "replicas": {
            "nginx_proxy_edge_replicas": 3,
            "nginx_proxy_routes": [
                _route("api", "/api/", "api:8000"),
                _route("web", "/", "web:3000", rate="6r/s", burst=0),
                _route("slow", "/slow/", "slow:9000", rate="1r/m", burst=4),
                _route("odd", "/odd/", "odd:9000", rate="7r/s", burst=5),
                # session affinity: hashing in the upstream; a resolved route has no upstream block
                _route("sticky", "/sticky/", "sticky:9000", affinity=True),
                _route("swarm", "/swarm/", "swarm:9000", affinity=True, resolve=True),
            ],
            "nginx_proxy_resolver": "127.0.0.11 valid=2s ipv6=off",
        },
        # Everything on, written into a directory.
        "full": {
            "nginx_proxy_routes": [
                _route("api", "/api/", "127.0.0.1:%d" % ports["backend"], health_path="/health",
                       cors_origins=["https://app.example.com"]),
                _route("admin-ui", "/admin/", "127.0.0.1:%d" % ports["backend"], basic_auth=True,
                       strip_prefix=True, conn_limit=0, timeout=120, nodelay=False),
                _route("dyn", "/dyn/", "127.0.0.1:%d" % ports["backend"], resolve=True, strip_prefix=True),
            ],
            "nginx_proxy_tls": {"enabled": True, "cert": cert, "key": key, "listen_port": _free_port(),
                                "public_port": 8443},
            "nginx_proxy_listen_port": _free_port(),
            "nginx_proxy_listen_address": "127.0.0.1",
            "nginx_proxy_basic_auth_users": [{"name": "alice", "password": "correct horse"},
                                             {"name": "bob", "password": "battery staple"}],
            "nginx_proxy_real_ip_from": ["10.0.0.0/8"],
            "nginx_proxy_hsts_max_age": 600,
            "nginx_proxy_resolver": "127.0.0.1 valid=5s",
            "nginx_proxy_dest": str(tmp / "full"),
            "nginx_proxy_conf_path": str(tmp / "full"),
            "nginx_proxy_secrets_dir": str(tmp / "full"),
            "nginx_proxy_tmp_dir": str(tmp / "full-run"),
        },
        # Served by a live nginx in test_live_nginx.
        "live": {
            "nginx_proxy_routes": [
                _route("echo", "/echo/", "127.0.0.1:%d" % ports["backend"], cors_origins=["https://app.example.com"]),
                _route("burst", "/burst/", "127.0.0.1:%d" % ports["backend"], rate="1r/s", burst=2),
                _route("slowconn", "/slow/", "127.0.0.1:%d" % ports["backend"], rate="100r/s", burst=100,
                       conn_limit=1),
                # seed 003 writes its routes without a trailing slash
                _route("auth", "/api/v1/auth", "127.0.0.1:%d" % ports["backend"], rate="100r/s", burst=100),
                _route("bare", "/bare", "127.0.0.1:%d" % ports["backend"], rate="100r/s", burst=100,
                       strip_prefix=True),
            ],
            "nginx_proxy_listen_address": "127.0.0.1",
            "nginx_proxy_listen_port": ports["nginx"],
            "nginx_proxy_resolver": "",
            "nginx_proxy_conf_path": str(tmp / "live"),
            "nginx_proxy_secrets_dir": str(tmp / "live"),
            "nginx_proxy_tmp_dir": str(tmp / "live-run"),
        },
        # Input errors: preflight reports all of them in one message, each naming the variable.
        "bad_inputs": {
            "nginx_proxy_default_rate": "fast",
            "nginx_proxy_listen_port": 80,
            "nginx_proxy_tls": {"enabled": True, "cert": cert},
            "nginx_proxy_routes": [
                dict(api, rate="10/s", burst=-1),
                _route("Api_1", "/api/", "api2:8000", basic_auth=True),
                _route("bad-upstream", "/up/", "api", rate="1r/s"),
            ],
        },
        # Type errors and unknown keys, caught by meta/argument_specs.yml.
        "bad_types": {"nginx_proxy_routes": [dict(api, burst="lots"), dict(api, path="/b/", brust=5)]},
        # Passes preflight, rejected by the real nginx -t (certificate and key do not match).
        "nginx_rejects": {"nginx_proxy_routes": [api],
                          "nginx_proxy_tls": {"enabled": True, "cert": other_cert, "key": key}},
        # Passes preflight, rejected by nginx -t with a line number: the message quotes the line.
        "nginx_rejects_line": {"nginx_proxy_routes": [api], "nginx_proxy_client_max_body_size": "9999999999g"},
        "no_nginx": {"nginx_proxy_routes": [api], "nginx_proxy_nginx_binary": str(tmp / "no" / "nginx")},
    }
    # Same as "full" (but not written), applied twice: files and hash must not move.
    cases["full_again"] = {k: v for k, v in cases["full"].items() if k != "nginx_proxy_dest"}
    cases["full_again"]["case_twice"] = True
    return cases


@pytest.fixture(scope="module")
def ports():
    return {"backend": _free_port(), "nginx": _free_port()}


@pytest.fixture(scope="module")
def results(tmp_path_factory, ports):
    """Run the role once per case (one ansible-playbook, one host per case)."""
    if not os.path.exists(NGINX):
        pytest.fail("%s is missing: install Debian's nginx (scripts/setup.sh) to run these tests" % NGINX)
    tmp = tmp_path_factory.mktemp("nginx_proxy")
    out = tmp / "out"
    out.mkdir()
    collections = tmp / "collections"
    link = collections / "ansible_collections" / "opsdeck" / "stack"
    link.parent.mkdir(parents=True)
    link.symlink_to(ROOT)
    cases = _cases(tmp, ports)
    hosts = {}
    for name, case_vars in cases.items():
        host_vars = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                     "case_out": str(out)}
        host_vars.update(case_vars)
        hosts[name] = host_vars
    (tmp / "inventory.yml").write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    (tmp / "play.yml").write_text(PLAYBOOK)
    (tmp / "ansible.cfg").write_text("[defaults]\ninterpreter_python = auto_silent\nretry_files_enabled = false\n")
    env = dict(os.environ)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": str(collections),
        "ANSIBLE_FORKS": str(len(cases)),
        "ANSIBLE_HOST_KEY_CHECKING": "false",
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-local"),
        "ANSIBLE_CONFIG": str(tmp / "ansible.cfg"),
        "PATH": VENV_BIN + os.pathsep + env.get("PATH", ""),
    })
    proc = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", str(tmp / "inventory.yml"), str(tmp / "play.yml")],
        cwd=str(tmp), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        universal_newlines=True, timeout=300, check=False,
    )
    path = out / "results.json"
    assert path.exists(), "no results; ansible-playbook said:\n%s" % proc.stdout[-6000:]
    got = json.loads(path.read_text())
    assert sorted(got) == sorted(cases), proc.stdout[-6000:]
    got["_tmp"] = tmp
    got["_cases"] = cases
    return got


def _ok(results, name):
    res = results[name]
    assert res["ok"], "case %s failed: %s %s" % (name, res.get("msg"), res.get("errors"))
    return res


def _file(res, path):
    return next(f for f in res["files"] if f["path"] == path)


def _conf(res):
    return _file(res, "nginx.conf")["content"]


def _nginx_t(directory, conf):
    """Run the real nginx -t; return (rc, output)."""
    proc = subprocess.run(
        [NGINX, "-t", "-q", "-e", "stderr", "-p", str(directory) + "/", "-c", str(conf)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=60, check=False,
    )
    return proc.returncode, proc.stdout


def _write_files(res, directory):
    directory.mkdir(parents=True, exist_ok=True)
    for item in res["files"]:
        target = directory / item["path"]
        target.write_text(item["content"])
        target.chmod(int(item["mode"], 8))


# --- the rendered configuration -------------------------------------------------------

def test_basic_defaults_render_a_complete_non_root_config(results):
    res = _ok(results, "basic")
    conf = _conf(res)
    assert [f["path"] for f in res["files"]] == ["nginx.conf"]
    for line in (
        "worker_processes auto;",
        "pid /tmp/nginx.pid;",
        "error_log stderr warn;",
        "include /etc/nginx/mime.types;",
        "client_body_temp_path /tmp/client_temp;",
        "proxy_temp_path /tmp/proxy_temp;",
        "access_log /dev/stdout opsdeck_json;",
        "limit_req_zone $binary_remote_addr zone=api:10m rate=10r/s;",
        "limit_conn_zone $binary_remote_addr zone=perip:10m;",
        "limit_req_status 429;",
        "limit_conn_status 429;",
        "limit_req zone=api burst=20 nodelay;",
        "limit_conn perip 100;",
        "keepalive 32;",
        "server api:8000;",
        "proxy_http_version 1.1;",
        "proxy_pass http://api;",
        "proxy_set_header Host $host;",
        "proxy_set_header X-Real-IP $remote_addr;",
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Request-ID $opsdeck_request_id;",
        "proxy_read_timeout 60s;",
        'add_header X-Frame-Options "DENY" always;',
        'add_header X-Content-Type-Options "nosniff" always;',
        'add_header Referrer-Policy "strict-origin-when-cross-origin" always;',
        "resolver 127.0.0.11 valid=10s ipv6=off;",
        "client_max_body_size 10m;",
        "listen 8080 default_server;",
        "location = /healthz {",
        "error_page 429 @opsdeck_rate_limited;",
    ):
        assert line in conf, line
    # Not a conf.d snippet, and no daemon directive (the command line adds `daemon off;`).
    assert conf.count("http {") == 1 and "events {" in conf
    assert "daemon" not in conf.replace("-g 'daemon off;'", "")
    assert "user " not in re.sub(r"(?m)^\s*#.*$", "", conf).replace("user_agent", "")
    # The connection header is "" unless the client asks for an upgrade (keepalive to upstreams).
    assert re.search(r'map \$http_upgrade \$opsdeck_connection \{\s+default upgrade;\s+"" "";', conf)
    assert "proxy_set_header Connection $opsdeck_connection;" in conf
    # JSON access log with request time, status, upstream address and tenant id.
    log_format = conf[conf.index("log_format"):conf.index("access_log")]
    for field in ("$request_time", "$status", "$upstream_addr", "$http_x_tenant_id"):
        assert field in log_format
    # No HSTS without TLS, and no TLS listener.
    assert "Strict-Transport-Security" not in conf.replace("proxy_hide_header Strict-Transport-Security;", "")
    assert "ssl" not in re.sub(r"(?m)^\s*#.*$", "", conf)
    # The 429 and 404 answers are JSON.
    assert "return 429 '{\"error\":\"too_many_requests\",\"status\":429}\\n';" in conf
    assert "return 404 '{\"error\":\"not_found\",\"status\":404}\\n';" in conf
    assert res["runtime"]["command"] == ["nginx", "-c", "/etc/nginx/opsdeck/nginx.conf", "-g", "daemon off;"]
    assert res["runtime"]["ports"] == [8080]


def test_basic_config_passes_nginx_t_with_upstreams_on_loopback(results, tmp_path):
    """The role validated a copy with `api` rewritten to 127.0.0.1; so does this test."""
    conf = _conf(_ok(results, "basic"))
    conf = conf.replace("server api:8000;", "server 127.0.0.1:8000 max_fails=0;").replace("/tmp/", "%s/" % tmp_path)
    (tmp_path / "nginx.conf").write_text(conf)
    rc, output = _nginx_t(tmp_path, tmp_path / "nginx.conf")
    assert rc == 0, output


def test_rates_are_divided_between_edge_replicas(results):
    conf = _conf(_ok(results, "replicas"))
    zones = dict(re.findall(r"limit_req_zone \$binary_remote_addr zone=([a-z-]+):10m rate=(\S+);", conf))
    # 10r/s over 3 replicas = 200r/m; 6r/s = 2r/s; 7r/s = 140r/m; 1r/m stays 1r/m (never 0).
    assert zones == {"api": "200r/m", "web": "2r/s", "slow": "1r/m", "odd": "140r/m", "sticky": "200r/m",
                     "swarm": "200r/m"}
    bursts = dict(re.findall(r"limit_req zone=([a-z-]+) burst=(\d+)", conf))
    # ceil(20/3) = 7, ceil(4/3) = 2, ceil(5/3) = 2; burst 0 is nginx's default and is left out
    # (nginx rejects "burst=0").
    assert bursts == {"api": "7", "slow": "2", "odd": "2", "sticky": "7", "swarm": "7"}
    upstreams = dict(re.findall(r"upstream ([a-z-]+) \{(.*?)\}", conf, re.S))
    assert "hash $binary_remote_addr;" in upstreams["sticky"]
    assert "hash" not in upstreams["api"] and "swarm" not in upstreams
    assert "limit_req zone=web nodelay;" in conf
    # A route on / replaces the default 404 location.
    assert "return 404" not in conf


def test_full_config_files_modes_and_secrets(results):
    res = _ok(results, "full")
    files = {f["path"]: f for f in res["files"]}
    assert sorted(files) == ["htpasswd", "nginx.conf", "tls.crt", "tls.key"]
    assert (files["nginx.conf"]["mode"], files["nginx.conf"]["secret"]) == ("0644", False)
    assert (files["htpasswd"]["mode"], files["htpasswd"]["secret"]) == ("0600", True)
    assert (files["tls.key"]["mode"], files["tls.key"]["secret"]) == ("0600", True)
    assert files["tls.crt"]["secret"] is True
    full = results["_tmp"] / "full"
    assert files["htpasswd"]["runtime_path"] == str(full / "htpasswd")
    # Written into nginx_proxy_dest with those modes.
    for name, item in files.items():
        on_disk = full / name
        assert on_disk.read_text() == item["content"]
        assert oct(on_disk.stat().st_mode & 0o777) == oct(int(item["mode"], 8)), name


def test_full_config_passes_nginx_t_as_written(results):
    """The written files (TLS, htpasswd, CORS, resolve routes) are a valid nginx configuration."""
    _ok(results, "full")
    full = results["_tmp"] / "full"
    (results["_tmp"] / "full-run").mkdir(exist_ok=True)
    rc, output = _nginx_t(full, full / "nginx.conf")
    assert rc == 0, output


def test_full_config_tls_headers_auth_and_cors(results):
    res = _ok(results, "full")
    conf = _conf(res)
    https_port = results["_cases"]["full"]["nginx_proxy_tls"]["listen_port"]
    http_part, tls_part = conf.split("listen 127.0.0.1:%d ssl http2 default_server;" % https_port)
    # HSTS only on the TLS listener; HTTP only answers /healthz and redirects.
    assert 'add_header Strict-Transport-Security "max-age=600" always;' in tls_part
    assert 'add_header Strict-Transport-Security' not in http_part
    assert "return 308 https://$host:8443$request_uri;" in http_part
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in tls_part
    assert "ssl_certificate_key %s/tls.key;" % (results["_tmp"] / "full") in tls_part
    # Basic auth on admin-ui only, strip_prefix, nodelay off, no conn limit, timeout.
    admin = tls_part[tls_part.index("location /admin/ {"):]
    admin = admin[:admin.index("}")]
    assert 'auth_basic "Restricted";' in admin
    assert "limit_req zone=admin-ui burst=20;" in admin
    assert "limit_conn" not in admin
    assert "proxy_read_timeout 120s;" in admin
    assert "proxy_pass http://admin-ui/;" in admin
    assert "auth_basic" not in tls_part[tls_part.index("location /api/ {"):tls_part.index("location /admin/ {")]
    # CORS allowlist map and preflight.
    assert re.search(r'map \$http_origin \$opsdeck_cors_api \{\s+default "";\s+"https://app.example.com" \$http_origin;', conf)
    assert "if ($request_method = OPTIONS) {" in tls_part
    # Trusted balancers: real_ip, and X-Forwarded-For extended rather than replaced.
    assert "set_real_ip_from 10.0.0.0/8;" in conf
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in conf
    # resolve: no upstream block, a variable proxy_pass re-resolved through the resolver.
    assert "upstream dyn" not in conf
    assert "proxy_pass http://$opsdeck_upstream_dyn;" in conf
    assert "rewrite ^/dyn/(.*)$ /$1 break;" in conf
    assert "resolver 127.0.0.1 valid=5s;" in conf
    # Upstream health route.
    assert "location = /healthz/api {" in conf
    assert res["runtime"]["ports"] == [results["_cases"]["full"]["nginx_proxy_listen_port"], https_port]


def test_htpasswd_hashes_verify_and_are_stable(results):
    from passlib import hash as passlib_hash  # in requirements.txt; a missing passlib is a failure
    res = _ok(results, "full")
    lines = _file(res, "htpasswd")["content"].splitlines()
    users = dict(line.split(":", 1) for line in lines)
    assert set(users) == {"alice", "bob"}
    assert passlib_hash.sha512_crypt.verify("correct horse", users["alice"])
    assert passlib_hash.sha512_crypt.verify("battery staple", users["bob"])
    assert not passlib_hash.sha512_crypt.verify("battery staple", users["alice"])
    # Salts differ per user and are not the plain name hash.
    assert users["alice"].split("$")[2] != users["bob"].split("$")[2]
    assert res["dest_changed"] is True
    # Same variables elsewhere, and a second application: the same files and hash.
    again = _ok(results, "full_again")
    assert again["files"] == again["second_files"]
    assert again["hash"] == again["second_hash"]
    assert [f["content"] for f in again["files"]] == [f["content"] for f in res["files"]]
    assert again["dest_changed"] is False


def test_config_hash_covers_all_files(results):
    res = _ok(results, "full")
    basic = _ok(results, "basic")
    assert re.fullmatch(r"[0-9a-f]{64}", res["hash"])
    assert res["hash"] != basic["hash"]
    for item in res["files"]:
        assert item["sha256"] == hashlib.sha256(item["content"].encode()).hexdigest()


# --- input errors ---------------------------------------------------------------------

@pytest.mark.parametrize("case, expected", [
    ("bad_inputs", ["nginx_proxy_routes[api].rate", '"10/s"', "<n>r/s or <n>r/m"]),
    ("bad_inputs", ["nginx_proxy_routes[api].burst: -1", ">= 0"]),
    ("bad_inputs", ["nginx_proxy_routes[Api_1].name", "Api_1", "DNS-1123"]),
    ("bad_inputs", ["nginx_proxy_default_rate: 'fast'"]),
    ("bad_inputs", ["nginx_proxy_tls.key is empty", "nginx_proxy_tls.enabled"]),
    ("bad_inputs", ["nginx_proxy_routes[Api_1].basic_auth", "nginx_proxy_basic_auth_users is empty"]),
    ("bad_inputs", ["duplicate path", "/api/"]),
    ("bad_inputs", ["nginx_proxy_listen_port: 80", "1024-65535"]),
    ("bad_inputs", ["nginx_proxy_routes[bad-upstream].upstreams", "host:port"]),
    ("bad_types", ["burst", "lots"]),
    ("bad_types", ["brust", "Supported parameters"]),
    ("nginx_rejects", ["nginx -t rejected", "key values mismatch"]),
    ("nginx_rejects_line", ["nginx -t rejected", "[line ", "client_max_body_size 9999999999g;"]),
    ("no_nginx", ["nginx_proxy_nginx_binary", "apt-get install", "nginx_proxy_validate: false"]),
])
def test_bad_input_fails_naming_the_variable(results, case, expected):
    res = results[case]
    assert res["ok"] is False, "case %s was accepted" % case
    text = res["msg"] + " " + " ".join(res.get("errors") or [])
    for fragment in expected:
        assert fragment in text, "%r not in %r" % (fragment, text)


# --- a live nginx -----------------------------------------------------------------------

class _Backend(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        if self.path.startswith("/slow/"):
            time.sleep(1.0)
        body = json.dumps({"path": self.path, "headers": dict(self.headers.items())}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Frame-Options", "SAMEORIGIN")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def live_nginx(results, ports):
    res = _ok(results, "live")
    backend = ThreadingHTTPServer(("127.0.0.1", ports["backend"]), _Backend)
    backend.daemon_threads = True
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    tmp = results["_tmp"]
    _write_files(res, tmp / "live")
    (tmp / "live-run").mkdir(exist_ok=True)
    log = open(tmp / "live-nginx.log", "w")
    proc = subprocess.Popen(
        [NGINX, "-c", str(tmp / "live" / "nginx.conf"), "-g", "daemon off;"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = "http://127.0.0.1:%d" % ports["nginx"]
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("nginx did not start: %s" % (tmp / "live-nginx.log").read_text())
                time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        backend.shutdown()


def _get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers.items()), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers.items()), err.read().decode()


def test_live_health_404_and_proxying(live_nginx):
    status, _headers, body = _get(live_nginx + "/healthz")
    assert (status, body) == (200, "ok")
    status, headers, body = _get(live_nginx + "/nope")
    assert status == 404 and json.loads(body)["error"] == "not_found"
    assert headers["X-Frame-Options"] == "DENY"
    status, headers, body = _get(live_nginx + "/echo/x", {"X-Request-ID": "req-1", "Origin": "https://app.example.com",
                                                          "X-Forwarded-For": "6.6.6.6"})
    assert status == 200
    seen = json.loads(body)
    assert seen["path"] == "/echo/x"
    assert seen["headers"]["X-Request-ID"] == "req-1"
    # At the edge (no trusted balancers), a client's X-Forwarded-For is replaced.
    assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Frame-Options"] == "DENY"  # the backend's SAMEORIGIN is replaced
    assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    headers = _get(live_nginx + "/echo/y", {"Origin": "https://evil.example.net"})[1]
    assert "Access-Control-Allow-Origin" not in headers


def test_live_route_without_trailing_slash_takes_the_path_and_below_only(live_nginx):
    for path in ("/api/v1/auth", "/api/v1/auth/", "/api/v1/auth/login?x=1"):
        status, headers, body = _get(live_nginx + path)
        assert status == 200 and json.loads(body)["path"] == path, (path, status, body)
    status = _get(live_nginx + "/api/v1/authors")[0]
    assert status == 404, "a route /api/v1/auth must not take /api/v1/authors"
    # strip_prefix on such a route: /bare -> /, /bare/x -> /x
    assert json.loads(_get(live_nginx + "/bare")[2])["path"] == "/"
    assert json.loads(_get(live_nginx + "/bare/x/y")[2])["path"] == "/x/y"
    assert _get(live_nginx + "/barely")[0] == 404


def test_live_rate_limit_answers_json_429(live_nginx):
    answers = [_get(live_nginx + "/burst/x") for _attempt in range(8)]
    statuses = [a[0] for a in answers]
    # rate 1r/s, burst 2, nodelay: 3 pass at once, then 429.
    assert statuses.count(200) in (3, 4), statuses
    assert statuses.count(429) >= 4, statuses
    assert set(statuses) <= {200, 429}
    status, headers, body = next(a for a in answers if a[0] == 429)
    assert json.loads(body) == {"error": "too_many_requests", "status": 429}
    assert headers["Retry-After"] == "1"
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_live_conn_limit_per_ip(live_nginx):
    with ThreadPoolExecutor(max_workers=3) as pool:
        statuses = sorted(f.result()[0] for f in [pool.submit(_get, live_nginx + "/slow/%d" % i) for i in range(3)])
    # conn_limit 1: one request in flight per client IP, the others are refused with 429.
    assert statuses.count(200) >= 1 and statuses.count(429) >= 1, statuses
