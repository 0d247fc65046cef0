# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic of opsdeck.stack.hpa_tune (private): no I/O, no Kubernetes client.

- ``validate_params``: every problem with the module's parameters, as a list of
  messages naming the field, the value and what is allowed (never raises).
- ``derive_capacity``: min/max replicas from peak rate, per-pod rate and headroom.
- ``build_desired`` / ``merge_spec`` / ``render_manifest``: the autoscaling/v2 spec
  from friendly keys, merged over an existing HPA (only the fields we manage).
- ``normalize_spec``: fills the API server's defaults (minReplicas 1, selectPolicy
  Max, default scaling rules, default CPU metric) and sorts metrics and policies, so
  "what we want" and "what the server stored" compare equal when they mean the same.
- ``preview``: the step sizes the HPA controller would take at a replica count,
  using the controller's own arithmetic.
"""

from __future__ import annotations

import copy
import json
import math
import re
from fractions import Fraction

API_VERSION = "autoscaling/v2"
KIND = "HorizontalPodAutoscaler"
TARGET_API_VERSION = "apps/v1"
TARGET_KINDS = ("Deployment", "StatefulSet")
TARGET_PLURALS = {"Deployment": "deployments", "StatefulSet": "statefulsets"}
SELECT_POLICIES = {"max": "Max", "min": "Min", "disabled": "Disabled"}
POLICY_TYPES = ("Pods", "Percent")
PERIOD_MIN, PERIOD_MAX = 1, 1800
STABILIZATION_MIN, STABILIZATION_MAX = 0, 3600
UTILIZATION_MAX = 100
UTILIZATION_MAX_OVER = 1000
MAX_DERIVED_REPLICAS = 10000
DEFAULT_PERIOD = 60
DEFAULT_MIN_BASELINE = 2
# The controller's --horizontal-pod-autoscaler-downscale-stabilization default; the API
# server leaves scaleDown.stabilizationWindowSeconds unset when it is not given.
CONTROLLER_DOWNSCALE_STABILIZATION = 300
RESOURCE_METRICS = ("cpu", "memory")
UTILIZATION_PARAMS = (("cpu", "cpu_utilization"), ("memory", "memory_utilization"))

# Server-side defaults of autoscaling/v2 (pkg/apis/autoscaling/v2/defaults.go).
DEFAULT_SCALE_UP = {
    "stabilizationWindowSeconds": 0,
    "selectPolicy": "Max",
    "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15},
        {"type": "Percent", "value": 100, "periodSeconds": 15},
    ],
}
DEFAULT_SCALE_DOWN = {
    "selectPolicy": "Max",
    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
}
DEFAULT_METRIC = {
    "type": "Resource",
    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
}

FRIENDLY_RULE_KEYS = ("percent", "pods", "period", "select", "stabilization")
RAW_RULE_KEYS = ("policies", "selectPolicy", "stabilizationWindowSeconds", "tolerance")
RAW_POLICY_KEYS = ("type", "value", "periodSeconds")
CAPACITY_KEYS = ("peak_rate", "per_pod_rate", "headroom_percent", "min_baseline", "baseline_rate", "unit")
DIRECTIONS = (("scale_up", "scaleUp"), ("scale_down", "scaleDown"))

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


# --------------------------------------------------------------------------- helpers
def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value):
    """``Fraction`` for a finite int/float (or numeric string); ``None`` otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return Fraction(repr(value))
    if isinstance(value, str):
        try:
            number = Fraction(value.strip())
        except (ValueError, ZeroDivisionError):
            return None
        return number
    return None


def _fmt(number):
    """Short human form of a number (``20``, ``12.5``, ``0.33``)."""
    if isinstance(number, Fraction) and number.denominator == 1:
        return str(number.numerator)
    value = float(number)
    if value == int(value):
        return str(int(value))
    return ("%.2f" % value).rstrip("0").rstrip(".")


def _show(value):
    """Render a user value for an error message."""
    if isinstance(value, str):
        return repr(value)
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):  # pragma: no cover - json handles everything with default=str
        return repr(value)


def _check_int(errors, path, value, low=None, high=None, hint=""):
    """Append an error unless ``value`` is an int within ``[low, high]``."""
    if value is None:
        return False
    if not _is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            allowed = "an integer %s..%s" % (low, high)
        elif low is not None:
            allowed = "an integer >= %s" % low
        else:
            allowed = "an integer"
        errors.append("%s: got %s; allowed %s%s" % (path, _show(value), allowed, hint))
        return False
    return True


