# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup and restore logic behind the ``opsdeck.stack.redis_backup`` module.

Private to opsdeck.stack; standard library only (it runs on the managed host).

Three kinds of work:

* **snapshot**: a full RDB streamed over the Redis protocol exactly as
  ``redis-cli --rdb`` gets it (``REPLCONF capa eof``, ``REPLCONF rdb-only 1``,
  ``SYNC``; both the ``$<len>`` bulk form and the diskless ``$EOF:<mark>`` form),
  copied in fixed-size chunks to a temporary file in the destination directory while
  its sha256 is computed, then fsynced, renamed into place and the directory fsynced.
* **keys**: a portable export of key patterns (SCAN + pipelined PEXPIRETIME/PTTL +
  DUMP) in the format described below, and its restore (pipelined RESTORE).
* **bgsave**: make the server write its own RDB (BGSAVE, joining a running one).

Key export format (version 1), all integers big-endian::

    magic     b"OPSDECK-REDIS-KEYS\\n"                          19 bytes
    u32       H, the length of the header block
    header    H bytes: one JSON object (UTF-8) right-padded with spaces
    body      records then an end marker; gzip-compressed when the header says
              "compression": "gzip", raw otherwise
      record  b"K" u32 key_len  i64 expire_at_ms  u64 payload_len  key  payload
      end     b"E" u64 record_count

``payload`` is the exact DUMP reply: the serialized value followed by its 2-byte
little-endian RDB version and its 8-byte CRC64. ``expire_at_ms`` is -1 for a key
without expiry, otherwise the absolute Unix time in milliseconds at which the key
expires, on the source server's clock: read with PEXPIRETIME on Redis >= 7.0 (exact),
or computed as TIME + PTTL with TIME sent first in the same pipeline on older servers
(the key may then expire a few milliseconds early, never late). A restore uses
``RESTORE key <expire_at_ms> payload ABSTTL`` (Redis >= 5.0), so time spent in the
backup counts against the TTL, and records already expired when the restore reaches
them are not restored (counted as ``expired``). Clock skew between the source and the
target server is carried over as is.

The header JSON holds: ``format`` ("opsdeck-redis-keys"), ``version`` (1),
``redis_version`` (source server, from INFO), ``rdb_version`` (the RDB version in the
footer of the first DUMP payload; null when no key was exported), ``db``, ``patterns``,
``ttl`` ("absolute-unix-ms"), ``ttl_source`` ("pexpiretime" or "time+pttl"),
``compression``, ``created_ms`` / ``finished_ms`` (source server time), ``records``
and ``payload_bytes``. It is written first with placeholders and rewritten in place
(same length) once the export is complete; the sha256 sidecar is computed afterwards
from the finished file.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import struct
import tempfile
import threading
import time

from ansible_collections.opsdeck.stack.plugins.module_utils.clients.resp import (
    RespConnection,
    RespConnectionError,
    RespError,
    RespProtocolError,
    encode_command,
)

MANIFEST_NAME = ".redis_backup_manifest.json"
KEYS_MAGIC = b"OPSDECK-REDIS-KEYS\n"
KEYS_FORMAT = "opsdeck-redis-keys"
KEYS_FORMAT_VERSION = 1
SNAPSHOT_SUFFIX = ".rdb"
KEYS_SUFFIX = ".keys"
CHUNK = 1024 * 1024
BIG_PAYLOAD = 1024 * 1024
MAX_LISTED = 100
DUMP_PAYLOAD_ERROR = "DUMP payload version or checksum are wrong"
EOF_MARK_LEN = 40

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_RECORD = struct.Struct(">cIqQ")
_END = struct.Struct(">cQ")

# RDB_VERSION written by each Redis release line (src/rdb.h); newest first.
RDB_VERSIONS = (
    ((7, 4), 12),
    ((7, 2), 11),
    ((7, 0), 10),
    ((5, 0), 9),
    ((4, 0), 8),
    ((3, 2), 7),
    ((2, 6), 6),
)

KEYS_MODE_HINT = (
    "Use mode: keys instead (SCAN + DUMP + PEXPIRETIME over the normal protocol; the "
    "user needs +scan +dump +pexpiretime (or +pttl) and read access to the keys), "
    "or allow replication for this user (ACL SETUSER <user> +sync +psync +replconf)."
)


class BackupError(Exception):
    """A failure with a message that says what happened and what to do."""

    def __init__(self, msg, **details):
        super(BackupError, self).__init__(msg)
        self.msg = msg
        self.details = details


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------
def _text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return value


def _bytes(value):
    if isinstance(value, bytes):
        return value
    return value.encode("utf-8")


def version_tuple(version):
    """'7.0.15' -> (7, 0, 15); None or garbage -> None."""
    if not version:
        return None
    parts = []
    for piece in str(version).split("."):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group(0)))
    return tuple(parts) if parts else None


def rdb_version_for(redis_version):
    """The RDB version a Redis release writes (and the newest it can load), or None."""
    vt = version_tuple(redis_version)
    if not vt:
        return None
    for since, rdb in RDB_VERSIONS:
        if vt[:2] >= since:
            return rdb
    return None


def payload_rdb_version(payload_tail):
    """RDB version from the last 10 bytes of a DUMP payload (u16 LE + CRC64)."""
    if payload_tail is None or len(payload_tail) < 10:
        return None
    tail = bytes(payload_tail[-10:])
    return tail[0] | (tail[1] << 8)


def parse_info(raw):
    """Parse an INFO reply into a dict of str -> str."""
    info = {}
    for line in _text(raw or b"").splitlines():
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        info[key.strip()] = value.strip()
    return info


