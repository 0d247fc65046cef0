# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small declarative schema: one declaration drives validation, JSON Schema and docs.

The stack model (``model/spec.py``) is declared with these field types. The same
declaration

- validates and normalises a raw model (``Field.load``): every problem is recorded with
  the field's path, items of lists named by their ``name`` (``stack_services[api].ports[admin]``),
  the bad value and what is allowed; defaults are filled in;
- exports a JSON Schema (``Field.json_schema``) that editors use to check inventories;
- lists every field with its type, default, description and example (``Field.rows``)
  for the generated reference.

Cross-field rules (a secret that must exist, a route's port that must be declared) are not
schema: ``model/stack.py`` checks them after loading, with the same paths.
"""

from __future__ import annotations

import copy
import re

# Jinja that Ansible has not templated yet (e.g. a value read from a file of group_vars by
# an editor): the JSON Schema lets it through where a number or boolean is expected.
JINJA = {"type": "string", "pattern": r"\{\{.*\}\}"}
BOOL_WORDS = {"true": True, "yes": True, "false": False, "no": False}


def short(value):
    """A value as shown in a message, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def join(path, key):
    """The path of ``key`` under ``path``; top-level fields are the ``stack_*`` variables."""
    return "stack_%s" % key if path == "" else "%s.%s" % (path, key)


def item_label(raw, key, index):
    """How an item of a list is named in paths: its ``key`` field, else its position."""
    name = raw.get(key) if isinstance(raw, dict) else None
    if isinstance(name, (str, int)) and not isinstance(name, bool) and str(name):
        return name
    return index


class Context:
    """Collects the problems found while loading a model, and its warnings."""

    def __init__(self):
        self.errors = []
        self.warnings = []

    def err(self, path, message):
        self.errors.append("%s: %s" % (path, message))

    def warn(self, path, message):
        self.warnings.append("%s: %s" % (path, message))


class Field:
    """Base of every field type.

    ``doc`` describes the field for the reference; ``default`` is what an absent (or null)
    value becomes; ``required`` makes absence an error; ``example`` is shown in the docs;
    ``check(value, path, ctx)`` adds a rule beyond the type (it may record errors and
    return a replacement value).
    """

    type_name = "value"

    def __init__(self, doc="", default=None, required=False, example=None, check=None):
        self.doc = doc
        self.default = default
        self.required = required
        self.example = example
        self.check = check

    def load(self, value, path, ctx):
        """The normalised value of ``value`` at ``path`` (errors go to ``ctx``)."""
        if value is None:
            if self.required:
                ctx.err(path, "is required")
            return copy.deepcopy(self.default)
        out = self.read(value, path, ctx)
        if self.check is not None and out is not None:
            out = self.check(out, path, ctx)
        return out

    def read(self, value, path, ctx):
        return value

    def bad(self, value, path, ctx):
        ctx.err(path, "%s is not valid (allowed: %s)" % (short(value), self.allowed()))
        return copy.deepcopy(self.default)

    def allowed(self):
        """What the field accepts, in words."""
        return self.type_name

    def json_schema(self):
        return {}

    def documented(self, schema):
        if self.doc:
            schema["description"] = self.doc
        if self.default is not None and not isinstance(self.default, (dict, list)):
            schema["default"] = self.default
        if self.example is not None:
            schema["examples"] = [self.example]
        return schema

    def kind(self):
        """The type column of the reference: what is allowed, and whether it is required."""
        return ("required: " if self.required else "") + self.allowed()

    def rows(self, path):
        """[(path, type, default, description, example)] of this field and the ones below it."""
        return [(path, self.kind(), self.default, self.doc, self.example)]


class Str(Field):
    """A string; numbers are taken as their text (``version: 15``).

    ``pattern`` (a compiled regex) with ``desc`` (what it means in words), ``choices`` (the
    allowed values), ``max_len``.
    """

    type_name = "string"

    def __init__(self, doc="", pattern=None, desc=None, choices=None, max_len=None, **kw):
        super().__init__(doc, **kw)
        self.pattern = pattern
        self.desc = desc
        self.choices = tuple(choices) if choices else None
        self.max_len = max_len

    def read(self, value, path, ctx):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            ctx.err(path, "must be a string (got %s)" % short(value))
            return copy.deepcopy(self.default)
        if self.choices is not None and value not in self.choices:
            ctx.err(path, "%s is not allowed (allowed: %s)" % (short(value), ", ".join(self.choices)))
            return copy.deepcopy(self.default)
        if self.pattern is not None and not self.pattern.match(value):
            return self.bad(value, path, ctx)
        if self.max_len is not None and len(value) > self.max_len:
            ctx.err(path, "%s is longer than %d characters" % (short(value), self.max_len))
            return copy.deepcopy(self.default)
        return value

    def allowed(self):
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.desc:
            return self.desc
        return "a string"

    def json_schema(self):
        if self.choices:
            out = {"type": "string", "enum": list(self.choices)}
        else:
            # numbers are taken as their text; a pattern only constrains strings
            out = {"type": ["string", "number"]}
            if self.pattern is not None:
                out["pattern"] = self.pattern.pattern
            if self.max_len:
                out["maxLength"] = self.max_len
        return self.documented(out)


class Int(Field):
    """An integer in ``low..high`` (either end may be open); digit strings are accepted."""

    type_name = "integer"

    def __init__(self, doc="", low=None, high=None, **kw):
        super().__init__(doc, **kw)
        self.low, self.high = low, high

    def read(self, value, path, ctx):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value.strip())
            else:
                ctx.err(path, "must be an integer (got %s)" % short(value))
                return copy.deepcopy(self.default)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            ctx.err(path, "%s is out of range (allowed: %s)" % (value, self.range()))
            return copy.deepcopy(self.default)
        return value

    def range(self):
        return "%s..%s" % ("" if self.low is None else self.low, "" if self.high is None else self.high)

    def allowed(self):
        return "an integer %s" % self.range() if (self.low, self.high) != (None, None) else "an integer"

    def json_schema(self):
        out = {"type": "integer"}
        if self.low is not None:
            out["minimum"] = self.low
        if self.high is not None:
            out["maximum"] = self.high
        return self.documented({"anyOf": [out, JINJA]})


