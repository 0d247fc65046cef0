"""The model's one declaration: the validator, the published JSON Schema and the reference agree.

- The committed docs/stack-model.schema.json and docs/stack-model.md are what the
  declaration generates (``make model-docs``), so they can never go stale.
- Every shipped inventory is valid for both the validator and the JSON Schema.
- For EVERY field of the declaration, a value of the wrong type, out of range, not
  matching its pattern or choices, an unknown key in every mapping and a missing
  required field are refused by both, and the validator names the field's path (items
  by name). A field added to the declaration without a place in FULL fails
  ``test_every_field_is_exercised``.
"""

import copy
import json
import os

import jsonschema
import pytest
import yaml

from ansible_collections.opsdeck.stack.plugins.module_utils.model import export, spec
from ansible_collections.opsdeck.stack.plugins.module_utils.model.schema import (
    Any, Bool, Data, Either, Enum, Int, Map, Obj, ObjList, Quantity, Scalar, Str, StrList)
from ansible_collections.opsdeck.stack.plugins.module_utils.model.stack import ModelError, normalize

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
SECRETS = {name: "s3cret-value-%s-0123" % name for name in (
    "postgres_password", "redis_password", "admin_token", "grafana_admin_password",
    "slack_webhook_url", "elastic_password", "kibana_system_password", "logstash_writer_password",
    "pagerduty_routing_key", "tls_cert", "tls_key", "smtp_password", "ops_password")}
SECRETS.update(slack_webhook_url="https://hooks.slack.com/services/T0/B0/s3cret",
               webhook_url="https://chat.example.com/hooks/s3cret")
# The dashboard file FULL names, as the stack_model action reads it beside the inventory.
FILES = {"dashboards/queues.json": {"path": "/inventory/dashboards/queues.json",
                                    "content": json.dumps({"title": "Queues", "panels": []})}}
