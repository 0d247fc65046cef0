"""Run ansible-playbook / molecule as a user would and read what they print."""

import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, ".venv", "bin")
# Written by test_swarm when it initialised the swarm: tests/conftest.py leaves it at the end.
SWARM_LEAVE_MARKER = os.path.join(ROOT, "build", "swarm-leave-at-session-end")


def env(**extra):
    out = dict(os.environ)
    out.update({
        "PATH": BIN + os.pathsep + out.get("PATH", ""),
        "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, "build", "collections"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PY_COLORS": "0",
    })
    out.update(extra)
    return out


def local_inventory(folder, stack_vars):
    """An inventory of localhost (local connection) with ``stack_vars`` as group_vars; its path."""
    (folder / "group_vars" / "all").mkdir(parents=True)
    (folder / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local",
        "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}}}))
    (folder / "group_vars" / "all" / "stack.yml").write_text(yaml.safe_dump(stack_vars))
    return str(folder)


def run(argv, timeout=1200, log=None, **extra_env):
    """Run ``argv`` from the project root; on timeout its whole process group is killed (an
    ansible-playbook's forked workers would otherwise outlive it), then TimeoutExpired is raised."""
    with subprocess.Popen(argv, cwd=ROOT, env=env(**extra_env), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    result = subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
    if log:
        os.makedirs(os.path.dirname(log), exist_ok=True)
        with open(log, "w", encoding="utf-8") as handle:
            handle.write(result.stdout + "\n--- stderr\n" + result.stderr)
    return result


def recap(output):
    """{'changed': n, 'failed': n, ...} summed over hosts from a PLAY RECAP."""
    totals = {}
    for line in output.splitlines():
        if re.search(r"\sok=\d+", line):
            for key, value in re.findall(r"(\w+)=(\d+)", line):
                totals[key] = totals.get(key, 0) + int(value)
    return totals


class Load:
    """GET /api/work through nginx at about RATE requests/s until stopped (bounded)."""

    def __init__(self, port, rate=20, limit_seconds=400):
        self.port, self.rate, self.limit = port, rate, limit_seconds
        self.counts, self.failures, self.lock = {}, [], threading.Lock()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _one(self):
        url = "http://127.0.0.1:%d/api/work?ms=100&tenant=acme" % self.port
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError as exc:
            status = type(exc).__name__
        with self.lock:
            self.counts[status] = self.counts.get(status, 0) + 1
            if status not in (200, 429):
                self.failures.append((time.strftime("%H:%M:%S"), status))

    def _run(self):
        start, sent = time.monotonic(), 0
        workers = []
        while not self.stop_event.is_set() and time.monotonic() - start < self.limit:
            worker = threading.Thread(target=self._one, daemon=True)
            worker.start()
            workers.append(worker)
            sent += 1
            time.sleep(max(0.0, start + sent / self.rate - time.monotonic()))
        for worker in workers:
            worker.join(15)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(60)
