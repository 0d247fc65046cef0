"""Monitoring and ELK on Kubernetes: the prod inventory rendered with the roles' files."""

import base64
import copy
import os
import sys

import pytest
import yaml

from ansible_collections.opsdeck.stack.plugins.filter.kubernetes import kubernetes_manifests
from ansible_collections.opsdeck.stack.plugins.module_utils.components import elk as _elk
from ansible_collections.opsdeck.stack.plugins.module_utils.model import fidelity as _fidelity
from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import manifests as _kubernetes
from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import observability as _kubernetes_obs
from ansible_collections.opsdeck.stack.plugins.module_utils.components import monitoring as _monitoring

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
from test_kubernetes_policy import inventory_model  # noqa: E402  (the vault stand-in)
from k8s_support import by, validation_errors  # noqa: E402

NAME = "app.kubernetes.io/name"
OBS_WORKLOADS = {("StatefulSet", "prometheus"), ("Deployment", "alertmanager"),
                 ("Deployment", "redis-exporter"), ("Deployment", "postgres-exporter"),
                 ("Deployment", "grafana"), ("StatefulSet", "es"), ("Deployment", "logstash"),
                 ("Deployment", "kibana")}
AGENTS = "shop-agents"
AGENT_WORKLOADS = {("DaemonSet", "node-exporter"), ("DaemonSet", "filebeat")}


def render(model, secrets, monitoring_files=None, elk_files=None, **kwargs):
    mon = _monitoring.render(model, secrets) if monitoring_files is None else monitoring_files
    elk = _elk.render(model) if elk_files is None else elk_files
    return _kubernetes.render(model, secrets, htpasswd="ops:$2y$05$obs", monitoring_files=mon,
                              elk_files=elk, **kwargs)


@pytest.fixture(scope="module")
def prod():
    model, secrets = inventory_model("prod")
    return model, secrets, render(model, secrets)


def annotations(manifests, kind, name):
    return by(manifests, kind, name)["spec"]["template"]["metadata"]["annotations"]


def pod_checksums(manifests):
    out = {}
    for item in manifests:
        if item["kind"] in _kubernetes.WORKLOAD_KINDS:
            meta = item["spec"]["template"]["metadata"]["annotations"]
            out[(item["kind"], item["metadata"]["name"])] = (
                meta.get(_kubernetes_obs.CONFIG_CHECKSUM_ANNOTATION), meta[_kubernetes.CHECKSUM_ANNOTATION])
    return out


def test_the_components_are_rendered_in_the_namespace(prod):
    manifests = prod[2]
    workloads = {(m["kind"], m["metadata"]["name"]) for m in manifests
                 if m["kind"] in _kubernetes.WORKLOAD_KINDS}
    assert OBS_WORKLOADS | AGENT_WORKLOADS <= workloads
    assert "nginx-exporter" not in {name for _kind, name in workloads}
    namespaces = {m["metadata"]["namespace"] for m in manifests if m["kind"] != "Namespace"}
    assert namespaces == {"shop", AGENTS}
    # the agents namespace holds the two DaemonSets and what they need, nothing else
    assert {(m["kind"], m["metadata"]["name"]) for m in manifests
            if m["metadata"].get("namespace") == AGENTS} == AGENT_WORKLOADS | {
        ("ConfigMap", "filebeat-config"), ("Role", "prometheus-discovery"),
        ("RoleBinding", "prometheus-discovery"), ("NetworkPolicy", "agents-default-deny"),
        ("NetworkPolicy", "agents-allow-dns"), ("NetworkPolicy", "allow-node-exporter"),
        ("NetworkPolicy", "allow-filebeat")}
    assert [m["metadata"]["name"] for m in by(manifests, "Job")][0].startswith("elk-setup-")
    assert {m["metadata"]["name"] for m in by(manifests, "ConfigMap")} == {
        "prometheus-config", "grafana-config", "grafana-dashboards", "elasticsearch-config",
        "elasticsearch-setup", "logstash-config", "kibana-config", "filebeat-config"}
    kinds = [_kubernetes.KIND_ORDER.index(m["kind"]) for m in manifests]
    assert kinds == sorted(kinds)


def test_nothing_without_the_files_or_with_the_sections_off(prod):
    model, secrets, manifests = prod
    plain = _kubernetes.render(model, secrets, htpasswd="x:y")
    assert not by(plain, "ConfigMap") and not by(plain, "Job")
    off = copy.deepcopy(model)
    off["monitoring"]["enabled"] = off["logging"]["enabled"] = False
    assert render(off, secrets, [], []) == plain


def test_every_manifest_validates_strictly(prod):
    manifests = prod[2]
    staging = render(*inventory_model("staging"))
    assert validation_errors(manifests + staging) == []


