"""Autoscaling as the seeds write it: behaviour (seed 002: up max(+50 %, +2 pods) per 60 s,
down min(-10 %, -1 pod) after 300 s), capacity figures (seed 002: 50 msg/s per pod, peak
1000), custom and external metrics (seed 003: Kafka lag; seed 002: queue length). Nothing of
it by default; deploy and hpa_tune build the same HPA."""

import copy

import pytest
from k8s_support import by, validation_errors

from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import hpa as _hpa
from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import manifests as k8s
from ansible_collections.opsdeck.stack.plugins.module_utils.model import fidelity
from ansible_collections.opsdeck.stack.plugins.module_utils.model.stack import ModelError, normalize

SEED_002 = {
    "scale_up": {"percent": 50, "pods": 2, "period": 60, "select": "max"},
    "scale_down": {"percent": 10, "pods": 1, "period": 60, "select": "min", "stabilization": 300},
}
RAW = {
    "name": "ifinu", "target": "kubernetes", "environment": "staging", "proxy": {"enabled": False},
    "services": [{
        "name": "evolution-api", "image": "registry.example.com/evolution/api:2.0", "port": 8080,
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
        "autoscaling": {"min": 2, "cpu": 70, "memory": 80, "behavior": SEED_002,
                        "capacity": {"peak_rate": 1000, "per_pod_rate": 50, "unit": "msg/s"},
                        "metrics": [{"name": "redis_list_length", "type": "external", "target": "500",
                                     "average": True, "selector": {"key": "queue"}}]},
    }],
}


def render(raw):
    return k8s.render(normalize(raw), {})


def test_seed_002_behaviour_capacity_and_queue_metric():
    manifests = render(copy.deepcopy(RAW))
    assert validation_errors(manifests) == []
    spec = by(manifests, "HorizontalPodAutoscaler", "evolution-api")["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 20), "max = ceil(1000 / 50)"
    assert spec["behavior"]["scaleUp"] == {"selectPolicy": "Max", "policies": [
        {"type": "Percent", "value": 50, "periodSeconds": 60}, {"type": "Pods", "value": 2, "periodSeconds": 60}]}
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert spec["behavior"]["scaleDown"]["selectPolicy"] == "Min"
    external = [m for m in spec["metrics"] if m["type"] == "External"]
    assert external == [{"type": "External", "external": {
        "metric": {"name": "redis_list_length", "selector": {"matchLabels": {"key": "queue"}}},
        "target": {"type": "AverageValue", "averageValue": "500"}}}]


def test_the_deploy_and_hpa_tune_build_the_same_hpa():
    model = normalize(copy.deepcopy(RAW))
    svc = model["services"][0]
    params = k8s.hpa_params(model, svc, k8s.namespace_of(model))
    assert params["scale_up"] == SEED_002["scale_up"]
    assert _hpa.validate_params(params) == []
    from_module = _hpa.merge_spec({}, _hpa.build_desired(params)[0])
    rendered = by(k8s.render(model, {}), "HorizontalPodAutoscaler", "evolution-api")["spec"]
    assert rendered["behavior"] == from_module["behavior"]
    assert rendered["maxReplicas"] == from_module["maxReplicas"]


def test_no_behaviour_and_no_custom_metric_unless_asked():
    raw = copy.deepcopy(RAW)
    auto = raw["services"][0]["autoscaling"]
    for key in ("behavior", "capacity", "metrics"):
        auto.pop(key)
    auto["max"] = 5
    spec = by(render(raw), "HorizontalPodAutoscaler", "evolution-api")["spec"]
    assert "behavior" not in spec and {m["type"] for m in spec["metrics"]} == {"Resource"}


def test_seed_003_kafka_lag_alone_is_enough_a_target():
    raw = copy.deepcopy(RAW)
    raw["services"][0]["autoscaling"] = {"min": 3, "max": 20, "metrics": [
        {"name": "kafka_consumergroup_lag", "type": "external", "target": "100",
         "selector": {"topic": "checkin"}}]}
    spec = by(render(raw), "HorizontalPodAutoscaler", "evolution-api")["spec"]
    assert spec["metrics"] == [{"type": "External", "external": {
        "metric": {"name": "kafka_consumergroup_lag", "selector": {"matchLabels": {"topic": "checkin"}}},
        "target": {"type": "Value", "value": "100"}}}]


def errors_of(auto):
    raw = copy.deepcopy(RAW)
    raw["services"][0]["autoscaling"] = auto
    with pytest.raises(ModelError) as info:
        normalize(raw)
    return info.value.errors


@pytest.mark.parametrize("auto, expected", [
    ({"cpu": 70}, "stack_services[evolution-api].autoscaling.max: is required (or give capacity to derive it)"),
    ({"max": 3, "min": 5, "cpu": 70}, "stack_services[evolution-api].autoscaling: min 5 > max 3"),
    ({"max": 3}, "stack_services[evolution-api].autoscaling: needs a target"),
    ({"max": 3, "metrics": [{"name": "x", "type": "object", "target": "1"}]},
     "stack_services[evolution-api].autoscaling.metrics[x].object_kind: is required for a metric of type object"),
    ({"max": 3, "metrics": [{"name": "x", "target": "1", "average": True}]},
     "stack_services[evolution-api].autoscaling.metrics[x].average: a pods metric is always an average"),
    ({"max": 3, "cpu": 70, "behavior": {"scale_up": {"select": "most"}}},
     "stack_services[evolution-api].autoscaling.behavior.scale_up.select: 'most' is not allowed"),
    ({"cpu": 70, "capacity": {"peak_rate": 100, "per_pod_rate": 0}},
     "stack_services[evolution-api].autoscaling.capacity: needs peak_rate and per_pod_rate greater than zero"),
])
def test_errors_name_the_field(auto, expected):
    errors = errors_of(auto)
    assert any(e.startswith(expected) for e in errors), errors


def test_fidelity_on_compose_says_min_runs():
    raw = copy.deepcopy(RAW)
    raw["target"] = "compose"
    rep = fidelity.report(normalize(raw))
    assert {"field": "stack_services[evolution-api].autoscaling",
            "how": "no autoscaler on compose: runs autoscaling.min = 2 replicas (scale by hand or "
                   "with the model)"} in rep["dropped"]
