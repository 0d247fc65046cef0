#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: swarm_wait
short_description: Wait until a Docker Swarm stack has converged, and report a rolled-back update
version_added: 0.1.0
description:
  - C(docker stack deploy) returns before anything has happened. This module waits until every
    service of the stack runs its desired number of healthy tasks and no update is in progress.
  - Tasks are counted from those Swarm wants running (C(docker stack ps)), so the tasks of a node
    that is down, which Swarm replaced elsewhere, do not count.
  - An update that Swarm rolled back (C(failure_action=rollback)) or paused since O(since) makes
    the module fail at once with the service, the update state and Swarm's message, instead of
    waiting for the timeout.
  - It only reads, never changes anything, so it runs in check mode too.
  - Uses the C(docker) command-line client of the manager it runs on.
options:
  stack:
    description: Name of the stack (the C(com.docker.stack.namespace) label).
    type: str
    required: true
  since:
    description:
      - Unix time (seconds, may have decimals) at which the deploy started. Update states of
        updates started before it (for example a rollback from an earlier run) are ignored.
      - Default is to consider every update state.
    type: float
  timeout:
    description: Seconds to wait in all.
    type: int
    default: 600
  interval:
    description: Seconds between two looks.
    type: float
    default: 2
  services:
    description: Only wait for these services (short names, without the stack prefix).
    type: list
    elements: str
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
"""

EXAMPLES = r"""
- name: Record when the deploy starts
  ansible.builtin.command: date +%s.%N
  register: deploy_started
  changed_when: false

- name: Deploy the stack
  community.docker.docker_stack:
    name: shop
    compose: [/opt/shop/stack.yaml]

- name: Wait until converged, fail on a rolled-back update
  opsdeck.stack.swarm_wait:
    stack: shop
    since: "{{ deploy_started.stdout }}"
    timeout: 600
"""

RETURN = r"""
services:
  description: State of each service when the wait ended.
  returned: always
  type: dict
  sample:
    api: {desired: 2, running: 2, update_state: completed, image: "opsdeck/refapp:0.1.0"}
waited:
  description: Seconds spent waiting.
  returned: always
  type: float
  sample: 12.4
