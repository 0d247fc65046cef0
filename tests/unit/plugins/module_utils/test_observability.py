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
    assert mon["alerts"]["error_ratio"] == {"enabled": True, "threshold": 0.05, "for": "5m",
                                            "severity": "warning", "labels": {}}
    assert mon["alerts"]["target_down"] == {"enabled": True, "for": "2m", "severity": "critical", "labels": {}}
    # the absolute 5xx rate is opt-in: no neutral threshold fits every stack
    assert mon["alerts"]["error_rate_per_second"]["enabled"] is False
    assert mon["rules"] == []
    alerting = mon["alerting"]
    assert alerting["slack"] is None and alerting["receivers"] == [] and alerting["routes"] == []
    assert alerting["default_receiver"] is None and alerting["group_by"] == ["alertname", "job"]
    assert mon["grafana"]["enabled"] is True and mon["grafana"]["dashboards"] == []
    assert mon["grafana"]["builtin_dashboards"] == {"system": True, "application": True}


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
        "jobs:pending", {"key": "jobs", "max_length": 10, "for": "1m", "severity": "critical"}]}))["monitoring"]
    assert mon["redis_queues"] == [{"key": "jobs:pending", "max_length": 1000, "for": "5m", "severity": "warning"},
                                   {"key": "jobs", "max_length": 10, "for": "1m", "severity": "critical"}]


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
        "stack_monitoring.alerts.error_ratio.threshold: 2 is out of range (allowed: 0..1)",
        "stack_monitoring.alerting.slack.channel: 'devops' is not valid (allowed: a channel such as #alerts)",
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
    assert dev["elasticsearch"] == {"nodes": 1, "heap": "512m", "storage": "5Gi", "resources": {
        "requests": {"cpu": None, "memory": None}, "limits": {"cpu": None, "memory": None}}}
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


def test_one_elasticsearch_node_in_prod_is_allowed_with_a_warning():
    raw = build(environment="prod", logging={"enabled": True, "elasticsearch": {"nodes": 1}})
    raw["secrets"] = {k: v + "-long-enough" for k, v in raw["secrets"].items()}
    model = normalize(raw)
    assert model["logging"]["elasticsearch"]["nodes"] == 1
    (warning,) = [w for w in model["warnings"] if w.startswith("stack_logging.elasticsearch.nodes:")]
    assert "single Elasticsearch node in prod" in warning and "no replica" in warning
    # not in dev, and not when logging is off
    assert not normalize(build(logging={"enabled": True, "elasticsearch": {"nodes": 1}}))["warnings"]
    raw["logging"]["enabled"] = False
    assert not normalize(raw)["warnings"]


# --- built-in alerts ------------------------------------------------------------------------

def test_builtin_alerts_take_a_threshold_a_switch_or_a_mapping():
    alerts = normalize(build(monitoring={"enabled": True, "alerts": {
        "error_ratio": 0.02, "disk_free_percent": False, "target_down": "no",
        "error_rate_per_second": True,
        "latency_p95_seconds": {"threshold": 1.5, "for": "15m", "severity": "critical",
                                "labels": {"team": "platform"}}}}))["monitoring"]["alerts"]
    assert alerts["error_ratio"]["threshold"] == 0.02 and alerts["error_ratio"]["enabled"] is True
    assert alerts["disk_free_percent"]["enabled"] is False and alerts["disk_free_percent"]["threshold"] == 10
    assert alerts["target_down"]["enabled"] is False
    assert alerts["error_rate_per_second"] == {"enabled": True, "threshold": 1, "for": "5m",
                                               "severity": "warning", "labels": {}}
    # the opt-in alert's threshold alone asks for it; in a mapping, enabled says
    asked = normalize(build(monitoring={"enabled": True, "alerts": {
        "error_rate_per_second": 0.5}}))["monitoring"]["alerts"]["error_rate_per_second"]
    assert asked["enabled"] is True and asked["threshold"] == 0.5
    mapping = normalize(build(monitoring={"enabled": True, "alerts": {
        "error_rate_per_second": {"threshold": 0.5}}}))["monitoring"]["alerts"]["error_rate_per_second"]
    assert mapping["enabled"] is False
    assert alerts["latency_p95_seconds"] == {"enabled": True, "threshold": 1.5, "for": "15m",
                                             "severity": "critical", "labels": {"team": "platform"}}


