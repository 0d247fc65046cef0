#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Create, tune or remove an autoscaling/v2 (or v2beta2) HorizontalPodAutoscaler."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: hpa_tune
short_description: Create, tune or remove a Kubernetes autoscaling/v2 (or v2beta2) HorizontalPodAutoscaler
version_added: 0.1.0
description:
  - Creates, tunes or removes an C(autoscaling/v2) HorizontalPodAutoscaler (HPA) for a
    Deployment or StatefulSet - replica bounds, CPU and memory utilisation targets and
    the scale-up/scale-down behaviour - from friendly keys or a raw O(behavior) block.
  - Refuses nonsense before any API call, with one error that lists every problem
    (V(min_replicas > max_replicas), utilisation out of range, C(periodSeconds) outside
    1..1800, stabilisation outside 0..3600, an unknown select policy, ...).
  - Before writing, a preflight (O(preflight)) checks that every container of the target
    has a request for each utilisation metric (and names the ones that do not), that the
    metrics API (C(metrics.k8s.io)) is available, and that no other HPA or KEDA
    ScaledObject already scales the target.
  - Only the fields you set are managed; the rest of an existing HPA is left alone. The
    comparison normalises the API server's defaults (C(selectPolicy Max), the default
    scaling rules, C(minReplicas 1)) and the order of metrics and policies, so a second
    run reports no change.
  - Can derive O(min_replicas) and O(max_replicas) from capacity figures (O(capacity)) and
    explains the result in RV(capacity_explanation).
  - Returns a preview of the step sizes the HPA controller will take at the current
    replica count, computed with the controller's own arithmetic (RV(preview)).
  - With O(dest) the manifest is written to a file instead (GitOps); no cluster is contacted.
  - Speaks the HPA version the API server serves (O(api_version)) - C(autoscaling/v2) from
    Kubernetes 1.23, C(autoscaling/v2beta2) on older servers (1.12 to 1.22, where the same
    fields have the same meaning).
author:
  - opsdeck maintainers (@opsdeck)
extends_documentation_fragment:
  - opsdeck.stack.attributes
attributes:
  check_mode:
    details: >-
      Reads only. When a change is predicted the new object is sent with server-side
      dry-run (C(dryRun=All)), which validates it without persisting it; if the account
      may not do that, the local prediction is returned with a warning.
requirements:
  - kubernetes >= 24.2.0 (Python client; not needed with O(dest))
  - PyYAML (for O(dest))
