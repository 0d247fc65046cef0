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

import hashlib
import json

from ansible_collections.opsdeck.stack.plugins.module_utils import _monitoring

LABEL_PREFIX = "org.opsdeck"
SECRETS_DIR = "secrets"
CONFIG_DIR = "config"
LOGGING = {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}
MONITORING_DIR = CONFIG_DIR + "/monitoring"
# Services whose bind-mounted configuration rolls them when it changes.
CONFIG_MOUNTS = {"proxy": CONFIG_DIR + "/proxy/", "prometheus": MONITORING_DIR + "/prometheus/"}


def digest(text, salt=""):
    """A short, stable digest of ``text`` used in labels and diffs."""
    data = (salt + "\0" + text).encode("utf-8") if salt else text.encode("utf-8")
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


def _content_hash(parts):
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def _cpus(millis):
    text = "%.3f" % (millis / 1000.0)
    return text.rstrip("0").rstrip(".")


def _deploy(svc, replicas):
    deploy = {"replicas": replicas}
    limits = svc.get("resources", {}).get("limits", {})
    requests = svc.get("resources", {}).get("requests", {})
    resources = {}
    if limits:
        resources["limits"] = {}
        if "cpu_millis" in limits:
            resources["limits"]["cpus"] = _cpus(limits["cpu_millis"])
        if "memory_bytes" in limits:
            resources["limits"]["memory"] = str(limits["memory_bytes"])
    if requests:
        resources["reservations"] = {}
        if "cpu_millis" in requests:
            resources["reservations"]["cpus"] = _cpus(requests["cpu_millis"])
        if "memory_bytes" in requests:
            resources["reservations"]["memory"] = str(requests["memory_bytes"])
    if resources:
        deploy["resources"] = resources
    return deploy


def http_probe(port, path, probe):
    """A shell healthcheck that works with whatever HTTP client the image has."""
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


def render(model, secrets, proxy_files=None, monitoring_files=None):
    """Return {"project": compose dict, "files": [...], "hashes": {service: hash}}.

    ``secrets`` maps secret names to their values (from the vault); ``proxy_files`` is the
    ``nginx_proxy_files`` list produced by the nginx_proxy role, ``monitoring_files`` the
    ``monitoring_files`` list of the monitoring role (used when monitoring is enabled).
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

    for app in model["services"]:
        svc = _base(model, app["name"], app["image"])
        if app.get("user"):
            svc["user"] = app["user"]
        if not app.get("read_only", True):
            svc.pop("read_only")
        if app.get("command"):
            svc["command"] = list(app["command"])
        if app["env"]:
            svc["environment"] = dict(app["env"])
        if app["secrets"]:
            svc["secrets"] = list(app["secrets"])
            for name in app["secrets"]:
                add_secret(name)
        svc["networks"] = ["frontend", "backend"] if app.get("route") else ["backend"]
        svc["deploy"] = _deploy(app, app["replicas"])
        svc["stop_grace_period"] = "15s"
        if app.get("health") and app.get("port") and app["health"]["probe"] != "none":
            svc["healthcheck"] = _healthcheck(
                http_probe(app["port"], app["health"]["ready"], app["health"]["probe"]),
                app["health"])
        deps = {}
        for dep in app["depends_on"]:
            deps[dep] = {"condition": "service_healthy"
                         if dep in ("postgres", "redis") or _has_health(model, dep)
                         else "service_started"}
        if deps:
            svc["depends_on"] = deps
        if app.get("port"):
            svc["expose"] = [str(app["port"])]
        services[app["name"]] = svc

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
                {"interval": 5, "timeout": 3, "retries": 5, "start_period": 5}),
            "depends_on": {
                app["name"]: {"condition": "service_healthy" if _has_health(model, app["name"])
                              else "service_started"}
                for app in model["services"] if app.get("route") and app["replicas"] > 0
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

    # Secret files and the labels that roll the services using them.
    for name in sorted(used_secrets):
        if name in secrets:
            files.append({"path": "%s/%s" % (SECRETS_DIR, name), "content": secrets[name],
                          "mode": "0600", "secret": True})
    for name, svc in services.items():
        names = [s if isinstance(s, str) else s["source"] for s in svc.get("secrets", [])]
        parts = {"secrets": {n: _secret_digest(n, secrets, files, stack) for n in sorted(names)}}
        if name in CONFIG_MOUNTS:
            parts["config"] = {f["path"]: digest(f["content"]) for f in files
                               if f["path"].startswith(CONFIG_MOUNTS[name])}
        hashes[name] = _content_hash(parts)
        svc["labels"]["%s.config-hash" % LABEL_PREFIX] = hashes[name]
        svc["labels"].update({"%s.secret.%s" % (LABEL_PREFIX, n): d
                              for n, d in parts["secrets"].items()})

    project = {"name": stack, "services": services,
               "networks": {"frontend": {}, "backend": {"internal": True}}}
    if "prometheus" in services:
        # Prometheus and Alertmanager: published on 127.0.0.1 only, Alertmanager reaches out.
        project["networks"]["monitoring"] = {}
    if volumes:
        project["volumes"] = volumes
    if secret_defs:
        project["secrets"] = {k: secret_defs[k] for k in sorted(secret_defs)}
    return {"project": project, "files": sorted(files, key=lambda f: f["path"]),
            "hashes": hashes}


def _secret_digest(name, secrets, files, stack):
    if name in secrets:
        return digest(secrets[name], stack + ":" + name)
    for item in files:
        if item["path"] == "%s/%s" % (SECRETS_DIR, name):
            return digest(item["content"], stack + ":" + name)
    return "missing"


def _has_health(model, name):
    for app in model["services"]:
        if app["name"] == name:
            return bool(app.get("health") and app.get("port")
                        and app["health"]["probe"] != "none")
    return name in ("postgres", "redis")


def _monitoring_services(model, monitoring_files, services, files, volumes, add_secret,
                         used_secrets, secret_defs):
    """Prometheus, Alertmanager and the exporters (images built from Debian packages).

    Grafana is not run on Compose (no Debian package): its provisioning files are written
    under config/monitoring/grafana for reference; it runs on Kubernetes.
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
    probe = {"interval": 10, "timeout": 3, "retries": 6, "start_period": 10}

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
        command = ["redis", "--redis.addr=redis://redis:%d" % rd["port"]]
        if mon["redis_queues"]:
            command.append("--check-single-keys=" + ",".join(
                "db0=%s" % q["key"] for q in mon["redis_queues"]))
        svc = exporter("redis-exporter", command, ["backend"], "redis")
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
    svc = exporter("node-exporter", [
        "node", "--path.procfs=/host/proc", "--path.sysfs=/host/sys", "--path.rootfs=/host/root",
        "--collector.filesystem.mount-points-exclude=^/(dev|proc|sys|run|var/lib/docker/.+)($$|/)"],
        ["backend"])
    svc["volumes"] = ["/proc:/host/proc:ro", "/sys:/host/sys:ro", "/:/host/root:ro"]
