# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""opsdeck.stack.kubernetes in apply mode against a real Kubernetes cluster.

Runs only when KUBECONFIG points at a cluster; otherwise every test is reported as skipped
with the reason "not run: KUBECONFIG not set" (never as passed). scripts/test.sh brings up
the local cluster of scripts/k8s-local.sh (Kubernetes 1.20 built from Debian's source, the
kubelet on the local Docker engine) and sets KUBECONFIG, so `make test` runs them.

A small stack (one app on a pause image, no data stores, no proxy) is deployed into a
throw-away namespace through playbooks/deploy.yml (server-side apply, waits), re-deployed
(changed=0), then deployed with an image that cannot be pulled: the play must fail naming
the Deployment, and the Deployment must be back on the previous image. The namespace is
deleted at the end.

Set OPSDECK_TEST_PAUSE_IMAGE to a pause image the cluster can pull or already has (default
registry.k8s.io/pause:3.9; `scripts/k8s-local.sh env` names the one it built locally,
opsdeck-k8s/pause:3.4). The cluster needs no ingress controller.
"""

from __future__ import annotations

import os
import uuid

import pytest
import yaml

from helpers import recap, run

pytestmark = pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="not run: KUBECONFIG not set")

IMAGE = os.environ.get("OPSDECK_TEST_PAUSE_IMAGE", "registry.k8s.io/pause:3.9")
BROKEN = "registry.invalid/opsdeck/does-not-exist:0.0.0"


def inventory(base, stack, image):
    folder = base / ("inv-%s" % uuid.uuid4().hex[:6])
    (folder / "group_vars" / "all").mkdir(parents=True)
    (folder / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"control": {
        "ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}}}))
    (folder / "group_vars" / "all" / "stack.yml").write_text(yaml.safe_dump({
        "stack_name": stack,
        "stack_environment": "staging",
        "stack_target": "kubernetes",
        "stack_services": [{
            "name": "app", "image": image, "replicas": 1, "user": "65532:65532",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                          "limits": {"cpu": "100m", "memory": "32Mi"}},
        }],
        "stack_postgres": {"enabled": False},
        "stack_redis": {"enabled": False},
        "stack_proxy": {"enabled": False},
        "stack_secrets": {"app_token": "live-test-token-%s" % uuid.uuid4().hex},
    }))
    return str(folder)


def deploy(inv, *args):
    return run(["ansible-playbook", "playbooks/deploy.yml", "-i", inv, "-v",
                "-e", "kubernetes_mode=apply", "-e", "kubernetes_wait_timeout=90"] + list(args), timeout=900)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from ansible_collections.opsdeck.stack.plugins.module_utils.clients.kube import client_from_params

    client = client_from_params({})
    stack = "opsdeck-live-%s" % uuid.uuid4().hex[:6]
    base = tmp_path_factory.mktemp("live")
    try:
        yield {"client": client, "stack": stack, "base": base}
    finally:
        try:
            client.request("DELETE", "/api/v1/namespaces/%s" % stack)
        except Exception:  # pylint: disable=broad-except  # best-effort cleanup
            pass


def image_of(cluster):
    deployment = cluster["client"].request(
        "GET", "/apis/apps/v1/namespaces/%s/deployments/app" % cluster["stack"])
    return deployment["spec"]["template"]["spec"]["containers"][0]["image"]


def test_deploy_then_nothing_changes_then_a_broken_image_is_rolled_back(cluster):
    good = inventory(cluster["base"], cluster["stack"], IMAGE)
    first = deploy(good)
    assert first.returncode == 0, first.stdout[-4000:]
    assert image_of(cluster) == IMAGE

    second = deploy(good)
    assert second.returncode == 0, second.stdout[-4000:]
    assert recap(second.stdout)["changed"] == 0, second.stdout[-4000:]

    broken = deploy(inventory(cluster["base"], cluster["stack"], BROKEN))
    assert broken.returncode != 0
    text = " ".join(broken.stdout.split())
    assert "The rollout of app did not become ready" in text, broken.stdout[-4000:]
    assert "Rolled back to the spec that ran before: app" in text, broken.stdout[-4000:]
    assert image_of(cluster) == IMAGE
    for result in (first, second, broken):
        assert "live-test-token-" not in result.stdout
