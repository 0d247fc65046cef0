"""The elk role's files, checked statically, and against the REAL reference app's log lines.

Elasticsearch, Logstash, Kibana and Filebeat cannot be had on this machine (no Debian
package, no registry), so nothing here runs them: the rendered files are checked for
JSON/YAML validity, for setting names the components know (lists below, from their 8.x
reference documentation), for consistency with each other (index patterns vs the data
streams the pipeline writes, ILM policy names, node names), and the real reference app
(roles/images/files/refapp/app.py, started as in tests/unit/refapp) is run to check that
its actual JSON log lines carry every field the pipeline reads and the index template
maps, with values of the mapped types.
"""

import fnmatch
import json
import os
import re
import sys
from datetime import datetime

import pytest
import yaml

from ansible_collections.opsdeck.stack.plugins.module_utils.components import elk as _elk
from obs_support import SECRETS, model

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "refapp"))
import refapp_support  # noqa: E402  pylint: disable=wrong-import-position

# Setting names from the Elastic 8.x references (elasticsearch.yml, logstash.yml, kibana.yml,
# filebeat.yml); the rendered files may use only these.
ES_SETTINGS = {
    "cluster.name", "node.name", "node.roles", "network.host", "http.port", "path.data", "path.logs",
    "bootstrap.memory_lock", "action.destructive_requires_name", "discovery.type",
    "discovery.seed_hosts", "cluster.initial_master_nodes", "xpack.security.enabled",
    "xpack.security.http.ssl.enabled", "xpack.security.transport.ssl.enabled",
    "xpack.security.transport.ssl.verification_mode", "xpack.security.transport.ssl.key",
    "xpack.security.transport.ssl.certificate", "xpack.security.transport.ssl.certificate_authorities", "xpack.ml.enabled", "ingest.geoip.downloader.enabled",
}
LOGSTASH_SETTINGS = {"node.name", "http.host", "pipeline.ecs_compatibility", "config.reload.automatic",
                     "log.format", "path.config", "pipeline.id", "pipeline.workers"}
KIBANA_SETTINGS = {"server.name", "server.host", "server.port", "server.publicBaseUrl", "elasticsearch.hosts",
                   "elasticsearch.username", "elasticsearch.password", "telemetry.optIn",
                   "telemetry.enabled", "logging.root.level"}
FILEBEAT_SETTINGS = {"filebeat.inputs", "output.logstash", "logging.level", "logging.json",
                     "http.enabled", "http.host", "http.port"}
# the processors the rendered inputs may use (Filebeat 8.x reference)
FILEBEAT_PROCESSORS = {"add_docker_metadata", "drop_event", "copy_fields", "replace"}
FILESTREAM_SETTINGS = {"type", "id", "paths", "parsers", "processors", "prospector.scanner.symlinks"}
ILM_ACTIONS = {"rollover", "delete", "forcemerge", "shrink", "readonly", "set_priority"}
MAPPING_TYPES = {"date", "keyword", "text", "scaled_float", "flattened", "short", "float", "long",
                 "double", "integer", "ip", "boolean", "object"}


def files_of(m):
    return {f["path"]: f for f in _elk.render(m)}


@pytest.fixture(scope="module")
def dev():
    return files_of(model())


@pytest.fixture(scope="module")
def prod():
    return files_of(model(environment="prod", secrets=dict(SECRETS, postgres_password="a-real-postgres-pass")))


def test_dev_is_one_node_prod_three(dev, prod):
    dev_nodes = sorted(p for p in dev if p.endswith("/elasticsearch.yml"))
    assert dev_nodes == ["elasticsearch/es-0/elasticsearch.yml"]
    config = yaml.safe_load(dev[dev_nodes[0]]["content"])
    assert config["discovery.type"] == "single-node"
    prod_nodes = sorted(p for p in prod if p.endswith("/elasticsearch.yml"))
    assert len(prod_nodes) == 3
    for path in prod_nodes:
        config = yaml.safe_load(prod[path]["content"])
        assert "discovery.type" not in config
        assert config["cluster.initial_master_nodes"] == ["es-0", "es-1", "es-2"]
        assert config["node.name"] == path.split("/")[1]
        assert config["xpack.security.transport.ssl.enabled"] is True
    assert dev["elasticsearch/jvm.options.d/heap.options"]["content"] == "-Xms512m\n-Xmx512m\n"
    assert prod["elasticsearch/jvm.options.d/heap.options"]["content"] == "-Xms2g\n-Xmx2g\n"


