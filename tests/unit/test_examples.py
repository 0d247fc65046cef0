"""examples/: the five seed platforms, whole, from the stack model.

Every example inventory (examples/<platform>/<env>/) is normalised by the model and rendered
for compose, swarm and kubernetes by scripts/render-examples.py (what ``make examples`` runs:
the pure renderers, the same filters the roles call; secrets are strong stand-ins, never real
values); each rendered file must be valid for its tool: ``docker compose config`` for the
Compose files, ``docker stack config`` (or ``docker compose config`` without it) for the
Swarm files, kubernetes-validate's strict validation for 1.33 for the manifests (its library,
in this process, each schema file read once). No platform's names may leak into another platform's renderings or into the
generic inventories' ones, and examples/README.md has a requirement table for every example.
"""

import functools
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "scripts", "render-examples.py")
README = os.path.join(ROOT, "examples", "README.md")
K8S_VERSION = "1.33.0"


def _script():
    spec = importlib.util.spec_from_file_location("render_examples", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RENDER = _script()
EXAMPLES = RENDER.examples()
PLATFORMS = sorted({platform for platform, _env, _inv in EXAMPLES})


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """{(platform, env): {target: result}} of every example, and the generic inventories'."""
    out = tmp_path_factory.mktemp("examples")
    results = {(platform, env): RENDER.render_example(platform, env, inventory, str(out))
               for platform, env, inventory in EXAMPLES}
    generic = {}
    for env in ("dev", "staging", "prod"):  # each on its own target (staging's 2 nginx cannot run on compose)
        inventory = os.path.join(ROOT, "inventories", env)
        target = RENDER.load_vars(inventory)["stack_target"]
        generic[env] = {target: RENDER.render_target("generic", inventory, target,
                                                     os.path.join(str(out), "generic", env))}
    return {"dir": out, "examples": results, "generic": generic}


def _texts(results):
    texts = []
    for result in results.values():
        for path in result["files"]:
            with open(path, encoding="utf-8") as handle:
                texts.append((path, handle.read()))
    return texts


def test_the_five_seed_platforms_are_there():
    assert PLATFORMS == ["aiecommerce", "ensino", "ifinu", "veloflux", "vision"]
    assert ("veloflux", "dev") in {example[:2] for example in EXAMPLES}
    assert ("vision", "dev") in {example[:2] for example in EXAMPLES}


def test_every_example_renders_every_target(rendered):
    for (platform, env), results in rendered["examples"].items():
        assert sorted(results) == sorted(RENDER.TARGETS), (platform, env)
        for target, result in results.items():
            assert result["files"], (platform, env, target)
            assert result["model"]["target"] == target
            report = result["report"]
            assert report["target"] == target


def test_the_inventories_keep_their_own_target_and_environment():
    for platform, env, inventory in EXAMPLES:
        variables = RENDER.load_vars(inventory)
        assert variables["stack_environment"] == env, (platform, env)
        assert variables["stack_target"] in RENDER.TARGETS
        assert os.path.isfile(os.path.join(inventory, "hosts.yml")), inventory
        # only inventory files in an inventory directory (Ansible parses every file there)
        for root, dirs, names in os.walk(inventory):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in names:
                assert name.endswith((".yml", ".yaml")), os.path.join(root, name)


def test_prod_examples_keep_secrets_in_the_vault_and_publish_no_host_port():
    for platform, env, inventory in EXAMPLES:
        if env != "prod":
            continue
        variables = RENDER.load_vars(inventory)
        for name, value in variables["stack_secrets"].items():
            assert RENDER.VAULT_REF.match(value), (platform, name)
        for svc in variables["stack_services"]:
            assert not any(p.get("publish") for p in svc.get("ports") or []), (platform, svc["name"])


def _docker_config(path, swarm):
    folder = os.path.dirname(path)
    if swarm and subprocess.run(["docker", "stack", "config", "--help"], capture_output=True,
                                check=False).returncode == 0:
        cmd = ["docker", "stack", "config", "-c", os.path.basename(path)]
    else:
        cmd = ["docker", "compose", "-f", os.path.basename(path), "config", "-q"]
    return subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=120, check=False,
                          env=dict(os.environ, COMPOSE_PROJECT_NAME="examples-check"))


