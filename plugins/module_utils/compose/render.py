# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render the normalised stack model into a Docker Compose project.

The result is data: the compose document and the files it refers to (secrets, component
configuration), each with its path relative to the project directory and its mode. The
``compose`` role writes them; nothing here touches a host.

A change of a mounted file or a secret rolls exactly the containers that use it: each
service carries an ``org.opsdeck.config-hash`` label over the contents of everything it
mounts, so Compose sees a changed service definition and recreates only that service.
Secret values never appear in the document: only per-secret digests do, so a ``--diff``
shows which secret changed without showing it.
"""

from __future__ import annotations

from ansible_collections.opsdeck.stack.plugins.module_utils.common import digest as _digest
from ansible_collections.opsdeck.stack.plugins.module_utils.common import patch as _patch
from ansible_collections.opsdeck.stack.plugins.module_utils.common import quantity
from ansible_collections.opsdeck.stack.plugins.module_utils.components import elk as _elk
from ansible_collections.opsdeck.stack.plugins.module_utils.components import monitoring as _monitoring
from ansible_collections.opsdeck.stack.plugins.module_utils.model import observability as _observability

LABEL_PREFIX = "org.opsdeck"
SECRETS_DIR = "secrets"
CONFIG_DIR = "config"
LOGGING = {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}
MONITORING_DIR = CONFIG_DIR + "/monitoring"
# The application services' own files (stack_services[].files), one directory each.
SERVICES_DIR = CONFIG_DIR + "/services"
ELK_DIR = CONFIG_DIR + "/elk"
# Services whose bind-mounted configuration rolls them when it changes.
CONFIG_MOUNTS = {"proxy": CONFIG_DIR + "/proxy/", "prometheus": MONITORING_DIR + "/prometheus/",
                 "grafana": MONITORING_DIR + "/grafana/", "logstash": ELK_DIR + "/logstash/",
                 "kibana": ELK_DIR + "/kibana/", "filebeat": ELK_DIR + "/filebeat/"}


digest = _digest.digest


def _content_hash(parts):
    return _digest.checksum(parts, 24)


def _deploy(svc, replicas):
    deploy = {"replicas": replicas}
    limits = svc.get("resources", {}).get("limits", {})
    requests = svc.get("resources", {}).get("requests", {})
    resources = {}
    if limits:
        resources["limits"] = {}
        if "cpu_millis" in limits:
            resources["limits"]["cpus"] = quantity.cpus(limits["cpu_millis"])
        if "memory_bytes" in limits:
            resources["limits"]["memory"] = str(limits["memory_bytes"])
    if requests:
        resources["reservations"] = {}
        if "cpu_millis" in requests:
            resources["reservations"]["cpus"] = quantity.cpus(requests["cpu_millis"])
        if "memory_bytes" in requests:
            resources["reservations"]["memory"] = str(requests["memory_bytes"])
    if resources:
        deploy["resources"] = resources
    return deploy


def http_probe(port, path, probe):
    """A shell healthcheck that works with whatever HTTP client the image has (``probe``
    tcp: only connect, with python3, bash or nc)."""
    if probe == "tcp":
        return ["CMD-SHELL", " || ".join((
            "{ command -v python3 >/dev/null && python3 -c \"import socket; "
            "socket.create_connection(('127.0.0.1', %d), 3)\"; }" % port,
            "{ command -v bash >/dev/null && bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d'; }" % port,
            "{ command -v nc >/dev/null && nc -z -w 3 127.0.0.1 %d; }" % port))]
    url = "http://127.0.0.1:%d%s" % (port, path)
    commands = {
        "curl": "curl -fsS -o /dev/null --max-time 3 %s" % url,
        "wget": "wget -q -O /dev/null -T 3 %s" % url,
        "python": ("python3 -c \"import http.client, sys; "
                   "c = http.client.HTTPConnection('127.0.0.1', %d, timeout=3); "
                   "c.request('GET', '%s'); "
                   "sys.exit(0 if c.getresponse().status < 400 else 1)\"" % (port, path)),
    }
    if probe == "auto":
        chain = " || ".join(
            "{ command -v %s >/dev/null && %s; }" % (tool, commands[key])
            for key, tool in (("curl", "curl"), ("wget", "wget"), ("python", "python3")))
        return ["CMD-SHELL", chain]
    return ["CMD-SHELL", commands[probe]]


def _healthcheck(test, health):
    return {
        "test": test,
        "interval": "%ds" % health["interval"],
        "timeout": "%ds" % health["timeout"],
        "retries": health["retries"],
        "start_period": "%ds" % health["start_period"],
    }


DATASTORE_HEALTH = {"interval": 5, "timeout": 3, "retries": 10, "start_period": 20}


def _secret_labels(names, secrets, stack):
    return {"%s.secret.%s" % (LABEL_PREFIX, name): digest(secrets[name], stack + ":" + name)
            for name in sorted(names)}


def _base(model, component, image):
    uid = model["runtime_uid"]
    return {
        "image": image,
        "user": "%d:%d" % (uid, uid),
        "restart": "unless-stopped",
        "read_only": True,
        "tmpfs": ["/tmp"],
        "security_opt": ["no-new-privileges:true"],
        "cap_drop": ["ALL"],
        "logging": LOGGING,
        "labels": {
            "%s.stack" % LABEL_PREFIX: model["name"],
            "%s.component" % LABEL_PREFIX: component,
        },
    }


def apply_overrides(services, overrides, section):
    """Merge ``stack_overrides.<section>`` into the rendered services; an override of a service
    that is not rendered is an error naming it."""
    for name, patch in sorted((overrides or {}).items()):
        if name not in services:
            raise ValueError("stack_overrides.%s.%s: no service %r in the rendered %s (services: %s)" % (
                section, name, name, "project" if section == "compose" else "stack", ", ".join(sorted(services))))
        services[name] = _patch.merge(services[name], patch)


def render(model, secrets, proxy_files=None, monitoring_files=None, elk_files=None, overrides=True):
    """Return {"project": compose dict, "files": [...], "hashes": {service: hash}}.

    ``secrets`` maps secret names to their values (from the vault); ``proxy_files`` is the
    ``nginx_proxy_files`` list produced by the nginx_proxy role, ``monitoring_files`` the
    ``monitoring_files`` list of the monitoring role (used when monitoring is enabled),
    ``elk_files`` the ``elk_files`` list of the elk role (used when logging is enabled).
    ``overrides``: apply ``stack_overrides.compose`` (the Swarm renderer, which starts from
    this rendering, applies its own instead).
    """
    stack = model["name"]
    services = {}
    files = []
    used_secrets = set()
    secret_defs = {}
    hashes = {}
    volumes = {}

    def add_secret(name):
        used_secrets.add(name)
        secret_defs[name] = {"file": "./%s/%s" % (SECRETS_DIR, name)}

    pg = model["postgres"]
    if pg["enabled"]:
        svc = _base(model, "postgres", pg["image"])
        add_secret(pg["password_secret"])
        svc.update({
            "environment": {
                "POSTGRES_DB": pg["database"],
                "POSTGRES_USER": pg["user"],
                "POSTGRES_PASSWORD_FILE": "/run/secrets/%s" % pg["password_secret"],
                "POSTGRES_MAX_CONNECTIONS": str(pg["max_connections"]),
            },
            "secrets": [pg["password_secret"]],
            "volumes": ["pgdata:/var/lib/postgresql/data"],
            "tmpfs": ["/tmp"],
            "networks": ["backend"],
            "stop_grace_period": "30s",
            "healthcheck": _healthcheck(
                ["CMD", "pg_isready", "-q", "-h", "127.0.0.1", "-U", pg["user"], "-d", pg["database"]],
                DATASTORE_HEALTH),
        })
        volumes["pgdata"] = {}
        services["postgres"] = svc

    rd = model["redis"]
    if rd["enabled"]:
        svc = _base(model, "redis", rd["image"])
        env = {"REDIS_PERSISTENCE": rd["persistence"],
               "REDIS_MAXMEMORY_POLICY": rd["maxmemory_policy"]}
        if rd.get("maxmemory"):
            env["REDIS_MAXMEMORY"] = rd["maxmemory"]
        probe = "redis-cli -h 127.0.0.1 ping | grep -q PONG"
        if rd.get("password_secret"):
            add_secret(rd["password_secret"])
            env["REDIS_PASSWORD_FILE"] = "/run/secrets/%s" % rd["password_secret"]
            svc["secrets"] = [rd["password_secret"]]
            probe = 'REDISCLI_AUTH="$$(cat /run/secrets/%s)" %s' % (rd["password_secret"], probe)
        svc.update({
            "environment": env,
            "volumes": ["redisdata:/data"],
            "networks": ["backend"],
            "healthcheck": _healthcheck(["CMD-SHELL", probe], DATASTORE_HEALTH),
        })
        volumes["redisdata"] = {}
        services["redis"] = svc

    volume_init = []
    for app in model["services"]:
        services.update(_app_service(model, app, secrets, files, volumes, add_secret, volume_init))

    proxy = model["proxy"]
    if proxy["enabled"]:
        svc = _base(model, "proxy", proxy["image"])
        mounts = []
        proxy_secrets = []
        for item in sorted(proxy_files or [], key=lambda f: f["path"]):
            if item.get("secret"):
                name = "proxy-%s" % item["path"].replace(".", "-").replace("/", "-")
                used_secrets.add(name)
                secret_defs[name] = {"file": "./%s/%s" % (SECRETS_DIR, name)}
                proxy_secrets.append({"source": name, "target": item["path"]})
                files.append({"path": "%s/%s" % (SECRETS_DIR, name), "content": item["content"],
                              "mode": "0600", "secret": True})
            else:
                dest = "%s/proxy/%s" % (CONFIG_DIR, item["path"])
                files.append({"path": dest, "content": item["content"],
                              "mode": item.get("mode", "0644"), "secret": False})
                mounts.append("./%s:/etc/nginx/opsdeck/%s:ro" % (dest, item["path"]))
        ports = ["%s:%d:8080" % (proxy["bind"], proxy["port"])]
        if proxy["tls"]["enabled"]:
            ports.append("%s:%d:8443" % (proxy["bind"], proxy["tls"]["port"]))
        svc.update({
            "command": ["nginx", "-c", "/etc/nginx/opsdeck/nginx.conf", "-g", "daemon off;"],
            "ports": ports,
            "networks": ["frontend"],
            "volumes": mounts,
            "healthcheck": _healthcheck(
                ["CMD", "curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/healthz"],
                # 10 s: on a loaded host an exec'd curl outlived 3 s five times running, and
                # `compose up --wait` fails at once on an unhealthy proxy
                {"interval": 5, "timeout": 10, "retries": 5, "start_period": 10}),
            "depends_on": {
                app["name"]: {"condition": "service_healthy" if _has_health(model, app["name"])
                              else "service_started"}
                for app in model["services"] if app.get("routes") and app["replicas"] > 0
            },
            "deploy": {"replicas": proxy["replicas"]} if proxy["replicas"] > 1 else {},
        })
        if proxy_secrets:
            svc["secrets"] = proxy_secrets
        if not svc["deploy"]:
            svc.pop("deploy")
        if not svc["depends_on"]:
            svc.pop("depends_on")
        services["proxy"] = svc

    if (model.get("monitoring") or {}).get("enabled"):
        _monitoring_services(model, monitoring_files or [], services, files, volumes,
                             add_secret, used_secrets, secret_defs)
    if (model.get("logging") or {}).get("enabled"):
        _elk_services(model, elk_files or [], services, files, volumes, add_secret)

    apps = {app["name"] for app in model["services"]}
    # Secret files and the labels that roll the services using them.
    for name in sorted(used_secrets):
        if name in secrets:
            files.append({"path": "%s/%s" % (SECRETS_DIR, name), "content": secrets[name],
                          "mode": "0600", "secret": True})
    for name, svc in services.items():
        names = [s if isinstance(s, str) else s["source"] for s in svc.get("secrets", [])]
        parts = {"secrets": {n: _secret_digest(n, secrets, files, stack) for n in sorted(names)}}
        mounted = [CONFIG_MOUNTS[name]] if name in CONFIG_MOUNTS else []
        if svc.get("env_file"):
            parts["env"] = {path: _secret_digest(path, secrets, files, stack) for path in svc["env_file"]}
        if name in apps:
            mounted = ["%s/%s/" % (SERVICES_DIR, name)]
        if name.startswith("es-"):
            # not the setup files: the role loads those through the API, no restart needed
            mounted = [ELK_DIR + "/elasticsearch/%s/" % name, ELK_DIR + "/elasticsearch/jvm"]
        if mounted:
            parts["config"] = {f["path"]: digest(f["content"]) for f in files
                               if f["path"].startswith(tuple(mounted))}
        hashes[name] = _content_hash(parts)
        svc["labels"]["%s.config-hash" % LABEL_PREFIX] = hashes[name]
        svc["labels"].update({"%s.secret.%s" % (LABEL_PREFIX, n): d
                              for n, d in parts["secrets"].items()})

    if overrides:
        apply_overrides(services, (model.get("overrides") or {}).get("compose"), "compose")
    project = {"name": stack, "services": services,
               "networks": {"frontend": {}, "backend": {"internal": True}}}
    if "prometheus" in services:
        # Prometheus and Alertmanager: published on 127.0.0.1 only, Alertmanager reaches out.
        project["networks"]["monitoring"] = {}
    if "logstash" in services:
        # Elasticsearch, Logstash and Filebeat talk on an internal network; Kibana also sits on
        # an outside one so that its port can be published on 127.0.0.1.
        project["networks"]["logging"] = {"internal": True}
        project["networks"]["logging-edge"] = {}
    if volumes:
        project["volumes"] = volumes
    if secret_defs:
        project["secrets"] = {k: secret_defs[k] for k in sorted(secret_defs)}
    return {"project": project, "files": sorted(files, key=lambda f: f["path"]),
            "hashes": hashes, "volume_init": volume_init}


def _literal(text):
    """A value Compose must not interpolate: ``$`` written as ``$$``."""
    return text.replace("$", "$$")


def _app_healthcheck(health):
    """The container health check of a service: its ready probe, with that probe's timings."""
    ready = health["ready"]
    if ready["kind"] == "exec":
        test = ["CMD"] + [_literal(arg) for arg in ready["command"]]
    elif ready["kind"] == "tcp":
        test = http_probe(ready["target_port"], None, "tcp")
    else:
        test = http_probe(ready["target_port"], ready["path"], health["probe"])
    start = ready["initial_delay"] if ready["initial_delay"] is not None else health["start_period"]
    return _healthcheck(test, {"interval": ready["period"], "timeout": ready["timeout"],
                               "retries": ready["failures"], "start_period": start})


