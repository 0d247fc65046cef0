# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action of opsdeck.stack.stack_model: validate the stack model on the controller."""

from __future__ import annotations

import os

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase

try:  # ansible-core >= 2.19: text read from a file is templated only once marked trusted
    from ansible.template import trust_as_template
except ImportError:  # pragma: no cover - older ansible-core templates any string
    def trust_as_template(text):
        return text

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
        # Files the model names (service files, bind sources, dashboards) are beside the inventory.
        base_dir = task_vars.get("inventory_dir") or self._loader.get_basedir() or os.getcwd()
        raw, errors = self._read_sources(raw, base_dir)
        try:
            model = model_stack.normalize(raw, base_dir=base_dir)
        except model_stack.ModelError as exc:
            errors += exc.errors
        if errors:
            result.update(failed=True, msg=model_stack.ModelError(errors).render())
            return result
        result["warnings"] = list(result.get("warnings") or []) + model["warnings"]
        result.update(changed=False, ansible_facts={fact: model},
                      msg="stack %s (%s) on %s: %d service(s)" % (
                          model["name"], model["environment"], model["target"], len(model["services"])))
        return result

    def _read_sources(self, raw, base_dir):
        """Render each service file given as a ``source`` with ``template: true``: read it from
        beside the inventory, template it with the inventory's variables, and hand the model
        its text as ``content`` (plain sources are read by the model itself). Returns
        (raw, errors)."""
        errors = []
        services = raw.get("services")
        if not isinstance(services, list):
            return raw, errors
        for svc in services:
            files = svc.get("files") if isinstance(svc, dict) else None
            if not isinstance(files, list):
                continue
            for index, item in enumerate(files):
                if not isinstance(item, dict) or not isinstance(item.get("source"), str) or \
                        str(item.get("template")).lower() not in ("true", "yes"):
                    continue
                where = "stack_services[%s].files[%s].source" % (svc.get("name"), item.get("path", index))
                try:
                    with open(os.path.join(base_dir, item["source"]), encoding="utf-8") as handle:
                        text = self._templar.template(trust_as_template(handle.read()))
                except (OSError, UnicodeDecodeError) as exc:
                    errors.append("%s: %r cannot be read from %s (%s)" % (
                        where, item["source"], base_dir, getattr(exc, "strerror", None) or exc))
                    text = ""
                files[index] = dict(item, content=text, source=None, template=False)
        return raw, errors