class Num(Int):
    """A number (integer or decimal) in ``low..high``."""

    type_name = "number"

    def read(self, value, path, ctx):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(str(value))
            except ValueError:
                ctx.err(path, "must be a number (got %s)" % short(value))
                return copy.deepcopy(self.default)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            ctx.err(path, "%s is out of range (allowed: %s)" % (value, self.range()))
            return copy.deepcopy(self.default)
        return value

    def allowed(self):
        return "a number %s" % self.range()

    def json_schema(self):
        out = super().json_schema()
        out["anyOf"][0]["type"] = "number"
        return out


class Bool(Field):
    """true or false (also the strings true/false/yes/no, as given with ``-e``)."""

    type_name = "boolean"

    def read(self, value, path, ctx):
        if isinstance(value, str) and value.lower() in BOOL_WORDS:
            return BOOL_WORDS[value.lower()]
        if not isinstance(value, bool):
            ctx.err(path, "must be true or false (got %s)" % short(value))
            return copy.deepcopy(self.default)
        return value

    def allowed(self):
        return "true or false"

    def json_schema(self):
        return self.documented({"anyOf": [{"type": "boolean"},
                                          {"type": "string", "enum": sorted(BOOL_WORDS)}, JINJA]})


class Quantity(Str):
    """A size or CPU amount, kept as written; ``parse`` (e.g. common.quantity.to_bytes)
    decides whether it is one, and ``positive`` refuses zero."""

    def __init__(self, doc="", parse=None, desc=None, positive=True, pattern=None, **kw):
        super().__init__(doc, desc=desc, **kw)
        self.parse = parse
        self.positive = positive
        self.shape = pattern

    def read(self, value, path, ctx):
        text = super().read(value, path, ctx)
        if text is None or text == self.default:
            return text
        try:
            amount = self.parse(text)
        except ValueError:
            return self.bad(value, path, ctx)
        if self.positive and amount <= 0:
            ctx.err(path, "must be greater than zero")
            return copy.deepcopy(self.default)
        return text

    def json_schema(self):
        out = {"type": ["string", "number"]}
        if self.shape is not None:
            out["pattern"] = self.shape.pattern
        return self.documented(out)


