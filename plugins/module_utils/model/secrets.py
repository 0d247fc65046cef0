# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What prod refuses as a secret: placeholders, published and well-known weak passwords,
and values too short or too repetitive to be a real secret.

``weakness(value)`` says why a value is refused (never repeating it), or None.
"""

from __future__ import annotations

import re

MIN_LENGTH = 12
MIN_DISTINCT = 6
# Passwords written in public deployment guides, among them the seeds' own (senha-segura,
# evolution123, the dev-* values and the "sua-..."/"your_..." fill-ins), and the usual weak ones.
PUBLISHED = frozenset(value.lower() for value in (
    "senha-segura", "evolution123", "admin", "dev-postgres-password", "dev-redis-password",
    "dev-secret-key-change-in-production", "sua-chave-secreta-muito-segura",
    "sua-senha-postgres-muito-segura", "sua-senha-redis-muito-segura", "sua-api-key",
    "sk_test_sua_chave_api_stripe", "whsec_seu_webhook_secret", "seu-client-secret",
    "your_sonar_token", "your_snyk_token", "your_project_key", "base64_encoded_kubeconfig",
    "password", "password1", "password123", "passw0rd", "p@ssw0rd", "letmein", "qwerty",
    "qwerty123", "welcome", "welcome1", "iloveyou", "abc123", "admin123", "administrator",
    "root", "toor", "secret", "changeme", "default", "guest", "test", "test1234", "1q2w3e4r",
    "123456", "1234567890", "123456789012", "postgres", "redis", "rabbitmq", "guest123",
    "supersecret", "mysecretpassword", "example", "senha", "senha123",
))
PLACEHOLDER = re.compile(
    r"(change[_-]?(this|me|it)|changeme|placeholder|\btodo\b|<[^>]*>|\$\{[^}]*\}|\{\{.*\}\}|"
    r"^(your|seu|sua|my)[_-]|xxxx)", re.IGNORECASE)


def weakness(value):
    """Why ``value`` is not a secret prod accepts, or None."""
    text = str(value).strip()
    if text.lower() in PUBLISHED:
        return "a published or well-known weak password"
    if PLACEHOLDER.search(text):
        return "a placeholder"
    if len(text) < MIN_LENGTH:
        return "shorter than %d characters" % MIN_LENGTH
    if len(set(text)) < MIN_DISTINCT:
        return "too repetitive (fewer than %d different characters)" % MIN_DISTINCT
    return None