@pytest.mark.skipif(not shutil.which("docker"), reason="docker CLI missing")
def test_compose_and_swarm_files_are_valid(rendered):
    failures = []
    for (platform, env), results in rendered["examples"].items():
        for target in ("compose", "swarm"):
            check = _docker_config(results[target]["main"], target == "swarm")
            if check.returncode:
                failures.append("%s/%s/%s: %s" % (platform, env, target, check.stderr[-800:]))
    assert not failures, "\n".join(failures)


@pytest.fixture(scope="module")
def kube_validate():
    """kubernetes-validate's own validation, in this process: the CLI reads the schema files
    again for every manifest (most of its time); here each is read once."""
    utils = pytest.importorskip("kubernetes_validate.utils")
    original = utils.schema_contents
    utils.schema_contents = functools.lru_cache(maxsize=None)(original)
    yield utils.validate
    utils.schema_contents = original


@pytest.mark.parametrize("platform", PLATFORMS)
def test_manifests_validate_strictly(rendered, kube_validate, platform):
    failures, count, seen = [], 0, set()
    for (p, _env), results in rendered["examples"].items():
        if p != platform:
            continue
        for path in results["kubernetes"]["files"]:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
            digest = hashlib.sha256(text.encode()).hexdigest()
            if digest in seen:  # the same manifest in two environments is validated once
                continue
            seen.add(digest)
            for manifest in yaml.safe_load_all(text):
                if not manifest:
                    continue
                count += 1
                try:
                    kube_validate(manifest, K8S_VERSION, strict=True)
                except Exception as exc:  # noqa: BLE001 - every kind of refusal is reported with its file
                    failures.append("%s: %s" % (os.path.relpath(path), exc))
    assert count
    assert not failures, "\n".join(failures[:20])


def _own_names(platform):
    """The names only this platform uses: its stack names, namespaces, hosts, images, services."""
    names = set()
    for p, _env, inventory in EXAMPLES:
        if p != platform:
            continue
        variables = RENDER.load_vars(inventory)
        names.add(variables["stack_name"])
        names.add((variables.get("stack_kubernetes") or {}).get("namespace"))
        names.add((variables.get("stack_proxy") or {}).get("host"))
        for svc in variables["stack_services"]:
            names.add(svc["name"])
            names.add(svc["image"].rsplit(":", 1)[0])
    names.discard(None)
    return names


def test_no_platform_name_leaks_into_another_rendering(rendered):
    own = {platform: _own_names(platform) for platform in PLATFORMS}
    # a name two platforms both use (none today) is nobody's own
    shared = {n for a in PLATFORMS for b in PLATFORMS if a < b for n in own[a] & own[b]}
    leaks = []
    others = {platform: [] for platform in PLATFORMS}
    for (platform, _env), results in rendered["examples"].items():
        for other in PLATFORMS:
            if other != platform:
                others[other].extend(_texts(results))
    generic = [t for results in rendered["generic"].values() for t in _texts(results)]
    for platform in PLATFORMS:
        names = sorted(own[platform] - shared, key=len, reverse=True)
        pattern = re.compile(r"(?<![\w.-])(%s)(?![\w-])" % "|".join(re.escape(n) for n in names))
        for path, text in others[platform] + generic:
            match = pattern.search(text)
            if match:
                leaks.append("%s's %r in %s" % (platform, match.group(1), path))
    assert not leaks, "\n".join(leaks)


def test_the_readme_has_a_table_for_every_example():
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    for platform, env, _inv in EXAMPLES:
        assert "examples/%s/%s" % (platform, env) in text or "`%s/%s`" % (platform, env) in text, (platform, env)
    for platform in PLATFORMS:
        section = re.search(r"^## .*\(`%s`\)\n(.*?)(?=^## |\Z)" % platform, text, re.S | re.M)
        assert section, platform
        assert "| Requirement of the seed | Model field | compose | swarm | kubernetes |" in section.group(1)
    for word in ("not yet (data-layer issue)", "pending: stack_jobs", "not expressible yet"):
        assert word in text