class StrList(Field):
    """A list of strings, each checked by ``item`` (a Str)."""

    type_name = "list of strings"

    def __init__(self, doc="", item=None, **kw):
        kw.setdefault("default", [])
        super().__init__(doc, **kw)
        self.item = item or Str()

    def read(self, value, path, ctx):
        if isinstance(value, str) or not isinstance(value, list):
            ctx.err(path, "must be a list of strings (got %s)" % short(value))
            return copy.deepcopy(self.default)
        out = []
        for index, item in enumerate(value):
            errors = len(ctx.errors)
            loaded = self.item.load(item, "%s[%d]" % (path, index), ctx)
            if len(ctx.errors) == errors and loaded is not None:
                out.append(loaded)
        return out

    def allowed(self):
        return "a list of %s" % self.item.allowed()

    def json_schema(self):
        return self.documented({"type": "array", "items": self.item.json_schema()})


class Obj(Field):
    """A mapping with declared fields (any other key is an error).

    ``fields`` is an ordered dict of name -> Field. An absent object loads as its defaults,
    or as None when ``optional``. ``shorthand`` names the field a scalar stands for
    (``health: /healthz`` is ``health: {ready: /healthz}``).
    """

    type_name = "mapping"

    def __init__(self, fields, doc="", optional=False, shorthand=None, **kw):
        super().__init__(doc, **kw)
        self.fields = fields
        self.optional = optional
        self.shorthand = shorthand

    def load(self, value, path, ctx):
        if value is None:
            if self.required:
                ctx.err(path, "is required")
            if self.optional or self.required:
                return None
            value = {}
        out = self.read(value, path, ctx)
        if self.check is not None and out is not None:
            out = self.check(out, path, ctx)
        return out

    def read(self, value, path, ctx):
        if self.shorthand and not isinstance(value, (dict, list)):
            value = {self.shorthand: value}
        if not isinstance(value, dict):
            ctx.err(path, "must be a mapping (got %s)" % short(value))
            value = {}
        for key in value:
            if key not in self.fields:
                ctx.err(join(path, str(key)), "unknown field (allowed: %s)" % ", ".join(sorted(self.fields)))
        return {key: field.load(value.get(key), join(path, key), ctx) for key, field in self.fields.items()}

    def allowed(self):
        return "a mapping" + (" (or a %s)" % self.shorthand if self.shorthand else "")

    def json_schema(self, prefix=""):
        props = {prefix + key: field.json_schema() for key, field in self.fields.items()}
        out = {"type": "object", "properties": props, "additionalProperties": False}
        required = [prefix + key for key, field in self.fields.items() if field.required]
        if required:
            out["required"] = required
        if self.shorthand:
            scalar = self.fields[self.shorthand].json_schema()
            scalar.pop("description", None)
            out = {"anyOf": [out, scalar]}
        return self.documented(out)

    def rows(self, path):
        out = [] if not path else [(path, self.kind(), None, self.doc, self.example)]
        for key, field in self.fields.items():
            out.extend(field.rows(join(path, key)))
        return out


class ObjList(Field):
    """A list of mappings, each an ``item`` Obj, named by their ``key`` field in paths.

    Names must be unique: ``stack_services[api]``, not ``stack_services[3]`` (an item
    without a usable name is shown by its position).
    """

    type_name = "list"

    def __init__(self, item, doc="", key="name", **kw):
        kw.setdefault("default", [])
        super().__init__(doc, **kw)
        self.item = item
        self.key = key

    def read(self, value, path, ctx):
        if not isinstance(value, list):
            ctx.err(path, "must be a list of mappings (got %s)" % short(value))
            return copy.deepcopy(self.default)
        out, seen = [], set()
        for index, raw in enumerate(value):
            name = raw.get(self.key) if isinstance(raw, dict) else None
            label = item_label(raw, self.key, index)
            ipath = "%s[%s]" % (path, label)
            if name is not None and label in seen:
                ctx.err(ipath, "the %s %s is used more than once (allowed: each %s once)" % (
                    self.key, short(name), self.key))
            seen.add(label)
            out.append(self.item.load(raw, ipath, ctx))
        return out

    def allowed(self):
        return "a list of mappings named by %s" % self.key

    def json_schema(self):
        return self.documented({"type": "array", "items": self.item.json_schema()})

    def rows(self, path):
        return [(path, self.kind(), None, self.doc, self.example)] + self.item.rows(path + "[]")[1:] \
            if isinstance(self.item, Obj) else self.item.rows(path + "[]")


