# -*- coding: utf-8 -*-
# Copyright: (c) 2026, opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check a configuration rendered by opsdeck.stack.nginx_proxy with a real `nginx -t`.

Run on the controller by tasks/validate.yml. Reads one JSON document on stdin (so that
secrets never appear on a command line):

    {"nginx": "/usr/sbin/nginx", "placeholder": "<token>", "files": {"nginx.conf": "...", "tls.key": "..."}}

writes the files into a fresh private temporary directory (mode 0700, files 0600),
replaces <token> in them with that directory, runs
`nginx -t -q -e stderr -p <dir> -c <dir>/nginx.conf`, removes the directory and prints
one JSON document: {"missing": bool, "rc": int, "output": str}.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile


def main():
    request = json.load(sys.stdin)
    nginx = request["nginx"]
    if not (os.path.isfile(nginx) and os.access(nginx, os.X_OK)):
        json.dump({"missing": True, "rc": 127, "output": "%s: not found or not executable" % nginx}, sys.stdout)
        return
    tmp = tempfile.mkdtemp(prefix="opsdeck-nginx-validate.")
    try:
        for name, content in request["files"].items():
            path = os.path.join(tmp, os.path.basename(name))
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(content.replace(request["placeholder"], tmp))
        try:
            proc = subprocess.run(
                [nginx, "-t", "-q", "-e", "stderr", "-p", tmp + "/", "-c", os.path.join(tmp, "nginx.conf")],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                universal_newlines=True,
                timeout=60,
                check=False,
            )
            result = {"missing": False, "rc": proc.returncode, "output": proc.stdout.replace(tmp, "<validation dir>")}
        except subprocess.TimeoutExpired:
            result = {"missing": False, "rc": 124, "output": "nginx -t did not finish within 60 s"}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
