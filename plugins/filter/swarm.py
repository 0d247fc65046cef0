# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters exposing the Swarm renderer to playbooks (thin wrappers)."""

from __future__ import annotations

import yaml

from ansible.errors import AnsibleFilterError

from ansible_collections.opsdeck.stack.plugins.module_utils.swarm import render as _swarm
from ansible_collections.opsdeck.stack.plugins.module_utils.common.data import plain as _plain


class _NoAliasDumper(yaml.SafeDumper):
    """Plain YAML: shared sub-dicts are written out, not as anchors and aliases."""

    def ignore_aliases(self, data):
        return True


def swarm_stack(model, secrets, proxy_files=None, data_label=_swarm.DATA_LABEL, encrypted=False,
                endpoint_mode="dnsrr", monitoring_files=None, elk_files=None, edge_label=None):
    """Render a Swarm stack: {"yaml", "files", "secrets", "configs"} (see module_utils/swarm/render)."""
    try:
        result = _swarm.render(_plain(model), _plain(secrets or {}), _plain(proxy_files or []),
                               data_label=str(data_label), encrypted=bool(encrypted),
                               endpoint_mode=str(endpoint_mode),
                               monitoring_files=_plain(monitoring_files or []),
                               elk_files=_plain(elk_files or []),
                               edge_label=str(edge_label) if edge_label else None)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from None
    text = yaml.dump(result["stack"], Dumper=_NoAliasDumper, sort_keys=False, default_flow_style=False, width=120)
    header = "# Rendered by opsdeck.stack from the stack model: do not edit by hand.\n"
    return {"yaml": header + text, "files": result["files"], "secrets": result["secrets"],
            "configs": result["configs"]}


class FilterModule:
    """opsdeck.stack Swarm filters."""

    def filters(self):
        return {"swarm_stack": swarm_stack}
