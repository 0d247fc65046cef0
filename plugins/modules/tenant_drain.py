#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tenant_drain
short_description: Drain an application instance or some of its tenants before an upgrade
version_added: 0.1.0
description:
  - Drains a whole application instance (C(POST /admin/drain)) or one or more tenants
    (C(POST /api/tenants/<id>/drain)) through the application's admin API with a Bearer
    token, then waits until the work in flight has reached zero. O(state=active) undoes it.
  - The default API shape is the one of the collection's reference application
    (C(roles/images/files/refapp)); every path is configurable.
  - The current state is read first. A target that is already draining is not drained
    again (C(changed=false)), one that is not draining is not undrained again, so the
    module is idempotent, and an instance that restarted since it was drained is seen as
    it is now.
  - All targets are read before any of them is changed, so a wrong token, an unknown
    tenant or an unreachable instance fails the task without draining anything. Several
    tenants are then drained and waited for concurrently.
  - Each HTTP request has its own timeout. HTTP 429 and 5xx answers, connection resets
    and request timeouts are retried with exponential backoff, honouring C(Retry-After).
    The wait for in-flight work to finish overshoots O(wait_timeout) by at most one
    O(poll_interval) plus one request (O(request_timeout)).
author:
  - opsdeck maintainers (@opsdeck)
extends_documentation_fragment:
  - opsdeck.stack.attributes
attributes:
  check_mode:
    support: full
    details: Only reads the status; reports whether a drain or undrain would happen.
  diff_mode:
    support: full
    details: Shows C(draining) and C(inflight) of every target before and after.
  idempotent:
    support: full
