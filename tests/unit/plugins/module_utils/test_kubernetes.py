"""The Kubernetes renderer: schema-valid manifests that do what the model says."""

import base64
import copy
import json
import os
import re

import pytest
import yaml

from ansible.errors import AnsibleFilterError

from ansible_collections.opsdeck.stack.plugins.filter.kubernetes import (
    kubernetes_manifests, kubernetes_yaml)
from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import manifests as _kubernetes
from ansible_collections.opsdeck.stack.plugins.module_utils.model.stack import from_vars, normalize
from k8s_support import by, validation_errors

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
PART_OF = "app.kubernetes.io/part-of"


def inventory(env):
    """The raw model of an inventory, the vault references replaced by long dummy values."""
    with open(os.path.join(ROOT, "inventories", env, "group_vars", "all", "stack.yml")) as handle:
        raw = from_vars(yaml.safe_load(handle))
    secrets = {}
    for name, value in raw["secrets"].items():
        assert "{{ vault_" in value
        secrets[name] = ("https://hooks.example.invalid/%s" % name) if name.endswith("_url") else \
            "dummy-%s-value-%s" % (name, "x7Q" * 8)  # the model wants a URL in *_url webhooks
    raw["secrets"] = secrets
    return raw


# Keys the renderer reads defensively but the model does not define yet: set on the
# normalised model (normalize() refuses unknown fields).
EXTRA_KEYS = ("session_affinity", "tenant")


def model_of(raw):
    raw = copy.deepcopy(raw)
    extras = [{key: svc.pop(key) for key in EXTRA_KEYS if key in svc} for svc in raw.get("services", [])]
    model = normalize(raw)
    for svc, extra in zip(model["services"], extras):
        svc.update(extra)
    return model


def render(raw, secrets=None, **kwargs):
    return _kubernetes.render(model_of(raw), secrets if secrets is not None else raw["secrets"], **kwargs)


def pod_spec(manifests, kind, name):
    return by(manifests, kind, name)["spec"]["template"]["spec"]


def checksum(manifests, kind, name):
    return by(manifests, kind, name)["spec"]["template"]["metadata"]["annotations"][
        _kubernetes.CHECKSUM_ANNOTATION]


PROD = inventory("prod")
DEV = inventory("dev")

EDGE_TENANT = {
    "name": "acme-shop",
    "environment": "staging",
    "services": [
        {"name": "web", "image": "nginx:1.27", "port": 8080, "replicas": 3,
         "secrets": ["session_key"], "health": {"ready": "/ready"},
         "session_affinity": True,
         "route": {"path": "/", "rate": "600r/m", "burst": 5, "cors_origins": ["https://a.example.com"]}},
        {"name": "admin", "image": "nginx:1.27", "port": 8081, "replicas": 1,
         "route": {"path": "/admin/", "rate": "30r/m", "burst": 100, "basic_auth": True,
                   "strip_prefix": True}},
        {"name": "jobs", "image": "busybox:1.36", "command": ["sleep", "infinity"], "replicas": 1,
         "depends_on": ["web"], "user": "20000:20000", "read_only": False},
        {"name": "grpc", "image": "busybox:1.36", "port": 9000, "replicas": 2,
         "session_affinity": {"timeout": 600}},
    ],
    "postgres": {"enabled": False},
    "redis": {"enabled": True, "persistence": "none"},
    "proxy": {"basic_auth_users": [{"name": "ops", "password_secret": "ops_password"}]},
    "secrets": {"session_key": "edge-session-key-value-1234", "ops_password": "edge-ops-pw-5678"},
}
EDGE_NO_PROXY = {
    "name": "batch",
    "services": [{"name": "cron", "image": "busybox:1.36", "replicas": 0}],
    "proxy": {"enabled": False},
}


def edge_tenant():
    return copy.deepcopy(EDGE_TENANT)


def render_edge(**kwargs):
    return render(edge_tenant(), htpasswd="ops:$2b$12$abcdefghijklmnopqrstuv", **kwargs)


