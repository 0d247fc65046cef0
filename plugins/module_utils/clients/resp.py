# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small streaming RESP2 (Redis protocol) client, standard library only.

Private to opsdeck.stack. It exists so that modules that talk to Redis need no
``redis`` Python package on the managed host, and so that large replies (an RDB
stream, a DUMP payload of a big key) can be copied to a file in fixed-size chunks
instead of being held in memory.

What it does:

- TCP, unix socket, TLS (server verification, CA file, client certificate);
- ``encode_command()`` builds one RESP request; ``RespConnection.pipeline()`` sends
  many and reads their replies (errors come back as ``RespError`` values, not raised);
- ``read_reply()`` parses RESP2 replies (simple string, error, integer, bulk, array);
- ``read_line()``, ``copy_bulk_to()`` and ``readinto()`` give the byte-level access the
  backup code needs to stream payloads.

Replies: simple strings and bulk strings are ``bytes``; integers are ``int``; nil is
``None``; arrays are ``list``; server errors are ``RespError`` instances.
"""

from __future__ import annotations

import socket
import ssl

CRLF = b"\r\n"
DEFAULT_CHUNK = 256 * 1024


class RespError(Exception):
    """An error reply sent by the server (``-ERR ...``, ``-NOPERM ...``)."""

    def __init__(self, message):
        super(RespError, self).__init__(message)
        self.message = message

    @property
    def code(self):
        """The first word of the error (ERR, NOPERM, WRONGPASS, BUSYKEY...)."""
        return self.message.split(" ", 1)[0] if self.message else ""

    def __repr__(self):
        return "RespError(%r)" % (self.message,)


class RespConnectionError(Exception):
    """The connection failed, timed out or was closed by the peer."""


class RespProtocolError(Exception):
    """The peer sent bytes that are not valid RESP."""


def _to_bytes(arg):
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode("utf-8")
    if isinstance(arg, bool):
        raise TypeError("booleans are not Redis arguments")
    if isinstance(arg, int):
        return b"%d" % arg
    if isinstance(arg, float):
        return repr(arg).encode("ascii")
    if isinstance(arg, (bytearray, memoryview)):
        return bytes(arg)
    raise TypeError("cannot send %s to Redis" % type(arg).__name__)


def encode_command(args):
    """Encode one command (a sequence of str/bytes/int) as a RESP multi-bulk request."""
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for arg in args:
        data = _to_bytes(arg)
        append(b"$%d\r\n" % len(data))
        append(data)
        append(CRLF)
    return b"".join(parts)


class RespConnection(object):
    """One blocking connection to a Redis server.

    ``timeout`` applies to every socket operation (connect, each send, each receive):
    a server that sends nothing for that long fails the operation with
    ``RespConnectionError``.
    """

    def __init__(self, host="127.0.0.1", port=6379, unix_socket=None, timeout=30.0,
                 tls=False, validate_certs=True, ca_path=None, client_cert=None,
                 client_key=None, chunk_size=DEFAULT_CHUNK):
        self.host = host
        self.port = int(port)
        self.unix_socket = unix_socket
        self.timeout = timeout
        self.tls = tls
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        self.client_cert = client_cert
        self.client_key = client_key
        self.chunk_size = int(chunk_size)
        self._sock = None
        self._buf = b""
        self._pos = 0

    # ------------------------------------------------------------------ setup
    @property
    def address(self):
        """Where this connection goes, for messages."""
        if self.unix_socket:
            return "unix:%s" % self.unix_socket
        return "%s:%d" % (self.host, self.port)

    def _ssl_context(self):
        ctx = ssl.create_default_context(cafile=self.ca_path)
        if not self.validate_certs:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.client_cert:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx

    def connect(self):
        """Open the socket (and the TLS session). Raises RespConnectionError."""
        self.close()
        try:
            if self.unix_socket:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                sock.connect(self.unix_socket)
            else:
                sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        except (OSError, socket.timeout) as exc:
            raise RespConnectionError("cannot connect to Redis at %s: %s" % (self.address, exc))
        if self.tls:
            try:
                ctx = self._ssl_context()
                server_hostname = None if self.unix_socket else self.host
                sock = ctx.wrap_socket(sock, server_hostname=server_hostname)
            except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
                try:
                    sock.close()
                except OSError:
                    pass
                raise RespConnectionError(
                    "TLS handshake with Redis at %s failed: %s" % (self.address, exc))
        self._sock = sock
        self._buf = b""
        self._pos = 0
        return self

    def close(self):
        """Close the socket; safe to call twice."""
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        self._buf = b""
        self._pos = 0

    def __enter__(self):
        if self._sock is None:
            self.connect()
        return self

    def __exit__(self, *exc_info):
        self.close()

    def settimeout(self, timeout):
        """Change the per-operation timeout of the open socket."""
        self.timeout = timeout
        if self._sock is not None:
            self._sock.settimeout(timeout)

    # ------------------------------------------------------------------ sending
    def send(self, data):
        """Send raw bytes (one or more encoded commands)."""
        if self._sock is None:
            raise RespConnectionError("not connected to Redis at %s" % self.address)
        try:
            self._sock.sendall(data)
        except socket.timeout:
            raise RespConnectionError(
                "timed out after %ss sending to Redis at %s" % (self.timeout, self.address))
        except OSError as exc:
            raise RespConnectionError("sending to Redis at %s failed: %s" % (self.address, exc))

    def send_command(self, *args):
        """Send one command without reading its reply."""
        self.send(encode_command(args))

    def command(self, *args):
        """Send one command and return its reply; an error reply is raised as RespError."""
        self.send(encode_command(args))
        reply = self.read_reply()
        if isinstance(reply, RespError):
            raise reply
        return reply

    def pipeline(self, commands):
        """Send several commands in one write and return their replies, in order.

        Error replies are returned as RespError values so that one failing command
        does not hide the replies of the others.
        """
        if not commands:
            return []
        self.send(b"".join(encode_command(c) for c in commands))
        return [self.read_reply() for _dummy in commands]

    # ------------------------------------------------------------------ receiving
    def _recv(self, size):
        try:
            data = self._sock.recv(size)
        except socket.timeout:
            raise RespConnectionError(
                "timed out after %ss waiting for Redis at %s" % (self.timeout, self.address))
        except (OSError, AttributeError) as exc:
            raise RespConnectionError("reading from Redis at %s failed: %s" % (self.address, exc))
        if not data:
            raise RespConnectionError("Redis at %s closed the connection" % self.address)
        return data

    def fill(self):
        """Receive more bytes into the buffer (at least one; blocks until some arrive)."""
        data = self._recv(self.chunk_size)
        if self._pos >= len(self._buf):
            self._buf = data
        else:
            self._buf = self._buf[self._pos:] + data
        self._pos = 0

    def buffered(self):
        """Number of bytes received but not consumed yet."""
        return len(self._buf) - self._pos

    def read_line(self):
        """Return the next CRLF-terminated line, without the CRLF."""
        buf = self._buf
        pos = self._pos
        idx = buf.find(CRLF, pos)
        while idx < 0:
            scanned = max(len(buf) - self._pos - 1, 0)
            self.fill()
            buf = self._buf
            pos = 0
            idx = buf.find(CRLF, scanned)
        self._pos = idx + 2
        return buf[pos:idx]

    def read_exact(self, size):
        """Return exactly ``size`` bytes."""
        end = self._pos + size
        if end <= len(self._buf):
            data = self._buf[self._pos:end]
            self._pos = end
            return data
        out = bytearray(size)
        view = memoryview(out)
        got = self.readinto(view)
        while got < size:
            got += self.readinto(view[got:])
        return bytes(out)

    def expect_crlf(self):
        if self._pos + 2 <= len(self._buf):
            tail = self._buf[self._pos:self._pos + 2]
            self._pos += 2
        else:
            tail = self.read_exact(2)
        if tail != CRLF:
            raise RespProtocolError("bulk reply from %s not terminated by CRLF" % self.address)

    def readinto(self, view):
        """Fill ``view`` with the next bytes (buffered first), return the count (>= 1).

        Never returns 0: a closed connection raises RespConnectionError.
        """
        avail = len(self._buf) - self._pos
        if avail:
            count = min(avail, len(view))
            view[:count] = self._buf[self._pos:self._pos + count]
            self._pos += count
            return count
        try:
            count = self._sock.recv_into(view)
        except socket.timeout:
            raise RespConnectionError(
                "timed out after %ss waiting for Redis at %s" % (self.timeout, self.address))
        except (OSError, AttributeError) as exc:
            raise RespConnectionError("reading from Redis at %s failed: %s" % (self.address, exc))
        if not count:
            raise RespConnectionError("Redis at %s closed the connection" % self.address)
        return count

    def copy_to(self, size, write, chunk=None):
        """Copy the next ``size`` bytes to ``write`` in chunks; return the last 10 bytes.

        Memory stays bounded by the chunk size whatever ``size`` is. ``write`` gets
        memoryviews of a reused buffer: it must consume them before returning (as
        file.write does). The last 10 bytes are returned because a DUMP payload ends
        with its RDB version and CRC64.
        """
        avail = len(self._buf) - self._pos
        if size <= avail:
            end = self._pos + size
            data = self._buf[self._pos:end] if self._pos or end != len(self._buf) else self._buf
            self._pos = end
            write(data)
            return data[-10:]
        tail = b""
        remaining = size
        if avail:
            data = self._buf[self._pos:]
            self._buf = b""
            self._pos = 0
            write(data)
            remaining -= len(data)
            tail = data[-10:]
        block = bytearray(chunk or self.chunk_size)
        view = memoryview(block)
        while remaining:
            count = self.readinto(view[:min(remaining, len(block))])
            write(view[:count])
            remaining -= count
            tail = (tail + bytes(view[max(count - 10, 0):count]))[-10:]
        return tail

    def read_reply(self):
        """Parse one RESP2 reply (see module docstring for the Python types)."""
        line = self.read_line()
        kind = line[:1]
        if kind == b"$":
            size = int(line[1:])
            if size < 0:
                return None
            end = self._pos + size
            if end + 2 <= len(self._buf):
                data = self._buf[self._pos:end]
                if self._buf[end:end + 2] != CRLF:
                    raise RespProtocolError("bulk reply from %s not terminated by CRLF" % self.address)
                self._pos = end + 2
                return data
            data = self.read_exact(size)
            self.expect_crlf()
            return data
        if kind == b":":
            return int(line[1:])
        if kind == b"+":
            return line[1:]
        if kind == b"-":
            return RespError(line[1:].decode("utf-8", "replace"))
        if kind == b"*":
            count = int(line[1:])
            if count < 0:
                return None
            return self._read_array(count)
        raise RespProtocolError("unexpected reply from %s: %r" % (self.address, line[:80]))

    def _read_array(self, count):
        """Array elements; bulk strings already in the buffer are sliced in place (SCAN pages)."""
        out = []
        append = out.append
        buf = self._buf
        pos = self._pos
        end = len(buf)
        while len(out) < count:
            if pos < end and buf[pos] == 36:  # '$'
                idx = buf.find(CRLF, pos)
                if idx > 0:
                    size = int(buf[pos + 1:idx])
                    stop = idx + 2 + size
                    if size >= 0 and stop + 2 <= end and buf[stop:stop + 2] == CRLF:
                        append(buf[idx + 2:stop])
                        pos = stop + 2
                        continue
            self._pos = pos
            append(self.read_reply())
            buf = self._buf
            pos = self._pos
            end = len(buf)
        self._pos = pos
        return out
