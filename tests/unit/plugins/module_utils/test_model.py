"""The stack model: validation messages a user can act on, and normalisation."""

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.opsdeck.stack.plugins.module_utils.model.stack import (
    ModelError, cpu_millis, images, memory_bytes, normalize, proxy_routes)

GOOD = {
    "name": "shop",
    "target": "compose",
    "environment": "dev",
    "services": [
        {"name": "api", "image": "registry.example.com/shop/api:1.4.2", "port": 8000,
         "replicas": 2, "env": {"LOG_FORMAT": "json", "DEBUG": False, "WORKERS": 4},
         "secrets": ["db_password"],
         "health": {"live": "/health/live", "ready": "/health/ready"},
         "resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                       "limits": {"cpu": "500m", "memory": "512Mi"}},
         "autoscaling": {"min": 2, "max": 20, "cpu": 70, "memory": 80},
         "route": {"path": "/api/", "rate": "10r/s", "burst": 20},
         "uses": ["postgres", "redis"]},
        {"name": "worker", "image": "registry.example.com/shop/worker:1.4.2"},
    ],
    "postgres": {"enabled": True, "version": "15", "storage": "20Gi"},
    "redis": {"enabled": True, "persistence": "aof"},
    "proxy": {"security_headers": True},
    "secrets": {"db_password": "a-long-enough-secret", "postgres_password": "another-long-secret"},
}


def errors_of(raw):
    with pytest.raises(ModelError) as info:
        normalize(raw)
    return info.value.errors


def with_changes(**changes):
    raw = copy.deepcopy(GOOD)
    raw.update(changes)
    return raw


def test_good_model_is_normalised_with_defaults():
    model = normalize(copy.deepcopy(GOOD))
    api = model["services"][0]
    assert api["env"]["DEBUG"] == "false" and api["env"]["WORKERS"] == "4"
    assert api["env"]["DATABASE_HOST"] == "postgres"
    assert api["env"]["DATABASE_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert api["depends_on"] == ["postgres", "redis"]
    assert api["routes"] == [{"name": "api", "path": "/api/", "port": "http", "target_port": 8000,
                              "rate": "10r/s", "burst": 20, "nodelay": True, "conn_limit": 100,
                              "basic_auth": False, "cors_origins": [], "strip_prefix": False,
                              "timeout": 60}]
    assert api["ports"] == [{"name": "http", "port": 8000, "protocol": "tcp", "publish": None}]
    assert model["services"][1]["replicas"] == 1 and model["services"][1]["routes"] == []
    assert model["project_dir"] == "/opt/shop"
    assert model["redis"]["password_secret"] is None
    assert "a-long-enough-secret" not in repr(model), "secret values must not leak into the model"


def test_autoscaling_min_above_max_names_the_field():
    raw = copy.deepcopy(GOOD)
    raw["services"][0]["autoscaling"] = {"min": 5, "max": 3, "cpu": 70}
    assert "stack_services[api].autoscaling: min 5 > max 3" in errors_of(raw)


def test_every_problem_is_reported_at_once():
    raw = with_changes(name="Shop_1", target="nomad")
    raw["services"][1]["image"] = "UPPER CASE"
    errors = errors_of(raw)
    assert any(e.startswith("stack_name: 'Shop_1' is not valid") for e in errors)
    assert "stack_target: 'nomad' is not allowed (allowed: compose, swarm, kubernetes)" in errors
    assert any(e.startswith("stack_services[worker].image: 'UPPER CASE' is not valid") for e in errors)


@pytest.mark.parametrize("field, value, expected", [
    ("name", "API", "stack_services[API].name: 'API' is not valid (allowed: a DNS-1123 label"),
    ("name", "postgres", "stack_services[postgres].name: 'postgres' is reserved"),
    ("port", 70000, "stack_services[api].port: 70000 is out of range (allowed: 1..65535)"),
    ("replicas", "two", "stack_services[api].replicas: must be an integer (got 'two')"),
    ("secrets", ["nope"], "stack_services[api].secrets: secret 'nope' is not defined in stack_secrets"),
    ("uses", ["mysql"], "stack_services[api].uses[0]: 'mysql' is not allowed (allowed: postgres, redis)"),
    ("colour", "blue", "stack_services[api].colour: unknown field"),
])
def test_service_field_errors(field, value, expected):
    raw = copy.deepcopy(GOOD)
    raw["services"][0][field] = value
    assert any(e.startswith(expected) for e in errors_of(raw)), errors_of(raw)


def test_route_errors():
    raw = copy.deepcopy(GOOD)
    raw["services"][0]["route"] = {"path": "api", "rate": "10 per second", "burst": -1}
    errors = errors_of(raw)
    assert any(e.startswith("stack_services[api].route.path: 'api' is not valid") for e in errors)
    assert any(e.startswith("stack_services[api].route.rate: '10 per second' is not valid") for e in errors)
    assert any(e.startswith("stack_services[api].route.burst: -1 is out of range") for e in errors)


def test_duplicate_names_and_paths():
    raw = copy.deepcopy(GOOD)
    raw["services"].append(copy.deepcopy(raw["services"][0]))
    errors = errors_of(raw)
    assert "stack_services[api]: the name 'api' is used more than once (allowed: each name once)" in errors
    assert "stack_services[api].route.path: /api/ is already routed to api" in errors


def test_resources_requests_above_limits_and_autoscaling_needs_requests():
    raw = copy.deepcopy(GOOD)
    raw["services"][0]["resources"] = {"requests": {"cpu": "2"}, "limits": {"cpu": "500m"}}
    errors = errors_of(raw)
    assert "stack_services[api].resources.requests.cpu: 2 is above limits.cpu 500m" in errors
    assert "stack_services[api].autoscaling.memory: a memory target needs resources.requests.memory" in errors


def test_missing_secret_for_postgres():
    raw = copy.deepcopy(GOOD)
    del raw["secrets"]["postgres_password"]
    assert any(e.startswith("stack_postgres.password_secret: secret 'postgres_password' is not defined")
               for e in errors_of(raw))


def test_prod_refuses_placeholder_passwords_without_echoing_them():
    raw = with_changes(environment="prod")
    raw["secrets"] = {"db_password": "CHANGE_THIS", "postgres_password": "senha-segura"}
    errors = errors_of(raw)
    assert any(e.startswith("stack_secrets.db_password: is a placeholder") for e in errors)
    assert any(e.startswith("stack_secrets.postgres_password: is a published or well-known weak password")
               for e in errors)
    assert not any("CHANGE_THIS" in e or "senha-segura" in e for e in errors)


def test_dev_accepts_simple_passwords():
    raw = copy.deepcopy(GOOD)
    raw["secrets"] = {"db_password": "dev", "postgres_password": "dev"}
    assert normalize(raw)["secret_names"] == ["db_password", "postgres_password"]


def test_monitoring_section_is_validated_not_ignored():
    # The sections themselves are tested in test_observability.py.
    errors = errors_of(with_changes(monitoring={"enabled": True}))
    assert errors == ["stack_monitoring.grafana.admin_password_secret: secret "
                      "'grafana_admin_password' is not defined in stack_secrets "
                      "(defined: db_password, postgres_password)"]


def test_proxy_without_routes_is_refused():
    raw = copy.deepcopy(GOOD)
    raw["services"][0].pop("route")
    assert any(e.startswith("stack_proxy.enabled: the proxy is enabled but no service has a route")
               for e in errors_of(raw))


def test_quantities():
    assert cpu_millis("250m") == 250 and cpu_millis("1.5") == 1500 and cpu_millis(2) == 2000
    assert memory_bytes("256Mi") == 256 * 1024 ** 2 and memory_bytes("1G") == 10 ** 9
    with pytest.raises(ValueError):
        memory_bytes("lots")


def test_images_and_routes():
    model = normalize(copy.deepcopy(GOOD))
    by_image = {i["image"]: i for i in images(model)}
    assert by_image["opsdeck/postgres:15"] == {"component": "postgres", "image": "opsdeck/postgres:15",
                                               "recipe": "postgres", "pull": False}
    assert by_image["registry.example.com/shop/api:1.4.2"]["pull"] is True
    assert by_image["registry.example.com/shop/api:1.4.2"]["recipe"] is None
    (route,) = proxy_routes(model)
    assert route["upstreams"] == ["api:8000"] and route["name"] == "api"


# Property: whatever malformed input a user writes, the answer is a ModelError naming a
# field, never a traceback.
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=12),
                    st.floats(allow_nan=False))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)