def test_kubernetes_sd_is_namespace_restricted_and_the_role_read_only(prod):
    manifests = prod[2]
    config = yaml.safe_load(by(manifests, "ConfigMap", "prometheus-config")["data"]["prometheus.yml"])
    sds = [sd for job in config["scrape_configs"] + config["alerting"]["alertmanagers"]
           if job.get("job_name") != "node" for sd in job.get("kubernetes_sd_configs", [])]
    assert sds and all(sd == {"role": "pod", "namespaces": {"own_namespace": True}} for sd in sds)
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {"api", "alertmanager", "redis", "postgres", "node"} <= jobs and "nginx" not in jobs
    role = by(manifests, "Role", "prometheus")
    assert role["metadata"]["namespace"] == "shop"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["endpoints", "pods", "services"],
                              "verbs": ["get", "list", "watch"]}]
    assert not [m for m in manifests if m["kind"].startswith("Cluster")]
    binding = by(manifests, "RoleBinding", "prometheus")
    assert binding["roleRef"]["kind"] == "Role"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "prometheus", "namespace": "shop"}]
    spec = by(manifests, "StatefulSet", "prometheus")["spec"]
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "prometheus" and pod["automountServiceAccountToken"] is False
    assert any(v["name"] == "api-token" for v in pod["volumes"])
    # only Prometheus gets an API token
    for item in manifests:
        if item["kind"] in _kubernetes.WORKLOAD_KINDS and item["metadata"]["name"] != "prometheus":
            assert "serviceAccountName" not in item["spec"]["template"]["spec"]
            assert item["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    args = pod["containers"][0]["command"]
    assert "--storage.tsdb.retention.time=30d" in args and "--storage.tsdb.retention.size=50GB" in args
    assert spec["replicas"] == 1
    assert spec["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "59Gi"


def test_a_changed_rule_file_rolls_prometheus_only(prod):
    model, secrets, manifests = prod
    files = _monitoring.render(model, secrets)
    changed = copy.deepcopy(files)
    for item in changed:
        if item["path"] == "prometheus/rules/opsdeck.rules.yml":
            item["content"] += "# changed\n"
    after = render(model, secrets, monitoring_files=changed)
    before_sums, after_sums = pod_checksums(manifests), pod_checksums(after)
    assert before_sums.keys() == after_sums.keys()
    assert {key for key in before_sums if before_sums[key] != after_sums[key]} == {
        ("StatefulSet", "prometheus")}


def test_a_changed_password_rolls_its_users_and_renames_the_setup_job(prod):
    model, secrets, manifests = prod
    changed = dict(secrets, logstash_writer_password="another-logstash-password-value-91")
    after = render(model, changed)
    before_sums, after_sums = pod_checksums(manifests), pod_checksums(after)
    rolled = {key for key in before_sums if before_sums.get(key) != after_sums.get(key)}
    job_before, job_after = by(manifests, "Job")[0], by(after, "Job")[0]
    assert job_before["metadata"]["name"] != job_after["metadata"]["name"]
    assert rolled == {("Deployment", "logstash"), ("Job", job_before["metadata"]["name"])}
    # and an unchanged input keeps the Job's name (not run again)
    assert by(render(model, secrets), "Job")[0]["metadata"]["name"] == job_before["metadata"]["name"]


def test_no_secret_value_outside_secret_objects(prod):
    secrets, manifests = prod[1:]
    assert _kubernetes.secret_values_in(manifests, secrets) == []
    alertmanager = by(manifests, "Secret", "alertmanager-config")
    assert set(alertmanager["data"]) == {"alertmanager.yml"}
    files = _kubernetes.manifest_files(manifests, dump=yaml.safe_dump)
    secret_paths = {f["path"] for f in files if f["secret"]}
    assert "04-secret-alertmanager-config.yaml" in secret_paths
    assert "04-configmap-prometheus-config.yaml" in {f["path"] for f in files if not f["secret"]}
    for item in files:
        if not item["secret"]:
            for value in secrets.values():
                assert value not in item["content"], item["path"]


def test_elasticsearch_replicas_heap_storage_and_discovery(prod):
    model, manifests = prod[0], prod[2]
    es = model["logging"]["elasticsearch"]
    assert es["nodes"] == 3
    sts = by(manifests, "StatefulSet", "es")
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["serviceName"] == "es-cluster"
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == es["storage"]
    data = by(manifests, "ConfigMap", "elasticsearch-config")["data"]
    assert data["jvm.options.d_heap.options"] == "-Xms%s\n-Xmx%s\n" % (es["heap"], es["heap"])
    config = yaml.safe_load(data["elasticsearch.yml"])
    assert config["node.store.allow_mmap"] is False
    assert config["node.name"] == "${NODE_NAME}"
    assert config["discovery.seed_hosts"] == ["es-cluster"]
    assert config["cluster.initial_master_nodes"] == ["es-0", "es-1", "es-2"]
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["memory"] == "4Gi"  # twice the 2g heap
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[_elk.CERTS_DIR]["readOnly"] is True
    certs = [v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "certs"][0]
    assert sorted(s["secret"]["items"][0]["path"] for s in certs["projected"]["sources"]) == [
        "ca.crt", "transport.crt", "transport.key"]
    headless = by(manifests, "Service", "es-cluster")["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    assert by(manifests, "Service", "elasticsearch")["spec"]["type"] == "ClusterIP"
    pipeline = by(manifests, "ConfigMap", "logstash-config")["data"]["pipeline_opsdeck.conf"]
    assert 'hosts => ["http://elasticsearch:9200"]' in pipeline
    kibana = yaml.safe_load(by(manifests, "ConfigMap", "kibana-config")["data"]["kibana.yml"])
    assert kibana["elasticsearch.hosts"] == ["http://elasticsearch:9200"]


def test_single_node_elasticsearch_in_staging():
    model, secrets = inventory_model("staging")
    manifests = render(model, secrets)
    assert model["logging"]["enabled"], "the staging inventory enables the ELK"
    assert model["logging"]["elasticsearch"]["nodes"] == 1
    assert by(manifests, "StatefulSet", "es")["spec"]["replicas"] == 1


def test_grafana_reads_the_admin_password_from_a_secret_file(prod):
    manifests = prod[2]
    container = by(manifests, "Deployment", "grafana")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    model, secrets = inventory_model("prod")
    model["monitoring"]["grafana"]["enabled"] = False
    names = {(m["kind"], m["metadata"]["name"]) for m in render(model, secrets)}
    assert ("Deployment", "grafana") not in names and ("ConfigMap", "grafana-dashboards") not in names


def test_pods_are_restricted_with_resources_and_probes(prod):
    manifests = prod[2]
    for item in manifests:
        if item["kind"] not in _kubernetes.WORKLOAD_KINDS:
            continue
        if item["metadata"]["namespace"] == AGENTS:
            continue  # the agents' DaemonSets: test_host_agents_*
        pod = item["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
        assert not {"hostPID", "hostNetwork", "hostIPC"} & set(pod)
        assert not [v for v in pod["volumes"] if "hostPath" in v]
        for container in pod["containers"] + pod.get("initContainers", []):
            where = "%s/%s" % (item["metadata"]["name"], container["name"])
            sec = container["securityContext"]
            assert sec["readOnlyRootFilesystem"] is True, where
            assert sec["capabilities"] == {"drop": ["ALL"]} and sec["allowPrivilegeEscalation"] is False
            assert sec["seccompProfile"] == {"type": "RuntimeDefault"}
            if (item["kind"], item["metadata"]["name"]) in OBS_WORKLOADS or item["kind"] == "Job":
                # the apps' and data stores' sizes come from the model (or a documented skip)
                assert container["resources"]["requests"] and container["resources"]["limits"], where
            if item["kind"] != "Job" and container in pod["containers"]:
                assert "readinessProbe" in container and "livenessProbe" in container, where


def _policies(manifests, namespace="shop"):
    return {m["metadata"]["name"]: m["spec"] for m in manifests
            if m["kind"] == "NetworkPolicy" and m["metadata"]["namespace"] == namespace}


def _peers(rules, key, namespace="shop"):
    """(peer, port): a pod of ``namespace`` by its name, one of the other namespace as
    "<namespace>/<name>", an address block by its CIDR."""
    out = set()
    for rule in rules:
        for peer in rule[key]:
            if "namespaceSelector" in peer:
                other = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                assert other != namespace and {other, namespace} == {"shop", AGENTS}, rule
                name = "%s/%s" % (other, peer["podSelector"]["matchLabels"][NAME])
            elif "podSelector" in peer:
                name = peer["podSelector"]["matchLabels"][NAME]
            else:
                name = peer["ipBlock"]["cidr"]
            for port in rule["ports"]:
                out.add((name, port["port"]))
    return out


def test_network_policies_allow_exactly_the_flows(prod):
    manifests = prod[2]
    pol = _policies(manifests)
    assert _peers(pol["allow-prometheus"]["egress"], "to") == {
        ("api", 8000), ("alertmanager", 9093), ("redis-exporter", 9121),
        ("postgres-exporter", 9187), ("0.0.0.0/0", 443), ("0.0.0.0/0", 6443),
        ("shop-agents/node-exporter", 9100)}
    assert _peers(pol["allow-prometheus"]["ingress"], "from") == {("grafana", 9090)}
    assert _peers(pol["allow-grafana"]["egress"], "to") == {("prometheus", 9090)}
    assert _peers(pol["allow-grafana"]["ingress"], "from") == set()
    assert _peers(pol["allow-alertmanager"]["ingress"], "from") == {("prometheus", 9093)}
    assert _peers(pol["allow-alertmanager"]["egress"], "to") == {("0.0.0.0/0", 443), ("0.0.0.0/0", 587)}
    assert pol["allow-alertmanager"]["egress"][0]["to"][0]["ipBlock"]["except"] == ["169.254.0.0/16"]
    assert _peers(pol["allow-redis-exporter"]["egress"], "to") == {("redis", 6379)}
    assert _peers(pol["allow-redis-monitoring"]["ingress"], "from") == {("redis-exporter", 6379)}
    assert _peers(pol["allow-postgres-monitoring"]["ingress"], "from") == {("postgres-exporter", 5432)}
    assert _peers(pol["allow-api-monitoring"]["ingress"], "from") == {("prometheus", 8000)}
    assert _peers(pol["allow-elasticsearch"]["ingress"], "from") == {
        ("logstash", 9200), ("kibana", 9200), ("elk-setup", 9200), ("elasticsearch", 9300)}
    assert _peers(pol["allow-elasticsearch"]["egress"], "to") == {("elasticsearch", 9300)}
    assert _peers(pol["allow-logstash"]["egress"], "to") == {("elasticsearch", 9200)}
    assert _peers(pol["allow-logstash"]["ingress"], "from") == {("shop-agents/filebeat", 5044)}
    assert _peers(pol["allow-kibana"]["egress"], "to") == {("elasticsearch", 9200)}
    assert _peers(pol["allow-elk-setup"]["egress"], "to") == {("elasticsearch", 9200)}
    for name, spec in pol.items():
        if name.endswith("-monitoring"):
            assert spec["policyTypes"] == ["Ingress"]
    # the API server's address narrowed by the caller
    model, secrets = inventory_model("prod")
    narrowed = _policies(render(model, secrets, api_server_cidrs=["10.0.0.1/32"]))
    assert ("10.0.0.1/32", 443) in _peers(narrowed["allow-prometheus"]["egress"], "to")


def test_fidelity_on_kubernetes(prod):
    model = prod[0]
    rep = _fidelity.report(model, "kubernetes")
    native = {e["field"] for e in rep["native"]}
    dropped = {e["field"]: e["how"] for e in rep["dropped"]}
    assert {"stack_monitoring.enabled", "stack_logging.enabled"} <= native
    how = {e["field"]: e["how"] for e in rep["native"]}
    for field in ("stack_monitoring node exporter", "stack_logging Filebeat"):
        assert how[field].startswith("DaemonSet in shop-agents (privileged Pod Security)"), field
        assert field not in dropped
    assert "network-device metrics are the pod's own" in how["stack_monitoring node exporter"]
    assert "logstash.shop.svc:5044" in how["stack_logging Filebeat"]
    # stack_strict no longer refuses prod for them (the nginx exporter is still dropped)
    strict = _fidelity.strict_errors(dict(model, strict=True))
    assert not [line for line in strict if "node exporter" in line or "Filebeat" in line]
    assert "ingress-nginx" in dropped["stack_monitoring nginx exporter"]
    assert "stack_monitoring.images.prometheus" not in dropped  # prod sets an upstream build
    debian = copy.deepcopy(model)
    debian["monitoring"]["images"]["prometheus"] = "opsdeck/prometheus:2.42"
    assert "kubernetes_sd" in {e["field"]: e["how"] for e in _fidelity.report(debian)["dropped"]}[
        "stack_monitoring.images.prometheus"]
    for target in ("compose", "swarm"):
        fields = {e["field"] for e in _fidelity.report(model, target)["dropped"]}
        assert not [f for f in fields if "exporter" in f or "Filebeat" in f]


def test_the_filter_passes_the_files(prod):
    model, secrets, manifests = prod
    out = kubernetes_manifests(model, secrets, "ops:$2y$05$obs", _monitoring.render(model, secrets),
                               _elk.render(model), [])
    assert out == manifests
    assert kubernetes_manifests(model, secrets, "ops:$2y$05$obs") == \
        _kubernetes.render(model, secrets, htpasswd="ops:$2y$05$obs")


def test_promtool_accepts_the_configmap_as_mounted(prod, tmp_path):
    """The ConfigMap's files laid out as the volume's items put them, checked by promtool
    (through the copy without kubernetes_sd: Debian's promtool is built without it)."""
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "roles")))
    from obs_support import AMTOOL, PROMTOOL, require, tool
    require(PROMTOOL, "prometheus")
    manifests = prod[2]
    data = by(manifests, "ConfigMap", "prometheus-config")["data"]
    pod = by(manifests, "StatefulSet", "prometheus")["spec"]["template"]["spec"]
    volume = [v for v in pod["volumes"] if v["name"] == "config"][0]["configMap"]
    assert {item["key"] for item in volume["items"]} == set(data)
    for item in volume["items"]:
        path = tmp_path / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        text = data[item["key"]]
        path.write_text(_monitoring.validation_copy(text) if item["path"] == "prometheus.yml" else text)
    result = tool([PROMTOOL, "check", "config", "prometheus.yml"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    require(AMTOOL, "prometheus-alertmanager")
    model, secrets = prod[:2]
    # the vault stand-in is no URL: a webhook that amtool accepts
    secrets = dict(secrets, slack_webhook_url="https://hooks.slack.example.com/services/T0/B0/x")
    secret = by(render(model, secrets), "Secret", "alertmanager-config")
    text = base64.b64decode(secret["data"]["alertmanager.yml"])
    (tmp_path / "alertmanager.yml").write_bytes(text)
    result = tool([AMTOOL, "check-config", "alertmanager.yml"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- host agents
def _agents_pod(manifests, name):
    return by(manifests, "DaemonSet", name)["spec"]["template"]["spec"]


def test_the_agents_namespace_is_privileged_and_only_there_when_enabled(prod):
    model, secrets, manifests = prod
    namespace = by(manifests, "Namespace", AGENTS)["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert namespace["pod-security.kubernetes.io/%s" % mode] == "privileged"
    assert namespace["kubernetes.io/metadata.name"] == AGENTS
    # the stack's namespace stays restricted
    assert by(manifests, "Namespace", "shop")["metadata"]["labels"][
        "pod-security.kubernetes.io/enforce"] == "restricted"
    daemonsets = [m["metadata"]["name"] for m in by(manifests, "DaemonSet")]
    assert daemonsets == ["filebeat", "node-exporter"]

    def agents(mon, log, monitoring_files=None, elk_files=None):
        changed = copy.deepcopy(model)
        changed["monitoring"]["enabled"], changed["logging"]["enabled"] = mon, log
        out = render(changed, secrets, monitoring_files, elk_files)
        return {(m["kind"], m["metadata"]["name"]) for m in out
                if m["metadata"].get("namespace") == AGENTS or m["metadata"]["name"] == AGENTS}

    monitoring_only = agents(True, False)
    assert {("DaemonSet", "node-exporter"), ("Namespace", AGENTS)} <= monitoring_only
    assert not {("DaemonSet", "filebeat"), ("ConfigMap", "filebeat-config"),
                ("NetworkPolicy", "allow-filebeat")} & monitoring_only
    logging_only = agents(False, True)
    assert {("DaemonSet", "filebeat"), ("Namespace", AGENTS)} <= logging_only
    assert not {("DaemonSet", "node-exporter"), ("Role", "prometheus-discovery"),
                ("NetworkPolicy", "allow-node-exporter")} & logging_only
    assert agents(False, False, [], []) == set()
    # the kubernetes role passes no files for a disabled section: no agents either
    assert not [m for m in _kubernetes.render(model, secrets, htpasswd="x:y")
                if m["metadata"]["name"] == AGENTS or m["metadata"].get("namespace") == AGENTS]


def test_host_agents_mount_the_host_read_only_without_host_network(prod):
    manifests = prod[2]
    writable = {}
    for name in ("node-exporter", "filebeat"):
        pod = _agents_pod(manifests, name)
        assert "hostNetwork" not in pod and "hostIPC" not in pod
        assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
        assert pod["tolerations"] == [{"operator": "Exists"}]
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        host = {v["name"]: v["hostPath"] for v in pod["volumes"] if "hostPath" in v}
        container = pod["containers"][0]
        for mount in container["volumeMounts"]:
            if mount["name"] in host and not mount.get("readOnly"):
                writable[name] = host[mount["name"]]
        sec = container["securityContext"]
        assert sec["readOnlyRootFilesystem"] is True and sec["allowPrivilegeEscalation"] is False
        assert sec["seccompProfile"] == {"type": "RuntimeDefault"}
        assert sec["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert "readinessProbe" in container and "livenessProbe" in container
    # the only writable host path: Filebeat's registry, per stack namespace
    assert writable == {"filebeat": {"path": "/var/lib/opsdeck-filebeat/shop",
                                     "type": "DirectoryOrCreate"}}

    node = _agents_pod(manifests, "node-exporter")
    assert node["hostPID"] is True
    assert node["securityContext"]["runAsNonRoot"] is True
    assert node["securityContext"]["runAsUser"] == 65534
    paths = {v["hostPath"]["path"] for v in node["volumes"] if "hostPath" in v}
    assert paths == {"/proc", "/sys", "/"}
    exporter = node["containers"][0]
    assert exporter["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # the Compose target's image and arguments (Compose writes "$$" for a literal "$")
    compose = _compose_node_exporter()
    assert exporter["image"] == compose["image"]
    assert [arg.replace("$", "$$") for arg in exporter["args"]] == compose["command"]
    assert exporter["ports"] == [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]
    mounts = {m["mountPath"]: m["readOnly"] for m in exporter["volumeMounts"] if m["name"] != "tmp"}
    assert mounts == {"/host/proc": True, "/host/sys": True, "/host/root": True}

    beat = _agents_pod(manifests, "filebeat")
    assert "hostPID" not in beat
    assert beat["securityContext"]["runAsUser"] == 0
    assert beat["containers"][0]["securityContext"]["capabilities"] == {
        "drop": ["ALL"], "add": ["DAC_READ_SEARCH"]}
    assert {v["hostPath"]["path"] for v in beat["volumes"] if "hostPath" in v} == {
        "/var/log/containers", "/var/log/pods", "/var/lib/docker/containers",
        "/var/lib/opsdeck-filebeat/shop"}
    # the kubelet probes Filebeat's HTTP endpoint on the pod's address
    probe = beat["containers"][0]["livenessProbe"]["httpGet"]
    assert probe["port"] == "http" and beat["containers"][0]["ports"][0]["containerPort"] == 5066


def _compose_node_exporter():
    from ansible_collections.opsdeck.stack.plugins.module_utils.compose import render as _compose
    model, secrets = inventory_model("prod")
    model["target"] = "compose"
    out = _compose.render(model, secrets, monitoring_files=_monitoring.render(model, secrets))
    return out["project"]["services"]["node-exporter"]


def test_policy_skips_of_the_agents_are_in_their_daemonsets_only(prod):
    manifests = prod[2]
    agent_checks = {"CKV_K8S_17", "CKV_K8S_23", "CKV_K8S_25", "CKV_K8S_40"}
    found = {}
    for item in manifests:
        for value in (item["metadata"].get("annotations") or {}).values():
            check = value.split("=", 1)[0]
            if check in agent_checks:
                found.setdefault(item["metadata"]["name"], set()).add(check)
                assert item["kind"] == "DaemonSet" and item["metadata"]["namespace"] == AGENTS
    assert found == {"node-exporter": {"CKV_K8S_17"},
                     "filebeat": {"CKV_K8S_23", "CKV_K8S_25", "CKV_K8S_40"}}


def test_prometheus_discovers_the_node_exporter_in_the_agents_namespace_only(prod):
    manifests = prod[2]
    text = by(manifests, "ConfigMap", "prometheus-config")["data"]["prometheus.yml"]
    jobs = {job["job_name"]: job for job in yaml.safe_load(text)["scrape_configs"]}
    node = jobs["node"]
    assert node["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": [AGENTS]}}]
    assert node["relabel_configs"][0] == {
        "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_part_of",
                          "__meta_kubernetes_pod_label_app_kubernetes_io_name"],
        "regex": "shop;node-exporter", "action": "keep"}
    assert {"source_labels": ["__meta_kubernetes_pod_ip"], "regex": "(.+)",
            "target_label": "__address__", "replacement": "$1:9100"} in node["relabel_configs"]
    # the pod labels the keep rule reads are the DaemonSet's
    labels = by(manifests, "DaemonSet", "node-exporter")["spec"]["template"]["metadata"]["labels"]
    assert labels[NAME] == "node-exporter" and labels["app.kubernetes.io/part-of"] == "shop"
    # no other job looks outside the stack's namespace
    for name, job in jobs.items():
        if name != "node":
            assert all(sd["namespaces"] == {"own_namespace": True}
                       for sd in job.get("kubernetes_sd_configs", [])), name
    # the DiskSpace alert and the node panels: the same rules and dashboards as on Compose,
    # over the same job name and node_* series (instance: the node's name here)
    model, secrets = prod[:2]
    compose = {f["path"]: f["content"]
               for f in _monitoring.render(dict(model, target="compose"), secrets)}
    compose_jobs = {j["job_name"] for j in yaml.safe_load(
        compose["prometheus/prometheus.yml"])["scrape_configs"]}
    assert "node" in compose_jobs
    data = by(manifests, "ConfigMap", "prometheus-config")["data"]
    assert data["rules_opsdeck.rules.yml"] == compose["prometheus/rules/opsdeck.rules.yml"]
    assert "node_filesystem_avail_bytes" in data["rules_opsdeck.rules.yml"]
    assert {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "instance"} in \
        node["relabel_configs"]
    # promtool checks this job too (test_promtool_accepts_the_configmap_as_mounted)
    checked = yaml.safe_load(_monitoring.validation_copy(data["prometheus.yml"]))
    assert "node" in {job["job_name"] for job in checked["scrape_configs"]}


def test_the_agents_role_is_read_only_on_pods_and_bound_to_prometheus(prod):
    manifests = prod[2]
    roles = [m for m in manifests if m["kind"] == "Role" and m["metadata"]["namespace"] == AGENTS]
    assert [r["metadata"]["name"] for r in roles] == ["prometheus-discovery"]
    assert roles[0]["rules"] == [{"apiGroups": [""], "resources": ["pods"],
                                  "verbs": ["get", "list", "watch"]}]
    bindings = [m for m in manifests
                if m["kind"] == "RoleBinding" and m["metadata"]["namespace"] == AGENTS]
    assert len(bindings) == 1
    assert bindings[0]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": "prometheus-discovery"}
    assert bindings[0]["subjects"] == [{"kind": "ServiceAccount", "name": "prometheus",
                                        "namespace": "shop"}]
    assert not [m for m in manifests
                if m["kind"] == "ServiceAccount" and m["metadata"]["namespace"] == AGENTS]
    assert not [m for m in manifests if m["kind"].startswith("Cluster")]


def _crossing(manifests):
    """Every (policy namespace, policy, direction, peer namespace, peer pod, port) whose peer
    is selected in another namespace."""
    out = set()
    for item in by(manifests, "NetworkPolicy"):
        for direction, key in (("ingress", "from"), ("egress", "to")):
            for rule in item["spec"].get(direction, []):
                for peer in rule[key]:
                    if "namespaceSelector" not in peer:
                        continue
                    other = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                    pod = (peer.get("podSelector") or {}).get("matchLabels", {})
                    for port in rule.get("ports", [{"port": None}]):
                        out.add((item["metadata"]["namespace"], item["metadata"]["name"], direction,
                                 other, pod.get(NAME) or pod.get("k8s-app"), port["port"]))
    return out


def test_exactly_two_flows_cross_between_the_stack_and_its_agents(prod):
    manifests = prod[2]
    between = {c for c in _crossing(manifests) if {c[0], c[3]} == {"shop", AGENTS}}
    assert between == {
        ("shop", "allow-prometheus", "egress", AGENTS, "node-exporter", 9100),
        (AGENTS, "allow-node-exporter", "ingress", "shop", "prometheus", 9100),
        (AGENTS, "allow-filebeat", "egress", "shop", "logstash", 5044),
        ("shop", "allow-logstash", "ingress", AGENTS, "filebeat", 5044)}
    # and the agents namespace reaches nothing else but DNS
    others = {c for c in _crossing(manifests) if c[0] == AGENTS and c[3] != "shop"}
    assert others == {(AGENTS, "agents-allow-dns", "egress", "kube-system", "kube-dns", 53)}
    pol = _policies(manifests, AGENTS)
    assert set(pol) == {"agents-default-deny", "agents-allow-dns", "allow-node-exporter",
                        "allow-filebeat"}
    assert pol["agents-default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    assert pol["allow-node-exporter"]["egress"] == [] and pol["allow-filebeat"]["ingress"] == []
    assert _peers(pol["allow-node-exporter"]["ingress"], "from", AGENTS) == {
        ("shop/prometheus", 9100)}
    assert _peers(pol["allow-filebeat"]["egress"], "to", AGENTS) == {("shop/logstash", 5044)}
    # the pod selectors pick the pods that exist
    for name, spec in pol.items():
        if name.startswith("allow-"):
            template = by(manifests, "DaemonSet", name[len("allow-"):])["spec"]["template"]
            labels = template["metadata"]["labels"]
            assert spec["podSelector"]["matchLabels"].items() <= labels.items()


def test_filebeat_reads_the_stack_namespace_and_ships_to_its_logstash(prod):
    model, secrets, manifests = prod
    configmap = by(manifests, "ConfigMap", "filebeat-config")
    assert configmap["metadata"]["namespace"] == AGENTS
    config = yaml.safe_load(configmap["data"]["filebeat.yml"])
    assert config == yaml.safe_load(
        [f for f in _elk.render(model) if f["path"] == "filebeat/filebeat.yml"][0]["content"])
    (entry,) = config["filebeat.inputs"]
    assert entry["paths"] == ["/var/log/containers/*_shop_*.log"]
    assert entry["type"] == "filestream" and entry["prospector.scanner.symlinks"] is True
    assert entry["parsers"] == [{"container": {"stream": "all", "format": "auto"}}]
    assert config["output.logstash"] == {"hosts": ["logstash.shop.svc:5044"]}
    assert by(manifests, "Service", "logstash")["spec"]["ports"][0]["port"] == 5044
    # the command reads the mounted file, the registry lives on the host path
    pod = _agents_pod(manifests, "filebeat")
    container = pod["containers"][0]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/usr/share/filebeat/opsdeck"] == "config"
    command = container["command"]
    assert command[command.index("-c") + 1] == "/usr/share/filebeat/opsdeck/filebeat.yml"
    assert mounts[command[command.index("--path.data") + 1]] == "registry"
    # a changed filebeat.yml rolls Filebeat and nothing else
    files = _elk.render(model)
    for item in files:
        if item["path"] == "filebeat/filebeat.yml":
            item["content"] += "# changed\n"
    before, after = pod_checksums(manifests), pod_checksums(render(model, secrets, elk_files=files))
    assert {key for key in before if before[key] != after[key]} == {("DaemonSet", "filebeat")}


def test_the_agents_namespace_name_is_checked_and_every_inventory_validates():
    assert _kubernetes.agents_namespace("shop") == AGENTS
    with pytest.raises(_kubernetes.RenderError, match="longer than 63"):
        _kubernetes.agents_namespace("s" * 57)
    # dev too (prod and staging: test_every_manifest_validates_strictly)
    assert validation_errors(render(*inventory_model("dev"))) == []


def _with(env, **sections):
    """An inventory's model with some stack_* sections changed (the vault stand-in kept)."""
    model, secrets = inventory_model(env)
    folder = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "inventories", env, "group_vars", "all")
    with open(os.path.join(folder, "stack.yml"), encoding="utf-8") as handle:
        variables = yaml.safe_load(handle)
    from ansible_collections.opsdeck.stack.plugins.module_utils.model.stack import from_vars, normalize
    raw = from_vars(variables)
    raw["target"] = "kubernetes"
    raw["secrets"] = dict(secrets, **sections.pop("secrets", {}))
    for key, value in sections.items():
        raw[key] = value
    return normalize(raw), raw["secrets"]


def test_elasticsearch_resources_come_from_the_model():
    model, secrets = inventory_model("prod")
    container = by(render(model, secrets), "StatefulSet", "es")["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "4Gi"},
                                      "limits": {"cpu": "2", "memory": "4Gi"}}
    model, secrets = _with("prod", logging={"enabled": True, "elasticsearch": {
        "heap": "1g", "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "3Gi"}}}})
    manifests = render(model, secrets)
    container = by(manifests, "StatefulSet", "es")["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "3Gi"}}
    assert validation_errors(manifests) == []


def test_scrape_ports_and_receiver_ports_shape_the_network_policies():
    model, secrets = _with(
        "prod",
        services=[{"name": "api", "image": "registry.example.com/shop/api:1.4.2", "port": 8000,
                   "metrics": {"port": 9102}, "route": {"path": "/api/"}},
                  {"name": "worker", "image": "registry.example.com/shop/worker:1.4.2", "port": 8001,
                   "metrics": False}],
        monitoring={"enabled": True, "images": {"prometheus": "quay.io/prometheus/prometheus:v2.53.4"},
                    "alerting": {"receivers": [
                        {"name": "ops", "email": {"to": "ops@example.com", "from": "am@example.com",
                                                  "smarthost": "mail.example.com:2525"}},
                        {"name": "hook", "webhook": {"url": "http://hooks.example.com:8088/alerts"}},
                        {"name": "chat", "webhook": {"url_secret": "chat_url"}}]}},
        secrets={"chat_url": "https://chat.example.com:8443/x"})
    pol = _policies(render(model, secrets))
    prometheus = _peers(pol["allow-prometheus"]["egress"], "to")
    assert ("api", 9102) in prometheus and ("api", 8000) not in prometheus
    assert not [peer for peer in prometheus if peer[0] == "worker"]
    assert _peers(pol["allow-api-monitoring"]["ingress"], "from") == {("prometheus", 9102)}
    assert "allow-worker-monitoring" not in pol
    assert _peers(pol["allow-alertmanager"]["egress"], "to") == {
        ("0.0.0.0/0", 443), ("0.0.0.0/0", 587), ("0.0.0.0/0", 2525), ("0.0.0.0/0", 8088), ("0.0.0.0/0", 8443)}


def test_grafana_mounts_the_dashboards_of_every_folder():
    model, secrets = _with("prod", monitoring={"enabled": True, "images": {
        "prometheus": "quay.io/prometheus/prometheus:v2.53.4"}, "grafana": {"dashboards": [
            {"name": "orders", "json": {"title": "Orders", "panels": []}, "folder": "shop"}]}})
    manifests = render(model, secrets)
    data = by(manifests, "ConfigMap", "grafana-dashboards")["data"]
    assert sorted(data) == ["opsdeck_application-performance.json", "opsdeck_system-overview.json",
                            "shop_orders.json"]
    volume = [v for v in by(manifests, "Deployment", "grafana")["spec"]["template"]["spec"]["volumes"]
              if v["name"] == "dashboards"][0]
    assert {i["key"]: i["path"] for i in volume["configMap"]["items"]}["shop_orders.json"] == "shop/orders.json"
    assert validation_errors(manifests) == []
