# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit and property tests of plugins/module_utils/k8s/hpa.py (pure HPA logic).

Run with PYTHONPATH=build/collections after `make link`.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import subprocess
import sys
from fractions import Fraction

import kubernetes_validate
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import hpa as _hpa

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "seed002_hpa.yaml")
K8S_VERSIONS = ("1.29.0", "1.33.0")

SEED = dict(
    name="evolution-api-hpa",
    namespace="ifinu-production",
    state="present",
    target=dict(kind="Deployment", name="evolution-api", api_version="apps/v1"),
    min_replicas=2,
    max_replicas=20,
    cpu_utilization=70,
    memory_utilization=80,
    scale_up=dict(percent=50, pods=2, period=60, select="max", stabilization=0),
    scale_down=dict(percent=10, pods=1, period=60, select="min", stabilization=300),
)


def render(params, live=None):
    assert _hpa.validate_params(params) == []
    desired, _derived = _hpa.build_desired(params)
    spec = _hpa.merge_spec((live or {}).get("spec"), desired)
    return _hpa.render_manifest(params["name"], params["namespace"], spec, desired.get("labels"), base=live)


def k8s_validate(manifest):
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(copy.deepcopy(manifest), version, strict=True)


def server_defaults(spec):
    """What kube-apiserver stores for an autoscaling/v2 spec (defaults.go), written
    independently of _hpa so the normaliser is tested against it, not against itself."""
    spec = copy.deepcopy(spec)
    spec.setdefault("minReplicas", 1)
    if not spec.get("metrics"):
        spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": 80}}}]
    behavior = spec.get("behavior")
    if behavior is not None:
        up = behavior.get("scaleUp") or {}
        up.setdefault("stabilizationWindowSeconds", 0)
        up.setdefault("selectPolicy", "Max")
        up.setdefault("policies", [{"type": "Pods", "value": 4, "periodSeconds": 15},
                                   {"type": "Percent", "value": 100, "periodSeconds": 15}])
        down = behavior.get("scaleDown") or {}
        down.setdefault("selectPolicy", "Max")
        down.setdefault("policies", [{"type": "Percent", "value": 100, "periodSeconds": 15}])
        spec["behavior"] = {"scaleUp": up, "scaleDown": down}
    return spec


# ----------------------------------------------------------------------------- golden
def test_seed002_friendly_keys_render_exactly_the_golden_manifest():
    with open(FIXTURE) as handle:
        golden = yaml.safe_load(handle)
    assert render(SEED) == golden


