# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Monitoring and ELK on Kubernetes: the manifests (private, pure).

``render(model, secrets, namespace, monitoring_files, elk_files)`` turns the files of the
monitoring and elk roles (``_monitoring.render`` / ``_elk.render``) into objects of the
stack's namespace; ``_kubernetes.render`` calls it and sorts the result with the rest.
The choices mirror the Compose target (same images, commands, environment, secret names):

- Prometheus: StatefulSet (1 pod, a claim, retention flags from the model), discovers pods
  with kubernetes_sd restricted to its own namespace, through a ServiceAccount bound to a
  namespaced Role that may only get/list/watch pods, endpoints and services. The token is
  mounted by a projected volume in Prometheus' pod only (every other pod: no token).
- Alertmanager (Deployment, config in a Secret), the Redis and PostgreSQL exporters
  (Deployments), Grafana (Deployment, when ``stack_monitoring.grafana.enabled``; admin
  password read from a Secret through ``GF_SECURITY_ADMIN_PASSWORD__FILE``).
- Elasticsearch: StatefulSet ``es`` (pods es-0.., replicas = ``elasticsearch.nodes``),
  headless Service ``es-cluster`` for discovery, client Service ``elasticsearch``, transport
  certificates from the stack's Secrets, ``node.store.allow_mmap: false`` (no privileged
  init container for vm.max_map_count under the restricted Pod Security). Logstash and
  Kibana: Deployments. setup.sh runs as a Job named by a hash of its inputs, so a change of
  the ILM policies, templates or passwords runs it again and nothing else does.
