# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action of opsdeck.stack.stack_model: validate the stack model on the controller."""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.opsdeck.stack.plugins.module_utils.common.data import plain
from ansible_collections.opsdeck.stack.plugins.module_utils.model import stack as model_stack

PREFIX = "stack_"


class ActionModule(ActionBase):
    """Read the stack_* variables (or ``model``), validate them, set ``opsdeck_stack``."""

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("model", "fact"))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args
        fact = args.get("fact", "opsdeck_stack")
        raw = args.get("model")
        if raw is None:
            raw = {name[len(PREFIX):]: self._templar.template(value)
                   for name, value in task_vars.items()
                   if name.startswith(PREFIX) and value is not None}
        raw = plain(raw)
        if not isinstance(raw, dict):
            result.update(failed=True, msg="model must be a mapping of the stack_* variables "
                                           "without their prefix (got %s)" % type(raw).__name__)
            return result
        try:
            model = model_stack.normalize(raw)
        except model_stack.ModelError as exc:
            result.update(failed=True, msg=exc.render())
            return result
        result["warnings"] = list(result.get("warnings") or []) + model["warnings"]
        result.update(changed=False, ansible_facts={fact: model},
                      msg="stack %s (%s) on %s: %d service(s)" % (
                          model["name"], model["environment"], model["target"], len(model["services"])))
        return result
