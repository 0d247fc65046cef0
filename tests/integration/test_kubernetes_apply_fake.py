"""roles/kubernetes in apply mode, driven through playbooks/deploy.yml against a FAKE API server.

A fake (tests/integration/fake_kube_api.py, in-process, discovery + GET + server-side apply,
simulated workload status) is used ONLY because no Kubernetes API server can run on this
machine; tests/integration/test_kubernetes_live.py is the real thing when KUBECONFIG is set.
What this proves: the role's task logic (kubeconfig passed through, apply order, waits, no
secret in the -v output, changed=0 on a re-run, a failed rollout rolled back to the exact
spec read before the run, with a clear failure message). What it cannot prove: that a real
API server accepts the manifests (kubernetes-validate does that) or real rollout timing.
"""

import json
import os
import re
import shutil

import pytest
import yaml

from fake_kube_api import FakeKubeAPI
from helpers import ROOT, recap, run

VAULT = {
    "vault_postgres_password": "Pg-fake-api-4471-prodlike",
    "vault_redis_password": "Rd-fake-api-9920-prodlike",
    "vault_admin_token": "Adm-fake-api-1183-prodlike",
    "vault_tls_cert": "fake-api-not-a-real-cert-5532",
    "vault_tls_key": "fake-api-not-a-real-key-7741",
    # prod's monitoring and logging secrets (branch obs)
    "vault_grafana_admin_password": "fake-test-grafana-admin-password-5500",
    "vault_slack_webhook_url": "https://hooks.slack.invalid/services/fake-test-slack-webhook-5501",
    "vault_elastic_password": "fake-test-elastic-password-5502",
    "vault_kibana_system_password": "fake-test-kibana-system-password-5503",
    "vault_logstash_writer_password": "fake-test-logstash-writer-password-stand-in-0001",
    "vault_elastic_transport_ca_crt": "fake-test-elastic-transport-ca-crt-stand-in-0001",
    "vault_elastic_transport_crt": "fake-test-elastic-transport-crt-stand-in-0001",
    "vault_elastic_transport_key": "fake-test-elastic-transport-key-stand-in-0001",
    "vault_pagerduty_routing_key": "fake-test-pagerduty-routing-key-5504",
}
GOOD_IMAGE = "registry.example.com/shop/api:1.4.2"


def make_inventory(base, name, image=GOOD_IMAGE):
    inventory = base / name
    shutil.copytree(os.path.join(ROOT, "inventories", "prod"), inventory)
    (inventory / "group_vars" / "all" / "vault.yml").write_text(yaml.safe_dump(VAULT), encoding="utf-8")
    stack = inventory / "group_vars" / "all" / "stack.yml"
    stack.write_text(stack.read_text().replace(GOOD_IMAGE, image))
    return str(inventory)


def api_image(fake):
    deployment = fake.get("apps", "v1", "deployments", "shop", "api")
    return deployment["spec"]["template"]["spec"]["containers"][0]["image"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("fakeapi")
    fake = FakeKubeAPI().start()
    kubeconfig = base / "kubeconfig"
    kubeconfig.write_text(json.dumps(fake.kubeconfig()))

    def deploy(inventory, *args):
        return run(["ansible-playbook", "playbooks/deploy.yml", "-i", inventory, "-v",
                    "-e", "kubernetes_kubeconfig=%s" % kubeconfig, "-e", "kubernetes_wait_timeout=6"]
                   + list(args), timeout=600)

    good = make_inventory(base, "good")
    results = {"first": deploy(good)}
    results["applied_first"] = list(fake.applies)
    results["second"] = deploy(good)
    results["applied_second"] = fake.applies[len(results["applied_first"]):]
    before_broken = len(fake.applies)
    results["broken"] = deploy(make_inventory(base, "broken", "registry.example.com/shop/api-does-not-exist:9.9.9"))
    results["applied_broken"] = fake.applies[before_broken:]
    results["image_after_broken"] = api_image(fake)
    yield fake, results
    fake.stop()


def test_first_deploy_applies_everything_in_order(cluster):
    _fake, results = cluster
    assert results["first"].returncode == 0, results["first"].stdout[-5000:]
    kinds = [kind for kind, _name in results["applied_first"]]
    order = ["Namespace", "ServiceAccount", "Role", "RoleBinding", "Secret", "ConfigMap",
             "NetworkPolicy", "Service", "StatefulSet", "Deployment", "DaemonSet", "Job", "Ingress",
             "HorizontalPodAutoscaler", "PodDisruptionBudget"]
    assert sorted(set(kinds), key=order.index) == [k for k in order if k in kinds]
    first_index = [kinds.index(k) for k in order if k in kinds]
    assert first_index == sorted(first_index), kinds
    assert ("StatefulSet", "postgres") in results["applied_first"]
    # prod enables monitoring and logging: their objects are applied with the stack's
    for applied in (("StatefulSet", "prometheus"), ("Deployment", "alertmanager"),
                    ("Deployment", "grafana"), ("StatefulSet", "es"), ("Deployment", "logstash"),
                    ("Deployment", "kibana"), ("ConfigMap", "prometheus-config"),
                    ("Secret", "alertmanager-config"), ("Namespace", "shop-agents"),
                    ("DaemonSet", "node-exporter"), ("DaemonSet", "filebeat")):
        assert applied in results["applied_first"], applied
    jobs = [name for kind, name in results["applied_first"] if kind == "Job"]
    assert len(jobs) == 1 and jobs[0].startswith("elk-setup-"), jobs
    # the setup Job completed (the role waited for it) and is not re-run by the second deploy
    assert "Job" not in [kind for kind, _name in results["applied_second"]]


def test_second_deploy_changes_nothing(cluster):
    _fake, results = cluster
    assert results["second"].returncode == 0, results["second"].stdout[-5000:]
    assert recap(results["second"].stdout)["changed"] == 0, results["second"].stdout[-5000:]


def test_broken_rollout_is_rolled_back_with_a_clear_message(cluster):
    _fake, results = cluster
    broken = results["broken"]
    assert broken.returncode != 0
    text = " ".join(broken.stdout.split())
    assert "The rollout of api did not become ready within 6 s" in text, broken.stdout[-5000:]
    restored = re.search(r"Rolled back to the spec that ran before: ([a-z0-9, -]+)", text)
    assert restored, broken.stdout[-5000:]
    assert {"postgres", "redis", "api", "prometheus", "es"} <= set(restored.group(1).split(", "))
    assert results["image_after_broken"] == GOOD_IMAGE
    assert results["applied_broken"][-1] == ("Deployment", "api")
    assert recap(broken.stdout)["rescued"] == 1


def test_no_secret_in_any_output(cluster):
    _fake, results = cluster
    for key in ("first", "second", "broken"):
        out = results[key].stdout + results[key].stderr
        for value in VAULT.values():
            assert value not in out, key