def _check_name(errors, path, value, pattern, max_len, what):
    if value is None or value == "":
        errors.append("%s: is required (%s)" % (path, what))
        return
    if not isinstance(value, str) or len(value) > max_len or not pattern.match(value):
        errors.append(
            "%s: got %s; allowed a lowercase RFC 1123 name of at most %d characters "
            "(a-z, 0-9, '-'%s)" % (path, _show(value), max_len, ", '.'" if pattern is _DNS_SUBDOMAIN else "")
        )


def select_policy(value):
    """``max``/``Max``/``MAX`` -> ``Max``; ``None`` for an unknown value."""
    if not isinstance(value, str):
        return None
    return SELECT_POLICIES.get(value.strip().lower())


# --------------------------------------------------------------------------- validation
def _validate_friendly_rules(errors, key, rules):
    if rules is None:
        return
    if not isinstance(rules, dict):
        errors.append("%s: got %s; allowed a mapping with keys %s" % (key, _show(rules), ", ".join(FRIENDLY_RULE_KEYS)))
        return
    for unknown in sorted(str(k) for k in rules if k not in FRIENDLY_RULE_KEYS):
        errors.append("%s.%s: unknown key; allowed %s" % (key, unknown, ", ".join(FRIENDLY_RULE_KEYS)))
    select = rules.get("select")
    if select is None:
        select = "max"
    if select_policy(select) is None:
        errors.append("%s.select: got %s; allowed max (the bigger change wins), min (the smaller change wins) "
                      "or disabled" % (key, _show(select)))
    if key == "scale_down":
        _check_int(errors, key + ".percent", rules.get("percent"), 1, 100, " (percent of the current replicas removed per period)")
    else:
        _check_int(errors, key + ".percent", rules.get("percent"), 1, None, " (percent of the current replicas added per period)")
    _check_int(errors, key + ".pods", rules.get("pods"), 1, None, " (pods per period)")
    _check_int(errors, key + ".period", rules.get("period"), PERIOD_MIN, PERIOD_MAX, " seconds")
    _check_int(errors, key + ".stabilization", rules.get("stabilization"), STABILIZATION_MIN, STABILIZATION_MAX, " seconds")
    if rules.get("percent") is None and rules.get("pods") is None and select_policy(select) != "Disabled":
        errors.append("%s: set percent and/or pods (how much one step may change), or select: disabled" % key)


def _validate_raw_rules(errors, path, rules, direction):
    if not isinstance(rules, dict):
        errors.append("%s: got %s; allowed a mapping with keys %s" % (path, _show(rules), ", ".join(RAW_RULE_KEYS)))
        return
    for unknown in sorted(str(k) for k in rules if k not in RAW_RULE_KEYS):
        errors.append("%s.%s: unknown key; allowed %s" % (path, unknown, ", ".join(RAW_RULE_KEYS)))
    select = rules.get("selectPolicy")
    if select is not None and select not in SELECT_POLICIES.values():
        errors.append("%s.selectPolicy: got %s; allowed Max, Min or Disabled" % (path, _show(select)))
    _check_int(errors, path + ".stabilizationWindowSeconds", rules.get("stabilizationWindowSeconds"),
               STABILIZATION_MIN, STABILIZATION_MAX, " seconds")
    tolerance = rules.get("tolerance")
    if tolerance is not None and (_quantity(tolerance) is None or _quantity(tolerance) < 0):
        errors.append("%s.tolerance: got %s; allowed a non-negative quantity such as '0.1' or '50m'" % (path, _show(tolerance)))
    policies = rules.get("policies")
    if policies is None:
        return
    if not isinstance(policies, list) or not policies:
        errors.append("%s.policies: got %s; allowed a non-empty list of {type, value, periodSeconds} "
                      "(omit the key for the Kubernetes defaults)" % (path, _show(policies)))
        return
    for index, policy in enumerate(policies):
        ppath = "%s.policies[%d]" % (path, index)
        if not isinstance(policy, dict):
            errors.append("%s: got %s; allowed a mapping with keys type, value, periodSeconds" % (ppath, _show(policy)))
            continue
        for unknown in sorted(str(k) for k in policy if k not in RAW_POLICY_KEYS):
            errors.append("%s.%s: unknown key; allowed %s" % (ppath, unknown, ", ".join(RAW_POLICY_KEYS)))
        ptype = policy.get("type")
        if ptype not in POLICY_TYPES:
            errors.append("%s.type: got %s; allowed Pods or Percent" % (ppath, _show(ptype)))
        if policy.get("value") is None:
            errors.append("%s.value: is required (an integer >= 1)" % ppath)
        elif ptype == "Percent" and direction == "scaleDown":
            _check_int(errors, ppath + ".value", policy.get("value"), 1, 100)
        else:
            _check_int(errors, ppath + ".value", policy.get("value"), 1, None)
        if policy.get("periodSeconds") is None:
            errors.append("%s.periodSeconds: is required (an integer %d..%d)" % (ppath, PERIOD_MIN, PERIOD_MAX))
        else:
            _check_int(errors, ppath + ".periodSeconds", policy.get("periodSeconds"), PERIOD_MIN, PERIOD_MAX, " seconds")