options:
  url:
    description:
      - Base URL of the application instance, for example V(http://10.0.0.5:8000) or
        V(https://admin.example.com). Paths below are appended to it.
    type: str
    required: true
  token:
    description:
      - Bearer token of the admin API.
      - Taken from the E(OPSDECK_ADMIN_TOKEN) environment variable of the controller when not set.
    type: str
    required: true
  tenants:
    description:
      - Tenants to drain or undrain. Empty (the default) means the whole instance.
    type: list
    elements: str
    default: []
  state:
    description:
      - V(drained) drains the targets and, with O(wait), waits for their in-flight work to end.
      - V(active) undrains them.
    type: str
    choices: [drained, active]
    default: drained
  wait:
    description:
      - With O(state=drained), wait until the in-flight count of every target is zero.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds, counted from the drain requests, to wait for in-flight work to reach zero.
        What happens then is set by O(on_timeout).
    type: float
    default: 300
  poll_interval:
    description:
      - Seconds between two status reads while waiting.
    type: float
    default: 1
  request_timeout:
    description:
      - Timeout in seconds of every single HTTP request.
    type: float
    default: 10
  retries:
    description:
      - How many times a request is retried after HTTP 429/5xx, a connection reset or a
        request timeout. Connection refused, TLS and 4xx errors are not retried.
    type: int
    default: 3
  retry_backoff:
    description:
      - Delay before the first retry, doubled for each further retry (capped at 30 seconds).
        A longer C(Retry-After) sent by the server wins.
    type: float
    default: 0.5
  on_timeout:
    description:
      - What to do when O(wait_timeout) passes with work still in flight.
      - V(fail) fails the task and leaves the targets drained.
      - V(continue) returns successfully with RV(timed_out=true) and a warning.
      - V(undrain) undrains the targets this task drained (re-reading their state first), then fails.
    type: str
    choices: [fail, continue, undrain]
    default: fail
  validate_certs:
    description:
      - Verify the server's TLS certificate. Set V(false) only for self-signed test setups;
        prefer O(ca_path).
    type: bool
    default: true
  ca_path:
    description:
      - PEM file of the CA that signed the server certificate.
    type: path
  drain_path:
    description: Path that drains the whole instance (POST).
    type: str
    default: /admin/drain
  undrain_path:
    description: Path that undrains the whole instance (POST).
    type: str
    default: /admin/undrain
  status_path:
    description:
      - Path of the instance status (GET). It must answer a JSON object with a boolean
        C(draining) and an integer C(inflight); a C(tenants) map of per-tenant
        C({draining, inflight}) is returned when present.
    type: str
    default: /admin/status
  tenant_drain_path:
    description: Path that drains one tenant (POST); C({tenant}) is replaced by the URL-quoted tenant id.
    type: str
    default: /api/tenants/{tenant}/drain
  tenant_undrain_path:
    description: Path that undrains one tenant (POST).
    type: str
    default: /api/tenants/{tenant}/undrain
  tenant_status_path:
    description:
      - Path of a tenant's status (GET), a JSON object with C(draining) and C(inflight).
        HTTP 404 means an unknown tenant.
    type: str
    default: /api/tenants/{tenant}/status
notes:
  - Drain state usually lives in the memory of one instance. Behind a load balancer with
    several replicas, point O(url) at each replica (loop over them) rather than at the
    balancer.
  - Redirects are not followed, so that the token is never sent to another address.
"""

EXAMPLES = r"""
- name: Drain the whole instance and wait up to 2 minutes for in-flight work
  opsdeck.stack.tenant_drain:
    url: "http://{{ inventory_hostname }}:8000"
    token: "{{ vault_admin_token }}"
    wait_timeout: 120

- name: Drain two tenants before moving them to a dedicated instance
  opsdeck.stack.tenant_drain:
    url: https://admin.example.com
    token: "{{ vault_admin_token }}"
    tenants:
      - tenant1
      - tenant2
    ca_path: /etc/ssl/certs/internal-ca.pem
    on_timeout: undrain
  register: drained

- name: Show what was still running per tenant
  ansible.builtin.debug:
    msg: "waited {{ drained.waited }}s, in flight: {{ drained.tenants }}"

- name: Put the instance back into service after the upgrade
  opsdeck.stack.tenant_drain:
    url: "http://{{ inventory_hostname }}:8000"
    token: "{{ vault_admin_token }}"
    state: active

- name: An API with other paths
  opsdeck.stack.tenant_drain:
    url: http://127.0.0.1:9000
    token: "{{ vault_admin_token }}"
    drain_path: /v2/maintenance/drain
    undrain_path: /v2/maintenance/resume
    status_path: /v2/maintenance
"""

RETURN = r"""
changed:
  description: Whether a drain or undrain request was sent (or would be, in check mode).
  returned: always
  type: bool
state:
  description: The requested state.
  returned: always
  type: str
  sample: drained
instance:
  description:
    - Status of the whole instance when O(tenants) is empty, after the task.
  returned: when O(tenants) is empty
  type: dict
  sample: {"draining": true, "inflight": 0, "changed": true, "waited": 1.52, "timed_out": false}
tenants:
  description:
    - Per tenant, C(draining) and C(inflight) after the task. When O(tenants) is set it also
      has C(changed), C(waited) and C(timed_out) for each tenant. For a whole-instance drain
      it is the instance's per-tenant breakdown when the API reports one.
  returned: always
  type: dict
  sample: {"acme": {"draining": true, "inflight": 0, "changed": true, "waited": 0.8, "timed_out": false}}
inflight:
  description: Work still in flight over all targets at the end (0 after a successful wait).
  returned: always
  type: int
  sample: 0
waited:
  description:
    - Seconds from the drain requests until in-flight work ended (or O(wait_timeout) passed),
      the longest over all targets. 0 in check mode and with O(state=active).
  returned: always
  type: float
  sample: 1.52
timed_out:
  description: Whether O(wait_timeout) passed with work still in flight.
  returned: always
  type: bool
undrained_after_timeout:
  description: Targets undrained again because of O(on_timeout=undrain).
  returned: when O(on_timeout=undrain) acted
  type: list
  elements: str
  sample: ["acme"]
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.opsdeck.stack.plugins.module_utils.clients.http import HttpError, JsonHttpClient

INSTANCE = "instance"


class Target(object):
    """The whole instance (tenant None) or one tenant, with the paths to act on it."""

    def __init__(self, params, tenant=None):
        self.tenant = tenant
        self.name = INSTANCE if tenant is None else tenant
        if tenant is None:
            self.drain_path = params["drain_path"]
            self.undrain_path = params["undrain_path"]
            self.status_path = params["status_path"]
        else:
            quoted = quote(tenant, safe="")
            self.drain_path = params["tenant_drain_path"].replace("{tenant}", quoted)
            self.undrain_path = params["tenant_undrain_path"].replace("{tenant}", quoted)
            self.status_path = params["tenant_status_path"].replace("{tenant}", quoted)
        self.before = None
        self.after = None
        self.changed = False
        self.waited = 0.0
        self.timed_out = False
        self.last_error = None

    def label(self):
        return "the instance" if self.tenant is None else "tenant %r" % self.tenant


class DrainError(Exception):
    pass


def parse_status(target, response):
    data = getattr(response, "data", None)
    if not isinstance(data, dict) or not isinstance(data.get("draining"), bool) \
            or isinstance(data.get("inflight"), bool) or not isinstance(data.get("inflight"), int):
        raise DrainError("unexpected answer for %s from %s: expected a JSON object with a boolean "
                         "'draining' and an integer 'inflight', got %r"
                         % (target.label(), target.status_path, str(data)[:200]))
    status = {"draining": data["draining"], "inflight": data["inflight"]}
    if isinstance(data.get("tenants"), dict):
        status["tenants"] = data["tenants"]
    return status


def describe_error(target, exc):
    if isinstance(exc, HttpError) and exc.kind == "not_found" and target.tenant is not None:
        return "unknown tenant %r: %s" % (target.tenant, exc.message)
    if isinstance(exc, HttpError) and exc.kind == "not_found":
        return "%s: check url and the drain/status paths" % exc.message
    if isinstance(exc, HttpError) and exc.kind == "auth":
        return "%s (check the token option)" % exc.message
    return str(exc) if not isinstance(exc, HttpError) else exc.message


class Drainer(object):
    def __init__(self, module, client, clock=time.monotonic, sleep=time.sleep):
        self.module = module
        self.params = module.params
        self.client = client
        self.clock = clock
        self.sleep = sleep
        self.stop = threading.Event()

    def read(self, target, deadline=None):
        return parse_status(target, self.client.request("GET", target.status_path, deadline=deadline))

    def post(self, target, path):
        response = self.client.request("POST", path)
        try:
            return parse_status(target, response)
        except DrainError:
            # some APIs answer 202/204 without a body: read the status instead
            return self.read(target)

    def drain(self, target, started, deadline):
        if not target.before["draining"]:
            target.after = self.post(target, target.drain_path)
            target.changed = True
            if not target.after["draining"]:
                raise DrainError("%s still reports draining=false after %s"
                                 % (target.label(), target.drain_path))
        else:
            target.after = dict(target.before)
        if self.params["wait"]:
            self.wait(target, started, deadline)

    def wait(self, target, started, deadline):
        """Poll until in-flight work is 0; ``waited`` counts from ``started`` (the drain request)."""
        poll = self.params["poll_interval"]
        try:
            while target.after["inflight"] > 0:
                remaining = deadline - self.clock()
                if remaining <= 0 or self.stop.is_set():
                    target.timed_out = remaining <= 0
                    return
                self.sleep(min(poll, remaining))
                try:
                    target.after = self.read(target, deadline=deadline)
                    target.last_error = None
                except HttpError as exc:
                    if exc.kind in ("auth", "not_found", "tls", "redirect", "invalid_response"):
                        raise
                    # transient (5xx after retries, reset, request timeout, restart): keep the last count
                    target.last_error = exc.message
        finally:
            target.waited = round(self.clock() - started, 3)

    def undrain(self, target):
        # re-read first: the instance may have restarted (and forgotten its drain) meanwhile
        target.before = self.read(target)
        if target.before["draining"]:
            target.changed = True
            if self.module.check_mode:
                target.after = dict(target.before, draining=False)
            else:
                target.after = self.post(target, target.undrain_path)
        else:
            target.after = dict(target.before)

    def run_all(self, targets, func, *args):
        errors = []
        if len(targets) == 1:
            try:
                func(targets[0], *args)
            except (HttpError, DrainError) as exc:
                errors.append((targets[0], exc))
            return errors

        def guarded(target):
            try:
                func(target, *args)
            except (HttpError, DrainError) as exc:
                self.stop.set()
                return exc
            return None

        with ThreadPoolExecutor(max_workers=min(len(targets), 16)) as pool:
            for target, exc in zip(targets, pool.map(guarded, targets)):
                if exc is not None:
                    errors.append((target, exc))
        return errors


def _view(status):
    if not status:
        return None
    return {"draining": status["draining"], "inflight": status["inflight"]}


def build_result(params, targets, check_mode):
    result = {"changed": any(t.changed for t in targets), "state": params["state"]}
    if params["tenants"]:
        result["tenants"] = dict(
            (t.tenant, dict(_view(t.after or t.before) or {}, changed=t.changed, waited=t.waited,
                            timed_out=t.timed_out))
            for t in targets)
    else:
        target = targets[0]
        status = target.after or target.before or {}
        result["instance"] = dict(_view(status) or {}, changed=target.changed, waited=target.waited,
                                  timed_out=target.timed_out)
        result["tenants"] = status.get("tenants") or {}
    finals = [t.after or t.before for t in targets if (t.after or t.before)]
    result["inflight"] = sum(s["inflight"] for s in finals)
    result["waited"] = max([t.waited for t in targets] or [0.0])
    result["timed_out"] = any(t.timed_out for t in targets)
    result["diff"] = {
        "before": dict((t.name, _view(t.before)) for t in targets),
        "after": dict((t.name, _view(t.after or t.before)) for t in targets),
    }
    return result


def _fail(module, targets, errors, params, check_mode, prefix=""):
    result = build_result(params, targets, check_mode)
    messages = ["%s: %s" % (t.label(), describe_error(t, exc)) for t, exc in errors]
    kinds = sorted(set(exc.kind for _target, exc in errors if isinstance(exc, HttpError)))
    result["error_kinds"] = kinds
    module.fail_json(msg=prefix + "; ".join(messages), **result)


def main():
    argument_spec = dict(
        url=dict(type="str", required=True),
        token=dict(type="str", required=True, no_log=True, fallback=(env_fallback, ["OPSDECK_ADMIN_TOKEN"])),
        tenants=dict(type="list", elements="str", default=[]),
        state=dict(type="str", choices=["drained", "active"], default="drained"),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="float", default=300.0),
        poll_interval=dict(type="float", default=1.0),
        request_timeout=dict(type="float", default=10.0),
        retries=dict(type="int", default=3),
        retry_backoff=dict(type="float", default=0.5),
        on_timeout=dict(type="str", choices=["fail", "continue", "undrain"], default="fail"),
        validate_certs=dict(type="bool", default=True),
        ca_path=dict(type="path"),
        drain_path=dict(type="str", default="/admin/drain"),
        undrain_path=dict(type="str", default="/admin/undrain"),
        status_path=dict(type="str", default="/admin/status"),
        tenant_drain_path=dict(type="str", default="/api/tenants/{tenant}/drain"),
        tenant_undrain_path=dict(type="str", default="/api/tenants/{tenant}/undrain"),
        tenant_status_path=dict(type="str", default="/api/tenants/{tenant}/status"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params

    problems = []
    if not params["url"].startswith(("http://", "https://")):
        problems.append("url must start with http:// or https://, got %r" % params["url"])
    for name in ("wait_timeout", "request_timeout"):
        if params[name] <= 0:
            problems.append("%s must be > 0, got %s" % (name, params[name]))
    if params["poll_interval"] <= 0:
        problems.append("poll_interval must be > 0, got %s" % params["poll_interval"])
    if params["retries"] < 0:
        problems.append("retries must be >= 0, got %s" % params["retries"])
    tenants = []
    for tenant in params["tenants"]:
        if not tenant or not tenant.strip():
            problems.append("tenants must not contain empty names")
        elif tenant not in tenants:
            tenants.append(tenant)
    for name in ("tenant_drain_path", "tenant_undrain_path", "tenant_status_path"):
        if tenants and "{tenant}" not in params[name]:
            problems.append("%s must contain {tenant}, got %r" % (name, params[name]))
    if problems:
        module.fail_json(msg="; ".join(problems))
    params["tenants"] = tenants

    client = JsonHttpClient(
        params["url"], token=params["token"], timeout=params["request_timeout"], retries=params["retries"],
        backoff=params["retry_backoff"], validate_certs=params["validate_certs"], ca_path=params["ca_path"])
    drainer = Drainer(module, client)
    targets = [Target(params, t) for t in tenants] or [Target(params)]

    if params["state"] == "active":
        errors = drainer.run_all(targets, drainer.undrain)
        if errors:
            _fail(module, targets, errors, params, module.check_mode)
        module.exit_json(**build_result(params, targets, module.check_mode))

    # state=drained. 1) read every target before changing any
    def read_before(target):
        target.before = drainer.read(target)

    errors = drainer.run_all(targets, read_before)
    if errors:
        _fail(module, targets, errors, params, module.check_mode, prefix="nothing was changed: ")
    if module.check_mode:
        for target in targets:
            target.changed = not target.before["draining"]
            target.after = dict(target.before, draining=True)
        module.exit_json(**build_result(params, targets, True))

    # 2) drain what is not draining yet and wait for in-flight work, all targets concurrently
    started = time.monotonic()
    deadline = started + params["wait_timeout"]
    errors = drainer.run_all(targets, drainer.drain, started, deadline)
    if errors:
        _fail(module, targets, errors, params, False)

    result = build_result(params, targets, False)
    late = [t for t in targets if t.timed_out]
    if not late:
        module.exit_json(**result)

    detail = ", ".join(
        "%s still has %d in flight%s" % (t.label(), t.after["inflight"],
                                         (" (last poll failed: %s)" % t.last_error) if t.last_error else "")
        for t in late)
    msg = "timed out after %.1fs (wait_timeout=%s) waiting for in-flight work to end: %s" % (
        result["waited"], params["wait_timeout"], detail)
    if params["on_timeout"] == "continue":
        module.warn(msg)
        module.exit_json(msg=msg, **result)
    if params["on_timeout"] == "undrain":
        drained = [t for t in targets if t.changed]
        undone = []
        for target in drained:
            try:
                status = drainer.read(target)
                if status["draining"]:
                    target.after = drainer.post(target, target.undrain_path)
                else:
                    target.after = status
                undone.append(target.name)
            except (HttpError, DrainError) as exc:
                msg += "; undraining %s failed: %s" % (target.label(), describe_error(target, exc))
        result = build_result(params, targets, False)
        result["undrained_after_timeout"] = undone
        msg += "; undrained again: %s" % (", ".join(undone) or "nothing (no target was drained by this task)")
    module.fail_json(msg=msg, **result)


if __name__ == "__main__":
    main()