def test_every_file_parses_and_uses_known_settings(dev, prod):
    for files in (dev, prod):
        for path, item in files.items():
            assert item["secret"] is False and item["mode"] == "0644"
            for value in SECRETS.values():
                assert value not in item["content"], "secret in %s" % path
            if path.endswith(".json"):
                json.loads(item["content"])
            elif path.endswith(".yml"):
                data = yaml.safe_load(item["content"])
                known = {"elasticsearch.yml": ES_SETTINGS, "logstash.yml": LOGSTASH_SETTINGS,
                         "pipelines.yml": LOGSTASH_SETTINGS, "kibana.yml": KIBANA_SETTINGS,
                         "filebeat.yml": FILEBEAT_SETTINGS}[os.path.basename(path)]
                keys = set().union(*(d.keys() for d in data)) if isinstance(data, list) else set(data)
                assert keys <= known, (path, keys - known)
    for variant in (dev, files_of(model("kubernetes"))):
        inputs = yaml.safe_load(variant["filebeat/filebeat.yml"]["content"])["filebeat.inputs"]
        for entry in inputs:
            assert set(entry) <= FILESTREAM_SETTINGS and entry["type"] == "filestream"


def test_filebeat_follows_the_target(dev):
    compose = yaml.safe_load(dev["filebeat/filebeat.yml"]["content"])["filebeat.inputs"][0]
    assert compose["paths"] == ["/var/lib/docker/containers/*/*.log"]
    assert "add_docker_metadata" in compose["processors"][0]
    m = model("kubernetes")
    namespace = m["name"].replace("_", "-").lower()
    k8s_file = yaml.safe_load(files_of(m)["filebeat/filebeat.yml"]["content"])
    k8s = k8s_file["filebeat.inputs"][0]
    # the kubelet's files of the stack's namespace only, CRI or docker format, no API access
    assert k8s["paths"] == ["/var/log/containers/*_%s_*.log" % namespace]
    assert k8s["parsers"] == [{"container": {"stream": "all", "format": "auto"}}]
    assert not [p for p in k8s["processors"] if "add_kubernetes_metadata" in p]
    for entry in (compose, k8s):
        assert {name for p in entry["processors"] for name in p} <= FILEBEAT_PROCESSORS
    assert k8s_file["output.logstash"] == {"hosts": ["logstash.%s.svc:5044" % namespace]}
    assert k8s_file["http.host"] == "0.0.0.0" and k8s_file["http.port"] == _elk.FILEBEAT_HTTP_PORT
    compose_file = yaml.safe_load(dev["filebeat/filebeat.yml"]["content"])
    assert compose_file["output.logstash"] == {"hosts": ["logstash:5044"]}
    assert set(k8s_file) - set(compose_file) == {"http.host", "http.port"}


def test_kubernetes_filebeat_takes_the_component_from_the_file_name():
    """What copy_fields + replace make of a kubelet file name (Go's regexp; Python's agrees
    on this pattern): the container's name, which is the component's."""
    path = "/var/log/containers/api-5d9c7b8f4-x2x7q_shop_api-%s.log" % ("0a" * 32)
    assert re.sub(_elk.K8S_CONTAINER_LOG, r"\1", path) == "api"
    exporter = "/var/log/containers/redis-exporter-7f-abc_shop_redis-exporter-%s.log" % ("f" * 64)
    assert re.sub(_elk.K8S_CONTAINER_LOG, r"\1", exporter) == "redis-exporter"
    assert re.match(_elk.K8S_CONTAINER_LOG, "/var/log/containers/x_shop_api.log") is None


def test_ilm_retention_comes_from_the_model(dev):
    app = json.loads(dev["elasticsearch/ilm/opsdeck-app.json"]["content"])["policy"]["phases"]
    audit = json.loads(dev["elasticsearch/ilm/opsdeck-audit.json"]["content"])["policy"]["phases"]
    assert app["delete"]["min_age"] == "30d" and audit["delete"]["min_age"] == "90d"
    for phases in (app, audit):
        for phase in phases.values():
            assert set(phase["actions"]) <= ILM_ACTIONS
    changed = files_of(model(logging={"enabled": True, "retention_days": {"app": 7, "audit": 365}}))
    assert json.loads(changed["elasticsearch/ilm/opsdeck-audit.json"]["content"])[
        "policy"]["phases"]["delete"]["min_age"] == "365d"


def test_templates_match_the_data_streams_the_pipeline_writes(dev):
    pipeline = dev["logstash/pipeline/opsdeck.conf"]["content"]
    datasets = set(re.findall(r'"\[data_stream\]\[dataset\]" => "([a-z.]+)"', pipeline))
    assert datasets == {"opsdeck.app", "opsdeck.audit"}
    assert '"[data_stream][type]" => "logs"' in pipeline
    for kind in ("app", "audit"):
        template = json.loads(dev["elasticsearch/index_templates/opsdeck-%s.json" % kind]["content"])
        assert template["index_patterns"] == ["logs-opsdeck.%s-*" % kind]
        assert template["data_stream"] == {} and template["priority"] > 100
        assert template["template"]["settings"]["index.lifecycle.name"] == "opsdeck-%s" % kind
        assert "elasticsearch/ilm/opsdeck-%s.json" % kind in dev
        for name, mapping in template["template"]["mappings"]["properties"].items():
            assert mapping["type"] in MAPPING_TYPES, name


