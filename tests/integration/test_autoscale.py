"""playbooks/autoscale.yml: HPAs for the prod model written as GitOps manifests, and the honest
answer on Compose and Swarm.

No Kubernetes API server runs here, so the kubernetes target is exercised with autoscale_dest:
the manifests of the shipped prod inventory are written to a temporary directory, validated
with `kubernetes-validate --strict -k 1.33.0` and compared with the model; a second run
changes nothing. The prod inventory refuses its shipped placeholder secrets, so long
non-placeholder values are given with -e (the model is validated the same way as deploy.yml).
"""

import os
import subprocess

import pytest
import yaml

from helpers import BIN, ROOT, recap, run

PROD_VAULT = {
    "vault_postgres_password": "autoscale-test-postgres-4471",
    "vault_redis_password": "autoscale-test-redis-9920",
    "vault_admin_token": "autoscale-test-admin-token-1183",
    "vault_tls_cert": "autoscale-test-not-a-real-cert-5532",
    "vault_tls_key": "autoscale-test-not-a-real-key-7741",
    "vault_grafana_admin_password": "autoscale-test-grafana-2210",
    "vault_slack_webhook_url": "https://hooks.example.invalid/autoscale-3391",
    "vault_elastic_password": "autoscale-test-elastic-6620",
    "vault_kibana_system_password": "autoscale-test-kibana-8813",
    "vault_logstash_writer_password": "autoscale-test-logstash-writer-password-stand-in-0001",
    "vault_elastic_transport_ca_crt": "autoscale-test-elastic-transport-ca-crt-stand-in-0001",
    "vault_elastic_transport_crt": "autoscale-test-elastic-transport-crt-stand-in-0001",
    "vault_elastic_transport_key": "autoscale-test-elastic-transport-key-stand-in-0001",
    "vault_pagerduty_routing_key": "autoscale-test-pagerduty-4405",
}


def autoscale(inventory, *args):
    return run(["ansible-playbook", "playbooks/autoscale.yml", "-i", inventory] + list(args), timeout=300)


def prod_model():
    with open(os.path.join(ROOT, "inventories", "prod", "group_vars", "all", "stack.yml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def gitops(tmp_path_factory):
    dest = tmp_path_factory.mktemp("gitops")
    extra = []
    for name, value in PROD_VAULT.items():
        extra += ["-e", "%s=%s" % (name, value)]
    first = autoscale("inventories/prod", "-e", "autoscale_dest=%s" % dest, *extra)
    second = autoscale("inventories/prod", "-e", "autoscale_dest=%s" % dest, *extra)
    return {"dest": dest, "first": first, "second": second}


def test_prod_manifests_validate_and_match_the_model(gitops):
    assert gitops["first"].returncode == 0, gitops["first"].stdout[-3000:]
    model = prod_model()
    wanted = {s["name"]: s for s in model["stack_services"] if s.get("autoscaling")}
    assert wanted, "the prod model has a service with autoscaling"
    namespace_dir = gitops["dest"] / model["stack_name"]
    files = sorted(os.listdir(namespace_dir))
    assert files == sorted("%s-hpa.yaml" % name for name in wanted)
    for name, service in wanted.items():
        path = namespace_dir / ("%s-hpa.yaml" % name)
        check = subprocess.run([os.path.join(BIN, "kubernetes-validate"), "--strict", "-k", "1.33.0", str(path)],
                               capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "passed" in check.stdout
        hpa = yaml.safe_load(path.read_text())
        assert (hpa["apiVersion"], hpa["kind"]) == ("autoscaling/v2", "HorizontalPodAutoscaler")
        assert hpa["metadata"]["name"] == name and hpa["metadata"]["namespace"] == model["stack_name"]
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        scaling = service["autoscaling"]
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (scaling["min"], scaling["max"])
        targets = {m["resource"]["name"]: m["resource"]["target"] for m in hpa["spec"]["metrics"]}
        assert targets == {metric: {"type": "Utilization", "averageUtilization": scaling[metric]}
                           for metric in ("cpu", "memory") if scaling.get(metric)}


def test_second_run_changes_nothing(gitops):
    assert gitops["second"].returncode == 0, gitops["second"].stdout[-3000:]
    assert recap(gitops["second"].stdout)["changed"] == 0, gitops["second"].stdout[-3000:]


def test_no_prod_secret_in_the_output(gitops):
    for result in (gitops["first"], gitops["second"]):
        for value in PROD_VAULT.values():
            assert value not in result.stdout + result.stderr


def test_prod_refuses_its_placeholders_before_anything_is_written(tmp_path):
    result = autoscale("inventories/prod", "-e", "autoscale_dest=%s" % tmp_path)
    assert result.returncode != 0
    assert "stack_secrets.postgres_password: is a placeholder" in result.stdout
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("inventory, engine", [("inventories/dev", "Docker Compose"),
                                               ("inventories/staging", "Docker Swarm")])
def test_compose_and_swarm_say_autoscaling_is_not_native(inventory, engine):
    # staging monitors with Slack: the model wants a URL in the webhook's secret, not its placeholder
    result = autoscale(inventory, "-e", "vault_slack_webhook_url=%s" % PROD_VAULT["vault_slack_webhook_url"])
    assert result.returncode == 0, result.stdout[-3000:]
    text = " ".join(result.stdout.split())
    assert "is not native on" in text and "%s has no autoscaler" % engine in text
    assert "replica(s) run (stack_services[].replicas)" in text
    assert recap(result.stdout)["changed"] == 0