def _port_spec(port):
    """``8000`` or ``8000/udp``."""
    return "%d%s" % (port["port"], "/udp" if port.get("protocol") == "udp" else "")


def _published(port):
    """A published port: ``127.0.0.1:18000:8000`` (``/udp`` for UDP)."""
    return "%s:%d:%s" % (port["publish"]["address"], port["publish"]["port"], _port_spec(port))


def _secret_digest(name, secrets, files, stack):
    if name in secrets:
        return digest(secrets[name], stack + ":" + name)
    for item in files:
        if item["path"] in ("%s/%s" % (SECRETS_DIR, name), name.lstrip("./")):
            return digest(item["content"], stack + ":" + name)
    return "missing"


def env_file_line(key, value):
    """``KEY="value"`` for Compose's env_file: double quotes, with \\, ", $ and newlines
    escaped, so any value (a password with $ or #, a PEM) arrives as written."""
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
               .replace("\n", "\\n"))
    return '%s="%s"\n' % (key, escaped)


def _app_service(model, app, secrets, files, volumes, add_secret, volume_init):
    """The Compose service of an application service: {name: service}.

    Its new named volumes are listed in ``volume_init``: a volume Docker creates belongs to
    root unless the image has the directory, so the role creates it and hands it to the
    service's user once (a one-off container of the same image), before Compose starts.
    """
    name = app["name"]
    svc = _base(model, name, app["image"])
    out = {name: svc}
    if app.get("user"):
        svc["user"] = app["user"]
    if not app.get("read_only", True):
        svc.pop("read_only")
    if app.get("entrypoint"):
        svc["entrypoint"] = [_literal(arg) for arg in app["entrypoint"]]
    if app.get("command"):
        svc["command"] = [_literal(arg) for arg in app["command"]]
    if app.get("labels"):
        svc["labels"].update(app["labels"])
    if app.get("annotations"):
        svc["annotations"] = {key: _literal(value) for key, value in app["annotations"].items()}
    if app["env"]:
        svc["environment"] = {key: _literal(value) for key, value in app["env"].items()}
    if app.get("env_secrets"):
        # The values stay out of compose.yaml: a 0600 file Compose reads when it starts the service.
        path = "%s/env-%s" % (SECRETS_DIR, name)
        files.append({"path": path, "mode": "0600", "secret": True, "content": "".join(
            env_file_line(key, str(secrets.get(secret, ""))) for key, secret in sorted(app["env_secrets"].items()))})
        svc["env_file"] = ["./" + path]
    if app["secrets"]:
        svc["secrets"] = list(app["secrets"])
        for secret in app["secrets"]:
            add_secret(secret)
    # the backend network is internal: a service reached by the proxy or published on the
    # host is on the frontend network too (Docker publishes nothing from an internal network)
    published = any(port.get("publish") for port in app.get("ports") or [])
    svc["networks"] = ["frontend", "backend"] if app.get("routes") or published else ["backend"]
    svc["deploy"] = _deploy(app, app["replicas"])
    svc["stop_grace_period"] = "%ds" % ((app.get("update") or {}).get("stop_grace_period") or 15)
    if _has_health(model, name):
        svc["healthcheck"] = _app_healthcheck(app["health"])
    deps = {}
    for dep in app["depends_on"]:
        deps[dep] = {"condition": "service_healthy"
                     if dep in ("postgres", "redis") or _has_health(model, dep)
                     else "service_started"}
    if app.get("ports"):
        svc["expose"] = [_port_spec(port) for port in app["ports"]]
        published = [_published(port) for port in app["ports"] if port.get("publish")]
        if published:
            svc["ports"] = published
    mounts = []
    owner = svc["user"]
    for volume in app.get("volumes") or []:
        suffix = ":ro" if volume["read_only"] else ""
        if volume["type"] == "volume":
            key = "%s-%s" % (name, volume["name"])
            volumes[key] = {}
            mounts.append("%s:%s%s" % (key, volume["path"], suffix))
            volume_init.append({"key": key, "volume": "%s_%s" % (model["name"], key), "image": app["image"],
                                "owner": owner, "path": volume["path"]})
        elif volume["type"] == "bind":
            mounts.append("%s:%s%s" % (volume["source"], volume["path"], suffix))
        else:
            tmpfs = {"type": "tmpfs", "target": volume["path"]}
            if volume["size"]:
                tmpfs["tmpfs"] = {"size": quantity.to_bytes(volume["size"])}
            mounts.append(tmpfs)
    uid = owner.split(":")[0]
    for item in app.get("files") or []:
        path = "%s/%s/%s" % (SERVICES_DIR, name, item["key"])
        entry = {"path": path, "content": item["content"], "mode": item["mode"], "secret": False}
        if uid.isdigit():
            entry["owner"] = int(uid)  # readable by the service whatever the mode
        files.append(entry)
        mounts.append("./%s:%s:ro" % (path, item["path"]))
    if mounts:
        svc["volumes"] = mounts
    if deps:
        svc["depends_on"] = deps
    return out


