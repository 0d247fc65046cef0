"""Services with several named ports, several routes, paths without a trailing slash and
ports published on the host (seeds 000, 003, 004), on every target."""

import copy

import pytest
from k8s_support import validation_errors

from ansible_collections.opsdeck.stack.plugins.module_utils.compose import render as compose
from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import manifests as k8s
from ansible_collections.opsdeck.stack.plugins.module_utils.model import fidelity
from ansible_collections.opsdeck.stack.plugins.module_utils.model.stack import ModelError, normalize, proxy_routes
from ansible_collections.opsdeck.stack.plugins.module_utils.swarm import render as swarm

# Seed 004's vision API: API on 8000 and a dashboard on 8080, both published in dev;
# seed 000's admin API on its own port behind /admin/; seed 003's /api/v1/auth.
RAW = {
    "name": "vision",
    "environment": "dev",
    "proxy": {"port": 8090},
    "services": [
        {"name": "vision-api", "image": "registry.example.com/vision/api:1.0",
         "ports": [{"name": "api", "port": 8000, "publish": 8000},
                   {"name": "dashboard", "port": 8080, "publish": "0.0.0.0:8080"},
                   {"name": "metrics", "port": 9102, "protocol": "udp"}],
         "health": {"port": "api", "ready": "/health"},
         "routes": [{"path": "/api/"},
                    {"name": "vision-admin", "path": "/admin/", "port": "dashboard", "rate": "1r/s"},
                    {"path": "/api/v1/auth", "rate": "5r/s"}],
         "depends_on": ["worker"]},
        {"name": "worker", "image": "registry.example.com/vision/worker:1.0", "port": 7000},
    ],
    "secrets": {},
}


def model(**changes):
    raw = copy.deepcopy(RAW)
    raw.update(changes)
    return normalize(raw)


def errors_of(raw):
    with pytest.raises(ModelError) as info:
        normalize(raw)
    return info.value.errors


def test_ports_routes_and_their_defaults_are_normalised():
    api = model()["services"][0]
    assert [p["name"] for p in api["ports"]] == ["api", "dashboard", "metrics"]
    assert api["port"] == 8000, "the first port is the service's main port"
    assert api["ports"][0]["publish"] == {"address": "127.0.0.1", "port": 8000}
    assert api["ports"][1]["publish"] == {"address": "0.0.0.0", "port": 8080}
    assert [(r["name"], r["path"], r["port"], r["target_port"]) for r in api["routes"]] == [
        ("vision-api", "/api/", "api", 8000), ("vision-admin", "/admin/", "dashboard", 8080),
        ("vision-api-3", "/api/v1/auth", "api", 8000)]
    assert api["routes"][1]["rate"] == "1r/s" and api["routes"][0]["rate"] == "10r/s"
    assert api["health"]["target_port"] == 8000
    worker = model()["services"][1]
    assert worker["ports"] == [{"name": "http", "port": 7000, "protocol": "tcp", "publish": None}]


@pytest.mark.parametrize("change, expected", [
    ({"port": 8000}, "stack_services[vision-api].port: give either port or ports, not both"),
    ({"route": {"path": "/x/"}}, "stack_services[vision-api].route: give either route or routes, not both"),
    ({"routes": [{"path": "/api/", "port": "grpc"}]},
     "stack_services[vision-api].routes[vision-api].port: 'grpc' is not a port of this service "
     "(ports: api, dashboard, metrics)"),
    ({"health": {"port": "nope", "ready": "/h"}},
     "stack_services[vision-api].health.port: 'nope' is not a port of this service"),
    ({"ports": [{"name": "api", "port": 8000}, {"name": "other", "port": 8000}]},
     "stack_services[vision-api].ports[other].port: 8000/tcp is already the port api"),
    ({"ports": [{"name": "API", "port": 8000}]}, "stack_services[vision-api].ports[API].name: 'API' is not valid"),
    ({"ports": [{"name": "a-very-long-port-name", "port": 8000}]},
     "stack_services[vision-api].ports[a-very-long-port-name].name"),
    ({"routes": [{"path": "/a/"}, {"path": "/a"}]},
     "stack_services[vision-api].routes[vision-api-2].path: /a is already routed to vision-api"),
    ({"routes": [{"path": "/a/", "name": "worker"}, {"path": "/b/", "name": "worker"}]},
     "stack_services[vision-api].routes[worker]: the name 'worker' is used more than once"),
    ({"routes": [{"path": "/m/", "port": "metrics"}]},
     "stack_services[vision-api].routes[vision-api].port: 'metrics' is a UDP port (a route needs TCP)"),
    ({"routes": [{"path": "/api//"}]}, "stack_services[vision-api].routes[0].path: '/api//' is not valid"),
])
def test_service_errors_name_the_port_or_route(change, expected):
    raw = copy.deepcopy(RAW)
    raw["services"][0].update(change)
    errors = errors_of(raw)
    assert any(e.startswith(expected) for e in errors), errors