ALERT = {"enabled": True, "for": "5m", "severity": "warning", "labels": {"team": "ops"}}
# Every field set (the tests below mutate each one in turn).
FULL = {
    "stack_name": "shop", "stack_target": "compose", "stack_environment": "dev",
    "stack_project_dir": "/opt/shop", "stack_runtime_uid": 10001, "stack_strict": False,
    "stack_refuse_placeholders": False, "stack_tenant": "acme", "stack_allow_host_ports": True,
    "stack_services": [{
        "name": "api", "image": "opsdeck/refapp:0.1.0", "build": "refapp", "port": 8000,
        "replicas": 2, "command": ["serve"], "env": {"LOG_FORMAT": "json", "TOKEN": {"secret": "admin_token"}},
        "volumes": [{"name": "data", "path": "/data", "type": "volume", "size": "1Gi", "class": "ssd",
                     "access": "ReadWriteOnce", "read_only": False},
                    {"name": "code", "path": "/app", "source": "/srv/code"}],
        "files": [{"path": "/etc/app/config.yaml", "data": {"a": 1}, "format": "yaml", "mode": "0444",
                   "template": False},
                  {"path": "/etc/app/motd", "content": "hello"},
                  {"path": "/etc/app/galaxy.yml", "source": "galaxy.yml"}],
        "secrets": ["admin_token"],
        "entrypoint": ["/app/run"], "labels": {"team": "core", "example.com/tier": "api"},
        "annotations": {"example.com/owner": "ops"},
        "update": {"max_surge": "25%", "max_unavailable": "0", "order": "start-first", "parallelism": 1,
                   "delay": 5, "stop_grace_period": 30},
        "placement": {"node_labels": {"tier": "app"}, "constraints": ["node.role == worker"], "spread": True,
                      "max_per_node": 2},
        "health": {"port": "http", "probe": "python",
                   "live": {"path": "/health/live", "port": "http", "initial_delay": 30, "period": 10,
                            "timeout": 2, "failures": 3},
                   "ready": {"path": "/health/ready", "initial_delay": 5, "period": 5, "timeout": 2,
                             "failures": 2},
                   "interval": 5, "timeout": 3, "retries": 5, "start_period": 10},
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                      "limits": {"cpu": "1", "memory": "1Gi"}},
        "autoscaling": {"min": 2, "max": 5, "cpu": 70, "memory": 80,
                        "metrics": [{"name": "queue_length", "type": "external", "target": "100",
                                     "average": True, "selector": {"queue": "jobs"}},
                                    {"name": "requests_per_second", "type": "object", "target": "50",
                                     "object_kind": "Ingress", "object_name": "api"}],
                        "behavior": {"scale_up": {"percent": 50, "pods": 2, "period": 60, "select": "max",
                                                  "stabilization": 0},
                                     "scale_down": {"percent": 10, "pods": 1, "period": 60, "select": "min",
                                                    "stabilization": 300}},
                        "capacity": {"peak_rate": 1000, "per_pod_rate": 50, "headroom_percent": 0,
                                     "baseline_rate": 10, "min_baseline": 2, "unit": "msg/s"}},
        "service_account": "hub",
        "route": {"name": "api", "port": "http", "path": "/api/", "rate": "10r/s", "burst": 20, "nodelay": True, "conn_limit": 50,
                  "basic_auth": True, "cors_origins": ["https://app.example.com"],
                  "strip_prefix": False, "timeout": 30},
        "uses": ["postgres", "redis"], "depends_on": ["worker"], "user": "10001:10001",
        "read_only": True, "session_affinity": {"timeout": 600}, "tenant": "acme",
        "metrics": {"enabled": True, "port": 9100, "path": "/metrics", "interval": "10s", "timeout": "5s"}},
        {"name": "worker", "image": "opsdeck/refapp:0.1.0", "session_affinity": "ClientIP",
         "health": {"ready": {"tcp": True, "port": "web"}, "live": {"exec": ["true"], "tcp": False}},
         "ports": [{"name": "web", "port": 8000, "protocol": "tcp", "publish": "127.0.0.1:18000"},
                   {"name": "admin", "port": 8080}],
         "routes": [{"name": "worker-admin", "path": "/admin", "port": "admin", "rate": "5r/s", "burst": 5,
                     "nodelay": False, "conn_limit": 10, "basic_auth": False, "cors_origins": [],
                     "strip_prefix": True, "timeout": 10}]},
        {"name": "jobs", "image": "opsdeck/refapp:0.1.0", "health": {"ready": {"exec": ["true"]}}}],
    "stack_kubernetes": {
        "namespace": "shop-prod", "pod_security": "restricted",
        "roles": [{"name": "reader", "rules": [{"api_groups": [""], "resources": ["pods"], "verbs": ["get"],
                                                "resource_names": ["a"]}]}],
        "service_accounts": [{"name": "hub", "token": True, "roles": ["reader"]}],
        "network_policies": [{"name": "extra", "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}]},
    "stack_overrides": {
        "compose": {"api": {"extra_hosts": ["a:10.0.0.5"]}},
        "swarm": {"api": {"deploy": {"labels": {"tier": "gold"}}}},
        "kubernetes": [{"target": "Deployment/api", "namespace": "shop-prod",
                        "json_patch": [{"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}]},
                       {"target": "Service/api", "patch": {"spec": {"type": "NodePort"}}}]},
    "stack_postgres": {"enabled": True, "image": "opsdeck/postgres:15", "storage": "2Gi",
                       "version": "15", "database": "shop", "user": "shop",
                       "password_secret": "postgres_password", "max_connections": 100},
    "stack_redis": {"enabled": True, "image": "opsdeck/redis:7", "storage": "1Gi",
                    "persistence": "aof", "password_secret": "redis_password",
                    "maxmemory": "256mb", "maxmemory_policy": "noeviction"},
    "stack_proxy": {"enabled": True, "image": "opsdeck/nginx:1.22", "port": 8080, "bind": "0.0.0.0",
                    "replicas": 1, "security_headers": True, "hsts_max_age": 600, "rate": "10r/s",
                    "burst": 20, "conn_limit": 100, "cors_origins": ["https://app.example.com"],
                    "basic_auth_users": [{"name": "ops", "password_secret": "ops_password"}],
                    "client_max_body_size": "10m", "real_ip_from": ["10.0.0.0/8"],
                    "host": "shop.example.com",
                    "tls": {"enabled": True, "port": 8443, "cert_secret": "tls_cert",
                            "key_secret": "tls_key", "redirect_http": True, "protocols": ["TLSv1.3"]}},
    "stack_monitoring": {
        "enabled": True, "retention_time": "15d", "retention_size": "10GB", "scrape_interval": "15s",
        "evaluation_interval": "15s", "port": 19090,
        "images": {"prometheus": "opsdeck/prometheus:2.42", "alertmanager": "opsdeck/alertmanager:0.25",
                   "exporters": "opsdeck/exporters:bookworm", "grafana": "grafana/grafana-oss:10.4.2"},
        "redis_queues": [{"key": "jobs", "max_length": 100, "for": "5m", "severity": "warning"}],
        "alerts": {"target_down": ALERT, "error_ratio": dict(ALERT, threshold=0.05),
                   "error_rate_per_second": dict(ALERT, threshold=1), "latency_p95_seconds": dict(ALERT, threshold=0.5),
                   "disk_free_percent": dict(ALERT, threshold=10), "redis_memory_percent": dict(ALERT, threshold=90),
                   "postgres_connections_percent": dict(ALERT, threshold=80), "redis_down": ALERT,
                   "postgres_down": ALERT},
        "rules": [{"name": "shop", "interval": "1m", "rules": [
            {"record": "job:orders:rate5m", "expr": "sum by (job) (rate(orders_total[5m]))",
             "labels": {"team": "shop"}},
            {"alert": "OrdersStalled", "expr": "job:orders:rate5m == 0", "for": "10m",
             "labels": {"severity": "warning"}, "annotations": {"summary": "No order for 10 minutes"}}]}],
        "alerting": {"slack": {"channel": "#alerts", "webhook_secret": "slack_webhook_url",
                               "severities": ["critical"]},
                     "email": {"to": "ops@example.com", "from": "am@example.com",
                               "smarthost": "smtp.example.com:587", "auth_username": "am",
                               "auth_password_secret": "smtp_password", "require_tls": True,
                               "severities": ["warning"]},
                     "pagerduty": {"routing_key_secret": "pagerduty_routing_key", "severities": ["critical"]},
                     "receivers": [
                         {"name": "incidents", "send_resolved": True,
                          "slack": {"channel": "#incidents", "webhook_secret": "slack_webhook_url"},
                          "email": {"to": "oncall@example.com", "from": "am@example.com",
                                    "smarthost": "smtp.example.com:587", "auth_username": "am",
                                    "auth_password_secret": "smtp_password", "require_tls": True},
                          "pagerduty": {"routing_key_secret": "pagerduty_routing_key"},
                          "webhook": {"url": "https://hooks.example.com/alerts", "max_alerts": 10}},
                         {"name": "chatops", "webhook": {"url_secret": "webhook_url"}}],
                     "routes": [{"receiver": "incidents", "match": {"severity": "critical"},
                                 "match_re": {"job": "api|worker"}, "continue": True,
                                 "group_by": ["alertname"], "group_wait": "10s", "group_interval": "1m",
                                 "repeat_interval": "1h"}],
                     "default_receiver": "chatops", "group_by": ["alertname", "job"],
                     "group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h"},
        "grafana": {"enabled": True, "admin_user": "admin", "admin_password_secret": "grafana_admin_password",
                    "port": 13000, "builtin_dashboards": {"system": True, "application": False},
                    "dashboards": [{"name": "shop", "folder": "shop",
                                    "json": {"title": "Shop", "panels": []}},
                                   {"name": "queues", "file": "dashboards/queues.json"}]}},
    "stack_logging": {
        "enabled": True, "version": "8.13.4", "retention_days": {"app": 30, "audit": 90},
        "elasticsearch": {"nodes": 1, "heap": "512m", "storage": "5Gi",
                          "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                                        "limits": {"cpu": "2", "memory": "1Gi"}}},
        "index_by": ["service", "level"], "time_fields": ["ts"],
        "fields": {"tenant_id": "keyword", "amount": {"type": "scaled_float", "scaling_factor": 100}},
        "audit_events": ["login"], "elastic_password_secret": "elastic_password",
        "kibana_password_secret": "kibana_system_password",
        "logstash_password_secret": "logstash_writer_password", "kibana_port": 15601},
    "stack_secrets": SECRETS,
}
SCHEMA = json.loads(export.json.dumps(export.json_schema()))
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)


def validate(variables):
    """(validator errors, JSON Schema errors) of a group_vars dict."""
    raw = {k[len("stack_"):]: copy.deepcopy(v) for k, v in variables.items() if k.startswith("stack_")}
    try:
        normalize(raw, base_dir=ROOT, files=FILES)
        model_errors = []
    except ModelError as exc:
        model_errors = exc.errors
    return model_errors, [e.message for e in VALIDATOR.iter_errors(variables)]


def test_generated_files_are_current():
    with open(os.path.join(ROOT, export.SCHEMA_FILE), encoding="utf-8") as handle:
        assert json.load(handle) == export.json_schema(), "run `make model-docs`"
    with open(os.path.join(ROOT, export.REFERENCE_FILE), encoding="utf-8") as handle:
        assert handle.read() == export.reference(), "run `make model-docs`"


def test_schema_is_a_valid_draft7_schema():
    jsonschema.Draft7Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("inventory", ["dev", "staging", "prod"])
def test_shipped_inventories_are_valid_for_both(inventory):
    with open(os.path.join(ROOT, "inventories", inventory, "group_vars", "all", "stack.yml"),
              encoding="utf-8") as handle:
        variables = yaml.safe_load(handle)
    assert list(VALIDATOR.iter_errors(variables)) == []
    raw = {k[len("stack_"):]: v for k, v in variables.items() if k.startswith("stack_")}
    raw["secrets"] = {name: ("https://hooks.example.com/%s" % name) if name.endswith("_url") else
                      "s3cret-value-for-%s" % name for name in raw.get("secrets", {})}
    normalize(raw)


def test_full_model_is_valid_for_both():
    assert validate(FULL) == ([], [])


def test_unknown_stack_variable_is_refused_but_others_may_sit_beside():
    model_errors, schema_errors = validate(dict(FULL, stack_servics=[]))
    assert any(e.startswith("stack_servics: unknown field") for e in model_errors)
    assert schema_errors
    assert not VALIDATOR.is_valid(dict(FULL, stack_servics=[]))
    assert VALIDATOR.is_valid(dict(FULL, vault_postgres_password="x", compose_wait_timeout=10))


def _bad_values(field):
    """Values ``field`` must refuse, for both the validator and the JSON Schema."""
    if isinstance(field, Enum):
        return ["zz-not-allowed"]
    if isinstance(field, Bool):
        return ["maybe", [True]]
    if isinstance(field, Int):
        out = [["1"]]
        if field.high is not None:
            out.append(field.high + 1)
        if field.low is not None:
            out.append(field.low - 1)
        return out
    if isinstance(field, (Quantity, Str)):
        out = [["a list"]]
        if getattr(field, "choices", None):
            out.append("zz-not-allowed")
        if getattr(field, "pattern", None) is not None or getattr(field, "shape", None) is not None:
            out.append("!! not valid !!")
        return out
    if isinstance(field, StrList):
        return ["not-a-list"]
    if isinstance(field, (Obj, Map)):
        return [["not", "a", "mapping"]]
    if isinstance(field, ObjList):
        return ["not-a-list"]
    if isinstance(field, Scalar):
        return [["a", "list"]]
    if isinstance(field, Data):
        return ["a string"]
    if isinstance(field, Any):
        return []  # any JSON value is one
    if isinstance(field, Either):
        return [["a", "list"]]
    raise AssertionError("no bad values for %r" % field)


def _label(item, keys):
    """The first of ``keys`` that names the item (a non-empty string or a number)."""
    for key in keys:
        value = item.get(key) if isinstance(item, dict) else None
        if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "":
            return value
    return None


def _walk(field, value, path, setter, out, relabel=None, naming=("name", "key")):
    """Append (paths, setter, bad value) for every field present in FULL under ``field``.

    ``paths`` are where the validator must report the problem: the field's path, or, when
    the mutation changes how an item of a list is named (its name itself, or the whole
    item), the same path with the item named by its position (``relabel``).
    """
    paths = (path,) + ((relabel,) if relabel else ())
    if path:
        for bad in _bad_values(field):
            out.append((paths, setter, bad))
    if isinstance(field, Either):
        field = field.mapping if isinstance(value, dict) else None
    if isinstance(field, Obj) and isinstance(value, dict):
        unknown = "stack_zz_unknown" if path == "" else path + ".zz_unknown"
        out.append(((unknown,), lambda bad, s=setter, cur=value: s(dict(cur, zz_unknown=bad)), 1))
        for key, sub in field.fields.items():
            if key not in value:
                continue
            subpath = "stack_%s" % key if path == "" else "%s.%s" % (path, key)
            sub_relabel = ("%s.%s" % (relabel, key)) if relabel and key in naming else None

            def sub_setter(bad, s=setter, cur=value, k=key):
                return s(dict(cur, **{k: bad}))
            if sub.required:
                out.append(((subpath,) + ((sub_relabel,) if sub_relabel else ()),
                            lambda _bad, s=setter, cur=value, k=key:
                            s({kk: vv for kk, vv in cur.items() if kk != k}), None))
            _walk(sub, value[key], subpath, sub_setter, out, sub_relabel)
    elif isinstance(field, ObjList) and isinstance(value, list):
        # items are named by their key (Items: the first of its keys an item has)
        keys = getattr(field, "keys", (field.key,))
        for index, item in enumerate(value):
            name = _label(item, keys)
            item_path = "%s[%s]" % (path, name if name is not None else index)

            def item_setter(bad, s=setter, cur=value, i=index):
                return s(cur[:i] + [bad] + cur[i + 1:])
            _walk(field.item, item, item_path, item_setter, out, "%s[%d]" % (path, index), keys)


def _cases():
    out = []
    _walk(spec.STACK, {k[len("stack_"):]: v for k, v in FULL.items()}, "",
          lambda bad: {"stack_" + k: v for k, v in bad.items()}, out)
    return out


CASES = _cases()


def _describe(case):
    paths, _setter, bad = case
    return "%s=%s" % (paths[0], json.dumps(bad))


@pytest.mark.parametrize("case", CASES, ids=[_describe(c) for c in CASES])
def test_both_refuse_a_bad_value_and_the_validator_names_the_field(case):
    paths, setter, bad = case
    model_errors, schema_errors = validate(setter(bad))
    assert schema_errors, "the JSON Schema accepts %s = %r" % (paths[0], bad)
    wanted = [p + ":" for p in paths] + [p + " " for p in paths]
    if isinstance(bad, str):  # an item named by its (bad) name
        wanted += [w.replace("[%d]" % i, "[%s]" % bad) for w in wanted for i in range(3)]
    assert any(e.startswith(tuple(wanted)) for e in model_errors), (paths, bad, model_errors)


def test_every_field_is_exercised():
    covered = {paths[0] for paths, _s, _b in CASES}
    # the reference's paths use [] for items; FULL names them
    normalised = {p.split("[")[0] + "".join("[]" + part.split("]", 1)[1] for part in p.split("[")[1:])
                  for p in covered}
    rows = set()
    for key, field in spec.STACK.fields.items():
        rows.update(row[0] for row in field.rows("stack_" + key)
                    if not row[0].endswith(".<key>") and row[1] != Any().kind())
    missing = sorted(r for r in rows if r not in normalised and ".<key>" not in r)
    assert missing == [], "set these fields in FULL so that they are tested: %s" % missing