def _validate_capacity(errors, capacity):
    """Validate ``capacity``; return the derived figures when it is valid."""
    if capacity is None:
        return None
    if not isinstance(capacity, dict):
        errors.append("capacity: got %s; allowed a mapping with keys %s" % (_show(capacity), ", ".join(CAPACITY_KEYS)))
        return None
    before = len(errors)
    for unknown in sorted(str(k) for k in capacity if k not in CAPACITY_KEYS):
        errors.append("capacity.%s: unknown key; allowed %s" % (unknown, ", ".join(CAPACITY_KEYS)))
    for key, what in (("peak_rate", "the total rate to serve at peak"),
                      ("per_pod_rate", "the rate one pod sustains at the target utilisation")):
        value = capacity.get(key)
        number = _number(value)
        if value is None:
            errors.append("capacity.%s: is required (%s, a number > 0)" % (key, what))
        elif number is None or number <= 0:
            errors.append("capacity.%s: got %s; allowed a number > 0 (%s)" % (key, _show(value), what))
    headroom = capacity.get("headroom_percent")
    if headroom is not None:
        number = _number(headroom)
        if number is None or number < 0 or number > 1000:
            errors.append("capacity.headroom_percent: got %s; allowed a number 0..1000 (extra capacity above "
                          "the peak, in percent)" % _show(headroom))
    _check_int(errors, "capacity.min_baseline", capacity.get("min_baseline"), 1, None,
               " (pods always kept running, e.g. 2 for availability)")
    baseline = capacity.get("baseline_rate")
    if baseline is not None:
        number = _number(baseline)
        peak = _number(capacity.get("peak_rate"))
        if number is None or number < 0:
            errors.append("capacity.baseline_rate: got %s; allowed a number >= 0 (the rate always present)" % _show(baseline))
        elif peak is not None and number > peak:
            errors.append("capacity.baseline_rate: got %s; allowed at most peak_rate (%s)" % (_show(baseline), _show(capacity.get("peak_rate"))))
    unit = capacity.get("unit")
    if unit is not None and not isinstance(unit, str):
        errors.append("capacity.unit: got %s; allowed a string such as 'msg/s'" % _show(unit))
    if len(errors) != before:
        return None
    derived = derive_capacity(capacity)
    if derived["max_replicas"] > MAX_DERIVED_REPLICAS:
        errors.append("capacity: derives max_replicas %d, more than %d; check that peak_rate and per_pod_rate use "
                      "the same unit" % (derived["max_replicas"], MAX_DERIVED_REPLICAS))
        return None
    return derived


def validate_params(params):
    """Every problem with the module parameters, as a list of messages (empty: all good).

    Runs before any API call. Never raises, whatever it is given.
    """
    try:
        return _validate_params(params)
    except Exception as exc:  # pragma: no cover - a bug here must still be an error message
        return ["parameters could not be validated (%s: %s)" % (type(exc).__name__, exc)]


