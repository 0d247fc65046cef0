# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rendering that follows the server, against a real API server.

Runs only when KUBECONFIG points at a cluster (scripts/test.sh starts the local one of
scripts/k8s-local.sh, Kubernetes 1.20 built from Debian's source); otherwise every test is
reported as skipped with the reason "not run: KUBECONFIG not set" (never as passed).

Every manifest of every inventory (dev, staging, prod, with monitoring and the ELK where
enabled) is adapted to the capabilities read from the server (opsdeck.stack.k8s_capabilities'
discovery) and given to the server as a server-side apply with dryRun=All, in namespaces
made for the test: the server must accept every one. The same manifests unadapted must
not all be accepted (otherwise this test would show nothing), and an adapted
NetworkPolicy applied twice keeps its generation (idempotent).
"""

from __future__ import annotations

import copy
import os
import sys
import uuid

import pytest

pytestmark = pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="not run: KUBECONFIG not set")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "unit"))
from test_kubernetes_policy import inventory_model, obs_files  # noqa: E402  (the vault stand-in)

APPLY = "application/apply-patch+yaml"
MANAGER = "opsdeck-capabilities-test"


@pytest.fixture(scope="module")
def server():
    from ansible_collections.opsdeck.stack.plugins.module_utils.clients.kube import client_from_params
    from ansible_collections.opsdeck.stack.plugins.module_utils.k8s.capabilities import discover

    client = client_from_params({})
    caps = discover(client.request)
    plurals = {}  # (apiVersion, kind) -> (plural, namespaced), read on first use
    suffix = uuid.uuid4().hex[:6]
    made = []
    try:
        yield {"client": client, "caps": caps, "plurals": plurals, "suffix": suffix, "made": made}
    finally:
        for name in made:
            try:
                client.request("DELETE", "/api/v1/namespaces/%s" % name)
            except Exception:  # pylint: disable=broad-except  # best-effort cleanup
                pass


def resource_path(server, obj, name=True):
    """REST path of ``obj`` (the plural read from the server's resource list)."""
    api_version, kind = obj["apiVersion"], obj["kind"]
    key = (api_version, kind)
    if key not in server["plurals"]:
        prefix = "/api/" if api_version == "v1" else "/apis/"
        listing = server["client"].get_or_none(prefix + api_version) or {}
        for resource in listing.get("resources") or []:
            if "/" not in resource["name"]:
                server["plurals"][(api_version, resource["kind"])] = (resource["name"], resource["namespaced"])
    plural, namespaced = server["plurals"].get(key, (None, None))
    if plural is None:
        return None
    prefix = "/api/v1" if api_version == "v1" else "/apis/" + api_version
    if namespaced:
        prefix += "/namespaces/%s" % obj["metadata"]["namespace"]
    return "%s/%s%s" % (prefix, plural, "/" + obj["metadata"]["name"] if name else "")


def moved(manifests, suffix):
    """The manifests in namespaces of their own (<namespace>-<suffix>)."""
    out = []
    for item in copy.deepcopy(manifests):
        meta = item["metadata"]
        if item["kind"] == "Namespace":
            meta["name"] = "%s-%s" % (meta["name"], suffix)
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        elif meta.get("namespace"):
            meta["namespace"] = "%s-%s" % (meta["namespace"], suffix)
        out.append(item)
    return out


def apply(server, obj, dry_run):
    from ansible_collections.opsdeck.stack.plugins.module_utils.clients.kube import K8sError

    path = resource_path(server, obj)
    if path is None:
        return "%s %s is not served" % (obj["apiVersion"], obj["kind"])
    query = {"fieldManager": MANAGER, "force": "true"}
    if dry_run:
        query["dryRun"] = "All"
    try:
        return server["client"].request("PATCH", path, query=query, body=obj, content_type=APPLY)
    except K8sError as exc:
        return str(exc)


def rendered(env):
    from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import manifests as _kubernetes

    model, secrets = inventory_model(env)
    return _kubernetes.render(model, secrets, htpasswd="ops:$2y$05$capabilitieslivecapabil",
                              **obs_files(model, secrets))


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_the_server_accepts_every_adapted_manifest(server, env):
    from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import capabilities as _caps

    manifests = moved(rendered(env), "%s-%s" % (env, server["suffix"]))
    namespaces = [m for m in manifests if m["kind"] == "Namespace"]
    for namespace in namespaces:
        server["made"].append(namespace["metadata"]["name"])
        created = apply(server, namespace, dry_run=False)
        assert isinstance(created, dict), created
    adapted = _caps.adapt(manifests, server["caps"])
    refused = []
    for item in adapted:
        if item["kind"] == "Namespace":
            continue
        answer = apply(server, item, dry_run=True)
        if not isinstance(answer, dict):
            refused.append("%s %s/%s: %s" % (item["apiVersion"], item["kind"], item["metadata"]["name"], answer))
    assert refused == [], "\n".join(refused)

    if not _caps.explain(manifests, server["caps"]):
        return  # a current server: nothing had to change
    unadapted = [apply(server, item, dry_run=True) for item in manifests if item["kind"] != "Namespace"]
    assert [a for a in unadapted if not isinstance(a, dict)], "the server took the manifests as rendered"


def test_an_adapted_network_policy_applied_twice_keeps_its_generation(server):
    from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import capabilities as _caps

    manifests = moved(rendered("dev"), "np-%s" % server["suffix"])
    namespace = [m for m in manifests if m["kind"] == "Namespace"][0]
    server["made"].append(namespace["metadata"]["name"])
    assert isinstance(apply(server, namespace, dry_run=False), dict)
    policies = [m for m in manifests if m["kind"] == "NetworkPolicy"
                and m["metadata"]["namespace"] == namespace["metadata"]["name"]
                and ([] in (m["spec"].get("ingress"), m["spec"].get("egress")))]
    assert policies, "dev renders a NetworkPolicy with an empty rule list"
    policy = _caps.adapt(policies[:1], server["caps"])[0]
    first = apply(server, policy, dry_run=False)
    second = apply(server, policy, dry_run=False)
    assert isinstance(first, dict) and isinstance(second, dict), (first, second)
    assert second["metadata"]["generation"] == first["metadata"]["generation"]
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    if _caps.parse_version(server["caps"]["version"]) == (1, 20):
        # why: 1.20 drops the empty list and counts every apply of it as a new generation
        generations = [apply(server, policies[0], dry_run=False)["metadata"]["generation"] for _attempt in range(2)]
        assert generations[1] == generations[0] + 1
