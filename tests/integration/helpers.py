"""Run ansible-playbook / molecule as a user would and read what they print."""

import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, ".venv", "bin")


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


def run(argv, timeout=1200, log=None, **extra_env):
    result = subprocess.run(argv, cwd=ROOT, env=env(**extra_env), capture_output=True,
                            text=True, timeout=timeout, check=False)
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