def _validate_params(params):
    errors = []
    if not isinstance(params, dict):
        return ["parameters: got %s; allowed a mapping" % _show(params)]
    p = params
    state = p.get("state") or "present"
    if state not in ("present", "absent"):
        errors.append("state: got %s; allowed present or absent" % _show(state))
    _check_name(errors, "name", p.get("name"), _DNS_SUBDOMAIN, 253, "the HorizontalPodAutoscaler's name")
    _check_name(errors, "namespace", p.get("namespace"), _DNS_LABEL, 63, "the namespace of the HPA and its target")
    for key, low in (("wait_timeout", 0), ("wait_sleep", 1), ("preview_replicas", 0)):
        _check_int(errors, key, p.get(key), low, None, " seconds" if key.startswith("wait") else "")
    if state == "absent":
        return errors

    target = p.get("target")
    if target is not None:
        if not isinstance(target, dict):
            errors.append("target: got %s; allowed a mapping {kind, name, api_version}" % _show(target))
        else:
            for unknown in sorted(str(k) for k in target if k not in ("kind", "name", "api_version")):
                errors.append("target.%s: unknown key; allowed kind, name, api_version" % unknown)
            kind = target.get("kind") or "Deployment"
            if kind not in TARGET_KINDS:
                errors.append("target.kind: got %s; allowed %s" % (_show(kind), " or ".join(TARGET_KINDS)))
            _check_name(errors, "target.name", target.get("name"), _DNS_SUBDOMAIN, 253, "the workload to scale")
            api_version = target.get("api_version")
            if api_version is not None and api_version != TARGET_API_VERSION:
                errors.append("target.api_version: got %s; allowed %s" % (_show(api_version), TARGET_API_VERSION))

    over = p.get("allow_over_100") is True
    high = UTILIZATION_MAX_OVER if over else UTILIZATION_MAX
    hint = (" (percent of the containers' requests)" if over else
            " (percent of the containers' requests; set allow_over_100: true to allow up to %d)" % UTILIZATION_MAX_OVER)
    for _resource, key in UTILIZATION_PARAMS:
        _check_int(errors, key, p.get(key), 1, high, hint)

    min_replicas, max_replicas = p.get("min_replicas"), p.get("max_replicas")
    ok_min = _check_int(errors, "min_replicas", min_replicas, 1, None,
                        " (at least one pod; scale to zero is not supported)")
    ok_max = _check_int(errors, "max_replicas", max_replicas, 1, None)
    derived = _validate_capacity(errors, p.get("capacity"))
    eff_min = min_replicas if ok_min else None
    eff_max = max_replicas if ok_max else None
    min_src = max_src = "given"
    if derived is not None:
        if min_replicas is None:
            eff_min, min_src = derived["min_replicas"], "derived from capacity"
        if max_replicas is None:
            eff_max, max_src = derived["max_replicas"], "derived from capacity"
    if eff_min is not None and eff_max is not None and eff_min > eff_max:
        errors.append("min_replicas %d (%s) is greater than max_replicas %d (%s); allowed min_replicas <= max_replicas"
                      % (eff_min, min_src, eff_max, max_src))

    behavior = p.get("behavior")
    if behavior is not None and not isinstance(behavior, dict):
        errors.append("behavior: got %s; allowed a mapping with scaleUp and/or scaleDown" % _show(behavior))
        behavior = None
    if behavior is not None:
        for unknown in sorted(str(k) for k in behavior if k not in ("scaleUp", "scaleDown")):
            errors.append("behavior.%s: unknown key; allowed scaleUp, scaleDown" % unknown)
    for friendly, raw in DIRECTIONS:
        _validate_friendly_rules(errors, friendly, p.get(friendly))
        if behavior is not None and behavior.get(raw) is not None:
            _validate_raw_rules(errors, "behavior." + raw, behavior.get(raw), raw)
            if p.get(friendly) is not None:
                errors.append("%s and behavior.%s: both given; use one of them for each direction" % (friendly, raw))

    labels = p.get("labels")
    if labels is not None:
        if not isinstance(labels, dict):
            errors.append("labels: got %s; allowed a mapping of strings" % _show(labels))
        else:
            for key in sorted(labels, key=str):
                if not isinstance(key, str) or not isinstance(labels[key], str):
                    errors.append("labels.%s: got %s; allowed string keys and values (quote numbers)" % (key, _show(labels[key])))
    return errors


# --------------------------------------------------------------------------- capacity
def derive_capacity(capacity):
    """min/max replicas from capacity figures, with an explanation.

    ``max = ceil(peak_rate * (1 + headroom/100) / per_pod_rate)``;
    ``min = max(min_baseline, ceil(baseline_rate * (1 + headroom/100) / per_pod_rate))``;
    if ``min`` exceeds ``max`` then ``max`` is raised to ``min``. Exact rational arithmetic,
    so 1000 / 50 is 20, not 20.000000000000004 rounded up to 21.
    """
    peak = _number(capacity.get("peak_rate"))
    per_pod = _number(capacity.get("per_pod_rate"))
    headroom = _number(capacity.get("headroom_percent"))
    headroom = Fraction(0) if headroom is None else headroom
    baseline_pods_floor = capacity.get("min_baseline")
    if baseline_pods_floor is None:
        baseline_pods_floor = DEFAULT_MIN_BASELINE
    baseline = _number(capacity.get("baseline_rate"))
    unit = capacity.get("unit") or "req/s"
    factor = 1 + headroom / 100
    needed = peak * factor
    max_replicas = max(1, int(math.ceil(needed / per_pod)))
    lines = [
        "max_replicas %d = ceil(peak %s %s x %s (%s %% headroom) / %s %s per pod) = ceil(%s)"
        % (max_replicas, _fmt(peak), unit, _fmt(factor), _fmt(headroom), _fmt(per_pod), unit, _fmt(needed / per_pod))
    ]
    min_replicas = baseline_pods_floor
    min_reason = "min_baseline %d (pods always running)" % baseline_pods_floor
    if baseline is not None:
        baseline_pods = int(math.ceil(baseline * factor / per_pod))
        if baseline_pods > baseline_pods_floor:
            min_replicas = baseline_pods
            min_reason = ("ceil(baseline %s %s x %s / %s %s per pod) = %d, above min_baseline %d"
                          % (_fmt(baseline), unit, _fmt(factor), _fmt(per_pod), unit, baseline_pods, baseline_pods_floor))
        else:
            min_reason += "; the baseline %s %s needs only %d" % (_fmt(baseline), unit, baseline_pods)
    lines.append("min_replicas %d = %s" % (min_replicas, min_reason))
    raised = False
    if min_replicas > max_replicas:
        lines.append("max_replicas raised from %d to %d so that it is not below min_replicas" % (max_replicas, min_replicas))
        max_replicas = min_replicas
        raised = True
    lines.append("at %d pods the fleet serves up to %s %s, at %d pods %s %s"
                 % (max_replicas, _fmt(per_pod * max_replicas), unit, min_replicas, _fmt(per_pod * min_replicas), unit))
    return {
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "max_raised_to_min": raised,
        "pods_for_peak": int(math.ceil(peak / per_pod)),
        "capacity_at_max": float(per_pod * max_replicas),
        "capacity_at_min": float(per_pod * min_replicas),
        "unit": unit,
        "explanation": "; ".join(lines),
    }


