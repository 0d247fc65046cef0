"""Make the collection importable as ansible_collections.opsdeck.stack for every test, and
leave the swarm that test_swarm initialised once every test has finished, report the time per
test file, and on CI fail a run in which a test was skipped."""

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
    if hasattr(session.config, "workerinput"):
        return
    if _SKIPPED and os.environ.get("CI") == "true" and session.exitstatus == 0:
        session.exitstatus = 1
    if not os.path.exists(SWARM_LEAVE_MARKER):
        return
    subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True, check=False)
    os.remove(SWARM_LEAVE_MARKER)


SERIAL_HELP = ("serial: a test that measures behaviour under load on a multi-node lab; "
               "scripts/test.sh runs these alone, after the parallel phase, on a quiet machine")
_FILE_SECONDS = {}
_SKIPPED = []


def pytest_configure(config):
    config.addinivalue_line("markers", SERIAL_HELP)


def pytest_runtest_logreport(report):
    """Add up the time of each test file (setup, call and teardown), and note skips."""
    path = report.nodeid.split("::", 1)[0]
    _FILE_SECONDS[path] = _FILE_SECONDS.get(path, 0.0) + report.duration
    if report.skipped and report.when in ("setup", "call"):
        _SKIPPED.append(report.nodeid)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Where the time went, a line per file (the slowest first), kept in build/logs too; and on
    CI (CI=true) a skipped test fails the run: nothing there may be counted as passing unrun."""
    if hasattr(config, "workerinput") or not _FILE_SECONDS:
        return
    ranked = sorted(_FILE_SECONDS.items(), key=lambda item: -item[1])
    lines = ["%7.1f s  %s" % (seconds, path) for path, seconds in ranked]
    terminalreporter.write_sep("=", "time per test file (slowest first, %d files)" % len(ranked))
    for line in lines[:20]:
        terminalreporter.write_line(line)
    os.makedirs(os.path.join(ROOT, "build", "logs"), exist_ok=True)
    marker = (config.getoption("markexpr") or "all").replace(" ", "-")
    with open(os.path.join(ROOT, "build", "logs", "durations-%s.txt" % marker), "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    if _SKIPPED and os.environ.get("CI") == "true":
        terminalreporter.write_sep("!", "CI: %d test(s) skipped, which fails the run" % len(_SKIPPED))
        for nodeid in _SKIPPED[:20]:
            terminalreporter.write_line(nodeid)
