# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters exposing the stack model and its renderers to playbooks (thin wrappers)."""

from __future__ import annotations

import hashlib
import os

import yaml

from ansible.errors import AnsibleFilterError

from ansible_collections.opsdeck.stack.plugins.module_utils.compose import render as _compose
from ansible_collections.opsdeck.stack.plugins.module_utils.model import stack as _model
from ansible_collections.opsdeck.stack.plugins.module_utils.model import observability as _observability
from ansible_collections.opsdeck.stack.plugins.module_utils.common.data import plain as _plain


def stack_model(raw):
    """Validate and normalise a raw stack model (the stack_* variables, unprefixed)."""
    try:
        return _model.normalize(_plain(raw))
    except _model.ModelError as exc:
        raise AnsibleFilterError(exc.render()) from None


def stack_proxy_routes(model):
    """The nginx_proxy routes of a normalised model."""
    return _model.proxy_routes(_plain(model))


def stack_proxy_users(model, secrets):
    """The proxy's basic-auth users with their passwords looked up in the secrets."""
    secrets = _plain(secrets or {})
    return [{"name": user["name"], "password": str(secrets.get(user["password_secret"], ""))}
            for user in _plain(model)["proxy"]["basic_auth_users"]]


class _Dumper(yaml.SafeDumper):
    """Block-style YAML with multi-line strings kept readable."""


def _str_presenter(dumper, data):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def compose_project(model, secrets, proxy_files=None, monitoring_files=None, elk_files=None):
    """Render a Compose project: {"yaml": text, "files": [...], "hashes": {...}, "volume_init": [...]}."""
    try:
        result = _compose.render(_plain(model), _plain(secrets or {}), _plain(proxy_files or []),
                                 _plain(monitoring_files or []), _plain(elk_files or []))
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from None
    text = yaml.dump(result["project"], Dumper=_Dumper, sort_keys=False,
                     default_flow_style=False, width=120)
    header = "# Rendered by opsdeck.stack from the stack model: do not edit by hand.\n"
    return {"yaml": header + text, "files": result["files"], "hashes": result["hashes"],
            "volume_init": result["volume_init"]}


def stack_without(model, components):
    """The model without the platform components whose images are missing (Grafana, ELK)."""
    return _observability.without_components(_plain(model), _plain(components or []))


def secret_digest(value, stack, name):
    """The digest a secret shows in labels and diffs (never its value)."""
    return _compose.digest(str(value), "%s:%s" % (stack, name))


def secret_digests(secrets, stack):
    """{name: digest} for showing which secret changed without showing it."""
    return {name: _compose.digest(str(value), "%s:%s" % (stack, name))
            for name, value in sorted(_plain(secrets or {}).items())}


def tree_hash(path):
    """sha256 over every file (names and contents) under ``path`` on the controller."""
    path = str(path)
    if not os.path.isdir(path):
        raise AnsibleFilterError("tree_hash: %s is not a directory" % path)
    digest = hashlib.sha256()
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(n for n in names if not n.endswith(".pyc")):
            full = os.path.join(root, name)
            digest.update(os.path.relpath(full, path).encode("utf-8") + b"\0")
            with open(full, "rb") as handle:
                digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()[:24]


class FilterModule:
    """opsdeck.stack filters."""

    def filters(self):
        return {
            "stack_model": stack_model,
            "stack_proxy_routes": stack_proxy_routes,
            "stack_proxy_users": stack_proxy_users,
            "compose_project": compose_project,
            "stack_without": stack_without,
            "secret_digest": secret_digest,
            "secret_digests": secret_digests,
            "tree_hash": tree_hash,
        }
