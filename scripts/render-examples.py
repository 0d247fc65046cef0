# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render every example inventory (examples/<platform>/<env>/) for every target.

For each example it loads the stack_* variables of group_vars/all (as Ansible would, without
hosts), resolves the secrets ``{{ vault_x }}`` references from the vault file beside them
(where the vault holds a placeholder, as prod's and staging's do, or a value prod would
refuse, a strong stand-in is generated: no real secret is ever read or written), normalises the model with
the collection's model package and renders it with the pure renderers (the same filters the
roles call) for compose, swarm and kubernetes into
build/examples/<platform>/<env>/<target>/, then prints each fidelity report.

The nginx configuration is not rendered here: the nginx_proxy role templates it at deploy
time; the Compose and Swarm files reference it as the deploy writes it.

Usage: .venv/bin/python scripts/render-examples.py [--out DIR] [--quiet] [platform[/env] ...]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
TARGETS = ("compose", "swarm", "kubernetes")
PREFIX = "stack_"
VAULT_REF = re.compile(r"^\{\{\s*(vault_[A-Za-z0-9_]+)\s*\}\}$")
# a bcrypt-shaped stand-in for the proxy's htpasswd (the nginx_proxy role computes the real one)
HTPASSWD_STANDIN = "ops:$2y$05$examplesstandinexamplesstandinexamplesstandinex"

try:
    from ansible_collections.opsdeck.stack.plugins.module_utils.model import stack as _model  # noqa: E402
except ImportError:  # run without the Makefile's PYTHONPATH
    sys.path.insert(0, os.path.join(ROOT, "build", "collections"))
    from ansible_collections.opsdeck.stack.plugins.module_utils.model import stack as _model  # noqa: E402
from ansible_collections.opsdeck.stack.plugins.module_utils.model import secrets as _secrets  # noqa: E402
from ansible_collections.opsdeck.stack.plugins.module_utils.model import fidelity as _fidelity  # noqa: E402
from ansible_collections.opsdeck.stack.plugins.filter import stack as _stack_filters  # noqa: E402
from ansible_collections.opsdeck.stack.plugins.filter import swarm as _swarm_filters  # noqa: E402
from ansible_collections.opsdeck.stack.plugins.filter import kubernetes as _kubernetes_filters  # noqa: E402
from ansible_collections.opsdeck.stack.plugins.filter import observability as _obs_filters  # noqa: E402


class _Loader(yaml.SafeLoader):
    """YAML as an inventory writes it: !unsafe marks text Ansible must not template."""


_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def examples(selection=None):
    """[(platform, env, inventory dir)] of every example inventory (a dir with group_vars/all)."""
    out = []
    for platform in sorted(os.listdir(EXAMPLES)):
        pdir = os.path.join(EXAMPLES, platform)
        if not os.path.isdir(pdir) or platform.startswith("."):
            continue
        for env in sorted(os.listdir(pdir)):
            inv = os.path.join(pdir, env)
            if os.path.isdir(os.path.join(inv, "group_vars", "all")):
                if not selection or platform in selection or "%s/%s" % (platform, env) in selection:
                    out.append((platform, env, inv))
    return out


def load_vars(inventory):
    """The variables of group_vars/all (every .yml file, in name order)."""
    folder = os.path.join(inventory, "group_vars", "all")
    variables = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith((".yml", ".yaml")):
            with open(os.path.join(folder, name), encoding="utf-8") as handle:
                variables.update(yaml.load(handle, Loader=_Loader) or {})  # noqa: S506 - SafeLoader subclass
    return variables


def standin(platform, name):
    """A strong, clearly fake value for a secret (an https URL for webhook URLs)."""
    tag = hashlib.sha256(("opsdeck-examples:%s:%s" % (platform, name)).encode()).hexdigest()[:16]
    if name.endswith(("_url", "_webhook")):
        return "https://hooks.example.invalid/%s/%s/%s" % (platform, name, tag)
    return "standin-%s-%s-%s" % (platform, name.replace("_", "-"), tag)