def _has_health(model, name):
    for app in model["services"]:
        if app["name"] == name:
            health = app.get("health")
            return bool(health and health["probe"] != "none"
                        and (health["ready"]["target_port"] or health["ready"]["kind"] == "exec"))
    return name in ("postgres", "redis")


def _monitoring_services(model, monitoring_files, services, files, volumes, add_secret,
                         used_secrets, secret_defs):
    """Prometheus, Alertmanager and the exporters (images built from Debian packages).

    Grafana (when ``monitoring.grafana.enabled``) runs from its upstream image with the
    rendered provisioning; the admin password is a secret file read by grafana.ini.
    """
    mon = model["monitoring"]
    images = mon["images"]
    for item in monitoring_files:
        if item.get("secret"):
            name = "monitoring-%s" % item["path"].replace(".", "-").replace("/", "-")
            used_secrets.add(name)
            secret_defs[name] = {"file": "./%s/%s" % (SECRETS_DIR, name)}
            files.append({"path": "%s/%s" % (SECRETS_DIR, name), "content": item["content"],
                          "mode": "0600", "secret": True})
        else:
            files.append({"path": "%s/%s" % (MONITORING_DIR, item["path"]),
                          "content": item["content"], "mode": item.get("mode", "0644"),
                          "secret": False})
    probe = {"interval": 10, "timeout": 5, "retries": 6, "start_period": 10}

    prom = _base(model, "prometheus", images["prometheus"])
    prom.update({
        "command": ["/usr/bin/prometheus",
                    "--config.file=/etc/prometheus/opsdeck/prometheus.yml",
                    "--storage.tsdb.path=/prometheus", "--web.listen-address=:9090"]
        + _monitoring.storage_flags(model),
        "volumes": ["./%s/prometheus:/etc/prometheus/opsdeck:ro" % MONITORING_DIR,
                    "promdata:/prometheus"],
        "networks": ["backend", "monitoring"],
        "healthcheck": _healthcheck(http_probe(9090, "/-/ready", "python"), probe),
        "stop_grace_period": "30s",
    })
    if mon.get("port"):
        prom["ports"] = ["127.0.0.1:%d:9090" % mon["port"]]
    services["prometheus"] = prom
    volumes["promdata"] = {}

    am = _base(model, "alertmanager", images["alertmanager"])
    am.update({
        "command": ["/usr/bin/prometheus-alertmanager",
                    "--config.file=/run/secrets/alertmanager.yml",
                    "--storage.path=/alertmanager", "--web.listen-address=:9093",
                    "--cluster.listen-address="],
        "secrets": [{"source": "monitoring-alertmanager-alertmanager-yml",
                     "target": "alertmanager.yml"}],
        "volumes": ["alertmanagerdata:/alertmanager"],
        "networks": ["backend", "monitoring"],
        "healthcheck": _healthcheck(http_probe(9093, "/-/ready", "python"), probe),
    })
    services["alertmanager"] = am
    volumes["alertmanagerdata"] = {}

    exporter_ports = dict(_monitoring.exporters(model))

    def exporter(name, command, networks, depends=None):
        svc = _base(model, name, images["exporters"])
        svc.update({"command": command, "networks": networks,
                    "healthcheck": _healthcheck(
                        http_probe(exporter_ports[name], "/metrics", "python"), probe)})
        if depends:
            svc["depends_on"] = {depends: {"condition": "service_healthy"}}
        services[name] = svc
        return svc

    if "redis-exporter" in exporter_ports:
        rd = model["redis"]
        svc = exporter("redis-exporter", _monitoring.redis_exporter_args(model), ["backend"],
                       "redis")
        if rd.get("password_secret"):
            add_secret(rd["password_secret"])
            svc["secrets"] = [rd["password_secret"]]
            svc["environment"] = {"REDIS_PASSWORD_FILE": "/run/secrets/%s" % rd["password_secret"]}
    if "postgres-exporter" in exporter_ports:
        pg = model["postgres"]
        add_secret(pg["password_secret"])
        svc = exporter("postgres-exporter", ["postgres"], ["backend"], "postgres")
        svc["secrets"] = [pg["password_secret"]]
        svc["environment"] = {
            "DATA_SOURCE_URI": "postgres:%d/%s?sslmode=disable" % (pg["port"], pg["database"]),
            "DATA_SOURCE_USER": pg["user"],
            "DATA_SOURCE_PASS_FILE": "/run/secrets/%s" % pg["password_secret"],
        }
    if "nginx-exporter" in exporter_ports:
        exporter("nginx-exporter", ["nginx", "-nginx.scrape-uri=http://proxy:%d/stub_status"
                                    % _monitoring.NGINX_STATUS_PORT],
                 ["frontend", "backend"], "proxy")
    # the same arguments as the Kubernetes DaemonSet's; "$$" is Compose's literal "$"
    svc = exporter("node-exporter", ["node"] + [arg.replace("$", "$$") for arg in
                                                _monitoring.NODE_EXPORTER_ARGS], ["backend"])
    svc["volumes"] = ["/proc:/host/proc:ro", "/sys:/host/sys:ro", "/:/host/root:ro"]
    if mon["grafana"]["enabled"]:
        _grafana_service(model, services, volumes, add_secret)