CASES = {
    "prod": lambda: render(PROD),
    "dev": lambda: render(DEV),
    "edge": render_edge,
    "no-proxy": lambda: render(EDGE_NO_PROXY, secrets={}),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    return request.param, CASES[request.param]()


def test_every_manifest_validates_strictly_against_1_29_and_1_33(case):
    name, manifests = case
    failures = validation_errors(manifests)
    assert not failures, name + ":\n" + "\n".join(failures)


def test_names_labels_namespace_and_order(case):
    name, manifests = case
    stack = manifests[0]["metadata"]["name"]
    assert manifests[0]["kind"] == "Namespace"
    kinds = [_kubernetes.KIND_ORDER.index(m["kind"]) for m in manifests]
    assert kinds == sorted(kinds), name
    for item in manifests:
        meta = item["metadata"]
        assert DNS1123_SUBDOMAIN.match(meta["name"]) and len(meta["name"]) <= 63, meta["name"]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "opsdeck"
        assert meta["labels"][PART_OF] == stack
        assert meta["labels"]["app.kubernetes.io/name"]
        if item["kind"] != "Namespace":
            assert meta["namespace"] == stack
    # Workload selectors select their own pod template (and nothing else's).
    for item in manifests:
        if item["kind"] in ("Deployment", "StatefulSet"):
            sel = item["spec"]["selector"]["matchLabels"]
            pod = item["spec"]["template"]["metadata"]["labels"]
            assert all(pod.get(k) == v for k, v in sel.items())
            assert sel["app.kubernetes.io/name"] == item["metadata"]["name"]


def test_rendering_is_deterministic():
    assert json.dumps(render(PROD)) == json.dumps(render(PROD))
    assert kubernetes_yaml(render(PROD)) == kubernetes_yaml(render(PROD))


def test_prod_inventory_figures():
    manifests = render(PROD)
    kinds = {}
    for item in manifests:
        kinds[item["kind"]] = kinds.get(item["kind"], 0) + 1
    # Secret: one per stack secret (9 since prod's monitoring and logging secrets, branch obs)
    # no Role, RoleBinding or ServiceAccount: the generic inventory asks for none
    assert kinds == {"Namespace": 1, "Secret": 13,
                     "NetworkPolicy": 5, "Service": 3, "StatefulSet": 2, "Deployment": 1,
                     "HorizontalPodAutoscaler": 1, "PodDisruptionBudget": 1, "Ingress": 1}
    namespace = manifests[0]
    assert namespace["metadata"]["name"] == "shop"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_no_secret_value_outside_secret_objects(case):
    name, manifests = case
    raw = {"prod": PROD, "dev": DEV, "edge": EDGE_TENANT, "no-proxy": EDGE_NO_PROXY}[name]
    values = dict(raw.get("secrets") or {})
    assert _kubernetes.secret_values_in(manifests, values) == []
    assert all(m["kind"] == "Secret" for m in manifests
               if any(v in json.dumps(m) for v in values.values()))
    text = kubernetes_yaml(manifests)
    for value in values.values():
        assert value not in text  # base64 in Secrets only


def test_secrets_are_opaque_base64_and_mounted_only_where_used():
    manifests = render(PROD)
    secret = by(manifests, "Secret", "admin-token")
    assert secret["type"] == "Opaque"
    assert base64.b64decode(secret["data"]["admin_token"]).decode() == PROD["secrets"]["admin_token"]
    tls = by(manifests, "Secret", "shop-tls")
    assert tls["type"] == "kubernetes.io/tls"
    assert base64.b64decode(tls["data"]["tls.key"]).decode() == PROD["secrets"]["tls_key"]
    # The TLS pair is not shipped again as Opaque secrets nor mounted in any pod.
    # (+ prod's monitoring and logging secrets, branch obs)
    assert {s["metadata"]["name"] for s in by(manifests, "Secret")} == {
        "admin-token", "postgres-password", "redis-password", "shop-tls", "grafana-admin-password",
        "slack-webhook-url", "pagerduty-routing-key", "elastic-password", "kibana-system-password",
        "logstash-writer-password", "elastic-transport-ca-crt", "elastic-transport-crt",
        "elastic-transport-key"}

    def mounted(kind, name):
        spec = pod_spec(manifests, kind, name)
        mounts = spec["containers"][0]["volumeMounts"]
        assert {"name": "secrets", "mountPath": "/run/secrets", "readOnly": True} in mounts
        vol = [v for v in spec["volumes"] if v["name"] == "secrets"][0]
        return sorted(item["path"] for src in vol["projected"]["sources"]
                      for item in src["secret"]["items"])

    assert mounted("Deployment", "api") == ["admin_token", "postgres_password", "redis_password"]
    assert mounted("StatefulSet", "postgres") == ["postgres_password"]
    assert mounted("StatefulSet", "redis") == ["redis_password"]
    env = {e["name"]: e["value"] for e in pod_spec(manifests, "Deployment", "api")["containers"][0]["env"]}
    assert env["DATABASE_HOST"] == "postgres" and env["REDIS_HOST"] == "redis"
    assert env["DATABASE_PASSWORD_FILE"] == "/run/secrets/postgres_password"


def test_changed_secret_rolls_exactly_the_pods_that_use_it():
    before = render(PROD)
    secrets = dict(PROD["secrets"], redis_password="another-redis-password-value-123456")
    after = render(PROD, secrets=secrets)
    assert checksum(before, "Deployment", "api") != checksum(after, "Deployment", "api")
    assert checksum(before, "StatefulSet", "redis") != checksum(after, "StatefulSet", "redis")
    assert checksum(before, "StatefulSet", "postgres") == checksum(after, "StatefulSet", "postgres")
    # A secret no pod mounts (the TLS key) rolls nothing.
    secrets = dict(PROD["secrets"], tls_key="another-tls-key-value-1234567890")
    after = render(PROD, secrets=secrets)
    for kind, name in (("Deployment", "api"), ("StatefulSet", "redis"), ("StatefulSet", "postgres")):
        assert checksum(before, kind, name) == checksum(after, kind, name)
    assert by(before, "Secret", "shop-tls") != by(after, "Secret", "shop-tls")


def test_replicas_left_to_the_hpa_and_hpa_built_like_hpa_tune():
    manifests = render(PROD)
    api = by(manifests, "Deployment", "api")
    assert "replicas" not in api["spec"]
    assert api["spec"]["strategy"] == {"type": "RollingUpdate",
                                       "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    hpa = by(manifests, "HorizontalPodAutoscaler", "api")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 20)
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"]
               for m in hpa["spec"]["metrics"]}
    assert targets == {"cpu": 70, "memory": 80}
    # the generic inventory asks for no scaling behaviour: Kubernetes' own applies
    assert "behavior" not in hpa["spec"]
    # Without autoscaling the Deployment keeps its replicas and there is no HPA.
    edge = render_edge()
    assert by(edge, "Deployment", "web")["spec"]["replicas"] == 3
    assert by(edge, "HorizontalPodAutoscaler") == []


def test_pdb_only_with_two_or_more_pods():
    prod = render(PROD)
    assert by(prod, "PodDisruptionBudget", "api")["spec"]["maxUnavailable"] == 1  # HPA min 2
    edge = render_edge()
    assert {p["metadata"]["name"] for p in by(edge, "PodDisruptionBudget")} == {"web", "grpc"}
    raw = copy.deepcopy(PROD)
    raw["services"][0]["autoscaling"]["min"] = 1
    assert by(render(raw), "PodDisruptionBudget") == []
    assert by(render(EDGE_NO_PROXY, secrets={}), "PodDisruptionBudget") == []


def test_probes_follow_the_model_health():
    container = pod_spec(render(PROD), "Deployment", "api")["containers"][0]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    startup = container["startupProbe"]
    # start_period 30 s at a 5 s period: the liveness probe is held off at least that long.
    assert startup["httpGet"]["path"] == "/health/live"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"},
                                      "limits": {"cpu": "2", "memory": "4Gi"}}
    manifests = render(PROD)
    pg = pod_spec(manifests, "StatefulSet", "postgres")["containers"][0]
    assert pg["readinessProbe"]["exec"]["command"][0] == "pg_isready"
    redis = pod_spec(manifests, "StatefulSet", "redis")["containers"][0]
    assert "redis-cli" in redis["livenessProbe"]["exec"]["command"][-1]
    assert "$(" not in redis["livenessProbe"]["exec"]["command"][-1]  # the kubelet would expand it
    # Only "ready" given: liveness falls back to it.
    web = pod_spec(render_edge(), "Deployment", "web")["containers"][0]
    assert web["livenessProbe"]["httpGet"]["path"] == "/ready"


