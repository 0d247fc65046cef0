# -*- coding: utf-8 -*-
# Copyright: (c) 2026, opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A tiny HTTP backend for the nginx_proxy Molecule scenario.

Answers every GET/POST with JSON naming the backend, the path it received and the
forwarding headers nginx set, so the verifier can tell which backend answered and
what the proxy passed on. It also sends its own X-Frame-Options (SAMEORIGIN) to check
that the proxy replaces it. Listens on 127.0.0.1 only and exits after --lifetime seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ECHOED = ("host", "x-real-ip", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
          "x-request-id", "x-tenant-id", "authorization", "connection")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "opsdeck-molecule-backend"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({
            "backend": self.server.backend_name,
            "path": self.path,
            "method": self.command,
            "headers": {k: self.headers.get(k) for k in ECHOED if self.headers.get(k) is not None},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Frame-Options", "SAMEORIGIN")
        self.send_header("X-Backend", self.server.backend_name)
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, fmt, *args):  # quiet
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lifetime", type=int, default=1800)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.backend_name = args.name
    timer = threading.Timer(args.lifetime, lambda: os._exit(0))
    timer.daemon = True
    timer.start()
    server.serve_forever()


if __name__ == "__main__":
    main()