options:
  name:
    description: Name of the HorizontalPodAutoscaler.
    type: str
    required: true
  namespace:
    description: Namespace of the HPA and of its target.
    type: str
    required: true
  state:
    description:
      - V(present) creates or tunes the HPA, V(absent) deletes it (or the O(dest) file).
    type: str
    choices: [present, absent]
    default: present
  target:
    description:
      - The workload the HPA scales (C(spec.scaleTargetRef)).
      - Required to create an HPA; when tuning an existing one it may be left out.
    type: dict
    suboptions:
      kind:
        description: Kind of the workload.
        type: str
        default: Deployment
        choices: [Deployment, StatefulSet]
      name:
        description: Name of the workload.
        type: str
        required: true
      api_version:
        description: API version of the workload.
        type: str
        default: apps/v1
  min_replicas:
    description:
      - Lowest replica count (at least 1). Kubernetes defaults it to 1 on creation.
      - Left unchanged on an existing HPA when not given (unless O(capacity) derives it).
    type: int
    aliases: [min]
  max_replicas:
    description:
      - Highest replica count. Required to create an HPA unless O(capacity) derives it.
    type: int
    aliases: [max]
  cpu_utilization:
    description:
      - Target average CPU utilisation, in percent of the containers' CPU requests.
      - Allowed 1..100, or 1..1000 with O(allow_over_100=true).
      - When O(cpu_utilization) or O(memory_utilization) is given, the HPA's cpu and memory
        C(Resource) metrics become exactly those given (a resource left out is removed);
        other metric types (Pods, Object, External, ContainerResource) are kept.
        When neither is given the metrics are left unchanged.
    type: int
    aliases: [cpu]
  memory_utilization:
    description:
      - Target average memory utilisation, in percent of the containers' memory requests.
      - Same range and rules as O(cpu_utilization).
    type: int
    aliases: [memory]
  allow_over_100:
    description:
      - Allow utilisation targets above 100 (up to 1000).
      - Kubernetes accepts them (utilisation is relative to the request, and usage may
        exceed it up to the limit), but a target above 100 % means pods run above their
        request before the HPA reacts, which is rarely what was meant, so it must be asked for.
    type: bool
    default: false
  scale_up:
    description:
      - Scale-up behaviour with friendly keys, rendered to C(spec.behavior.scaleUp).
      - 'Example: O(scale_up) C({percent: 50, pods: 2, period: 60, select: max, stabilization: 0})
        = up by the larger of +50 % or +2 pods per 60 s.'
      - Mutually exclusive with O(behavior) key C(scaleUp).
    type: dict
    suboptions:
      percent:
        description: Percent of the current replicas that may be added per O(scale_up.period) (at least 1).
        type: int
      pods:
        description: Pods that may be added per O(scale_up.period) (at least 1).
        type: int
      period:
        description: Policy period in seconds (C(periodSeconds)), 1..1800.
        type: int
        default: 60
      select:
        description:
          - Which policy wins when both O(scale_up.percent) and O(scale_up.pods) are set.
          - V(max) the larger change, V(min) the smaller change, V(disabled) never scale up.
          - One of V(max), V(min), V(disabled) (case-insensitive); anything else is refused.
        type: str
        default: max
      stabilization:
        description: Stabilisation window in seconds (0..3600). Kubernetes' default for scale-up is 0.
        type: int
  scale_down:
    description:
      - Scale-down behaviour with friendly keys, rendered to C(spec.behavior.scaleDown).
      - 'Example: O(scale_down) C({percent: 10, pods: 1, period: 60, select: min, stabilization: 300})
        = down by the smaller of -10 % or -1 pod per 60 s, after a 300 s window.'
      - Mutually exclusive with O(behavior) key C(scaleDown).
    type: dict
    suboptions:
      percent:
        description: Percent of the current replicas that may be removed per period (1..100).
        type: int
      pods:
        description: Pods that may be removed per period (at least 1).
        type: int
      period:
        description: Policy period in seconds (C(periodSeconds)), 1..1800.
        type: int
        default: 60
      select:
        description: V(max) the larger change wins, V(min) the smaller change wins, V(disabled) never scale down.
        type: str
        default: max
      stabilization:
        description:
          - Stabilisation window in seconds (0..3600). When not given the controller's
            default applies (300 s unless the cluster changed it).
        type: int
  behavior:
    description:
      - Raw C(spec.behavior) passthrough (C(scaleUp) and/or C(scaleDown) in Kubernetes'
        own field names), for what the friendly keys do not cover (for example
        different periods per policy, or C(tolerance) on clusters that support it).
      - Validated like the friendly keys. A direction given both here and in
        O(scale_up)/O(scale_down) is refused.
    type: dict
  capacity:
    description:
      - Derive O(min_replicas) and O(max_replicas) from capacity figures. An explicit
        O(min_replicas) or O(max_replicas) overrides the derived value.
      - V(max_replicas = ceil(peak_rate x (1 + headroom_percent/100) / per_pod_rate));
        V(min_replicas = max(min_baseline, ceil(baseline_rate x (1 + headroom_percent/100) / per_pod_rate)));
        if that minimum exceeds the maximum, the maximum is raised to it.
      - The reasoning is returned in RV(capacity_explanation).
    type: dict
    suboptions:
      peak_rate:
        description: Total rate to serve at peak (for example 1000 msg/s).
        type: float
        required: true
      per_pod_rate:
        description: Rate one pod sustains at the target utilisation (for example 50 msg/s).
        type: float
        required: true
      headroom_percent:
        description: Extra capacity above the peak, in percent (0..1000).
        type: float
        default: 0
      min_baseline:
        description: Pods always kept running (availability floor).
        type: int
        default: 2
      baseline_rate:
        description: Rate that is always present; raises the minimum when it needs more than O(capacity.min_baseline) pods.
        type: float
      unit:
        description: Unit of the rates, used in the explanation only.
        type: str
        default: req/s
  labels:
    description: Labels to set on the HPA (other labels are kept).
    type: dict
  preflight:
    description:
      - Check the target before writing - it exists, each of its containers has a request
        for every utilisation metric, C(metrics.k8s.io) is available, and no other HPA or
        KEDA ScaledObject scales it. Every problem is reported at once.
      - Not run with O(dest) (no cluster is contacted) or O(state=absent).
    type: bool
    default: true
  wait:
    description:
      - Wait until the HPA reports the condition C(ScalingActive=True); fail with the HPA's
        condition messages otherwise. Ignored in check mode and with O(dest).
    type: bool
    default: false
  wait_timeout:
    description: How long to wait, in seconds.
    type: int
    default: 120
  wait_sleep:
    description: Seconds between two checks while waiting.
    type: int
    default: 5
  preview_replicas:
    description:
      - Replica count at which to compute RV(preview). Defaults to the HPA's current
        replicas, else the target's replicas, else the minimum.
    type: int
  api_version:
    description:
      - API version of the HorizontalPodAutoscaler.
      - V(auto) asks the API server which autoscaling versions it serves and uses
        C(autoscaling/v2), or C(autoscaling/v2beta2) on a server without it (Kubernetes
        1.22 and older); with O(dest), the version of the existing file, else C(autoscaling/v2).
      - Both versions have the same fields and defaults for everything this module manages.
    type: str
    choices: [auto, autoscaling/v2, autoscaling/v2beta2]
    default: auto
  dest:
    description:
      - Write the manifest to this file instead of applying it (GitOps mode). The file is
        only rewritten when the managed fields change; an existing file must hold this
        one HPA, whose other fields are kept.
      - With O(state=absent) the file is removed.
      - The connection options, O(preflight) and O(wait) are not used in this mode.
    type: path
  kubeconfig:
    description:
      - Path to a kubeconfig file, or the kubeconfig as a dictionary. Without it (and
        without O(host) credentials) the in-cluster service account is tried, then the
        default kubeconfig (E(KUBECONFIG) or C(~/.kube/config)).
      - Can also be set with E(K8S_AUTH_KUBECONFIG).
    type: raw
  context:
    description: Name of a context in the kubeconfig. Can also be set with E(K8S_AUTH_CONTEXT).
    type: str
  host:
    description: URL of the API server. Can also be set with E(K8S_AUTH_HOST).
    type: str
  api_key:
    description: Bearer token for the API server. Can also be set with E(K8S_AUTH_API_KEY).
    type: str
  validate_certs:
    description: Whether to verify the API server's TLS certificate. Can also be set with E(K8S_AUTH_VERIFY_SSL).
    type: bool
    aliases: [verify_ssl]
  ca_cert:
    description: CA certificate (full chain) to verify the API server. Can also be set with E(K8S_AUTH_SSL_CA_CERT).
    type: path
    aliases: [ssl_ca_cert]
  client_cert:
    description: Client certificate for the API server. Can also be set with E(K8S_AUTH_CERT_FILE).
    type: path
    aliases: [cert_file]
  client_key:
    description: Key of O(client_cert). Can also be set with E(K8S_AUTH_KEY_FILE).
    type: path
    aliases: [key_file]
  proxy:
    description:
      - URL of an HTTP proxy for the API connection. Can also be set with E(K8S_AUTH_PROXY).
      - Proxy settings of the environment (E(HTTPS_PROXY)) are not used.
    type: str
