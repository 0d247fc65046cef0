#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation of the opsdeck.stack.stack_model action (it runs on the controller)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: stack_model
short_description: Validate and normalise the stack model
version_added: 0.2.0
description:
  - Reads the inventory's C(stack_*) variables (or O(model)), validates them against the
    declared stack model (the field reference is C(docs/stack-model.md), the JSON Schema
    C(docs/stack-model.schema.json)) and sets the normalised model as a fact.
  - Runs on the controller only; no host is contacted.
  - Files the model names are read here, on the controller, relative to the inventory directory
    (C(inventory_dir); absolute paths as given), namely the Grafana dashboards of
    C(stack_monitoring.grafana.dashboards[].file). A file that cannot be read or is not a JSON
    dashboard is reported like any other problem, under the field's path.
  - Every problem is reported at once, each naming its field by path, with list items named
    by their name (C(stack_services[api].route.path)), the bad value and what is allowed.
  - Accepted but questionable settings (for example C(replicas) beside C(autoscaling)) are
    returned as warnings.
author:
  - opsdeck maintainers (@opsdeck)
options:
  model:
    description:
      - The model as a mapping of the C(stack_*) variables without their prefix.
      - Default is every C(stack_*) variable of the host.
    type: dict
  fact:
    description: The name of the fact that receives the normalised model.
    type: str
    default: opsdeck_stack
attributes:
  check_mode:
    description: Runs the same in check mode (it changes nothing).
    support: full
  diff_mode:
    description: Nothing changes, so there is no diff.
    support: none
  idempotent:
    description: Always reports no change.
    support: full
  action:
    description: Runs on the controller as an action plugin.
    support: full
"""

EXAMPLES = r"""
- name: Validate the inventory's stack model
  opsdeck.stack.stack_model:

- name: Validate a model given inline, into another fact
  opsdeck.stack.stack_model:
    model:
      name: shop
      services:
        - {name: api, image: registry.example.com/shop/api:1.4.2, port: 8000, route: {path: /api/}}
    fact: shop_model
"""

RETURN = r"""
msg:
  description: On failure, every problem found, one line each, each naming its field.
  returned: always
  type: str
  sample: "the stack model is invalid (1 problem):\n  - stack_services[api].replicas: -1 is out of range (allowed: 0..1000)"
ansible_facts:
  description: The normalised model under the name given by O(fact).
  returned: success
  type: dict
"""
