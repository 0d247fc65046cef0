"""Make the collection importable as ansible_collections.opsdeck.stack for every test, and
leave the swarm that test_swarm initialised once every test has finished."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, "build", "collections")
LINK = os.path.join(COLLECTIONS, "ansible_collections", "opsdeck", "stack")

if not os.path.exists(LINK):
    os.makedirs(os.path.dirname(LINK), exist_ok=True)
    os.symlink(ROOT, LINK)
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", COLLECTIONS)


SWARM_LEAVE_MARKER = os.path.join(ROOT, "build", "swarm-leave-at-session-end")


def pytest_sessionfinish(session):
    """Leave the swarm only when no test runs any more (the controller, not an xdist worker):
    on Docker 20.10 leaving breaks name resolution on the existing bridge networks for the
    containers started after it, which would break a Compose test running in parallel."""
    if hasattr(session.config, "workerinput") or not os.path.exists(SWARM_LEAVE_MARKER):
        return
    subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True, check=False)
    os.remove(SWARM_LEAVE_MARKER)
