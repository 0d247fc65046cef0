"""Rendering that follows the server: the manifests adapted to what a Kubernetes version serves.

Every inventory (dev, staging, prod, with monitoring and the ELK where enabled) and the
renderer's edge cases are adapted for 1.20 and validated strictly against 1.20's own
OpenAPI document (kept beside the binaries scripts/k8s-local.sh builds from Debian's source:
kubernetes-validate has no schema older than 1.25), and for 1.25 and 1.33 with
kubernetes-validate --strict. tests/integration/test_kubernetes_capabilities_live.py applies
the same manifests to the real 1.20 API server.
"""

import copy
import os
import sys

import kubernetes_validate
import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.opsdeck.stack.plugins.filter.kubernetes import (
    kubernetes_adapt, kubernetes_adaptations, kubernetes_capabilities)
from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import capabilities as _caps
from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import manifests as _kubernetes
from k8s_support import by
from openapi_strict import Schema, openapi_path

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
from test_kubernetes_policy import inventory_model, obs_files  # noqa: E402  (the vault stand-in)
import test_kubernetes as _cases  # noqa: E402  (the renderer's edge cases)

ENVS = ("dev", "staging", "prod")


def rendered(env):
    if env in ENVS:
        model, secrets = inventory_model(env)
        return _kubernetes.render(model, secrets, htpasswd="ops:$2y$05$capabilitiescapabilitie",
                                  **obs_files(model, secrets))
    return _cases.CASES[env]()


CASES = ENVS + ("edge", "no-proxy")


@pytest.fixture(scope="module", params=CASES)
def case(request):
    return request.param, rendered(request.param)


@pytest.fixture(scope="module")
def schema_1_20():
    path = openapi_path()
    if path is None:
        pytest.skip("not run: no OpenAPI document of Kubernetes 1.20 here (scripts/k8s-local.sh build keeps it)")
    schema = Schema(path)
    assert ("autoscaling/v2beta2", "HorizontalPodAutoscaler") in schema.by_gvk
    assert ("autoscaling/v2", "HorizontalPodAutoscaler") not in schema.by_gvk  # it is 1.20's
    return schema


# The API discovery of the real 1.20.2 server for the groups that matter here (what
# discover() reads: /version, /api, /apis, then each group version's resources).
DISCOVERY_1_20 = {
    "/version": {"major": "1", "minor": "20", "gitVersion": "v1.20.2"},
    "/api": {"versions": ["v1"]},
    "/apis": {"groups": [
        {"name": "apps", "versions": [{"groupVersion": "apps/v1"}]},
        {"name": "autoscaling", "versions": [{"groupVersion": "autoscaling/v1"}, {"groupVersion": "autoscaling/v2beta1"},
                                             {"groupVersion": "autoscaling/v2beta2"}]},
        {"name": "batch", "versions": [{"groupVersion": "batch/v1"}, {"groupVersion": "batch/v1beta1"}]},
        {"name": "policy", "versions": [{"groupVersion": "policy/v1beta1"}]},
        {"name": "networking.k8s.io", "versions": [{"groupVersion": "networking.k8s.io/v1"}]},
    ]},
    "/api/v1": {"resources": [{"name": "services", "kind": "Service"}, {"name": "pods", "kind": "Pod"},
                              {"name": "pods/log", "kind": "Pod"}]},
    "/apis/apps/v1": {"resources": [{"name": "deployments", "kind": "Deployment"},
                                    {"name": "deployments/scale", "kind": "Scale"}]},
    "/apis/autoscaling/v1": {"resources": [{"name": "horizontalpodautoscalers", "kind": "HorizontalPodAutoscaler"}]},
    "/apis/autoscaling/v2beta1": {"resources": [{"name": "horizontalpodautoscalers",
                                                 "kind": "HorizontalPodAutoscaler"}]},
    "/apis/autoscaling/v2beta2": {"resources": [{"name": "horizontalpodautoscalers",
                                                 "kind": "HorizontalPodAutoscaler"}]},
    "/apis/batch/v1": {"resources": [{"name": "jobs", "kind": "Job"}]},
    "/apis/batch/v1beta1": {"resources": [{"name": "cronjobs", "kind": "CronJob"}]},
    "/apis/policy/v1beta1": {"resources": [{"name": "poddisruptionbudgets", "kind": "PodDisruptionBudget"}]},
    "/apis/networking.k8s.io/v1": {"resources": [{"name": "ingresses", "kind": "Ingress"},
                                                 {"name": "networkpolicies", "kind": "NetworkPolicy"}]},
}


def discovered_1_20():
    return _caps.discover(lambda method, path: DISCOVERY_1_20[path])


def kinds(manifests):
    return {(m["apiVersion"], m["kind"]) for m in manifests}


