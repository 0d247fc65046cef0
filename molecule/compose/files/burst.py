"""Send COUNT GET requests to URL within about SECONDS (bounded), print status counts as JSON.

Only for the project's own proxy on 127.0.0.1; the loop is bounded in count and time.
"""
import json
import sys
import threading
import time
import urllib.error
import urllib.request

url, count, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
if not url.startswith(("http://127.0.0.1", "https://127.0.0.1")):
    sys.exit("burst.py only targets 127.0.0.1")
counts = {}
lock = threading.Lock()


def hit():
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        status = "error:%s" % type(exc).__name__
    with lock:
        counts[str(status)] = counts.get(str(status), 0) + 1


start = time.monotonic()
threads = []
for i in range(count):
    # Spread the requests evenly over the window.
    delay = start + i * seconds / count - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    thread = threading.Thread(target=hit)
    thread.start()
    threads.append(thread)
for thread in threads:
    thread.join(10)
print(json.dumps({"counts": counts, "elapsed": round(time.monotonic() - start, 3)}))