def test_pods_are_hardened(case):
    name, manifests = case
    for item in manifests:
        if item["kind"] not in ("Deployment", "StatefulSet"):
            continue
        spec = item["spec"]["template"]["spec"]
        assert spec["automountServiceAccountToken"] is False
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0
        assert pod["fsGroup"] == pod["runAsGroup"]
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"]:
            sec = container["securityContext"]
            assert sec["allowPrivilegeEscalation"] is False
            assert sec["capabilities"] == {"drop": ["ALL"]}
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}} in spec["volumes"]
        if item["kind"] == "Deployment":
            spread = spec["topologySpreadConstraints"][0]
            assert spread["topologyKey"] == "kubernetes.io/hostname"
            assert spread["labelSelector"]["matchLabels"] == item["spec"]["selector"]["matchLabels"], name
    api = pod_spec(render(PROD), "Deployment", "api")
    assert api["securityContext"]["runAsUser"] == 10001
    assert api["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    jobs = pod_spec(render_edge(), "Deployment", "jobs")
    assert (jobs["securityContext"]["runAsUser"], jobs["securityContext"]["runAsGroup"]) == (20000, 20000)
    assert jobs["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is False
    assert jobs["containers"][0]["args"] == ["sleep", "infinity"]


def test_statefulsets_claim_the_model_storage():
    manifests = render(PROD)
    pg = by(manifests, "StatefulSet", "postgres")
    assert pg["spec"]["serviceName"] == "postgres"
    claim = pg["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert by(manifests, "Service", "postgres")["spec"]["clusterIP"] == "None"
    assert by(manifests, "Service", "redis")["spec"]["clusterIP"] == "None"
    env = {e["name"]: e["value"] for e in pg["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    redis = by(manifests, "StatefulSet", "redis")
    env = {e["name"]: e["value"] for e in redis["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REDIS_PERSISTENCE"] == "aof"
    assert "volumeClaimTemplates" in redis["spec"]
    # persistence none: no claim, an emptyDir instead.
    edge = by(render_edge(), "StatefulSet", "redis")
    assert "volumeClaimTemplates" not in edge["spec"]
    assert {"name": "data", "emptyDir": {}} in edge["spec"]["template"]["spec"]["volumes"]


def test_services_and_session_affinity():
    edge = render_edge()
    # Every app with a port gets a ClusterIP, routed or not; a portless worker gets none.
    assert {s["metadata"]["name"] for s in by(edge, "Service")} == {"web", "admin", "grpc", "redis"}
    web = by(edge, "Service", "web")["spec"]
    assert web["type"] == "ClusterIP"
    assert web["sessionAffinity"] == "ClientIP"
    assert web["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 3600}}
    grpc = by(edge, "Service", "grpc")["spec"]
    assert grpc["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] == 600
    assert "sessionAffinity" not in by(edge, "Service", "admin")["spec"]
    # Behind ingress-nginx the same stickiness is a cookie.
    annotations = by(edge, "Ingress", "web")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert annotations["nginx.ingress.kubernetes.io/session-cookie-max-age"] == "3600"
    raw = edge_tenant()
    raw["services"][0]["session_affinity"] = "sometimes"
    with pytest.raises(_kubernetes.RenderError, match="session_affinity"):
        render(raw, htpasswd="ops:x")


def test_ingress_rate_limits_tls_cors_and_auth():
    prod = by(render(PROD), "Ingress", "api")
    annotations = prod["metadata"]["annotations"]
    assert prod["spec"]["ingressClassName"] == "nginx"
    assert annotations["nginx.ingress.kubernetes.io/limit-rps"] == "10"           # 10r/s
    assert annotations["nginx.ingress.kubernetes.io/limit-burst-multiplier"] == "2"  # burst 20
    assert annotations["nginx.ingress.kubernetes.io/limit-connections"] == "100"
    assert annotations["nginx.ingress.kubernetes.io/ssl-redirect"] == "true"
    assert not [k for k in annotations if "snippet" in k]
    assert prod["spec"]["tls"] == [{"secretName": "shop-tls"}]
    path = prod["spec"]["rules"][0]["http"]["paths"][0]
    assert (path["path"], path["pathType"]) == ("/api/", "Prefix")
    assert path["backend"]["service"] == {"name": "api", "port": {"name": "http"}}

    edge = render_edge()
    web = by(edge, "Ingress", "web")["metadata"]["annotations"]
    assert web["nginx.ingress.kubernetes.io/limit-rps"] == "10"            # 600r/m
    assert web["nginx.ingress.kubernetes.io/limit-burst-multiplier"] == "1"
    assert web["nginx.ingress.kubernetes.io/enable-cors"] == "true"
    assert web["nginx.ingress.kubernetes.io/cors-allow-origin"] == "https://a.example.com"
    assert "tls" not in by(edge, "Ingress", "web")["spec"]
    admin = by(edge, "Ingress", "admin")
    notes = admin["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/limit-rpm"] == "30"          # 30r/m is not whole r/s
    assert "nginx.ingress.kubernetes.io/limit-rps" not in notes
    assert notes["nginx.ingress.kubernetes.io/limit-burst-multiplier"] == "4"  # ceil(100/30)
    assert notes["nginx.ingress.kubernetes.io/auth-type"] == "basic"
    auth = by(edge, "Secret", notes["nginx.ingress.kubernetes.io/auth-secret"])
    assert base64.b64decode(auth["data"]["auth"]).decode().startswith("ops:")
    assert notes["nginx.ingress.kubernetes.io/rewrite-target"] == "/$2"
    assert admin["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/admin(/|$)(.*)"
    # The basic-auth password itself is only in the htpasswd, not a Secret of its own.
    assert [s for s in by(edge, "Secret") if "ops_password" in s["data"]] == []
    with pytest.raises(_kubernetes.RenderError, match="htpasswd"):
        render(edge_tenant())
    assert by(render(EDGE_NO_PROXY, secrets={}), "Ingress") == []


def test_network_policies_default_deny_dns_and_model_flows():
    manifests = render(PROD)
    policies = {p["metadata"]["name"]: p["spec"] for p in by(manifests, "NetworkPolicy")}
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    dns = policies["allow-dns"]["egress"][0]
    assert {"protocol": "UDP", "port": 53} in dns["ports"]
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    api = policies["allow-api"]
    assert api["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "api", PART_OF: "shop"}
    assert api["ingress"][0]["from"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "ingress-nginx"}}}]
    assert api["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8000}]
    egress = {rule["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]: rule["ports"][0]["port"]
              for rule in api["egress"]}
    assert egress == {"postgres": 5432, "redis": 6379}
    pg = policies["allow-postgres"]
    assert pg["ingress"] == [{"from": [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "api", PART_OF: "shop"}}}],
        "ports": [{"protocol": "TCP", "port": 5432}]}]
    assert pg["egress"] == []
    # dev: the worker uses only redis, so postgres does not admit it.
    dev = {p["metadata"]["name"]: p["spec"] for p in by(render(DEV), "NetworkPolicy")}
    admitted = [r["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                for r in dev["allow-postgres"]["ingress"]]
    assert admitted == ["api"]
    admitted = sorted(r["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                      for r in dev["allow-redis"]["ingress"])
    assert admitted == ["api", "worker"]
    assert dev["allow-worker"]["ingress"] == []  # not routed: nothing reaches it
    # No policy admits peers from another namespace, except the ingress controller and DNS.
    for name, spec in policies.items():
        for rule in spec.get("ingress", []):
            for peer in rule["from"]:
                if "namespaceSelector" in peer:
                    assert name == "allow-api"
                    assert peer["namespaceSelector"]["matchLabels"] == {
                        "kubernetes.io/metadata.name": "ingress-nginx"}


def test_tenant_labels_keep_app_traffic_within_a_tenant():
    raw = edge_tenant()
    raw["services"][0]["tenant"] = "acme"       # web
    raw["services"][2]["tenant"] = "acme"       # jobs depends on web: same tenant, allowed
    model = model_of(raw)
    manifests = _kubernetes.render(model, raw["secrets"], htpasswd="ops:x")
    web = by(manifests, "Deployment", "web")["spec"]["template"]["metadata"]["labels"]
    assert web[_kubernetes.TENANT_LABEL] == "acme"
    policies = {p["metadata"]["name"]: p["spec"] for p in by(manifests, "NetworkPolicy")}
    peers = [r["from"][0] for r in policies["allow-web"]["ingress"] if "podSelector" in r["from"][0]]
    assert peers == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "jobs", PART_OF: "acme-shop", _kubernetes.TENANT_LABEL: "acme"}}}]
    # jobs moved to another tenant: the flow disappears in both directions.
    model["services"][2]["tenant"] = "globex"
    manifests = _kubernetes.render(model, raw["secrets"], htpasswd="ops:x")
    policies = {p["metadata"]["name"]: p["spec"] for p in by(manifests, "NetworkPolicy")}
    assert [r for r in policies["allow-web"]["ingress"] if "podSelector" in r["from"][0]] == []
    assert policies["allow-jobs"]["egress"] == []


def test_rbac_only_what_the_model_declares():
    """Seed 000's tenant operator written in the model: a Role with exactly its rules, a
    service account with a token bound to it, the hub running as it; nothing by default."""
    raw = copy.deepcopy(PROD)
    raw["kubernetes"] = {
        "namespace": "veloflux-tenants",
        "roles": [{"name": "tenant-operator", "rules": [
            {"api_groups": ["", "apps", "autoscaling"],
             "resources": ["deployments", "services", "pods", "horizontalpodautoscalers"],
             "verbs": ["get", "list", "watch"]}]}],
        "service_accounts": [{"name": "hub", "token": True, "roles": ["tenant-operator"]},
                             {"name": "quiet"}]}
    raw["services"][0]["service_account"] = "hub"
    manifests = render(raw)
    assert validation_errors(manifests) == []
    assert {m["metadata"].get("namespace") for m in manifests if m["kind"] != "Namespace"} >= {"veloflux-tenants"}
    assert by(manifests, "Namespace", "veloflux-tenants")
    assert by(manifests, "Role", "tenant-operator")["rules"] == [
        {"apiGroups": ["", "apps", "autoscaling"],
         "resources": ["deployments", "services", "pods", "horizontalpodautoscalers"],
         "verbs": ["get", "list", "watch"]}]
    binding = by(manifests, "RoleBinding", "hub-tenant-operator")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant-operator"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hub", "namespace": "veloflux-tenants"}]
    assert by(manifests, "ServiceAccount", "hub")["automountServiceAccountToken"] is True
    assert by(manifests, "ServiceAccount", "quiet")["automountServiceAccountToken"] is False
    pod = by(manifests, "Deployment", "api")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "hub" and pod["automountServiceAccountToken"] is True
    assert by(render(PROD), "Role") == [] and by(render(PROD), "ServiceAccount") == []


def test_extra_network_policies_and_pod_security_from_the_model():
    """Seed 000's deny-tenant-cross-traffic beside the default deny, and a baseline namespace."""
    raw = copy.deepcopy(PROD)
    spec = {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": {}}]}]}
    raw["kubernetes"] = {"pod_security": "baseline",
                         "network_policies": [{"name": "deny-tenant-cross-traffic", "spec": spec}]}
    manifests = render(raw)
    assert validation_errors(manifests) == []
    assert by(manifests, "NetworkPolicy", "deny-tenant-cross-traffic")["spec"] == spec
    assert by(manifests, "NetworkPolicy", "default-deny")
    labels = by(manifests, "Namespace", "shop")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert by(render(PROD), "Namespace", "shop")["metadata"]["labels"][
        "pod-security.kubernetes.io/enforce"] == "restricted"


def test_missing_or_colliding_secrets_are_clear_errors():
    secrets = dict(PROD["secrets"])
    secrets.pop("admin_token")
    with pytest.raises(_kubernetes.RenderError, match="'admin_token'.*no value"):
        render(PROD, secrets=secrets)
    raw = copy.deepcopy(DEV)
    raw["secrets"] = dict(raw["secrets"], **{"admin-token": "other-value-123456"})
    with pytest.raises(_kubernetes.RenderError, match="both become the Secret 'admin-token'"):
        render(raw)
    raw = edge_tenant()
    raw["services"][2]["user"] = "0:0"
    with pytest.raises(_kubernetes.RenderError, match="uid 0"):
        render(raw, htpasswd="ops:x")


def test_filter_plugin_wraps_errors_and_dumps_yaml():
    model = normalize(copy.deepcopy(PROD))
    manifests = kubernetes_manifests(model, PROD["secrets"])
    docs = list(yaml.safe_load_all(kubernetes_yaml(manifests)))
    assert docs == manifests
    with pytest.raises(AnsibleFilterError, match="kubernetes_manifests: .*no value"):
        kubernetes_manifests(model, {})
