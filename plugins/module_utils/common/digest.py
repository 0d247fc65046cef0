# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Digests and checksums shared by every target (labels, annotations, diffs, versioned names).

A secret is only ever shown as ``digest(value, "<stack>:<name>")``: salted with where it is
used, so two stacks holding the same password do not show the same digest.
"""

from __future__ import annotations

import hashlib
import json


def digest(text, salt=""):
    """``sha256:<16 hex>`` of ``text`` (salted when ``salt`` is given)."""
    data = (salt + "\0" + text) if salt else text
    return "sha256:" + hashlib.sha256(data.encode("utf-8")).hexdigest()[:16]


def checksum(parts, length=None):
    """sha256 hex of a JSON-serialisable structure (keys sorted), cut to ``length``."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    value = hashlib.sha256(blob.encode("utf-8")).hexdigest()
    return value[:length] if length else value


def short_hash(text, length=None):
    """sha256 hex of ``text``, cut to ``length`` (names versioned by content use 12)."""
    value = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return value[:length] if length else value
