# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Real redis-server processes for the redis_backup tests and benchmark.

Each server listens on 127.0.0.1 on a free port, lives in its own temporary
directory, never saves on its own (``--save ''``), and is stopped by ``stop()``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

REDIS_SERVER = os.environ.get("REDIS_SERVER_BIN", "/usr/bin/redis-server")


def free_port():
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raw_command(port, *args, timeout=5.0, password=None):
    """Send one command with a bare socket and return the first reply line (bytes)."""
    parts = []
    cmds = []
    if password:
        cmds.append(("AUTH", password))
    cmds.append(args)
    for cmd in cmds:
        parts.append(b"*%d\r\n" % len(cmd))
        for arg in cmd:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"".join(parts))
        data = b""
        while data.count(b"\r\n") < len(cmds):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n")[len(cmds) - 1]


class RedisServer(object):
    """One redis-server process; use as a context manager or call start()/stop()."""

    def __init__(self, directory, dbfilename="dump.rdb", password=None, extra=(), name="redis", ping=True):
        self.directory = str(directory)
        self.dbfilename = dbfilename
        self.password = password
        self.extra = list(extra)
        self.name = name
        self.port = None
        self.ping = ping  # False: only wait for the log line (TLS-only servers)
        self.proc = None
        self.logfile = os.path.join(self.directory, "%s.log" % name)

    def start(self, attempts=5):
        os.makedirs(self.directory, exist_ok=True)
        last = None
        for _dummy in range(attempts):
            self.port = free_port()
            args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no", "--dir", self.directory,
                    "--dbfilename", self.dbfilename, "--daemonize", "no",
                    "--logfile", self.logfile, "--enable-debug-command", "yes",
                    "--repl-diskless-sync-delay", "0", "--protected-mode", "no"]
            if self.password:
                args += ["--requirepass", self.password]
            args += self.extra
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if not self.ping:
                    if "Ready to accept connections" in self._log_tail():
                        return self
                    time.sleep(0.02)
                    continue
                try:
                    reply = raw_command(self.port, "PING", password=self.password, timeout=1)
                    if reply in (b"+PONG",):
                        return self
                    if reply.startswith(b"-LOADING"):
                        time.sleep(0.05)
                        continue
                except OSError:
                    pass
                time.sleep(0.02)
            last = self._log_tail()
            self.stop()
        raise RuntimeError("redis-server did not start: %s" % last)

    def _log_tail(self):
        try:
            with open(self.logfile) as handle:
                return handle.read()[-2000:]
        except OSError:
            return "(no log)"

    def kill(self):
        """SIGKILL the server and its fork children, as the death of its container would."""
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def client(self, **kwargs):
        """A redis-py client (test side only; the module does not use redis-py)."""
        import redis  # pylint: disable=import-outside-toplevel
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, **kwargs)

    def params(self, **extra):
        """Module parameters that reach this server."""
        params = {"host": "127.0.0.1", "port": self.port, "timeout": 30}
        if self.password:
            params["password"] = self.password
        params.update(extra)
        return params

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
