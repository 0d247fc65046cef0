# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check the monitoring files with the real promtool and amtool (used by tasks/validate.yml).

Reads {"promtool", "amtool", "files": {path: content}, "prometheus_copy": text} on stdin,
writes the files into a private temporary directory (0700; secrets never leave it), runs
`promtool check config` (which checks every rule file too), `amtool check-config` and a JSON
parse of each dashboard, removes the directory and prints {"errors": [...]}. Output of the
tools is filtered so that no secret from alertmanager.yml is echoed.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile


def main():
    request = json.load(sys.stdin)
    errors = []
    tmp = tempfile.mkdtemp(prefix="opsdeck-monitoring-")
    try:
        for path, content in request["files"].items():
            full = os.path.join(tmp, path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(os.open(full, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
                handle.write(content)
        with open(os.path.join(tmp, "prometheus", "prometheus.yml"), "w") as handle:
            handle.write(request["prometheus_copy"])
        checks = []
        for tool in ("promtool", "amtool"):
            if not os.access(request[tool], os.X_OK):
                errors.append("%s not found at %s on the controller: install the Debian package %s or "
                              "set monitoring_validate: false" % (
                                  tool, request[tool],
                                  "prometheus" if tool == "promtool" else "prometheus-alertmanager"))
        if not errors:
            checks.append(("promtool check config prometheus/prometheus.yml",
                           [request["promtool"], "check", "config", "prometheus/prometheus.yml"]))
            if "alertmanager/alertmanager.yml" in request["files"]:
                checks.append(("amtool check-config alertmanager/alertmanager.yml",
                               [request["amtool"], "check-config", "alertmanager/alertmanager.yml"]))
        for label, argv in checks:
            result = subprocess.run(argv, cwd=tmp, capture_output=True, text=True, timeout=120, check=False)
            if result.returncode != 0:
                output = result.stdout + result.stderr
                if "amtool" in label:
                    output = "\n".join(line for line in output.splitlines()
                                       if "FAILED" in line or "error" in line.lower())[:2000]
                errors.append("%s failed: %s" % (label, output.strip()[-3000:]))
        for path, content in request["files"].items():
            if path.endswith(".json"):
                try:
                    json.loads(content)
                except ValueError as exc:
                    errors.append("%s is not valid JSON: %s" % (path, exc))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    json.dump({"errors": errors}, sys.stdout)


if __name__ == "__main__":
    main()
