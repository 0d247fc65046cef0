# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests of the opsdeck.stack.hpa_tune module.

No Kubernetes API server can run on this machine, so the API paths (create, tune,
idempotence against server defaults, check mode with server-side dry-run, preflight,
wait, delete, errors) run against ``FakeKubeAPI`` below: a small in-process FAKE of the
Kubernetes REST API (http.server on 127.0.0.1, a random port) that speaks only the
endpoints the module uses, fills in autoscaling/v2 server defaults the way
kube-apiserver's defaults.go does, enforces resourceVersion on PUT, honours
``dryRun=All``, and rejects bodies that fail ``kubernetes-validate --strict`` for
Kubernetes 1.33 with HTTP 422. It is not a Kubernetes; tests/integration/
test_hpa_tune_live.py runs the module against a real cluster when KUBECONFIG is set.

The GitOps (``dest``) mode needs no cluster and runs for real, both in-process and
through ``ansible-playbook`` with ANSIBLE_COLLECTIONS_PATH, showing check mode, diff and
idempotence on a file.

Run with PYTHONPATH and ANSIBLE_COLLECTIONS_PATH set to build/collections (`make link`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock
from urllib.parse import parse_qs, urlparse

import kubernetes_validate
import pytest
import yaml
from ansible.module_utils import _internal as module_utils_internal
from ansible.module_utils.common import warnings as module_warnings
from ansible.module_utils.testing import patch_module_args
from yamllint import linter as yamllint_linter
from yamllint.config import YamlLintConfig

from ansible_collections.opsdeck.stack.plugins.modules import hpa_tune

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))
FIXTURE = os.path.join(ROOT, "tests", "unit", "fixtures", "seed002_hpa.yaml")
COLLECTIONS = os.path.join(ROOT, "build", "collections")
VENV_BIN = os.path.dirname(sys.executable)
TOKEN = "s3cr3t-token"
NS = "ifinu-production"

SEED_ARGS = dict(
    name="evolution-api-hpa",
    namespace=NS,
    target=dict(kind="Deployment", name="evolution-api"),
    min_replicas=2,
    max_replicas=20,
    cpu_utilization=70,
    memory_utilization=80,
    scale_up=dict(percent=50, pods=2, period=60, select="max", stabilization=0),
    scale_down=dict(percent=10, pods=1, period=60, select="min", stabilization=300),
)


# =============================================================================== the fake API
def apiserver_defaults(spec):
    """autoscaling/v2 defaulting as kube-apiserver does it (pkg/apis/autoscaling/v2/defaults.go)."""
    spec = copy.deepcopy(spec)
    spec.setdefault("minReplicas", 1)
    if not spec.get("metrics"):
        spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": 80}}}]
    if spec.get("behavior") is not None:
        up = spec["behavior"].get("scaleUp") or {}
        up.setdefault("stabilizationWindowSeconds", 0)
        up.setdefault("selectPolicy", "Max")
        up.setdefault("policies", [{"type": "Pods", "value": 4, "periodSeconds": 15},
                                   {"type": "Percent", "value": 100, "periodSeconds": 15}])
        down = spec["behavior"].get("scaleDown") or {}
        down.setdefault("selectPolicy", "Max")
        down.setdefault("policies", [{"type": "Percent", "value": 100, "periodSeconds": 15}])
        spec["behavior"] = {"scaleUp": up, "scaleDown": down}
    return spec


def deployment(name, containers, replicas=4, kind="Deployment"):
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": containers}}}}


def container(name, cpu="250m", memory="256Mi"):
    requests = {}
    if cpu:
        requests["cpu"] = cpu
    if memory:
        requests["memory"] = memory
    return {"name": name, "image": "example.invalid/%s:1" % name, "resources": {"requests": requests}}


