"""Fidelity report, stack_strict, and parity: one model gives the same answers on the three
targets wherever the target can express it (what a user can observe of each service)."""

import copy

import pytest

from ansible_collections.opsdeck.stack.plugins.module_utils.compose import render as _compose
from ansible_collections.opsdeck.stack.plugins.module_utils.model import fidelity as _fidelity
from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import manifests as _kubernetes
from ansible_collections.opsdeck.stack.plugins.module_utils.swarm import render as _swarm
from ansible_collections.opsdeck.stack.plugins.module_utils.model.stack import ModelError, normalize, proxy_routes

SECRETS = {"admin_token": "tok-1234567890", "postgres_password": "pg-pass-1234567",
           "redis_password": "redis-pass-12345"}
RAW = {
    "name": "shop",
    "services": [
        {"name": "api", "image": "opsdeck/refapp:0.1.0", "port": 8000, "replicas": 2,
         "uses": ["postgres", "redis"], "secrets": ["admin_token"],
         "env": {"LOG_FORMAT": "json"},
         "health": {"live": "/health/live", "ready": "/health/ready", "interval": 5, "retries": 3},
         "autoscaling": {"min": 3, "max": 8, "cpu": 70},
         "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                       "limits": {"cpu": "500m", "memory": "256Mi"}},
         "route": {"path": "/api/", "rate": "10r/s", "burst": 20}},
        {"name": "worker", "image": "opsdeck/refapp:0.1.0", "replicas": 2, "uses": ["redis"],
         "env": {"ROLE": "worker"}},
    ],
    "postgres": {"enabled": True, "storage": "20Gi"},
    "redis": {"enabled": True, "password_secret": "redis_password"},
    "proxy": {"port": 8080},
    "secrets": SECRETS,
}


def model(target, **changes):
    raw = copy.deepcopy(RAW)
    raw["target"] = target
    raw.update(changes)
    return normalize(raw)


def _compose_view(project):
    out = {}
    for name, svc in project["services"].items():
        if name in ("proxy", "postgres", "redis"):
            continue
        limits = svc.get("deploy", {}).get("resources", {}).get("limits", {})
        health = svc.get("healthcheck", {})
        out[name] = {
            "image": svc["image"],
            "replicas": svc.get("deploy", {}).get("replicas", 1),
            "env": svc.get("environment", {}),
            "secrets": sorted("/run/secrets/" + (s if isinstance(s, str) else s["target"])
                              for s in svc.get("secrets", [])),
            "ready": "/health/ready" if "/health/ready" in " ".join(health.get("test", [])) else None,
            "interval": int(health["interval"].rstrip("s")) if health else None,
            "cpu": float(limits["cpus"]) if "cpus" in limits else None,
            "memory": int(limits["memory"]) if "memory" in limits else None,
            "uid": int(svc["user"].split(":")[0]),
            "read_only": svc.get("read_only", False),
        }
    return out


def _cpu(text):
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _memory(text):
    return int(text[:-2]) * 1024 ** {"Ki": 1, "Mi": 2, "Gi": 3}[text[-2:]]


def _kubernetes_view(manifests):
    out = {}
    hpas = {m["spec"]["scaleTargetRef"]["name"]: m for m in manifests
            if m["kind"] == "HorizontalPodAutoscaler"}
    for item in manifests:
        if item["kind"] != "Deployment":
            continue
        name = item["metadata"]["name"]
        container = item["spec"]["template"]["spec"]["containers"][0]
        limits = container.get("resources", {}).get("limits", {})
        volumes = {v["name"]: v for v in item["spec"]["template"]["spec"]["volumes"]}
        secrets = []
        if "secrets" in volumes:
            secrets = sorted("/run/secrets/" + src["secret"]["items"][0]["path"]
                             for src in volumes["secrets"]["projected"]["sources"])
        ready = container.get("readinessProbe", {})
        out[name] = {
            "image": container["image"],
            "replicas": item["spec"].get("replicas", hpas[name]["spec"]["minReplicas"]
                                         if name in hpas else None),
            "env": {e["name"]: e["value"] for e in container.get("env", [])},
            "secrets": secrets,
            "ready": ready.get("httpGet", {}).get("path"),
            "interval": ready.get("periodSeconds") if "httpGet" in ready else None,
            "cpu": _cpu(limits["cpu"]) if "cpu" in limits else None,
            "memory": _memory(limits["memory"]) if "memory" in limits else None,
            "uid": item["spec"]["template"]["spec"]["securityContext"]["runAsUser"],
            "read_only": container["securityContext"]["readOnlyRootFilesystem"],
        }
    return out


@pytest.mark.parametrize("variant", ["as-is", "no-autoscaling", "one-replica"])
def test_the_three_targets_give_the_same_answers(variant):
    changes = {}
    if variant != "as-is":
        services = copy.deepcopy(RAW["services"])
        services[0].pop("autoscaling")
        if variant == "one-replica":
            services[0]["replicas"] = 1
        changes["services"] = services
    compose = _compose_view(_compose.render(model("compose", **changes), SECRETS)["project"])
    swarm = _compose_view(_swarm.render(model("swarm", **changes), SECRETS)["stack"])
    kubernetes = _kubernetes_view(_kubernetes.render(model("kubernetes", **changes), SECRETS))
    assert compose == swarm == kubernetes
    assert compose["api"]["replicas"] == {"as-is": 3, "no-autoscaling": 2, "one-replica": 1}[variant]
    assert compose["api"]["secrets"] == ["/run/secrets/admin_token", "/run/secrets/postgres_password",
                                         "/run/secrets/redis_password"]


def test_routes_are_the_same_on_every_target():
    for target in _fidelity.TARGETS:
        routes = proxy_routes(model(target))
        assert [(r["name"], r["path"], r["rate"], r["burst"]) for r in routes] == [
            ("api", "/api/", "10r/s", 20)]
    ingress = [m for m in _kubernetes.render(model("kubernetes"), SECRETS) if m["kind"] == "Ingress"]
    assert ingress[0]["metadata"]["annotations"]["nginx.ingress.kubernetes.io/limit-rps"] == "10"


def test_report_sorts_fields_into_native_emulated_dropped():
    compose = _fidelity.report(model("compose"))
    dropped = {e["field"] for e in compose["dropped"]}
    assert dropped == {"stack_services[api].autoscaling", "stack_postgres.storage"}
    assert "stack_redis.storage" not in dropped, "only what the model asks for is reported"
    kubernetes = _fidelity.report(model("kubernetes"))
    assert kubernetes["dropped"] == []
    assert {"field": "stack_services[api].autoscaling", "how": "HorizontalPodAutoscaler 3..8"} \
        in kubernetes["native"]
    swarm = _fidelity.report(model("swarm"))
    assert any(e["field"] == "rolling updates" for e in swarm["native"])
    assert any(e["field"] == "rolling updates" for e in compose["emulated"])
    assert _fidelity.summary(compose)[0] == "fidelity on compose: %d native, %d emulated, 2 dropped" % (
        len(compose["native"]), len(compose["emulated"]))


def test_strict_refuses_a_model_that_would_lose_fields_naming_them():
    with pytest.raises(ModelError) as err:
        model("swarm", strict=True)
    text = str(err.value)
    assert "stack_services[api].autoscaling: dropped on swarm" in text
    assert "stack_postgres.storage: dropped on swarm" in text
    assert model("kubernetes", strict=True)["strict"] is True