def test_builtin_alert_errors_and_removed_seed_alerts():
    errors = errors_of(build(monitoring={"enabled": True, "alerts": {
        "quota_usage_percent": 80, "pod_health_ratio": 0.5, "target_down": 3,
        "redis_memory_percent": {"threshold": 101, "for": "soon", "severity": "PAGE",
                                 "labels": {"severity": "x", "bad-label": "y"}}}}))
    for prefix in (
            "stack_monitoring.alerts.quota_usage_percent: the QuotaLimitApproaching alert on tenant quota "
            "metrics is no longer built in: declare it in stack_monitoring.rules",
            "stack_monitoring.alerts.pod_health_ratio: the TenantInstanceUnhealthy alert",
            "stack_monitoring.alerts.target_down: must be a mapping (got 3)",
            "stack_monitoring.alerts.redis_memory_percent.threshold: 101 is out of range (allowed: 0..100)",
            "stack_monitoring.alerts.redis_memory_percent.for: 'soon' is not valid (allowed: a duration",
            "stack_monitoring.alerts.redis_memory_percent.severity: 'PAGE' is not valid (allowed: a lowercase word",
            "stack_monitoring.alerts.redis_memory_percent.labels.bad-label: 'bad-label' is not valid "
            "(allowed: a Prometheus label name",
            "stack_monitoring.alerts.redis_memory_percent.labels.severity: is set by "
            "stack_monitoring.alerts.redis_memory_percent.severity"):
        assert any(e.startswith(prefix) for e in errors), (prefix, errors)


# --- the user's rules -----------------------------------------------------------------------

GROUP = {"name": "shop", "interval": "1m", "rules": [
    {"record": "job:orders:rate5m", "expr": "sum by (job) (rate(orders_total[5m]))"},
    {"alert": "OrdersStalled", "expr": "job:orders:rate5m == 0", "for": "15m",
     "labels": {"severity": "warning", "team": "shop"},
     "annotations": {"summary": "No order on {{ $labels.job }}"}}]}


def test_user_rules_are_kept_as_written():
    rules = normalize(build(monitoring={"enabled": True, "rules": [GROUP]}))["monitoring"]["rules"]
    assert rules[0]["name"] == "shop" and rules[0]["interval"] == "1m"
    assert rules[0]["rules"][1] == {"alert": "OrdersStalled", "record": None, "expr": "job:orders:rate5m == 0",
                                    "for": "15m", "labels": {"severity": "warning", "team": "shop"},
                                    "annotations": {"summary": "No order on {{ $labels.job }}"}}


def test_user_rule_errors_name_the_group_and_the_rule():
    errors = errors_of(build(monitoring={"enabled": True, "rules": [
        {"name": "shop", "rules": [
            {"record": "job:orders:rate5m", "expr": "x", "for": "5m", "annotations": {"summary": "s"}},
            {"alert": "Both", "record": "job:x", "expr": "x"},
            {"alert": "NoExpr"},
            {"alert": "Bad Name", "expr": "x"},
            {"expr": "up"},
            {"alert": "Labels", "expr": "up", "labels": {"0bad": "x"}, "for": "5 min"}]},
        {"name": "shop", "rules": [{"alert": "A", "expr": "up"}]},
        {"name": "opsdeck.mine", "rules": []},
        {"rules": [{"alert": "A", "expr": "up"}]}]}))
    for prefix in (
            "stack_monitoring.rules[shop].rules[job:orders:rate5m].for: only alerting rules take for",
            "stack_monitoring.rules[shop].rules[job:orders:rate5m].annotations: only alerting rules take annotations",
            "stack_monitoring.rules[shop].rules[Both]: needs exactly one of alert (an alerting rule) or record",
            "stack_monitoring.rules[shop].rules[NoExpr].expr: is required",
            "stack_monitoring.rules[shop].rules[Bad Name].alert: 'Bad Name' is not valid (allowed: an alert name",
            "stack_monitoring.rules[shop].rules[4]: needs exactly one of alert",
            "stack_monitoring.rules[shop].rules[Labels].labels.0bad: '0bad' is not valid",
            "stack_monitoring.rules[shop].rules[Labels].for: '5 min' is not valid",
            "stack_monitoring.rules[shop]: the name 'shop' is used more than once",
            "stack_monitoring.rules[opsdeck.mine].name: 'opsdeck.mine' starts with opsdeck.",
            "stack_monitoring.rules[opsdeck.mine].rules: is empty (allowed: at least one rule)",
            "stack_monitoring.rules[3].name: is required"):
        assert any(e.startswith(prefix) for e in errors), (prefix, errors)


# --- receivers and routes -------------------------------------------------------------------