class FakeKubeAPI(object):
    """In-memory state + HTTP front of the fake API server (see module docstring)."""

    HPA = re.compile(r"^/apis/(autoscaling/v2(?:beta2)?)/namespaces/([^/]+)/horizontalpodautoscalers(?:/([^/]+))?$")
    WORKLOAD = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/(deployments|statefulsets)/([^/]+)$")
    KEDA = re.compile(r"^/apis/keda\.sh/v1alpha1/namespaces/([^/]+)/scaledobjects$")

    def __init__(self):
        self.lock = threading.Lock()
        self.hpas = {}
        self.workloads = {}
        self.metrics_api = 200
        self.keda = None  # None: KEDA not installed (404)
        # the autoscaling group versions served (Kubernetes 1.20 serves v2beta2, not v2)
        self.autoscaling = ["autoscaling/v1", "autoscaling/v2"]
        self.requests = []
        self.rv = 100
        self.active_after_gets = 0  # ScalingActive becomes True after this many GETs of the HPA
        self.inactive_message = "the HPA was unable to compute the replica count: failed to get cpu utilization"
        self.conflict_puts = 0
        self.forbid_dry_run = False
        self.server = None

    # -- helpers used by tests
    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def add_workload(self, obj):
        plural = "statefulsets" if obj["kind"] == "StatefulSet" else "deployments"
        self.workloads[(plural, obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj

    def store_hpa(self, obj, status_replicas=None):
        obj = copy.deepcopy(obj)
        obj["spec"] = apiserver_defaults(obj["spec"])
        self.rv += 1
        meta = obj["metadata"]
        meta.update(resourceVersion=str(self.rv), uid="uid-%s" % meta["name"],
                    creationTimestamp="2025-01-01T00:00:00Z",
                    managedFields=[{"manager": "kubectl", "operation": "Update"}])
        obj["status"] = {"currentReplicas": status_replicas or 0, "desiredReplicas": status_replicas or 0,
                         "conditions": self._conditions(False)}
        self.hpas[(meta["namespace"], meta["name"])] = obj
        return obj

    def writes(self):
        return [r for r in self.requests if r[0] in ("POST", "PUT", "DELETE", "PATCH")]

    def real_writes(self):
        return [r for r in self.writes() if r[2].get("dryRun") != ["All"]]

    def _conditions(self, active):
        return [
            {"type": "AbleToScale", "status": "True", "reason": "SucceededGetScale",
             "message": "the HPA controller was able to get the target's current scale"},
            {"type": "ScalingActive", "status": "True" if active else "False",
             "reason": "ValidMetricFound" if active else "FailedGetResourceMetric",
             "message": "the HPA was able to successfully calculate a replica count" if active else self.inactive_message},
        ]

    # -- HTTP
    def handle(self, method, raw_path, headers, body):
        parsed = urlparse(raw_path)
        path, query = parsed.path, parse_qs(parsed.query)
        with self.lock:
            self.requests.append((method, path, query))
            if headers.get("Authorization") != "Bearer " + TOKEN:
                return 401, self.status(401, "Unauthorized", "Unauthorized")
            if path == "/apis" and method == "GET":
                return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                    {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}]},
                    {"name": "autoscaling",
                     "versions": [{"groupVersion": v, "version": v.split("/")[1]} for v in self.autoscaling]}]}
            m = self.HPA.match(path)
            if m and m.group(1) in self.autoscaling:
                return self.hpa(method, m.group(2), m.group(3), query, body, m.group(1))
            m = self.WORKLOAD.match(path)
            if m and method == "GET":
                obj = self.workloads.get((m.group(2), m.group(1), m.group(3)))
                if obj is None:
                    return 404, self.status(404, "NotFound", '%s "%s" not found' % (m.group(2), m.group(3)))
                return 200, obj
            if path == "/apis/metrics.k8s.io/v1beta1" and method == "GET":
                if self.metrics_api == 200:
                    return 200, {"kind": "APIResourceList", "groupVersion": "metrics.k8s.io/v1beta1", "resources": []}
                return self.metrics_api, self.status(self.metrics_api, "ServiceUnavailable",
                                                     "the server is currently unable to handle the request")
            m = self.KEDA.match(path)
            if m and method == "GET":
                if self.keda is None:
                    return 404, self.status(404, "NotFound", "the server could not find the requested resource")
                return 200, {"kind": "ScaledObjectList", "items": self.keda}
            return 404, self.status(404, "NotFound", "the server could not find the requested resource")

    def status(self, code, reason, message):
        return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message,
                "code": code}

    def hpa(self, method, ns, name, query, body, group_version="autoscaling/v2"):
        key = (ns, name)
        dry = query.get("dryRun") == ["All"]
        if dry and self.forbid_dry_run:
            return 403, self.status(403, "Forbidden", "dry-run is not allowed for this account")
        if method == "GET" and name is None:
            items = [copy.deepcopy(o) for (n, _name), o in sorted(self.hpas.items()) if n == ns]
            return 200, {"kind": "HorizontalPodAutoscalerList", "items": items}
        if method == "GET":
            obj = self.hpas.get(key)
            if obj is None:
                return 404, self.status(404, "NotFound", 'horizontalpodautoscalers.autoscaling "%s" not found' % name)
            if self.active_after_gets is not None:
                if self.active_after_gets <= 0:
                    obj["status"]["conditions"] = self._conditions(True)
                self.active_after_gets -= 1
            return 200, obj
        if method in ("POST", "PUT"):
            if body.get("apiVersion") != group_version:
                return 400, self.status(400, "BadRequest", "the API version in the data (%s) does not match the "
                                                           "expected API version (%s)" % (body.get("apiVersion"),
                                                                                          group_version))
            try:
                # v2beta2 is no longer in 1.33's schemas; 1.25 still has it
                kubernetes_validate.validate(copy.deepcopy(body), "1.33.0" if group_version == "autoscaling/v2"
                                             else "1.25.0", strict=True)
            except kubernetes_validate.ValidationError as exc:
                return 422, self.status(422, "Invalid", "HorizontalPodAutoscaler is invalid: %s" % exc.message)
            if (body.get("metadata") or {}).get("namespace", ns) != ns:
                return 400, self.status(400, "BadRequest", "namespace mismatch")
        if method == "POST":
            name = body["metadata"]["name"]
            if (ns, name) in self.hpas:
                return 409, self.status(409, "AlreadyExists", "already exists")
            return 201, self._write(body, ns, dry, None)
        if method == "PUT":
            current = self.hpas.get(key)
            if current is None:
                return 404, self.status(404, "NotFound", "not found")
            if self.conflict_puts and not dry:
                self.conflict_puts -= 1
                current["metadata"]["resourceVersion"] = str(int(current["metadata"]["resourceVersion"]) + 1000)
                return 409, self.status(409, "Conflict", "the object has been modified; please apply your changes "
                                                         "to the latest version and try again")
            if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                return 409, self.status(409, "Conflict", "the object has been modified")
            return 200, self._write(body, ns, dry, current)
        if method == "DELETE":
            if key not in self.hpas:
                return 404, self.status(404, "NotFound", "not found")
            if not dry:
                del self.hpas[key]
            return 200, self.status(200, "Success", "deleted")
        return 405, self.status(405, "MethodNotAllowed", "method not allowed")

    def _write(self, body, ns, dry, current):
        obj = copy.deepcopy(body)
        obj["spec"] = apiserver_defaults(obj["spec"])
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = ns
        if not dry:
            self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        meta.setdefault("uid", "uid-" + meta["name"])
        meta.setdefault("creationTimestamp", "2025-01-01T00:00:00Z")
        meta["managedFields"] = [{"manager": "opsdeck.stack", "operation": "Update"}]
        status = copy.deepcopy((current or {}).get("status")) or {
            "currentReplicas": 0, "desiredReplicas": 0, "conditions": self._conditions(False)}
        obj["status"] = status
        if not dry:
            self.hpas[(ns, meta["name"])] = obj
        return copy.deepcopy(obj)


