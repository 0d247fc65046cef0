"""playbooks/deploy.yml on the prod (Kubernetes) model in GitOps mode (kubernetes_mode=dir).

No Kubernetes API server can run here, so the kubernetes role's `dir` mode is exercised for real
through the playbook a user runs: a copy of inventories/prod with a vault of real-looking
(non-placeholder) secrets, manifests written to a temporary directory. Checked: one file per
manifest, each valid for `kubernetes-validate --strict` on 1.29.0 and 1.33.0; no secret value
(nor its base64) in the -v output or in any non-Secret file; Secret files 0600; a second run
changes nothing; `--check --diff` after a model change reports the change and shows the diff
without writing, and shows a changed secret by file name and digest only.
"""

import base64
import hashlib
import os
import shutil
import stat
import subprocess
import sys

import pytest
import yaml

from helpers import BIN, ROOT, recap, run

VAULT = {
    "vault_postgres_password": "Pg-kq83-LmZt-5521-prodlike",
    "vault_redis_password": "Rd-x71H-ppQe-0934-prodlike",
    "vault_admin_token": "Adm-9fT2-wWk4-7781-prodlike",
    "vault_tls_cert": "-----BEGIN CERTIFICATE-----\nMIIBfakeCertBody0193\n-----END CERTIFICATE-----\n",
    "vault_tls_key": "-----BEGIN PRIVATE KEY-----\nMIIEfakeKeyBody77410\n-----END PRIVATE KEY-----\n",
    # prod's monitoring and logging secrets (branch obs)
    "vault_grafana_admin_password": "dir-test-grafana-admin-password-5500",
    "vault_slack_webhook_url": "https://hooks.slack.invalid/services/dir-test-slack-webhook-5501",
    "vault_elastic_password": "dir-test-elastic-password-5502",
    "vault_kibana_system_password": "dir-test-kibana-system-password-5503",
    "vault_logstash_writer_password": "dir-test-logstash-writer-password-stand-in-0001",
    "vault_elastic_transport_ca_crt": "dir-test-elastic-transport-ca-crt-stand-in-0001",
    "vault_elastic_transport_crt": "dir-test-elastic-transport-crt-stand-in-0001",
    "vault_elastic_transport_key": "dir-test-elastic-transport-key-stand-in-0001",
    "vault_pagerduty_routing_key": "dir-test-pagerduty-routing-key-5504",
}
VERSIONS = ("1.29.0", "1.33.0")


def leaks(text):
    """Secret values (or their base64, or a recognisable line of a PEM) found in text."""
    found = []
    for name, value in VAULT.items():
        pieces = [value, base64.b64encode(value.encode()).decode()]
        pieces += [line for line in value.splitlines() if "fake" in line]
        if any(piece in text for piece in pieces):
            found.append(name)
    return found


def make_inventory(base, vault=None, image_tag=None):
    vault = VAULT if vault is None else vault
    inventory = base / "inventory"
    if inventory.exists():
        shutil.rmtree(inventory)
    shutil.copytree(os.path.join(ROOT, "inventories", "prod"), inventory)
    (inventory / "group_vars" / "all" / "vault.yml").write_text(yaml.safe_dump(vault), encoding="utf-8")
    if image_tag:
        stack = inventory / "group_vars" / "all" / "stack.yml"
        stack.write_text(stack.read_text().replace("shop/api:1.4.2", "shop/api:%s" % image_tag))
    return str(inventory)


def deploy(inventory, dest, *args):
    return run(["ansible-playbook", "playbooks/deploy.yml", "-i", inventory, "-v",
                "-e", "kubernetes_mode=dir", "-e", "kubernetes_manifest_dir=%s" % dest] + list(args),
               timeout=600)


def snapshot(dest):
    return {name: hashlib.sha256((dest / name).read_bytes()).hexdigest() for name in sorted(os.listdir(dest))}


@pytest.fixture(scope="module")
def gitops(tmp_path_factory):
    base = tmp_path_factory.mktemp("k8sdir")
    dest = base / "manifests"
    inventory = make_inventory(base)
    first = deploy(inventory, dest)
    written = snapshot(dest) if dest.exists() else {}
    second = deploy(inventory, dest)
    # A model change (new image tag) and a rotated secret, previewed with --check --diff.
    rotated = dict(VAULT, vault_admin_token="Adm-ROTATED-0000-1111-prodlike")
    changed_inventory = make_inventory(base, rotated, image_tag="1.4.3")
    check = deploy(changed_inventory, dest, "--check", "--diff")
    return {"dest": dest, "first": first, "second": second, "check": check, "written": written,
            "after_check": snapshot(dest), "rotated": rotated}


def test_first_run_writes_one_file_per_manifest(gitops):
    assert gitops["first"].returncode == 0, gitops["first"].stdout[-4000:]
    names = sorted(gitops["written"])
    kinds = {name.split("-", 2)[1] for name in names}
    assert kinds == {"namespace", "serviceaccount", "role", "rolebinding", "secret", "networkpolicy",
                     "service", "statefulset", "deployment", "horizontalpodautoscaler",
                     "poddisruptionbudget", "ingress", "configmap", "job", "daemonset"}
    assert "07-statefulset-postgres.yaml" in names and "08-deployment-api.yaml" in names
    for name in names:
        documents = [d for d in yaml.safe_load_all((gitops["dest"] / name).read_text()) if d]
        assert len(documents) == 1, name
        assert name.endswith("-%s-%s.yaml" % (documents[0]["kind"].lower(), documents[0]["metadata"]["name"]))