def test_only_the_platforms_fields_are_mapped_unless_the_model_adds_some(dev):
    properties = json.loads(dev["elasticsearch/index_templates/opsdeck-app.json"]["content"])[
        "template"]["mappings"]["properties"]
    assert set(properties) == {"@timestamp", "level", "message", "event", "service", "stack", "environment"}
    pipeline = dev["logstash/pipeline/opsdeck.conf"]["content"]
    assert "convert" not in pipeline
    fields = {"tenant_id": "keyword", "amount": {"type": "scaled_float", "scaling_factor": 100},
              "http": "object", "http.status": "short", "labels.team": {"type": "keyword", "ignore_above": 256}}
    files = files_of(model(logging={"enabled": True, "fields": fields}))
    for kind in ("app", "audit"):
        properties = json.loads(files["elasticsearch/index_templates/opsdeck-%s.json" % kind]["content"])[
            "template"]["mappings"]["properties"]
        assert properties["tenant_id"] == {"type": "keyword"}
        assert properties["amount"] == {"type": "scaled_float", "scaling_factor": 100}
        assert properties["http"] == {"type": "object", "properties": {"status": {"type": "short"}}}
        assert properties["labels"] == {"type": "object", "properties": {
            "team": {"type": "keyword", "ignore_above": 256}}}
    pipeline = files["logstash/pipeline/opsdeck.conf"]["content"]
    # a line's value is kept of its mapped kind (a number sent as text is indexed, not refused)
    assert 'convert => { "amount" => "float" }' in pipeline
    assert 'convert => { "tenant_id" => "string" }' in pipeline
    assert 'if [http][status] {' in pipeline and 'convert => { "[http][status]" => "integer" }' in pipeline


def _dataset(pipeline, line):
    """What the pipeline's index_by blocks make of a line's service and level (Python's reading of
    its lowercase, gsub and level list; Logstash does not run here)."""
    levels = re.search(r"\[@metadata\]\[opsdeck_level\] not in \[(.*)\]", pipeline).group(1)
    levels = [level.strip(' "') for level in levels.split(",")]
    gsub = re.search(r'gsub => \["\[@metadata\]\[opsdeck_service\]", "(.*)", "_"\]', pipeline).group(1)
    service = re.sub(gsub, "_", str(line.get("service", "unknown")).lower())
    level = re.sub(gsub, "_", str(line.get("level", "other")).lower())
    level = level if level in levels else "other"
    template = re.search(r'"\[data_stream\]\[dataset\]" => "(opsdeck\.app\.[^"]+)"', pipeline).group(1)
    return template.replace("%{[@metadata][opsdeck_service]}", service).replace(
        "%{[@metadata][opsdeck_level]}", level)


def test_application_logs_by_service_and_level():
    m = model(logging={"enabled": True, "index_by": ["service", "level"]})
    files = files_of(m)
    pipeline = files["logstash/pipeline/opsdeck.conf"]["content"]
    template = json.loads(files["elasticsearch/index_templates/opsdeck-app.json"]["content"])
    assert template["index_patterns"] == ["logs-opsdeck.app-*", "logs-opsdeck.app.*-*"]
    audit = json.loads(files["elasticsearch/index_templates/opsdeck-audit.json"]["content"])
    assert audit["index_patterns"] == ["logs-opsdeck.audit-*"]
    for line, dataset in (({"service": "api", "level": "error"}, "opsdeck.app.api.error"),
                          ({"service": "Redis-Exporter", "level": "WARN"}, "opsdeck.app.redis_exporter.warn"),
                          ({"service": "api", "level": "loud"}, "opsdeck.app.api.other"),
                          ({}, "opsdeck.app.unknown.other")):
        assert _dataset(pipeline, line) == dataset
        stream = "logs-%s-dev" % dataset
        # the app template takes it, the audit one does not; Logstash's role may write it
        assert any(fnmatch.fnmatchcase(stream, p) for p in template["index_patterns"]), stream
        assert not any(fnmatch.fnmatchcase(stream, p) for p in audit["index_patterns"]), stream
        assert fnmatch.fnmatchcase(stream, _elk.logstash_role()["indices"][0]["names"][0])
        # a data stream name: lowercase, no '-' in the dataset, no forbidden character
        assert re.match(r"^logs-[a-z0-9_.]+-dev$", stream), stream
    only_level = files_of(model(logging={"enabled": True, "index_by": ["level"]}))["logstash/pipeline/opsdeck.conf"]
    assert '"[data_stream][dataset]" => "opsdeck.app.%{[@metadata][opsdeck_level]}"' in only_level["content"]
    assert "opsdeck_service" not in only_level["content"]