def _handler(api):
    class Handler(BaseHTTPRequestHandler):
        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            code, payload = api.handle(self.command, self.path, self.headers, body)
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        def log_message(self, *args):  # keep pytest output clean
            pass

    return Handler


@pytest.fixture
def fake_api():
    api = FakeKubeAPI()
    api.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    api.server.daemon_threads = True
    thread = threading.Thread(target=api.server.serve_forever, kwargs=dict(poll_interval=0.02), daemon=True)
    thread.start()
    api.add_workload(deployment("evolution-api", [container("api")]))
    yield api
    api.server.shutdown()
    api.server.server_close()


@pytest.fixture(autouse=True)
def _clean_k8s_env(monkeypatch):
    for var in list(os.environ):
        if var.startswith("K8S_AUTH_"):
            monkeypatch.delenv(var)


# =============================================================================== running the module
@contextlib.contextmanager
def module_process_context():
    """What a fresh module process (AnsiballZ on the target) starts with.

    ansible-core keeps two process-wide states that only make sense when one process runs
    one module: ``ansible.module_utils._internal.is_controller``, set for good as soon as
    anything imports controller code (``ansible.errors``, e.g. through the collection's
    filter plugin that test_compose.py imports), which makes ``AnsibleModule.warn()`` print
    to the controller display instead of returning the warning with the result; and the
    de-duplicated warning/deprecation stores, which would otherwise carry one run's
    messages into the next run's result. Both are set as on a target for the duration of
    one in-process run and restored afterwards (controller-side tests need them back).
    """
    with mock.patch.object(module_utils_internal, "is_controller", False), \
            mock.patch.dict(module_warnings._global_warnings, clear=True), \
            mock.patch.dict(module_warnings._global_deprecations, clear=True):
        yield


def run(args, check=False, diff=True):
    """Run hpa_tune in-process; return its JSON result (``failed`` set on fail_json)."""
    margs = dict(args)
    margs["_ansible_check_mode"] = check
    margs["_ansible_diff"] = diff
    from io import StringIO
    out = StringIO()
    old = sys.stdout
    sys.stdout = out
    try:
        with module_process_context(), patch_module_args(margs):
            with pytest.raises(SystemExit):
                hpa_tune.main()
    finally:
        sys.stdout = old
    return json.loads(out.getvalue())


def warnings(result):
    """Warning texts (ansible-core 2.19 returns them as structured summaries)."""
    out = []
    for item in result.get("warnings") or []:
        out.append(item if isinstance(item, str) else ((item.get("event") or {}).get("msg") or str(item)))
    return out


def api_args(api, **extra):
    args = dict(SEED_ARGS, host=api.url, api_key=TOKEN)
    args.update(extra)
    return args