def test_prod_refuses_published_ports_unless_allowed():
    raw = copy.deepcopy(RAW)
    raw["environment"] = "prod"
    errors = errors_of(raw)
    assert "stack_services[vision-api].ports[api].publish: publishing on the host is refused here " \
           "(stack_allow_host_ports is false, the default in prod)" in errors
    raw["allow_host_ports"] = True
    assert normalize(raw)["services"][0]["ports"][0]["publish"]["port"] == 8000


def test_route_names_are_unique_in_the_stack():
    raw = copy.deepcopy(RAW)
    raw["services"][1]["routes"] = [{"name": "vision-admin", "path": "/w/"}]
    assert any(e.startswith("stack_services[worker].routes[vision-admin].name: 'vision-admin' is already "
                            "the name of a route of vision-api") for e in errors_of(raw))


def test_compose_exposes_every_port_and_publishes_what_is_asked():
    project = compose.render(model(), {})["project"]
    api = project["services"]["vision-api"]
    assert api["expose"] == ["8000", "8080", "9102/udp"]
    assert api["ports"] == ["127.0.0.1:8000:8000", "0.0.0.0:8080:8080"]
    assert "ports" not in project["services"]["worker"]
    assert "8000" in " ".join(api["healthcheck"]["test"]) and "/health" in " ".join(api["healthcheck"]["test"])
    assert project["services"]["proxy"]["depends_on"] == {"vision-api": {"condition": "service_healthy"}}


def test_each_route_is_an_nginx_route_to_its_port():
    routes = {r["name"]: r for r in proxy_routes(model())}
    assert routes["vision-api"]["upstreams"] == ["vision-api:8000"]
    assert routes["vision-admin"]["upstreams"] == ["vision-api:8080"]
    assert routes["vision-admin"]["rate"] == "1r/s"
    assert routes["vision-api-3"]["path"] == "/api/v1/auth"
    # the health endpoint is exposed for the route on the health port only
    assert routes["vision-api"]["health_path"] == "/health" and "health_path" not in routes["vision-admin"]


def test_swarm_publishes_in_host_mode():
    stack = swarm.render(model(target="swarm"), {})["stack"]
    assert stack["services"]["vision-api"]["ports"] == [
        {"target": 8000, "published": 8000, "protocol": "tcp", "mode": "host"},
        {"target": 8080, "published": 8080, "protocol": "tcp", "mode": "host"}]
    rep = fidelity.report(model(target="swarm"))
    assert any(e["field"] == "stack_services[vision-api].ports[dashboard].publish" for e in rep["native"])


