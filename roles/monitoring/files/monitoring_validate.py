# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check the monitoring files with the real promtool and amtool (used by tasks/validate.yml).

Reads {"promtool", "amtool", "files": {path: content}, "prometheus_copy": text} on stdin,
writes the files into a private temporary directory (0700; secrets never leave it), runs
`promtool check rules` on every rule file (a problem in the user's own rules, the file
custom.rules.yml, is reported under its path in the model:
stack_monitoring.rules[<group>].rules[<alert or record>]), then `promtool check config`,
`amtool check-config` and a JSON parse of each dashboard, removes the directory and prints
{"errors": [...]}. Output of the tools is filtered so that no secret from alertmanager.yml
is echoed.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

USER_RULES = "prometheus/rules/custom.rules.yml"
# promtool's line for a rule: <file>: [<line>:<col>: ]group "<g>", rule <n>, "<name>": <problem>
RULE_PROBLEM = re.compile(r'^(?P<file>\S+): (?:\d+:\d+: )?group "(?P<group>[^"]*)", rule (?P<n>\d+), '
                          r'"(?P<name>[^"]*)": (?P<problem>.*)$')


def rule_errors(output):
    """promtool check rules' complaints, those of the user's rules named by their model path."""
    out = []
    for line in output.splitlines():
        line = line.strip()
        match = RULE_PROBLEM.match(line)
        if match and match.group("file") == USER_RULES:
            out.append("stack_monitoring.rules[%s].rules[%s]: promtool check rules: %s" % (
                match.group("group"), match.group("name") or int(match.group("n")) - 1, match.group("problem")))
        elif match or (line and not line.startswith(("Checking", "FAILED", "SUCCESS"))):
            out.append("promtool check rules: %s" % line)
    return out or ["promtool check rules failed: %s" % output.strip()[-3000:]]


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
                errors.append("%s not found at %s on the controller: install the Debian package %s "
                              "(scripts/setup.sh does), point monitoring_%s_binary at it, or set "
                              "monitoring_validate: false to deploy without this check" % (
                                  tool, request[tool],
                                  "prometheus" if tool == "promtool" else "prometheus-alertmanager", tool))
        rules = sorted(path for path in request["files"] if path.startswith("prometheus/rules/"))
        if not errors and rules:
            result = subprocess.run([request["promtool"], "check", "rules"] + rules, cwd=tmp,
                                    capture_output=True, text=True, timeout=120, check=False)
            if result.returncode != 0:
                errors.extend(rule_errors(result.stdout + "\n" + result.stderr))
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
