# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the ELK components get, as data: Elasticsearch, Logstash, Kibana and Filebeat files.

``render(model)`` returns ``[{path, content, mode, secret}]`` (paths relative to the ELK
configuration directory). No file holds a secret: the passwords are read at run time from
the environment (``${KIBANA_SYSTEM_PASSWORD}``, ``${LOGSTASH_WRITER_PASSWORD}``) or from
secret files, which the target fills from its secret store.

    elasticsearch/<node>/elasticsearch.yml       one per node: single-node in dev, a cluster in prod
                                                 (Kubernetes: one elasticsearch/elasticsearch.yml
                                                 shared by the StatefulSet's pods, see below)
    elasticsearch/jvm.options.d/heap.options     heap from stack_logging.elasticsearch.heap
    elasticsearch/ilm/<policy>.json              30 days app logs, 90 days audit (retention_days)
    elasticsearch/index_templates/<name>.json    data stream templates: the platform's fields and
                                                 stack_logging.fields
    logstash/logstash.yml, logstash/pipelines.yml
    logstash/pipeline/opsdeck.conf               parses the apps' JSON log lines; data streams by
                                                 service/level (stack_logging.index_by)
    kibana/kibana.yml
    filebeat/filebeat.yml                        ships container logs to Logstash (Kubernetes:
                                                 the kubelet's files of the stack's namespace,
                                                 to logstash.<namespace>.svc, see filebeat_config)
    elasticsearch/setup.sh                       loads ILM and templates, sets the users' passwords

On Kubernetes the nodes are the pods ``es-0``.. of one StatefulSet ``es``: they share one
``elasticsearch.yml`` whose ``node.name`` is the pod name (``${NODE_NAME}``, from the downward
API), find each other through the headless Service ``es-cluster`` (DNS answers every pod,
ready or not) and are reached by Logstash, Kibana and the setup Job through the client
Service ``elasticsearch``. ``node.store.allow_mmap: false``: the restricted Pod Security of
the namespace forbids the privileged init container that would raise vm.max_map_count.
"""

from __future__ import annotations

import json

try:
    import yaml
except ImportError:  # pragma: no cover - ansible-core's controller always has PyYAML
    yaml = None  # module_utils must import without it (ansible-test sanity "import")

LOGSTASH_BEATS_PORT = 5044
ES_PORT = 9200
# The fields the platform itself maps in every log index (model/observability.BASE_LOG_FIELDS);
# stack_logging.fields adds the application's, the rest is mapped dynamically (strings as
# keywords, numbers as long/float).
BASE_FIELDS = {
    "@timestamp": {"type": "date"},
    "level": {"type": "keyword"},
    "message": {"type": "text"},
    "event": {"type": "keyword"},
    "service": {"type": "keyword"},
    "stack": {"type": "keyword"},
    "environment": {"type": "keyword"},
}
# Log levels kept as such in data stream names (stack_logging.index_by: level); others are "other".
LEVELS = ("trace", "debug", "info", "notice", "warn", "warning", "error", "critical", "fatal")
# Logstash's mutate convert target of a field type (keeps a line's value of the mapped kind).
CONVERT = {"keyword": "string", "wildcard": "string", "long": "integer", "integer": "integer",
           "short": "integer", "byte": "integer", "unsigned_long": "integer", "double": "float",
           "float": "float", "half_float": "float", "scaled_float": "float", "boolean": "boolean"}
CERTS_DIR = "/usr/share/elasticsearch/config/certs"
# The setup files (setup.sh, ilm/, index_templates/) inside the Elasticsearch containers.
SETUP_DIR = "/usr/share/elasticsearch/opsdeck"
# Logstash writes with its own user and role (made by setup.sh), never as elastic.
LOGSTASH_USER = "opsdeck_logstash"
LOGSTASH_ROLE = "opsdeck_logstash_writer"
# Kubernetes: the StatefulSet (pods es-0..), its headless Service and the client Service.
K8S_STATEFULSET = "es"
K8S_HEADLESS = "es-cluster"
K8S_CLIENT = "elasticsearch"


def _dump(data):
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=120)


def node_names(model):
    return ["es-%d" % i for i in range(model["logging"]["elasticsearch"]["nodes"])]


def es_urls(model):
    """The HTTP addresses Logstash and Kibana use: every node, or the client Service."""
    if model["target"] == "kubernetes":
        return ["http://%s:%d" % (K8S_CLIENT, ES_PORT)]
    return ["http://%s:%d" % (n, ES_PORT) for n in node_names(model)]


def elasticsearch_config(model, node):
    """A node's settings; on Kubernetes ``node`` is None (one file for every pod)."""
    nodes = node_names(model)
    kubernetes = model["target"] == "kubernetes"
    config = {
        "cluster.name": "%s-logs" % model["name"],
        "node.name": "${NODE_NAME}" if kubernetes else node,
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
    if kubernetes:
        # no privileged init container may raise vm.max_map_count under restricted PSS
        config["node.store.allow_mmap"] = False
    if len(nodes) == 1:
        config["discovery.type"] = "single-node"
        config["xpack.security.transport.ssl.enabled"] = False
    else:
        config["discovery.seed_hosts"] = [K8S_HEADLESS] if kubernetes else nodes
        config["cluster.initial_master_nodes"] = nodes
        # A multi-node cluster with security needs TLS between its nodes.
        # PEM files from the secrets of TRANSPORT_SECRETS (playbooks/elk_certs.yml), mounted
        # in config/certs: Elasticsearch reads TLS material only inside its config directory.
        config.update({
            "xpack.security.transport.ssl.enabled": True,
            "xpack.security.transport.ssl.verification_mode": "certificate",
            "xpack.security.transport.ssl.key": "certs/transport.key",
            "xpack.security.transport.ssl.certificate": "certs/transport.crt",
            "xpack.security.transport.ssl.certificate_authorities": ["certs/ca.crt"],
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


def mappings(model):
    """The mapped fields: the platform's, then stack_logging.fields (a.b nested as objects)."""
    out = {name: dict(mapping) for name, mapping in BASE_FIELDS.items()}
    for name, spec in sorted(model["logging"].get("fields", {}).items()):
        props = out
        parts = name.split(".")
        for part in parts[:-1]:
            parent = props.setdefault(part, {"type": "object"})
            props = parent.setdefault("properties", {})
        mapping = props.setdefault(parts[-1], {})
        mapping["type"] = spec["type"]
        for key in ("scaling_factor", "ignore_above"):
            if spec.get(key):
                mapping[key] = spec[key]
    return out


def index_patterns(model, dataset):
    """The data streams of a dataset: split by service/level below it (stack_logging.index_by)."""
    patterns = ["logs-%s-*" % dataset]
    if dataset == APP_DATASET and model["logging"].get("index_by"):
        patterns.append("logs-%s.*-*" % dataset)
    return patterns


APP_DATASET = "opsdeck.app"
AUDIT_DATASET = "opsdeck.audit"


def index_template(model, dataset, policy):
    replicas = 0 if model["logging"]["elasticsearch"]["nodes"] == 1 else 1
    return {
        "index_patterns": index_patterns(model, dataset),
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
                "properties": mappings(model),
            },
        },
    }


def _quote(text):
    return '"%s"' % str(text).replace("\\", "\\\\").replace('"', '\\"')


def _ref(name):
    """A Logstash field reference of a (possibly dotted) field name: a.b -> [a][b]."""
    return "".join("[%s]" % part for part in name.split("."))


def _field(name):
    """A field as a plugin option names it: a, or [a][b] for a nested one."""
    return _ref(name) if "." in name else name


def _dataset_lines(model):
    """How an application line's dataset is named: opsdeck.app, or split by service/level."""
    by = model["logging"].get("index_by") or []
    if not by:
        return ['    mutate {',
                '      add_field => { "[data_stream][dataset]" => "%s" }' % APP_DATASET,
                '    }']
    lines = ["    # one data stream per %s (stack_logging.index_by): lowercase, [a-z0-9_] only" % " and ".join(by)]
    parts = []
    for field in by:
        meta = "[@metadata][opsdeck_%s]" % field
        parts.append("%%{%s}" % meta)
        lines += [
            "    if [%s] {" % field,
            "      mutate {",
            '        copy => { "[%s]" => "%s" }' % (field, meta),
            "      }",
            "    } else {",
            "      mutate {",
            '        add_field => { "%s" => "%s" }' % (meta, "unknown" if field == "service" else "other"),
            "      }",
            "    }",
            "    mutate {",
            '      lowercase => ["%s"]' % meta,
            "    }",
            "    mutate {",
            '      gsub => ["%s", "[^a-z0-9_]", "_"]' % meta,
            "    }",
        ]
        if field == "level":
            lines += [
                "    if %s not in [%s] {" % (meta, ", ".join(_quote(level) for level in LEVELS)),
                "      mutate {",
                '        replace => { "%s" => "other" }' % meta,
                "      }",
                "    }",
            ]
    lines += ["    mutate {",
              '      add_field => { "[data_stream][dataset]" => "%s.%s" }' % (APP_DATASET, ".".join(parts)),
              "    }"]
    return lines


def logstash_pipeline(model):
    log = model["logging"]
    es_hosts = ", ".join(_quote(url) for url in es_urls(model))
    audit = ", ".join(_quote(e) for e in log["audit_events"])
    lines = [
        "# Rendered by opsdeck.stack: parse the apps' JSON log lines into fields, keep the mapped",
        "# fields (stack_logging.fields) of their mapped kind and route audit events to their own",
        "# data stream (kept %d days; app logs %d days)." % (
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
    ]
    # the event's time: the first of stack_logging.time_fields the line has (ISO 8601)
    for index, field in enumerate(log.get("time_fields") or []):
        lines += [
            ("  if %s {" if index == 0 else "  } else if %s {") % _ref(field),
            "    date {",
            '      match => ["%s", "ISO8601"]' % _field(field),
            '      target => "@timestamp"',
            '      remove_field => ["%s"]' % _field(field),
            "    }",
        ]
    if log.get("time_fields"):
        lines.append("  }")
    for name, spec in sorted((log.get("fields") or {}).items()):
        target = CONVERT.get(spec["type"])
        if target:
            lines += [
                "  if %s {" % _ref(name),
                "    mutate {",
                '      convert => { "%s" => "%s" }' % (_field(name), target),
                "    }",
                "  }",
            ]
    lines += [
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
        '      add_field => { "[data_stream][dataset]" => "%s" }' % AUDIT_DATASET,
        "    }",
        "  } else {",
    ]
    lines += _dataset_lines(model)
    lines += [
        "  }",
        "}",
        "",
        "output {",
        "  elasticsearch {",
        "    hosts => [%s]" % es_hosts,
        "    user => %s" % _quote(LOGSTASH_USER),
        '    password => "${LOGSTASH_WRITER_PASSWORD}"',
        "    data_stream => true",
        "    data_stream_auto_routing => true",
        "    manage_template => false",
        "  }",
        "}",
        "",
    ]
    return "\n".join(lines)


def logstash_settings(model):
    return {
        "node.name": "%s-logstash" % model["name"],
        "http.host": "0.0.0.0",
        "pipeline.ecs_compatibility": "disabled",
        "config.reload.automatic": False,
        "log.format": "json",
    }


def kibana_config(model):
    hosts = es_urls(model)
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


# Filebeat on Kubernetes (the agents namespace's DaemonSet, see _kubernetes_obs): its HTTP
# endpoint answers the kubelet's probes on the pod's address (never published, and the
# namespace's NetworkPolicies admit nothing to it).
FILEBEAT_HTTP_PORT = 5066
# kubelet's names: /var/log/containers/<pod>_<namespace>_<container>-<64 hex id>.log
K8S_CONTAINER_LOG = r"^.*/[^_/]+_[^_/]+_(.+)-[0-9a-f]{64}\.log$"


def k8s_log_glob(namespace):
    """The kubelet's log files of one namespace's containers (names cannot hold "_")."""
    return "/var/log/containers/*_%s_*.log" % namespace


def filebeat_config(model):
    """Filebeat's settings: the same Logstash output and fields on every target.

    Compose/Swarm: Docker's json-file logs, the stack's containers picked by their
    ``org.opsdeck.stack`` label (add_docker_metadata). Kubernetes: the kubelet's log files
    of the stack's namespace only (the glob names it), CRI or docker format; no API access
    (no add_kubernetes_metadata): the component, which the pipeline copies into ``service``
    from ``container.labels.org_opsdeck_component`` as on Compose, is the container's name
    taken from the file name (each component's container is named after it).
    """
    stack = model["name"]
    http = {"http.enabled": False}
    if model["target"] == "kubernetes":
        from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import manifests as _kubernetes
        namespace = _kubernetes.namespace_of(model)
        component = "container.labels.org_opsdeck_component"
        inputs = [{
            "type": "filestream", "id": "%s-containers" % stack,
            "paths": [k8s_log_glob(namespace)],
            "parsers": [{"container": {"stream": "all", "format": "auto"}}],
            # /var/log/containers/* are symlinks into /var/log/pods
            "prospector.scanner.symlinks": True,
            "processors": [
                {"copy_fields": {"fields": [{"from": "log.file.path", "to": component}],
                                 "fail_on_error": False, "ignore_missing": True}},
                {"replace": {"fields": [{"field": component, "pattern": K8S_CONTAINER_LOG,
                                         "replacement": "$1"}],
                             "fail_on_error": False, "ignore_missing": True}},
            ],
        }]
        hosts = ["logstash.%s.svc:%d" % (namespace, LOGSTASH_BEATS_PORT)]
        http = {"http.enabled": True, "http.host": "0.0.0.0", "http.port": FILEBEAT_HTTP_PORT}
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
        hosts = ["logstash:%d" % LOGSTASH_BEATS_PORT]
    return dict({
        "filebeat.inputs": inputs,
        "output.logstash": {"hosts": hosts},
        "logging.level": "warning",
        "logging.json": True,
    }, **http)


def render(model):
    """Every ELK file as data: [{path, content, mode, secret}], sorted by path."""
    log = model["logging"]
    header = "# Rendered by opsdeck.stack from the stack model: do not edit by hand.\n"
    files = []

    def add(path, content):
        files.append({"path": path, "content": content, "mode": "0644", "secret": False})

    if model["target"] == "kubernetes":
        add("elasticsearch/elasticsearch.yml", header + _dump(elasticsearch_config(model, None)))
    else:
        for node in node_names(model):
            add("elasticsearch/%s/elasticsearch.yml" % node,
                header + _dump(elasticsearch_config(model, node)))
    heap = log["elasticsearch"]["heap"]
    add("elasticsearch/jvm.options.d/heap.options", "-Xms%s\n-Xmx%s\n" % (heap, heap))
    for kind in ("app", "audit"):
        policy = "opsdeck-%s" % kind
        add("elasticsearch/ilm/%s.json" % policy,
            json.dumps(ilm_policy(log["retention_days"][kind]), indent=2, sort_keys=True) + "\n")
        add("elasticsearch/index_templates/opsdeck-%s.json" % kind,
            json.dumps(index_template(model, APP_DATASET if kind == "app" else AUDIT_DATASET, policy),
                       indent=2, sort_keys=True) + "\n")
    add("logstash/logstash.yml", header + _dump(logstash_settings(model)))
    add("logstash/pipelines.yml", header + _dump([{
        "pipeline.id": "opsdeck", "path.config": "/usr/share/logstash/pipeline/opsdeck.conf"}]))
    add("logstash/pipeline/opsdeck.conf", logstash_pipeline(model))
    add("kibana/kibana.yml", header + _dump(kibana_config(model)))
    add("filebeat/filebeat.yml", header + _dump(filebeat_config(model)))
    add("elasticsearch/setup.sh", setup_script(model))
    return sorted(files, key=lambda f: f["path"])


def logstash_role():
    """What Logstash's user may do: write this stack's log data streams, nothing else."""
    return {
        "cluster": ["monitor"],
        "indices": [{"names": ["logs-opsdeck.*-*"],
                     "privileges": ["create_doc", "auto_configure", "view_index_metadata"]}],
        "metadata": {"managed_by": "opsdeck.stack"},
    }


SETUP_SCRIPT = r"""#!/bin/sh
# Rendered by opsdeck.stack: make Elasticsearch ready for the stack. Idempotent (PUTs):
#   - the ILM policies (DIR/ilm/*.json) and index templates (DIR/index_templates/*.json)
#   - the password of the built-in kibana_system user
#   - Logstash's role %(role)s and user %(user)s
# Usage: setup.sh DIR, with ELASTIC_PASSWORD_FILE, KIBANA_PASSWORD_FILE and
# LOGSTASH_PASSWORD_FILE naming the secret files; ES_URL (default http://127.0.0.1:%(port)d),
# ES_WAIT_SECONDS (default 300). Passwords go to curl through a 0600 file, never argv.
set -eu
dir=${1:?usage: setup.sh DIR}
url=${ES_URL:-http://127.0.0.1:%(port)d}
wait_seconds=${ES_WAIT_SECONDS:-300}
for var in ELASTIC_PASSWORD_FILE KIBANA_PASSWORD_FILE LOGSTASH_PASSWORD_FILE; do
  eval "file=\${$var:-}"
  if [ -z "$file" ] || [ ! -r "$file" ]; then
    echo "opsdeck-elk-setup: $var must name a readable secret file" >&2
    exit 2
  fi
done
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
escape() {
  # a secret file's first line, escaped for a double-quoted JSON or curl config string;
  # written straight to stdout, so no value is ever an argument of a command
  head -n 1 "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | tr -d '\n'
}
{ printf 'user = "elastic:'; escape "$ELASTIC_PASSWORD_FILE"; printf '"\n'; } > "$work/curlrc"

call() {
  # call METHOD PATH BODY_FILE: fail with Elasticsearch's answer unless it says 2xx
  code=$(curl -sS -K "$work/curlrc" -o "$work/answer" -w '%%{http_code}' -X "$1" \
    -H 'Content-Type: application/json' --data-binary "@$3" "$url$2") || code=000
  case $code in
    2??) echo "opsdeck-elk-setup: $1 $2: ok" ;;
    *) echo "opsdeck-elk-setup: $1 $2 failed (HTTP $code): $(head -c 500 "$work/answer" 2>/dev/null)" >&2
       exit 1 ;;
  esac
}

deadline=$(( $(date +%%s) + wait_seconds ))
while :; do
  code=$(curl -sS -K "$work/curlrc" -o /dev/null -w '%%{http_code}' \
    "$url/_cluster/health?wait_for_status=yellow&timeout=5s" 2>/dev/null) || code=000
  case $code in
    200) break ;;
    401) echo "opsdeck-elk-setup: $url refuses the elastic user's password (HTTP 401)" >&2
         exit 1 ;;
  esac
  if [ "$(date +%%s)" -ge "$deadline" ]; then
    echo "opsdeck-elk-setup: $url did not report a yellow or green cluster within ${wait_seconds}s (last answer: HTTP $code)" >&2
    exit 1
  fi
  sleep 2
done

for file in "$dir"/ilm/*.json; do
  call PUT "/_ilm/policy/$(basename "$file" .json)" "$file"
done
for file in "$dir"/index_templates/*.json; do
  call PUT "/_index_template/$(basename "$file" .json)" "$file"
done
{ printf '{"password": "'; escape "$KIBANA_PASSWORD_FILE"; printf '"}'; } > "$work/kibana"
call POST /_security/user/kibana_system/_password "$work/kibana"
cat > "$work/role" <<'ROLE'
%(role_json)s
ROLE
call PUT /_security/role/%(role)s "$work/role"
{ printf '{"password": "'; escape "$LOGSTASH_PASSWORD_FILE"
  printf '", "roles": ["%(role)s"], "full_name": "Logstash of %(stack)s"}'; } > "$work/user"
call PUT /_security/user/%(user)s "$work/user"
echo "opsdeck-elk-setup: done"
"""


def setup_script(model):
    """The POSIX sh + curl script that loads ILM, templates and users (see SETUP_SCRIPT)."""
    return SETUP_SCRIPT % {
        "role": LOGSTASH_ROLE, "user": LOGSTASH_USER, "port": ES_PORT, "stack": model["name"],
        "role_json": json.dumps(logstash_role(), sort_keys=True),
    }


def sysctls():
    """Kernel settings Elasticsearch needs on the Docker host that runs it."""
    return {"vm.max_map_count": 262144}