def test_receivers_routes_and_their_secrets():
    raw = build(monitoring={"enabled": True, "alerting": {
        "receivers": [{"name": "incidents", "slack": {"channel": "#incidents", "webhook_secret": "incidents_hook"}},
                      {"name": "chatops", "webhook": {"url_secret": "chatops_url"}},
                      {"name": "ops", "email": {"to": "ops@example.com", "from": "am@example.com",
                                                "smarthost": "smtp.example.com:587",
                                                "auth_password_secret": "smtp_password"}},
                      {"name": "pager", "pagerduty": {}}],
        "routes": [{"receiver": "incidents", "match": {"severity": "critical"}}]}})
    errors = errors_of(raw)
    for prefix in (
            "stack_monitoring.alerting.receivers[incidents].slack.webhook_secret: secret 'incidents_hook' is not defined",
            "stack_monitoring.alerting.receivers[chatops].webhook.url_secret: secret 'chatops_url' is not defined",
            "stack_monitoring.alerting.receivers[ops].email.auth_password_secret: secret 'smtp_password'",
            "stack_monitoring.alerting.receivers[pager].pagerduty.routing_key_secret: secret 'pagerduty_routing_key'"):
        assert any(e.startswith(prefix) for e in errors), (prefix, errors)
    raw["secrets"].update(incidents_hook="https://hooks.example/i", chatops_url="https://chat.example/x",
                          smtp_password="smtp-secret-1", pagerduty_routing_key="pd-key-1")
    alerting = normalize(raw)["monitoring"]["alerting"]
    assert [r["name"] for r in alerting["receivers"]] == ["incidents", "chatops", "ops", "pager"]
    assert alerting["routes"][0] == {"receiver": "incidents", "match": {"severity": "critical"}, "match_re": {},
                                     "continue": False, "group_by": [], "group_wait": None,
                                     "group_interval": None, "repeat_interval": None}
    # secrets of a disabled section are not needed
    raw["monitoring"]["enabled"] = False
    raw["secrets"] = {}
    normalize(raw)


def test_receiver_and_route_errors():
    errors = errors_of(build(monitoring={"enabled": True, "alerting": {
        "slack": {"channel": "#alerts"},
        "receivers": [{"name": "slack"}, {"name": "hook", "webhook": {"url": "ftp://x", "url_secret": "s"}},
                      {"name": "both", "webhook": {"url": "https://a.example/x", "url_secret": "slack_webhook_url"}},
                      {"name": "none", "webhook": {}}, {"name": "hook"}],
        "routes": [{"receiver": "missing"}, {"receiver": "slack", "match_re": {"job": "api("}},
                   {"match": {"severity": "critical"}}],
        "default_receiver": "nobody"}}))
    for prefix in (
            "stack_monitoring.alerting.receivers[slack].name: 'slack' is the name of a receiver the model "
            "makes itself (reserved: slack, email, pagerduty, discard)",
            "stack_monitoring.alerting.receivers[hook].webhook.url: 'ftp://x' is not valid (allowed: an http(s) URL)",
            "stack_monitoring.alerting.receivers[both].webhook: needs exactly one of url or url_secret",
            "stack_monitoring.alerting.receivers[none].webhook: needs exactly one of url or url_secret",
            "stack_monitoring.alerting.receivers[hook]: the name 'hook' is used more than once",
            "stack_monitoring.alerting.routes[missing].receiver: 'missing' is not a receiver (defined: ",
            "stack_monitoring.alerting.routes[slack].match_re.job: 'api(' is not a regular expression",
            "stack_monitoring.alerting.routes[2].receiver: is required",
            "stack_monitoring.alerting.default_receiver: 'nobody' is not a receiver"):
        assert any(e.startswith(prefix) for e in errors), (prefix, errors)


# --- per-service scrape settings --------------------------------------------------------------

def test_service_metrics_defaults_and_errors():
    svc = normalize(build())["services"][0]
    assert svc["metrics"] == {"enabled": True, "port": None, "path": "/metrics", "interval": None, "timeout": None}
    raw = build(monitoring={"enabled": True, "scrape_interval": "30s"})
    raw["services"][0]["metrics"] = False
    assert normalize(raw)["services"][0]["metrics"]["enabled"] is False
    raw["services"][0]["metrics"] = {"port": 70000, "path": "metrics", "timeout": "45s"}
    errors = errors_of(raw)
    for prefix in (
            "stack_services[api].metrics.port: 70000 is out of range (allowed: 1..65535)",
            "stack_services[api].metrics.path: 'metrics' is not valid (allowed: an HTTP path such as /metrics)"):
        assert any(e.startswith(prefix) for e in errors), (prefix, errors)
    raw["services"][0]["metrics"] = {"timeout": "45s"}
    assert errors_of(raw) == ["stack_services[api].metrics.timeout: 45s is longer than the scrape interval "
                              "30s (allowed: at most the interval)"]
    raw["services"][0]["metrics"] = {"timeout": "10s", "interval": "5s"}
    assert errors_of(raw)[0].startswith("stack_services[api].metrics.timeout: 10s is longer than the scrape "
                                        "interval 5s")


