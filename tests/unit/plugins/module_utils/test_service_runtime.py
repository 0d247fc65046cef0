"""How a service runs: probes per kind with their own timings (seed 003: liveness initial
delay 30 / period 10, readiness 10 / 5), rolling update parameters (seed 001: maxSurge /
maxUnavailable), stop grace, placement, labels and annotations, entrypoint, a user by name
(seed 004: vision); on every target."""

import copy

import pytest
from k8s_support import by, validation_errors

from ansible_collections.opsdeck.stack.plugins.module_utils.compose import render as compose
from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import manifests as k8s
from ansible_collections.opsdeck.stack.plugins.module_utils.model import fidelity
from ansible_collections.opsdeck.stack.plugins.module_utils.model.stack import ModelError, normalize, proxy_routes
from ansible_collections.opsdeck.stack.plugins.module_utils.swarm import render as swarm

RAW = {
    "name": "edu",
    "environment": "staging",
    "services": [
        {"name": "checkin", "image": "registry.example.com/edu/checkin:1.0", "port": 3000, "replicas": 5,
         "entrypoint": ["node"], "command": ["dist/main.js", "--price=$5"],
         "env": {"GREETING": "cost $HOME"},
         "health": {"live": {"path": "/health", "initial_delay": 30, "period": 10},
                    "ready": {"path": "/health/ready", "initial_delay": 10, "period": 5}},
         "update": {"max_surge": "25%", "max_unavailable": "1", "stop_grace_period": 45, "parallelism": 2,
                    "delay": 10},
         "placement": {"node_labels": {"tier": "app"}, "max_per_node": 1},
         "labels": {"team": "checkin"}, "annotations": {"example.com/owner": "ops"},
         "route": {"path": "/api/v1/checkin"}},
        {"name": "broker-probe", "image": "registry.example.com/edu/worker:1.0", "port": 9092,
         "health": {"ready": {"tcp": True}}},
        {"name": "cli", "image": "registry.example.com/edu/cli:1.0", "user": "vision",
         "health": {"ready": {"exec": ["cli", "ping"], "period": 20}}},
    ],
}


def without_cli():
    """The services but cli (its user is a name, which Kubernetes refuses)."""
    return [svc for svc in copy.deepcopy(RAW["services"]) if svc["name"] != "cli"]


def model(target, **changes):
    raw = copy.deepcopy(RAW)
    raw.update(changes, target=target)
    return normalize(raw)


def test_probes_are_normalised_per_kind_with_their_own_timings():
    checkin, broker, cli = model("compose")["services"]
    live, ready = checkin["health"]["live"], checkin["health"]["ready"]
    assert (live["kind"], live["path"], live["initial_delay"], live["period"]) == ("http", "/health", 30, 10)
    assert (ready["kind"], ready["initial_delay"], ready["period"], ready["failures"]) == ("http", 10, 5, 3)
    assert broker["health"]["ready"]["kind"] == "tcp" and broker["health"]["live"]["kind"] == "tcp"
    assert cli["health"]["ready"]["command"] == ["cli", "ping"]
    # /healthz/<route> is only proxied for an HTTP ready probe on the route's port
    assert proxy_routes(model("compose"))[0]["health_path"] == "/health/ready"


def test_compose_health_checks_grace_entrypoint_and_literal_dollars():
    services = compose.render(model("compose"), {})["project"]["services"]
    checkin = services["checkin"]
    assert checkin["healthcheck"]["interval"] == "5s" and checkin["healthcheck"]["start_period"] == "10s"
    assert "/health/ready" in " ".join(checkin["healthcheck"]["test"])
    assert checkin["stop_grace_period"] == "45s"
    assert checkin["entrypoint"] == ["node"] and checkin["command"] == ["dist/main.js", "--price=$$5"]
    assert checkin["environment"]["GREETING"] == "cost $$HOME", "Compose must not interpolate the model's values"
    assert checkin["labels"]["team"] == "checkin" and checkin["annotations"] == {"example.com/owner": "ops"}
    assert "socket.create_connection(('127.0.0.1', 9092), 3)" in services["broker-probe"]["healthcheck"]["test"][1]
    assert services["cli"]["healthcheck"]["test"] == ["CMD", "cli", "ping"]
    assert services["cli"]["healthcheck"]["interval"] == "20s"
    assert services["cli"]["user"] == "vision"