def test_golden_manifest_passes_kubernetes_validate_cli_strict():
    """The golden file passes the kubernetes-validate CLI itself (strict, 1.29 and 1.33)."""
    cli = os.path.join(os.path.dirname(sys.executable), "kubernetes-validate")
    for version in K8S_VERSIONS:
        proc = subprocess.run([cli, "--strict", "-k", version, FIXTURE], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "passed" in proc.stdout


def test_seed_preview_at_four_replicas():
    spec = render(SEED)["spec"]
    pv = _hpa.preview(spec, 4, "test")
    assert pv["scale_up"]["next_replicas"] == 6 and pv["scale_up"]["change"] == 2
    assert pv["scale_up"]["summary"] == "at 4 replicas the next scale-up adds max(+50 % = 2, +2 pods = 2) = 2 -> 6 replicas"
    assert pv["scale_down"]["next_replicas"] == 3 and pv["scale_down"]["change"] == 1
    assert pv["scale_down"]["summary"].startswith(
        "at 4 replicas the next scale-down removes min(-10 % = 1, -1 pod = 1) = 1 -> 3 replicas")
    assert "300 s stabilization window" in pv["scale_down"]["summary"]
    # ramps: up 2->4->6->9->14->20 one step per 60 s; down one pod a minute after 300 s
    assert pv["min_to_max"]["replicas"] == [2, 4, 6, 9, 14, 20]
    assert pv["min_to_max"]["seconds"] == 240
    assert pv["max_to_min"]["replicas"] == list(range(20, 1, -1))
    assert pv["max_to_min"]["seconds"] == 300 + 17 * 60


def test_preview_at_larger_counts_seed_policies():
    spec = render(SEED)["spec"]
    # at 10: up max(+50% -> 15, +2 -> 12) = 15; down min(-10% -> 9, -1 -> 9) = 9
    pv = _hpa.preview(spec, 10)
    assert (pv["scale_up"]["next_replicas"], pv["scale_down"]["next_replicas"]) == (15, 9)
    # at 18: up limited by max 20
    pv = _hpa.preview(spec, 18)
    assert pv["scale_up"]["next_replicas"] == 20
    assert "limited by max_replicas" in pv["scale_up"]["summary"]
    # at 20: -10 % -> 18, -1 -> 19; select Min keeps the smaller change -> 19
    pv = _hpa.preview(spec, 20)
    assert pv["scale_down"]["next_replicas"] == 19
    assert pv["scale_up"]["next_replicas"] == 20 and "already at max_replicas" in pv["scale_up"]["summary"]


def test_preview_matches_kubernetes_docs_scale_down_example():
    """k8s docs: Pods 4 + Percent 10 per 60 s, select Max; 80 replicas -> 72 -> 64 (10 %, rounded)."""
    spec = {"minReplicas": 1, "maxReplicas": 100, "scaleTargetRef": {"kind": "Deployment", "name": "x"},
            "behavior": {"scaleDown": {"policies": [{"type": "Pods", "value": 4, "periodSeconds": 60},
                                                    {"type": "Percent", "value": 10, "periodSeconds": 60}]}}}
    rules = _hpa.normalize_spec(spec)["behavior"]["scaleDown"]
    assert _hpa.step("down", 80, rules, 1, 100)[0] == 72
    assert _hpa.step("down", 72, rules, 1, 100)[0] == 64
    # below 40 replicas the Pods policy (4) is the bigger change
    assert _hpa.step("down", 30, rules, 1, 100)[0] == 26


def test_preview_with_kubernetes_default_behavior():
    spec = {"minReplicas": 1, "maxReplicas": 1000, "scaleTargetRef": {"kind": "Deployment", "name": "x"}}
    pv = _hpa.preview(spec, 3)
    assert pv["scale_up"]["next_replicas"] == 7  # max(+4 pods, +100 %)
    assert pv["scale_down"]["next_replicas"] == 1  # -100 % clamped at min
    assert pv["scale_down"]["stabilization_seconds"] == 300
    assert "controller default" in pv["scale_down"]["summary"]


def test_preview_disabled_and_zero_replicas():
    params = dict(SEED, scale_down=dict(select="disabled", period=60))
    spec = render(params)["spec"]
    pv = _hpa.preview(spec, 5)
    assert pv["scale_down"]["next_replicas"] == 5
    assert pv["scale_down"]["summary"] == "scaling down is disabled (selectPolicy: Disabled)"
    assert pv["max_to_min"]["replicas"] == [20]
    assert "0 replicas" in _hpa.preview(spec, 0)["note"]


# ----------------------------------------------------------------------------- validation
def test_every_violation_is_listed_at_once():
    params = dict(
        name="Bad_Name", namespace="ifinu-production",
        target=dict(kind="DaemonSet", name="api"),
        min_replicas=0, max_replicas=20,
        cpu_utilization=0, memory_utilization=150,
        scale_up=dict(percent=50, period=0, select="fastest", stabilization=0),
        scale_down=dict(percent=10, pods=1, period=1801, select="min", stabilization=3601),
        behavior={"scaleDown": {"selectPolicy": "Min"}, "scaleSideways": {}},
    )
    errors = _hpa.validate_params(params)
    expected_fragments = [
        "name: got 'Bad_Name'",
        "target.kind: got 'DaemonSet'; allowed Deployment or StatefulSet",
        "min_replicas: got 0; allowed an integer >= 1",
        "cpu_utilization: got 0; allowed an integer 1..100",
        "memory_utilization: got 150; allowed an integer 1..100",
        "allow_over_100: true",
        "scale_up.select: got 'fastest'",
        "scale_up.period: got 0; allowed an integer 1..1800 seconds",
        "scale_down.period: got 1801; allowed an integer 1..1800",
        "scale_down.stabilization: got 3601; allowed an integer 0..3600",
        "behavior.scaleSideways: unknown key",
        "scale_down and behavior.scaleDown: both given",
    ]
    joined = "\n".join(errors)
    for fragment in expected_fragments:
        assert fragment in joined, fragment
    assert len(errors) >= 11


def test_min_greater_than_max_and_capacity_sources_are_named():
    errors = _hpa.validate_params(dict(SEED, min_replicas=25))
    assert errors == ["min_replicas 25 (given) is greater than max_replicas 20 (given); allowed min_replicas <= max_replicas"]
    params = dict(SEED, min_replicas=30, max_replicas=None, capacity=dict(peak_rate=1000, per_pod_rate=50))
    assert "max_replicas 20 (derived from capacity)" in _hpa.validate_params(params)[0]


def test_allow_over_100_raises_the_ceiling_to_1000():
    assert _hpa.validate_params(dict(SEED, cpu_utilization=150, allow_over_100=True)) == []
    assert "1..1000" in _hpa.validate_params(dict(SEED, cpu_utilization=1001, allow_over_100=True))[0]


def test_raw_behavior_is_validated_like_the_api_server_would():
    params = dict(SEED, scale_up=None, scale_down=None, behavior={
        "scaleUp": {"policies": [{"type": "Pods", "value": 0, "periodSeconds": 15},
                                 {"type": "Absolute", "value": 5, "periodSeconds": 2000, "extra": 1}],
                    "selectPolicy": "max", "stabilizationWindowSeconds": -1},
        "scaleDown": {"policies": [{"type": "Percent", "value": 120, "periodSeconds": 60}], "tolerance": "abc"},
    })
    joined = "\n".join(_hpa.validate_params(params))
    for fragment in ("behavior.scaleUp.policies[0].value: got 0",
                     "behavior.scaleUp.policies[1].type: got 'Absolute'",
                     "behavior.scaleUp.policies[1].periodSeconds: got 2000",
                     "behavior.scaleUp.policies[1].extra: unknown key",
                     "behavior.scaleUp.selectPolicy: got 'max'; allowed Max, Min or Disabled",
                     "behavior.scaleUp.stabilizationWindowSeconds: got -1",
                     "behavior.scaleDown.policies[0].value: got 120; allowed an integer 1..100",
                     "behavior.scaleDown.tolerance: got 'abc'"):
        assert fragment in joined, fragment


def test_friendly_rules_need_a_policy_unless_disabled():
    errors = _hpa.validate_params(dict(SEED, scale_up=dict(period=60, select="max")))
    assert errors == ["scale_up: set percent and/or pods (how much one step may change), or select: disabled"]
    assert _hpa.validate_params(dict(SEED, scale_up=dict(period=60, select="Disabled"))) == []


def test_absent_only_checks_names():
    assert _hpa.validate_params(dict(name="x", namespace="y", state="absent", min_replicas=-4)) == []


def test_capacity_validation_lists_all_problems():
    errors = _hpa.validate_params(dict(SEED, capacity=dict(peak_rate=0, per_pod_rate=-1, headroom_percent=2000,
                                                           min_baseline=0, baseline_rate=5000)))
    joined = "\n".join(errors)
    for fragment in ("capacity.peak_rate: got 0", "capacity.per_pod_rate: got -1",
                     "capacity.headroom_percent: got 2000", "capacity.min_baseline: got 0",
                     "capacity.baseline_rate"):
        assert fragment in joined, fragment
    huge = _hpa.validate_params(dict(SEED, min_replicas=None, max_replicas=None,
                                     capacity=dict(peak_rate=1000000, per_pod_rate=0.5)))
    assert "same unit" in huge[0]


# ----------------------------------------------------------------------------- capacity
def test_capacity_seed002_gives_2_to_20_with_explanation():
    derived = _hpa.derive_capacity(dict(peak_rate=1000, per_pod_rate=50, unit="msg/s"))
    assert (derived["min_replicas"], derived["max_replicas"]) == (2, 20)
    assert derived["explanation"].startswith("max_replicas 20 = ceil(peak 1000 msg/s x 1 (0 % headroom) / 50 msg/s per pod)")
    assert "at 20 pods the fleet serves up to 1000 msg/s" in derived["explanation"]


def test_capacity_uses_exact_arithmetic():
    # 1000 * 1.1 / 50 is 22.000000000000004 in floats; exact maths gives 22, not 23
    assert _hpa.derive_capacity(dict(peak_rate=1000, per_pod_rate=50, headroom_percent=10))["max_replicas"] == 22
    assert _hpa.derive_capacity(dict(peak_rate=0.3, per_pod_rate=0.1))["max_replicas"] == 3


def test_capacity_baseline_and_raise():
    derived = _hpa.derive_capacity(dict(peak_rate=1000, per_pod_rate=50, baseline_rate=300, min_baseline=2))
    assert derived["min_replicas"] == 6 and "above min_baseline 2" in derived["explanation"]
    derived = _hpa.derive_capacity(dict(peak_rate=10, per_pod_rate=50, min_baseline=3))
    assert (derived["min_replicas"], derived["max_replicas"]) == (3, 3)
    assert derived["max_raised_to_min"] and "raised from 1 to 3" in derived["explanation"]


def test_explicit_bounds_override_capacity():
    params = dict(SEED, max_replicas=None, capacity=dict(peak_rate=1000, per_pod_rate=50, headroom_percent=20))
    desired, derived = _hpa.build_desired(params)
    assert derived["max_replicas"] == 24 and desired["maxReplicas"] == 24 and desired["minReplicas"] == 2


rates = st.floats(min_value=0.001, max_value=1e5, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(peak=rates, per_pod=rates, headroom=st.floats(min_value=0, max_value=1000),
       baseline=st.integers(min_value=1, max_value=50), base_rate=st.none() | st.floats(min_value=0, max_value=1))
def test_property_derived_min_never_exceeds_max_and_covers_peak(peak, per_pod, headroom, baseline, base_rate):
    capacity = dict(peak_rate=peak, per_pod_rate=per_pod, headroom_percent=headroom, min_baseline=baseline,
                    baseline_rate=None if base_rate is None else base_rate * peak)
    derived = _hpa.derive_capacity(capacity)
    assert 1 <= derived["min_replicas"] <= derived["max_replicas"]
    need = Fraction(repr(peak)) * (1 + Fraction(repr(headroom)) / 100)
    # enough pods for the peak with headroom ...
    assert derived["max_replicas"] * Fraction(repr(per_pod)) >= need
    # ... and not one more than needed, unless raised to the minimum
    if not derived["max_raised_to_min"]:
        assert (derived["max_replicas"] - 1) * Fraction(repr(per_pod)) < need or derived["max_replicas"] == 1


# ----------------------------------------------------------------------------- normalising / idempotence
def test_server_defaults_normalise_to_what_we_sent():
    sent = render(SEED)["spec"]
    stored = server_defaults(sent)
    stored["metrics"].reverse()  # someone edited it by hand, same meaning
    for rules in stored["behavior"].values():
        rules["policies"].reverse()
    assert _hpa.specs_equivalent(sent, stored)


def test_no_behavior_equals_explicit_default_behavior():
    bare = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"}, "maxReplicas": 3}
    explicit = server_defaults(dict(bare, behavior={}))
    assert explicit["behavior"]["scaleUp"]["policies"]
    assert _hpa.specs_equivalent(bare, explicit)
    assert _hpa.specs_equivalent(bare, server_defaults(bare))
    # but a changed field is a difference
    other = copy.deepcopy(explicit)
    other["behavior"]["scaleUp"]["selectPolicy"] = "Min"
    assert not _hpa.specs_equivalent(bare, other)


def test_tolerance_quantities_compare_by_value():
    a = {"maxReplicas": 3, "behavior": {"scaleUp": {"tolerance": "0.1"}}}
    b = {"maxReplicas": 3, "behavior": {"scaleUp": {"tolerance": "100m"}}}
    assert _hpa.specs_equivalent(a, b)


def test_merge_keeps_unmanaged_fields_and_other_metrics():
    live = server_defaults(render(SEED)["spec"])
    live["metrics"].append({"type": "External", "external": {"metric": {"name": "queue_len"},
                                                             "target": {"type": "AverageValue", "averageValue": "30"}}})
    desired, _derived = _hpa.build_desired({"cpu_utilization": 60})
    merged = _hpa.merge_spec(live, desired)
    names = [(m["type"], (m.get("resource") or m.get("external")).get("name") or m["external"]["metric"]["name"])
             for m in merged["metrics"]]
    assert names == [("Resource", "cpu"), ("External", "queue_len")]  # memory dropped, External kept
    assert merged["behavior"] == live["behavior"] and merged["maxReplicas"] == 20
    desired, _derived = _hpa.build_desired({"scale_down": dict(pods=2, period=30, select="max")})
    merged = _hpa.merge_spec(live, desired)
    assert merged["behavior"]["scaleUp"] == live["behavior"]["scaleUp"]
    assert merged["behavior"]["scaleDown"] == {"policies": [{"type": "Pods", "value": 2, "periodSeconds": 30}],
                                               "selectPolicy": "Max"}


def test_missing_for_create_and_post_merge_checks():
    assert _hpa.missing_for_create({}) == ["target.name (the Deployment or StatefulSet to scale)",
                                           "max_replicas (or capacity to derive it)",
                                           "cpu_utilization and/or memory_utilization"]
    assert _hpa.validate_spec({"minReplicas": 30, "maxReplicas": 20}, live_exists=True) == [
        "minReplicas 30 is greater than maxReplicas 20 after merging with the existing HPA; "
        "set both min_replicas and max_replicas"]


def test_containers_missing_requests_names_them():
    pod = {"containers": [{"name": "api", "resources": {"requests": {"cpu": "250m"}}},
                          {"name": "sidecar"},
                          {"name": "worker", "resources": {"requests": {"memory": "1Gi"}}}]}
    expected = {"cpu": ["sidecar", "worker"], "memory": ["api", "sidecar"]}
    assert _hpa.containers_missing_requests(pod, ["cpu", "memory"]) == expected
    pod["resources"] = {"requests": {"cpu": "1"}}  # pod-level requests cover every container
    assert _hpa.containers_missing_requests(pod, ["cpu"]) == {}


def test_condition_summary_and_scaling_active():
    status = {"conditions": [
        {"type": "AbleToScale", "status": "True", "reason": "SucceededGetScale", "message": "ok"},
        {"type": "ScalingActive", "status": "False", "reason": "FailedGetResourceMetric",
         "message": "missing request for cpu in container sidecar"}]}
    assert not _hpa.scaling_active(status)
    assert "ScalingActive=False (FailedGetResourceMetric: missing request for cpu in container sidecar)" in \
        _hpa.condition_summary(status)
    status["conditions"][1]["status"] = "True"
    assert _hpa.scaling_active(status)


# ----------------------------------------------------------------------------- kubernetes-validate
COMBINATIONS = [
    dict(SEED),
    dict(SEED, memory_utilization=None),
    dict(SEED, cpu_utilization=None),
    dict(SEED, scale_up=None, scale_down=None),
    dict(SEED, scale_up=dict(select="disabled", period=60), scale_down=dict(pods=1, period=15, select="max")),
    dict(SEED, target=dict(kind="StatefulSet", name="evolution-postgres"), min_replicas=None),
    dict(SEED, min_replicas=None, max_replicas=None,
         capacity=dict(peak_rate=1000, per_pod_rate=50, headroom_percent=25, min_baseline=3, unit="msg/s")),
    dict(SEED, cpu_utilization=250, allow_over_100=True, labels={"app.kubernetes.io/part-of": "ifinu"}),
    dict(SEED, scale_up=None, scale_down=None, behavior={
        "scaleUp": {"policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                                 {"type": "Percent", "value": 100, "periodSeconds": 60}], "selectPolicy": "Max"},
        "scaleDown": {"stabilizationWindowSeconds": 600}}),
    dict(SEED, scale_up=dict(percent=900, period=1800, select="min", stabilization=3600),
         scale_down=dict(percent=100, period=1, select="MAX", stabilization=0)),
]


@pytest.mark.parametrize("params", COMBINATIONS, ids=lambda p: "combo")
def test_rendered_manifests_pass_kubernetes_validate_strict(params):
    manifest = render(params)
    k8s_validate(manifest)
    # and it is stable: rendering over what the server would store changes nothing
    stored = dict(manifest, spec=server_defaults(manifest["spec"]))
    assert _hpa.specs_equivalent(render(params, live=stored)["spec"], stored["spec"])


def test_kubernetes_validate_would_catch_a_bad_manifest():
    """Guard that the validation used above really rejects unknown fields."""
    manifest = render(SEED)
    manifest["spec"]["behavior"]["scaleUp"]["period"] = 60
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, "1.29.0", strict=True)


friendly_rules = st.fixed_dictionaries({
    "percent": st.none() | st.integers(1, 100),
    "pods": st.none() | st.integers(1, 50),
    "period": st.integers(1, 1800),
    "select": st.sampled_from(["max", "min", "disabled", "Max", "MIN"]),
    "stabilization": st.none() | st.integers(0, 3600),
}).filter(lambda r: r["percent"] is not None or r["pods"] is not None or r["select"].lower() == "disabled")


@st.composite
def valid_params(draw):
    low = draw(st.integers(1, 50))
    high = draw(st.integers(low, 200))
    cpu = draw(st.none() | st.integers(1, 100))
    memory = draw(st.none() | st.integers(1, 100))
    if cpu is None and memory is None:
        cpu = 70
    return dict(name="web", namespace="shop", state="present",
                target=dict(kind=draw(st.sampled_from(_hpa.TARGET_KINDS)), name="web"),
                min_replicas=low, max_replicas=high, cpu_utilization=cpu, memory_utilization=memory,
                scale_up=draw(st.none() | friendly_rules), scale_down=draw(st.none() | friendly_rules))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=valid_params())
def test_property_valid_params_render_valid_stable_manifests(params):
    assert _hpa.validate_params(params) == []
    manifest = render(params)
    k8s_validate(manifest)
    stored = server_defaults(manifest["spec"])
    assert _hpa.specs_equivalent(manifest["spec"], stored)
    assert _hpa.normalize_spec(_hpa.normalize_spec(stored)) == _hpa.normalize_spec(stored)


junk = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=10,
)
param_keys = ["name", "namespace", "state", "target", "min_replicas", "max_replicas", "cpu_utilization",
              "memory_utilization", "allow_over_100", "scale_up", "scale_down", "behavior", "capacity",
              "labels", "wait_timeout", "wait_sleep", "preview_replicas"]