# ------------------------------------------------------------------ strict validation
def test_adapted_for_1_20_validates_against_1_20s_own_schema(case, schema_1_20):
    name, manifests = case
    if name in ENVS:  # what the inventories render as it is does not pass: the check bites
        assert [e for m in manifests for e in schema_1_20.errors(m)]
    for caps in (_caps.for_version("1.20"), discovered_1_20()):
        errors = ["%s/%s: %s" % (m["kind"], m["metadata"]["name"], e)
                  for m in _caps.adapt(manifests, caps) for e in schema_1_20.errors(m)]
        assert errors == [], name + ":\n" + "\n".join(errors)


@pytest.mark.parametrize("version", ["1.25.0", "1.33.0"])
def test_adapted_for_1_25_and_1_33_validates_strictly(case, version):
    name, manifests = case
    errors = []
    for item in _caps.adapt(manifests, _caps.for_version(version)):
        try:
            kubernetes_validate.validate(item, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append("%s/%s: %s" % (item["kind"], item["metadata"]["name"], str(exc).splitlines()[0]))
    assert errors == [], name + ":\n" + "\n".join(errors)


# ------------------------------------------------------------------ what changes, and what does not
def test_prod_on_1_20_gets_the_served_versions_and_loses_only_what_1_20_lacks():
    manifests = rendered("prod")
    adapted = _caps.adapt(manifests, discovered_1_20())
    assert len(adapted) == len(manifests)
    assert ("autoscaling/v2beta2", "HorizontalPodAutoscaler") in kinds(adapted)
    assert ("policy/v1beta1", "PodDisruptionBudget") in kinds(adapted)
    assert not {("autoscaling/v2", "HorizontalPodAutoscaler"), ("policy/v1", "PodDisruptionBudget")} & kinds(adapted)
    for before, after in zip(manifests, adapted):
        if before["kind"] == "HorizontalPodAutoscaler":
            assert after["spec"] == before["spec"]  # v2beta2 has the same fields (behavior too)
        elif before["kind"] == "PodDisruptionBudget":
            assert "unhealthyPodEvictionPolicy" not in after["spec"]
            assert after["spec"]["maxUnavailable"] == before["spec"]["maxUnavailable"]
        elif before["kind"] == "StatefulSet":
            assert "persistentVolumeClaimRetentionPolicy" not in after["spec"]
            rest = {k: v for k, v in before["spec"].items() if k != "persistentVolumeClaimRetentionPolicy"}
            assert after["spec"] == rest
        elif before["kind"] == "Namespace":
            labels = after["metadata"]["labels"]
            assert not [k for k in labels if k.startswith("pod-security.kubernetes.io/")]
            assert labels["kubernetes.io/metadata.name"] == after["metadata"]["name"]  # 1.20 does not set it
        elif before["kind"] == "NetworkPolicy":
            assert after["spec"]["policyTypes"] == before["spec"]["policyTypes"]
            for key in ("ingress", "egress"):
                assert after["spec"].get(key, []) == before["spec"].get(key, [])
                assert after["spec"].get(key) != []
        else:
            assert after == before, before["kind"]


def test_explain_names_every_change_and_no_value():
    manifests = rendered("prod")
    notes = _caps.explain(manifests, _caps.for_version("1.20"))
    text = "\n".join(notes)
    hpas = by(manifests, "HorizontalPodAutoscaler")
    assert len([n for n in notes if "autoscaling/v2beta2 instead of autoscaling/v2" in n]) == len(hpas)
    assert len([n for n in notes if "persistentVolumeClaimRetentionPolicy dropped" in n]) == len(
        by(manifests, "StatefulSet"))
    assert "Namespace shop: Pod Security labels dropped (no Pod Security Admission before 1.23" in text
    assert "policy-scan-" not in text  # no secret value (the stand-ins start with that)
    assert _caps.explain(manifests, _caps.for_version("1.33")) == []


def test_current_releases_get_only_the_version_independent_fixes():
    manifests = rendered("prod")
    plain = _caps.adapt(manifests)
    assert _caps.adapt(manifests, _caps.for_version("1.33")) == plain
    assert kinds(plain) == kinds(manifests)
    policies = [m for m in plain if m["kind"] == "NetworkPolicy"]
    assert policies and all(m["spec"].get(k) != [] for m in policies for k in ("ingress", "egress"))
    changed = [(a["kind"], a["metadata"]["name"]) for a, b in zip(plain, manifests) if a != b]
    assert changed and all(kind == "NetworkPolicy" for kind, _name in changed)
    assert manifests == rendered("prod")  # the input is not modified


def test_protocols_are_filled_in_for_server_side_apply():
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "n"},
               "spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "n"},
                  "spec": {"template": {"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]}}}}
    out = _caps.adapt([service, deployment])
    assert [p["protocol"] for p in out[0]["spec"]["ports"]] == ["TCP", "UDP"]
    assert out[1]["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"] == "TCP"


def test_cronjob_is_batch_v1beta1_before_1_21_and_its_time_zone_goes():
    cron = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "export", "namespace": "n"},
            "spec": {"schedule": "0 1 * * *", "timeZone": "Etc/UTC", "jobTemplate": {"spec": {"template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i:1"}]}}}}}}
    for caps in (_caps.for_version("1.20"), discovered_1_20()):
        out = _caps.adapt([cron], caps)[0]
        assert out["apiVersion"] == "batch/v1beta1" and "timeZone" not in out["spec"]
    out = _caps.adapt([cron], _caps.for_version("1.24"))[0]
    assert out["apiVersion"] == "batch/v1" and "timeZone" not in out["spec"]
    assert _caps.adapt([cron], _caps.for_version("1.27"))[0] == cron