"""

import calendar
import json
import re
import time

from ansible.module_utils.basic import AnsibleModule

FAILED_STATES = ("rollback_completed", "rollback_paused", "paused")
BUSY_STATES = ("updating", "rollback_started")
TIMESTAMP = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?Z$")


def parse_time(text):
    """Seconds since the epoch of a Docker timestamp (UTC, nanoseconds), or None."""
    match = TIMESTAMP.match(text or "")
    if not match:
        return None
    fields = [int(x) for x in match.groups()[:6]]
    fraction = float("0" + match.group(7)) if match.group(7) else 0.0
    return calendar.timegm(tuple(fields) + (0, 0, 0)) + fraction


class Swarm:
    """The few docker CLI calls the wait needs, as parsed JSON."""

    def __init__(self, module):
        self.module = module
        self.docker = module.get_bin_path("docker", required=True)

    def _run(self, *args):
        rc, out, err = self.module.run_command([self.docker] + list(args))
        if rc != 0:
            self.module.fail_json(msg="docker %s failed: %s" % (" ".join(args[:2]), err.strip()),
                                  rc=rc)
        return out

    def services(self, stack):
        out = self._run("service", "ls", "--filter", "label=com.docker.stack.namespace=%s" % stack,
                        "--format", "{{json .}}")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def inspect(self, ids):
        return json.loads(self._run("service", "inspect", *ids)) if ids else []

    def tasks(self, stack):
        """The stack's tasks Swarm wants running (those of a node that is down and was
        replaced elsewhere are not among them, although `service ls` still counts them)."""
        rc, out, err = self.module.run_command([self.docker, "stack", "ps", stack, "--no-trunc",
                                                "--filter", "desired-state=running",
                                                "--format", "{{json .}}"])
        if rc != 0:
            if "nothing found in stack" in err:
                return []
            self.module.fail_json(msg="docker stack ps failed: %s" % err.strip(), rc=rc)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def task_errors(self, service_id):
        out = self._run("service", "ps", service_id, "--no-trunc", "--format", "{{json .}}")
        errors = []
        for line in out.splitlines():
            task = json.loads(line)
            if task.get("Error"):
                errors.append("%s: %s" % (task.get("CurrentState", ""), task["Error"]))
        return errors[:3]


def short_name(stack, name):
    prefix = stack + "_"
    return name[len(prefix):] if name.startswith(prefix) else name


def look(swarm, stack, since, only):
    """One look: ({service: state}, [failures], [still busy])."""
    # `service ls` prints short IDs and `inspect` long ones: match them by name.
    listed = {row["Name"]: row for row in swarm.services(stack)}
    # Running and wanted tasks per service, from the tasks themselves: on a node that is down,
    # a task still counts as running in `service ls` after Swarm replaced it elsewhere.
    running_tasks, wanted_tasks = {}, {}
    for task in swarm.tasks(stack):
        service = task["Name"].rsplit(".", 1)[0]
        wanted_tasks[service] = wanted_tasks.get(service, 0) + 1
        if task.get("CurrentState", "").startswith("Running"):
            running_tasks[service] = running_tasks.get(service, 0) + 1
    states, failed, busy = {}, [], []
    for spec in swarm.inspect(sorted(row["ID"] for row in listed.values())):
        name = short_name(stack, spec["Spec"]["Name"])
        if only and name not in only:
            continue
        row = listed.get(spec["Spec"]["Name"])
        if row is None:
            busy.append(name)
            continue
        mode = spec["Spec"].get("Mode") or {}
        if "Replicated" in mode:
            desired = int(mode["Replicated"].get("Replicas", 0))
        else:
            # global: one task per eligible node, as many as Swarm wants running
            desired = wanted_tasks.get(spec["Spec"]["Name"], 0)
        running = running_tasks.get(spec["Spec"]["Name"], 0)
        update = spec.get("UpdateStatus") or {}
        state = update.get("State", "")
        started = parse_time(update.get("StartedAt"))
        recent = since is None or (started is not None and started >= since)
        image = spec["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].split("@", 1)[0]
        states[name] = {"desired": desired, "running": running,
                        "update_state": state if recent else "", "image": image}
        if recent and state in FAILED_STATES:
            failed.append((name, spec["ID"], state, update.get("Message", "")))
        elif (recent and state in BUSY_STATES) or running != desired:
            busy.append(name)
    if only:
        for name in sorted(set(only) - set(states)):
            states[name] = {"desired": None, "running": 0, "update_state": "missing", "image": None}
            busy.append(name)
    return states, failed, busy


def describe(states, names):
    """``api 1/2 running, updating; proxy 0/1 running`` for the given services."""
    parts = []
    for name in names:
        state = states[name]
        text = "%s %s/%s running" % (name, state["running"], state["desired"])
        if state["update_state"]:
            text += ", " + state["update_state"]
        parts.append(text)
    return "; ".join(parts)


def main():
    module = AnsibleModule(
        argument_spec={
            "stack": {"type": "str", "required": True},
            "since": {"type": "float"},
            "timeout": {"type": "int", "default": 600},
            "interval": {"type": "float", "default": 2},
            "services": {"type": "list", "elements": "str"},
        },
        supports_check_mode=True,
    )
    params = module.params
    if params["timeout"] < 0 or params["interval"] <= 0:
        module.fail_json(msg="timeout must be >= 0 and interval > 0")
    swarm = Swarm(module)
    start = time.monotonic()
    deadline = start + params["timeout"]
    while True:
        states, failed, busy = look(swarm, params["stack"], params["since"], params["services"])
        waited = round(time.monotonic() - start, 1)
        if failed:
            details = []
            for name, service_id, state, message in failed:
                errors = swarm.task_errors(service_id)
                details.append("%s: update %s (%s)%s" % (
                    name, state.replace("_", " "), message or "no message",
                    "; task errors: " + " | ".join(errors) if errors else ""))
            module.fail_json(msg="Swarm did not accept the new version of %s and %s. %s" % (
                ", ".join(f[0] for f in failed),
                "rolled it back" if all(f[2].startswith("rollback") for f in failed) else
                "paused the update", " ".join(details)), services=states, waited=waited)
        if not states:
            module.fail_json(msg="stack %s has no services on this swarm (was it deployed?)"
                             % params["stack"], services=states, waited=waited)
        if not busy:
            module.exit_json(changed=False, services=states, waited=waited)
        if time.monotonic() + params["interval"] > deadline:
            module.fail_json(msg="timed out after %ss waiting for %s: %s" % (
                params["timeout"], ", ".join(busy), describe(states, busy)),
                services=states, waited=waited)
        time.sleep(params["interval"])


if __name__ == "__main__":
    main()
