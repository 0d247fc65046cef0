# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Name patterns shared by the stack model and the renderers (defined once)."""

from __future__ import annotations

import re

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_DESC = ("a DNS-1123 label: lowercase letters, digits and '-', starting and ending with "
                "a letter or digit")
SECRET_NAME = re.compile(r"^[a-z0-9]([-_a-z0-9]*[a-z0-9])?$")
SECRET_DESC = "a secret name from stack_secrets (lowercase letters, digits, - and _)"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
IMAGE_REF = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@sha256:[a-f0-9]{64})?$"
)
IMAGE_DESC = "an image reference such as registry.example.com/shop/api:1.4.2"


def is_dns1123_label(value, limit=63):
    """True for a DNS-1123 label of at most ``limit`` characters."""
    return isinstance(value, str) and len(value) <= limit and bool(DNS1123_LABEL.match(value))
