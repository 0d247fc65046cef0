"""Policy scan: checkov over the Kubernetes manifests of every inventory (dev, staging, prod).

Each inventory's model is rendered for stack_target kubernetes (long non-placeholder secret
values stand in for the vault), with the monitoring and ELK components where enabled, written to a temporary directory, and scanned by ONE checkov
run (framework kubernetes, ~6 s). The test asserts zero failed checks, and that every
skipped check was skipped by an annotation the renderer wrote from its documented list
(_kubernetes.POLICY_SKIPS), carrying that list's reason.

checkov lives in its own venv (build/checkov-venv, made by scripts/setup.sh from
requirements-checkov.txt) because its pins conflict with the main tool chain.
"""

import json
import os
import shutil
import subprocess

import pytest
import yaml

from ansible_collections.opsdeck.stack.plugins.module_utils.components import elk as _elk
from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import manifests as _kubernetes
from ansible_collections.opsdeck.stack.plugins.module_utils.components import monitoring as _monitoring
from ansible_collections.opsdeck.stack.plugins.module_utils.model.stack import from_vars, normalize

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INVENTORIES = ("dev", "staging", "prod")


def checkov_bin():
    local = os.path.join(ROOT, "build", "checkov-venv", "bin", "checkov")
    found = local if os.access(local, os.X_OK) else shutil.which("checkov")
    assert found, "checkov is not installed: run scripts/setup.sh (it makes build/checkov-venv)"
    return found


def inventory_model(env):
    folder = os.path.join(ROOT, "inventories", env, "group_vars", "all")
    variables = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith((".yml", ".yaml")):
            with open(os.path.join(folder, name), encoding="utf-8") as handle:
                variables.update(yaml.safe_load(handle) or {})
    raw = from_vars(variables)
    raw["target"] = "kubernetes"
    # a URL where Alertmanager expects one (the model checks it), a stand-in value elsewhere
    secrets = {name: ("https://hooks.example.invalid/%s" % name) if name.endswith("_url") else
               "policy-scan-%s-value-8c1e" % name for name in raw.get("secrets") or {}}
    raw["secrets"] = secrets
    return normalize(raw), secrets


def obs_files(model, secrets):
    """The monitoring and elk roles' files, as the kubernetes role passes them."""
    return {"monitoring_files": _monitoring.render(model, secrets) if model["monitoring"]["enabled"] else None,
            "elk_files": _elk.render(model) if model["logging"]["enabled"] else None}


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    base = tmp_path_factory.mktemp("policy")
    counts, workload_files = {}, {}
    for env in INVENTORIES:
        model, secrets = inventory_model(env)
        manifests = _kubernetes.render(model, secrets, htpasswd="ops:$2y$05$policyscanpolicyscanpol",
                                       **obs_files(model, secrets))
        counts[env] = len(manifests)
        (base / env).mkdir()
        for index, item in enumerate(manifests):
            path = base / env / ("%02d-%s-%s.yaml" % (index, item["kind"].lower(), item["metadata"]["name"]))
            if item["kind"] in _kubernetes.WORKLOAD_KINDS:
                workload_files.setdefault(env, []).append(path.name)
            path.write_text(yaml.safe_dump(item, sort_keys=False), encoding="utf-8")
    result = subprocess.run([checkov_bin(), "-d", str(base), "--framework", "kubernetes", "-o", "json",
                             "--skip-download"],
                            capture_output=True, text=True, timeout=300, check=False,
                            env=dict(os.environ, BC_SKIP_MAPPING="TRUE"))
    assert result.stdout.strip(), result.stderr[-2000:]
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    print("checkov: %(passed)d passed, %(failed)d failed, %(skipped)d skipped" % report["summary"])
    return {"report": report, "counts": counts, "workload_files": workload_files}


def test_every_inventory_was_rendered_and_scanned(scan):
    summary = scan["report"]["summary"]
    assert summary["parsing_errors"] == 0
    # checkov counts each workload's containers as resources of their own, hence >=.
    assert summary["resource_count"] >= sum(scan["counts"].values())
    results = scan["report"]["results"]
    scanned = {c["file_path"] for key in ("passed_checks", "failed_checks", "skipped_checks")
               for c in results.get(key, [])}
    workloads = {"/%s/%s" % (env, name) for env, names in scan["workload_files"].items() for name in names}
    assert workloads and workloads <= scanned, sorted(workloads - scanned)
    assert summary["passed"] > 0


def test_no_failed_check(scan):
    failed = ["%s %s %s" % (c["check_id"], c["resource"], c["file_path"])
              for c in scan["report"]["results"]["failed_checks"]]
    assert failed == [] and scan["report"]["summary"]["failed"] == 0, "\n".join(failed)


def test_every_skip_is_a_documented_justified_annotation(scan):
    skipped = scan["report"]["results"]["skipped_checks"]
    for check in skipped:
        assert check["check_id"] in _kubernetes.POLICY_SKIPS, check["check_id"]
        assert check["check_result"]["suppress_comment"] == _kubernetes.POLICY_SKIPS[check["check_id"]], check


def test_skips_are_only_written_where_the_workload_falls_short():
    model, secrets = inventory_model("prod")
    deployments = {m["metadata"]["name"]: m for m in _kubernetes.render(model, secrets) if m["kind"] == "Deployment"}
    api = deployments["api"]["metadata"]["annotations"]
    # prod's api sets every request and limit: no resource skip, only the tag/pull-policy ones.
    assert sorted(value.split("=", 1)[0] for value in api.values()) == ["CKV_K8S_15", "CKV_K8S_43"]
    model["services"][0]["image"] = "registry.example.com/shop/api@sha256:" + "a" * 64
    item = [m for m in _kubernetes.render(model, secrets) if m["kind"] == "Deployment"][0]
    assert [v.split("=", 1)[0] for v in item["metadata"]["annotations"].values()] == ["CKV_K8S_15"]
