# -*- coding: utf-8 -*-
# Copyright: (c) 2026, opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Send a bounded burst of requests to 127.0.0.1 and print the status counts as JSON.

    python burst.py --url https://127.0.0.1:28443/api/burst --count 100 --seconds 1

All requests are released within --seconds by --count threads (each sends exactly one
request, 10 s timeout). Only 127.0.0.1 is accepted as target.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import ssl
import threading
import time
import urllib.parse


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    url = urllib.parse.urlsplit(args.url)
    if url.hostname != "127.0.0.1":
        raise SystemExit("burst.py only targets 127.0.0.1")
    count = max(1, min(args.count, 1000))

    statuses = collections.Counter()
    samples = {}
    lock = threading.Lock()
    start = threading.Event()
    t0 = time.monotonic() + 0.2

    def one(i):
        start.wait()
        # Spread the requests evenly over the window.
        delay = t0 + args.seconds * i / count - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            if url.scheme == "https":
                conn = http.client.HTTPSConnection(url.hostname, url.port, timeout=10,
                                                   context=ssl._create_unverified_context())  # noqa: S323 - self-signed test cert
            else:
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
            conn.request("GET", url.path or "/")
            resp = conn.getresponse()
            body = resp.read().decode("utf-8", "replace")
            key = str(resp.status)
            with lock:
                statuses[key] += 1
                samples.setdefault(key, {"headers": {k.lower(): v for k, v in resp.getheaders()}, "body": body})
            conn.close()
        except Exception as exc:  # pylint: disable=broad-except
            with lock:
                statuses["error:" + type(exc).__name__] += 1

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    start.set()
    for thread in threads:
        thread.join(15)
    print(json.dumps({"statuses": dict(statuses), "samples": samples,
                      "elapsed": round(time.monotonic() - started, 3)}))


if __name__ == "__main__":
    main()
