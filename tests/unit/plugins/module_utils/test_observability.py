"""stack_monitoring and stack_logging: validation, defaults and error messages."""

import copy

import pytest

from ansible_collections.opsdeck.stack.plugins.module_utils.model.stack import ModelError, images, normalize

BASE = {
    "name": "shop",
    "services": [{"name": "api", "image": "opsdeck/refapp:0.1.0", "port": 8000, "route": {"path": "/api/"}}],
    "redis": {"enabled": True},
    "secrets": {"grafana_admin_password": "g-secret-value-1", "elastic_password": "e-secret-value-1",
                "kibana_system_password": "k-secret-value-1", "slack_webhook_url": "https://hooks.example/x",
                "logstash_writer_password": "l-secret-value-1"},
}


TRANSPORT = {"elastic_transport_ca_crt": "ca-pem-stand-in-0001", "elastic_transport_crt": "crt-pem-stand-in-0001",
             "elastic_transport_key": "key-pem-stand-in-0001"}


def build(**changes):
    raw = copy.deepcopy(BASE)
    raw.update(changes)
    return raw


def errors_of(raw):
    with pytest.raises(ModelError) as info:
        normalize(raw)
    return info.value.errors


def test_both_sections_default_to_disabled():
    model = normalize(build())
    assert model["monitoring"]["enabled"] is False
    assert model["logging"]["enabled"] is False
    assert not any(i["component"] in ("prometheus", "alertmanager", "exporters") for i in model["images"])


def test_monitoring_defaults():
    mon = normalize(build(monitoring={"enabled": True}))["monitoring"]
    assert mon["retention_time"] == "15d" and mon["retention_size"] is None
    assert mon["port"] == 0 and mon["redis_queues"] == []
    assert mon["alerts"]["error_rate_per_second"] == 0.1
    assert mon["alerting"]["slack"] is None and mon["grafana"]["enabled"] is True


def test_monitoring_images_are_built_from_recipes_on_docker_targets():
    model = normalize(build(monitoring={"enabled": True}))
    built = {i["component"]: (i["image"], i["recipe"], i["pull"]) for i in model["images"]}
    assert built["prometheus"] == ("opsdeck/prometheus:2.42", "prometheus", False)
    assert built["alertmanager"] == ("opsdeck/alertmanager:0.25", "alertmanager", False)
    assert built["exporters"] == ("opsdeck/exporters:bookworm", "exporters", False)
    k8s = normalize(build(target="kubernetes", monitoring={"enabled": True}))
    assert "prometheus" not in {i["component"] for i in images(k8s)}


def test_queue_strings_and_mappings():
    mon = normalize(build(monitoring={"enabled": True, "redis_queues": [
        "ifinu:fila:whatsapp", {"key": "jobs", "max_length": 10, "for": "1m"}]}))["monitoring"]
    assert mon["redis_queues"] == [{"key": "ifinu:fila:whatsapp", "max_length": 1000, "for": "5m"},
                                   {"key": "jobs", "max_length": 10, "for": "1m"}]


def test_monitoring_errors_name_field_value_and_allowed():
    errors = errors_of(build(monitoring={
        "enabled": "maybe", "retention_time": "15 days", "retention_size": "10G", "port": 70000,
        "redis_queues": [{"key": "bad key"}, {"max_length": 0}], "colour": "red",
        "alerts": {"error_ratio": 2, "latency": 1},
        "alerting": {"slack": {"channel": "devops"}, "pagerduty": {"routing_key_secret": "pd"},
                     "email": {"to": "nobody"}}}))
    expected = [
        "stack_monitoring.colour: unknown field (allowed: ",
        "stack_monitoring.enabled: must be true or false (got 'maybe')",
        "stack_monitoring.retention_time: '15 days' is not valid (allowed: a Prometheus duration such as 15d or 12h)",
        "stack_monitoring.retention_size: '10G' is not valid (allowed: a size such as 10GB or 512MB)",
        "stack_monitoring.port: 70000 is out of range (allowed: 0..65535)",
        "stack_monitoring.redis_queues[bad key].key: 'bad key' is not valid (allowed: a Redis key",
        "stack_monitoring.redis_queues[1].key: is required",
        "stack_monitoring.redis_queues[1].max_length: 0 is out of range (allowed: 1..1000000000)",
        "stack_monitoring.alerts.latency: unknown field (allowed: ",
        "stack_monitoring.alerts.error_ratio: 2 is out of range (allowed: 0..1)",
        "stack_monitoring.alerting.slack.channel: 'devops' is not valid (allowed: a channel such as #devops-alerts)",
        "stack_monitoring.alerting.email.to: 'nobody' is not valid (allowed: an e-mail address",
        "stack_monitoring.alerting.email.from: is required",
        "stack_monitoring.alerting.email.smarthost: is required",
    ]
    for prefix in expected:
        assert any(e.startswith(prefix) for e in errors), (prefix, errors)


