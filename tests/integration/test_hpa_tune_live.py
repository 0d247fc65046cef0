# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""opsdeck.stack.hpa_tune against a real Kubernetes cluster.

Runs only when KUBECONFIG points at a cluster (scripts/test.sh starts the local one of
scripts/k8s-local.sh: Kubernetes 1.20, which serves autoscaling/v2beta2 and not v2);
otherwise every test is reported as skipped with the reason "not run: KUBECONFIG not set"
(never as passed). It creates a throw-away namespace with a pause Deployment, drives the
module through ansible-playbook (check -> apply -> check -> apply, tune, preflight
refusal, absent) in the HPA version the server serves, and deletes the namespace.
`wait: true` is exercised only when the cluster serves metrics.k8s.io (the local cluster
has no metrics-server).

Run with PYTHONPATH and ANSIBLE_COLLECTIONS_PATH set to build/collections (`make link`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

pytestmark = pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="not run: KUBECONFIG not set")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
COLLECTIONS = os.path.join(ROOT, "build", "collections")
VENV_BIN = os.path.dirname(sys.executable)
HPA = "evolution-api-hpa"
IMAGE = os.environ.get("OPSDECK_TEST_PAUSE_IMAGE", "registry.k8s.io/pause:3.9")


def deployment(namespace, name, with_requests=True):
    resources = {"requests": {"cpu": "10m", "memory": "16Mi"}} if with_requests else {}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "pause", "image": IMAGE, "resources": resources}]}}},
    }


@pytest.fixture(scope="module")
def cluster():
    from ansible_collections.opsdeck.stack.plugins.module_utils.clients.kube import K8sApiError, client_from_params

    client = client_from_params({})
    namespace = "opsdeck-hpa-%s" % uuid.uuid4().hex[:8]
    client.request("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace",
                                                       "metadata": {"name": namespace}})
    try:
        client.request("POST", "/apis/apps/v1/namespaces/%s/deployments" % namespace,
                       body=deployment(namespace, "evolution-api"))
        client.request("POST", "/apis/apps/v1/namespaces/%s/deployments" % namespace,
                       body=deployment(namespace, "no-requests", with_requests=False))
        try:
            client.request("GET", "/apis/metrics.k8s.io/v1beta1")
            metrics = True
        except K8sApiError:
            metrics = False
        groups = client.request("GET", "/apis")["groups"]
        served = [v["groupVersion"] for g in groups if g["name"] == "autoscaling" for v in g["versions"]]
        yield client, namespace, metrics, served
    finally:
        client.request("DELETE", "/api/v1/namespaces/%s" % namespace)


def playbook(tmp_path, tasks):
    book = tmp_path / "live.yml"
    book.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
               PYTHONPATH=COLLECTIONS, ANSIBLE_NOCOLOR="1")
    cmd = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", "--diff",
           "-e", "ansible_python_interpreter=%s" % sys.executable, str(book)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)


def seed_task(namespace, **extra):
    args = dict(name=HPA, namespace=namespace, target={"name": "evolution-api"}, min_replicas=2, max_replicas=20,
                cpu_utilization=70, memory_utilization=80,
                scale_up={"percent": 50, "pods": 2, "period": 60, "select": "max", "stabilization": 0},
                scale_down={"percent": 10, "pods": 1, "period": 60, "select": "min", "stabilization": 300})
    args.update(extra)
    return args


def test_live_four_step_idempotence_tune_and_delete(tmp_path, cluster):
    client, namespace, metrics, served = cluster
    version = "autoscaling/v2" if "autoscaling/v2" in served else "autoscaling/v2beta2"
    preflight = metrics  # without metrics-server the preflight rightly refuses
    args = seed_task(namespace, preflight=preflight)
    tasks = [
        {"name": "check", "opsdeck.stack.hpa_tune": args, "check_mode": True, "register": "s1"},
        {"name": "apply", "opsdeck.stack.hpa_tune": dict(args, wait=metrics, wait_timeout=300), "register": "s2"},
        {"name": "check again", "opsdeck.stack.hpa_tune": args, "check_mode": True, "register": "s3"},
        {"name": "apply again", "opsdeck.stack.hpa_tune": args, "register": "s4"},
        {"name": "tune", "opsdeck.stack.hpa_tune": {"name": HPA, "namespace": namespace, "max_replicas": 30,
                                                    "preflight": preflight}, "register": "s5"},
        {"name": "remove", "opsdeck.stack.hpa_tune": {"name": HPA, "namespace": namespace, "state": "absent"},
         "register": "s6"},
        {"name": "remove again", "opsdeck.stack.hpa_tune": {"name": HPA, "namespace": namespace, "state": "absent"},
         "register": "s7"},
        {"ansible.builtin.assert": {"that": [
            "s1 is changed", "s1.dry_run", "s2 is changed", "s3 is not changed", "s4 is not changed",
            "s5 is changed", "s6 is changed", "s7 is not changed",
            "s4.preview.scale_up.next_replicas == 4",
            "s2.api_version == '%s' and s2.hpa.apiVersion == '%s'" % (version, version),
            "s2.hpa.spec.maxReplicas == 20 and s2.hpa.spec.behavior.scaleDown.stabilizationWindowSeconds == 300",
            "s5.hpa.spec.maxReplicas == 30 and s5.hpa.spec.minReplicas == 2",
            "'maxReplicas: 30' in s5.diff.after and 'maxReplicas: 20' in s5.diff.before",
        ]}},
    ]
    proc = playbook(tmp_path, tasks)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    path = "/apis/%s/namespaces/%s/horizontalpodautoscalers/%s" % (version, namespace, HPA)
    assert client.get_or_none(path) is None
    assert client.get_or_none("/apis/apps/v1/namespaces/%s/deployments/evolution-api" % namespace) is not None


def test_live_preflight_names_containers_without_requests(tmp_path, cluster):
    _client, namespace, _metrics, _served = cluster
    tasks = [
        {"opsdeck.stack.hpa_tune": seed_task(namespace, name="no-requests-hpa", target={"name": "no-requests"}),
         "register": "r", "ignore_errors": True},
        {"ansible.builtin.assert": {"that": [
            "r is failed",
            "'container pause of Deployment %s/no-requests has no cpu request' in r.msg" % namespace,
        ]}},
    ]
    proc = playbook(tmp_path, tasks)
    assert proc.returncode == 0, proc.stdout + proc.stderr