# --- dashboards -------------------------------------------------------------------------------

BOARD = {"title": "Shop", "panels": [{"id": 1, "type": "timeseries", "title": "Orders"}]}


def test_dashboards_inline_as_mapping_or_text():
    import json
    grafana = normalize(build(monitoring={"enabled": True, "grafana": {"dashboards": [
        {"name": "shop", "json": BOARD, "folder": "shop"},
        {"name": "text", "json": json.dumps(dict(BOARD, title="Text"))}]}}))["monitoring"]["grafana"]
    assert grafana["dashboards"][0] == {"name": "shop", "file": None, "json": BOARD, "folder": "shop"}
    assert grafana["dashboards"][1]["json"]["title"] == "Text" and grafana["dashboards"][1]["folder"] == "opsdeck"


def test_dashboard_files_come_from_the_stack_model_action():
    import json
    raw = build(monitoring={"enabled": True, "grafana": {"dashboards": [
        {"name": "shop", "file": "dashboards/shop.json"}, {"name": "gone", "file": "dashboards/gone.json"},
        {"name": "broken", "file": "dashboards/broken.json"}, {"name": "list", "file": "dashboards/list.json"}]}})
    files = {"dashboards/shop.json": {"path": "/inv/dashboards/shop.json", "content": json.dumps(BOARD)},
             "dashboards/gone.json": {"error": "cannot read /inv/dashboards/gone.json: No such file or directory"},
             "dashboards/broken.json": {"path": "/inv/dashboards/broken.json", "content": "{"},
             "dashboards/list.json": {"path": "/inv/dashboards/list.json", "content": "[]"}}
    with pytest.raises(ModelError) as info:
        normalize(raw, files=files)
    errors = info.value.errors
    assert errors == [
        "stack_monitoring.grafana.dashboards[gone].file: cannot read /inv/dashboards/gone.json: No such file or directory",
        "stack_monitoring.grafana.dashboards[broken].file: /inv/dashboards/broken.json is not valid JSON: "
        "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        "stack_monitoring.grafana.dashboards[list].file: /inv/dashboards/list.json holds no JSON object (a dashboard)"]
    raw["monitoring"]["grafana"]["dashboards"] = raw["monitoring"]["grafana"]["dashboards"][:1]
    assert normalize(raw, files=files)["monitoring"]["grafana"]["dashboards"][0]["json"] == BOARD
    # without the action (the stack_model filter), a file cannot be read: say so
    assert errors_of(raw) == [
        "stack_monitoring.grafana.dashboards[shop].file: dashboard files are read by the opsdeck.stack.stack_model "
        "action (on the controller, beside the inventory); here give json instead"]


def test_dashboard_errors():
    errors = errors_of(build(target="kubernetes", monitoring={"enabled": True, "grafana": {"dashboards": [
        {"name": "a", "json": BOARD}, {"name": "b", "json": dict(BOARD, uid="a")},
        {"name": "c", "json": dict(BOARD, uid="opsdeck-system", title="C")}, {"name": "d", "json": {"panels": {}}},
        {"name": "e"}, {"name": "f", "json": "not json"}, {"name": "system-overview", "json": dict(BOARD, title="S")},
        {"name": "Big", "json": BOARD, "folder": "my folder"},
        {"name": "huge", "json": {"title": "Huge", "panels": [{"title": "x" * 1000000}]}}]}}))
    for prefix in (
            "stack_monitoring.grafana.dashboards[b].json: its uid 'a' is already dashboard a's",
            "stack_monitoring.grafana.dashboards[b].json: its title 'Shop' is already dashboard a's in folder opsdeck",
            "stack_monitoring.grafana.dashboards[c].json: its uid 'opsdeck-system' is already the built-in system dashboard",
            "stack_monitoring.grafana.dashboards[d].json: has no title",
            "stack_monitoring.grafana.dashboards[d].json: its panels must be a list",
            "stack_monitoring.grafana.dashboards[e]: needs exactly one of file (a JSON file beside the inventory) or json",
            "stack_monitoring.grafana.dashboards[f].json: is not valid JSON",
            "stack_monitoring.grafana.dashboards[system-overview].name: 'system-overview' is a built-in dashboard's file",
            "stack_monitoring.grafana.dashboards[Big].name: 'Big' is not valid (allowed: lowercase letters",
            "stack_monitoring.grafana.dashboards[Big].folder: 'my folder' is not valid (allowed: letters, digits and ._- (no spaces))",
            "stack_monitoring.grafana.dashboards: hold "):
        assert any(e.startswith(prefix) for e in errors), (prefix, errors)
    assert not any(e.startswith("stack_monitoring.grafana.dashboards[f]: needs exactly one") for e in errors)


# --- logging fields, index, resources ---------------------------------------------------------

def test_logging_fields_index_and_resources():
    log = normalize(build(logging={"enabled": True, "index_by": ["service", "level"],
                                   "fields": {"tenant_id": "keyword", "amount": {"type": "scaled_float",
                                                                                 "scaling_factor": 100},
                                              "http": "object", "http.status": "short"},
                                   "time_fields": ["ts"],
                                   "elasticsearch": {"heap": "1g", "resources": {"limits": {"cpu": 1, "memory": "2Gi"}}}}
                          ))["logging"]
    assert log["index_by"] == ["service", "level"] and log["time_fields"] == ["ts"]
    assert log["fields"]["tenant_id"] == {"type": "keyword", "scaling_factor": None, "ignore_above": None}
    assert log["fields"]["amount"]["scaling_factor"] == 100
    assert log["elasticsearch"]["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}
    defaults = normalize(build(logging={"enabled": True}))["logging"]
    assert defaults["fields"] == {} and defaults["index_by"] == []
    assert defaults["time_fields"] == ["timestamp", "ts", "time"]


def test_logging_field_and_resource_errors():
    errors = errors_of(build(logging={"enabled": True, "index_by": ["tenant"], "fields": {
        "amount": "scaled_float", "tenant_id": {"type": "keyword", "scaling_factor": 10},
        "n": {"type": "long", "ignore_above": 10}, "level": "text", "service.name": "keyword",
        "bad name": "keyword", "kind": "string", "http": "keyword", "http.status": "short"},
        "elasticsearch": {"heap": "1g", "resources": {
            "requests": {"cpu": "3", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "1g"}}}}))
    for prefix in (
            "stack_logging.index_by[0]: 'tenant' is not allowed (allowed: service, level)",
            "stack_logging.fields.amount.scaling_factor: is required by type scaled_float",
            "stack_logging.fields.tenant_id.scaling_factor: only type scaled_float takes it",
            "stack_logging.fields.n.ignore_above: only keyword, wildcard and flattened take it",
            "stack_logging.fields.level: is mapped by the platform itself",
            "stack_logging.fields.service.name: is mapped by the platform itself",
            "stack_logging.fields.bad name: 'bad name' is not valid (allowed: a field name",
            "stack_logging.fields.kind: 'string' is not allowed (allowed: keyword, text",
            "stack_logging.fields.http.status: is inside http, which is mapped as keyword",
            "stack_logging.elasticsearch.resources.requests.cpu: 3 is above limits.cpu 2",
            "stack_logging.elasticsearch.resources.limits.memory: '1g' is not valid",
            "stack_logging.elasticsearch.resources.requests.memory: 512Mi is not more than the heap 1g"):
        assert any(e.startswith(prefix) for e in errors), (prefix, errors)


def test_url_secrets_must_hold_urls_and_are_not_shown():
    raw = build(monitoring={"enabled": True, "alerting": {
        "slack": {"channel": "#alerts"},
        "receivers": [{"name": "chat", "webhook": {"url_secret": "chat_url"}},
                      {"name": "team", "slack": {"channel": "#team", "webhook_secret": "team_hook"}}]}})
    raw["secrets"].update(slack_webhook_url="CHANGE_THIS", chat_url="not-a-url-Secr3t", team_hook="https://hooks.example/t")
    errors = errors_of(raw)
    assert errors == [
        "stack_monitoring.alerting.slack.webhook_secret: secret 'slack_webhook_url' does not hold an http(s) URL "
        "(it must hold a Slack incoming-webhook URL; its value is not shown)",
        "stack_monitoring.alerting.receivers[chat].webhook.url_secret: secret 'chat_url' does not hold an http(s) "
        "URL (it must hold the webhook's URL; its value is not shown)"]
    raw["monitoring"]["enabled"] = False
    normalize(raw)