def test_kubernetes_ports_services_ingresses_and_policies():
    rendered = k8s.render(model(target="kubernetes"), {})
    assert validation_errors(rendered) == []
    by = {(m["kind"], m["metadata"]["name"]): m for m in rendered}
    container = by[("Deployment", "vision-api")]["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"] == [{"name": "api", "containerPort": 8000, "protocol": "TCP"},
                                  {"name": "dashboard", "containerPort": 8080, "protocol": "TCP"},
                                  {"name": "metrics", "containerPort": 9102, "protocol": "UDP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "api"}
    assert [p["name"] for p in by[("Service", "vision-api")]["spec"]["ports"]] == ["api", "dashboard", "metrics"]
    admin = by[("Ingress", "vision-admin")]
    backend = admin["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "vision-api", "port": {"name": "dashboard"}}
    assert admin["metadata"]["annotations"][k8s.NGINX + "limit-rps"] == "1"
    auth = by[("Ingress", "vision-api-3")]["spec"]["rules"][0]["http"]["paths"][0]
    assert (auth["path"], auth["pathType"]) == ("/api/v1/auth", "Prefix")
    ingress_from_controller = by[("NetworkPolicy", "allow-vision-api")]["spec"]["ingress"][0]
    assert ingress_from_controller["ports"] == [{"protocol": "TCP", "port": 8000}, {"protocol": "TCP", "port": 8080}]
    egress = by[("NetworkPolicy", "allow-vision-api")]["spec"]["egress"]
    assert {"protocol": "TCP", "port": 7000} in egress[0]["ports"]
    rep = fidelity.report(model(target="kubernetes"))
    assert any(e["field"] == "stack_services[vision-api].ports[api].publish" for e in rep["dropped"])


def test_every_host_port_is_listed_once_for_the_preflight_check():
    ports = {p["field"]: p["port"] for p in model(proxy={"port": 8081})["host_ports"]}
    assert ports == {"stack_proxy.port": 8081, "stack_services[vision-api].ports[api].publish": 8000,
                     "stack_services[vision-api].ports[dashboard].publish": 8080}
    raw = copy.deepcopy(RAW)
    raw["proxy"]["port"] = 8080
    assert "stack_services[vision-api].ports[dashboard].publish: 8080 is already published by " \
           "stack_proxy.port" in errors_of(raw)


def test_compose_refuses_what_cannot_start_on_one_host():
    raw = copy.deepcopy(RAW)
    raw["proxy"]["replicas"] = 2
    raw["services"][0]["replicas"] = 3
    errors = errors_of(raw)
    assert "stack_proxy.replicas: 2 is not allowed on compose: every replica would publish the same host " \
           "port (allowed on compose: 1; Swarm runs one per node)" in errors
    assert any(e.startswith("stack_services[vision-api].ports[api].publish: 3 replicas would all publish host "
                            "port 8000 on compose") for e in errors)
    raw["target"] = "swarm"
    stack = swarm.render(normalize(raw), {})["stack"]
    assert stack["services"]["vision-api"]["deploy"]["placement"] == {"max_replicas_per_node": 1}
    assert stack["services"]["proxy"]["deploy"]["replicas"] == 2


def test_session_affinity_is_emulated_by_the_proxy_on_compose_only():
    raw = copy.deepcopy(RAW)
    raw["services"][1]["session_affinity"] = True
    raw["services"][1]["route"] = {"path": "/w/"}
    routes = {r["name"]: r for r in proxy_routes(normalize(raw))}
    assert routes["worker"]["affinity"] is True and routes["vision-api"]["affinity"] is False
    rep = fidelity.report(normalize(raw))
    assert any(e["field"] == "stack_services[worker].session_affinity" and "hash" in e["how"]
               for e in rep["emulated"])
    raw["target"] = "swarm"
    assert "stack_services[worker].session_affinity" in {e["field"] for e in fidelity.report(normalize(raw))["dropped"]}


def test_kubernetes_fidelity_tells_the_truth_about_the_ingress():
    rep = fidelity.report(model(target="kubernetes", proxy={"tls": {"enabled": True, "protocols": ["TLSv1.3"]}},
                                secrets={"tls_cert": "c", "tls_key": "k"}))
    emulated = {e["field"]: e["how"] for e in rep["emulated"]}
    assert "503, not 429" in emulated["stack_services[vision-api].routes[vision-admin].rate"]
    assert "upstream-keepalive-connections" in emulated["stack_proxy upstream keepalive"]
    dropped = {e["field"]: e["how"] for e in rep["dropped"]}
    assert "ssl-protocols" in dropped["stack_proxy.tls.protocols"]