# --------------------------------------------------------------------------- building
def friendly_rules(rules):
    """``{percent, pods, period, select, stabilization}`` -> HPAScalingRules dict."""
    out = {}
    if rules.get("stabilization") is not None:
        out["stabilizationWindowSeconds"] = rules["stabilization"]
    period = rules.get("period")
    if period is None:
        period = DEFAULT_PERIOD
    policies = []
    if rules.get("percent") is not None:
        policies.append({"type": "Percent", "value": rules["percent"], "periodSeconds": period})
    if rules.get("pods") is not None:
        policies.append({"type": "Pods", "value": rules["pods"], "periodSeconds": period})
    if policies:
        out["policies"] = policies
    out["selectPolicy"] = select_policy(rules.get("select") or "max")
    return out


def resource_metric(resource, utilization):
    return {
        "type": "Resource",
        "resource": {"name": resource, "target": {"type": "Utilization", "averageUtilization": utilization}},
    }


def build_desired(params):
    """The fields this task manages, from validated params.

    Returns ``(desired, derived)``: ``desired`` maps spec field -> value for the fields
    the user set (``scaleTargetRef``, ``minReplicas``, ``maxReplicas``, ``metrics`` (the
    cpu/memory Resource metrics), ``behavior`` (only the directions given) and
    ``labels``); ``derived`` is ``derive_capacity``'s result or ``None``.
    """
    desired = {}
    target = params.get("target")
    if target:
        desired["scaleTargetRef"] = {
            "apiVersion": target.get("api_version") or TARGET_API_VERSION,
            "kind": target.get("kind") or "Deployment",
            "name": target.get("name"),
        }
    derived = derive_capacity(params["capacity"]) if params.get("capacity") else None
    min_replicas = params.get("min_replicas")
    max_replicas = params.get("max_replicas")
    if derived is not None:
        if min_replicas is None:
            min_replicas = derived["min_replicas"]
        if max_replicas is None:
            max_replicas = derived["max_replicas"]
    if min_replicas is not None:
        desired["minReplicas"] = min_replicas
    if max_replicas is not None:
        desired["maxReplicas"] = max_replicas
    metrics = [resource_metric(resource, params[key]) for resource, key in UTILIZATION_PARAMS
               if params.get(key) is not None]
    if metrics:
        desired["metrics"] = metrics
    behavior = {}
    raw = params.get("behavior") or {}
    for friendly, direction in DIRECTIONS:
        if params.get(friendly) is not None:
            behavior[direction] = friendly_rules(params[friendly])
        elif raw.get(direction) is not None:
            behavior[direction] = copy.deepcopy(raw[direction])
    if behavior:
        desired["behavior"] = behavior
    if params.get("labels"):
        desired["labels"] = dict(params["labels"])
    return desired, derived


def _is_managed_metric(metric):
    return (isinstance(metric, dict) and metric.get("type") == "Resource"
            and isinstance(metric.get("resource"), dict) and metric["resource"].get("name") in RESOURCE_METRICS)