def utc_stamp(now=None):
    """A sortable UTC timestamp with milliseconds for file names."""
    now = time.time() if now is None else now
    dt = datetime.datetime.fromtimestamp(now, tz=datetime.timezone.utc)
    return dt.strftime("%Y%m%dT%H%M%S") + ".%03dZ" % (dt.microsecond // 1000)


def fsync_dir(path):
    """fsync a directory so that a rename in it is durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path, chunk=CHUNK):
    """Hex sha256 of a file, read in fixed-size chunks."""
    digest = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(buf)
            if not count:
                break
            digest.update(view[:count])
    return digest.hexdigest()


def read_sha256_sidecar(path):
    """The hex digest in ``path`` (sha256sum format), or None if the file is absent."""
    try:
        with open(path, "r") as handle:
            first = handle.readline().strip()
    except (IOError, OSError) as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise BackupError("cannot read checksum file %s: %s" % (path, exc))
    digest = first.split(" ", 1)[0].lower()
    if not re.match(r"^[0-9a-f]{64}$", digest):
        raise BackupError("checksum file %s is not in sha256sum format (<hex>  <file>)" % path)
    return digest


# ---------------------------------------------------------------------------
# Redis glob patterns (stringmatchlen semantics), used to de-duplicate keys that
# several patterns match and to filter records on restore
# ---------------------------------------------------------------------------
GLOB_CHARS = b"*?[\\"


def is_glob(pattern):
    """True when a key pattern has glob syntax; a literal key name skips SCAN."""
    pattern = _bytes(pattern)
    return any(ch in pattern for ch in GLOB_CHARS)


def _class_item(code):
    return re.escape(bytes((code,)))


def glob_to_regex(pattern):
    """Compile a Redis glob (as SCAN MATCH / KEYS understand it) to a bytes regex.

    Redis' matcher never matches an empty key name except with the pattern "" or the
    pattern "*" (which SCAN and KEYS short-cut to "everything"): the lookahead keeps
    that quirk, so patterns like "**" skip the empty key exactly as Redis does.
    """
    pat = _bytes(pattern)
    out = [] if pat in (b"", b"*") else [b"(?=.)"]
    i = 0
    n = len(pat)
    while i < n:
        ch = pat[i]
        if ch == 0x2A:  # *
            while i + 1 < n and pat[i + 1] == 0x2A:
                i += 1
            out.append(b".*")
        elif ch == 0x3F:  # ?
            out.append(b".")
        elif ch == 0x5B:  # [
            i += 1
            negate = i < n and pat[i] == 0x5E
            if negate:
                i += 1
            items = []
            while True:
                if i < n and pat[i] == 0x5C and n - i >= 2:
                    i += 1
                    items.append(_class_item(pat[i]))
                elif i < n and pat[i] == 0x5D:
                    break
                elif i >= n:
                    break
                elif n - i >= 3 and pat[i + 1] == 0x2D:
                    start, end = pat[i], pat[i + 2]
                    if start > end:
                        start, end = end, start
                    items.append(_class_item(start) + b"-" + _class_item(end))
                    i += 2
                else:
                    items.append(_class_item(pat[i]))
                i += 1
            if items:
                out.append((b"[^" if negate else b"[") + b"".join(items) + b"]")
            else:
                out.append(b"." if negate else b"(?!)")
        elif ch == 0x5C and n - i >= 2:  # backslash escapes the next byte
            i += 1
            out.append(re.escape(bytes((pat[i],))))
        else:
            out.append(re.escape(bytes((ch,))))
        i += 1
    return re.compile(b"".join(out), re.DOTALL)


class KeyFilter(object):
    """Match keys against a list of patterns (literal names and globs)."""

    def __init__(self, patterns):
        self.literals = set()
        self.globs = []
        for pattern in patterns or []:
            pattern = _bytes(pattern)
            if is_glob(pattern):
                self.globs.append(glob_to_regex(pattern))
            else:
                self.literals.add(pattern)

    def __bool__(self):
        return bool(self.literals or self.globs)

    __nonzero__ = __bool__

    def match(self, key):
        if key in self.literals:
            return True
        for regex in self.globs:
            if regex.fullmatch(key):
                return True
        return False


# ---------------------------------------------------------------------------
# connecting
# ---------------------------------------------------------------------------
def connect(params):
    """An authenticated connection with the right database selected."""
    conn = RespConnection(
        host=params.get("host") or "127.0.0.1",
        port=params.get("port") or 6379,
        unix_socket=params.get("unix_socket"),
        timeout=params.get("timeout") or 30,
        tls=bool(params.get("tls")),
        validate_certs=params.get("validate_certs", True),
        ca_path=params.get("ca_path"),
        client_cert=params.get("client_cert"),
        client_key=params.get("client_key"),
        chunk_size=CHUNK,
    )
    try:
        conn.connect()
    except RespConnectionError as exc:
        raise BackupError(
            "%s. Check host/port (or unix_socket), that Redis listens there and that "
            "nothing (firewall, port-forward, TLS setting) is in the way." % exc)
    try:
        password = params.get("password")
        username = params.get("username")
        if password is not None and password != "":
            try:
                if username:
                    conn.command("AUTH", username, password)
                else:
                    conn.command("AUTH", password)
            except RespError as exc:
                who = "user '%s'" % username if username else "the default user"
                if "without any password configured" in exc.message:
                    raise BackupError(
                        "Redis at %s has no password set for %s but a password was given: "
                        "remove password (or set username for an ACL user)."
                        % (conn.address, who))
                raise BackupError(
                    "authentication to Redis at %s as %s failed (%s): check password and, "
                    "for an ACL user, username." % (conn.address, who, exc.message))
        elif username:
            raise BackupError("username '%s' was given without a password: set password." % username)
        try:
            conn.command("PING")
        except RespError as exc:
            if exc.code == "NOAUTH":
                raise BackupError(
                    "Redis at %s requires authentication: set password (and username for an "
                    "ACL user)." % conn.address)
            if exc.code != "NOPERM":
                raise BackupError("Redis at %s answered PING with an error: %s" % (conn.address, exc.message))
        db = int(params.get("db") or 0)
        if db:
            try:
                conn.command("SELECT", db)
            except RespError as exc:
                raise BackupError("cannot select database %d on Redis at %s: %s" % (db, conn.address, exc.message))
    except RespConnectionError as exc:
        conn.close()
        hint = ""
        if params.get("tls") and not params.get("client_cert"):
            hint = (" If the server requires TLS client certificates (tls-auth-clients yes), set "
                    "client_cert (and client_key).")
        raise BackupError("%s (while authenticating).%s" % (exc, hint))
    except BaseException:
        conn.close()
        raise
    return conn


def server_time_ms(conn):
    """The server's clock (TIME) in Unix ms; the local clock if TIME is not allowed."""
    try:
        reply = conn.command("TIME")
        return int(reply[0]) * 1000 + int(reply[1]) // 1000
    except RespError:
        return int(time.time() * 1000)


def server_info(conn, section=None):
    """INFO as a dict; {} if the user may not run INFO."""
    try:
        raw = conn.command("INFO", section) if section else conn.command("INFO")
    except RespError:
        return {}
    return parse_info(raw)


def target_rdb_version(conn, info):
    """The newest RDB version the server can load, and how that was found.

    FUNCTION DUMP (Redis >= 7.0, read-only) returns a payload whose footer carries the
    server's own RDB version; otherwise the version is looked up from redis_version.
    """
    try:
        payload = conn.command("FUNCTION", "DUMP")
        version = payload_rdb_version(payload)
        if version:
            return version, "function-dump"
    except RespError:
        pass
    version = rdb_version_for(info.get("redis_version"))
    if version:
        return version, "version-table"
    return None, "unknown"


# ---------------------------------------------------------------------------
# files: atomic writes, sidecars, manifest, retention
# ---------------------------------------------------------------------------
class HashingWriter(object):
    """A write-only file wrapper that feeds every byte written to sha256."""

    def __init__(self, fileobj):
        self._f = fileobj
        self._h = hashlib.sha256()
        self.size = 0

    def write(self, data):
        self._h.update(data)
        self._f.write(data)
        count = len(data)
        self.size += count
        return count

    def flush(self):
        self._f.flush()

    def hexdigest(self):
        return self._h.hexdigest()


class _WritebackFile(object):
    """A buffered binary file that has the kernel write it to disk as it grows.

    Every WRITEBACK_EVERY bytes a helper thread runs fdatasync() while streaming goes
    on, so that the disk works in parallel with the network instead of all at once in
    the final fsync (which would otherwise stall on gigabytes of dirty pages).
    """

    WRITEBACK_EVERY = 32 * CHUNK

    def __init__(self, raw):
        self.raw = raw
        self._buffered = io.BufferedWriter(raw, buffer_size=CHUNK)
        self._pending = 0
        self._thread = None
        self._error = None

    def write(self, data):
        count = self._buffered.write(data)
        self._pending += count
        if self._pending >= self.WRITEBACK_EVERY:
            self._pending = 0
            if self._thread is None or not self._thread.is_alive():
                self._check()
                self._thread = threading.Thread(target=self._sync, name="redis_backup-writeback")
                self._thread.daemon = True
                self._thread.start()
        return count

    def _sync(self):
        try:
            os.fdatasync(self.raw.fileno())
        except (OSError, ValueError) as exc:
            self._error = exc

    def _check(self):
        if self._error is not None:
            error, self._error = self._error, None
            raise BackupError("writing the backup failed: %s" % error)

    def wait(self):
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._check()

    def flush(self):
        self._buffered.flush()

    def fileno(self):
        return self.raw.fileno()

    def close(self):
        try:
            self.wait()
        finally:
            self._buffered.close()


class AtomicFile(object):
    """A temporary file next to ``final_path``, renamed into place on commit."""

    def __init__(self, final_path, perms=0o600):
        self.final_path = final_path
        self.directory = os.path.dirname(final_path) or "."
        try:
            fd, self.tmp_path = tempfile.mkstemp(
                prefix="." + os.path.basename(final_path) + ".", suffix=".part", dir=self.directory)
        except (IOError, OSError) as exc:
            raise BackupError(
                "cannot create a file in %s: %s. Make dest a writable directory for the "
                "user the module runs as (become may be needed)." % (self.directory, exc.strerror or exc))
        try:
            os.fchmod(fd, perms)
        except OSError:
            pass
        self.raw = io.FileIO(fd, "wb", closefd=True)
        self.file = _WritebackFile(self.raw)
        self.committed = False

    def fileno(self):
        return self.raw.fileno()

    def commit(self):
        self.file.flush()
        self.file.wait()
        os.fsync(self.raw.fileno())
        self.file.close()
        if os.path.lexists(self.final_path):
            raise BackupError("%s appeared while the backup was written; not overwriting it." % self.final_path)
        os.rename(self.tmp_path, self.final_path)
        fsync_dir(self.directory)
        self.committed = True

    def abort(self):
        if self.committed:
            return
        try:
            self.file.close()
        except (IOError, OSError, ValueError, BackupError):
            try:
                self.raw.close()
            except (IOError, OSError):
                pass
        try:
            os.unlink(self.tmp_path)
        except OSError:
            pass


def write_atomic_bytes(path, data, perms=0o600):
    """Write small content atomically (temp file, fsync, rename, fsync dir)."""
    handle = AtomicFile(path + ".new", perms)
    try:
        handle.file.write(data)
        handle.file.flush()
        os.fsync(handle.raw.fileno())
        handle.file.close()
        os.rename(handle.tmp_path, path)
        handle.committed = True
        fsync_dir(handle.directory)
    finally:
        handle.abort()


def sha256_line(digest, filename):
    """One line in sha256sum format."""
    return "%s  %s\n" % (digest, os.path.basename(filename))


def manifest_path(dest):
    return os.path.join(dest, MANIFEST_NAME)


def load_manifest(dest):
    """The manifest of ``dest`` ({"format": 1, "files": [...]}); empty if absent."""
    path = manifest_path(dest)
    try:
        with open(path, "r") as handle:
            data = json.load(handle)
    except (IOError, OSError) as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return {"format": 1, "files": []}
        raise BackupError("cannot read the backup manifest %s: %s" % (path, exc))
    except ValueError as exc:
        raise BackupError(
            "the backup manifest %s is not valid JSON (%s). Retention only deletes files the "
            "manifest lists: repair the file or move it away (the next run starts a new one)."
            % (path, exc))
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise BackupError("the backup manifest %s has no 'files' list; repair it or move it away." % path)
    data["files"] = [e for e in data["files"] if isinstance(e, dict) and _safe_name(e.get("file"))]
    return data


def save_manifest(dest, manifest):
    data = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8") + b"\n"
    write_atomic_bytes(manifest_path(dest), data)


def _safe_name(name):
    """A manifest entry may only name a plain file inside dest."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name
            and "\x00" not in name and name != MANIFEST_NAME)


def entry_files(entry):
    """The file names (inside dest) that a manifest entry owns."""
    names = [entry["file"]]
    side = entry.get("sha256_file")
    if _safe_name(side):
        names.append(side)
    return names


def plan_retention(entries, prefix, now, count=None, days=None, protect=(), mode=None):
    """Split the manifest entries of ``prefix`` (and ``mode``) into (keep, delete), newest first.

    An entry is deleted when it is beyond the ``count`` newest, or older than ``days``.
    Entries named in ``protect`` (the backup just written) are always kept. Entries of
    other prefixes or modes are not considered (and are kept).
    """
    mine = [e for e in entries if e.get("prefix") == prefix and (mode is None or e.get("mode") == mode)]
    mine.sort(key=lambda e: (float(e.get("created") or 0), e["file"]), reverse=True)
    keep, delete = [], []
    cutoff = None if days is None else now - float(days) * 86400.0
    for index, entry in enumerate(mine):
        doomed = False
        if count is not None and index >= count:
            doomed = True
        if cutoff is not None and float(entry.get("created") or 0) < cutoff:
            doomed = True
        if entry["file"] in protect:
            doomed = False
        (delete if doomed else keep).append(entry)
    return keep, delete


class DirLock(object):
    """An exclusive flock on the destination directory itself (no lock file)."""

    def __init__(self, path):
        self.path = path
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDONLY)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc_info):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def prepare_dest(dest, check_mode):
    """Make sure dest is a directory (create it, mode 0700); report if it would be created."""
    if os.path.isdir(dest):
        return False
    if os.path.lexists(dest):
        raise BackupError("dest %s exists and is not a directory: point dest at a directory." % dest)
    if check_mode:
        parent = dest
        while parent and not os.path.lexists(parent):
            parent = os.path.dirname(parent.rstrip("/"))
        if parent and not os.path.isdir(parent):
            raise BackupError(
                "dest %s cannot be created: %s is not a directory. Point dest at a "
                "directory path." % (dest, parent))
        return True
    try:
        os.makedirs(dest, 0o700)
    except (IOError, OSError) as exc:
        raise BackupError(
            "dest %s cannot be created (%s): point dest at a writable directory path."
            % (dest, exc.strerror or exc))
    return True


def backup_filename(prefix, kind, compress, now, dest):
    """A new, unused file name: <prefix><UTC stamp>.rdb[.gz] or .keys."""
    suffix = SNAPSHOT_SUFFIX + (".gz" if compress else "") if kind == "snapshot" else KEYS_SUFFIX
    base = "%s%s" % (prefix, utc_stamp(now))
    name = base + suffix
    serial = 1
    while os.path.lexists(os.path.join(dest, name)) or os.path.lexists(os.path.join(dest, name + ".sha256")):
        name = "%s-%d%s" % (base, serial, suffix)
        serial += 1
    return name


# ---------------------------------------------------------------------------
# snapshot (RDB over the replication protocol)
# ---------------------------------------------------------------------------
def _refusal(conn, step, message):
    return BackupError(
        "Redis at %s refused to stream an RDB snapshot: %s answered '%s'. Managed Redis "
        "services and ACL users without replication rights cannot use mode: snapshot. %s"
        % (conn.address, step, message, KEYS_MODE_HINT),
        refused_command=step, redis_error=message)


def start_sync(conn):
    """Ask for a full RDB the way redis-cli --rdb does; return (form, size_or_mark).

    form is "bulk" (size is the byte count) or "eof" (diskless; the payload ends with
    the returned 40-byte mark).
    """
    reply = conn.pipeline([("REPLCONF", "capa", "eof"), ("REPLCONF", "rdb-only", "1")])
    if isinstance(reply[0], RespError):
        raise _refusal(conn, "REPLCONF capa eof", reply[0].message)
    if isinstance(reply[1], RespError) and "Unrecognized REPLCONF option" not in reply[1].message:
        raise _refusal(conn, "REPLCONF rdb-only 1", reply[1].message)
    step = "SYNC"
    conn.send_command("SYNC")
    while True:
        line = conn.read_line().lstrip(b"\n")
        if not line:
            continue
        if line[:1] == b"-":
            message = _text(line[1:])
            if step == "SYNC" and "unknown command" in message.lower():
                step = "PSYNC ? -1"
                conn.send_command("PSYNC", "?", "-1")
                continue
            raise _refusal(conn, step, message)
        if line[:1] == b"+":  # +FULLRESYNC <replid> <offset> (PSYNC)
            continue
        if line.startswith(b"$EOF:"):
            mark = line[5:]
            if len(mark) != EOF_MARK_LEN:
                raise BackupError("Redis at %s sent a malformed EOF mark: %r" % (conn.address, line[:80]))
            return "eof", bytes(mark)
        if line[:1] == b"$":
            try:
                return "bulk", int(line[1:])
            except ValueError:
                pass
        raise BackupError("Redis at %s answered %s with %r, not an RDB transfer." % (conn.address, step, line[:80]))


class _RdbSink(object):
    """Checks the RDB header/footer of the bytes going through and counts them."""

    def __init__(self, write):
        self._write = write
        self.size = 0
        self.head = b""
        self.tail = b""

    def __call__(self, data):
        count = len(data)
        if not count:
            return
        if len(self.head) < 9:
            self.head = (self.head + bytes(data[:9]))[:9]
        self.tail = (self.tail + bytes(data[-9:]))[-9:] if count < 9 else bytes(data[-9:])
        self.size += count
        self._write(data)


def stream_snapshot(conn, write, chunk_size=CHUNK, progress=None):
    """Stream a full RDB from ``conn`` into ``write`` (called with bytes-like chunks).

    Returns {"transfer": "bulk"|"eof", "size": bytes, "rdb_version": int}. Memory use is
    one chunk. Raises BackupError when the server refuses, the connection drops or the
    stream is not a complete RDB.
    """
    started = time.time()
    form, arg = start_sync(conn)
    sink = _RdbSink(write)
    block = bytearray(chunk_size)
    view = memoryview(block)
    expected = arg if form == "bulk" else None
    try:
        if form == "bulk":
            remaining = arg
            while remaining:
                count = conn.readinto(view[:min(remaining, chunk_size)])
                sink(view[:count])
                remaining -= count
                if progress:
                    progress(sink.size)
        else:
            mark = arg
            held = b""  # the last bytes seen, not written yet: they may be the mark
            while True:
                count = conn.readinto(view)
                if count >= EOF_MARK_LEN:
                    if held:
                        sink(held)
                        held = b""
                    if view[count - EOF_MARK_LEN:count] == mark:
                        sink(view[:count - EOF_MARK_LEN])
                        break
                    sink(view[:count - EOF_MARK_LEN])
                    held = bytes(view[count - EOF_MARK_LEN:count])
                else:
                    held += bytes(view[:count])
                    if len(held) >= EOF_MARK_LEN and held[-EOF_MARK_LEN:] == mark:
                        sink(held[:-EOF_MARK_LEN])
                        break
                    if len(held) > EOF_MARK_LEN:
                        sink(held[:-EOF_MARK_LEN])
                        held = held[-EOF_MARK_LEN:]
                if progress:
                    progress(sink.size)
    except (RespConnectionError, RespProtocolError) as exc:
        if expected is not None:
            got = "%d of %d bytes" % (sink.size, expected)
        else:
            got = "%d bytes, before the end-of-transfer mark" % sink.size
        raise BackupError(
            "the RDB stream from %s broke after %s: %s. No backup file was written. Check "
            "that Redis stays up during the backup (memory for the fork, OOM killer, pod "
            "restarts) and raise timeout if the server is slow to produce the snapshot."
            % (conn.address, got, exc), bytes_received=sink.size)
    if not sink.head.startswith(b"REDIS") or len(sink.tail) < 9 or sink.tail[0] != 0xFF:
        raise BackupError(
            "the stream from %s is not a complete RDB file (%d bytes; bad header or missing "
            "EOF opcode). No backup file was written." % (conn.address, sink.size))
    try:
        rdb_version = int(sink.head[5:9])
    except ValueError:
        rdb_version = None
    return {"transfer": form, "size": sink.size, "rdb_version": rdb_version,
            "stream_seconds": round(time.time() - started, 3)}


# ---------------------------------------------------------------------------
# BGSAVE
# ---------------------------------------------------------------------------
def run_bgsave(conn, timeout=3600.0, poll=0.1, clock=time.monotonic, sleep=time.sleep):
    """Make the server write its RDB to its own disk: join a running save or BGSAVE.

    A save this function starts is complete when rdb_bgsave_in_progress:0,
    rdb_saves has grown past its value before BGSAVE (Redis counts a disk save when it
    forks) and rdb_last_bgsave_status:ok. A save found running is joined: we wait for
    it to end, and it counts only if it was a disk save that succeeded, which Redis
    shows by moving rdb_last_save_time. The running child may also be a diskless
    replication transfer (another backup, a replica syncing), which writes nothing to
    disk; then, or when the evidence is ambiguous, a BGSAVE of our own follows. Servers
    without rdb_saves (< 7.0) fall back to seeing our save run and end.
    """
    address = conn.address
    deadline = clock() + timeout

    def info():
        data = server_info(conn, "persistence")
        if "rdb_bgsave_in_progress" not in data:
            raise BackupError(
                "cannot read INFO persistence on Redis at %s (the user needs +info): bgsave "
                "cannot tell when the save is complete." % address)
        return data

    def wait(what):
        if clock() >= deadline:
            raise BackupError(
                "%s on Redis at %s did not finish within bgsave_timeout=%ss; it goes on running "
                "on the server. Raise bgsave_timeout for large datasets." % (what, address, timeout))
        sleep(poll)

    def failed(status):
        return BackupError(
            "the BGSAVE on Redis at %s failed (rdb_last_bgsave_status:%s). Check the Redis log: "
            "disk space and permissions of its dir, and memory for the fork." % (address, status))

    waited = False
    while True:
        current = info()
        if current.get("rdb_bgsave_in_progress") == "1":
            # join: wait for the running child, then see whether it saved to disk
            waited = True
            last_save = current.get("rdb_last_save_time")
            while current.get("rdb_bgsave_in_progress") == "1":
                wait("the save already running")
                current = info()
            if current.get("rdb_last_save_time") != last_save and current.get("rdb_last_bgsave_status") == "ok":
                return {"action": "joined", "rdb_saves": int(current.get("rdb_saves", "0")),
                        "rdb_last_bgsave_status": "ok"}
        has_counter = "rdb_saves" in current
        saves_before = int(current.get("rdb_saves", "0"))
        reply = conn.pipeline([("BGSAVE", "SCHEDULE")])[0]
        if isinstance(reply, RespError) and "syntax" in reply.message.lower():
            reply = conn.pipeline([("BGSAVE",)])[0]
        if isinstance(reply, RespError):
            if "already in progress" in reply.message:
                continue  # a child started meanwhile: join it
            raise BackupError(
                "Redis at %s refused BGSAVE: %s. The user needs +bgsave; on managed services use "
                "the provider's snapshot feature or mode: snapshot/keys." % (address, reply.message))
        text = _text(reply).lower()
        action = "scheduled" if "scheduled" in text else "triggered"
        seen_running = "started" in text
        while True:
            current = info()
            in_progress = current.get("rdb_bgsave_in_progress") == "1"
            seen_running = seen_running or in_progress
            saves = int(current.get("rdb_saves", "0"))
            if not in_progress and ((has_counter and saves > saves_before) or (not has_counter and seen_running)):
                status = current.get("rdb_last_bgsave_status")
                if status != "ok":
                    raise failed(status)
                result = {"action": action, "rdb_saves_before": saves_before, "rdb_saves": saves,
                          "rdb_last_bgsave_status": status}
                if waited:
                    result["waited_for_running_child"] = True
                return result
            wait("the BGSAVE")


# ---------------------------------------------------------------------------
# key export
# ---------------------------------------------------------------------------
class KeysWriter(object):
    """Writes the key export format (see module docstring) to a raw binary file."""

    _LATE = {"rdb_version": 65535, "records": 2 ** 63, "payload_bytes": 2 ** 63,
             "finished_ms": 2 ** 63}

    def __init__(self, fileobj, header, compress=False, level=6):
        self._raw = fileobj
        self.header = dict(header)
        self.header.update({"format": KEYS_FORMAT, "version": KEYS_FORMAT_VERSION,
                            "compression": "gzip" if compress else "none",
                            "ttl": "absolute-unix-ms"})
        sized = dict(self.header)
        sized.update(self._LATE)
        self._reserve = len(self._render(sized)) + 64
        fileobj.write(KEYS_MAGIC + _U32.pack(self._reserve))
        self._header_offset = len(KEYS_MAGIC) + _U32.size
        fileobj.write(self._render(self.header).ljust(self._reserve, b" "))
        self._gzip = gzip.GzipFile(fileobj=fileobj, mode="wb", compresslevel=level, mtime=0) if compress else None
        self.body = self._gzip if compress else fileobj
        self.write = self.body.write

    @staticmethod
    def _render(header):
        return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")

    def finish(self, records, fields):
        """Write the end marker, close the body and rewrite the header in place."""
        self.body.write(_END.pack(b"E", records))
        if self._gzip is not None:
            self._gzip.close()
        self._raw.flush()
        self.header.update(fields)
        self.header["records"] = records
        data = self._render(self.header)
        if len(data) > self._reserve:
            raise BackupError("internal error: key export header grew beyond its reserved size")
        os.pwrite(self._raw.fileno(), data.ljust(self._reserve, b" "), self._header_offset)


class _ExportStats(object):
    def __init__(self):
        self.records = 0
        self.payload_bytes = 0
        self.vanished = 0
        self.missing = []
        self.missing_count = 0
        self.duplicates = 0
        self.rdb_version = None


class _Batch(object):
    __slots__ = ("scan", "time", "keys", "literal")

    def __init__(self, scan, with_time, keys, literal):
        self.scan = scan
        self.time = with_time
        self.keys = keys
        self.literal = literal


def probe_pexpiretime(conn):
    """True if the server has PEXPIRETIME (Redis >= 7.0).

    PEXPIRETIME is sent without arguments: the server checks that a command exists,
    then its arity, and only then ACLs, so the reply tells which it is without
    touching any key.
    """
    reply = conn.pipeline([("PEXPIRETIME",)])[0]
    return not (isinstance(reply, RespError) and "unknown command" in reply.message.lower())


class _Exporter(object):
    """SCAN/DUMP pipeline with two batches in flight.

    While the replies of one batch are parsed, the server already works on the next
    one: the SCAN for the next page travels at the head of each batch, and as soon as
    its reply (the first of the batch) is read, the next batch is sent.
    """

    WINDOW = 2

    def __init__(self, conn, write, stats, use_pexpiretime, pipeline):
        self.conn = conn
        self.write = write
        self.stats = stats
        self.pexp = use_pexpiretime
        self.pipeline = max(1, int(pipeline))
        if use_pexpiretime:
            self.fmt = b"*2\r\n$11\r\nPEXPIRETIME\r\n$%d\r\n%s\r\n*2\r\n$4\r\nDUMP\r\n$%d\r\n%s\r\n"
        else:
            self.fmt = b"*2\r\n$4\r\nPTTL\r\n$%d\r\n%s\r\n*2\r\n$4\r\nDUMP\r\n$%d\r\n%s\r\n"

    # -- sending
    def _send(self, scan_cmd, keys, literal, inflight):
        parts = [encode_command(scan_cmd)] if scan_cmd else []
        with_time = bool(keys) and not self.pexp
        if with_time:
            parts.append(b"*1\r\n$4\r\nTIME\r\n")
        fmt = self.fmt
        for key in keys:
            klen = len(key)
            parts.append(fmt % (klen, key, klen, key))
        self.conn.send(b"".join(parts))
        inflight.append(_Batch(bool(scan_cmd), with_time, keys, literal))

    def run(self, literal_keys=None, scan=None, key_filter=None):
        """Export ``literal_keys``, or the keys SCAN walks with ``scan`` = (match_args, count)."""
        pending = list(literal_keys or [])
        literal = literal_keys is not None
        inflight = []
        state = {"cursor": b"0", "scan_out": False, "scan_done": scan is None}

        def scan_cmd():
            if state["scan_done"] or state["scan_out"]:
                return None
            state["scan_out"] = True
            return ("SCAN", state["cursor"]) + scan[0] + ("COUNT", scan[1])

        def top_up():
            while len(inflight) < self.WINDOW:
                cmd = scan_cmd()
                if cmd is None and not pending:
                    return
                keys = pending[:self.pipeline]
                del pending[:self.pipeline]
                self._send(cmd, keys, literal, inflight)

        top_up()
        while inflight:
            batch = inflight.pop(0)
            if batch.scan:
                reply = self.conn.read_reply()
                if isinstance(reply, RespError):
                    self._drain_batch(batch, skip_scan=True)
                    raise BackupError("SCAN failed on Redis at %s: %s (the user needs +scan)."
                                      % (self.conn.address, reply.message))
                if not isinstance(reply, list) or len(reply) != 2:
                    raise BackupError("unexpected SCAN reply from %s: %r" % (self.conn.address, reply))
                cursor, keys = reply
                state["scan_out"] = False
                state["cursor"] = cursor
                if cursor == b"0":
                    state["scan_done"] = True
                if key_filter is not None:
                    kept = [k for k in keys if not key_filter(k)]
                    self.stats.duplicates += len(keys) - len(kept)
                    keys = kept
                pending.extend(keys)
                top_up()  # the server works on the next batch while this one is parsed
            now_ms = None
            if batch.time:
                reply = self.conn.read_reply()
                if isinstance(reply, RespError):
                    raise BackupError("TIME failed on Redis at %s: %s" % (self.conn.address, reply.message))
                now_ms = int(reply[0]) * 1000 + int(reply[1]) // 1000
            self._parse_pairs(batch.keys, batch.literal, now_ms)
            top_up()

    def _drain_batch(self, batch, skip_scan=False):
        count = 2 * len(batch.keys) + (1 if batch.time else 0) + (0 if skip_scan or not batch.scan else 1)
        _drain(self.conn, count)

    # -- receiving
    def _missing(self, key, literal):
        stats = self.stats
        if literal:
            stats.missing_count += 1
            if len(stats.missing) < MAX_LISTED:
                stats.missing.append(_text(key))
        else:
            stats.vanished += 1

    def _parse_pairs(self, keys, literal, now_ms):
        """Parse the (TTL, DUMP) reply pairs of ``keys`` and write their records.

        Fast path: whole pairs already in the receive buffer are parsed in place.
        Anything else (partial data, big payloads, errors) goes through the slow path,
        one pair at a time, which streams payloads in chunks.
        """
        conn = self.conn
        stats = self.stats
        write = self.write
        pack = _RECORD.pack
        pexp = self.pexp
        count = len(keys)
        idx = 0
        while idx < count:
            buf = conn._buf  # pylint: disable=protected-access
            pos = conn._pos  # pylint: disable=protected-access
            end = len(buf)
            view = None
            out = []
            refill = False
            while idx < count:
                i = buf.find(b"\r\n", pos)
                if i < 0:
                    refill = True
                    break
                if buf[pos] != 58:  # ':'
                    break
                j = buf.find(b"\r\n", i + 2)
                if j < 0:
                    refill = True
                    break
                if buf[i + 2] != 36:  # '$'
                    break
                size = int(buf[i + 3:j])
                if size < 0:
                    self._missing(keys[idx], literal)
                    pos = j + 2
                    idx += 1
                    continue
                start = j + 2
                stop = start + size
                if stop + 2 > end:
                    refill = size <= BIG_PAYLOAD
                    break
                ttl = int(buf[pos + 1:i])
                if ttl < 0:
                    expire_at = -1
                elif pexp:
                    expire_at = ttl
                else:
                    expire_at = now_ms + ttl
                key = keys[idx]
                if view is None:
                    view = memoryview(buf)
                out.append(pack(b"K", len(key), expire_at, size))
                out.append(key)
                out.append(view[start:stop])
                if stats.rdb_version is None:
                    stats.rdb_version = buf[stop - 10] | (buf[stop - 9] << 8)
                stats.records += 1
                stats.payload_bytes += size
                pos = stop + 2
                idx += 1
            conn._pos = pos  # pylint: disable=protected-access
            if out:
                write(b"".join(out))
            if idx < count:
                if refill:
                    conn.fill()
                else:
                    self._slow_pair(keys, idx, literal, now_ms)
                    idx += 1

    def _slow_pair(self, keys, idx, literal, now_ms):
        conn = self.conn
        key = keys[idx]
        remaining = 2 * (len(keys) - idx - 1)
        ttl = conn.read_reply()
        if isinstance(ttl, RespError):
            conn.read_reply()
            _drain(conn, remaining)
            raise BackupError(
                "reading the TTL of %r on Redis at %s failed: %s. The user needs +pexpiretime "
                "(Redis >= 7) or +pttl." % (_text(key), conn.address, ttl.message))
        line = conn.read_line()
        if line[:1] != b"$":
            if line[:1] == b"-":
                _drain(conn, remaining)
                raise BackupError(
                    "DUMP %r on Redis at %s failed: %s. The user needs +dump and read access to "
                    "the keys (ACL ~pattern or %%R~pattern)." % (_text(key), conn.address, _text(line[1:])))
            raise RespProtocolError("unexpected DUMP reply from %s: %r" % (conn.address, line[:40]))
        size = int(line[1:])
        if size < 0:
            self._missing(key, literal)
            return
        if ttl < 0:
            expire_at = -1
        elif self.pexp:
            expire_at = ttl
        else:
            expire_at = now_ms + ttl
        self.write(_RECORD.pack(b"K", len(key), expire_at, size))
        self.write(key)
        tail = conn.copy_to(size, self.write)
        conn.expect_crlf()
        self.stats.records += 1
        self.stats.payload_bytes += size
        if self.stats.rdb_version is None:
            self.stats.rdb_version = payload_rdb_version(tail)


def _drain(conn, count):
    for _dummy in range(count):
        conn.read_reply()


def export_keys(conn, write, patterns, scan_count=1000, pipeline=1000, use_pexpiretime=None):
    """Export the keys matching ``patterns`` as records written through ``write``.

    Literal names are DUMPed directly (missing ones are reported); globs are walked with
    SCAN MATCH (no MATCH for ``*``). A key matched by several patterns is exported once.
    SCAN may return a key twice while the keyspace is being resized; such a key is then
    written twice (the later record is the newer value) and counted twice in ``records``.
    Returns (stats, used_pexpiretime).
    """
    if use_pexpiretime is None:
        use_pexpiretime = probe_pexpiretime(conn)
    stats = _ExportStats()
    pats = [_bytes(p) for p in patterns]
    literals = []
    seen_literals = set()
    globs = []
    seen_globs = set()
    for pat in pats:
        if is_glob(pat):
            if pat not in seen_globs:
                seen_globs.add(pat)
                globs.append((pat, glob_to_regex(pat)))
        elif pat not in seen_literals:
            seen_literals.add(pat)
            literals.append(pat)
    exporter = _Exporter(conn, write, stats, use_pexpiretime, pipeline)
    if literals:
        exporter.run(literal_keys=literals)
    for index, (pat, _regex) in enumerate(globs):
        earlier = [g[1] for g in globs[:index]]
        key_filter = None
        if seen_literals or earlier:
            def key_filter(key, earlier=earlier):
                return key in seen_literals or any(r.fullmatch(key) for r in earlier)
        match_args = () if pat == b"*" else ("MATCH", pat)
        exporter.run(scan=(match_args, int(scan_count)), key_filter=key_filter)
    return stats, use_pexpiretime


# ---------------------------------------------------------------------------
# key export reader and restore
# ---------------------------------------------------------------------------
def detect_kind(path):
    """'keys', 'rdb', 'rdb.gz' or None, from the first bytes of a file."""
    with open(path, "rb") as handle:
        head = handle.read(len(KEYS_MAGIC))
    if head.startswith(KEYS_MAGIC):
        return "keys"
    if head.startswith(b"REDIS"):
        return "rdb"
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as handle:
                if handle.read(5) == b"REDIS":
                    return "rdb.gz"
        except (IOError, OSError, EOFError):
            return None
    return None


class KeysReader(object):
    """Reads the key export format record by record, in constant memory."""

    def __init__(self, path):
        self.path = path
        self._raw = open(path, "rb")
        self._buf = b""
        self._pos = 0
        try:
            magic = self._raw.read(len(KEYS_MAGIC))
            if magic != KEYS_MAGIC:
                raise BackupError("%s is not an opsdeck redis_backup key export (bad magic)." % path)
            size = _U32.unpack(self._read_raw(_U32.size))[0]
            try:
                self.header = json.loads(self._read_raw(size).decode("utf-8"))
            except ValueError as exc:
                raise BackupError("the header of %s is not valid JSON: %s" % (path, exc))
            if self.header.get("format") != KEYS_FORMAT or int(self.header.get("version", 0)) > KEYS_FORMAT_VERSION:
                raise BackupError(
                    "%s uses key export format %s version %s; this module reads version %d. "
                    "Use a newer opsdeck.stack."
                    % (path, self.header.get("format"), self.header.get("version"), KEYS_FORMAT_VERSION))
            if self.header.get("compression") == "gzip":
                self._body = gzip.GzipFile(fileobj=self._raw, mode="rb")
            else:
                self._body = self._raw
        except BaseException:
            self._raw.close()
            raise
        self.count = 0

    def _read_raw(self, size):
        data = self._raw.read(size)
        if len(data) != size:
            raise BackupError("%s is truncated." % self.path)
        return data

    def _more(self, size):
        try:
            return self._body.read(size)
        except (IOError, OSError, EOFError, gzip.BadGzipFile) as exc:
            raise BackupError("%s is corrupt or truncated: %s" % (self.path, exc))

    def _ensure(self, size):
        """Make ``size`` bytes available in the buffer (size is at most a few MiB)."""
        avail = len(self._buf) - self._pos
        while avail < size:
            more = self._more(max(CHUNK, size - avail))
            if not more:
                raise BackupError(
                    "%s is truncated after %d records (no end marker): the export did not finish "
                    "or the file was cut." % (self.path, self.count))
            self._buf = self._buf[self._pos:] + more
            self._pos = 0
            avail = len(self._buf)

    def read(self, size):
        """Exactly ``size`` body bytes (for sizes up to a few MiB; use copy() beyond)."""
        self._ensure(size)
        start = self._pos
        self._pos = start + size
        return self._buf[start:self._pos]

    def copy(self, size, write, chunk=CHUNK):
        """Stream ``size`` body bytes to ``write`` in chunks; return the last 10 bytes."""
        tail = b""
        while size:
            data = self.read(min(size, chunk))
            write(data)
            tail = (tail + data[-10:])[-10:]
            size -= len(data)
        return tail

    def skip(self, size):
        self.copy(size, _discard)

    def next_record(self):
        """(key, expire_at_ms, payload_len), or None after the end marker."""
        self._ensure(1)
        kind = self._buf[self._pos]
        if kind == 0x4B:  # K
            self._ensure(_RECORD.size)
            _k, klen, expire_at, size = _RECORD.unpack_from(self._buf, self._pos)
            self._pos += _RECORD.size
            key = self.read(klen)
            self.count += 1
            return key, expire_at, size
        if kind == 0x45:  # E
            self._ensure(_END.size)
            total = _END.unpack_from(self._buf, self._pos)[1]
            self._pos += _END.size
            if total != self.count:
                raise BackupError("%s ends after %d records but its end marker says %d: the file is corrupt."
                                  % (self.path, self.count, total))
            return None
        raise BackupError("%s is corrupt: unexpected record type %r after %d records."
                          % (self.path, bytes((kind,)), self.count))

    def close(self):
        try:
            if self._body is not self._raw:
                self._body.close()
        finally:
            self._raw.close()


def newer_payload_error(key, payload_version, target_version, source_version, target_redis, conn):
    return BackupError(
        "cannot restore %r: its DUMP payload has RDB format version %s (written by Redis %s) "
        "but the target Redis %s at %s only loads RDB versions up to %s. RESTORE refuses "
        "payloads from newer Redis versions: restore into a Redis at least as new as the "
        "source (or upgrade the target)."
        % (_text(key), payload_version, source_version or "unknown", target_redis or "(version unknown)",
           conn.address, target_version if target_version is not None else "an older version"),
        payload_rdb_version=payload_version, target_rdb_version=target_version)


class _RestoreStats(object):
    def __init__(self):
        self.restored = 0
        self.skipped = 0
        self.expired = 0
        self.failed = 0
        self.filtered = 0
        self.skipped_keys = []
        self.failed_keys = []

    def as_dict(self):
        # "skipped" and "failed" are reserved words in Ansible results: not used as keys
        return {"restored": self.restored, "skipped_existing": self.skipped, "expired": self.expired,
                "restore_errors": self.failed, "filtered_out": self.filtered,
                "skipped_keys": self.skipped_keys, "error_keys": self.failed_keys}


def _encode_args(args):
    return b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def restore_keys(conn, reader, replace=False, pipeline=1000, check_mode=False, patterns=None,
                 target_rdb=None, target_redis=None, abs_ttl=True):
    """Load the records of ``reader`` with pipelined RESTORE.

    Existing keys are skipped (BUSYKEY) unless ``replace``; records already expired are
    not restored; a payload newer than ``target_rdb`` aborts the restore with a clear
    message. In check mode only EXISTS is sent and the counts are predictions. Two
    batches are kept in flight so the server restores one while the next is prepared.
    Payloads above 1 MiB are streamed from the file to the socket in chunks.
    """
    stats = _RestoreStats()
    flt = KeyFilter(patterns)
    use_filter = bool(flt)
    source_redis = reader.header.get("redis_version")
    server_ms0 = server_time_ms(conn)
    mono0 = time.monotonic()
    extra = (b"REPLACE",) if replace else ()
    opts_plain = (4 + len(extra), b"\r\n" + _encode_args(extra))
    opts_abs = (5 + len(extra), b"\r\n" + _encode_args(extra + (b"ABSTTL",)))
    head_fmt = b"*%d\r\n$7\r\nRESTORE\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n"
    window = []  # batches sent, replies not read yet: lists of (key, payload version)
    out = []
    state = {"bytes": 0}
    batch = []

    def now_ms():
        return server_ms0 + int((time.monotonic() - mono0) * 1000)

    def read_replies(sent):
        for key, version in sent:
            reply = conn.read_reply()
            if check_mode:
                if reply == 1 and not replace:
                    stats.skipped += 1
                    if len(stats.skipped_keys) < MAX_LISTED:
                        stats.skipped_keys.append(_text(key))
                else:
                    stats.restored += 1
                continue
            if not isinstance(reply, RespError):
                stats.restored += 1
            elif reply.code == "BUSYKEY":
                stats.skipped += 1
                if len(stats.skipped_keys) < MAX_LISTED:
                    stats.skipped_keys.append(_text(key))
            elif DUMP_PAYLOAD_ERROR in reply.message and version is not None and (
                    (target_rdb is not None and version > target_rdb)
                    or (target_rdb is None and version > RDB_VERSIONS[0][1])):
                raise newer_payload_error(key, version, target_rdb, source_redis, target_redis, conn)
            else:
                stats.failed += 1
                if len(stats.failed_keys) < MAX_LISTED:
                    message = reply.message
                    if DUMP_PAYLOAD_ERROR in message:
                        message += " (the payload is corrupt: its CRC64 does not match)"
                    stats.failed_keys.append({"key": _text(key), "error": message})

    def send_out():
        if out:
            conn.send(b"".join(out))
            del out[:]
            state["bytes"] = 0

    def end_batch(final=False):
        send_out()
        if batch:
            window.append(list(batch))
            del batch[:]
        while window and (final or len(window) > 1):
            read_replies(window.pop(0))

    while True:
        record = reader.next_record()
        if record is None:
            break
        key, expire_at, size = record
        if use_filter and not flt.match(key):
            reader.skip(size)
            stats.filtered += 1
            continue
        if expire_at >= 0 and expire_at <= now_ms():
            reader.skip(size)
            stats.expired += 1
            continue
        if check_mode:
            reader.skip(size)
            out.append(b"*2\r\n$6\r\nEXISTS\r\n$%d\r\n%s\r\n" % (len(key), key))
            batch.append((key, None))
        else:
            if expire_at < 0:
                ttl = b"0"
                nargs, tail_args = opts_plain
            elif abs_ttl:
                ttl = b"%d" % expire_at
                nargs, tail_args = opts_abs
            else:
                ttl = b"%d" % max(1, expire_at - now_ms())
                nargs, tail_args = opts_plain
            head = head_fmt % (nargs, len(key), key, len(ttl), ttl, size)
            if size <= BIG_PAYLOAD:
                payload = reader.read(size)
                version = payload[-10] | (payload[-9] << 8) if size >= 10 else None
                if target_rdb is not None and version is not None and version > target_rdb:
                    end_batch(final=True)
                    raise newer_payload_error(key, version, target_rdb, source_redis, target_redis, conn)
                out.append(head)
                out.append(payload)
                out.append(tail_args)
                state["bytes"] += size
            else:
                out.append(head)
                send_out()
                version = payload_rdb_version(reader.copy(size, conn.send))
                out.append(tail_args)
            batch.append((key, version))
        if len(batch) >= pipeline or state["bytes"] >= 8 * CHUNK:
            end_batch()
    end_batch(final=True)
    return stats


def _discard(_data):
    return None


# ---------------------------------------------------------------------------
# the three operations, as the module runs them
# ---------------------------------------------------------------------------
def _commit_with_sidecar(atomic, digest):
    """Write <file>.sha256, then rename the backup into place: never one without the other."""
    sha_path = atomic.final_path + ".sha256"
    write_atomic_bytes(sha_path, sha256_line(digest, atomic.final_path).encode("ascii"), 0o600)
    try:
        atomic.commit()
    except BaseException:
        try:
            os.unlink(sha_path)
        except OSError:
            pass
        raise


def _entry(name, digest, size, now, kind, prefix, conn, info, extra=None):
    entry = {"file": name, "sha256_file": name + ".sha256", "sha256": digest, "size": size,
             "created": round(now, 3), "mode": kind, "prefix": prefix,
             "source": conn.address, "redis_version": info.get("redis_version")}
    if extra:
        entry.update(extra)
    return entry


def _file_list(entries, prefix, mode):
    names = []
    for entry in entries:
        if entry.get("prefix") == prefix and entry.get("mode") == mode:
            names.extend(entry_files(entry))
    return sorted(names)


def _diff(dest, before, after):
    return {"before_header": "%s (backups in manifest)" % dest,
            "after_header": "%s (backups in manifest)" % dest,
            "before": "".join(n + "\n" for n in before),
            "after": "".join(n + "\n" for n in after)}


def _apply_retention(dest, manifest, prefix, mode, now, params, protect, check_mode):
    """Delete what retention dooms; returns (deleted paths, doomed names, remaining entries)."""
    count = params.get("retention_count")
    days = params.get("retention_days")
    entries = manifest["files"]
    if count is None and days is None:
        return [], [], entries
    _keep, doomed = plan_retention(entries, prefix, now, count, days, protect, mode)
    doomed_ids = set(id(e) for e in doomed)
    deleted = []
    for entry in doomed:
        for name in entry_files(entry):
            path = os.path.join(dest, name)
            if not os.path.lexists(path):
                continue
            if not check_mode:
                try:
                    os.unlink(path)
                except OSError as exc:
                    raise BackupError("retention could not delete %s: %s" % (path, exc))
            deleted.append(path)
    remaining = [e for e in entries if id(e) not in doomed_ids]
    return deleted, [e["file"] for e in doomed], remaining


def _record_backup(dest, prefix, now, params, entry, check_mode):
    """Add ``entry`` to the manifest and apply retention; returns (deleted paths, diff)."""
    with _maybe_lock(dest, check_mode):
        manifest = load_manifest(dest)
        mode = entry["mode"]
        before = _file_list(manifest["files"], prefix, mode)
        manifest["files"].append(entry)
        deleted, _doomed, remaining = _apply_retention(
            dest, manifest, prefix, mode, now, params, (entry["file"],), check_mode)
        manifest["files"] = remaining
        after = _file_list(remaining, prefix, mode)
        if not check_mode:
            save_manifest(dest, manifest)
    return deleted, _diff(dest, before, after)


class _NoLock(object):
    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


def _maybe_lock(dest, check_mode):
    if check_mode and not os.path.isdir(dest):
        return _NoLock()
    return DirLock(dest)


def backup(params, check_mode=False):
    """state=present for mode snapshot / keys / bgsave. Returns the module result."""
    mode = params.get("mode") or "snapshot"
    started = time.time()
    result = {"changed": False, "mode": mode, "state": "present"}
    dest = params.get("dest")
    prefix = params.get("name_prefix")
    prefix = "redis-" if prefix is None else prefix
    compress = bool(params.get("compress"))
    if mode != "bgsave":
        if not dest:
            raise BackupError("dest is required for mode: %s (a directory for the backup files)." % mode)
        dest = os.path.abspath(os.path.expanduser(dest))
        result["dest_created"] = prepare_dest(dest, check_mode)
    if mode == "keys" and not params.get("patterns"):
        raise BackupError("patterns is required for mode: keys (for example ['app:config:*']).")

    conn = connect(params)
    try:
        info = server_info(conn)
        result["redis_version"] = info.get("redis_version")
        if params.get("bgsave") or mode == "bgsave":
            if check_mode:
                result["bgsave"] = {"action": "would trigger or join"}
            else:
                result["bgsave"] = run_bgsave(conn, float(params.get("bgsave_timeout") or 3600))
            result["changed"] = True
        if mode == "bgsave":
            result["duration"] = round(time.time() - started, 3)
            return result

        now = time.time()
        name = backup_filename(prefix, mode, compress, now, dest)
        final = os.path.join(dest, name)
        if check_mode:
            with _maybe_lock(dest, True):
                manifest = load_manifest(dest) if os.path.isdir(dest) else {"format": 1, "files": []}
                entry = {"file": name, "sha256_file": name + ".sha256", "prefix": prefix,
                         "created": now, "mode": mode}
                before = _file_list(manifest["files"], prefix, mode)
                manifest["files"].append(entry)
                deleted, _doomed, remaining = _apply_retention(
                    dest, manifest, prefix, mode, now, params, (name,), True)
            result.update({"changed": True, "file": final,
                           "would_write": [final, final + ".sha256", manifest_path(dest)],
                           "would_delete": deleted, "deleted": [],
                           "diff": _diff(dest, before, _file_list(remaining, prefix, mode))})
            return result

        atomic = AtomicFile(final)
        try:
            if mode == "snapshot":
                hashing = HashingWriter(atomic.file)
                if compress:
                    gz = gzip.GzipFile(fileobj=hashing, mode="wb",
                                       compresslevel=int(params.get("compress_level") or 6), mtime=0)
                    stream = stream_snapshot(conn, gz.write)
                    gz.close()
                else:
                    stream = stream_snapshot(conn, hashing.write)
                digest = hashing.hexdigest()
                size = hashing.size
                _commit_with_sidecar(atomic, digest)
                extra = {"rdb_version": stream["rdb_version"], "transfer": stream["transfer"]}
                result.update(extra)
                result["rdb_size"] = stream["size"]
            else:
                header = {"redis_version": info.get("redis_version"), "db": int(params.get("db") or 0),
                          "patterns": [_text(_bytes(p)) for p in params["patterns"]],
                          "created_ms": server_time_ms(conn),
                          "source": conn.address, "rdb_version": None, "records": 0,
                          "payload_bytes": 0, "finished_ms": None}
                writer = KeysWriter(atomic.file, header, compress, int(params.get("compress_level") or 6))
                stats, use_pexp = export_keys(conn, writer.write, params["patterns"],
                                              int(params.get("scan_count") or 1000),
                                              int(params.get("pipeline") or 1000))
                writer.finish(stats.records, {
                    "rdb_version": stats.rdb_version, "payload_bytes": stats.payload_bytes,
                    "ttl_source": "pexpiretime" if use_pexp else "time+pttl",
                    "finished_ms": server_time_ms(conn)})
                atomic.file.flush()
                os.fsync(atomic.fileno())
                digest = sha256_file(atomic.tmp_path)
                size = os.path.getsize(atomic.tmp_path)
                _commit_with_sidecar(atomic, digest)
                extra = {"rdb_version": stats.rdb_version, "keys": stats.records}
                result.update({"rdb_version": stats.rdb_version, "keys": stats.records,
                               "payload_bytes": stats.payload_bytes, "missing_keys": stats.missing,
                               "missing_count": stats.missing_count, "vanished": stats.vanished,
                               "ttl_source": "pexpiretime" if use_pexp else "time+pttl"})
        except (RespConnectionError, RespProtocolError) as exc:
            atomic.abort()
            raise BackupError("%s. No backup file was written." % exc)
        except BaseException:
            atomic.abort()
            raise
        sha_path = final + ".sha256"
        entry = _entry(name, digest, size, now, mode, prefix, conn, info, extra)
        try:
            deleted, diff = _record_backup(dest, prefix, now, params, entry, False)
        except (IOError, OSError) as exc:
            raise BackupError(
                "the backup %s was written, but the manifest %s could not be updated (%s): retention "
                "will not know this file. Fix the permissions or space of dest and run again."
                % (final, manifest_path(dest), exc), file=final, sha256=digest, changed=True)
        result.update({"changed": True, "file": final, "sha256": digest, "sha256_file": sha_path,
                       "size": size, "deleted": deleted, "manifest": manifest_path(dest), "diff": diff,
                       "duration": round(time.time() - started, 3)})
        return result
    finally:
        conn.close()


def restore(params, check_mode=False):
    """state=restored: load a key export back with RESTORE."""
    src = params.get("src")
    if not src:
        raise BackupError("src is required for state: restored (a key export written by mode: keys).")
    src = os.path.abspath(os.path.expanduser(src))
    if not os.path.isfile(src):
        raise BackupError("src %s does not exist or is not a file." % src)
    kind = detect_kind(src)
    if kind in ("rdb", "rdb.gz"):
        raise BackupError(
            "%s is an RDB snapshot: an RDB cannot be loaded over the Redis protocol. Restore it "
            "by stopping Redis, putting the file (gunzipped) in place of its dbfilename "
            "(CONFIG GET dir / dbfilename; with appendonly yes, move the AOF aside or load with "
            "appendonly no then CONFIG SET appendonly yes), and starting Redis again. For an "
            "online restore, back up with mode: keys." % src)
    if kind != "keys":
        raise BackupError("%s is not a redis_backup key export (nor an RDB file)." % src)
    started = time.time()
    result = {"changed": False, "state": "restored", "src": src}
    sidecar = src + ".sha256"
    if params.get("verify_checksum", True):
        expected = read_sha256_sidecar(sidecar)
        if expected is None:
            result["checksum_verified"] = False
        else:
            actual = sha256_file(src)
            if actual != expected:
                raise BackupError(
                    "%s does not match its checksum file %s (sha256 %s, expected %s): the file is "
                    "corrupt or was changed. Restore another backup, or set verify_checksum: false "
                    "to force it." % (src, sidecar, actual, expected))
            result["checksum_verified"] = True
    reader = KeysReader(src)
    try:
        header = reader.header
        result.update({"source_redis_version": header.get("redis_version"),
                       "rdb_version": header.get("rdb_version"), "records": header.get("records")})
        conn = connect(params)
        try:
            info = server_info(conn)
            target_redis = info.get("redis_version")
            target_rdb, how = target_rdb_version(conn, info)
            result.update({"redis_version": target_redis, "target_rdb_version": target_rdb})
            src_rdb = header.get("rdb_version")
            if src_rdb is not None and target_rdb is not None and int(src_rdb) > target_rdb:
                raise newer_payload_error("(every key)", src_rdb, target_rdb, header.get("redis_version"),
                                          target_redis, conn)
            vt = version_tuple(target_redis)
            abs_ttl = vt is None or vt >= (5, 0)
            try:
                stats = restore_keys(conn, reader, bool(params.get("replace")),
                                     int(params.get("pipeline") or 1000), check_mode,
                                     params.get("patterns"), target_rdb, target_redis, abs_ttl)
            except (RespConnectionError, RespProtocolError) as exc:
                raise BackupError(
                    "the restore of %s was interrupted: %s. Keys restored so far stay; running it "
                    "again skips them (existing keys are not replaced unless replace: true)." % (src, exc))
        finally:
            conn.close()
    finally:
        reader.close()
    counts = stats.as_dict()
    if check_mode:
        counts = dict(counts)
        result["would_restore"] = counts.pop("restored")
        result["would_skip"] = counts.pop("skipped_existing")
        result.update(counts)
        result["restored"] = 0
        result["changed"] = result["would_restore"] > 0
    else:
        result.update(counts)
        result["changed"] = stats.restored > 0
    result["target_rdb_version_source"] = how
    result["duration"] = round(time.time() - started, 3)
    if stats.failed:
        raise BackupError(
            "%d of the keys in %s failed to restore (first errors: %s); %d restored, %d skipped."
            % (stats.failed, src, "; ".join("%s: %s" % (f["key"], f["error"]) for f in stats.failed_keys[:5]),
               stats.restored, stats.skipped), **result)
    return result


def run(params, check_mode=False):
    """Entry point for the module: dispatch on state."""
    try:
        if (params.get("state") or "present") == "restored":
            return restore(params, check_mode)
        return backup(params, check_mode)
    except (RespConnectionError, RespProtocolError) as exc:
        raise BackupError("%s. Nothing was written." % exc)
