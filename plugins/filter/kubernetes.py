# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters exposing the Kubernetes renderer to playbooks (thin wrappers)."""

from __future__ import annotations

import yaml

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import capabilities as _capabilities
from ansible_collections.opsdeck.stack.plugins.module_utils.k8s import manifests as _kubernetes
from ansible_collections.opsdeck.stack.plugins.module_utils.common.data import plain as _plain


def kubernetes_manifests(model, secrets, htpasswd=None, monitoring_files=None, elk_files=None,
                         api_server_cidrs=None):
    """The stack's Kubernetes manifests (list of dicts, apply order).

    ``monitoring_files`` / ``elk_files``: the monitoring and elk roles' files; with them (and
    the section enabled) Prometheus & co. and the ELK are rendered too.
    """
    try:
        return _kubernetes.render(_plain(model), _plain(secrets or {}),
                                  htpasswd=str(htpasswd) if htpasswd else None,
                                  monitoring_files=_plain(monitoring_files) if monitoring_files is not None
                                  else None,
                                  elk_files=_plain(elk_files) if elk_files is not None else None,
                                  api_server_cidrs=_plain(api_server_cidrs) or None)
    except _kubernetes.RenderError as exc:
        raise AnsibleFilterError("kubernetes_manifests: %s" % exc) from None


def kubernetes_yaml(manifests):
    """The manifests as one multi-document YAML text (for review or kubectl)."""
    return yaml.safe_dump_all(_plain(manifests), sort_keys=False, default_flow_style=False,
                              explicit_start=True, width=120)


def _dump(manifest):
    return yaml.safe_dump(_plain(manifest), sort_keys=False, default_flow_style=False, width=120)


def kubernetes_files(manifests, write_secrets=True):
    """One file per manifest for a GitOps directory: [{path, kind, name, secret, content}]."""
    return _kubernetes.manifest_files(_plain(manifests), write_secrets=boolean(write_secrets, strict=True),
                                      dump=_dump)


def stack_hpa_params(model, service):
    """hpa_tune's parameters for the autoscaling of ``service`` (by name): the same the deploy
    renders its HorizontalPodAutoscaler from."""
    model = _plain(model)
    for svc in model["services"]:
        if svc["name"] == service and svc.get("autoscaling"):
            return _kubernetes.hpa_params(model, svc, _kubernetes.namespace_of(model))
    raise AnsibleFilterError("stack_hpa_params: %r is not an autoscaled service of the stack" % service)


def kubernetes_restorable(obj):
    """An object read from the cluster, without status and server-owned metadata (rollback)."""
    return _kubernetes.restorable(_plain(obj))


def kubernetes_capabilities(source):
    """Capabilities to render for: from a version (``"1.20"``), a kubernetes.core.k8s_cluster_info
    result, or opsdeck.stack.k8s_capabilities' ``capabilities``; None for an empty value."""
    source = _plain(source)
    if not source:
        return None
    try:
        if isinstance(source, dict):
            if "api_versions" in source:
                _capabilities.parse_version(source.get("version"))
                return source
            if "apis" in source:
                return _capabilities.from_cluster_info(source)
            raise ValueError("expected a version, or a dict with api_versions (k8s_capabilities) or apis "
                             "(k8s_cluster_info), got the keys %s" % ", ".join(sorted(source)))
        return _capabilities.for_version(str(source))
    except ValueError as exc:
        raise AnsibleFilterError("kubernetes_capabilities: %s" % exc) from None


def kubernetes_adapt(manifests, capabilities=None):
    """The manifests adapted to what the server serves (see module_utils/k8s/capabilities.py)."""
    try:
        return _capabilities.adapt(_plain(manifests), kubernetes_capabilities(capabilities))
    except _capabilities.CapabilityError as exc:
        raise AnsibleFilterError("kubernetes_adapt: %s" % exc) from None


def kubernetes_adaptations(manifests, capabilities=None):
    """What kubernetes_adapt changes, one line per change (names and fields, never values)."""
    try:
        return _capabilities.explain(_plain(manifests), kubernetes_capabilities(capabilities))
    except _capabilities.CapabilityError as exc:
        raise AnsibleFilterError("kubernetes_adapt: %s" % exc) from None


class FilterModule:
    """opsdeck.stack Kubernetes filters."""

    def filters(self):
        return {
            "kubernetes_manifests": kubernetes_manifests,
            "kubernetes_yaml": kubernetes_yaml,
            "kubernetes_files": kubernetes_files,
            "kubernetes_restorable": kubernetes_restorable,
            "stack_hpa_params": stack_hpa_params,
            "kubernetes_capabilities": kubernetes_capabilities,
            "kubernetes_adapt": kubernetes_adapt,
            "kubernetes_adaptations": kubernetes_adaptations,
        }
