# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""JSON-over-HTTP(S) with a per-request timeout, retries, backoff and ``Retry-After``.

Private to opsdeck.stack. Built on ``ansible.module_utils.urls.Request`` so that TLS
options (``validate_certs``, ``ca_path``), proxies and the user agent behave as in every
other Ansible module; the retry policy itself is plain code with injectable ``opener``,
``sleep`` and ``clock`` so it can be unit-tested without a network.

Policy:

- every attempt has its own ``timeout``;
- retried: HTTP 429 and 5xx, connection resets / servers that close the connection
  without answering, and attempts that time out. Not retried: other 4xx, connection
  refused, DNS errors, TLS verification failures (retrying cannot fix them);
- the delay before retry ``n`` is ``backoff * 2**(n-1)``, but at least what the server
  asked for in ``Retry-After`` (seconds or an HTTP date), and at most ``max_delay``;
- an optional ``deadline`` (a ``clock()`` value) stops retrying: no attempt starts after
  it and no backoff sleeps past it, so a caller's overall wait overshoots its deadline by
  at most one attempt (``timeout``).

Every failure is an ``HttpError`` whose ``kind`` says what a person should fix:
``auth`` (401/403), ``not_found`` (404), ``http`` (other statuses), ``refused``,
``connection``, ``tls``, ``timeout``, ``redirect``, ``invalid_response``.
"""

from __future__ import annotations

import email.utils
import json
import socket
import ssl
import threading
import time
from http.client import HTTPException, RemoteDisconnected

from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit, urlunsplit

from ansible.module_utils.urls import Request, SSLValidationError, make_context
from ansible.module_utils.urls import ConnectionError as AnsibleUrlConnectionError

RETRY_STATUSES = frozenset((429, 500, 502, 503, 504))


class HttpError(Exception):
    """A request that failed for good (after retries where they apply)."""

    def __init__(self, kind, message, method=None, url=None, status=None, body=None, attempts=1,
                 retryable=False):
        super(HttpError, self).__init__(message)
        self.kind = kind
        self.message = message
        self.method = method
        self.url = url
        self.status = status
        self.body = body
        self.attempts = attempts
        self.retryable = retryable

    def to_dict(self):
        return {"kind": self.kind, "msg": self.message, "method": self.method, "url": self.url,
                "status": self.status, "attempts": self.attempts}


class HttpResponse(object):
    def __init__(self, status, headers, body, attempts=1):
        self.status = status
        self.headers = headers
        self.body = body
        self.attempts = attempts

    def json(self):
        if not self.body:
            return None
        return json.loads(self.body.decode("utf-8"))


def safe_url(url):
    """The URL without user:password@ (for messages)."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
    return urlunsplit(parts)