def test_swarm_update_config_and_placement():
    services = swarm.render(model("swarm"), {})["stack"]["services"]
    deploy = services["checkin"]["deploy"]
    assert deploy["update_config"]["parallelism"] == 2 and deploy["update_config"]["delay"] == "10s"
    assert deploy["placement"] == {"constraints": ["node.labels.tier == app"], "max_replicas_per_node": 1}
    assert "annotations" not in services["checkin"]
    assert services["checkin"]["stop_grace_period"] == "45s"


def test_kubernetes_probes_strategy_grace_placement_labels():
    manifests = k8s.render(model("kubernetes", services=without_cli()), {})
    assert validation_errors(manifests) == []
    deployment = by(manifests, "Deployment", "checkin")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["livenessProbe"] == {"httpGet": {"path": "/health", "port": "http"}, "initialDelaySeconds": 30,
                                          "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 5}
    assert container["readinessProbe"]["initialDelaySeconds"] == 10
    assert container["readinessProbe"]["periodSeconds"] == 5
    assert "startupProbe" not in container, "an explicit initial delay replaces the startup allowance"
    assert container["command"] == ["node"] and container["args"] == ["dist/main.js", "--price=$5"]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": "25%"}
    assert pod["terminationGracePeriodSeconds"] == 45
    assert pod["nodeSelector"] == {"tier": "app"}
    assert pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0][
        "topologyKey"] == "kubernetes.io/hostname"
    assert deployment["metadata"]["labels"]["team"] == "checkin"
    assert deployment["spec"]["template"]["metadata"]["labels"]["team"] == "checkin"
    assert deployment["spec"]["template"]["metadata"]["annotations"]["example.com/owner"] == "ops"
    broker = by(manifests, "Deployment", "broker-probe")["spec"]["template"]["spec"]["containers"][0]
    assert broker["readinessProbe"]["tcpSocket"] == {"port": "http"}
    assert broker["startupProbe"]["tcpSocket"] == {"port": "http"}


@pytest.mark.parametrize("target, change, expected", [
    ("kubernetes", {}, "stack_services[cli].user: 'vision' is a name: Kubernetes runs containers by number"),
    ("compose", {"labels": {"app.kubernetes.io/name": "x"}},
     "stack_services[checkin].labels.app.kubernetes.io/name: is set by the platform"),
    ("compose", {"health": {"ready": {"path": "/a", "tcp": True}}},
     "stack_services[checkin].health.ready: needs exactly one of path, tcp and exec (got path, tcp)"),
    ("compose", {"update": {"max_surge": "lots"}}, "stack_services[checkin].update.max_surge: 'lots' is not valid"),
    ("compose", {"labels": {"bad key!": "x"}}, "stack_services[checkin].labels.bad key!: 'bad key!' is not valid"),
])
def test_errors_name_the_field(target, change, expected):
    raw = copy.deepcopy(RAW)
    raw["target"] = target
    raw["services"][0].update(change)
    with pytest.raises(ModelError) as info:
        normalize(raw)
    assert any(e.startswith(expected) for e in info.value.errors), info.value.errors


def test_fidelity_says_what_each_target_does_with_them():
    compose_rep = fidelity.report(model("compose"))
    dropped = {e["field"] for e in compose_rep["dropped"]}
    assert "stack_services[checkin].placement" in dropped
    assert "stack_services[checkin].update.max_surge" in dropped
    emulated = {e["field"] for e in compose_rep["emulated"]}
    assert "stack_services[checkin].health.live" in emulated
    swarm_rep = fidelity.report(model("swarm"))
    assert "stack_services[checkin].annotations" in {e["field"] for e in swarm_rep["dropped"]}
    k8s_rep = fidelity.report(model("kubernetes", services=without_cli()))
    native = {e["field"] for e in k8s_rep["native"]}
    assert {"stack_services[checkin].placement", "stack_services[checkin].update",
            "stack_services[checkin].health"} <= native
