"""Pods of the Kubernetes rendering whose images this machine can build, run on the real
Docker engine with their rendered container spec.

No Kubernetes node can run here (no kubelet, no API server), so nothing here proves that a
cluster admits these pods. What can be run is the containers themselves: the prod model is
rendered for Kubernetes with its monitoring files, and the pods of Alertmanager, the Redis
exporter and the node exporter (images built from Debian packages by the images role) are
started by translating their spec to `docker run`: image, command and args, env, the pod's
runAsUser/runAsGroup/fsGroup, a read-only root file system, capabilities dropped, no new
privileges, hostPID, every ConfigMap/Secret item written where the volume mounts it
(including subPath and projected volumes), emptyDirs as tmpfs, hostPaths as read-only binds
(mount propagation is not emulated).
Each container's readiness probe path then answers, and it serves what its alerts need:
- Alertmanager: /-/ready with the rendered configuration from its Secret.
- Redis exporter: against a real redis-server that requires the vault password, which the
  exporter reads from its Secret mount: redis_up 1 and the length of the inventory's
  example queue (jobs:pending) as redis_key_size.
- node exporter (uid 65534, the host's /, /proc and /sys read-only): the root file system's
  free bytes (DiskSpace alert) and the host's processes (hostPID).
Prometheus (the upstream image with kubernetes_sd), Grafana and the Elastic stack cannot be
had here and are not run.
"""

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
import yaml

from helpers import ROOT, run

sys.path.insert(0, os.path.join(ROOT, "tests", "unit"))
from test_kubernetes_policy import inventory_model  # noqa: E402  (vault stand-ins)

from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import manifests as _kubernetes  # noqa: E402
from ansible_collections.opsdeck.stack.plugins.module_utils.components import monitoring as _monitoring  # noqa: E402

PREFIX = "opsdeck-k8spod"
NETWORK = PREFIX + "-net"
QUEUE = "jobs:pending"  # the prod inventory's example queue
IMAGES = [
    {"component": "alertmanager", "image": "opsdeck/alertmanager:0.25", "recipe": "alertmanager",
     "pull": False},
    {"component": "exporters", "image": "opsdeck/exporters:bookworm", "recipe": "exporters",
     "pull": False},
    {"component": "redis", "image": "opsdeck/redis:7", "recipe": "redis", "pull": False},
]


def docker(*args, check=True):
    return subprocess.run(["docker"] + list(args), capture_output=True, text=True, check=check,
                          timeout=300)


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


def wait_for(url, seconds=90):
    deadline, last = time.monotonic() + seconds, None
    while time.monotonic() < deadline:
        try:
            return get(url)
        except OSError as exc:
            last = exc
        time.sleep(1)
    raise AssertionError("%s did not answer within %d s: %s" % (url, seconds, last))


def objects(manifests, kind):
    return {(m["metadata"].get("namespace"), m["metadata"]["name"]): m
            for m in manifests if m["kind"] == kind}


def _write(path, text, mode):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, mode)


def _volume_files(volume, namespace, configmaps, secrets):
    """{relative path: (content, mode)} of a configMap, secret or projected volume."""
    def from_source(kind, name, items, mode):
        if kind == "configMap":
            data = configmaps[(namespace, name)]["data"]
        else:
            data = {key: base64.b64decode(value).decode()
                    for key, value in secrets[(namespace, name)]["data"].items()}
        pairs = [(i["key"], i["path"]) for i in items] if items else [(k, k) for k in data]
        return {path: (data[key], mode) for key, path in pairs}

    if "configMap" in volume:
        src = volume["configMap"]
        return from_source("configMap", src["name"], src.get("items"), src.get("defaultMode", 0o644))
    if "secret" in volume:
        src = volume["secret"]
        return from_source("secret", src["secretName"], src.get("items"), src.get("defaultMode", 0o644))
    out, mode = {}, volume["projected"].get("defaultMode", 0o644)
    for source in volume["projected"]["sources"]:
        for kind in ("configMap", "secret"):
            if kind in source and (namespace, source[kind]["name"]) in (
                    configmaps if kind == "configMap" else secrets):
                out.update(from_source(kind, source[kind]["name"], source[kind].get("items"), mode))
    return out