def _upstream(model, component, image):
    """A container of an upstream image that cannot be run on this project's CI machines.

    The images (Grafana, Elastic) run as any uid in group 0 (their data directories are
    group-writable), so they get the stack's uid, which can read the secret files. Their
    root file system stays writable: read-only roots are not verified for them here.
    """
    svc = _base(model, component, image)
    svc["user"] = "%d:0" % model["runtime_uid"]
    svc.pop("read_only")
    return svc


def _grafana_service(model, services, volumes, add_secret):
    graf = model["monitoring"]["grafana"]
    svc = _upstream(model, "grafana", model["monitoring"]["images"]["grafana"])
    add_secret(graf["admin_password_secret"])
    base = "./%s/grafana" % MONITORING_DIR
    svc.update({
        "environment": {"GF_PATHS_CONFIG": "/etc/grafana/opsdeck/grafana.ini"},
        "secrets": [graf["admin_password_secret"]],
        "volumes": ["%s/grafana.ini:/etc/grafana/opsdeck/grafana.ini:ro" % base,
                    "%s/provisioning:/etc/grafana/provisioning:ro" % base,
                    "%s/dashboards:/var/lib/grafana/dashboards/opsdeck:ro" % base,
                    "grafanadata:/var/lib/grafana"],
        "networks": ["monitoring"],
        "depends_on": {"prometheus": {"condition": "service_healthy"}},
        "healthcheck": _healthcheck(["CMD", "wget", "-q", "-O", "/dev/null",
                                     "http://127.0.0.1:3000/api/health"],
                                    {"interval": 10, "timeout": 3, "retries": 6, "start_period": 30}),
    })
    if graf.get("port"):
        svc["ports"] = ["127.0.0.1:%d:3000" % graf["port"]]
    services["grafana"] = svc
    volumes["grafanadata"] = {}


