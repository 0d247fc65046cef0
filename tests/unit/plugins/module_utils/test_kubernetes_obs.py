"""Monitoring and ELK on Kubernetes: the prod inventory rendered with the roles' files."""

import base64
import copy
import os
import sys

import kubernetes_validate
import pytest
import yaml

from ansible_collections.opsdeck.stack.plugins.filter.kubernetes import kubernetes_manifests
from ansible_collections.opsdeck.stack.plugins.module_utils import (
    _elk, _fidelity, _kubernetes, _kubernetes_obs, _monitoring)

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
from test_kubernetes_policy import inventory_model  # noqa: E402  (the vault stand-in)

VERSIONS = ("1.29.0", "1.33.0")
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


def by(manifests, kind, name=None):
    items = [m for m in manifests if m["kind"] == kind]
    if name is None:
        return items
    found = [m for m in items if m["metadata"]["name"] == name]
    assert len(found) == 1, "%s/%s: %d found" % (kind, name, len(found))
    return found[0]


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
    _, _, manifests = prod
    workloads = {(m["kind"], m["metadata"]["name"]) for m in manifests
                 if m["kind"] in _kubernetes.WORKLOAD_KINDS}
    assert OBS_WORKLOADS | AGENT_WORKLOADS <= workloads
    assert "nginx-exporter" not in {name for _, name in workloads}
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
    _, _, manifests = prod
    staging = render(*inventory_model("staging"))
    errors = []
    for item in manifests + staging:
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(item, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append("%s %s/%s: %s" % (version, item["kind"], item["metadata"]["name"],
                                                exc.message))
    assert errors == []


def test_kubernetes_sd_is_namespace_restricted_and_the_role_read_only(prod):
    _, _, manifests = prod
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
        if item["path"] == "prometheus/rules/errors.rules.yml":
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
    _, secrets, manifests = prod
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
    model, _, manifests = prod
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
    if not model["logging"]["enabled"]:
        pytest.skip("staging has no ELK")
    nodes = model["logging"]["elasticsearch"]["nodes"]
    assert by(manifests, "StatefulSet", "es")["spec"]["replicas"] == nodes


def test_grafana_reads_the_admin_password_from_a_secret_file(prod):
    _, _, manifests = prod
    container = by(manifests, "Deployment", "grafana")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    model, secrets = inventory_model("prod")
    model["monitoring"]["grafana"]["enabled"] = False
    names = {(m["kind"], m["metadata"]["name"]) for m in render(model, secrets)}
    assert ("Deployment", "grafana") not in names and ("ConfigMap", "grafana-dashboards") not in names


def test_pods_are_restricted_with_resources_and_probes(prod):
    _, _, manifests = prod
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
    _, _, manifests = prod
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
    model, _, _ = prod
    rep = _fidelity.report(model, "kubernetes")
    native = {e["field"] for e in rep["native"]}
    dropped = {e["field"]: e["how"] for e in rep["dropped"]}
    assert {"stack_monitoring.enabled", "stack_logging.enabled"} <= native
    assert "node-exporter" in dropped["stack_monitoring node exporter"]
    assert "restricted Pod Security" in dropped["stack_logging Filebeat"]
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
    _, _, manifests = prod
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
    model, secrets, _ = prod
    # the vault stand-in is no URL: a webhook that amtool accepts
    secrets = dict(secrets, slack_webhook_url="https://hooks.slack.example.com/services/T0/B0/x")
    secret = by(render(model, secrets), "Secret", "alertmanager-config")
    text = base64.b64decode(secret["data"]["alertmanager.yml"])
    (tmp_path / "alertmanager.yml").write_bytes(text)
    result = tool([AMTOOL, "check-config", "alertmanager.yml"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
