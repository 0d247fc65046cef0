# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark of opsdeck.stack.redis_backup (prints figures; not a test).

    BENCH_REDIS_MB=256 .venv/bin/python tests/bench/bench_redis_backup.py

Starts its own redis-server on 127.0.0.1 (temporary directory, ``--save ''``,
``repl-diskless-sync-delay 0``: the same server config for the module and for
``redis-cli --rdb``), fills it with 1 KiB incompressible values in three steps up to
BENCH_REDIS_MB (default 1024) and, at each step:

- snapshot: the module (run as its own process, exactly as Ansible runs it) streaming an
  RDB, sha256 included, vs ``redis-cli --rdb`` on the same data: MB/s and ratio;
- key export of every key (1 KiB values): MiB/s of values, vs a loop doing one round
  trip per key (PEXPIRETIME + DUMP), measured on a sample;
- peak RSS (VmHWM of the module process itself) and its CPU time, to show that memory
  stays flat whatever the data size (goal < 100 MB);
- at the largest step, the restore of the export into an empty server.

The machine may be shared: CPU seconds of the module process and of redis-server are
printed beside wall-clock rates, so that client cost and server cost can be told apart.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
COLLECTIONS = os.path.join(ROOT, "build", "collections")
sys.path.insert(0, os.path.join(ROOT, "tests", "unit"))
sys.path.insert(0, COLLECTIONS)

from redis_fixtures import RedisServer  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.opsdeck.stack.plugins.module_utils.clients.resp import (  # noqa: E402
    RespConnection,
    encode_command,
)

MODULE = os.path.join(ROOT, "plugins", "modules", "redis_backup.py")
MIB = 1024 * 1024
VALUE = 1024


def proc_cpu(pid):
    """User+system CPU seconds of a running process."""
    with open("/proc/%d/stat" % pid) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Runs the module file as __main__ and, at exit, reports the peak RSS of this process'
# own address space (VmHWM). ru_maxrss is not used: after fork/vfork + exec, Linux
# carries the parent's high-water mark into the child's ru_maxrss.
WRAPPER = (
    "import atexit, runpy, sys\n"
    "def report():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            sys.stderr.write('BENCH-HWM ' + line.split()[1] + '\\n')\n"
    "atexit.register(report)\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def run_module(args, workdir, server):
    """Run the module file as a separate process; return (result, wall s, peak RSS MiB, cpu s, redis cpu s)."""
    path = os.path.join(workdir, "args-%d.json" % int(time.time() * 1e6))
    with open(path, "w") as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": args}, handle)
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    redis_before = proc_cpu(server.proc.pid)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, MODULE, path], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    out, err = proc.communicate()
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    try:
        result = json.loads(out)
    except ValueError:
        raise SystemExit("module output is not JSON:\n%s\n%s" % (out[-2000:], err[-2000:]))
    if result.get("failed"):
        raise SystemExit("module failed: %s" % result.get("msg"))
    hwm = [int(line.split()[1]) for line in err.decode().splitlines() if line.startswith("BENCH-HWM ")]
    return (result, wall, hwm[-1] / 1024.0 if hwm else float("nan"), cpu,
            proc_cpu(server.proc.pid) - redis_before)


def fill(server, first, last, seed_block):
    """SET key:<i> to a 1 KiB slice of a random block (incompressible, distinct per key)."""
    conn = RespConnection(port=server.port, timeout=120).connect()
    try:
        batch = 5000
        span = len(seed_block) - VALUE
        for start in range(first, last, batch):
            stop = min(start + batch, last)
            parts = []
            for i in range(start, stop):
                off = (i * 7919) % span
                parts.append(encode_command((b"SET", b"key:%d" % i, seed_block[off:off + VALUE])))
            conn.send(b"".join(parts))
            for _dummy in range(stop - start):
                conn.read_reply()
    finally:
        conn.close()


