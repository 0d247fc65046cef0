# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters exposing the fidelity report (module_utils/model/fidelity.py) to playbooks."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.opsdeck.stack.plugins.module_utils.model import fidelity as _fidelity
from ansible_collections.opsdeck.stack.plugins.module_utils.common.data import plain as _plain


def stack_fidelity(model, target=None):
    """{"target", "native", "emulated", "dropped"}: how ``target`` renders the model."""
    try:
        return _fidelity.report(_plain(model), target)
    except ValueError as exc:
        raise AnsibleFilterError("stack_fidelity: %s" % exc) from None


def stack_fidelity_summary(report):
    """The report as short lines (counts, then every emulated and dropped field)."""
    return _fidelity.summary(_plain(report))


class FilterModule:
    """opsdeck.stack fidelity filters."""

    def filters(self):
        return {"stack_fidelity": stack_fidelity, "stack_fidelity_summary": stack_fidelity_summary}
