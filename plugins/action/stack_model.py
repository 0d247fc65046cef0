# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action of opsdeck.stack.stack_model: validate the stack model on the controller."""

from __future__ import annotations

import os

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase

from ansible_collections.opsdeck.stack.plugins.module_utils.common.data import plain
from ansible_collections.opsdeck.stack.plugins.module_utils.model import stack as model_stack

PREFIX = "stack_"
UNSAFE_HINT = (" (a Prometheus or Alertmanager template such as {{ $labels.job }} or {{ $value }} in "
               "the inventory must be marked !unsafe, or Ansible templates it itself: "
               'summary: !unsafe "{{ $labels.job }} is down")')


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
            raw = {}
            for name, value in task_vars.items():
                if not name.startswith(PREFIX) or value is None:
                    continue
                try:
                    raw[name[len(PREFIX):]] = self._templar.template(value)
                except AnsibleError as exc:
                    result.update(failed=True, msg="%s: %s%s" % (name, exc, UNSAFE_HINT if "$" in str(exc) else ""))
                    return result
        raw = plain(raw)
        if not isinstance(raw, dict):
            result.update(failed=True, msg="model must be a mapping of the stack_* variables "
                                           "without their prefix (got %s)" % type(raw).__name__)
            return result
        base = task_vars.get("inventory_dir") or self._loader.get_basedir()
        try:
            model = model_stack.normalize(raw, read_model_files(raw, base))
        except model_stack.ModelError as exc:
            result.update(failed=True, msg=exc.render())
            return result
        result["warnings"] = list(result.get("warnings") or []) + model["warnings"]
        result.update(changed=False, ansible_facts={fact: model},
                      msg="stack %s (%s) on %s: %d service(s)" % (
                          model["name"], model["environment"], model["target"], len(model["services"])))
        return result


def read_model_files(raw, base):
    """The files the model names beside the inventory (dashboard JSON), read on the controller.

    Returns {path as written: {"path": resolved, "content": text} or {"error": message}}; the
    model (model/observability.check) parses them and reports problems under the field's path.
    """
    out = {}
    monitoring = raw.get("monitoring") if isinstance(raw, dict) else None
    grafana = monitoring.get("grafana") if isinstance(monitoring, dict) else None
    boards = grafana.get("dashboards") if isinstance(grafana, dict) else None
    for board in boards if isinstance(boards, list) else []:
        name = board.get("file") if isinstance(board, dict) else None
        if not isinstance(name, str) or not name or name in out:
            continue
        path = os.path.normpath(os.path.join(base, os.path.expanduser(name)))
        try:
            with open(path, encoding="utf-8") as handle:
                out[name] = {"path": path, "content": handle.read()}
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            out[name] = {"error": "cannot read %s (relative to the inventory directory %s): %s" % (
                path, base, reason)}
    return out