def _password_env(variable, secret, command):
    """Run ``command`` with ``variable`` read from a secret file (for images without _FILE)."""
    return ["/bin/sh", "-c", 'export %s="$$(cat /run/secrets/%s)"; exec "$$0" "$$@"' % (variable, secret)] \
        + list(command)


def _elk_services(model, elk_files, services, files, volumes, add_secret):
    """Elasticsearch (one service per node), Logstash, Kibana and Filebeat (upstream images).

    None of them can run on this project's CI machines (no registry, no Debian package):
    ``docker compose config`` checks the result. The ILM policies, index templates and
    users are loaded through Elasticsearch's API by ``elasticsearch/setup.sh``, which the
    target role runs in a one-off container on the logging network (``setup_container``),
    so a policy change never restarts a node.
    """
    log = model["logging"]
    for item in elk_files:
        files.append({"path": "%s/%s" % (ELK_DIR, item["path"]), "content": item["content"],
                      "mode": item.get("mode", "0644"), "secret": False})
    es_dir = "./%s/elasticsearch" % ELK_DIR
    nodes = _elk.node_names(model)
    elastic, kibana, logstash = (log["elastic_password_secret"], log["kibana_password_secret"],
                                 log["logstash_password_secret"])
    for name in (elastic, kibana, logstash):
        add_secret(name)
    certs = []
    if len(nodes) > 1:
        for secret, filename in sorted(_observability.TRANSPORT_SECRETS.items()):
            add_secret(secret)
            certs.append({"source": secret, "target": "%s/%s" % (_elk.CERTS_DIR, filename)})
    auth = 'curl -fsS -o /dev/null -u "elastic:$$(cat /run/secrets/%s)" ' % elastic
    # stack_logging.elasticsearch.resources (else cpu 500m/2, twice the heap): as on Kubernetes
    sizes = _observability.es_resources(model)
    es_resources = {"limits": {"cpus": quantity.cpus(quantity.cpu_millis(sizes["limits"]["cpu"])),
                               "memory": str(quantity.to_bytes(sizes["limits"]["memory"]))},
                    "reservations": {"cpus": quantity.cpus(quantity.cpu_millis(sizes["requests"]["cpu"])),
                                     "memory": str(quantity.to_bytes(sizes["requests"]["memory"]))}}
    for name in nodes:
        svc = _upstream(model, "elasticsearch", _observability.elastic_image(model, "elasticsearch"))
        config = "/usr/share/elasticsearch/config"
        svc.update({
            "hostname": name,
            "environment": {"ELASTIC_PASSWORD_FILE": "/run/secrets/%s" % elastic},
            "secrets": [elastic] + certs,
            "volumes": ["%s/%s/elasticsearch.yml:%s/elasticsearch.yml:ro" % (es_dir, name, config),
                        "%s/jvm.options.d/heap.options:%s/jvm.options.d/heap.options:ro" % (es_dir, config),
                        "%s:/usr/share/elasticsearch/data" % name.replace("-", "data-", 1)],
            "ulimits": {"nofile": {"soft": 65536, "hard": 65536}},
            "networks": ["logging"],
            "deploy": {"resources": es_resources},
            "stop_grace_period": "60s",
            "healthcheck": _healthcheck(
                ["CMD-SHELL", auth + "'http://127.0.0.1:%d/_cluster/health?local=true'" % _elk.ES_PORT],
                {"interval": 10, "timeout": 5, "retries": 12, "start_period": 60}),
        })
        services[name] = svc
        volumes[name.replace("-", "data-", 1)] = {}
    first = {nodes[0]: {"condition": "service_healthy"}}

    svc = _upstream(model, "logstash", _observability.elastic_image(model, "logstash"))
    ls_dir = "./%s/logstash" % ELK_DIR
    svc.update({
        "command": _password_env("LOGSTASH_WRITER_PASSWORD", logstash,
                                 ["/usr/local/bin/docker-entrypoint"]),
        "secrets": [logstash],
        "volumes": ["%s/logstash.yml:/usr/share/logstash/config/logstash.yml:ro" % ls_dir,
                    "%s/pipelines.yml:/usr/share/logstash/config/pipelines.yml:ro" % ls_dir,
                    "%s/pipeline:/usr/share/logstash/pipeline:ro" % ls_dir],
        "environment": {"LS_JAVA_OPTS": "-Xms256m -Xmx256m"},
        "networks": ["logging"],
        "depends_on": dict(first),
        "healthcheck": _healthcheck(["CMD", "curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9600/"],
                                    {"interval": 10, "timeout": 5, "retries": 12, "start_period": 60}),
    })
    services["logstash"] = svc

    svc = _upstream(model, "kibana", _observability.elastic_image(model, "kibana"))
    svc.update({
        "command": _password_env("KIBANA_SYSTEM_PASSWORD", kibana, ["/usr/local/bin/kibana-docker"]),
        "secrets": [kibana],
        "volumes": ["./%s/kibana/kibana.yml:/usr/share/kibana/config/kibana.yml:ro" % ELK_DIR],
        "networks": ["logging", "logging-edge"],
        "depends_on": dict(first),
        "healthcheck": _healthcheck(["CMD", "curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:5601/api/status"],
                                    {"interval": 10, "timeout": 5, "retries": 18, "start_period": 90}),
    })
    if log.get("kibana_port"):
        svc["ports"] = ["127.0.0.1:%d:5601" % log["kibana_port"]]
    services["kibana"] = svc

    # Filebeat reads every container's json-file log and Docker's labels: root, read-only.
    svc = _base(model, "filebeat", _observability.elastic_image(model, "filebeat"))
    svc.update({
        "user": "0:0",
        "command": ["filebeat", "-e", "--strict.perms=false",
                    "-c", "/usr/share/filebeat/opsdeck/filebeat.yml",
                    "--path.data", "/usr/share/filebeat/data"],
        "volumes": ["./%s/filebeat/filebeat.yml:/usr/share/filebeat/opsdeck/filebeat.yml:ro" % ELK_DIR,
                    "/var/lib/docker/containers:/var/lib/docker/containers:ro",
                    "/var/run/docker.sock:/var/run/docker.sock:ro",
                    "filebeatdata:/usr/share/filebeat/data"],
        "networks": ["logging"],
        "depends_on": {"logstash": {"condition": "service_started"}},
    })
    services["filebeat"] = svc
    volumes["filebeatdata"] = {}


