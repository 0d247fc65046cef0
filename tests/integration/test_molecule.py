"""The Molecule scenarios, run for real on this machine (see molecule/*/molecule.yml).

compose:     the Compose target on the local Docker engine: check mode predicts changes,
             converge, idempotence (changed=0), check mode predicts no change, verify
             (healthy, 200 through nginx, 429s and no 5xx under a burst, secrets 0600 and
             absent from -v output, a rate-limit change recreates nginx only), destroy.
nginx_proxy: the nginx_proxy role reused on its own in front of a real nginx.
kubernetes:  the kubernetes role in GitOps (dir) mode on localhost (no API server can run
             here): converge, idempotence (changed=0), verify (strict validation 1.29/1.33,
             Secret files 0600, no secret value elsewhere, tenant/affinity/host rendered).
monitoring:  the monitoring role on its own, writing into a temporary directory: converge,
             idempotence, verify (promtool check config and amtool check-config on the written
             files, alertmanager.yml 0600 and the only file holding a secret).
elk:         the elk role on its own (prod model, 3 nodes), writing into a temporary directory:
             converge, idempotence, verify (file set, ILM 90 days, no password written).
swarm:       the swarm role on a real two-node Swarm (two Docker engines in containers,
             scripts/swarm-lab.sh): create (lab + images in its registry), converge (init, the
             worker joins, labels, stack), idempotence (changed=0), verify (nodes, labels, nginx on
             the edge node only and answering, secret/config named by content), destroy (lab down).
"""

import os

import pytest

from helpers import BIN, ROOT, run


# The other scenarios (kubernetes, monitoring, elk) are in test_molecule_roles.py: a file runs on
# one pytest worker, and the two files run side by side.
@pytest.mark.parametrize("scenario", ["nginx_proxy", "compose", "swarm"])
def test_molecule_scenario(scenario):
    molecule_test(scenario)


def molecule_test(scenario):
    """`molecule test -s <scenario>`, its full output in build/logs/molecule-<scenario>.log."""
    log = os.path.join(ROOT, "build", "logs", "molecule-%s.log" % scenario)
    result = run([os.path.join(BIN, "molecule"), "test", "-s", scenario], timeout=1500, log=log)
    lines = (result.stdout + result.stderr).splitlines()
    assert result.returncode == 0, "molecule test -s %s failed (full log: %s)\n%s\n...\n%s" % (
        scenario, log, "\n".join(failed_tasks(lines)), "\n".join(lines[-40:]))


def failed_tasks(lines):
    """The TASK header and the lines of each failure in an ansible-playbook output."""
    out, task = [], ""
    for number, line in enumerate(lines):
        if line.startswith("TASK ["):
            task = line
        elif line.startswith(("fatal:", "failed:")) or "FAILED!" in line:
            out.extend([task] + lines[number:number + 15])
    return out[:200]