- Host agents, in a namespace of their own, ``<namespace>-agents`` (only when monitoring or
  logging is on): the node exporter and Filebeat need hostPID, hostPath and (Filebeat)
  uid 0, which only the ``privileged`` Pod Security level admits. Labelling the stack's
  namespace privileged would admit them to every pod of the stack, so it stays
  ``restricted`` and the two DaemonSets get a namespace that holds nothing else, with a
  default-deny NetworkPolicy, DNS egress and exactly two flows across: Prometheus ->
  node exporter (metrics port) and Filebeat -> Logstash (beats port).

  - node exporter (monitoring): the Compose image and arguments, hostPID, the host's
    ``/proc``, ``/sys`` and ``/`` read-only under /host, uid 65534 (nobody), read-only
    root, no capabilities. No hostNetwork, so the NetworkPolicies apply to it; the price:
    its network-device metrics (node_network_*) are those of the pod's network namespace,
    not of the node's interfaces. Prometheus finds it with kubernetes_sd restricted to the
    agents namespace, through a Role there (get/list/watch pods) bound to its
    ServiceAccount.
  - Filebeat (logging): reads only the kubelet's log files of the stack's namespace
    (``/var/log/containers/*_<namespace>_*.log``, CRI or docker format), with the
    hostPaths ``/var/log/containers``, ``/var/log/pods`` (the symlinks' targets) and
    ``/var/lib/docker/containers`` (docker-runtime nodes) read-only, not the rest of
    /var/log; no API access (no ServiceAccount token); its registry on the hostPath
    ``/var/lib/opsdeck-filebeat/<namespace>`` (a restart does not ship everything again).
    uid 0 (the log files are root's) with a read-only root file system, every capability
    dropped but DAC_READ_SEARCH (read and traverse whatever the runtime's modes, no write).
    Probes: Filebeat's HTTP endpoint on the pod's address (``http.host: 0.0.0.0``, named
    port ``http``): the kubelet cannot reach 127.0.0.1 of the pod, and an exec of
    ``filebeat test config`` would check the file, not the running process. The kubelet's
    probes pass NetworkPolicies; no other pod is admitted to that port.
  The checks these two knowingly fail are skipped in their DaemonSets only
  (_kubernetes.POLICY_SKIPS, with reasons).
- Not rendered (see _fidelity): the nginx exporter (the Ingress is the cluster's
  ingress-nginx, which exports its own metrics).

Every pod of the stack's namespace is restricted-PSS clean (non-root, read-only root file
system with emptyDirs where the application writes, no capabilities, RuntimeDefault
seccomp), has requests and limits (the COMPONENT_RESOURCES below: the model does not size
these components) and probes. A pod template carries ``opsdeck.io/config-checksum`` over
the files it mounts and ``opsdeck.io/secrets-checksum`` over the secrets it reads: a
changed file rolls exactly the pods that use it. NetworkPolicies allow exactly the flows
between these components.
"""

from __future__ import annotations

import re

from ansible_collections.opsdeck.stack.plugins.module_utils.common import digest as _digest
from ansible_collections.opsdeck.stack.plugins.module_utils.components import elk as _elk
from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import manifests as k
from ansible_collections.opsdeck.stack.plugins.module_utils.components import monitoring as _monitoring
from ansible_collections.opsdeck.stack.plugins.module_utils.model import observability as _observability

CONFIG_CHECKSUM_ANNOTATION = "opsdeck.io/config-checksum"
SA_TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
GRAFANA_PORT = 3000
KIBANA_PORT = 5601
LOGSTASH_API_PORT = 9600
ES_TRANSPORT_PORT = 9300
ES_CONFIG = "/usr/share/elasticsearch/config"
ALERTMANAGER_CONFIG = "alertmanager-config"
# Prometheus' claim when the model gives no retention size; with one, size + 25 %.
PROMETHEUS_STORAGE = "10Gi"
# Sizes of the platform components (the model sizes only the apps): (requests, limits).
COMPONENT_RESOURCES = {
    "prometheus": ({"cpu": "250m", "memory": "512Mi"}, {"cpu": "1", "memory": "2Gi"}),
    "alertmanager": ({"cpu": "50m", "memory": "64Mi"}, {"cpu": "200m", "memory": "256Mi"}),
    "exporter": ({"cpu": "25m", "memory": "32Mi"}, {"cpu": "200m", "memory": "128Mi"}),
    "grafana": ({"cpu": "100m", "memory": "128Mi"}, {"cpu": "500m", "memory": "512Mi"}),
    "logstash": ({"cpu": "250m", "memory": "512Mi"}, {"cpu": "1", "memory": "1Gi"}),
    "kibana": ({"cpu": "250m", "memory": "768Mi"}, {"cpu": "1", "memory": "1536Mi"}),
    "setup": ({"cpu": "50m", "memory": "64Mi"}, {"cpu": "500m", "memory": "128Mi"}),
    "node-exporter": ({"cpu": "50m", "memory": "32Mi"}, {"cpu": "250m", "memory": "128Mi"}),
    "filebeat": ({"cpu": "100m", "memory": "128Mi"}, {"cpu": "500m", "memory": "512Mi"}),
    # Elasticsearch: from the model (model/observability.es_resources)
    "elasticsearch": ({"cpu": "500m"}, {"cpu": "2"}),
}
# Where Alertmanager may send notifications: anywhere but the link-local metadata range.
INTERNET = {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}}
# Where the API server may be when the caller does not say (Prometheus' kubernetes_sd).
API_SERVER_PORTS = (443, 6443)
# The agents namespace: privileged Pod Security (hostPID, hostPath, Filebeat's uid 0).
AGENTS_PSS = "privileged"
NOBODY = 65534
FILEBEAT_DIR = "/usr/share/filebeat"
FILEBEAT_REGISTRY = "/var/lib/opsdeck-filebeat"
# The Role in the agents namespace that lets the stack's Prometheus discover the pods there.
AGENTS_DISCOVERY_ROLE = "prometheus-discovery"


# --------------------------------------------------------------------------- helpers
_sha = _digest.short_hash


def _resources(component):
    requests, limits = COMPONENT_RESOURCES[component]
    return {"requests": dict(requests), "limits": dict(limits)}


def _prometheus_storage(model):
    size = model["monitoring"].get("retention_size")
    if not size:
        return PROMETHEUS_STORAGE
    match = re.match(r"^([0-9]+)(B|KB|MB|GB|TB|PB)$", size)
    factor = {"B": 1, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "TB": 10 ** 12, "PB": 10 ** 15}
    gib = int(match.group(1)) * factor[match.group(2)] * 1.25 / 2 ** 30
    return "%dGi" % max(1, int(gib + 0.999))


def _files(files, prefix):
    """{path below prefix: content} of the non-secret files under ``prefix``."""
    return {f["path"][len(prefix):]: f["content"] for f in files
            if f["path"].startswith(prefix) and not f.get("secret")}


def _key(rel):
    """A ConfigMap key for a relative path (keys cannot hold '/')."""
    return rel.replace("/", "_")


def _configmap(model, name, component, rels, namespace):
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": k._meta(name, namespace, k.labels(model["name"], component, "config")),
            "data": {_key(rel): rels[rel] for rel in sorted(rels)}}


def _cm_volume(volume, configmap, rels):
    return {"name": volume, "configMap": {
        "name": configmap, "defaultMode": 0o444,
        "items": [{"key": _key(rel), "path": rel} for rel in sorted(rels)]}}


def _port(name, number):
    return {"name": name, "containerPort": number, "protocol": "TCP"}


def _http_probes(port, live, ready, start_seconds=60, timeout=5):
    def probe(path, threshold):
        return {"httpGet": {"path": path, "port": port}, "periodSeconds": 10,
                "timeoutSeconds": timeout, "failureThreshold": threshold}
    return {"startupProbe": probe(live, max(1, start_seconds // 10)),
            "livenessProbe": probe(live, 6), "readinessProbe": probe(ready, 3)}


def _tcp_exec_probes(port, ready_command, start_seconds):
    """Started/alive: the port answers; ready: ``ready_command`` succeeds."""
    tcp = {"tcpSocket": {"port": port}, "periodSeconds": 10, "timeoutSeconds": 5}
    return {"startupProbe": dict(tcp, failureThreshold=max(1, start_seconds // 10)),
            "livenessProbe": dict(tcp, failureThreshold=6),
            "readinessProbe": {"exec": {"command": list(ready_command)}, "periodSeconds": 10,
                               "timeoutSeconds": 5, "failureThreshold": 3}}


def _container(name, image, resources, read_only=True):
    return {"name": name, "image": image, "imagePullPolicy": "IfNotPresent",
            "securityContext": k._container_security(read_only),
            "resources": _resources(resources)}


def _host_path(name, path, path_type=None):
    """A hostPath volume; ``path_type`` None: no check (the path may be absent on a node)."""
    source = {"path": path}
    if path_type:
        source["type"] = path_type
    return {"name": name, "hostPath": source}


def _password_env(variable, secret, command):
    """Run ``command`` with ``variable`` read from a secret file (images without _FILE).

    Backticks, not "$(...)": the kubelet expands $(VAR) in commands.
    """
    return ["/bin/sh", "-c", 'export %s="`cat %s/%s`"; exec "$0" "$@"'
            % (variable, k.SECRETS_DIR, secret)] + list(command)


class _Obs:
    """Collects the objects of the monitoring and ELK components."""

    def __init__(self, model, secrets, namespace):
        self.model = model
        self.stack = model["name"]
        self.secrets = secrets
        self.namespace = namespace
        self.tenant = k._tenant(model)
        self.out = []
        # (source component, target component, port): the flows the policies allow
        self.flows = []
        # (source, its namespace, target, its namespace, port): flows with the agents namespace
        self.cross = []
        self._agents = None

    @property
    def agents(self):
        """The agents namespace (computed when first needed: its name may be too long)."""
        if self._agents is None:
            self._agents = k.agents_namespace(self.namespace)
        return self._agents

    def labels(self, component, role):
        return k.labels(self.stack, component, role, self.tenant)

    def add(self, item):
        self.out.append(item)
        return item

    def service(self, name, component, role, ports, headless=False, not_ready=False):
        spec = {"selector": k.selector(self.stack, component),
                "ports": [{"name": pname, "port": number, "targetPort": pname, "protocol": "TCP"}
                          for pname, number in ports]}
        if headless:
            spec = dict({"clusterIP": "None"}, **spec)
        else:
            spec = dict({"type": "ClusterIP"}, **spec)
        if not_ready:
            spec["publishNotReadyAddresses"] = True
        self.add({"apiVersion": "v1", "kind": "Service",
                  "metadata": k._meta(name, self.namespace, self.labels(component, role)),
                  "spec": spec})

    def pod(self, component, containers, volumes, secret_names=(), config=None,
            secret_files=None, uid_gid=None, service_account=None, init=None,
            restart=None):
        """A pod template: tmp and secrets volumes, checksums, hardened security contexts."""
        names = sorted(set(secret_names))
        parts = {name: k.digest(k._secret_value(self.secrets, name), self.stack + ":" + name)
                 for name in names}
        for path, content in sorted((secret_files or {}).items()):
            parts[path] = k.digest(content, self.stack + ":" + path)
        annotations = {k.CHECKSUM_ANNOTATION: k._checksum(parts),
                       CONFIG_CHECKSUM_ANNOTATION: k._checksum(
                           {path: _sha(text) for path, text in sorted((config or {}).items())})}
        vols = [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
        mounts = [{"name": "tmp", "mountPath": "/tmp"}]
        if names:
            vols.append(k._secret_volume(names))
            mounts.append({"name": "secrets", "mountPath": k.SECRETS_DIR, "readOnly": True})
        for container in containers + (init or []):
            container["volumeMounts"] = mounts + container.get("volumeMounts", [])
        spec = {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": k._pod_security(*(uid_gid or k._uid_gid(self.model))),
            "terminationGracePeriodSeconds": 30,
        }
        if service_account:
            spec["serviceAccountName"] = service_account
        if restart:
            spec["restartPolicy"] = restart
        if init:
            spec["initContainers"] = init
        spec["containers"] = containers
        spec["volumes"] = vols + volumes
        return {"metadata": {"labels": self.labels(component, None), "annotations": annotations},
                "spec": spec}

    def deployment(self, name, role, template, replicas=1):
        self.add({"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": k._meta(name, self.namespace, self.labels(name, role)),
                  "spec": {"replicas": replicas,
                           "selector": {"matchLabels": k.selector(self.stack, name)},
                           "revisionHistoryLimit": 5,
                           "strategy": {"type": "RollingUpdate",
                                        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                           "template": template}})

    def daemonset(self, name, role, template):
        """A host agent: one pod per node (every taint tolerated), in the agents namespace."""
        template["spec"]["tolerations"] = [{"operator": "Exists"}]
        self.add({"apiVersion": "apps/v1", "kind": "DaemonSet",
                  "metadata": k._meta(name, self.agents, self.labels(name, role)),
                  "spec": {"selector": {"matchLabels": k.selector(self.stack, name)},
                           "revisionHistoryLimit": 5,
                           "updateStrategy": {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxUnavailable": 1}},
                           "template": template}})

    def statefulset(self, name, component, role, template, replicas, service, storage,
                    parallel=False):
        claim = {"metadata": {"name": "data", "labels": self.labels(component, role)},
                 "spec": {"accessModes": ["ReadWriteOnce"],
                          "resources": {"requests": {"storage": storage}}}}
        self.add({"apiVersion": "apps/v1", "kind": "StatefulSet",
                  "metadata": k._meta(name, self.namespace, self.labels(component, role)),
                  "spec": {"serviceName": service, "replicas": replicas,
                           "selector": {"matchLabels": k.selector(self.stack, component)},
                           "podManagementPolicy": "Parallel" if parallel else "OrderedReady",
                           "updateStrategy": {"type": "RollingUpdate"},
                           "template": template,
                           "volumeClaimTemplates": [claim],
                           "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain",
                                                                    "whenScaled": "Retain"}}})

    # ----------------------------------------------------------------------- monitoring
    def monitoring(self, files):
        model = self.model
        mon = model["monitoring"]
        images = mon["images"]
        prom_files = _files(files, "prometheus/")
        self.add(_configmap(model, "prometheus-config", "prometheus", prom_files, self.namespace))

        # RBAC for kubernetes_sd: this namespace's pods, endpoints and services, read only.
        lbls = self.labels("prometheus", "rbac")
        self.add({"apiVersion": "v1", "kind": "ServiceAccount",
                  "metadata": k._meta("prometheus", self.namespace, lbls),
                  "automountServiceAccountToken": False})
        self.add({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                  "metadata": k._meta("prometheus", self.namespace, lbls),
                  "rules": [{"apiGroups": [""], "resources": ["endpoints", "pods", "services"],
                             "verbs": ["get", "list", "watch"]}]})
        self.add({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                  "metadata": k._meta("prometheus", self.namespace, lbls),
                  "subjects": [{"kind": "ServiceAccount", "name": "prometheus",
                                "namespace": self.namespace}],
                  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                              "name": "prometheus"}})

        port = _monitoring.PROMETHEUS_PORT
        prom = _container("prometheus", images["prometheus"], "prometheus")
        # "prometheus" from PATH: /usr/bin in the Debian build, /bin in the upstream image
        prom["command"] = ["prometheus", "--config.file=/etc/prometheus/opsdeck/prometheus.yml",
                           "--storage.tsdb.path=/prometheus",
                           "--web.listen-address=:%d" % port] + _monitoring.storage_flags(model)
        prom["ports"] = [_port("http", port)]
        prom.update(_http_probes("http", "/-/healthy", "/-/ready", 120))
        prom["volumeMounts"] = [
            {"name": "config", "mountPath": "/etc/prometheus/opsdeck", "readOnly": True},
            {"name": "data", "mountPath": "/prometheus"},
            {"name": "api-token", "mountPath": SA_TOKEN_DIR, "readOnly": True}]
        token = {"name": "api-token", "projected": {"defaultMode": 0o444, "sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
            {"configMap": {"name": "kube-root-ca.crt",
                           "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace",
                                        "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}
        template = self.pod("prometheus", [prom],
                            [_cm_volume("config", "prometheus-config", prom_files), token],
                            config={"prometheus/" + p: c for p, c in prom_files.items()},
                            service_account="prometheus")
        self.statefulset("prometheus", "prometheus", "monitoring", template, 1, "prometheus",
                         _prometheus_storage(model))
        self.service("prometheus", "prometheus", "monitoring", [("http", port)])

        # Alertmanager: its configuration holds webhook URLs and keys, hence a Secret.
        am_text = [f["content"] for f in files if f["path"] == "alertmanager/alertmanager.yml"][0]
        self.add(k._secret(model, ALERTMANAGER_CONFIG, {"alertmanager.yml": am_text},
                           self.namespace, role="config"))
        am_port = _monitoring.ALERTMANAGER_PORT
        am = _container("alertmanager", images["alertmanager"], "alertmanager")
        am["command"] = ["/usr/bin/prometheus-alertmanager",
                         "--config.file=/etc/alertmanager/opsdeck/alertmanager.yml",
                         "--storage.path=/alertmanager", "--web.listen-address=:%d" % am_port,
                         "--cluster.listen-address="]
        am["ports"] = [_port("http", am_port)]
        am.update(_http_probes("http", "/-/healthy", "/-/ready", 60))
        am["volumeMounts"] = [
            {"name": "config", "mountPath": "/etc/alertmanager/opsdeck", "readOnly": True},
            {"name": "data", "mountPath": "/alertmanager"}]
        template = self.pod("alertmanager", [am], [
            {"name": "config", "secret": {"secretName": ALERTMANAGER_CONFIG, "defaultMode": 0o440,
                                          "items": [{"key": "alertmanager.yml",
                                                     "path": "alertmanager.yml"}]}},
            {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}],
            secret_files={"alertmanager/alertmanager.yml": am_text})
        self.deployment("alertmanager", "monitoring", template)
        self.service("alertmanager", "alertmanager", "monitoring", [("http", am_port)])
        self.flows.append(("prometheus", "alertmanager", am_port))

        exporters = dict(_monitoring.exporters(model))
        if "redis-exporter" in exporters:
            rd = model["redis"]
            args = _monitoring.redis_exporter_args(model)
            env, names = {}, []
            if rd.get("password_secret"):
                names.append(rd["password_secret"])
                env["REDIS_PASSWORD_FILE"] = "%s/%s" % (k.SECRETS_DIR, rd["password_secret"])
            self.exporter("redis-exporter", exporters["redis-exporter"], args, env, names)
            self.flows.append(("redis-exporter", "redis", rd["port"]))
        if "postgres-exporter" in exporters:
            pg = model["postgres"]
            uri = "postgres:%d/%s?sslmode=disable" % (pg["port"], pg["database"])
            env = {"DATA_SOURCE_URI": uri,
                   "DATA_SOURCE_USER": pg["user"],
                   "DATA_SOURCE_PASS_FILE": "%s/%s" % (k.SECRETS_DIR, pg["password_secret"])}
            self.exporter("postgres-exporter", exporters["postgres-exporter"], ["postgres"], env,
                          [pg["password_secret"]])
            self.flows.append(("postgres-exporter", "postgres", pg["port"]))
        if "node-exporter" in exporters:
            self.node_exporter(exporters["node-exporter"])
        for svc in model["services"]:
            port = _monitoring.scrape_port(svc)
            if port is not None:
                self.flows.append(("prometheus", svc["name"], port))
        if mon["grafana"]["enabled"]:
            self.grafana(files)

    def exporter(self, name, port, args, env, secret_names):
        container = _container(name, self.model["monitoring"]["images"]["exporters"], "exporter")
        container["args"] = list(args)
        if env:
            container["env"] = k._env(env)
        container["ports"] = [_port("metrics", port)]
        container.update(_http_probes("metrics", "/metrics", "/metrics", 30))
        self.deployment(name, "exporter", self.pod(name, [container], [], secret_names))
        self.service(name, name, "exporter", [("metrics", port)])
        self.flows.append(("prometheus", name, port))

    def node_exporter(self, port):
        """The node exporter DaemonSet of the agents namespace, and Prometheus' access to it."""
        lbls = self.labels("prometheus", "rbac")
        self.add({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                  "metadata": k._meta(AGENTS_DISCOVERY_ROLE, self.agents, lbls),
                  "rules": [{"apiGroups": [""], "resources": ["pods"],
                             "verbs": ["get", "list", "watch"]}]})
        self.add({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                  "metadata": k._meta(AGENTS_DISCOVERY_ROLE, self.agents, lbls),
                  "subjects": [{"kind": "ServiceAccount", "name": "prometheus",
                                "namespace": self.namespace}],
                  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                              "name": AGENTS_DISCOVERY_ROLE}})
        container = _container("node-exporter", self.model["monitoring"]["images"]["exporters"],
                               "node-exporter")
        container["args"] = ["node"] + list(_monitoring.NODE_EXPORTER_ARGS)
        container["ports"] = [_port("metrics", port)]
        # "/" is the exporter's landing page: a probe does not collect every metric
        container.update(_http_probes("metrics", "/", "/", 30))
        container["volumeMounts"] = [
            {"name": "proc", "mountPath": "/host/proc", "readOnly": True},
            {"name": "sys", "mountPath": "/host/sys", "readOnly": True},
            {"name": "root", "mountPath": "/host/root", "readOnly": True,
             "mountPropagation": "HostToContainer"}]
        template = self.pod("node-exporter", [container], [
            _host_path("proc", "/proc", "Directory"), _host_path("sys", "/sys", "Directory"),
            _host_path("root", "/", "Directory")], uid_gid=(NOBODY, NOBODY))
        template["spec"]["hostPID"] = True
        self.daemonset("node-exporter", "exporter", template)
        self.cross.append(("prometheus", self.namespace, "node-exporter", self.agents, port))

    def grafana(self, files):
        model = self.model
        graf = model["monitoring"]["grafana"]
        graf_files = _files(files, "grafana/")
        settings = {rel: text for rel, text in graf_files.items()
                    if not rel.startswith("dashboards/")}
        boards = {rel[len("dashboards/"):]: text for rel, text in graf_files.items()
                  if rel.startswith("dashboards/")}
        self.add(_configmap(model, "grafana-config", "grafana", settings, self.namespace))
        self.add(_configmap(model, "grafana-dashboards", "grafana", boards, self.namespace))
        ini = {rel: text for rel, text in settings.items() if rel == "grafana.ini"}
        provisioning = {rel[len("provisioning/"):]: text for rel, text in settings.items()
                        if rel.startswith("provisioning/")}
        container = _container("grafana", model["monitoring"]["images"]["grafana"], "grafana")
        secret = graf["admin_password_secret"]
        container["env"] = k._env({
            "GF_PATHS_CONFIG": "/etc/grafana/opsdeck/grafana.ini",
            "GF_PATHS_DATA": "/var/lib/grafana",
            "GF_PATHS_LOGS": "/var/log/grafana",
            "GF_SECURITY_ADMIN_PASSWORD__FILE": "%s/%s" % (k.SECRETS_DIR, secret),
        })
        container["ports"] = [_port("http", GRAFANA_PORT)]
        container.update(_http_probes("http", "/api/health", "/api/health", 120))
        container["volumeMounts"] = [
            {"name": "ini", "mountPath": "/etc/grafana/opsdeck", "readOnly": True},
            {"name": "provisioning", "mountPath": "/etc/grafana/provisioning", "readOnly": True},
            {"name": "data", "mountPath": "/var/lib/grafana"},
            {"name": "dashboards", "mountPath": "/var/lib/grafana/dashboards/opsdeck",
             "readOnly": True},
            {"name": "logs", "mountPath": "/var/log/grafana"}]
        provisioning_volume = {"name": "provisioning", "configMap": {
            "name": "grafana-config", "defaultMode": 0o444,
            "items": [{"key": _key("provisioning/" + rel), "path": rel}
                      for rel in sorted(provisioning)]}}
        template = self.pod("grafana", [container], [
            _cm_volume("ini", "grafana-config", ini), provisioning_volume,
            _cm_volume("dashboards", "grafana-dashboards", boards),
            {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "logs", "emptyDir": {"sizeLimit": "256Mi"}}],
            [secret], config={"grafana/" + p: c for p, c in graf_files.items()},
            uid_gid=(self.model["runtime_uid"], 0))
        self.deployment("grafana", "monitoring", template)
        self.service("grafana", "grafana", "monitoring", [("http", GRAFANA_PORT)])
        self.flows.append(("grafana", "prometheus", _monitoring.PROMETHEUS_PORT))

    # ----------------------------------------------------------------------- logging
    def elk(self, files):
        model = self.model
        log = model["logging"]
        uid_gid = (model["runtime_uid"], 0)  # Elastic's images: any uid in group 0
        es_files = _files(files, "elasticsearch/")
        node_config = {rel: es_files[rel] for rel in ("elasticsearch.yml",
                                                      "jvm.options.d/heap.options")}
        setup = {rel: text for rel, text in es_files.items() if rel not in node_config}
        self.add(_configmap(model, "elasticsearch-config", "elasticsearch", node_config,
                            self.namespace))
        self.add(_configmap(model, "elasticsearch-setup", "elk-setup", setup, self.namespace))
        elastic, kibana, logstash = (log["elastic_password_secret"], log["kibana_password_secret"],
                                     log["logstash_password_secret"])
        nodes = log["elasticsearch"]["nodes"]
        image = _observability.elastic_image(model, "elasticsearch")

        # Elasticsearch writes its keystore into config/: the image's config directory is
        # copied into an emptyDir by an init container, the rendered files mounted over it.
        init = _container("config", image, "setup")
        init["command"] = ["/bin/sh", "-c", "cp -R %s/. /mnt/config/" % ES_CONFIG]
        init["volumeMounts"] = [{"name": "config", "mountPath": "/mnt/config"}]
        es = _container("elasticsearch", image, "elasticsearch")
        # stack_logging.elasticsearch.resources, else cpu 500m/2 and twice the heap
        es["resources"] = _observability.es_resources(model)
        es["env"] = [{"name": "ELASTIC_PASSWORD_FILE", "value": "%s/%s" % (k.SECRETS_DIR, elastic)},
                     {"name": "NODE_NAME",
                      "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
        es["ports"] = [_port("http", _elk.ES_PORT), _port("transport", ES_TRANSPORT_PORT)]
        ready = ('curl -fsS -o /dev/null -u "elastic:`cat %s/%s`" '
                 '"http://127.0.0.1:%d/_cluster/health?local=true"'
                 % (k.SECRETS_DIR, elastic, _elk.ES_PORT))
        es.update(_tcp_exec_probes("http", ["/bin/sh", "-c", ready], 300))
        es["volumeMounts"] = [
            {"name": "config", "mountPath": ES_CONFIG},
            {"name": "node-config", "mountPath": ES_CONFIG + "/elasticsearch.yml",
             "subPath": "elasticsearch.yml", "readOnly": True},
            {"name": "node-config", "mountPath": ES_CONFIG + "/jvm.options.d/heap.options",
             "subPath": "jvm.options.d/heap.options", "readOnly": True},
            {"name": "data", "mountPath": "/usr/share/elasticsearch/data"},
            {"name": "logs", "mountPath": "/usr/share/elasticsearch/logs"}]
        volumes = [_cm_volume("node-config", "elasticsearch-config", node_config),
                   {"name": "config", "emptyDir": {"sizeLimit": "64Mi"}},
                   {"name": "logs", "emptyDir": {"sizeLimit": "1Gi"}}]
        names = [elastic]
        if nodes > 1:
            certs = sorted(_observability.TRANSPORT_SECRETS.items())
            names.extend(name for name, _filename in certs)
            volumes.append({"name": "certs", "projected": {"defaultMode": 0o440, "sources": [
                {"secret": {"name": k.k8s_name(name), "items": [{"key": name, "path": filename}]}}
                for name, filename in certs]}})
            es["volumeMounts"].append({"name": "certs", "mountPath": _elk.CERTS_DIR,
                                       "readOnly": True})
        template = self.pod("elasticsearch", [es], volumes, names,
                            config={"elasticsearch/" + p: c for p, c in node_config.items()},
                            uid_gid=uid_gid, init=[init])
        template["spec"]["terminationGracePeriodSeconds"] = 60
        self.statefulset(_elk.K8S_STATEFULSET, "elasticsearch", "logging", template, nodes,
                         _elk.K8S_HEADLESS, log["elasticsearch"]["storage"], parallel=True)
        self.service(_elk.K8S_HEADLESS, "elasticsearch", "logging",
                     [("http", _elk.ES_PORT), ("transport", ES_TRANSPORT_PORT)],
                     headless=True, not_ready=True)
        self.service(_elk.K8S_CLIENT, "elasticsearch", "logging", [("http", _elk.ES_PORT)])
        if nodes > 1:
            self.flows.append(("elasticsearch", "elasticsearch", ES_TRANSPORT_PORT))

        # Logstash
        ls_files = _files(files, "logstash/")
        self.add(_configmap(model, "logstash-config", "logstash", ls_files, self.namespace))
        ls = _container("logstash", _observability.elastic_image(model, "logstash"), "logstash")
        ls["command"] = _password_env("LOGSTASH_WRITER_PASSWORD", logstash,
                                      ["/usr/local/bin/docker-entrypoint"])
        ls["env"] = k._env({"LS_JAVA_OPTS": "-Xms256m -Xmx256m"})
        ls["ports"] = [_port("beats", _elk.LOGSTASH_BEATS_PORT), _port("api", LOGSTASH_API_PORT)]
        ls.update(_http_probes("api", "/", "/", 180))
        ls["volumeMounts"] = [
            {"name": "config", "mountPath": "/usr/share/logstash/config/logstash.yml",
             "subPath": "logstash.yml", "readOnly": True},
            {"name": "config", "mountPath": "/usr/share/logstash/config/pipelines.yml",
             "subPath": "pipelines.yml", "readOnly": True},
            {"name": "pipeline", "mountPath": "/usr/share/logstash/pipeline", "readOnly": True},
            {"name": "data", "mountPath": "/usr/share/logstash/data"}]
        pipeline = {rel[len("pipeline/"):]: text for rel, text in ls_files.items()
                    if rel.startswith("pipeline/")}
        pipeline_volume = {"name": "pipeline", "configMap": {
            "name": "logstash-config", "defaultMode": 0o444,
            "items": [{"key": _key("pipeline/" + rel), "path": rel} for rel in sorted(pipeline)]}}
        template = self.pod("logstash", [ls], [
            _cm_volume("config", "logstash-config",
                       {rel: text for rel, text in ls_files.items() if "/" not in rel}),
            pipeline_volume, {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}],
            [logstash], config={"logstash/" + p: c for p, c in ls_files.items()}, uid_gid=uid_gid)
        self.deployment("logstash", "logging", template)
        self.service("logstash", "logstash", "logging", [("beats", _elk.LOGSTASH_BEATS_PORT)])
        self.flows.append(("logstash", "elasticsearch", _elk.ES_PORT))

        # Kibana
        kb_files = _files(files, "kibana/")
        self.add(_configmap(model, "kibana-config", "kibana", kb_files, self.namespace))
        kb = _container("kibana", _observability.elastic_image(model, "kibana"), "kibana")
        kb["command"] = _password_env("KIBANA_SYSTEM_PASSWORD", kibana,
                                      ["/usr/local/bin/kibana-docker"])
        kb["ports"] = [_port("http", KIBANA_PORT)]
        # 401 is an answer of a running Kibana (the status API wants a login); 503 is not ready
        status = ("code=`curl -s -o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/api/status`;"
                  ' [ "$code" = 200 ] || [ "$code" = 401 ]' % KIBANA_PORT)
        kb.update(_tcp_exec_probes("http", ["/bin/sh", "-c", status], 300))
        kb["volumeMounts"] = [
            {"name": "config", "mountPath": "/usr/share/kibana/config/kibana.yml",
             "subPath": "kibana.yml", "readOnly": True},
            {"name": "data", "mountPath": "/usr/share/kibana/data"}]
        template = self.pod("kibana", [kb], [
            _cm_volume("config", "kibana-config", kb_files),
            {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}],
            [kibana], config={"kibana/" + p: c for p, c in kb_files.items()}, uid_gid=uid_gid)
        self.deployment("kibana", "logging", template)
        self.service("kibana", "kibana", "logging", [("http", KIBANA_PORT)])
        self.flows.append(("kibana", "elasticsearch", _elk.ES_PORT))

        # setup.sh as a Job named by its inputs: a new name runs it again, the same name is
        # left alone (a Job's pod template cannot change anyway).
        job_secrets = {"ELASTIC_PASSWORD_FILE": elastic, "KIBANA_PASSWORD_FILE": kibana,
                       "LOGSTASH_PASSWORD_FILE": logstash}
        inputs = {"files": {p: _sha(c) for p, c in sorted(setup.items())},
                  "secrets": {name: k.digest(k._secret_value(self.secrets, name),
                                             self.stack + ":" + name)
                              for name in sorted(job_secrets.values())},
                  "image": image}
        name = "elk-setup-%s" % k._checksum(inputs)[:10]
        env = {"ES_URL": "http://%s:%d" % (_elk.K8S_CLIENT, _elk.ES_PORT), "ES_WAIT_SECONDS": "600"}
        env.update({var: "%s/%s" % (k.SECRETS_DIR, secret) for var, secret in job_secrets.items()})
        job = _container("setup", image, "setup")
        job["command"] = ["/bin/sh", "%s/setup.sh" % _elk.SETUP_DIR, _elk.SETUP_DIR]
        job["env"] = k._env(env)
        job["volumeMounts"] = [{"name": "setup", "mountPath": _elk.SETUP_DIR, "readOnly": True}]
        template = self.pod("elk-setup", [job], [_cm_volume("setup", "elasticsearch-setup", setup)],
                            list(job_secrets.values()),
                            config={"elasticsearch/" + p: c for p, c in setup.items()},
                            uid_gid=uid_gid, restart="OnFailure")
        self.add({"apiVersion": "batch/v1", "kind": "Job",
                  "metadata": k._meta(name, self.namespace, self.labels("elk-setup", "logging")),
                  "spec": {"backoffLimit": 10, "activeDeadlineSeconds": 1800,
                           "template": template}})
        self.flows.append(("elk-setup", "elasticsearch", _elk.ES_PORT))
        self.filebeat(files)

    def filebeat(self, files):
        """Filebeat's DaemonSet in the agents namespace: the stack's container logs to Logstash."""
        model = self.model
        fb_files = _files(files, "filebeat/")
        self.add(_configmap(model, "filebeat-config", "filebeat", fb_files, self.agents))
        container = _container("filebeat", _observability.elastic_image(model, "filebeat"),
                               "filebeat")
        container["command"] = ["filebeat", "-e", "--strict.perms=false",
                                "-c", FILEBEAT_DIR + "/opsdeck/filebeat.yml",
                                "--path.data", FILEBEAT_DIR + "/data"]
        container["ports"] = [_port("http", _elk.FILEBEAT_HTTP_PORT)]
        container.update(_http_probes("http", "/", "/", 60))
        # uid 0: the kubelet's and the runtime's log files are root's. DAC_READ_SEARCH lets it
        # read and traverse them whatever their modes; it grants no write, and the hostPaths
        # are read-only but the registry.
        container["securityContext"].update({
            "runAsNonRoot": False, "runAsUser": 0,
            "capabilities": {"drop": ["ALL"], "add": ["DAC_READ_SEARCH"]}})
        container["volumeMounts"] = [
            {"name": "config", "mountPath": FILEBEAT_DIR + "/opsdeck", "readOnly": True},
            {"name": "containers", "mountPath": "/var/log/containers", "readOnly": True},
            {"name": "pods", "mountPath": "/var/log/pods", "readOnly": True},
            {"name": "docker", "mountPath": "/var/lib/docker/containers", "readOnly": True},
            {"name": "registry", "mountPath": FILEBEAT_DIR + "/data"}]
        template = self.pod("filebeat", [container], [
            _cm_volume("config", "filebeat-config", fb_files),
            _host_path("containers", "/var/log/containers", "Directory"),
            _host_path("pods", "/var/log/pods", "Directory"),
            # docker-runtime nodes: the files /var/log/pods links to; elsewhere empty
            _host_path("docker", "/var/lib/docker/containers"),
            # per stack, so two stacks' Filebeats on one node keep their own registries
            _host_path("registry", "%s/%s" % (FILEBEAT_REGISTRY, self.namespace),
                       "DirectoryOrCreate")],
            config={"filebeat/" + p: c for p, c in fb_files.items()}, uid_gid=(0, 0))
        template["spec"]["securityContext"] = {
            "runAsNonRoot": False, "runAsUser": 0, "runAsGroup": 0,
            "seccompProfile": {"type": "RuntimeDefault"}}
        self.daemonset("filebeat", "logging", template)
        self.cross.append(("filebeat", self.agents, "logstash", self.namespace,
                           _elk.LOGSTASH_BEATS_PORT))

    # ----------------------------------------------------------------------- network
    def policies(self, api_server_cidrs=None):
        """Per component: ingress from and egress to exactly its flows; the apps and data
        stores get an extra policy admitting their scrapers/exporters (policies add up)."""
        components = sorted({flow[0] for flow in self.flows} | {flow[1] for flow in self.flows})
        own = {item["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
               for item in self.out if item["kind"] in ("Deployment", "StatefulSet", "Job")}
        ingress = {name: [] for name in components}
        egress = {name: [] for name in components}
        for src, dst, port in self.flows:
            rule_port = [{"protocol": "TCP", "port": port}]
            egress[src].append({"to": [k._peer(self.model, dst, self.tenant_of(dst))],
                                "ports": rule_port})
            ingress[dst].append({"from": [k._peer(self.model, src, self.tenant_of(src))],
                                 "ports": rule_port})
        for src, src_ns, dst, dst_ns, port in self.cross:
            rule_port = [{"protocol": "TCP", "port": port}]
            if src_ns == self.namespace:
                egress.setdefault(src, []).append({"to": [self.ns_peer(dst_ns, dst)],
                                                   "ports": rule_port})
            if dst_ns == self.namespace:
                ingress.setdefault(dst, []).append({"from": [self.ns_peer(src_ns, src)],
                                                    "ports": rule_port})
        if "prometheus" in own:
            cidrs = list(api_server_cidrs or [])
            peers = [{"ipBlock": {"cidr": cidr}} for cidr in cidrs] or [
                {"ipBlock": {"cidr": "0.0.0.0/0"}}]
            egress["prometheus"].append({"to": peers, "ports": [{"protocol": "TCP", "port": p}
                                                                for p in API_SERVER_PORTS]})
        if "alertmanager" in own:
            # 443 and 587 always (a receiver added later needs no policy change), plus the
            # receivers' own SMTP and webhook ports
            ports = {443, 587} | set(_monitoring.alertmanager_ports(self.model, self.secrets))
            egress.setdefault("alertmanager", []).append(
                {"to": [INTERNET],
                 "ports": [{"protocol": "TCP", "port": p} for p in sorted(ports)]})
            ingress.setdefault("alertmanager", [])
        out = []
        for name in sorted(set(ingress) | set(egress)):
            selector = {"matchLabels": k.selector(self.stack, name)}
            if name in own:
                out.append(k._policy(self.stack, "allow-%s" % name, self.namespace, selector,
                                     ["Ingress", "Egress"], ingress=ingress.get(name, []),
                                     egress=egress.get(name, [])))
            elif ingress.get(name):
                # an app or data store of the stack: admit its scraper or exporter
                out.append(k._policy(self.stack, "allow-%s-monitoring" % name, self.namespace,
                                     selector, ["Ingress"], ingress=ingress[name]))
        return out

    def ns_peer(self, namespace, component):
        """A component's pods in one of the stack's two namespaces (by its name label)."""
        peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
        peer.update(k._peer(self.model, component, self.tenant))
        return peer

    def agents_objects(self):
        """The agents namespace and its NetworkPolicies: default deny, DNS, the cross flows."""
        ns_labels = self.labels(self.agents, "namespace")
        ns_labels["kubernetes.io/metadata.name"] = self.agents
        for mode in ("enforce", "audit", "warn"):
            ns_labels["pod-security.kubernetes.io/%s" % mode] = AGENTS_PSS
            ns_labels["pod-security.kubernetes.io/%s-version" % mode] = "latest"
        purpose = ("host agents of %s (node exporter, Filebeat): hostPID and hostPath need the "
                   "privileged Pod Security level; the stack's namespace %s stays restricted"
                   % (self.stack, self.namespace))
        out = [{"apiVersion": "v1", "kind": "Namespace", "metadata": k._meta(
            self.agents, None, ns_labels, {"opsdeck.io/purpose": purpose})},
            k._policy(self.stack, "agents-default-deny", self.agents, {}, ["Ingress", "Egress"]),
            k._policy(self.stack, "agents-allow-dns", self.agents, {}, ["Egress"],
                      egress=[k.dns_egress()])]
        ingress, egress = {}, {}
        for src, src_ns, dst, dst_ns, port in self.cross:
            rule_port = [{"protocol": "TCP", "port": port}]
            if src_ns == self.agents:
                egress.setdefault(src, []).append({"to": [self.ns_peer(dst_ns, dst)],
                                                   "ports": rule_port})
            if dst_ns == self.agents:
                ingress.setdefault(dst, []).append({"from": [self.ns_peer(src_ns, src)],
                                                    "ports": rule_port})
        for name in sorted(set(ingress) | set(egress)):
            out.append(k._policy(self.stack, "allow-%s" % name, self.agents,
                                 {"matchLabels": k.selector(self.stack, name)},
                                 ["Ingress", "Egress"], ingress=ingress.get(name, []),
                                 egress=egress.get(name, [])))
        return out

    def tenant_of(self, component):
        for svc in self.model["services"]:
            if svc["name"] == component:
                return k._tenant(self.model, svc)
        return self.tenant


def secret_names(model, monitoring_files, elk_files):
    """The stack secrets the monitoring and ELK pods read (they must have values)."""
    names = set()
    mon = model.get("monitoring") or {}
    if mon.get("enabled") and monitoring_files is not None:
        exporters = dict(_monitoring.exporters(model))
        if "redis-exporter" in exporters and model["redis"].get("password_secret"):
            names.add(model["redis"]["password_secret"])
        if "postgres-exporter" in exporters:
            names.add(model["postgres"]["password_secret"])
        if mon["grafana"]["enabled"]:
            names.add(mon["grafana"]["admin_password_secret"])
    log = model.get("logging") or {}
    if log.get("enabled") and elk_files is not None:
        names.update([log["elastic_password_secret"], log["kibana_password_secret"],
                      log["logstash_password_secret"]])
        if log["elasticsearch"]["nodes"] > 1:
            names.update(_observability.TRANSPORT_SECRETS)
    return names


def render(model, secrets, namespace, monitoring_files=None, elk_files=None, api_server_cidrs=None):
    """The monitoring and ELK objects (unsorted); nothing for a section whose files are None."""
    obs = _Obs(model, secrets, namespace)
    if (model.get("monitoring") or {}).get("enabled") and monitoring_files is not None:
        obs.monitoring(list(monitoring_files))
    if (model.get("logging") or {}).get("enabled") and elk_files is not None:
        obs.elk(list(elk_files))
    if not obs.out:
        return []
    agents = obs.agents_objects() if obs.cross else []
    return obs.out + obs.policies(api_server_cidrs) + agents