def test_enabled_monitoring_needs_its_secrets():
    raw = build(monitoring={"enabled": True, "alerting": {"pagerduty": {}}})
    raw["secrets"].pop("grafana_admin_password")
    errors = errors_of(raw)
    assert "stack_monitoring.alerting.pagerduty.routing_key_secret: secret 'pagerduty_routing_key' " \
           "is not defined in stack_secrets" in errors[0] or any(
               e.startswith("stack_monitoring.alerting.pagerduty.routing_key_secret: secret 'pagerduty_routing_key'")
               for e in errors)
    assert any(e.startswith("stack_monitoring.grafana.admin_password_secret: secret 'grafana_admin_password'")
               for e in errors)


def test_disabled_monitoring_needs_no_secret():
    raw = build(monitoring={"enabled": False, "alerting": {"pagerduty": {}}})
    raw["secrets"] = {}
    normalize(raw)


def test_app_service_may_not_take_a_monitoring_name():
    raw = build()
    raw["services"].append({"name": "node-exporter", "image": "x/y:1"})
    assert any(e.startswith("stack_services[node-exporter].name: 'node-exporter' is reserved") for e in errors_of(raw))


def test_logging_defaults_follow_the_environment():
    dev = normalize(build(logging={"enabled": True}))["logging"]
    assert dev["elasticsearch"] == {"nodes": 1, "heap": "512m", "storage": "5Gi"}
    assert dev["retention_days"] == {"app": 30, "audit": 90}
    raw = build(environment="prod", logging={"enabled": True})
    raw["secrets"].update(TRANSPORT)
    prod = normalize(raw)["logging"]
    assert prod["elasticsearch"]["nodes"] == 3 and prod["elasticsearch"]["heap"] == "2g"


def test_a_cluster_needs_the_transport_certificates():
    errors = errors_of(build(environment="prod", logging={"enabled": True}))
    for name in TRANSPORT:
        assert ("stack_logging.elasticsearch.nodes (3 nodes need the transport certificates of "
                "playbooks/elk_certs.yml): secret '%s' is not defined in stack_secrets" % name) in " ".join(errors)
    assert normalize(build(logging={"enabled": True}))["logging"]["elasticsearch"]["nodes"] == 1, \
        "a single node needs no certificates"


def test_logging_errors():
    errors = errors_of(build(environment="prod", logging={
        "enabled": True, "retention_days": {"app": 60, "audit": 30},
        "elasticsearch": {"nodes": 1, "heap": "2GB"}, "version": "7.17.0"}))
    for prefix in (
            "stack_logging.version: '7.17.0' is not valid (allowed: an Elastic 8.x version",
            "stack_logging.elasticsearch.heap: '2GB' is not valid (allowed: a JVM heap size",
            "stack_logging.elasticsearch.nodes: 1 is not allowed in prod (allowed: 3, 5, 7, 9)",
            "stack_logging.retention_days.audit: 30 is shorter than retention_days.app 60"):
        assert any(e.startswith(prefix) for e in errors), (prefix, errors)
    assert any(e.startswith("stack_logging.elasticsearch.nodes: 2 is even")
               for e in errors_of(build(logging={"elasticsearch": {"nodes": 2}})))


def test_enabled_logging_needs_its_secrets():
    raw = build(logging={"enabled": True})
    raw["secrets"] = {"grafana_admin_password": "x"}
    errors = errors_of(raw)
    assert any(e.startswith("stack_logging.elastic_password_secret: secret 'elastic_password'") for e in errors)
    assert any(e.startswith("stack_logging.kibana_password_secret: secret 'kibana_system_password'")
               for e in errors)
