# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the ELK components get, as data: Elasticsearch, Logstash, Kibana and Filebeat files.

``render(model)`` returns ``[{path, content, mode, secret}]`` (paths relative to the ELK
configuration directory). No file holds a secret: the passwords are read at run time from
the environment (``${ELASTIC_PASSWORD}``, ``${KIBANA_SYSTEM_PASSWORD}``), which the target
fills from its secret store.

    elasticsearch/<node>/elasticsearch.yml       one per node: single-node in dev, a cluster in prod
    elasticsearch/jvm.options.d/heap.options     heap from stack_logging.elasticsearch.heap
    elasticsearch/ilm/<policy>.json              30 days app logs, 90 days audit (retention_days)
    elasticsearch/index_templates/<name>.json    data stream templates with the field mappings
    logstash/logstash.yml, logstash/pipelines.yml
    logstash/pipeline/opsdeck.conf               parses the apps' JSON log lines (seed 000 fields)
    kibana/kibana.yml
    filebeat/filebeat.yml                        ships container logs to Logstash
"""

from __future__ import annotations

import json

try:
    import yaml
except ImportError:  # pragma: no cover - ansible-core's controller always has PyYAML
    yaml = None  # module_utils must import without it (ansible-test sanity "import")

LOGSTASH_BEATS_PORT = 5044
ES_PORT = 9200
# The fields of seed 000's structured log lines and how Elasticsearch maps them.
LOG_FIELDS = {
    "@timestamp": {"type": "date"},
    "level": {"type": "keyword"},
    "tenant_id": {"type": "keyword"},
    "component": {"type": "keyword"},
    "event": {"type": "keyword"},
    "plan": {"type": "keyword"},
    "amount": {"type": "scaled_float", "scaling_factor": 100},
    "currency": {"type": "keyword"},
    "metadata": {"type": "flattened"},
    "message": {"type": "text"},
    "service": {"type": "keyword"},
    "stack": {"type": "keyword"},
    "environment": {"type": "keyword"},
    # the reference app's request lines
    "method": {"type": "keyword"},
    "path": {"type": "keyword"},
    "route": {"type": "keyword"},
    "status": {"type": "short"},
    "duration_ms": {"type": "float"},
}
# Where the app writes the time (the reference app: ts; seed 000: timestamp).
TIME_FIELDS = ("ts", "timestamp")


def _dump(data):
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=120)


def node_names(model):
    return ["es-%d" % i for i in range(model["logging"]["elasticsearch"]["nodes"])]


def elasticsearch_config(model, node):
    nodes = node_names(model)
    config = {
        "cluster.name": "%s-logs" % model["name"],
        "node.name": node,
        "node.roles": ["master", "data", "ingest"],
        "network.host": "0.0.0.0",
        "http.port": ES_PORT,
        "path.data": "/usr/share/elasticsearch/data",
        "path.logs": "/usr/share/elasticsearch/logs",
        "bootstrap.memory_lock": False,
        "action.destructive_requires_name": True,
        "xpack.security.enabled": True,
        "xpack.security.http.ssl.enabled": False,
        "xpack.ml.enabled": False,
        "ingest.geoip.downloader.enabled": False,
    }
    if len(nodes) == 1:
        config["discovery.type"] = "single-node"
        config["xpack.security.transport.ssl.enabled"] = False
    else:
        config["discovery.seed_hosts"] = nodes
        config["cluster.initial_master_nodes"] = nodes
        # A multi-node cluster with security needs TLS between its nodes.
        config.update({
            "xpack.security.transport.ssl.enabled": True,
            "xpack.security.transport.ssl.verification_mode": "certificate",
            "xpack.security.transport.ssl.keystore.path": "certs/transport.p12",
            "xpack.security.transport.ssl.truststore.path": "certs/transport.p12",
        })
    return config


def ilm_policy(days):
    return {"policy": {
        "_meta": {"managed_by": "opsdeck.stack", "retention_days": days},
        "phases": {
            "hot": {"min_age": "0ms", "actions": {
                "rollover": {"max_age": "1d", "max_primary_shard_size": "50gb"}}},
            "delete": {"min_age": "%dd" % days, "actions": {"delete": {}}},
        }}}


def index_template(model, dataset, policy):
    replicas = 0 if model["logging"]["elasticsearch"]["nodes"] == 1 else 1
    return {
        "index_patterns": ["logs-%s-*" % dataset],
        "data_stream": {},
        # above Elasticsearch's built-in logs-*-* template (priority 100)
        "priority": 200,
        "_meta": {"managed_by": "opsdeck.stack"},
        "template": {
            "settings": {"index.lifecycle.name": policy, "index.number_of_shards": 1,
                         "index.number_of_replicas": replicas},
            "mappings": {
                "dynamic_templates": [{"strings_as_keyword": {
                    "match_mapping_type": "string",
                    "mapping": {"type": "keyword", "ignore_above": 1024}}}],
                "properties": dict(LOG_FIELDS),
            },
        },
    }


def _quote(text):
    return '"%s"' % str(text).replace("\\", "\\\\").replace('"', '\\"')


def logstash_pipeline(model):
    log = model["logging"]
    es_hosts = ", ".join(_quote("http://%s:%d" % (n, ES_PORT)) for n in node_names(model))
    audit = ", ".join(_quote(e) for e in log["audit_events"])
    return "\n".join([
        "# Rendered by opsdeck.stack: parse the apps' JSON log lines (seed 000's fields:",
        "# tenant_id, component, event, plan, amount, currency, metadata) and route audit",
        "# events to their own data stream (kept %d days; app logs %d days)." % (
            log["retention_days"]["audit"], log["retention_days"]["app"]),
        "input {",
        "  beats {",
        "    port => %d" % LOGSTASH_BEATS_PORT,
        "  }",
        "}",
        "",
        "filter {",
        "  # Container lines that are JSON objects become fields; anything else stays a message.",
        '  if [message] =~ /^\\s*\\{/ {',
        "    json {",
        '      source => "message"',
        "      skip_on_invalid_json => true",
        '      tag_on_failure => ["_opsdeck_json_failure"]',
        "    }",
        "  }",
        '  if [ts] {',
        "    date {",
        '      match => ["ts", "ISO8601"]',
        '      target => "@timestamp"',
        '      remove_field => ["ts"]',
        "    }",
        '  } else if [timestamp] {',
        "    date {",
        '      match => ["timestamp", "ISO8601"]',
        '      target => "@timestamp"',
        '      remove_field => ["timestamp"]',
        "    }",
        "  }",
        "  if [amount] {",
        "    mutate {",
        '      convert => { "amount" => "float" }',
        "    }",
        "  }",
        "  if [tenant_id] {",
        "    mutate {",
        '      convert => { "tenant_id" => "string" }',
        "    }",
        "  }",
        "  if [container][labels][org_opsdeck_component] {",
        "    mutate {",
        '      copy => { "[container][labels][org_opsdeck_component]" => "service" }',
        "    }",
        "  }",
        "  mutate {",
        "    add_field => {",
        '      "stack" => %s' % _quote(model["name"]),
        '      "environment" => %s' % _quote(model["environment"]),
        '      "[data_stream][type]" => "logs"',
        '      "[data_stream][namespace]" => %s' % _quote(model["environment"]),
        "    }",
        "  }",
        "  if [event] in [%s] or [audit] == true {" % audit,
        "    mutate {",
        '      add_field => { "[data_stream][dataset]" => "opsdeck.audit" }',
        "    }",
        "  } else {",
        "    mutate {",
        '      add_field => { "[data_stream][dataset]" => "opsdeck.app" }',
        "    }",
        "  }",
        "}",
        "",
        "output {",
        "  elasticsearch {",
        "    hosts => [%s]" % es_hosts,
        '    user => "elastic"',
        '    password => "${ELASTIC_PASSWORD}"',
        "    data_stream => true",
        "    data_stream_auto_routing => true",
        "    manage_template => false",
        "  }",
        "}",
        "",
    ])


def logstash_settings(model):
    return {
        "node.name": "%s-logstash" % model["name"],
        "http.host": "0.0.0.0",
        "pipeline.ecs_compatibility": "disabled",
        "config.reload.automatic": False,
        "log.format": "json",
    }


def kibana_config(model):
    hosts = ["http://%s:%d" % (n, ES_PORT) for n in node_names(model)]
    return {
        "server.name": "%s-kibana" % model["name"],
        "server.host": "0.0.0.0",
        "server.port": 5601,
        "server.publicBaseUrl": "http://localhost:5601",
        "elasticsearch.hosts": hosts,
        "elasticsearch.username": "kibana_system",
        "elasticsearch.password": "${KIBANA_SYSTEM_PASSWORD}",
        "telemetry.optIn": False,
        "telemetry.enabled": False,
        "logging.root.level": "warn",
    }


def filebeat_config(model):
    stack = model["name"]
    if model["target"] == "kubernetes":
        inputs = [{
            "type": "filestream", "id": "%s-containers" % stack,
            "paths": ["/var/log/containers/*.log"],
            "parsers": [{"container": {"stream": "all", "format": "auto"}}],
            "prospector.scanner.symlinks": True,
            "processors": [
                {"add_kubernetes_metadata": {"host": "${NODE_NAME}", "matchers": [{
                    "logs_path": {"logs_path": "/var/log/containers/"}}]}},
                {"drop_event": {"when": {"not": {"equals": {
                    "kubernetes.labels.app_kubernetes_io/part-of": stack}}}}},
            ],
        }]
    else:
        inputs = [{
            "type": "filestream", "id": "%s-containers" % stack,
            "paths": ["/var/lib/docker/containers/*/*.log"],
            "parsers": [{"container": {"stream": "all", "format": "docker"}}],
            "processors": [
                {"add_docker_metadata": {"host": "unix:///var/run/docker.sock"}},
                # only this stack's containers (Compose/Swarm label org.opsdeck.stack)
                {"drop_event": {"when": {"not": {"equals": {
                    "container.labels.org_opsdeck_stack": stack}}}}},
            ],
        }]
    return {
        "filebeat.inputs": inputs,
        "output.logstash": {"hosts": ["logstash:%d" % LOGSTASH_BEATS_PORT]},
        "logging.level": "warning",
        "logging.json": True,
        "http.enabled": False,
    }


def render(model):
    """Every ELK file as data: [{path, content, mode, secret}], sorted by path."""
    log = model["logging"]
    header = "# Rendered by opsdeck.stack from the stack model: do not edit by hand.\n"
    files = []

    def add(path, content):
        files.append({"path": path, "content": content, "mode": "0644", "secret": False})

    for node in node_names(model):
        add("elasticsearch/%s/elasticsearch.yml" % node, header + _dump(elasticsearch_config(model, node)))
    heap = log["elasticsearch"]["heap"]
    add("elasticsearch/jvm.options.d/heap.options", "-Xms%s\n-Xmx%s\n" % (heap, heap))
    for kind in ("app", "audit"):
        policy = "opsdeck-%s" % kind
        add("elasticsearch/ilm/%s.json" % policy,
            json.dumps(ilm_policy(log["retention_days"][kind]), indent=2, sort_keys=True) + "\n")
        add("elasticsearch/index_templates/opsdeck-%s.json" % kind,
            json.dumps(index_template(model, "opsdeck.%s" % kind, policy), indent=2, sort_keys=True) + "\n")
    add("logstash/logstash.yml", header + _dump(logstash_settings(model)))
    add("logstash/pipelines.yml", header + _dump([{
        "pipeline.id": "opsdeck", "path.config": "/usr/share/logstash/pipeline/opsdeck.conf"}]))
    add("logstash/pipeline/opsdeck.conf", logstash_pipeline(model))
    add("kibana/kibana.yml", header + _dump(kibana_config(model)))
    add("filebeat/filebeat.yml", header + _dump(filebeat_config(model)))
    return sorted(files, key=lambda f: f["path"])


def sysctls():
    """Kernel settings Elasticsearch needs on the Docker host that runs it."""
    return {"vm.max_map_count": 262144}
