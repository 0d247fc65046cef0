"""The kubernetes role's pure helpers: the GitOps file layout and the rollback object."""

import yaml

from ansible_collections.opsdeck.stack.plugins.filter.kubernetes import kubernetes_files, kubernetes_restorable
from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import manifests as _kubernetes
from ansible_collections.opsdeck.stack.plugins.module_utils.model.stack import normalize

RAW = {
    "name": "shop", "target": "kubernetes", "environment": "staging",
    "services": [{"name": "api", "image": "registry.example.com/shop/api:1.4.2", "port": 8000,
                  "replicas": 2, "secrets": ["admin_token"], "route": {"path": "/api/"}}],
    "postgres": {"enabled": True},
    "secrets": {"admin_token": "unit-admin-token-value-1", "postgres_password": "unit-pg-value-2"},
}


def manifests():
    return _kubernetes.render(normalize(dict(RAW)), RAW["secrets"])


def test_one_stable_file_per_manifest_in_apply_order():
    files = kubernetes_files(manifests())
    paths = [f["path"] for f in files]
    assert len(paths) == len(set(paths)) == len(manifests())
    assert paths == sorted(paths), "lexical order is apply order (kubectl apply -f <dir>)"
    assert paths[0] == "00-namespace-shop.yaml"
    assert "08-deployment-api.yaml" in paths and "07-statefulset-postgres.yaml" in paths
    for item in files:
        header, body = item["content"].split("---\n", 1)
        assert header.startswith("# Managed by opsdeck.stack (role opsdeck.stack.kubernetes)")
        document = yaml.safe_load(body)
        assert (document["kind"], document["metadata"]["name"]) == (item["kind"], item["name"])
        assert item["secret"] == (item["kind"] == "Secret")
        if not item["secret"]:
            assert "unit-admin-token-value-1" not in item["content"]


def test_secrets_without_data_name_their_keys():
    files = kubernetes_files(manifests(), "false")   # -e kubernetes_write_secrets=false is a string
    secrets = [f for f in files if f["kind"] == "Secret"]
    assert secrets and not any(f["secret"] for f in secrets)
    for item in secrets:
        document = yaml.safe_load(item["content"].split("---\n", 1)[1])
        assert "data" not in document
        assert document["metadata"]["annotations"][_kubernetes.SECRET_KEYS_ANNOTATION] in (
            "admin_token", "postgres_password")
    assert all("dW5pdC" not in f["content"] for f in files)   # no base64 of a value


def test_restorable_drops_status_and_server_fields_and_keeps_the_spec():
    live = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "shop", "uid": "u-1", "resourceVersion": "42",
                     "generation": 7, "creationTimestamp": "2026-01-01T00:00:00Z",
                     "managedFields": [{"manager": "opsdeck"}], "labels": {"a": "b"},
                     "annotations": {"deployment.kubernetes.io/revision": "3"}},
        "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "api", "image": "api:1"}]}}},
        "status": {"replicas": 3},
    }
    out = kubernetes_restorable(live)
    assert out == {"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "api", "namespace": "shop", "labels": {"a": "b"}},
                   "spec": live["spec"]}
    assert live["status"] == {"replicas": 3}, "the input is not modified"