def raw_model(platform, inventory):
    """(raw model, secrets): the stack_* variables without the prefix, secrets resolved."""
    variables = load_vars(inventory)
    raw = {k[len(PREFIX):]: v for k, v in variables.items() if k.startswith(PREFIX) and v is not None}
    secrets = {}
    for name, value in (raw.get("secrets") or {}).items():
        match = VAULT_REF.match(str(value))
        if match:
            value = variables.get(match.group(1))
        if value is None or "{{" in str(value) or _secrets.weakness(value) or (
                name.endswith(("_url", "_webhook")) and not str(value).startswith(("https://", "http://"))):
            value = standin(platform, name)
        secrets[name] = str(value)
    raw["secrets"] = secrets
    return raw, secrets


def model_for(platform, inventory, target):
    raw, secrets = raw_model(platform, inventory)
    raw["target"] = target
    return _model.normalize(raw, base_dir=inventory), secrets


def _write(base, rel, content, mode=0o644):
    path = os.path.join(base, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(content)
    os.chmod(path, mode)
    return path


def _obs(model, secrets):
    return {"monitoring_files": _obs_filters.monitoring_files(model, secrets) if model["monitoring"]["enabled"]
            else [],
            "elk_files": _obs_filters.elk_files(model) if model["logging"]["enabled"] else []}


def _aux_files(base, files):
    """The project's other files (configs; secret files get their stand-in, mode 0600): their paths."""
    written = []
    for item in files or []:
        rel = item["path"].lstrip("/")
        secret = bool(item.get("secret"))
        written.append(_write(base, rel, str(item.get("content", "")), 0o600 if secret else 0o644))
    return written


def render_target(platform, inventory, target, out_dir):
    """Render one target; returns {"model", "files": [paths], "main": path or None, "report"}."""
    model, secrets = model_for(platform, inventory, target)
    base = os.path.join(out_dir, target)
    written = []
    obs = _obs(model, secrets)
    if target == "compose":
        result = _stack_filters.compose_project(model, secrets, [], obs["monitoring_files"], obs["elk_files"])
        main = _write(base, "docker-compose.yml", result["yaml"])
        written = [main] + _aux_files(base, result["files"])
    elif target == "swarm":
        result = _swarm_filters.swarm_stack(model, secrets, [], monitoring_files=obs["monitoring_files"],
                                            elk_files=obs["elk_files"])
        main = _write(base, "stack.yml", result["yaml"])
        written = [main] + _aux_files(base, result["files"])
    else:
        htpasswd = HTPASSWD_STANDIN if model["proxy"]["basic_auth_users"] else None
        manifests = _kubernetes_filters.kubernetes_manifests(
            model, secrets, htpasswd=htpasswd,
            monitoring_files=obs["monitoring_files"] if model["monitoring"]["enabled"] else None,
            elk_files=obs["elk_files"] if model["logging"]["enabled"] else None)
        main = None
        for item in _kubernetes_filters.kubernetes_files(manifests, write_secrets=False):
            written.append(_write(base, item["path"], item["content"]))
    report = _fidelity.report(model, target)
    return {"model": model, "files": written, "main": main, "report": report}


def render_example(platform, env, inventory, out_root):
    out_dir = os.path.join(out_root, platform, env)
    return {target: render_target(platform, inventory, target, out_dir) for target in TARGETS}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "build", "examples"))
    parser.add_argument("--quiet", action="store_true", help="no fidelity reports, only the file counts")
    parser.add_argument("selection", nargs="*", help="platform or platform/env (default: all)")
    args = parser.parse_args(argv)
    failed = 0
    for platform, env, inventory in examples(args.selection):
        try:
            results = render_example(platform, env, inventory, args.out)
        except _model.ModelError as exc:
            failed += 1
            print("== %s/%s: the model refuses it:\n%s" % (platform, env, exc.render()))
            continue
        for target, result in results.items():
            print("== %s/%s -> %s: %d file(s) in %s" % (
                platform, env, target, len(result["files"]),
                os.path.relpath(os.path.join(args.out, platform, env, target), ROOT)))
            if not args.quiet:
                for line in _fidelity.summary(result["report"]):
                    print("   " + line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
