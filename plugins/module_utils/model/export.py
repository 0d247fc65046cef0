# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The stack model's declaration (model/spec.py) as a JSON Schema and as a field reference.

Both files are generated, committed, and checked to be current by the unit tests:

- ``docs/stack-model.schema.json``: editors validate an inventory's group_vars with it
  (e.g. ``# yaml-language-server: $schema=<path>`` at the top of stack.yml);
- ``docs/stack-model.md``: every field with its type, default, description and example.

Regenerate them with ``make model-docs``.
"""

from __future__ import annotations

import json

from ansible_collections.opsdeck.stack.plugins.module_utils.model import spec
from ansible_collections.opsdeck.stack.plugins.module_utils.model.schema import Map

SCHEMA_ID = "https://opsdeck.io/schemas/stack-model.schema.json"
SCHEMA_FILE = "docs/stack-model.schema.json"
REFERENCE_FILE = "docs/stack-model.md"


def json_schema():
    """The JSON Schema (draft-07) of a group_vars file holding the stack model.

    Other variables may sit beside the ``stack_*`` ones (vault_* values, role variables),
    but an unknown ``stack_*`` variable is a mistake, as the validator says too.
    """
    root = spec.STACK.json_schema(prefix="stack_")
    known = sorted(root["properties"])
    root.pop("additionalProperties")
    root["propertyNames"] = {"anyOf": [{"enum": known}, {"not": {"pattern": "^stack_"}}]}
    out = {"$schema": "http://json-schema.org/draft-07/schema#", "$id": SCHEMA_ID,
           "title": "opsdeck.stack stack model",
           "description": "The stack_* variables of an inventory (group_vars/all/stack.yml). "
                          "Generated from plugins/module_utils/model/spec.py; see docs/stack-model.md."}
    out.update(root)
    return out


def _cell(value):
    if value is None or value == [] or value == {}:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, sort_keys=False)
    else:
        text = str(value)
    return "`%s`" % text.replace("|", "\\|") if text else ""


def _rows(field, path):
    return ["| `%s` | %s | %s | %s | %s |" % (
        row_path, kind.replace("|", "\\|"), _cell(default), (doc or "").replace("|", "\\|"), _cell(example))
        for row_path, kind, default, doc, example in field.rows(path)]


def reference():
    """The field reference in Markdown, one table per top-level variable."""
    lines = ["# The stack model: field reference", "",
             "Generated from `plugins/module_utils/model/spec.py` (`make model-docs`); the same "
             "declaration validates inventories and produces `docs/stack-model.schema.json`.",
             "`[]` in a path is an item of a list, named by its `name` (or `key`) in error "
             "messages: `stack_services[api].ports[admin]`. `<key>` is a key of your choosing.", ""]
    header = ["| field | type | default | description | example |", "|---|---|---|---|---|"]
    general = [(key, field) for key, field in spec.STACK.fields.items() if not field.rows("x")[1:]
               and not isinstance(field, Map)]
    lines.extend(["## General", ""] + header)
    for key, field in general:
        lines.extend(_rows(field, "stack_" + key))
    lines.append("")
    for key, field in spec.STACK.fields.items():
        if (key, field) in general:
            continue
        lines.extend(["## stack_%s" % key, ""])
        if field.doc:
            lines.extend([field.doc, ""])
        lines.extend(header + _rows(field, "stack_" + key) + [""])
    return "\n".join(lines)


def write(root):
    """Write both generated files under the collection's ``root``."""
    with open("%s/%s" % (root, SCHEMA_FILE), "w", encoding="utf-8") as handle:
        handle.write(json.dumps(json_schema(), indent=2, sort_keys=False) + "\n")
    with open("%s/%s" % (root, REFERENCE_FILE), "w", encoding="utf-8") as handle:
        handle.write(reference())