notes:
  - The connection options have the names, aliases and environment variables of
    M(kubernetes.core.k8s), so existing connection variables can be reused.
  - An HPA scales on utilisation relative to container requests. A container without a
    request for a metric's resource makes the HPA report C(ScalingActive=False); the
    preflight catches that before writing.
  - Updates replace the object with the merged spec using its C(resourceVersion); if the
    HPA changed in between, the task re-reads it and tries once more.
seealso:
  - name: Horizontal Pod Autoscaling
    description: How the HPA controller computes replicas and applies scaling behaviour.
    link: https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/
  - module: kubernetes.core.k8s
"""

EXAMPLES = r"""
- name: Autoscale api (2-20 pods, CPU 70 %, memory 80 %; up by max(+50 %, +2 pods) per 60 s, down by min(-10 %, -1 pod) after 300 s)
  opsdeck.stack.hpa_tune:
    name: api-hpa
    namespace: shop-prod
    target:
      kind: Deployment
      name: api
    min_replicas: 2
    max_replicas: 20
    cpu_utilization: 70
    memory_utilization: 80
    scale_up: {percent: 50, pods: 2, period: 60, select: max, stabilization: 0}
    scale_down: {percent: 10, pods: 1, period: 60, select: min, stabilization: 300}
    wait: true

- name: Derive the bounds from capacity (1000 msg/s at peak, 50 msg/s per pod, 20 % headroom)
  opsdeck.stack.hpa_tune:
    name: api-hpa
    namespace: shop-prod
    capacity:
      peak_rate: 1000
      per_pod_rate: 50
      headroom_percent: 20
      min_baseline: 2
      unit: msg/s
  register: sized

- name: Show why
  ansible.builtin.debug:
    msg: "{{ sized.capacity_explanation }} / {{ sized.preview.scale_up.summary }}"

- name: Scale earlier (CPU 60 %) without touching anything else
  opsdeck.stack.hpa_tune:
    name: api-hpa
    namespace: shop-prod
    cpu_utilization: 60
    memory_utilization: 80

- name: Raw behavior for per-policy periods
  opsdeck.stack.hpa_tune:
    name: api-hpa
    namespace: shop-prod
    behavior:
      scaleUp:
        policies:
          - {type: Pods, value: 4, periodSeconds: 15}
          - {type: Percent, value: 100, periodSeconds: 60}
        selectPolicy: Max

- name: GitOps - write the manifest into the repository instead of applying it
  opsdeck.stack.hpa_tune:
    name: api-hpa
    namespace: shop-prod
    target: {name: api}
    min_replicas: 2
    max_replicas: 20
    cpu_utilization: 70
    dest: "{{ playbook_dir }}/gitops/shop-prod/api-hpa.yaml"

- name: Remove the autoscaler
  opsdeck.stack.hpa_tune:
    name: api-hpa
    namespace: shop-prod
    state: absent
"""

RETURN = r"""
action:
  description: What was (or in check mode would be) done.
  returned: always
  type: str
  sample: updated
  choices: [created, updated, deleted, unchanged, absent, written]
api_version:
  description: The HPA API version spoken (see O(api_version)).
  returned: when O(state=present), or O(state=absent) against a cluster
  type: str
  sample: autoscaling/v2beta2
manifest:
  description: The full HPA manifest that was (or would be) applied or written.
  returned: when O(state=present)
  type: dict
  sample:
    apiVersion: autoscaling/v2
    kind: HorizontalPodAutoscaler
    metadata: {name: api-hpa, namespace: shop-prod}
    spec:
      scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: api}
      minReplicas: 2
      maxReplicas: 20