# =============================================================================== API paths (fake)
def test_four_step_idempotence_against_server_defaults(fake_api):
    """check (predicts create) -> apply -> check (no change) -> apply (no change)."""
    first = run(api_args(fake_api), check=True)
    assert first["changed"] and first["action"] == "created" and first["dry_run"] is True
    assert fake_api.hpas == {} and fake_api.real_writes() == []  # check mode wrote nothing

    created = run(api_args(fake_api))
    assert created["changed"] and created["action"] == "created"
    stored = fake_api.hpas[(NS, "evolution-api-hpa")]
    with open(FIXTURE) as handle:
        golden = yaml.safe_load(handle)
    assert created["manifest"] == golden  # what was sent is exactly seed 002's YAML
    assert stored["spec"]["behavior"]["scaleUp"]["selectPolicy"] == "Max"
    assert created["hpa"]["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    assert "managedFields" not in created["hpa"]["metadata"]

    writes = len(fake_api.writes())
    again = run(api_args(fake_api), check=True)
    assert not again["changed"] and again["action"] == "unchanged"
    final = run(api_args(fake_api))
    assert not final["changed"] and final["action"] == "unchanged"
    assert len(fake_api.writes()) == writes  # no write at all on the re-runs
    assert "diff" not in final


def test_existing_hpa_with_defaults_and_reordered_lists_is_unchanged(fake_api):
    """An HPA created by kubectl (server defaults filled, metrics and policies in another order)."""
    with open(FIXTURE) as handle:
        golden = yaml.safe_load(handle)
    golden["spec"]["metrics"].reverse()
    golden["spec"]["behavior"]["scaleDown"]["policies"].reverse()
    del golden["spec"]["behavior"]["scaleUp"]["selectPolicy"]  # server default Max
    del golden["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"]  # server default 0
    fake_api.store_hpa(golden)
    result = run(api_args(fake_api))
    assert not result["changed"], result.get("diff")
    assert fake_api.writes() == []


def test_tuning_one_field_keeps_the_rest_and_diffs_the_managed_spec(fake_api):
    run(api_args(fake_api))
    rv = fake_api.hpas[(NS, "evolution-api-hpa")]["metadata"]["resourceVersion"]
    args = dict(name="evolution-api-hpa", namespace=NS, host=fake_api.url, api_key=TOKEN,
                cpu_utilization=60, memory_utilization=80)
    checked = run(args, check=True)
    assert checked["changed"] and checked["action"] == "updated"
    before, after = checked["diff"]["before"], checked["diff"]["after"]
    assert "averageUtilization: 70" in before and "averageUtilization: 60" in after
    assert "averageUtilization: 70" not in after
    assert fake_api.hpas[(NS, "evolution-api-hpa")]["metadata"]["resourceVersion"] == rv  # dry-run only

    result = run(args)
    assert result["changed"]
    spec = fake_api.hpas[(NS, "evolution-api-hpa")]["spec"]
    cpu = [m for m in spec["metrics"] if m["resource"]["name"] == "cpu"][0]
    assert cpu["resource"]["target"]["averageUtilization"] == 60
    assert spec["minReplicas"] == 2 and spec["maxReplicas"] == 20  # untouched
    assert spec["behavior"]["scaleDown"]["selectPolicy"] == "Min"  # untouched
    put = [r for r in fake_api.writes() if r[0] == "PUT" and not r[2]]
    assert len(put) == 1
    assert not run(args)["changed"]


def test_conflict_on_update_is_retried_once(fake_api):
    run(api_args(fake_api))
    fake_api.conflict_puts = 1
    result = run(api_args(fake_api, max_replicas=30))
    assert result["changed"] and fake_api.hpas[(NS, "evolution-api-hpa")]["spec"]["maxReplicas"] == 30
    fake_api.conflict_puts = 2
    failed = run(api_args(fake_api, max_replicas=40))
    assert failed["failed"] and "conflict" in failed["msg"] and "run the task again" in failed["msg"]


def test_check_mode_without_dry_run_permission_warns_and_predicts(fake_api):
    fake_api.forbid_dry_run = True
    result = run(api_args(fake_api), check=True)
    assert result["changed"] and result["dry_run"] is False
    assert any("server-side dry-run was not possible (HTTP 403" in w for w in warnings(result))
    assert fake_api.real_writes() == [] and fake_api.hpas == {}


def test_invalid_parameters_fail_before_any_api_call(fake_api):
    result = run(api_args(fake_api, min_replicas=30, cpu_utilization=0,
                          scale_up=dict(percent=50, period=4000, select="sometimes")))
    assert result["failed"]
    assert fake_api.requests == []  # nothing was sent
    assert result["msg"].startswith("hpa_tune refused the parameters, nothing was changed (4 problems): (1) ")
    violations = result["violations"]
    assert len(violations) == 4
    assert any("scale_up.select: got 'sometimes'" in v for v in violations)
    assert any("scale_up.period: got 4000" in v for v in violations)
    assert any("cpu_utilization: got 0" in v for v in violations)
    assert any("min_replicas 30 (given) is greater than max_replicas 20" in v for v in violations)


def test_creating_needs_target_max_and_a_metric(fake_api):
    result = run(dict(name="new-hpa", namespace=NS, host=fake_api.url, api_key=TOKEN, min_replicas=2))
    assert result["failed"] and fake_api.writes() == []
    assert "does not exist yet, so it needs 3 more settings" in result["msg"]
    assert "target.name" in result["msg"] and "max_replicas (or capacity" in result["msg"]


def test_min_above_live_max_is_refused_after_reading(fake_api):
    run(api_args(fake_api))
    result = run(dict(name="evolution-api-hpa", namespace=NS, host=fake_api.url, api_key=TOKEN, min_replicas=25))
    assert result["failed"]
    assert "minReplicas 25 is greater than maxReplicas 20 after merging with the existing HPA" in result["msg"]


def test_preflight_lists_every_problem_and_writes_nothing(fake_api):
    fake_api.add_workload(deployment("evolution-api", [container("api", cpu=None),
                                                       container("metrics-sidecar", cpu=None, memory=None)]))
    fake_api.metrics_api = 404
    fake_api.store_hpa({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                        "metadata": {"name": "legacy-hpa", "namespace": NS},
                        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                                    "name": "evolution-api"}, "maxReplicas": 5}})
    fake_api.keda = [{"metadata": {"name": "evolution-api-queue"},
                      "spec": {"scaleTargetRef": {"name": "evolution-api"}}}]
    writes = len(fake_api.writes())
    result = run(api_args(fake_api))
    assert result["failed"] and len(fake_api.writes()) == writes
    msg = result["msg"]
    assert msg.startswith("preflight found 5 problems with HorizontalPodAutoscaler ifinu-production/evolution-api-hpa")
    assert "containers api, metrics-sidecar of Deployment ifinu-production/evolution-api have no cpu request" in msg
    assert "container metrics-sidecar of Deployment ifinu-production/evolution-api has no memory request" in msg
    assert "metrics.k8s.io/v1beta1) is not installed" in msg and "install metrics-server" in msg
    assert "HPA ifinu-production/legacy-hpa already scales Deployment evolution-api" in msg
    assert "KEDA ScaledObject ifinu-production/evolution-api-queue already scales" in msg
    assert msg.endswith("Fix them, or set preflight: false to skip these checks.")
    skipped = run(api_args(fake_api, preflight=False))
    assert skipped["changed"] and (NS, "evolution-api-hpa") in fake_api.hpas