def docker_run_args(template, container_name, namespace, configmaps, secrets, workdir, name):
    """`docker run` arguments for one container of a pod template, as a kubelet would run it.

    Files are written world-readable so that any uid in the pod can read them as the
    kubelet's volume (with fsGroup) would allow; the modes the renderer asks for are asserted
    by the unit tests.
    """
    spec = template["spec"]
    container = [c for c in spec["containers"] if c["name"] == container_name][0]
    pod_sec, sec = spec.get("securityContext", {}), container.get("securityContext", {})
    argv = ["run", "-d", "--name", name, "--network", NETWORK, "--hostname", name]
    if "runAsUser" in pod_sec or "runAsUser" in sec:
        uid = sec.get("runAsUser", pod_sec.get("runAsUser"))
        gid = sec.get("runAsGroup", pod_sec.get("runAsGroup", 0))
        argv += ["--user", "%s:%s" % (uid, gid)]
    if "fsGroup" in pod_sec:
        argv += ["--group-add", str(pod_sec["fsGroup"])]
    if sec.get("readOnlyRootFilesystem"):
        argv.append("--read-only")
    for cap in sec.get("capabilities", {}).get("drop", []):
        argv += ["--cap-drop", cap]
    for cap in sec.get("capabilities", {}).get("add", []):
        argv += ["--cap-add", cap]
    if sec.get("allowPrivilegeEscalation") is False:
        argv += ["--security-opt", "no-new-privileges"]
    if spec.get("hostPID"):
        argv += ["--pid", "host"]
    for env in container.get("env", []):
        value = env.get("value")
        if "valueFrom" in env:
            value = {"metadata.name": name, "metadata.namespace": namespace}[
                env["valueFrom"]["fieldRef"]["fieldPath"]]
        argv += ["-e", "%s=%s" % (env["name"], value)]
    for port in container.get("ports", []):
        argv += ["-p", "127.0.0.1::%d" % port["containerPort"]]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            argv += ["--tmpfs", "%s:mode=1777" % mount["mountPath"]]
            continue
        if "hostPath" in volume:
            # mountPropagation is not emulated: this machine's / is a private mount
            options = "ro" if mount.get("readOnly") else "rw"
            argv += ["-v", "%s:%s:%s" % (volume["hostPath"]["path"], mount["mountPath"], options)]
            continue
        files = _volume_files(volume, namespace, configmaps, secrets)
        folder = os.path.join(workdir, name, mount["name"])
        for rel, (content, _mode) in files.items():
            _write(os.path.join(folder, rel), content, 0o644)
        source = os.path.join(folder, mount["subPath"]) if mount.get("subPath") else folder
        argv += ["-v", "%s:%s:ro" % (source, mount["mountPath"])]
    command, args = container.get("command"), container.get("args", [])
    if command:
        argv += ["--entrypoint", command[0], container["image"]] + command[1:] + args
    else:
        argv += [container["image"]] + args
    return argv


def published(name, port):
    out = docker("port", name, "%d/tcp" % port).stdout.split()[0]
    return int(out.rsplit(":", 1)[1])


def cleanup():
    names = docker("ps", "-aq", "--filter", "name=" + PREFIX, check=False).stdout.split()
    if names:
        docker("rm", "-f", *names, check=False)
    docker("network", "rm", NETWORK, check=False)