def merge_spec(live_spec, desired):
    """``live_spec`` (or nothing) with the managed fields of ``desired`` applied.

    Fields not managed are kept as they are. When cpu/memory utilisation is managed,
    the cpu/memory Resource metrics become exactly the ones asked for; other metrics
    (Pods, Object, External, ContainerResource...) are kept. Behaviour is managed per
    direction.
    """
    spec = copy.deepcopy(live_spec) if isinstance(live_spec, dict) else {}
    out = {}
    # keep a stable, readable key order: ours first, then whatever else the live spec has
    for key in ("scaleTargetRef", "minReplicas", "maxReplicas"):
        if key in desired:
            out[key] = copy.deepcopy(desired[key])
        elif key in spec:
            out[key] = spec[key]
    if "metrics" in desired:
        others = [m for m in (spec.get("metrics") or []) if not _is_managed_metric(m)]
        out["metrics"] = copy.deepcopy(desired["metrics"]) + others
    elif "metrics" in spec:
        out["metrics"] = spec["metrics"]
    if "behavior" in desired:
        behavior = copy.deepcopy(spec.get("behavior")) if isinstance(spec.get("behavior"), dict) else {}
        merged = {}
        for _friendly, direction in DIRECTIONS:
            if direction in desired["behavior"]:
                merged[direction] = copy.deepcopy(desired["behavior"][direction])
            elif direction in behavior:
                merged[direction] = behavior[direction]
        for key, value in behavior.items():
            merged.setdefault(key, value)
        out["behavior"] = merged
    elif "behavior" in spec:
        out["behavior"] = spec["behavior"]
    for key, value in spec.items():
        out.setdefault(key, value)
    return out


def missing_for_create(spec):
    """What a new HPA still needs, as messages (empty when it can be created)."""
    missing = []
    ref = spec.get("scaleTargetRef") or {}
    if not ref.get("name"):
        missing.append("target.name (the Deployment or StatefulSet to scale)")
    if spec.get("maxReplicas") is None:
        missing.append("max_replicas (or capacity to derive it)")
    if not spec.get("metrics"):
        missing.append("cpu_utilization and/or memory_utilization")
    return missing


def validate_spec(spec, live_exists=False):
    """Problems of a merged spec that only show once the live HPA is known."""
    errors = []
    min_replicas = spec.get("minReplicas")
    min_replicas = 1 if min_replicas is None else min_replicas
    max_replicas = spec.get("maxReplicas")
    if _is_int(min_replicas) and _is_int(max_replicas) and min_replicas > max_replicas:
        where = " after merging with the existing HPA" if live_exists else ""
        errors.append("minReplicas %d is greater than maxReplicas %d%s; set both min_replicas and max_replicas"
                      % (min_replicas, max_replicas, where))
    return errors


def render_manifest(name, namespace, spec, labels=None, base=None):
    """The full HPA object: ``base`` (a live object or file) with ``spec`` and labels applied."""
    if base:
        manifest = copy.deepcopy(base)
        manifest.pop("status", None)
        metadata = manifest.setdefault("metadata", {})
        metadata.pop("managedFields", None)
    else:
        manifest = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name, "namespace": namespace}}
        metadata = manifest["metadata"]
    if labels:
        merged = dict(metadata.get("labels") or {})
        merged.update(labels)
        metadata["labels"] = merged
    manifest["spec"] = copy.deepcopy(spec)
    return manifest


def labels_match(metadata, labels):
    current = (metadata or {}).get("labels") or {}
    return all(current.get(key) == value for key, value in (labels or {}).items())