def test_preflight_missing_target_and_unavailable_metrics(fake_api):
    fake_api.metrics_api = 503
    result = run(api_args(fake_api, target=dict(kind="StatefulSet", name="evolution-postgres")))
    assert result["failed"]
    assert "the target StatefulSet ifinu-production/evolution-postgres does not exist; deploy it first" in result["msg"]
    assert "registered but not available (HTTP 503" in result["msg"]
    assert "kubectl get apiservice v1beta1.metrics.k8s.io" in result["msg"]


def test_wait_until_scaling_active(fake_api):
    fake_api.active_after_gets = 1  # first re-read still inactive, second one active
    started = time.time()
    result = run(api_args(fake_api, wait=True, wait_sleep=1, wait_timeout=20))
    assert not result.get("failed"), result.get("msg")
    conditions = {c["type"]: c["status"] for c in result["hpa"]["status"]["conditions"]}
    assert conditions["ScalingActive"] == "True"
    assert time.time() - started < 10


def test_wait_fails_with_the_hpa_condition_messages(fake_api):
    fake_api.active_after_gets = 10 ** 6
    fake_api.inactive_message = "missing request for cpu in container sidecar"
    result = run(api_args(fake_api, wait=True, wait_sleep=1, wait_timeout=1, preflight=False))
    assert result["failed"]
    assert "did not report ScalingActive=True within 1 s" in result["msg"]
    assert "ScalingActive=False (FailedGetResourceMetric: missing request for cpu in container sidecar)" in result["msg"]
    assert "metrics-server" in result["msg"]


def test_preview_starts_from_the_current_replicas(fake_api):
    result = run(api_args(fake_api))  # no HPA status yet: the Deployment has 4 replicas
    preview = result["preview"]
    assert preview["current_replicas"] == 4 and preview["current_replicas_source"] == "target spec.replicas"
    assert preview["scale_up"]["next_replicas"] == 6 and preview["scale_down"]["next_replicas"] == 3
    fake_api.workloads[("deployments", NS, "evolution-api")]["spec"]["replicas"] = 10
    preview = run(api_args(fake_api, preflight=False))["preview"]
    assert preview["current_replicas"] == 10 and preview["scale_up"]["next_replicas"] == 15
    del fake_api.workloads[("deployments", NS, "evolution-api")]  # target unreadable: HPA status
    fake_api.hpas[(NS, "evolution-api-hpa")]["status"]["currentReplicas"] = 9
    preview = run(api_args(fake_api, preflight=False))["preview"]
    assert preview["current_replicas_source"] == "HPA status.currentReplicas"
    assert preview["scale_up"]["next_replicas"] == 14
    assert run(api_args(fake_api, preview_replicas=18, preflight=False))["preview"]["scale_up"]["next_replicas"] == 20


def test_capacity_derives_bounds_and_explains(fake_api):
    args = api_args(fake_api, min_replicas=None, max_replicas=None,
                    capacity=dict(peak_rate=1000, per_pod_rate=50, headroom_percent=20, unit="msg/s"))
    result = run(args)
    assert result["derived_replicas"] == {"min_replicas": 2, "max_replicas": 24}
    assert result["capacity_explanation"].startswith(
        "max_replicas 24 = ceil(peak 1000 msg/s x 1.2 (20 % headroom) / 50 msg/s per pod)")
    assert fake_api.hpas[(NS, "evolution-api-hpa")]["spec"]["maxReplicas"] == 24
    assert not run(args)["changed"]


def test_labels_are_merged_and_compared(fake_api):
    run(api_args(fake_api))
    fake_api.hpas[(NS, "evolution-api-hpa")]["metadata"]["labels"] = {"team": "billing"}
    result = run(api_args(fake_api, labels={"app.kubernetes.io/managed-by": "opsdeck"}))
    assert result["changed"]
    assert fake_api.hpas[(NS, "evolution-api-hpa")]["metadata"]["labels"] == {
        "team": "billing", "app.kubernetes.io/managed-by": "opsdeck"}
    assert not run(api_args(fake_api, labels={"app.kubernetes.io/managed-by": "opsdeck"}))["changed"]


