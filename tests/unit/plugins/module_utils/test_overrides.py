"""Escape hatches (stack_overrides): what the model cannot say, patched into what each
target renders, checked to name what exists, and listed by the fidelity report."""

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from k8s_support import by, validation_errors

from ansible_collections.opsdeck.stack.plugins.module_utils.common import patch
from ansible_collections.opsdeck.stack.plugins.module_utils.compose import render as compose
from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import manifests as k8s
from ansible_collections.opsdeck.stack.plugins.module_utils.model import fidelity
from ansible_collections.opsdeck.stack.plugins.module_utils.model.stack import ModelError, normalize
from ansible_collections.opsdeck.stack.plugins.module_utils.swarm import render as swarm

RAW = {
    "name": "shop", "environment": "dev",
    "services": [{"name": "api", "image": "registry.example.com/shop/api:1.0", "port": 8000,
                  "env": {"A": "1"}, "route": {"path": "/api/"}}],
    "overrides": {
        "compose": {"api": {"extra_hosts": ["legacy.internal:10.0.0.5"], "stop_grace_period": None},
                    "proxy": {"logging": {"options": {"max-size": "50m"}}}},
        "swarm": {"api": {"deploy": {"labels": {"tier": "gold"}}}},
        "kubernetes": [
            {"target": "Deployment/api", "patch": {"spec": {"template": {"spec": {
                "hostAliases": [{"ip": "10.0.0.5", "hostnames": ["legacy.internal"]}],
                "containers": [{"name": "api", "env": [{"name": "A", "value": "2"}, {"name": "B", "value": "3"}]}]}}}}},
            {"target": "Service/api", "json_patch": [
                {"op": "add", "path": "/metadata/annotations", "value": {"example.com/lb": "internal"}},
                {"op": "replace", "path": "/spec/type", "value": "NodePort"}]},
        ],
    },
}


def model(target, raw=None):
    raw = copy.deepcopy(raw or RAW)
    raw["target"] = target
    return normalize(raw)


def test_compose_override_merges_into_the_service():
    services = compose.render(model("compose"), {})["project"]["services"]
    assert services["api"]["extra_hosts"] == ["legacy.internal:10.0.0.5"]
    assert "stop_grace_period" not in services["api"], "null removes a key"
    assert services["proxy"]["logging"]["options"] == {"max-size": "50m", "max-file": "3"}
    rep = fidelity.report(model("compose"))
    assert {e["field"] for e in rep["native"]} >= {"stack_overrides.compose.api", "stack_overrides.compose.proxy"}


def test_swarm_applies_its_own_overrides_not_composes():
    services = swarm.render(model("swarm"), {})["stack"]["services"]
    assert services["api"]["deploy"]["labels"]["tier"] == "gold"
    assert services["api"]["deploy"]["labels"]["org.opsdeck.stack"] == "shop"
    assert "extra_hosts" not in services["api"]


def test_kubernetes_patches_strategic_and_json():
    manifests = k8s.render(model("kubernetes"), {})
    assert validation_errors(manifests) == []
    pod = by(manifests, "Deployment", "api")["spec"]["template"]["spec"]
    assert pod["hostAliases"] == [{"ip": "10.0.0.5", "hostnames": ["legacy.internal"]}]
    container = pod["containers"][0]
    assert {e["name"]: e["value"] for e in container["env"]} == {"A": "2", "B": "3"}
    assert container["image"] == "registry.example.com/shop/api:1.0", "a named list item merges, it is not replaced"
    service = by(manifests, "Service", "api")
    assert service["spec"]["type"] == "NodePort" and service["metadata"]["annotations"] == {"example.com/lb": "internal"}
    rep = fidelity.report(model("kubernetes"))
    assert "stack_overrides.kubernetes[Service/api]" in {e["field"] for e in rep["native"]}


@pytest.mark.parametrize("overrides, expected", [
    ({"compose": {"nope": {"x": 1}}}, "stack_overrides.compose.nope: no service 'nope' in the rendered project"),
])
def test_an_override_of_nothing_is_an_error_naming_it(overrides, expected):
    raw = copy.deepcopy(RAW)
    raw["overrides"] = overrides
    with pytest.raises(ValueError) as info:
        compose.render(model("compose", raw), {})
    assert str(info.value).startswith(expected)


@pytest.mark.parametrize("item, expected", [
    ({"target": "Deployment/nope", "patch": {"a": 1}}, "stack_overrides.kubernetes[Deployment/nope]: no rendered object"),
    ({"target": "Service/api", "json_patch": [{"op": "remove", "path": "/spec/nothing"}]},
     "stack_overrides.kubernetes[Service/api]: operation 1 (remove /spec/nothing): no key 'nothing'"),
    ({"target": "Service/api", "json_patch": [{"op": "test", "path": "/spec/type", "value": "LoadBalancer"}]},
     "stack_overrides.kubernetes[Service/api]: operation 1 (test /spec/type): test failed"),
])
def test_a_kubernetes_patch_that_cannot_apply_is_an_error_naming_it(item, expected):
    raw = copy.deepcopy(RAW)
    raw["overrides"] = {"kubernetes": [item]}
    with pytest.raises(k8s.RenderError) as info:
        k8s.render(model("kubernetes", raw), {})
    assert str(info.value).startswith(expected), str(info.value)


@pytest.mark.parametrize("item, expected", [
    ({"target": "Deployment/api"}, "stack_overrides.kubernetes[Deployment/api]: needs exactly one of patch and json_patch"),
    ({"target": "deployment/api", "patch": {}}, "stack_overrides.kubernetes[deployment/api].target: 'deployment/api' is not valid"),
    ({"target": "Service/api", "json_patch": [{"op": "replace", "path": "/spec/type"}]},
     "stack_overrides.kubernetes[Service/api].json_patch: replace /spec/type needs a value"),
    ({"target": "Service/api", "json_patch": [{"op": "move", "path": "/a", "value": 1}]},
     "stack_overrides.kubernetes[Service/api].json_patch[0].op: 'move' is not allowed"),
])
def test_malformed_overrides_are_refused_before_rendering(item, expected):
    raw = copy.deepcopy(RAW)
    raw["overrides"] = {"kubernetes": [item]}
    with pytest.raises(ModelError) as info:
        normalize(raw)
    assert any(e.startswith(expected) for e in info.value.errors), info.value.errors


JSONISH = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5)),
                       lambda inner: st.one_of(st.lists(inner, max_size=3),
                                               st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                       max_leaves=10)


@settings(max_examples=200, deadline=None)
@given(base=st.dictionaries(st.text(max_size=4), JSONISH, max_size=4),
       update=st.dictionaries(st.text(max_size=4), JSONISH, max_size=4))
def test_merge_never_changes_its_arguments_and_the_patch_wins(base, update):
    before_base, before_update = copy.deepcopy(base), copy.deepcopy(update)
    merged = patch.merge(base, update)
    assert base == before_base and update == before_update
    for key, value in update.items():
        if value is None:
            assert key not in merged
        elif not isinstance(value, (dict, list)):
            assert merged[key] == value
