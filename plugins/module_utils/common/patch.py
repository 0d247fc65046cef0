# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Patches the escape hatches apply to what a renderer made (``stack_overrides``).

- ``merge(base, patch)``: a merge in the manner of Kubernetes' strategic merge patch, for
  what the model cannot say: mappings merge key by key, ``None`` removes a key, a list whose
  items are all mappings with a ``name`` merges item by item on that name (containers, env,
  ports, volumes, volumeMounts), any other list replaces the old one. ``$patch`` directives
  are not supported.
- ``json_patch(doc, operations)``: RFC 6902 add, remove, replace and test, with RFC 6901
  paths; raises PatchError naming the operation that cannot apply.

Both return new data and leave their arguments as they were.
"""

from __future__ import annotations

import copy


class PatchError(ValueError):
    """A patch that cannot apply; the message says which operation and why."""


def _named(items):
    return isinstance(items, list) and items and all(isinstance(i, dict) and "name" in i for i in items)


def merge(base, patch):
    """``base`` with ``patch`` merged in (see the module docstring)."""
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        elif _named(value) and _named(out.get(key)):
            items = out[key]
            index = {item["name"]: i for i, item in enumerate(items)}
            for item in value:
                if item["name"] in index:
                    items[index[item["name"]]] = merge(items[index[item["name"]]], item)
                else:
                    items.append(copy.deepcopy(item))
        else:
            out[key] = copy.deepcopy(value)
    return out


def _tokens(pointer):
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError("path %r must start with /" % pointer)
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _parent(doc, tokens, pointer):
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise PatchError("path %s does not exist (no %r)" % (pointer, token))
    return node


def json_patch(doc, operations):
    """``doc`` with the RFC 6902 ``operations`` applied in order."""
    out = copy.deepcopy(doc)
    for number, operation in enumerate(operations):
        op, pointer = operation.get("op"), operation.get("path", "")
        where = "operation %d (%s %s)" % (number + 1, op, pointer)
        tokens = _tokens(pointer)
        if not tokens:
            raise PatchError("%s: the whole document cannot be patched" % where)
        try:
            parent = _parent(out, tokens, pointer)
        except PatchError as exc:
            raise PatchError("%s: %s" % (where, exc)) from None
        last = tokens[-1]
        if isinstance(parent, list):
            if last == "-" and op == "add":
                parent.append(copy.deepcopy(operation.get("value")))
                continue
            if not last.isdigit() or int(last) > len(parent) or (op != "add" and int(last) >= len(parent)):
                raise PatchError("%s: no list index %r" % (where, last))
            index = int(last)
            if op == "add":
                parent.insert(index, copy.deepcopy(operation.get("value")))
            elif op == "remove":
                parent.pop(index)
            elif op == "replace":
                parent[index] = copy.deepcopy(operation.get("value"))
            elif parent[index] != operation.get("value"):
                raise PatchError("%s: test failed" % where)
        elif isinstance(parent, dict):
            if op in ("remove", "replace", "test") and last not in parent:
                raise PatchError("%s: no key %r" % (where, last))
            if op in ("add", "replace"):
                parent[last] = copy.deepcopy(operation.get("value"))
            elif op == "remove":
                parent.pop(last)
            elif parent[last] != operation.get("value"):
                raise PatchError("%s: test failed" % where)
        else:
            raise PatchError("%s: %r is not a mapping or a list" % (where, tokens[-2] if len(tokens) > 1 else ""))
    return out
