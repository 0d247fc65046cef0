# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters exposing the monitoring and ELK renderers to the monitoring and elk roles."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.opsdeck.stack.plugins.module_utils.compose import render as _compose
from ansible_collections.opsdeck.stack.plugins.module_utils.components import elk as _elk
from ansible_collections.opsdeck.stack.plugins.module_utils.components import monitoring as _monitoring
from ansible_collections.opsdeck.stack.plugins.module_utils.common.data import plain as _plain


def _need(model, section):
    model = _plain(model)
    if not isinstance(model, dict) or section not in model or "target" not in model:
        raise AnsibleFilterError("expected the normalised stack model (fact opsdeck_stack, "
                                 "from opsdeck.stack.preflight or the stack_model filter)")
    return model


def monitoring_files(model, secrets):
    """Prometheus, Alertmanager and Grafana files: [{path, content, mode, secret}]."""
    return _monitoring.render(_need(model, "monitoring"), _plain(secrets or {}))


def monitoring_storage_flags(model):
    """Prometheus' retention flags from the model."""
    return _monitoring.storage_flags(_need(model, "monitoring"))


def monitoring_validation_copy(text):
    """prometheus.yml with kubernetes_sd replaced by static targets (for promtool)."""
    return _monitoring.validation_copy(str(text))


def elk_files(model):
    """Elasticsearch, Logstash, Kibana and Filebeat files: [{path, content, mode, secret}]."""
    return _elk.render(_need(model, "logging"))


def elk_setup_container(model, project_dir, user=None):
    """docker_container parameters of the one-off container that runs setup.sh."""
    model = _need(model, "logging")
    return _compose.setup_container(model, str(project_dir), "%s_logging" % model["name"],
                                    str(user) if user else None)


def elk_setup_hash(model, files, secrets):
    """Hash of what setup.sh loads (its files, the passwords' digests): reload on change."""
    return _compose.setup_hash(_need(model, "logging"), _plain(files or []), _plain(secrets or {}))


def elk_sysctls(model):
    """Kernel settings a Docker host running Elasticsearch needs."""
    _need(model, "logging")
    return _elk.sysctls()


class FilterModule:
    """opsdeck.stack observability filters."""

    def filters(self):
        return {
            "monitoring_files": monitoring_files,
            "monitoring_storage_flags": monitoring_storage_flags,
            "monitoring_validation_copy": monitoring_validation_copy,
            "elk_files": elk_files,
            "elk_setup_container": elk_setup_container,
            "elk_setup_hash": elk_setup_hash,
            "elk_sysctls": elk_sysctls,
        }