def test_pipeline_is_well_formed(dev, prod):
    for files in (dev, prod):
        text = files["logstash/pipeline/opsdeck.conf"]["content"]
        code = re.sub(r'"(?:[^"\\]|\\.)*"|/(?:[^/\\]|\\.)+/|#.*', "", text)
        assert code.count("{") == code.count("}") and code.count("[") == code.count("]")
        assert re.findall(r"^(\w+) \{", text, re.M) == ["input", "filter", "output"]
        # Logstash writes as its own least-privilege user, never as the elastic superuser.
        assert "${LOGSTASH_WRITER_PASSWORD}" in text and 'user => "opsdeck_logstash"' in text
        assert "ELASTIC_PASSWORD" not in text
    hosts = re.search(r"hosts => \[(.*)\]", prod["logstash/pipeline/opsdeck.conf"]["content"]).group(1)
    assert hosts == '"http://es-0:9200", "http://es-1:9200", "http://es-2:9200"'
    assert '"tenant_config_updated"' in dev["logstash/pipeline/opsdeck.conf"]["content"]


# --- the real reference app's log lines --------------------------------------------------

def _type_ok(value, mapping):
    kind = mapping["type"]
    if kind == "keyword":
        return isinstance(value, str)
    if kind in ("scaled_float", "float", "double"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind in ("short", "integer", "long"):
        return isinstance(value, int) and not isinstance(value, bool) and (kind != "short" or abs(value) < 32768)
    if kind == "flattened":
        return isinstance(value, dict)
    if kind == "text":
        return isinstance(value, str)
    raise AssertionError("no check for %s" % kind)


@pytest.fixture
def app_lines(tmp_path):
    app = refapp_support.RefApp(str(tmp_path), env={"TENANTS": "acme,globex", "APP_NAME": "payments"})
    try:
        result = app.get("/api/charge?tenant=acme&plan=enterprise&amount=299.00&currency=EUR")
        assert result.status == 200, result.body
        assert app.get("/api/hello?tenant=globex").status == 200
        lines = app.logs()
    finally:
        app.stop()
    return lines


# The fields a platform that logs business events declares (examples/seed-observability.md).
APP_FIELDS = {"tenant_id": "keyword", "component": "keyword", "plan": "keyword", "currency": "keyword",
              "amount": {"type": "scaled_float", "scaling_factor": 100}, "metadata": "flattened",
              "status": "short", "duration_ms": "float", "method": "keyword", "route": "keyword"}


def test_real_log_lines_carry_every_field_the_pipeline_and_mapping_expect(app_lines):
    m = model(logging={"enabled": True, "fields": APP_FIELDS, "time_fields": ["ts", "timestamp"]})
    files = files_of(m)
    template = json.loads(files["elasticsearch/index_templates/opsdeck-app.json"]["content"])
    properties = template["template"]["mappings"]["properties"]
    pipeline = files["logstash/pipeline/opsdeck.conf"]["content"]
    (charge,) = [line for line in app_lines if line.get("event") == "charge"]
    # every declared field present in the business event, with the mapped type
    for field in ("tenant_id", "component", "event", "plan", "amount", "currency", "metadata", "level"):
        assert field in charge, (field, charge)
        assert _type_ok(charge[field], properties[field]), (field, charge[field], properties[field])
    assert charge["tenant_id"] == "acme" and charge["amount"] == 299.0 and charge["currency"] == "EUR"
    assert charge["component"] == "payments"
    # the time: the pipeline's date filter reads the field the app writes, in ISO8601
    time_fields = [f for f in m["logging"]["time_fields"] if f in charge]
    assert time_fields and 'match => ["%s", "ISO8601"]' % time_fields[0] in pipeline
    datetime.fromisoformat(charge[time_fields[0]].replace("Z", "+00:00"))
    # every field the pipeline's conditionals read exists in real lines
    # (message and container are added by Filebeat, timestamp is the alternative time field,
    # service is copied from the container's label)
    for field in set(re.findall(r"if \[(\w+)\]", pipeline)) - {"message", "timestamp", "container", "service"}:
        assert any(field in line for line in app_lines), field
    # every mapped field a real line carries has the mapped type (request lines too)
    requests = [line for line in app_lines if line.get("event") == "http_request"]
    assert requests
    for line in app_lines:
        for field, value in line.items():
            if field in properties and field != "@timestamp":
                assert _type_ok(value, properties[field]), (field, value, line)