def test_absent_deletes_once_and_check_mode_keeps_it(fake_api):
    run(api_args(fake_api))
    args = dict(name="evolution-api-hpa", namespace=NS, host=fake_api.url, api_key=TOKEN, state="absent")
    checked = run(args, check=True)
    assert checked["changed"] and checked["action"] == "deleted" and (NS, "evolution-api-hpa") in fake_api.hpas
    assert "maxReplicas: 20" in checked["diff"]["before"] and checked["diff"]["after"] == ""
    assert run(args)["changed"] and fake_api.hpas == {}
    again = run(args)
    assert not again["changed"] and again["action"] == "absent"


def test_bad_token_and_unreachable_api_say_what_to_do(fake_api):
    result = run(api_args(fake_api, api_key="wrong"))
    assert result["failed"] and "authentication failed: check api_key" in result["msg"]
    assert "wrong" not in json.dumps(result)  # api_key is no_log
    result = run(api_args(fake_api, host="http://127.0.0.1:9"))
    assert result["failed"] and "cannot reach the Kubernetes API at http://127.0.0.1:9" in result["msg"]
    result = run(dict(SEED_ARGS, kubeconfig="/nonexistent/kubeconfig"))
    assert result["failed"] and "could not load a Kubernetes configuration" in result["msg"]


def test_kubeconfig_dict_and_context_are_honoured(fake_api):
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "elsewhere",
        "clusters": [{"name": "fake", "cluster": {"server": fake_api.url}},
                     {"name": "other", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "tester", "user": {"token": TOKEN}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester"}},
                     {"name": "elsewhere", "context": {"cluster": "other", "user": "tester"}}],
    }
    result = run(dict(SEED_ARGS, kubeconfig=kubeconfig, context="fake"))
    assert result["changed"] and (NS, "evolution-api-hpa") in fake_api.hpas