@settings(max_examples=150, deadline=None)
@given(params=st.dictionaries(st.sampled_from(param_keys), junk, max_size=10)
       | st.builds(lambda p, b: dict(p, behavior=b), valid_params(),
                   st.dictionaries(st.sampled_from(["scaleUp", "scaleDown", "x"]), junk, max_size=2)))
def test_property_validation_never_tracebacks(params):
    errors = _hpa._validate_params(params)  # the inner function: no safety net
    assert isinstance(errors, list) and all(isinstance(e, str) for e in errors)
    if not errors and params.get("state", "present") == "present":
        desired, _derived = _hpa.build_desired(params)  # valid input builds without error
        _hpa.normalize_spec(_hpa.merge_spec(None, desired))


@settings(max_examples=200, deadline=None)
@given(current=st.integers(0, 300), low=st.integers(1, 40), span=st.integers(0, 200),
       up=friendly_rules, down=friendly_rules)
def test_property_steps_move_the_right_way_within_bounds(current, low, span, up, down):
    high = low + span
    spec = _hpa.merge_spec(None, _hpa.build_desired(dict(min_replicas=low, max_replicas=high, cpu_utilization=50,
                                                         target=dict(name="x"), scale_up=up, scale_down=down))[0])
    n = _hpa.normalize_spec(spec)
    up_next = _hpa.step("up", current, n["behavior"]["scaleUp"], low, high)[0]
    down_next = _hpa.step("down", current, n["behavior"]["scaleDown"], low, high)[0]
    if low <= current <= high:
        assert current <= up_next <= high
        assert low <= down_next <= current
    pv = _hpa.preview(spec, current)
    ramp_up, ramp_down = pv["min_to_max"]["replicas"], pv["max_to_min"]["replicas"]
    assert ramp_up == sorted(ramp_up) and ramp_down == sorted(ramp_down, reverse=True)
    if up["select"].lower() != "disabled":
        assert ramp_up[-1] == high
    if down["select"].lower() != "disabled":
        assert ramp_down[-1] == low