hpa:
  description: The HPA as the API server returned it (after the write, or the dry-run in check mode).
  returned: when O(state=present) and O(dest) is not set
  type: dict
spec:
  description: The effective managed spec after the task, with server defaults filled in.
  returned: when O(state=present)
  type: dict
preview:
  description:
    - Step sizes the HPA controller would take, using its own arithmetic
      (scale-up percent rounds up, scale-down percent rounds down; then clamped to min/max).
    - C(min_to_max) and C(max_to_min) are the fastest ramps under sustained pressure;
      their C(seconds) ignore metric lag and the 15 s sync period.
  returned: when O(state=present)
  type: dict
  contains:
    current_replicas:
      description: Replica count the preview starts from.
      type: int
    current_replicas_source:
      description: Where that count came from.
      type: str
    scale_up:
      description: Next scale-up step (C(next_replicas), C(change), C(policies) with what each allows, C(summary)).
      type: dict
    scale_down:
      description: Next scale-down step, same keys as C(scale_up).
      type: dict
    min_to_max:
      description: Replica counts from min to max (C(replicas), C(steps), C(seconds)).
      type: dict
    max_to_min:
      description: Replica counts from max to min, including the stabilisation window.
      type: dict
  sample:
    current_replicas: 4
    scale_up:
      next_replicas: 6
      summary: at 4 replicas the next scale-up adds max(+50 % = 2, +2 pods = 2) = 2 -> 6 replicas
    scale_down:
      next_replicas: 3
      summary: >-
        at 4 replicas the next scale-down removes min(-10 % = 1, -1 pod = 1) = 1 -> 3 replicas,
        once the load has stayed lower for the 300 s stabilization window
    min_to_max: {replicas: [2, 4, 6, 9, 14, 20], steps: 5, seconds: 240}
capacity_explanation:
  description: How O(capacity) turned into min/max replicas.
  returned: when O(capacity) is given
  type: str
  sample: >-
    max_replicas 20 = ceil(peak 1000 msg/s x 1 (0 % headroom) / 50 msg/s per pod) = ceil(20);
    min_replicas 2 = min_baseline 2 (pods always running); at 20 pods the fleet serves up to 1000 msg/s, at 2 pods 100 msg/s
derived_replicas:
  description: min/max replicas derived from O(capacity) (before explicit overrides).
  returned: when O(capacity) is given
  type: dict
  sample: {min_replicas: 2, max_replicas: 20}
dest:
  description: The file written in GitOps mode.
  returned: when O(dest) is set
  type: str
dry_run:
  description: Whether the predicted object was validated by the API server with server-side dry-run (check mode).
  returned: when O(dest) is not set
  type: bool
violations:
  description: Every problem found by validation or preflight (on failure).
  returned: on failure
  type: list
  elements: str