def parse_retry_after(value, now=None):
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), or None."""
    if value is None:
        return None
    value = str(value).strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def _reason(exc):
    """The innermost reason of a urllib error chain."""
    seen = 0
    while isinstance(exc, URLError) and not isinstance(exc, HTTPError) and seen < 5:
        reason = getattr(exc, "reason", None)
        if not isinstance(reason, BaseException):
            break
        exc = reason
        seen += 1
    return exc


def classify_exception(exc, method, url, timeout):
    """Map an exception from an attempt to an HttpError (retryable or not)."""
    where = "%s %s" % (method, safe_url(url))
    inner = _reason(exc)
    if isinstance(inner, (ssl.SSLCertVerificationError, SSLValidationError)) or (
            isinstance(inner, ssl.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(inner)):
        detail = getattr(inner, "verify_message", None) or str(inner)
        return HttpError(
            "tls", "TLS certificate verification failed for %s: %s. Point ca_path at the CA "
                   "that signed the server certificate, or set validate_certs=false (insecure)."
                   % (where, detail), method, url)
    if isinstance(inner, ssl.SSLError):
        return HttpError("tls", "TLS handshake with %s failed: %s" % (where, inner), method, url)
    if isinstance(inner, ConnectionRefusedError):
        parts = urlsplit(url)
        return HttpError(
            "refused", "connection refused by %s (%s): is the application running and is url right?"
                       % (parts.netloc, where), method, url)
    if isinstance(inner, (socket.timeout, TimeoutError)):
        return HttpError("timeout", "no response to %s within request_timeout=%ss" % (where, timeout),
                         method, url, retryable=True)
    if isinstance(inner, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, RemoteDisconnected)):
        return HttpError("connection", "connection to %s was reset or closed without a response (%s)"
                         % (where, type(inner).__name__), method, url, retryable=True)
    if isinstance(inner, socket.gaierror):
        return HttpError("connection", "cannot resolve the host of %s: %s" % (where, inner), method, url)
    if isinstance(inner, (HTTPException, OSError, AnsibleUrlConnectionError, URLError)):
        return HttpError("connection", "request %s failed: %s: %s" % (where, type(inner).__name__, inner),
                         method, url, retryable=isinstance(inner, HTTPException))
    return HttpError("connection", "request %s failed: %s: %s" % (where, type(inner).__name__, inner),
                     method, url)


def _status_error(method, url, status, body, headers):
    where = "%s %s" % (method, safe_url(url))
    snippet = (body or b"")[:300].decode("utf-8", "replace").strip()
    detail = (": %s" % snippet) if snippet else ""
    if status in (401, 403):
        return HttpError("auth", "HTTP %d from %s: the token was %s%s" % (
            status, where, "rejected or missing" if status == 401 else "not allowed to do this", detail),
            method, url, status, body)
    if status == 404:
        return HttpError("not_found", "HTTP 404 from %s%s" % (where, detail), method, url, status, body)
    if 300 <= status < 400:
        location = headers.get("Location") if headers else None
        return HttpError("redirect", "HTTP %d from %s redirects to %s: set url to the final address "
                                     "(redirects are not followed, the token must not leak)"
                         % (status, where, location), method, url, status, body)
    return HttpError("http", "HTTP %d from %s%s" % (status, where, detail), method, url, status, body,
                     retryable=status in RETRY_STATUSES)


def urls_opener(validate_certs=True, ca_path=None, http_agent="opsdeck.stack"):
    """Default opener built on ansible's ``Request``; redirects are not followed.

    The TLS context is made once (loading the system CA store costs ~0.1 s), when the
    first https URL is requested.
    """
    state = {}
    lock = threading.Lock()

    def opener(method, url, data, headers, timeout):
        https = url.lower().startswith("https://")
        with lock:
            if https and "tls" not in state:
                state["tls"] = make_context(cafile=ca_path, validate_certs=validate_certs)
            if not https and "plain" not in state:
                # never used for http://, but stops Request from building a full one per call
                state["plain"] = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context = state["tls" if https else "plain"]
        req = Request(validate_certs=validate_certs, ca_path=ca_path, http_agent=http_agent,
                      follow_redirects="none", use_netrc=False, context=context)
        resp = req.open(method, url, data=data, headers=headers, timeout=timeout,
                        unredirected_headers=["Authorization"])
        try:
            return resp.getcode(), dict(resp.headers.items()), resp.read()
        finally:
            resp.close()

    return opener


class JsonHttpClient(object):
    def __init__(self, base_url, token=None, timeout=10.0, retries=3, backoff=0.5, max_delay=30.0,
                 validate_certs=True, ca_path=None, opener=None, sleep=time.sleep, clock=time.monotonic,
                 wall_clock=time.time):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.backoff = float(backoff)
        self.max_delay = float(max_delay)
        self.opener = opener or urls_opener(validate_certs=validate_certs, ca_path=ca_path)
        self.sleep = sleep
        self.clock = clock
        self.wall_clock = wall_clock

    def url_for(self, path):
        if path.startswith("http://") or path.startswith("https://"):
            return path
        return self.base_url + "/" + path.lstrip("/")

    def retry_delay(self, attempt, retry_after=None):
        """Delay before retry number ``attempt`` (1-based)."""
        delay = self.backoff * (2 ** (attempt - 1))
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.max_delay)

    def request(self, method, path, body=None, deadline=None, expect_json=True):
        """Send one logical request (1 + ``retries`` attempts at most); return an HttpResponse."""
        url = self.url_for(path)
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = "Bearer %s" % self.token
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        elif method in ("POST", "PUT", "PATCH"):
            data = b""
        attempt = 0
        while True:
            attempt += 1
            retry_after = None
            try:
                status, resp_headers, payload = self.opener(method, url, data, headers, self.timeout)
                error = None if 200 <= status < 300 else _status_error(method, url, status, payload, resp_headers)
            except HTTPError as exc:
                try:
                    payload = exc.read()
                except Exception:  # pylint: disable=broad-except
                    payload = b""
                resp_headers = dict(exc.headers.items()) if exc.headers is not None else {}
                status = exc.code
                error = _status_error(method, url, exc.code, payload, resp_headers)
            except Exception as exc:  # pylint: disable=broad-except
                error = classify_exception(exc, method, url, self.timeout)
                resp_headers = {}
            if error is None:
                response = HttpResponse(status, resp_headers, payload, attempts=attempt)
                if expect_json:
                    try:
                        response.data = response.json()
                    except ValueError:
                        raise HttpError("invalid_response", "%s %s answered HTTP %d with a body that is not JSON: %r"
                                        % (method, safe_url(url), status, (payload or b"")[:200]),
                                        method, url, status, payload, attempt)
                return response
            error.attempts = attempt
            if error.retryable and attempt <= self.retries:
                header = {k.lower(): v for k, v in resp_headers.items()}.get("retry-after")
                retry_after = parse_retry_after(header, now=self.wall_clock())
                delay = self.retry_delay(attempt, retry_after)
                if deadline is not None:
                    remaining = deadline - self.clock()
                    if remaining <= 0 or delay >= remaining:
                        error.message += " (no time left for a retry before the deadline)"
                        raise error
                self.sleep(delay)
                continue
            if attempt > 1:
                error.message += " (after %d attempts)" % attempt
            raise error