def test_every_manifest_sent_passed_strict_schema_validation(fake_api):
    """The fake answers 422 to bodies failing kubernetes-validate --strict (1.33); the same
    manifests are checked against 1.29 here."""
    run(api_args(fake_api))
    run(api_args(fake_api, scale_up=None, behavior={"scaleUp": {"policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 60}]}}))
    for obj in fake_api.hpas.values():
        sent = copy.deepcopy(obj)
        del sent["status"]
        kubernetes_validate.validate(sent, "1.29.0", strict=True)


def test_a_server_without_autoscaling_v2_gets_v2beta2(fake_api):
    """Kubernetes 1.20 serves autoscaling/v2beta2 only: create, check, tune, delete through it."""
    fake_api.autoscaling = ["autoscaling/v1", "autoscaling/v2beta1", "autoscaling/v2beta2"]
    checked = run(api_args(fake_api), check=True)
    assert checked["changed"] and checked["api_version"] == "autoscaling/v2beta2" and fake_api.hpas == {}
    created = run(api_args(fake_api))
    assert created["changed"] and created["manifest"]["apiVersion"] == "autoscaling/v2beta2"
    assert fake_api.hpas[(NS, "evolution-api-hpa")]["apiVersion"] == "autoscaling/v2beta2"
    assert all("/autoscaling/v2/" not in r[1] for r in fake_api.requests)
    for check in (True, False):
        assert not run(api_args(fake_api), check=check)["changed"]
    tuned = run(dict(name="evolution-api-hpa", namespace=NS, host=fake_api.url, api_key=TOKEN, max_replicas=30))
    assert tuned["changed"] and fake_api.hpas[(NS, "evolution-api-hpa")]["spec"]["maxReplicas"] == 30
    asked = run(api_args(fake_api, api_version="autoscaling/v2"))
    assert asked["failed"] and "does not serve autoscaling/v2 (it serves autoscaling/v1, autoscaling/v2beta1, " \
        "autoscaling/v2beta2)" in asked["msg"]
    gone = run(dict(name="evolution-api-hpa", namespace=NS, host=fake_api.url, api_key=TOKEN, state="absent"))
    assert gone["changed"] and fake_api.hpas == {}


def test_a_server_with_neither_version_is_refused_with_what_it_serves(fake_api):
    fake_api.autoscaling = ["autoscaling/v1"]
    result = run(api_args(fake_api))
    assert result["failed"] and "serves neither autoscaling/v2 nor autoscaling/v2beta2 (it serves autoscaling/v1)" \
        in result["msg"]
    assert fake_api.writes() == []


# =============================================================================== dest (GitOps), in-process
def dest_args(path, **extra):
    args = dict(SEED_ARGS, dest=str(path))
    args.update(extra)
    return args


def validate_file_with_cli(path):
    """`kubernetes-validate --strict -k <version> <file>` for 1.29.0 and 1.33.0."""
    cli = os.path.join(VENV_BIN, "kubernetes-validate")
    for version in ("1.29.0", "1.33.0"):
        proc = subprocess.run([cli, "--strict", "-k", version, str(path)], capture_output=True, text=True, check=False)
        assert proc.returncode == 0 and "passed" in proc.stdout, proc.stdout + proc.stderr


def validate_file(path):
    """The same check through kubernetes-validate's Python API (no process start-up)."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(docs) == 1
    for version in ("1.29.0", "1.33.0"):
        kubernetes_validate.validate(docs[0], version, strict=True)


def test_dest_writes_the_golden_manifest_idempotently(tmp_path):
    path = tmp_path / "hpa.yaml"
    checked = run(dest_args(path), check=True)
    assert checked["changed"] and not path.exists()
    written = run(dest_args(path))
    assert written["changed"] and written["action"] == "written"
    with open(FIXTURE) as handle:
        assert yaml.safe_load(path.read_text()) == yaml.safe_load(handle)
    assert written["diff"]["before"] == "" and written["diff"]["after"] == path.read_text()
    validate_file_with_cli(path)
    lint = list(yamllint_linter.run(path.read_text(), YamlLintConfig("extends: default")))
    assert lint == [], lint  # GitOps repositories often run yamllint
    mtime = path.stat().st_mtime_ns
    for check in (True, False):
        again = run(dest_args(path), check=check)
        assert not again["changed"] and again["action"] == "unchanged"
    assert path.stat().st_mtime_ns == mtime


def test_dest_respects_a_hand_formatted_equivalent_file(tmp_path):
    path = tmp_path / "hpa.yaml"
    with open(FIXTURE) as handle:
        obj = yaml.safe_load(handle)
    obj["spec"]["metrics"].reverse()
    obj["metadata"]["annotations"] = {"argocd.argoproj.io/sync-wave": "2"}
    text = "# hand written\n" + json.dumps(obj, indent=4)
    path.write_text(text)
    assert not run(dest_args(path))["changed"]
    assert path.read_text() == text
    tuned = run(dict(name="evolution-api-hpa", namespace=NS, dest=str(path), max_replicas=30))
    assert tuned["changed"]
    assert tuned["diff"]["before"] == text and "  maxReplicas: 30\n" in tuned["diff"]["after"]
    new = yaml.safe_load(path.read_text())
    assert new["spec"]["maxReplicas"] == 30
    assert new["metadata"]["annotations"] == {"argocd.argoproj.io/sync-wave": "2"}  # kept
    validate_file(path)


def test_dest_refuses_foreign_files_and_missing_directories(tmp_path):
    path = tmp_path / "other.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    result = run(dest_args(path))
    assert result["failed"] and "does not hold exactly one HorizontalPodAutoscaler" in result["msg"]
    path.write_text("apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: evolution-api-hpa}\n")
    assert "convert or remove the file" in run(dest_args(path))["msg"]
    result = run(dest_args(tmp_path / "missing" / "hpa.yaml"))
    assert result["failed"] and "does not exist; create it first" in result["msg"]


def test_dest_keeps_a_v2beta2_file_and_converts_when_asked(tmp_path):
    path = tmp_path / "hpa.yaml"
    run(dest_args(path, api_version="autoscaling/v2beta2"))
    assert yaml.safe_load(path.read_text())["apiVersion"] == "autoscaling/v2beta2"
    kubernetes_validate.validate(yaml.safe_load(path.read_text()), "1.25.0", strict=True)
    again = run(dest_args(path))  # auto: the file's version
    assert not again["changed"] and again["api_version"] == "autoscaling/v2beta2"
    converted = run(dest_args(path, api_version="autoscaling/v2"))
    assert converted["changed"] and yaml.safe_load(path.read_text())["apiVersion"] == "autoscaling/v2"
    validate_file(path)


def test_dest_absent_removes_the_file(tmp_path):
    path = tmp_path / "hpa.yaml"
    run(dest_args(path))
    args = dict(name="evolution-api-hpa", namespace=NS, dest=str(path), state="absent")
    assert run(args, check=True)["changed"] and path.exists()
    assert run(args)["changed"] and not path.exists()
    assert not run(args)["changed"]


@pytest.mark.parametrize("extra", [
    dict(memory_utilization=None, scale_up=None, scale_down=None),
    dict(target=dict(kind="StatefulSet", name="evolution-postgres"), cpu_utilization=85, allow_over_100=True),
    dict(min_replicas=None, max_replicas=None, capacity=dict(peak_rate=2500, per_pod_rate=50, headroom_percent=15)),
    dict(scale_down=None, behavior={"scaleDown": {"stabilizationWindowSeconds": 600, "selectPolicy": "Disabled"}}),
    dict(labels={"app.kubernetes.io/part-of": "ifinu"}, scale_up=dict(pods=4, period=15, select="max")),
], ids=["cpu-only", "statefulset", "capacity", "raw-behavior", "labels"])
def test_dest_outputs_pass_kubernetes_validate_cli(tmp_path, extra):
    path = tmp_path / "hpa.yaml"
    result = run(dest_args(path, **extra))
    assert result["changed"], result.get("msg")
    validate_file(path)
    assert not run(dest_args(path, **extra))["changed"]


# =============================================================================== through ansible
PLAYBOOK_DEST = """
- name: hpa_tune GitOps mode, four-step idempotence
  hosts: localhost
  gather_facts: false
  vars:
    hpa_args:
      name: evolution-api-hpa
      namespace: ifinu-production
      target: {name: evolution-api}
      min: 2
      max: 20
      cpu: 70
      memory: 80
      scale_up: {percent: 50, pods: 2, period: 60, select: max, stabilization: 0}
      scale_down: {percent: 10, pods: 1, period: 60, select: min, stabilization: 300}
      dest: "{{ out_file }}"
  tasks:
    - name: Check mode predicts a change
      opsdeck.stack.hpa_tune: "{{ hpa_args }}"
      check_mode: true
      register: step1
    - name: Apply
      opsdeck.stack.hpa_tune: "{{ hpa_args }}"
      register: step2
    - name: Check mode predicts nothing
      opsdeck.stack.hpa_tune: "{{ hpa_args }}"
      check_mode: true
      register: step3
    - name: Apply again
      opsdeck.stack.hpa_tune: "{{ hpa_args }}"
      register: step4
    - name: Results
      ansible.builtin.assert:
        that:
          - step1 is changed
          - step2 is changed
          - step3 is not changed
          - step4 is not changed
          - step4.preview.scale_up.next_replicas == 4
          - step1.diff.after | trim == lookup('ansible.builtin.file', out_file) | trim
"""


def ansible_env():
    env = dict(os.environ)
    env.update(ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PYTHONPATH=COLLECTIONS,
               ANSIBLE_LOCAL_TEMP="/tmp/.ansible-hpa-tune-tests")
    env.pop("KUBECONFIG", None)
    return env


def playbook(tmp_path, text, *extra):
    book = tmp_path / "play.yml"
    book.write_text(text)
    cmd = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local",
           "-e", "ansible_python_interpreter=%s" % sys.executable, str(book)] + list(extra)
    return subprocess.run(cmd, capture_output=True, text=True, env=ansible_env(), timeout=120, check=False)


def test_ansible_playbook_dest_mode_check_diff_idempotence(tmp_path):
    out = tmp_path / "gitops" / "hpa.yaml"
    out.parent.mkdir()
    proc = playbook(tmp_path, PLAYBOOK_DEST, "--diff", "-e", "out_file=%s" % out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok=5" in proc.stdout and "changed=2" in proc.stdout and "failed=0" in proc.stdout
    # --diff printed the file diff of the check-mode run and of the apply, nothing afterwards
    assert proc.stdout.count("+++ after: %s" % out) == 2
    assert "+    name: evolution-api" in proc.stdout and "+  maxReplicas: 20" in proc.stdout
    with open(FIXTURE) as handle:
        assert yaml.safe_load(out.read_text()) == yaml.safe_load(handle)
    validate_file_with_cli(out)


PLAYBOOK_API = """
- name: hpa_tune against the fake API through ansible
  hosts: localhost
  gather_facts: false
  module_defaults:
    opsdeck.stack.hpa_tune:
      host: "{{ api_host }}"
      api_key: "{{ api_token }}"
  tasks:
    - name: Create
      opsdeck.stack.hpa_tune:
        name: evolution-api-hpa
        namespace: ifinu-production
        target: {name: evolution-api}
        min_replicas: 2
        max_replicas: 20
        cpu_utilization: 70
        memory_utilization: 80
        scale_up: {percent: 50, pods: 2, period: 60, select: max, stabilization: 0}
        scale_down: {percent: 10, pods: 1, period: 60, select: min, stabilization: 300}
      register: created
    - name: Refuse nonsense
      opsdeck.stack.hpa_tune:
        name: evolution-api-hpa
        namespace: ifinu-production
        min_replicas: 30
        max_replicas: 3
        scale_down: {percent: 10, period: 0, select: sometimes}
      register: refused
      ignore_errors: true
    - name: Results
      ansible.builtin.assert:
        that:
          - created is changed
          - refused is failed
          - refused.violations | length == 3
          - created.preview.scale_up.summary is search('adds max')
"""


def test_ansible_playbook_against_fake_api(tmp_path, fake_api):
    proc = playbook(tmp_path, PLAYBOOK_API, "-e", "api_host=%s" % fake_api.url, "-e", "api_token=%s" % TOKEN)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok=3" in proc.stdout and "failed=0" in proc.stdout
    assert "hpa_tune refused the parameters, nothing was changed (3 problems)" in proc.stdout
    assert TOKEN not in proc.stdout
    assert (NS, "evolution-api-hpa") in fake_api.hpas


# =============================================================================== documentation
def test_ansible_doc_renders_and_matches_the_argument_spec():
    env = ansible_env()
    doc = os.path.join(VENV_BIN, "ansible-doc")
    proc = subprocess.run([doc, "opsdeck.stack.hpa_tune"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "EXAMPLES" in proc.stdout and "RETURN VALUES" in proc.stdout and "ATTRIBUTES" in proc.stdout.upper()
    proc = subprocess.run([doc, "--json", "opsdeck.stack.hpa_tune"], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    documented = json.loads(proc.stdout)["opsdeck.stack.hpa_tune"]["doc"]
    spec = hpa_tune.argument_spec()
    assert set(documented["options"]) == set(spec)
    for name, option in spec.items():
        doc_opt = documented["options"][name]
        assert doc_opt.get("type", "str") == option.get("type", "str"), name
        assert sorted(doc_opt.get("aliases", [])) == sorted(option.get("aliases", [])), name
        assert doc_opt.get("default") == option.get("default"), name
        for sub, sub_spec in (option.get("options") or {}).items():
            sub_doc = doc_opt["suboptions"][sub]
            assert sub_doc.get("type", "str") == sub_spec.get("type", "str"), (name, sub)
            assert sub_doc.get("default") == sub_spec.get("default"), (name, sub)
        assert set(doc_opt.get("suboptions", {})) == set(option.get("options") or {}), name
    assert documented["attributes"]["check_mode"]["support"] == "full"