"""

import copy
import json
import os
import tempfile
import time
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.opsdeck.stack.plugins.module_utils.k8s.hpa import (
    API_VERSION,
    KIND,
    TARGET_KINDS,
    TARGET_PLURALS,
    build_desired,
    condition_summary,
    containers_missing_requests,
    labels_match,
    merge_spec,
    missing_for_create,
    normalize_spec,
    preview,
    render_manifest,
    same_target,
    scaling_active,
    utilization_resources,
    validate_params,
    validate_spec,
)
from ansible_collections.opsdeck.stack.plugins.module_utils.clients.kube import (
    HAS_K8S,
    K8S_AUTH_ARG_SPEC,
    K8S_IMP_ERR,
    K8sApiError,
    K8sError,
    client_from_params,
    explain_api_error,
    namespaced_path,
)

YAML_IMP_ERR = None
try:
    import yaml

    HAS_YAML = True
except ImportError:
    HAS_YAML = False
    YAML_IMP_ERR = traceback.format_exc()

HPA_API = API_VERSION  # autoscaling/v2
HPA_API_VERSIONS = (API_VERSION, "autoscaling/v2beta2")  # the schemas are the same for what is managed here
HPA_PLURAL = "horizontalpodautoscalers"
FILE_HEADER = "---\n# Managed by opsdeck.stack.hpa_tune; edits to managed fields are overwritten.\n"

RULE_OPTIONS = dict(
    percent=dict(type="int"),
    pods=dict(type="int"),
    period=dict(type="int", default=60),
    select=dict(type="str", default="max"),
    stabilization=dict(type="int"),
)


def argument_spec():
    spec = dict(
        name=dict(type="str", required=True),
        namespace=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        target=dict(type="dict", options=dict(
            kind=dict(type="str", default="Deployment", choices=list(TARGET_KINDS)),
            name=dict(type="str", required=True),
            api_version=dict(type="str", default="apps/v1"),
        )),
        min_replicas=dict(type="int", aliases=["min"]),
        max_replicas=dict(type="int", aliases=["max"]),
        cpu_utilization=dict(type="int", aliases=["cpu"]),
        memory_utilization=dict(type="int", aliases=["memory"]),
        allow_over_100=dict(type="bool", default=False),
        scale_up=dict(type="dict", options=copy.deepcopy(RULE_OPTIONS)),
        scale_down=dict(type="dict", options=copy.deepcopy(RULE_OPTIONS)),
        behavior=dict(type="dict"),
        capacity=dict(type="dict", options=dict(
            peak_rate=dict(type="float", required=True),
            per_pod_rate=dict(type="float", required=True),
            headroom_percent=dict(type="float", default=0),
            min_baseline=dict(type="int", default=2),
            baseline_rate=dict(type="float"),
            unit=dict(type="str", default="req/s"),
        )),
        labels=dict(type="dict"),
        api_version=dict(type="str", default="auto", choices=["auto"] + list(HPA_API_VERSIONS)),
        preflight=dict(type="bool", default=True),
        wait=dict(type="bool", default=False),
        wait_timeout=dict(type="int", default=120),
        wait_sleep=dict(type="int", default=5),
        preview_replicas=dict(type="int"),
        dest=dict(type="path"),
    )
    spec.update(copy.deepcopy(K8S_AUTH_ARG_SPEC))
    return spec


if HAS_YAML:
    class _IndentedDumper(yaml.SafeDumper):
        """Indent list items under their key (yamllint's default indent-sequences)."""

        def increase_indent(self, flow=False, indentless=False):
            return super(_IndentedDumper, self).increase_indent(flow, False)


def _yaml_text(data):
    if data is None:
        return ""
    if HAS_YAML:
        return yaml.dump(data, Dumper=_IndentedDumper, sort_keys=False, default_flow_style=False)
    return json.dumps(data, indent=2) + "\n"  # pragma: no cover - yaml ships with ansible


def _clean(obj):
    """A live object without the noise: managedFields."""
    if not isinstance(obj, dict):
        return obj
    obj = copy.deepcopy(obj)
    (obj.get("metadata") or {}).pop("managedFields", None)
    return obj


class HpaTune(object):
    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.name = self.params["name"]
        self.namespace = self.params["namespace"]
        self.result = dict(changed=False)
        self.desired, self.derived = {}, None
        self.client = None
        self.hpa_api = HPA_API if self.params["api_version"] == "auto" else self.params["api_version"]

    # ------------------------------------------------------------------ helpers
    def fail(self, msg, **kwargs):
        self.result.update(kwargs)
        self.result["msg"] = msg
        self.module.fail_json(**self.result)

    def fail_list(self, headline, problems, advice):
        numbered = "; ".join("(%d) %s" % (i + 1, p) for i, p in enumerate(problems))
        self.fail("%s: %s. %s" % (headline, numbered, advice), violations=list(problems))

    def hpa_path(self, name=None):
        return namespaced_path(self.hpa_api, HPA_PLURAL, self.namespace, name)

    def _render(self, spec, live):
        manifest = render_manifest(self.name, self.namespace, spec, self.desired.get("labels"), base=live)
        manifest["apiVersion"] = self.hpa_api
        return manifest

    def served_hpa_api(self):
        """The HPA version to speak: api_version, or (auto) the newest the server serves."""
        groups = self.api("reading the API groups the server serves", "GET", "/apis").get("groups") or []
        served = [v.get("groupVersion") for g in groups if g.get("name") == "autoscaling"
                  for v in g.get("versions") or []]
        if self.params["api_version"] != "auto":
            if self.params["api_version"] not in served:
                self.fail("the API server does not serve %s (it serves %s); use api_version: auto"
                          % (self.params["api_version"], ", ".join(served) or "no autoscaling version"))
            return self.params["api_version"]
        for version in HPA_API_VERSIONS:
            if version in served:
                return version
        self.fail("the API server serves neither %s (it serves %s): it is too old for behavior and memory "
                  "targets" % (" nor ".join(HPA_API_VERSIONS), ", ".join(served) or "no autoscaling version"))

    def where(self):
        return "HorizontalPodAutoscaler %s/%s" % (self.namespace, self.name)

    def diff(self, before, after, before_header=None, after_header=None):
        d = dict(before=before, after=after)
        if before_header:
            d["before_header"] = before_header
        if after_header:
            d["after_header"] = after_header
        self.result["diff"] = d

    def _capacity_result(self):
        if self.derived:
            self.result["capacity_explanation"] = self.derived["explanation"]
            self.result["derived_replicas"] = dict(min_replicas=self.derived["min_replicas"],
                                                   max_replicas=self.derived["max_replicas"])

    # ------------------------------------------------------------------ entry
    def run(self):
        problems = validate_params(self.params)
        if problems:
            self.fail_list("hpa_tune refused the parameters, nothing was changed (%d problem%s)"
                           % (len(problems), "" if len(problems) == 1 else "s"), problems,
                           "Fix these values and run again.")
        if self.params["state"] == "present":
            self.desired, self.derived = build_desired(self.params)
            self._capacity_result()
        if self.params["dest"]:
            self.run_dest()
        else:
            self.run_api()
        self.module.exit_json(**self.result)

    def _merged(self, live_obj, where):
        """Merge desired over ``live_obj``; fail on what only shows after the merge."""
        live_spec = (live_obj or {}).get("spec")
        spec = merge_spec(live_spec, self.desired)
        if live_obj is None:
            missing = missing_for_create(spec)
            if missing:
                self.fail_list("%s does not exist yet, so it needs %d more setting%s to be created"
                               % (where, len(missing), "" if len(missing) == 1 else "s"), missing,
                               "Add them to the task (or create the HPA first).")
        problems = validate_spec(spec, live_exists=live_obj is not None)
        if problems:
            self.fail_list("%s cannot be tuned as asked" % where, problems, "Nothing was changed.")
        return spec

    def _needs_change(self, live_obj, spec):
        if live_obj is None:
            return True
        if normalize_spec(live_obj.get("spec")) != normalize_spec(spec):
            return True
        return not labels_match(live_obj.get("metadata"), self.desired.get("labels"))

    def _view(self, obj, spec=None):
        """Managed view for the diff: effective spec (+ managed labels)."""
        if obj is None and spec is None:
            return ""
        view = {"spec": normalize_spec(spec if spec is not None else obj.get("spec"))}
        if self.desired.get("labels"):
            current = ((obj or {}).get("metadata") or {}).get("labels") or {}
            if spec is not None:
                current = dict(current)
                current.update(self.desired["labels"])
            view = dict(metadata={"labels": dict((k, current.get(k)) for k in sorted(self.desired["labels"]))}, **view)
        return _yaml_text(view)

    # ------------------------------------------------------------------ dest (GitOps)
    def run_dest(self):
        if not HAS_YAML:
            self.module.fail_json(msg=missing_required_lib("PyYAML"), exception=YAML_IMP_ERR)
        dest = self.params["dest"]
        self.result["dest"] = dest
        if self.params["wait"]:
            self.module.warn("wait is ignored with dest: nothing is applied to a cluster")
        directory = os.path.dirname(dest) or "."
        before_text = None
        if os.path.exists(dest):
            if os.path.isdir(dest):
                self.fail("dest %s is a directory; give the path of the manifest file, e.g. %s/%s.yaml"
                          % (dest, dest, self.name))
            with open(dest, "r") as handle:
                before_text = handle.read()
        if self.params["state"] == "absent":
            self.result["action"] = "deleted" if before_text is not None else "absent"
            if before_text is not None:
                self.result["changed"] = True
                self.diff(before_text, "", before_header=dest, after_header=dest + " (removed)")
                if not self.module.check_mode:
                    os.remove(dest)
            return
        live = self._parse_dest(dest, before_text) if before_text is not None else None
        if live is not None and self.params["api_version"] == "auto":
            self.hpa_api = live["apiVersion"]
        self.result["api_version"] = self.hpa_api
        spec = self._merged(live, "%s (file %s)" % (self.where(), dest))
        manifest = self._render(spec, live)
        self.result["manifest"] = manifest
        self.result["spec"] = normalize_spec(spec)
        self.result["preview"] = self._preview(spec, None)
        if not self._needs_change(live, spec) and (live is None or live.get("apiVersion") == self.hpa_api):
            self.result["action"] = "unchanged"
            return
        after_text = FILE_HEADER + _yaml_text(manifest)
        if after_text == before_text:  # pragma: no cover - covered by _needs_change
            self.result["action"] = "unchanged"
            return
        if not os.path.isdir(directory):
            self.fail("the directory of dest (%s) does not exist; create it first (ansible.builtin.file "
                      "state=directory)" % directory)
        self.result["changed"] = True
        self.result["action"] = "written"
        self.diff(before_text or "", after_text, before_header=dest, after_header=dest)
        if self.module.check_mode:
            return
        fd, tmp = tempfile.mkstemp(prefix=".hpa_tune.", dir=directory)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(after_text)
            self.module.atomic_move(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def _parse_dest(self, dest, text):
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            self.fail("dest %s is not valid YAML (%s); fix or remove the file" % (dest, exc))
        if not docs:
            return None
        obj = docs[0]
        if len(docs) != 1 or not isinstance(obj, dict) or obj.get("kind") != KIND:
            self.fail("dest %s does not hold exactly one HorizontalPodAutoscaler; give each HPA its own file "
                      "or remove it" % dest)
        if obj.get("apiVersion") not in HPA_API_VERSIONS:
            self.fail("dest %s holds a HorizontalPodAutoscaler of apiVersion %s; this module writes %s - "
                      "convert or remove the file" % (dest, obj.get("apiVersion"), " or ".join(HPA_API_VERSIONS)))
        meta = obj.get("metadata") or {}
        if meta.get("name") != self.name or (meta.get("namespace") or self.namespace) != self.namespace:
            self.fail("dest %s holds HPA %s/%s, not %s/%s; use another file or fix name/namespace"
                      % (dest, meta.get("namespace"), meta.get("name"), self.namespace, self.name))
        return obj

    # ------------------------------------------------------------------ API
    def api(self, what, method, path, query=None, body=None, missing_ok=False):
        try:
            if method == "GET" and missing_ok:
                return self.client.get_or_none(path, query=query)
            return self.client.request(method, path, query=query, body=body)
        except K8sError as exc:
            self.fail(explain_api_error(exc, what), status=getattr(exc, "status", None))

    def run_api(self):
        if not HAS_K8S:
            self.module.fail_json(msg=missing_required_lib("kubernetes"), exception=K8S_IMP_ERR)
        try:
            self.client = client_from_params(self.params)
        except K8sError as exc:
            self.fail(str(exc))
        self.result["dry_run"] = False
        self.hpa_api = self.served_hpa_api()
        self.result["api_version"] = self.hpa_api
        live = self.api("reading %s" % self.where(), "GET", self.hpa_path(self.name), missing_ok=True)
        if self.params["state"] == "absent":
            self.result["action"] = "deleted" if live else "absent"
            if live:
                self.result["changed"] = True
                self.diff(self._view(live), "", before_header=self.where(), after_header="(deleted)")
                if not self.module.check_mode:
                    try:
                        self.client.request("DELETE", self.hpa_path(self.name))
                    except K8sApiError as exc:
                        if exc.status != 404:
                            self.fail(explain_api_error(exc, "deleting %s" % self.where()))
            return
        target = None
        for attempt in (1, 2):
            spec = self._merged(live, self.where())
            if attempt == 1 and self.params["preflight"]:
                target = self.run_preflight(spec)
            changed = self._needs_change(live, spec)
            manifest = self._render(spec, live)
            self.result["manifest"] = manifest
            self.result["spec"] = normalize_spec(spec)
            obj = live
            if not changed:
                self.result["action"] = "unchanged"
                break
            self.result["changed"] = True
            self.result["action"] = "created" if live is None else "updated"
            self.diff(self._view(live) if live else "", self._view(live, spec),
                      before_header=self.where(), after_header=self.where())
            try:
                obj = self.write(live, manifest)
                break
            except K8sApiError as exc:
                if exc.status == 409 and attempt == 1:
                    live = self.api("re-reading %s" % self.where(), "GET", self.hpa_path(self.name), missing_ok=True)
                    continue
                verb = "creating" if live is None else "updating"
                self.fail(explain_api_error(exc, "%s %s" % (verb, self.where())), status=exc.status)
        if self.params["wait"] and not self.module.check_mode:
            obj = self.wait_active(obj)
        self.result["hpa"] = _clean(obj) if obj else None
        current, source = None, None
        if target is None and self.params.get("preview_replicas") is None:
            target = self._read_target(spec)
        target_replicas = ((target or {}).get("spec") or {}).get("replicas")
        status_replicas = ((obj or {}).get("status") or {}).get("currentReplicas")
        if target_replicas is not None:
            current, source = target_replicas, "target spec.replicas"
        elif status_replicas:
            current, source = status_replicas, "HPA status.currentReplicas"
        self.result["preview"] = self._preview(spec, (current, source))

    def _read_target(self, spec):
        """The target workload, or None when it cannot be read (only used for the preview)."""
        ref = spec.get("scaleTargetRef") or {}
        if ref.get("kind") not in TARGET_PLURALS or not ref.get("name"):
            return None
        try:
            return self.client.get_or_none(namespaced_path(ref.get("apiVersion") or "apps/v1",
                                                           TARGET_PLURALS[ref["kind"]], self.namespace, ref["name"]))
        except K8sError:
            return None

    def write(self, live, manifest):
        """Create/replace; in check mode the same with server-side dry-run."""
        query = {"dryRun": "All"} if self.module.check_mode else None
        method = "POST" if live is None else "PUT"
        path = self.hpa_path() if live is None else self.hpa_path(self.name)
        try:
            obj = self.client.request(method, path, query=query, body=manifest)
        except K8sApiError as exc:
            if self.module.check_mode and exc.status in (401, 403, 404, 405):
                self.module.warn("server-side dry-run was not possible (HTTP %s: %s); the check-mode result is the "
                                 "local prediction only" % (exc.status, exc.message or exc.reason))
                return manifest
            raise
        if self.module.check_mode:
            self.result["dry_run"] = True
        return obj

    def _preview(self, spec, current):
        replicas, source = current if current else (None, None)
        if self.params.get("preview_replicas") is not None:
            replicas, source = self.params["preview_replicas"], "preview_replicas"
        return preview(spec, replicas, source)

    # ------------------------------------------------------------------ preflight
    def run_preflight(self, spec):
        problems = []
        ref = spec.get("scaleTargetRef") or {}
        kind, tname = ref.get("kind"), ref.get("name")
        target = None
        resources = utilization_resources(spec)
        if kind in TARGET_PLURALS:
            path = namespaced_path(ref.get("apiVersion") or "apps/v1", TARGET_PLURALS[kind], self.namespace, tname)
            target = self.api("reading the target %s %s/%s" % (kind, self.namespace, tname), "GET", path, missing_ok=True)
            if target is None:
                problems.append("the target %s %s/%s does not exist; deploy it first, or fix target.name/target.kind"
                                % (kind, self.namespace, tname))
            else:
                pod_spec = (((target.get("spec") or {}).get("template") or {}).get("spec") or {})
                for resource, names in sorted(containers_missing_requests(pod_spec, resources).items()):
                    problems.append(
                        "container%s %s of %s %s/%s %s no %s request; the HPA measures %s utilisation as a percentage "
                        "of the request - add resources.requests.%s to %s, or drop %s_utilization"
                        % ("s" if len(names) > 1 else "", ", ".join(names), kind, self.namespace, tname,
                           "have" if len(names) > 1 else "has", resource, resource, resource,
                           "them" if len(names) > 1 else "it", resource))
        else:
            self.module.warn("preflight cannot inspect a %s target; only Deployment and StatefulSet are checked" % kind)
        if resources:
            try:
                self.client.request("GET", "/apis/metrics.k8s.io/v1beta1")
            except K8sApiError as exc:
                if exc.status == 404:
                    problems.append("the metrics API (metrics.k8s.io/v1beta1) is not installed, so the HPA cannot read "
                                    "cpu/memory usage; install metrics-server")
                elif exc.status in (401, 403):
                    self.module.warn("could not check the metrics API (HTTP %s)" % exc.status)
                else:
                    problems.append("the metrics API (metrics.k8s.io/v1beta1) is registered but not available (HTTP %s: "
                                    "%s); check the metrics-server pods and `kubectl get apiservice "
                                    "v1beta1.metrics.k8s.io`" % (exc.status, exc.message))
            except K8sError as exc:
                self.fail(explain_api_error(exc, "checking the metrics API"))
        keda_names = set()
        try:
            scaled = self.client.request(
                "GET", namespaced_path("keda.sh/v1alpha1", "scaledobjects", self.namespace)).get("items") or []
        except K8sApiError as exc:
            if exc.status in (401, 403):
                self.module.warn("could not list KEDA ScaledObjects in %s (HTTP %s)" % (self.namespace, exc.status))
            scaled = []  # 404: KEDA is not installed
        except K8sError as exc:
            self.fail(explain_api_error(exc, "listing KEDA ScaledObjects"))
        for obj in scaled:
            sref = dict((obj.get("spec") or {}).get("scaleTargetRef") or {})
            sref.setdefault("kind", "Deployment")
            if same_target(sref, ref):
                sname = (obj.get("metadata") or {}).get("name")
                keda_names.add(sname)
                problems.append("KEDA ScaledObject %s/%s already scales %s %s (through its own HPA); remove it or "
                                "tune it in KEDA instead" % (self.namespace, sname, kind, tname))
        try:
            hpas = self.client.request("GET", self.hpa_path()).get("items") or []
        except K8sApiError as exc:
            if exc.status not in (401, 403):
                self.fail(explain_api_error(exc, "listing HPAs in %s" % self.namespace))
            self.module.warn("could not list the HPAs of namespace %s (HTTP %s) to look for a competing autoscaler"
                             % (self.namespace, exc.status))
            hpas = []
        except K8sError as exc:
            self.fail(explain_api_error(exc, "listing HPAs in %s" % self.namespace))
        for other in hpas:
            meta = other.get("metadata") or {}
            if meta.get("name") == self.name or not same_target((other.get("spec") or {}).get("scaleTargetRef"), ref):
                continue
            owners = [o.get("name") for o in meta.get("ownerReferences") or [] if o.get("kind") == "ScaledObject"]
            if owners and set(owners) & keda_names:
                continue  # already reported as the ScaledObject that owns it
            made_by = " (made by KEDA ScaledObject %s)" % ", ".join(owners) if owners else ""
            problems.append("HPA %s/%s%s already scales %s %s; two autoscalers on one target fight over its "
                            "replicas - tune that one instead (name: %s) or delete it"
                            % (self.namespace, meta.get("name"), made_by, kind, tname, meta.get("name")))
        if problems:
            self.fail_list("preflight found %d problem%s with %s, nothing was changed"
                           % (len(problems), "" if len(problems) == 1 else "s", self.where()), problems,
                           "Fix them, or set preflight: false to skip these checks.")
        return target

    # ------------------------------------------------------------------ wait
    def wait_active(self, obj):
        deadline = time.time() + self.params["wait_timeout"]
        while True:
            status = (obj or {}).get("status")
            if scaling_active(status):
                return obj
            if time.time() >= deadline:
                self.result["hpa"] = _clean(obj)
                self.fail("%s did not report ScalingActive=True within %d s: %s. Check that metrics-server is "
                          "running and every container of the target has requests for the metrics used"
                          % (self.where(), self.params["wait_timeout"], condition_summary(status)))
            time.sleep(min(self.params["wait_sleep"], max(0.0, deadline - time.time())))
            obj = self.api("reading %s" % self.where(), "GET", self.hpa_path(self.name), missing_ok=True)
            if obj is None:
                self.fail("%s disappeared while waiting for it to become active" % self.where())


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    HpaTune(module).run()


if __name__ == "__main__":
    main()