@pytest.fixture(scope="module")
def pods(tmp_path_factory):
    work = tmp_path_factory.mktemp("k8spods")
    playbook = work / "images.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Build the images of the pods under test", "hosts": "localhost",
        "connection": "local", "gather_facts": False,
        "roles": [{"role": "opsdeck.stack.images", "images_wanted": IMAGES}]}]))
    built = run(["ansible-playbook", "-i", "localhost,", str(playbook),
                 "-e", "ansible_python_interpreter=%s" % sys.executable], timeout=1200)
    assert built.returncode == 0, built.stdout[-4000:]

    model, vault = inventory_model("prod")
    # Alertmanager loads the webhook: the stand-in must be a URL (no request is ever sent:
    # no alert fires, and the network is closed)
    vault = dict(vault, slack_webhook_url="https://hooks.slack.invalid/services/k8s-pods-0001")
    # htpasswd: prod routes with basic_auth need one (any bcrypt line will do here)
    manifests = _kubernetes.render(model, vault, htpasswd="ops:$2y$05$k8spods",
                                   monitoring_files=_monitoring.render(model, vault))
    namespace = [m for m in manifests if m["kind"] == "Namespace"
                 and not m["metadata"]["name"].endswith("-agents")][0]["metadata"]["name"]
    configmaps, secrets = objects(manifests, "ConfigMap"), objects(manifests, "Secret")
    workloads = {m["metadata"]["name"]: m for m in manifests
                 if m["kind"] in ("Deployment", "DaemonSet", "StatefulSet")}
    cleanup()
    docker("network", "create", NETWORK)
    started = {}
    try:
        # The Redis the exporter scrapes: reachable as "redis" (the Service's name), with
        # the password of the vault, holding the inventory's example queue.
        password = vault[model["redis"]["password_secret"]]
        docker("run", "-d", "--name", PREFIX + "-redis", "--network", NETWORK,
               "--network-alias", "redis", "opsdeck/redis:7", "redis-server", "--port",
               str(model["redis"]["port"]), "--requirepass", password, "--save", "")
        for _attempt in range(30):
            if docker("exec", PREFIX + "-redis", "redis-cli", "-a", password, "--no-auth-warning",
                      "RPUSH", QUEUE, "m1", "m2", "m3", check=False).returncode == 0:
                break
            time.sleep(1)
        else:
            raise AssertionError("redis did not start")
        for workload, container in (("alertmanager", "alertmanager"),
                                    ("redis-exporter", "redis-exporter"),
                                    ("node-exporter", "node-exporter")):
            manifest = workloads[workload]
            name = "%s-%s-%s" % (PREFIX, workload, uuid.uuid4().hex[:6])
            argv = docker_run_args(manifest["spec"]["template"], container,
                                   manifest["metadata"]["namespace"], configmaps, secrets,
                                   str(work), name)
            result = docker(*argv, check=False)
            assert result.returncode == 0, (argv, result.stderr)
            template = manifest["spec"]["template"]
            spec = [c for c in template["spec"]["containers"] if c["name"] == container][0]
            probe = spec["readinessProbe"]["httpGet"]
            port = [p["containerPort"] for p in spec["ports"] if p["name"] == probe["port"]][0]
            started[workload] = {"name": name, "url": "http://127.0.0.1:%d" % published(name, port),
                                 "ready": probe["path"], "manifest": manifest}
        yield {"model": model, "vault": vault, "started": started}
    finally:
        for item in started.values():
            logs = docker("logs", "--tail", "30", item["name"], check=False)
            sys.stderr.write("--- %s\n%s%s" % (item["name"], logs.stdout, logs.stderr))
        cleanup()


def ready(pods, workload):
    item = pods["started"][workload]
    status, body = wait_for(item["url"] + item["ready"])
    assert status == 200
    return item, body


def test_alertmanager_pod_is_ready_with_its_rendered_secret_config(pods):
    item, _body = ready(pods, "alertmanager")
    _status, status_body = get(item["url"] + "/api/v2/status")
    config = json.loads(status_body)["config"]["original"]
    # the routes and receivers of the model are what Alertmanager runs
    assert "pagerduty" in config and "slack" in config and "email" in config
    inspect = json.loads(docker("inspect", item["name"]).stdout)[0]
    assert inspect["HostConfig"]["ReadonlyRootfs"] is True
    assert inspect["Config"]["User"].split(":")[0] == str(pods["model"]["runtime_uid"])


def test_redis_exporter_pod_reads_its_password_secret_and_the_queue_length(pods):
    item, _body = ready(pods, "redis-exporter")
    deadline, metrics = time.monotonic() + 60, ""
    while time.monotonic() < deadline:
        _status, metrics = get(item["url"] + "/metrics")
        if "redis_up 1" in metrics and QUEUE in metrics:
            break
        time.sleep(2)
    assert "redis_up 1" in metrics, [line for line in metrics.splitlines() if "redis_up" in line]
    sizes = [line for line in metrics.splitlines()
             if line.startswith("redis_key_size") and QUEUE in line]
    assert sizes and sizes[0].rsplit(" ", 1)[1] in ("3", "3.0"), sizes
    # the password is a Secret file, never in the environment or the arguments
    inspect = json.loads(docker("inspect", item["name"]).stdout)[0]
    password = pods["vault"][pods["model"]["redis"]["password_secret"]]
    assert password not in json.dumps(inspect["Config"])


def test_node_exporter_pod_sees_the_host_as_nobody(pods):
    item, _body = ready(pods, "node-exporter")
    _status, metrics = get(item["url"] + "/metrics")
    roots = [line for line in metrics.splitlines()
             if line.startswith("node_filesystem_avail_bytes") and 'mountpoint="/"' in line]
    assert roots and float(roots[0].rsplit(" ", 1)[1]) > 0, "no free bytes for / (DiskSpace)"
    assert any(line.startswith("node_load1 ") for line in metrics.splitlines())
    inspect = json.loads(docker("inspect", item["name"]).stdout)[0]
    assert inspect["Config"]["User"].startswith("65534")
    assert inspect["HostConfig"]["PidMode"] == "host"
    assert all(m["RW"] is False for m in inspect["Mounts"] if m["Type"] == "bind")