class Map(Field):
    """A mapping of free-form keys (checked by ``key``, a Str) to values (``value``)."""

    type_name = "mapping"

    def __init__(self, value, doc="", key=None, **kw):
        kw.setdefault("default", {})
        super().__init__(doc, **kw)
        self.key = key or Str()
        self.value = value

    def read(self, value, path, ctx):
        if not isinstance(value, dict):
            ctx.err(path, "must be a mapping (got %s)" % short(value))
            return copy.deepcopy(self.default)
        out = {}
        for key, item in value.items():
            kpath = "%s.%s" % (path, key)
            errors = len(ctx.errors)
            self.key.load(key, kpath, ctx)
            if len(ctx.errors) != errors:
                continue
            loaded = self.value.load(item, kpath, ctx)
            if len(ctx.errors) == errors:
                out[str(key)] = loaded
        return out

    def allowed(self):
        return "a mapping of %s to %s" % (self.key.allowed(), self.value.allowed())

    def json_schema(self):
        out = {"type": "object", "additionalProperties": self.value.json_schema()}
        if isinstance(self.key, Str) and self.key.pattern is not None:
            out["propertyNames"] = {"pattern": self.key.pattern.pattern}
        return self.documented(out)

    def rows(self, path):
        out = [(path, self.kind(), None, self.doc, self.example)]
        if isinstance(self.value, (Obj, Either)):
            out.extend(self.value.rows(path + ".<key>")[1:])
        return out


class Either(Field):
    """A scalar (``scalar``, a Field) or a mapping (``mapping``, an Obj), chosen by type."""

    def __init__(self, scalar, mapping, doc="", **kw):
        super().__init__(doc, **kw)
        self.scalar = scalar
        self.mapping = mapping

    def read(self, value, path, ctx):
        if isinstance(value, dict):
            return self.mapping.load(value, path, ctx)
        return self.scalar.load(value, path, ctx)

    def allowed(self):
        return "%s, or %s" % (self.scalar.allowed(), self.mapping.allowed())

    def json_schema(self):
        return self.documented({"anyOf": [self.scalar.json_schema(), self.mapping.json_schema()]})

    def rows(self, path):
        return [(path, self.kind(), self.default, self.doc, self.example)] + self.mapping.rows(path)[1:]


class Scalar(Field):
    """A string, number or boolean, normalised to its text (booleans as true/false)."""

    type_name = "string, number or boolean"

    def read(self, value, path, ctx):
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (str, int, float)):
            return str(value)
        ctx.err(path, "must be a string, number or boolean (got %s)" % short(value))
        return None

    def json_schema(self):
        return self.documented({"type": ["string", "number", "boolean"]})


def pattern(regex):
    """A compiled, anchored regular expression."""
    return re.compile(regex)


class Enum(Field):
    """One of ``values`` (strings, numbers or booleans), compared as given."""

    def __init__(self, doc="", values=(), desc=None, **kw):
        super().__init__(doc, **kw)
        self.values = tuple(values)
        self.desc = desc

    def read(self, value, path, ctx):
        if not any(value == v and type(value) is type(v) for v in self.values):
            ctx.err(path, "%s is not allowed (allowed: %s)" % (short(value), self.allowed()))
            return copy.deepcopy(self.default)
        return value

    def allowed(self):
        return self.desc or ", ".join(
            ("true" if v else "false") if isinstance(v, bool) else str(v) for v in self.values)

    def json_schema(self):
        return self.documented({"enum": list(self.values)})


class Data(Field):
    """Structured data (a mapping or a list, nested freely), rendered into a file as YAML or
    JSON; only strings, numbers, booleans and nulls at the leaves."""

    type_name = "a mapping or a list"

    def read(self, value, path, ctx):
        if not isinstance(value, (dict, list)):
            ctx.err(path, "must be a mapping or a list (got %s)" % short(value))
            return None
        bad = _first_bad_leaf(value)
        if bad is not None:
            ctx.err(path, "holds %s, which a YAML or JSON file cannot (allowed: strings, numbers, "
                          "booleans, null, mappings with string keys, lists)" % short(bad))
            return None
        return value

    def json_schema(self):
        return self.documented({"type": ["object", "array"]})


def _first_bad_leaf(value):
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return key
            bad = _first_bad_leaf(item)
            if bad is not None:
                return bad
        return None
    if isinstance(value, list):
        for item in value:
            bad = _first_bad_leaf(item)
            if bad is not None:
                return bad
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return None
    return value


class Any(Field):
    """Any JSON value (string, number, boolean, null, mapping, list), kept as given."""

    type_name = "any JSON value"

    def read(self, value, path, ctx):
        bad = _first_bad_leaf(value)
        if bad is not None:
            ctx.err(path, "holds %s, which JSON cannot" % short(bad))
            return None
        return value
