# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""opsdeck.stack.k8s_capabilities through ansible-playbook (AnsiballZ, as a user runs it).

Against the in-process fake API server of the apply-mode tests (it serves 1.33's group
versions), and against the real cluster when KUBECONFIG is set (the local one of
scripts/k8s-local.sh serves 1.20: autoscaling/v2beta2 and no autoscaling/v2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from fake_kube_api import FakeKubeAPI  # noqa: E402  pylint: disable=wrong-import-position

BIN = os.path.dirname(sys.executable)
COLLECTIONS = os.path.join(ROOT, "build", "collections")


def playbook(tmp_path, module_args, **env):
    book = tmp_path / "caps.yml"
    book.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"opsdeck.stack.k8s_capabilities": module_args, "register": "caps", "check_mode": True},
        {"ansible.builtin.copy": {"content": "{{ caps | to_json }}", "dest": str(tmp_path / "caps.json"),
                                  "mode": "0600"}},
    ]}]))
    proc = subprocess.run(
        [os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local",
         "-e", "ansible_python_interpreter=%s" % sys.executable, str(book)],
        capture_output=True, text=True, timeout=300, check=False,
        env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, PYTHONPATH=COLLECTIONS,
                 ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1", **env))
    result = json.loads((tmp_path / "caps.json").read_text()) if (tmp_path / "caps.json").exists() else None
    return proc, result


def test_reads_version_group_versions_and_kinds_in_check_mode(tmp_path):
    api = FakeKubeAPI().start()
    try:
        kubeconfig = tmp_path / "kubeconfig.json"
        kubeconfig.write_text(json.dumps(api.kubeconfig()))
        proc, result = playbook(tmp_path, {"kubeconfig": str(kubeconfig)})
    finally:
        api.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    caps = result["capabilities"]
    assert not result["changed"] and caps["version"] == "1.33.0-fake"
    assert {"v1", "v1/Secret", "apps/v1/Deployment", "autoscaling/v2", "autoscaling/v2/HorizontalPodAutoscaler",
            "policy/v1/PodDisruptionBudget"} <= set(caps["api_versions"])
    assert not [entry for entry in caps["api_versions"] if entry.endswith("/status")]


def test_an_unreachable_server_is_named(tmp_path):
    proc, _result = playbook(tmp_path, {"host": "http://127.0.0.1:9", "api_key": "not-shown-4e1d"})
    assert proc.returncode != 0
    out = " ".join(proc.stdout.split())
    assert "reading the API server's version and API groups failed: cannot reach the Kubernetes API at " \
           "http://127.0.0.1:9" in out
    assert "not-shown-4e1d" not in proc.stdout + proc.stderr


@pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="not run: KUBECONFIG not set")
def test_the_live_cluster(tmp_path):
    proc, result = playbook(tmp_path, {})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    caps = result["capabilities"]
    minor = int(caps["version"].split(".")[1])
    assert "autoscaling/v2beta2/HorizontalPodAutoscaler" in caps["api_versions"] or minor >= 26
    assert ("autoscaling/v2/HorizontalPodAutoscaler" in caps["api_versions"]) == (minor >= 23)
    assert ("batch/v1/CronJob" in caps["api_versions"]) == (minor >= 21)


def test_ansible_doc_renders_and_matches_the_argument_spec():
    from ansible_collections.opsdeck.stack.plugins.module_utils.clients.kube import K8S_AUTH_ARG_SPEC

    proc = subprocess.run([os.path.join(BIN, "ansible-doc"), "--json", "opsdeck.stack.k8s_capabilities"],
                          capture_output=True, text=True, timeout=120, check=False,
                          env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS,
                                   ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg")))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)["opsdeck.stack.k8s_capabilities"]
    assert set(doc["doc"]["options"]) == set(K8S_AUTH_ARG_SPEC)
    for name, option in K8S_AUTH_ARG_SPEC.items():
        assert doc["doc"]["options"][name].get("type", "str") == option.get("type", "str"), name
        assert sorted(doc["doc"]["options"][name].get("aliases", [])) == sorted(option.get("aliases", [])), name
    assert doc["doc"]["attributes"]["check_mode"]["support"] == "full"
    assert "capabilities" in doc["return"] and doc["examples"]
