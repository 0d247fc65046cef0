# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The local cluster of scripts/k8s-local.sh does what the stack's pods need of a cluster.

Runs only when KUBECONFIG is set and OPSDECK_TEST_BUSYBOX_IMAGE names a busybox image the
cluster has (`scripts/k8s-local.sh env` sets both; scripts/test.sh exports them); otherwise
reported as skipped ("not run: ...").

A StatefulSet of two busybox httpd pods (non-root) behind a headless Service, with a claim
each, and a ClusterIP Service in front: the claims bind (the default StorageClass, the
agent's hostPath volumes), a pod resolves `web`, `db-1.db` and the full
`db-0.db.<namespace>.svc.cluster.local` and reaches them (cluster DNS, kube-proxy), an
unknown cluster name does not resolve, a restarted pod finds its data again, and the
volumes go away with the namespace.
"""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest

pytestmark = [
    pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="not run: KUBECONFIG not set"),
    pytest.mark.skipif(not os.environ.get("OPSDECK_TEST_BUSYBOX_IMAGE"),
                       reason="not run: OPSDECK_TEST_BUSYBOX_IMAGE not set (scripts/k8s-local.sh env)"),
]

IMAGE = os.environ.get("OPSDECK_TEST_BUSYBOX_IMAGE", "")
SECURITY = {"runAsUser": 65534, "runAsGroup": 65534, "runAsNonRoot": True}


def wait(what, seconds, check):
    deadline = time.time() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.time() < deadline, "timed out after %ds waiting for %s" % (seconds, what)
        time.sleep(2)


@pytest.fixture(scope="module")
def cluster():
    from ansible_collections.opsdeck.stack.plugins.module_utils.clients.kube import client_from_params

    client = client_from_params({})
    namespace = "opsdeck-local-%s" % uuid.uuid4().hex[:6]
    client.request("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace",
                                                       "metadata": {"name": namespace}})
    try:
        yield client, namespace
    finally:
        try:
            client.request("DELETE", "/api/v1/namespaces/%s" % namespace)
        except Exception:  # pylint: disable=broad-except  # best-effort cleanup
            pass


def create(client, namespace, obj):
    api = "/api/v1" if obj["apiVersion"] == "v1" else "/apis/" + obj["apiVersion"]
    plural = {"Service": "services", "StatefulSet": "statefulsets", "Job": "jobs"}[obj["kind"]]
    obj["metadata"]["namespace"] = namespace
    return client.request("POST", "%s/namespaces/%s/%s" % (api, namespace, plural), body=obj)


def stateful_set():
    script = "echo boot >> /data/boots; hostname > /data/host; exec httpd -f -p 8080 -h /data"
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"}, "spec": {
        "serviceName": "db", "replicas": 2, "selector": {"matchLabels": {"app": "db"}},
        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
            "terminationGracePeriodSeconds": 1, "securityContext": SECURITY,
            "containers": [{"name": "httpd", "image": IMAGE, "imagePullPolicy": "Never",
                            "command": ["sh", "-c", script],
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                            "readinessProbe": {"httpGet": {"path": "/host", "port": 8080}, "periodSeconds": 2},
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}}}]}}


def probe_job(name, namespace):
    """A pod that fetches by name (busybox nc: Debian's static busybox wget crashes) and prints JSON."""
    fetch = "printf 'GET %s HTTP/1.0\\r\\n\\r\\n' | nc -w 5 %s %s 2>/dev/null | tail -n 1 | tr -d '\\r\\n'"
    lookup = "nslookup %s >/dev/null 2>&1 && echo resolved || echo unknown"
    fields = [
        ("web", fetch % ("/host", "web", 80)),
        ("db1", fetch % ("/host", "db-1.db", 8080)),
        ("fqdn", fetch % ("/host", "db-0.db.%s.svc.cluster.local" % namespace, 8080)),
        ("boots", (fetch % ("/boots", "db-0.db", 8080)).replace("tail -n 1 | tr -d '\\r\\n'", "grep -c '^boot'")),
        ("known", lookup % ("web.%s.svc.cluster.local" % namespace)),
        ("unknown", lookup % ("no-such-service.%s.svc.cluster.local" % namespace)),
    ]
    script = "printf '{%s}\\n' %s" % (", ".join('"%s": "%%s"' % key for key, _cmd in fields),
                                      " ".join('"$(%s)"' % cmd for _key, cmd in fields))
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": {
        "backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "securityContext": SECURITY,
            "containers": [{"name": "probe", "image": IMAGE, "imagePullPolicy": "Never",
                            "command": ["sh", "-c", script]}]}}}}