FIELDS = ["name", "image", "port", "replicas", "env", "secrets", "health", "resources",
          "autoscaling", "route", "uses", "depends_on", "command", "build"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS), value=VALUES, index=st.integers(0, 1))
def test_malformed_service_never_tracebacks(field, value, index):
    raw = copy.deepcopy(GOOD)
    raw["services"][index][field] = value
    try:
        normalize(raw)
    except ModelError as exc:
        assert exc.errors
        for message in exc.errors:
            assert message.startswith(("stack_services[", "stack_secrets", "stack_postgres",
                                       "stack_proxy", "stack_redis")), message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(section=st.sampled_from(["name", "target", "environment", "services", "postgres", "redis",
                                "proxy", "secrets", "monitoring", "project_dir", "runtime_uid"]),
       value=VALUES)
def test_malformed_top_level_never_tracebacks(section, value):
    raw = copy.deepcopy(GOOD)
    raw[section] = value
    try:
        normalize(raw)
    except ModelError as exc:
        assert all(m.startswith("stack_") for m in exc.errors), exc.errors


def test_sql_names_derived_from_a_dashed_stack_name_are_valid():
    raw = copy.deepcopy(GOOD)
    raw["name"] = "my-shop"
    model = normalize(raw)
    assert model["postgres"]["database"] == "my_shop" and model["postgres"]["user"] == "my_shop"


@pytest.mark.parametrize("value, why", [
    ("evolution123", "a published or well-known weak password"),      # seed 002
    ("senha-segura", "a published or well-known weak password"),      # seed 000
    ("dev-postgres-password", "a published or well-known weak password"),  # seed 004
    ("sk_test_sua_chave_api_stripe", "a published or well-known weak password"),
    ("CHANGE_THIS_TO_A_VERY_SECURE_SECRET_KEY", "a placeholder"),      # seed 004's prod file
    ("sua-senha-redis-muito-segura-2", "a placeholder"),
    ("{{ vault_missing }}", "a placeholder"),
    ("Password123!", None),
    ("s3cret", "shorter than 12 characters"),
    ("aaaaaaaaaaaaaaaa", "too repetitive"),
    ("ababababababab12", "too repetitive"),
])
def test_prod_refuses_published_placeholder_and_weak_secrets(value, why):
    raw = with_changes(environment="prod")
    raw["secrets"] = {"db_password": value, "postgres_password": "k9#Lq2!vR7@xZ4mW"}
    if why is None:
        assert normalize(raw)["secret_names"] == ["db_password", "postgres_password"]
        return
    errors = errors_of(raw)
    assert any(e.startswith("stack_secrets.db_password: is %s" % why) and "prod refuses it" in e
               for e in errors), errors
    assert not any(value in e for e in errors), "the value is never shown"
