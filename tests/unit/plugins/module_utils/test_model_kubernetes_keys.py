"""The model keys the Kubernetes target reads: session_affinity, tenant, stack_tenant and
stack_proxy.host. Validated up front with field-path errors, like the rest of the model."""

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import manifests as _kubernetes
from ansible_collections.opsdeck.stack.plugins.module_utils.model.stack import ModelError, normalize

GOOD = {
    "name": "shop",
    "target": "kubernetes",
    "environment": "staging",
    "services": [
        {"name": "api", "image": "registry.example.com/shop/api:1.4.2", "port": 8000,
         "replicas": 2, "route": {"path": "/api/"}},
        {"name": "worker", "image": "registry.example.com/shop/worker:1.4.2"},
    ],
    "proxy": {},
}
SECRETS = {}


def raw_with(service=None, **top):
    raw = copy.deepcopy(GOOD)
    raw["services"][0].update(service or {})
    for key, value in top.items():
        if key == "proxy":
            raw["proxy"].update(value)
        else:
            raw[key] = value
    return raw


def errors_of(raw):
    with pytest.raises(ModelError) as info:
        normalize(raw)
    return info.value.errors


def test_defaults_are_off():
    model = normalize(copy.deepcopy(GOOD))
    assert model["tenant"] is None and model["proxy"]["host"] is None
    for svc in model["services"]:
        assert svc["session_affinity"] is None and svc["tenant"] is None


@pytest.mark.parametrize("value, expected", [
    (True, {"timeout": 3600}),
    ("ClientIP", {"timeout": 3600}),          # seed 002: ClientIP, 3600 s
    ({"timeout": 600}, {"timeout": 600}),
    ({"timeout": "86400"}, {"timeout": 86400}),
    ({}, {"timeout": 3600}),
    (False, None),
    ("None", None),
    (None, None),
])
def test_session_affinity_is_normalised(value, expected):
    model = normalize(raw_with({"session_affinity": value}))
    assert model["services"][0]["session_affinity"] == expected


@pytest.mark.parametrize("value, expected", [
    ("sometimes", "stack_services[api].session_affinity: 'sometimes' is not allowed (allowed: true, false, "
                  "\"ClientIP\", \"None\" or {timeout: 1..86400})"),
    (1, "stack_services[api].session_affinity: 1 is not allowed"),
    ([True], "stack_services[api].session_affinity: [True] is not allowed"),
    ({"timeout": 0}, "stack_services[api].session_affinity.timeout: 0 is out of range (allowed: 1..86400)"),
    ({"timeout": 86401}, "stack_services[api].session_affinity.timeout: 86401 is out of range"),
    ({"timeout": "long"}, "stack_services[api].session_affinity.timeout: must be an integer (got 'long')"),
    ({"timeoutSeconds": 5}, "stack_services[api].session_affinity.timeoutSeconds: unknown field (allowed: timeout)"),
])
def test_session_affinity_errors_name_the_field(value, expected):
    errors = errors_of(raw_with({"session_affinity": value}))
    assert any(e.startswith(expected) for e in errors), errors


def test_tenants_are_dns_labels():
    model = normalize(raw_with({"tenant": "acme"}, tenant="shared-1"))
    assert model["tenant"] == "shared-1"
    assert [s["tenant"] for s in model["services"]] == ["acme", None]
    errors = errors_of(raw_with({"tenant": "Acme_Corp"}, tenant="-bad"))
    assert any(e.startswith("stack_services[api].tenant: 'Acme_Corp' is not valid (allowed: a DNS-1123 label")
               for e in errors), errors
    assert any(e.startswith("stack_tenant: '-bad' is not valid") for e in errors), errors
    errors = errors_of(raw_with({"tenant": "a" * 64}))
    assert any(e.startswith("stack_services[api].tenant: 'aaaa") and "longer than 63" in e for e in errors), errors
    assert errors_of(raw_with({"tenant": ["acme"]})) == [
        "stack_services[api].tenant: must be a string (got ['acme'])"]


@pytest.mark.parametrize("host", ["shop.example.com", "*.shop.example.com", "a-1.b.example"])
def test_proxy_host_accepts_dns_names(host):
    assert normalize(raw_with(proxy={"host": host}))["proxy"]["host"] == host


@pytest.mark.parametrize("host", ["https://shop.example.com", "shop.example.com:443", "Shop.Example.com",
                                  "localhost", "shop..example.com", "-shop.example.com", "shop.example.com/",
                                  "a.*.example.com"])
def test_proxy_host_refuses_what_an_ingress_cannot_take(host):
    errors = errors_of(raw_with(proxy={"host": host}))
    assert any(e.startswith("stack_proxy.host: %r is not valid (allowed: a lowercase DNS name" % host)
               for e in errors), errors


def test_the_renderer_uses_the_normalised_keys():
    raw = raw_with({"session_affinity": {"timeout": 900}, "tenant": "acme"},
                   tenant="shared", proxy={"host": "shop.example.com"})
    manifests = _kubernetes.render(normalize(raw), SECRETS)
    kinds = {(m["kind"], m["metadata"]["name"]): m for m in manifests}
    service = kinds[("Service", "api")]
    assert service["spec"]["sessionAffinity"] == "ClientIP"
    assert service["spec"]["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 900}}
    assert kinds[("Ingress", "api")]["spec"]["rules"][0]["host"] == "shop.example.com"
    assert kinds[("Deployment", "api")]["metadata"]["labels"][_kubernetes.TENANT_LABEL] == "acme"
    assert kinds[("Deployment", "worker")]["metadata"]["labels"][_kubernetes.TENANT_LABEL] == "shared"
    assert kinds[("Namespace", "shop")]["metadata"]["labels"][_kubernetes.TENANT_LABEL] == "shared"


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 100000), st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=6)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where=st.sampled_from(["session_affinity", "tenant", "stack_tenant", "host"]), value=VALUES)
def test_malformed_values_never_traceback_and_name_the_field(where, value):
    if where == "stack_tenant":
        raw, prefix = raw_with(tenant=value), "stack_tenant"
    elif where == "host":
        raw, prefix = raw_with(proxy={"host": value}), "stack_proxy.host"
    else:
        raw, prefix = raw_with({where: value}), "stack_services[api].%s" % where
    try:
        model = normalize(raw)
    except ModelError as exc:
        assert all(m.startswith(prefix) for m in exc.errors), exc.errors
        return
    # Whatever is accepted renders.
    _kubernetes.render(model, SECRETS)