def probe(client, namespace, name):
    create(client, namespace, probe_job(name, namespace))
    path = "/apis/batch/v1/namespaces/%s/jobs/%s" % (namespace, name)

    def finished():
        status = client.request("GET", path).get("status") or {}
        return status if status.get("succeeded") or status.get("failed") else None
    status = wait("job %s" % name, 120, finished)
    assert status.get("succeeded") == 1, status
    pods = client.request("GET", "/api/v1/namespaces/%s/pods" % namespace,
                          query={"labelSelector": "job-name=%s" % name})["items"]
    log = client.request("GET", "/api/v1/namespaces/%s/pods/%s/log" % (namespace, pods[0]["metadata"]["name"]))
    return log if isinstance(log, dict) else json.loads(log)


def test_names_resolve_claims_bind_and_data_survives_a_restart(cluster):
    client, namespace = cluster
    create(client, namespace, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"}, "spec": {
        "clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 8080, "protocol": "TCP"}]}})
    create(client, namespace, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {
        "selector": {"app": "db"}, "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
    create(client, namespace, stateful_set())
    sts = "/apis/apps/v1/namespaces/%s/statefulsets/db" % namespace
    wait("2 ready db pods", 240, lambda: (client.request("GET", sts).get("status") or {}).get("readyReplicas") == 2)

    claims = client.request("GET", "/api/v1/namespaces/%s/persistentvolumeclaims" % namespace)["items"]
    assert sorted(c["metadata"]["name"] for c in claims) == ["data-db-0", "data-db-1"]
    assert all(c["status"]["phase"] == "Bound" and c["spec"]["storageClassName"] == "local-hostpath" for c in claims)
    volumes = [c["spec"]["volumeName"] for c in claims]

    first = probe(client, namespace, "probe-1")
    assert first["web"] in ("db-0", "db-1"), first  # the ClusterIP Service, through kube-proxy
    assert first["db1"] == "db-1" and first["fqdn"] == "db-0", first  # StatefulSet pod names
    assert first["boots"] == "1", first  # the claim, written by the non-root pod
    assert first["known"] == "resolved" and first["unknown"] == "unknown", first

    pod_path = "/api/v1/namespaces/%s/pods/db-0" % namespace
    old_uid = client.request("GET", pod_path)["metadata"]["uid"]
    client.request("DELETE", pod_path)

    def new_pod_serving():
        pod = client.get_or_none(pod_path) or {}
        statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
        if pod.get("metadata", {}).get("uid") in (None, old_uid) or not statuses[0].get("ready"):
            return False
        endpoints = client.request("GET", "/api/v1/namespaces/%s/endpoints/db" % namespace)
        return pod["status"]["podIP"] in [a["ip"] for s in endpoints.get("subsets") or [] for a in s.get("addresses") or []]
    wait("a new db-0 ready and in the endpoints", 180, new_pod_serving)
    time.sleep(3)  # the agent writes the DNS records from the API every second
    second = probe(client, namespace, "probe-2")
    assert second["boots"] == "2", second  # the same volume, mounted again

    client.request("DELETE", "/api/v1/namespaces/%s" % namespace)
    wait("the namespace's volumes deleted", 240,
         lambda: not [v for v in volumes if client.get_or_none("/api/v1/persistentvolumes/%s" % v)])