# --------------------------------------------------------------------------- normalising
def _quantity(value):
    """A Kubernetes quantity (``'0.1'``, ``'100m'``, ``0.1``) as a Fraction; ``None`` if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return _number(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.endswith("m"):
        number = _number(text[:-1])
        return None if number is None else number / 1000
    return _number(text)


def _strip_none(value):
    if isinstance(value, dict):
        return dict((k, _strip_none(v)) for k, v in value.items() if v is not None)
    if isinstance(value, list):
        return [_strip_none(v) for v in value]
    return value


def _sort_key(value):
    return json.dumps(value, sort_keys=True, default=str)


def _norm_rules(rules, default):
    rules = rules if isinstance(rules, dict) else {}
    out = {"selectPolicy": rules.get("selectPolicy") or default["selectPolicy"]}
    window = rules.get("stabilizationWindowSeconds")
    if window is None:
        window = default.get("stabilizationWindowSeconds")
    if window is not None:
        out["stabilizationWindowSeconds"] = window
    policies = rules.get("policies")
    if policies is None:
        policies = default["policies"]
    out["policies"] = sorted(
        (_strip_none(p) for p in policies if isinstance(p, dict)),
        key=lambda p: (str(p.get("type")), _sort_key(p.get("value")), _sort_key(p.get("periodSeconds"))),
    )
    tolerance = rules.get("tolerance")
    if tolerance is not None:
        number = _quantity(tolerance)
        out["tolerance"] = _fmt(number) if number is not None else tolerance
    return out


def normalize_spec(spec):
    """The effective HPA spec with the API server's defaults filled and lists sorted.

    Two specs that normalise equal make the controller behave the same, so this is what
    idempotence and diffs compare.
    """
    spec = spec if isinstance(spec, dict) else {}
    out = {}
    ref = spec.get("scaleTargetRef") if isinstance(spec.get("scaleTargetRef"), dict) else {}
    out["scaleTargetRef"] = dict((k, ref.get(k)) for k in ("apiVersion", "kind", "name") if ref.get(k) is not None)
    out["minReplicas"] = spec.get("minReplicas") if spec.get("minReplicas") is not None else 1
    out["maxReplicas"] = spec.get("maxReplicas")
    metrics = spec.get("metrics") or [DEFAULT_METRIC]
    out["metrics"] = sorted((_strip_none(copy.deepcopy(m)) for m in metrics), key=_sort_key)
    behavior = spec.get("behavior") if isinstance(spec.get("behavior"), dict) else {}
    out["behavior"] = {
        "scaleUp": _norm_rules(behavior.get("scaleUp"), DEFAULT_SCALE_UP),
        "scaleDown": _norm_rules(behavior.get("scaleDown"), DEFAULT_SCALE_DOWN),
    }
    return out


def specs_equivalent(left, right):
    return normalize_spec(left) == normalize_spec(right)


# --------------------------------------------------------------------------- preview maths
def _up_proposal(current, policy):
    if policy["type"] == "Pods":
        return current + policy["value"]
    # same float64 arithmetic as the controller: ceil(R * (1 + p/100))
    return int(math.ceil(float(current) * (1 + float(policy["value"]) / 100)))


def _down_proposal(current, policy):
    if policy["type"] == "Pods":
        return current - policy["value"]
    # the controller truncates: int32(R * (1 - p/100))
    return int(float(current) * (1 - float(policy["value"]) / 100))


def step(direction, current, rules, min_replicas, max_replicas):
    """One controller step from ``current`` replicas under sustained pressure.

    Returns ``(next_replicas, winning_policies, proposals)`` where ``proposals`` lists
    each policy with the replica count it allows. Mirrors the HPA controller's
    calculateScaleUpLimitWithScalingRules / calculateScaleDownLimitWithBehaviors and
    the min/max clamping in normalizeDesiredReplicasWithBehaviors.
    """
    select = rules.get("selectPolicy") or "Max"
    policies = [p for p in rules.get("policies") or [] if isinstance(p, dict)
                and p.get("type") in POLICY_TYPES and _is_int(p.get("value")) and _is_int(p.get("periodSeconds"))]
    proposals = []
    for policy in policies:
        value = _up_proposal(current, policy) if direction == "up" else _down_proposal(current, policy)
        proposals.append({"type": policy["type"], "value": policy["value"],
                          "period_seconds": policy["periodSeconds"], "allows": value})
    if select == "Disabled" or not proposals:
        return current, [], proposals
    values = [p["allows"] for p in proposals]
    if direction == "up":
        limit = max(values) if select == "Max" else min(values)
        limit = max(limit, current)
        nxt = min(limit, max_replicas) if current < max_replicas else current
        if current < min_replicas:
            nxt = min_replicas
    else:
        limit = min(values) if select == "Max" else max(values)
        limit = min(limit, current)
        nxt = max(limit, min_replicas) if current > min_replicas else current
        if current > max_replicas:
            nxt = max_replicas
    winners = [p for p in proposals if p["allows"] == limit]
    return nxt, winners, proposals


def _describe(direction, current, nxt, rules, proposals):
    """One sentence, in terms of the change (select Max = the larger change wins)."""
    select = rules.get("selectPolicy") or "Max"
    if select == "Disabled":
        return "scaling %s is disabled (selectPolicy: Disabled)" % direction
    sign = "+" if direction == "up" else "-"
    parts = []
    for p in proposals:
        what = "%s%d %%" % (sign, p["value"]) if p["type"] == "Percent" else \
            "%s%d pod%s" % (sign, p["value"], "" if p["value"] == 1 else "s")
        parts.append("%s = %d" % (what, abs(p["allows"] - current)))
    verb = "adds" if direction == "up" else "removes"
    changes = [abs(p["allows"] - current) for p in proposals]
    chosen = (max if select == "Max" else min)(changes) if changes else 0
    text = "at %d replicas the next scale-%s %s %s(%s) = %d -> %d replicas" % (
        current, direction, verb, select.lower(), ", ".join(parts), chosen, nxt)
    if abs(nxt - current) != chosen:
        text += " (limited by %s)" % ("max_replicas" if direction == "up" else "min_replicas")
    return text


def _path(direction, start, rules, min_replicas, max_replicas, window, limit=500):
    steps = [start]
    seconds = 0
    current = start
    while len(steps) <= limit:
        nxt, winners, _proposals = step(direction, current, rules, min_replicas, max_replicas)
        if nxt == current:
            break
        if len(steps) > 1:
            seconds += min(p["period_seconds"] for p in winners) if winners else 0
        steps.append(nxt)
        current = nxt
    return {
        "replicas": steps,
        "steps": len(steps) - 1,
        "seconds": (window + seconds) if len(steps) > 1 else 0,
        "truncated": len(steps) > limit,
    }


def preview(spec, current=None, source=None):
    """Step sizes at ``current`` replicas and the full ramps min->max and max->min.

    The ramps assume sustained pressure (every sync wants the largest allowed step) and
    ignore metric lag and the 15 s sync period: they are lower bounds on real time.
    """
    n = normalize_spec(spec)
    min_replicas, max_replicas = n["minReplicas"], n["maxReplicas"]
    if not _is_int(max_replicas):
        return None
    if current is None:
        current, source = min_replicas, "min_replicas (no current replica count known)"
    up_rules, down_rules = n["behavior"]["scaleUp"], n["behavior"]["scaleDown"]
    down_window = down_rules.get("stabilizationWindowSeconds")
    down_window_note = ""
    if down_window is None:
        down_window = CONTROLLER_DOWNSCALE_STABILIZATION
        down_window_note = " (controller default)"
    up_window = up_rules.get("stabilizationWindowSeconds") or 0
    result = {"current_replicas": current, "current_replicas_source": source,
              "min_replicas": min_replicas, "max_replicas": max_replicas}
    if current == 0:
        result["note"] = "the target has 0 replicas: the HPA does not scale it until it has at least one"
    for direction, key, rules, window, note in (("up", "scale_up", up_rules, up_window, ""),
                                                ("down", "scale_down", down_rules, down_window, down_window_note)):
        nxt, _winners, proposals = step(direction, current, rules, min_replicas, max_replicas)
        summary = _describe(direction, current, nxt, rules, proposals)
        if direction == "up" and current >= max_replicas and rules.get("selectPolicy") != "Disabled":
            summary += " (already at max_replicas)"
        if direction == "down" and current <= min_replicas and rules.get("selectPolicy") != "Disabled":
            summary += " (already at min_replicas)"
        if direction == "down" and rules.get("selectPolicy") != "Disabled":
            summary += ", once the load has stayed lower for the %d s stabilization window%s" % (window, note)
        result[key] = {
            "next_replicas": nxt,
            "change": abs(nxt - current),
            "select_policy": rules.get("selectPolicy"),
            "stabilization_seconds": window,
            "policies": proposals,
            "summary": summary,
        }
    result["min_to_max"] = _path("up", min_replicas, up_rules, min_replicas, max_replicas, up_window)
    result["max_to_min"] = _path("down", max_replicas, down_rules, min_replicas, max_replicas, down_window)
    return result


# --------------------------------------------------------------------------- preflight / status helpers
def containers_missing_requests(pod_spec, resources):
    """``{resource: [container names]}`` of containers lacking ``resources.requests.<resource>``.

    Pod-level requests (``spec.resources.requests``) count for every container.
    """
    pod_spec = pod_spec if isinstance(pod_spec, dict) else {}
    pod_requests = ((pod_spec.get("resources") or {}).get("requests") or {})
    missing = {}
    for resource in resources:
        if resource in pod_requests:
            continue
        names = []
        for container in pod_spec.get("containers") or []:
            requests = ((container.get("resources") or {}).get("requests") or {})
            if resource not in requests:
                names.append(container.get("name") or "?")
        if names:
            missing[resource] = names
    return missing


def utilization_resources(spec):
    """Resource names of the spec's Resource/Utilization metrics (need container requests)."""
    names = []
    for metric in (spec or {}).get("metrics") or []:
        if not isinstance(metric, dict) or metric.get("type") != "Resource":
            continue
        resource = metric.get("resource") or {}
        if (resource.get("target") or {}).get("type") == "Utilization" and resource.get("name") not in names:
            names.append(resource.get("name"))
    return names


def same_target(ref_a, ref_b):
    """Whether two scaleTargetRefs point at the same workload (group versions may differ)."""
    if not isinstance(ref_a, dict) or not isinstance(ref_b, dict):
        return False

    def group(ref):
        api_version = ref.get("apiVersion") or TARGET_API_VERSION
        return api_version.split("/")[0] if "/" in api_version else ""

    return (ref_a.get("kind") or "Deployment") == (ref_b.get("kind") or "Deployment") \
        and ref_a.get("name") == ref_b.get("name") and group(ref_a) == group(ref_b)


def conditions(status):
    return [c for c in ((status or {}).get("conditions") or []) if isinstance(c, dict)]


def scaling_active(status):
    return any(c.get("type") == "ScalingActive" and c.get("status") == "True" for c in conditions(status))


def condition_summary(status):
    items = conditions(status)
    if not items:
        return "no conditions reported yet"
    return "; ".join("%s=%s (%s: %s)" % (c.get("type"), c.get("status"), c.get("reason") or "-", c.get("message") or "-")
                     for c in items)
