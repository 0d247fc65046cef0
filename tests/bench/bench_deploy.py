"""Deploy figures for the dev stack on the local Docker engine (prints, asserts nothing).

1. first deploy to all-healthy with the images already local (the stack and its volumes
   are removed first, the images are kept);
2. an idempotent re-run of deploy.yml, its changed count, and its time divided by the
   floor: a one-task playbook calling community.docker.docker_compose_v2 on the same project.
"""

import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
           ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, "build", "collections"),
           PATH=os.path.join(ROOT, ".venv", "bin") + os.pathsep + os.environ["PATH"],
           ANSIBLE_NOCOLOR="1")
INVENTORY = os.path.join(ROOT, "inventories", "dev")
FLOOR = """---
- name: Floor
  hosts: all
  gather_facts: false
  tasks:
    - name: Compose up on the deployed project
      community.docker.docker_compose_v2:
        project_src: /opt/shop
        state: present
        pull: never
        wait: true
"""


def playbook(path, *extra):
    start = time.monotonic()
    result = subprocess.run(["ansible-playbook", path, "-i", INVENTORY, *extra], cwd=ROOT,
                            env=ENV, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        sys.exit("%s failed:\n%s" % (path, result.stdout[-3000:]))
    changed = sum(int(n) for n in re.findall(r"\schanged=(\d+)", result.stdout))
    return elapsed, changed


def main():
    playbook("playbooks/destroy.yml", "-e", "destroy_volumes=true", "-e", "destroy_confirm=shop")
    first = playbook("playbooks/deploy.yml")[0]
    rerun, changed = playbook("playbooks/deploy.yml")
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as handle:
        handle.write(FLOOR)
    try:
        floor = playbook(handle.name)[0]
    finally:
        os.unlink(handle.name)
    print("first deploy to all-healthy (local images): %.1f s" % first)
    print("idempotent re-run of deploy.yml:            %.1f s, changed=%d" % (rerun, changed))
    print("floor (one docker_compose_v2 task):         %.1f s" % floor)
    print("re-run / floor:                             %.1fx" % (rerun / floor))


if __name__ == "__main__":
    main()