def rdb_cli(server, dest):
    redis_before = proc_cpu(server.proc.pid)
    start = time.monotonic()
    subprocess.run(["redis-cli", "-p", str(server.port), "--rdb", dest], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - start
    return wall, os.path.getsize(dest), proc_cpu(server.proc.pid) - redis_before


def one_key_loop(server, count, budget=20.0):
    """PEXPIRETIME + DUMP for one key per round trip; returns (keys, value bytes, seconds)."""
    conn = RespConnection(port=server.port, timeout=30).connect()
    done = 0
    size = 0
    start = time.monotonic()
    try:
        while done < count and time.monotonic() - start < budget:
            key = b"key:%d" % done
            conn.send(encode_command((b"PEXPIRETIME", key)) + encode_command((b"DUMP", key)))
            conn.read_reply()
            payload = conn.read_reply()
            size += len(payload)
            done += 1
    finally:
        conn.close()
    return done, done * VALUE, time.monotonic() - start


def main():
    total_mb = int(os.environ.get("BENCH_REDIS_MB", "1024"))
    total_keys = total_mb * MIB // VALUE
    steps = [total_keys // 4, total_keys // 2, total_keys]
    work = tempfile.mkdtemp(prefix="bench-redis-")
    dest = os.path.join(work, "backups")
    rows = []
    print("redis_backup benchmark: %d MiB of 1 KiB values (%d keys), steps %s" % (total_mb, total_keys, steps))
    print("machine: %d CPUs, load average %.2f %.2f %.2f" % ((os.cpu_count() or 0,) + os.getloadavg()))
    server = RedisServer(os.path.join(work, "source"), name="source", extra=["--maxmemory", "0"]).start()
    target = None
    try:
        block = os.urandom(8 * MIB)
        filled = 0
        export = None
        for keys in steps:
            t0 = time.monotonic()
            fill(server, filled, keys, block)
            filled = keys
            print("\n== %d keys (%d MiB of values), filled in %.1fs" % (keys, keys * VALUE // MIB, time.monotonic() - t0))

            snap, wall, rss, cpu, rcpu = run_module({"port": server.port, "dest": dest, "name_prefix": "snap-"},
                                                    work, server)
            cli_path = os.path.join(work, "cli.rdb")
            cli_wall, cli_size, cli_rcpu = rdb_cli(server, cli_path)
            os.unlink(cli_path)
            snap_mb = snap["rdb_size"] / 1e6 / snap["duration"]
            cli_mb = cli_size / 1e6 / cli_wall
            print("snapshot  module: %7.1f MB/s (%d MB in %.2fs, transfer %s, sha256 + fsync included; "
                  "process %.2fs with interpreter start)  peak RSS %.1f MiB  cpu %.2fs  redis cpu %.2fs"
                  % (snap_mb, snap["rdb_size"] / 1e6, snap["duration"], snap["transfer"], wall, rss, cpu, rcpu))
            print("          redis-cli --rdb: %7.1f MB/s (%.2fs, redis cpu %.2fs)  ratio module/cli = %.2f"
                  % (cli_mb, cli_wall, cli_rcpu, snap_mb / cli_mb))
            os.unlink(snap["file"])
            os.unlink(snap["sha256_file"])

            export, ewall, erss, ecpu, ercpu = run_module(
                {"port": server.port, "dest": dest, "mode": "keys", "patterns": ["key:*"], "name_prefix": "keys-",
                 "retention_count": 1}, work, server)
            value_mib = export["keys"] * VALUE / MIB
            ewall = export["duration"]
            export_rate = value_mib / ewall
            loop_keys, loop_bytes, loop_wall = one_key_loop(server, min(keys, 30000))
            loop_rate = loop_bytes / MIB / loop_wall
            print("keys export: %7.1f MiB/s of values (%d keys, %.2fs, %.0f keys/s)  peak RSS %.1f MiB  "
                  "cpu %.2fs  redis cpu %.2fs"
                  % (export_rate, export["keys"], ewall, export["keys"] / ewall, erss, ecpu, ercpu))
            print("          one round trip per key: %7.1f MiB/s (%d keys in %.2fs)  ratio = %.1fx"
                  % (loop_rate, loop_keys, loop_wall, export_rate / loop_rate))
            rows.append({"keys": keys, "snapshot_MBps": round(snap_mb, 1), "cli_MBps": round(cli_mb, 1),
                         "snapshot_rss_MiB": round(rss, 1), "export_MiBps": round(export_rate, 1),
                         "loop_MiBps": round(loop_rate, 1), "export_rss_MiB": round(erss, 1)})

        target = RedisServer(os.path.join(work, "target"), name="target", extra=["--maxmemory", "0"]).start()
        restore, _wall, rrss, rcpu_self, rrcpu = run_module(
            {"port": target.port, "state": "restored", "src": export["file"]}, work, target)
        rwall = restore["duration"]
        print("\nrestore: %7.1f MiB/s of values (%d keys in %.2fs, %.0f keys/s)  peak RSS %.1f MiB  cpu %.2fs  "
              "redis cpu %.2fs (sha256 check of the file included)"
              % (restore["restored"] * VALUE / MIB / rwall, restore["restored"], rwall, restore["restored"] / rwall,
                 rrss, rcpu_self, rrcpu))
        print("\nsummary: %s" % json.dumps(rows))
        print("peak RSS across sizes: snapshot %s MiB, key export %s MiB"
              % ([r["snapshot_rss_MiB"] for r in rows], [r["export_rss_MiB"] for r in rows]))
    finally:
        server.stop()
        if target is not None:
            target.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
