#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: k8s_capabilities
short_description: Read a Kubernetes API server's version and the API group versions and kinds it serves
version_added: 0.1.0
description:
  - Reads C(/version), C(/api), C(/apis) and each served group version's resource list, and
    returns them in the shape of Helm's C(.Capabilities) - the server's version and a list of
    group versions and C(<group version>/<Kind>) entries (for example
    C(autoscaling/v2beta2/HorizontalPodAutoscaler)).
  - The result feeds the C(opsdeck.stack.kubernetes_adapt) filter, which rewrites rendered
    manifests for that server (older group versions, fields its schema lacks); the
    C(opsdeck.stack.kubernetes) role does this before every apply.
  - Only reads; it never changes anything, so it runs in check mode as in a normal run.
  - The connection options are kubernetes.core's (names, aliases and C(K8S_AUTH_*) variables).
author:
  - opsdeck maintainers (@opsdeck)
extends_documentation_fragment:
  - opsdeck.stack.attributes
attributes:
  check_mode:
    support: full
    details: Reads only, as in a normal run.
  diff_mode:
    support: none
  idempotent:
    support: full
requirements:
  - kubernetes >= 24.2.0 (Python client)
options:
  kubeconfig:
    description:
      - Path to a kubeconfig file, or its content as a dict. Default C(KUBECONFIG) or C(~/.kube/config).
    type: raw
  context:
    description: Context of the kubeconfig to use.
    type: str
  host:
    description: URL of the API server (with O(api_key) or O(client_cert)/O(client_key), no kubeconfig needed).
    type: str
  api_key:
    description: Bearer token.
    type: str
  validate_certs:
    description: Whether to verify the API server's certificate.
    type: bool
    aliases: [verify_ssl]
  ca_cert:
    description: CA certificate of the API server.
    type: path
    aliases: [ssl_ca_cert]
  client_cert:
    description: Client certificate.
    type: path
    aliases: [cert_file]
  client_key:
    description: Key of the client certificate.
    type: path
    aliases: [key_file]
  proxy:
    description: HTTP proxy URL.
    type: str
"""

EXAMPLES = r"""
- name: Read what the cluster serves
  opsdeck.stack.k8s_capabilities:
    context: prod
  register: server

- name: Render for it
  ansible.builtin.set_fact:
    manifests: "{{ rendered | opsdeck.stack.kubernetes_adapt(server.capabilities) }}"
"""

RETURN = r"""
capabilities:
  description: The server's version and what it serves.
  returned: success
  type: dict
  contains:
    version:
      description: The server's version, without the leading C(v).
      type: str
      sample: 1.20.2
    api_versions:
      description: Served group versions, and C(<group version>/<Kind>) for each kind they serve.
      type: list
      elements: str
      sample: [v1, v1/Service, apps/v1, apps/v1/Deployment, autoscaling/v2beta2,
               autoscaling/v2beta2/HorizontalPodAutoscaler]
"""

import copy

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.opsdeck.stack.plugins.module_utils.clients.kube import (
    HAS_K8S, K8S_AUTH_ARG_SPEC, K8S_IMP_ERR, K8sError, client_from_params, explain_api_error)
from ansible_collections.opsdeck.stack.plugins.module_utils.k8s.capabilities import discover


def main():
    module = AnsibleModule(argument_spec=copy.deepcopy(K8S_AUTH_ARG_SPEC), supports_check_mode=True)
    if not HAS_K8S:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=K8S_IMP_ERR)
    try:
        client = client_from_params(module.params)
        capabilities = discover(client.request)
    except K8sError as exc:
        module.fail_json(msg=explain_api_error(exc, "reading the API server's version and API groups"))
    module.exit_json(changed=False, capabilities=capabilities)


if __name__ == "__main__":
    main()