def test_every_file_validates_strictly(gitops):
    files = [str(gitops["dest"] / name) for name in sorted(gitops["written"])]
    for version in VERSIONS:
        check = subprocess.run([os.path.join(BIN, "kubernetes-validate"), "--strict", "-k", version] + files,
                               capture_output=True, text=True, check=False, timeout=300)
        assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
        assert check.stdout.count("passed") >= len(files), check.stdout[-3000:]


def test_secrets_only_in_secret_files_which_are_0600(gitops):
    for name in gitops["written"]:
        path = gitops["dest"] / name
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text()
        if "-secret-" in name:
            assert mode == 0o600, (name, oct(mode))
            assert yaml.safe_load(text.split("---\n", 1)[1])["data"], name
        else:
            assert mode == 0o644, (name, oct(mode))
            assert leaks(text) == [], name
    secret_text = "".join((gitops["dest"] / n).read_text() for n in gitops["written"] if "-secret-" in n)
    assert base64.b64encode(VAULT["vault_admin_token"].encode()).decode() in secret_text


def test_no_secret_in_the_verbose_output(gitops):
    for key in ("first", "second", "check"):
        result = gitops[key]
        assert leaks(result.stdout + result.stderr) == [], key
    rotated = gitops["rotated"]["vault_admin_token"]
    assert rotated not in gitops["check"].stdout
    assert base64.b64encode(rotated.encode()).decode() not in gitops["check"].stdout


def test_second_run_changes_nothing(gitops):
    assert gitops["second"].returncode == 0, gitops["second"].stdout[-4000:]
    assert recap(gitops["second"].stdout)["changed"] == 0, gitops["second"].stdout[-4000:]


def test_check_diff_shows_the_change_without_writing(gitops):
    check = gitops["check"]
    assert check.returncode == 0, check.stdout[-4000:]
    assert recap(check.stdout)["changed"] > 0
    out = check.stdout
    assert "08-deployment-api.yaml" in out
    assert "-        image: registry.example.com/shop/api:1.4.2" in out, out[-4000:]
    assert "+        image: registry.example.com/shop/api:1.4.3" in out, out[-4000:]
    # The rotated secret: named, shown as a digest, never as a value.
    assert "04-secret-admin-token.yaml would change" in " ".join(out.split())
    # Nothing was written.
    assert gitops["after_check"] == gitops["written"]


def test_secrets_without_data_for_an_external_secret_store(tmp_path):
    dest = tmp_path / "manifests"
    result = deploy(make_inventory(tmp_path), dest, "-e", "kubernetes_write_secrets=false")
    assert result.returncode == 0, result.stdout[-4000:]
    secrets = sorted(name for name in os.listdir(dest) if "-secret-" in name)
    assert secrets
    for name in secrets:
        manifest = yaml.safe_load((dest / name).read_text().split("---\n", 1)[1])
        assert "data" not in manifest and "stringData" not in manifest
        assert manifest["metadata"]["annotations"]["opsdeck.io/secret-keys"]
    assert all(leaks((dest / name).read_text()) == [] for name in os.listdir(dest))
    assert leaks(result.stdout) == []


def test_manifests_for_an_older_kubernetes(tmp_path):
    """kubernetes_server_version: the files are what that release serves, and say so."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "unit", "plugins", "module_utils"))
    from openapi_strict import Schema, openapi_path  # pylint: disable=import-outside-toplevel

    dest = tmp_path / "manifests"
    inventory = make_inventory(tmp_path)
    first = deploy(inventory, dest, "-e", "kubernetes_server_version=1.20")
    assert first.returncode == 0, first.stdout[-4000:]
    out = " ".join(first.stdout.split())
    assert "Rendered for Kubernetes 1.20: " in out
    assert "HorizontalPodAutoscaler shop/api: autoscaling/v2beta2 instead of autoscaling/v2" in out
    documents = {name: yaml.safe_load((dest / name).read_text().split("---\n", 1)[-1]) for name in os.listdir(dest)}
    by_kind = {}
    for item in documents.values():
        by_kind.setdefault(item["kind"], []).append(item)
    assert {m["apiVersion"] for m in by_kind["HorizontalPodAutoscaler"]} == {"autoscaling/v2beta2"}
    assert {m["apiVersion"] for m in by_kind["PodDisruptionBudget"]} == {"policy/v1beta1"}
    assert all("persistentVolumeClaimRetentionPolicy" not in m["spec"] for m in by_kind["StatefulSet"])
    assert all(m["spec"].get(k) != [] for m in by_kind["NetworkPolicy"] for k in ("ingress", "egress"))
    if openapi_path():  # the OpenAPI document of 1.20 that scripts/k8s-local.sh keeps
        schema = Schema(openapi_path())
        errors = ["%s: %s" % (name, e) for name, item in sorted(documents.items()) for e in schema.errors(item)]
        assert errors == [], "\n".join(errors)
    second = deploy(inventory, dest, "-e", "kubernetes_server_version=1.20")
    assert second.returncode == 0 and recap(second.stdout)["changed"] == 0, second.stdout[-4000:]
    wrong = deploy(inventory, dest, "-e", "kubernetes_server_version=one-twenty")
    assert wrong.returncode != 0
    assert "'one-twenty' is not a Kubernetes version (e.g. 1.20 or v1.20.2)" in " ".join(wrong.stdout.split())