@settings(max_examples=100, deadline=None)
@given(order=st.permutations(range(3)))
def test_property_metric_order_never_matters(order):
    metrics = [_hpa.resource_metric("cpu", 70), _hpa.resource_metric("memory", 80),
               {"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {"type": "AverageValue", "averageValue": "10"}}}]
    spec = {"maxReplicas": 5, "metrics": metrics}
    shuffled = dict(spec, metrics=[metrics[i] for i in order])
    assert _hpa.specs_equivalent(spec, shuffled)


def test_scale_up_percent_rounding_matches_controller_floats():
    """ceil(R * (1 + p/100)) and int(R * (1 - p/100)) in float64, as the Go controller does."""
    rules_up = {"selectPolicy": "Max", "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}]}
    rules_down = {"selectPolicy": "Max", "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}]}
    for replicas in range(1, 200):
        assert _hpa.step("up", replicas, rules_up, 1, 10**6)[0] == math.ceil(replicas * 1.1)
        assert _hpa.step("down", replicas, rules_down, 1, 10**6)[0] == max(1, int(replicas * 0.9))
    # a percent step always moves at least one pod
    assert all(_hpa.step("up", r, rules_up, 1, 10**6)[0] > r for r in range(1, 50))


def test_select_policy_aliases():
    for value, expected in itertools.chain(
            zip(["max", "Max", " MAX "], itertools.repeat("Max")),
            zip(["min", "Min"], itertools.repeat("Min")),
            [("disabled", "Disabled"), ("fastest", None), (3, None)]):
        assert _hpa.select_policy(value) == expected