def test_what_cannot_keep_its_meaning_is_refused_naming_the_object():
    grpc = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "grpc", "namespace": "shop"},
            "spec": {"template": {"spec": {"containers": [
                {"name": "c", "readinessProbe": {"grpc": {"port": 9000}}}]}}}}
    with pytest.raises(_caps.CapabilityError) as info:
        _caps.adapt([grpc], _caps.for_version("1.20"))
    assert "Deployment shop/grpc uses a gRPC probe, which Kubernetes 1.20 does not have (from 1.24)" in str(info.value)
    assert _caps.adapt([grpc], _caps.for_version("1.24")) == [grpc]
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "api", "namespace": "shop"}, "spec": {}}
    too_new = {"version": "1.30.0", "api_versions": ["v1", "autoscaling/v1", "autoscaling/v1/HorizontalPodAutoscaler"]}
    with pytest.raises(_caps.CapabilityError, match="HorizontalPodAutoscaler shop/api: the server serves none of "
                                                    "autoscaling/v2, autoscaling/v2beta2"):
        _caps.adapt([hpa], too_new)


# ------------------------------------------------------------------ capabilities
def test_capabilities_from_a_version_follow_the_release_history():
    old = _caps.for_version("v1.20.2")
    assert old["version"] == "1.20"
    assert _caps.serves(old, "autoscaling/v2beta2", "HorizontalPodAutoscaler")
    assert not _caps.serves(old, "autoscaling/v2", "HorizontalPodAutoscaler")
    assert not _caps.serves(old, "batch/v1", "CronJob") and _caps.serves(old, "batch/v1", "Job")
    assert not _caps.serves(old, "policy/v1", "PodDisruptionBudget")
    new = _caps.for_version("1.33")
    assert _caps.serves(new, "autoscaling/v2", "HorizontalPodAutoscaler")
    assert not _caps.serves(new, "autoscaling/v2beta2", "HorizontalPodAutoscaler")  # removed in 1.26
    assert _caps.serves(new, "batch/v1", "CronJob") and _caps.serves(new, "policy/v1", "PodDisruptionBudget")
    for bad in ("", "latest", "1", "2.0", "1.18"):
        with pytest.raises(ValueError):
            _caps.for_version(bad)


def test_discovered_capabilities_list_group_versions_and_kinds_as_helm_does():
    caps = discovered_1_20()
    assert caps["version"] == "1.20.2"
    assert "batch/v1/Job" in caps["api_versions"] and "batch/v1/CronJob" not in caps["api_versions"]
    assert "apps/v1/Scale" not in caps["api_versions"]  # subresources are not kinds of their own
    assert _caps.serves(caps, "batch/v1beta1", "CronJob") and not _caps.serves(caps, "batch/v1", "CronJob")
    info = {"apis": {"autoscaling/v2beta2": {"HorizontalPodAutoscaler": {}}, "v1": {"Service": {}}},
            "version": {"server": {"kubernetes": {"gitVersion": "v1.20.2"}}}}
    assert _caps.from_cluster_info(info) == {
        "version": "1.20.2", "api_versions": ["autoscaling/v2beta2", "autoscaling/v2beta2/HorizontalPodAutoscaler",
                                              "v1", "v1/Service"]}


def test_the_filters_take_a_version_a_server_reading_or_nothing():
    manifests = rendered("dev")
    assert kubernetes_capabilities("") is None and kubernetes_capabilities(None) is None
    assert kubernetes_capabilities("1.20") == _caps.for_version("1.20")
    caps = discovered_1_20()
    assert kubernetes_capabilities(caps) == caps
    assert kubernetes_adapt(manifests, "1.20") == _caps.adapt(manifests, _caps.for_version("1.20"))
    assert kubernetes_adapt(manifests, caps) == _caps.adapt(manifests, caps)
    assert kubernetes_adaptations(manifests, "") == []
    with pytest.raises(AnsibleFilterError, match=r"kubernetes_capabilities: 'one-twenty' is not a Kubernetes version"):
        kubernetes_adapt(manifests, "one-twenty")
    with pytest.raises(AnsibleFilterError, match="expected a version, or a dict with api_versions"):
        kubernetes_capabilities({"gitVersion": "v1.20.2"})
    grpc = copy.deepcopy(by(manifests, "Deployment")[0])
    grpc["spec"]["template"]["spec"]["containers"][0]["livenessProbe"] = {"grpc": {"port": 1}}
    with pytest.raises(AnsibleFilterError, match="kubernetes_adapt: the manifests cannot be applied to Kubernetes 1.20"):
        kubernetes_adaptations([grpc], "1.20")