def setup_container(model, project_dir, network, user=None):
    """The one-off container that runs elasticsearch/setup.sh against the first node.

    Returns the parameters of ``community.docker.docker_container``: the Elasticsearch image
    (it has curl), the stack's uid (``user`` where the secret files belong to another, e.g.
    root on Swarm), read-only, no capabilities, the setup files and the three password
    files mounted read-only, on the stack's logging network.
    """
    log = model["logging"]
    secrets = {"ELASTIC_PASSWORD_FILE": log["elastic_password_secret"],
               "KIBANA_PASSWORD_FILE": log["kibana_password_secret"],
               "LOGSTASH_PASSWORD_FILE": log["logstash_password_secret"]}
    mounts = [{"type": "bind", "source": "%s/%s/elasticsearch" % (project_dir, ELK_DIR),
               "target": _elk.SETUP_DIR, "read_only": True}]
    env = {"ES_URL": "http://%s:%d" % (_elk.node_names(model)[0], _elk.ES_PORT)}
    for variable, name in sorted(secrets.items()):
        mounts.append({"type": "bind", "source": "%s/%s/%s" % (project_dir, SECRETS_DIR, name),
                       "target": "/run/secrets/%s" % name, "read_only": True})
        env[variable] = "/run/secrets/%s" % name
    return {
        "name": "%s-elk-setup" % model["name"],
        "image": _observability.elastic_image(model, "elasticsearch"),
        "entrypoint": ["/bin/sh"],
        "command": ["%s/setup.sh" % _elk.SETUP_DIR, _elk.SETUP_DIR],
        "user": user or "%d:0" % model["runtime_uid"],
        "read_only": True,
        "tmpfs": ["/tmp"],
        "cap_drop": ["ALL"],
        "security_opts": ["no-new-privileges:true"],
        "env": env,
        "mounts": mounts,
        "networks": [{"name": network}],
        "labels": {"%s.stack" % LABEL_PREFIX: model["name"],
                   "%s.component" % LABEL_PREFIX: "elk-setup"},
    }


def setup_hash(model, files, secrets):
    """What a load of setup.sh depends on: its files and the passwords' digests."""
    log = model["logging"]
    prefix = ELK_DIR + "/elasticsearch/"
    node_files = ("elasticsearch.yml", "heap.options")
    parts = {"files": {f["path"]: digest(f["content"]) for f in files
                       if f["path"].startswith(prefix) and not f["path"].endswith(node_files)},
             "secrets": {name: _secret_digest(name, secrets, files, model["name"])
                         for name in (log["elastic_password_secret"], log["kibana_password_secret"],
                                      log["logstash_password_secret"])}}
    return _content_hash(parts)
