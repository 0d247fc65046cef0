# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the streaming RESP client and of the RDB stream framing.

The connection reads from a scripted fake socket that hands out the server's bytes in
awkward pieces (one byte at a time, splits inside CRLF, inside the EOF mark...), so
the parser is exercised on every boundary a real network can produce.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.opsdeck.stack.plugins.module_utils.backup import redis as rb
from ansible_collections.opsdeck.stack.plugins.module_utils.clients.resp import (
    RespConnection,
    RespConnectionError,
    RespError,
    RespProtocolError,
    encode_command,
)


class FakeSocket(object):
    """Serves ``data`` in pieces of the given sizes; then reports a closed peer."""

    def __init__(self, data, sizes=None):
        self.data = data
        self.pos = 0
        self.sizes = list(sizes or [])
        self.sent = b""
        self.closed = False

    def _next_size(self, limit):
        size = self.sizes.pop(0) if self.sizes else limit
        return max(1, min(size, limit))

    def recv(self, limit):
        if self.pos >= len(self.data):
            return b""
        size = self._next_size(limit)
        chunk = self.data[self.pos:self.pos + size]
        self.pos += len(chunk)
        return chunk

    def recv_into(self, view):
        chunk = self.recv(len(view))
        view[:len(chunk)] = chunk
        return len(chunk)

    def sendall(self, data):
        self.sent += bytes(data)

    def settimeout(self, _timeout):
        return None

    def close(self):
        self.closed = True


def conn_over(data, sizes=None, chunk=64):
    conn = RespConnection(chunk_size=chunk)
    conn._sock = FakeSocket(data, sizes)  # pylint: disable=protected-access
    return conn


def test_encode_command_is_binary_safe():
    assert encode_command(("SET", b"k\r\n", 12)) == b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n12\r\n"
    assert encode_command(("ECHO", "é")) == b"*2\r\n$4\r\nECHO\r\n$2\r\n\xc3\xa9\r\n"
    with pytest.raises(TypeError):
        encode_command(("SET", None))


REPLIES = (
    b"+OK\r\n"
    b"-ERR unknown command 'FOO'\r\n"
    b":-42\r\n"
    b"$5\r\nhe\r\nl\r\n"
    b"$-1\r\n"
    b"*3\r\n$1\r\na\r\n:1\r\n*2\r\n+x\r\n-NOPERM no\r\n"
    b"*-1\r\n"
    b"$0\r\n\r\n"
    b"*4\r\n$1\r\n0\r\n$-1\r\n*0\r\n$3\r\nk\r\n\r\n"
)
EXPECTED = [b"OK", RespError("ERR unknown command 'FOO'"), -42, b"he\r\nl", None,
            [b"a", 1, [b"x", RespError("NOPERM no")]], None, b"", [b"0", None, [], b"k\r\n"]]


def _same(got, want):
    if isinstance(want, RespError):
        return isinstance(got, RespError) and got.message == want.message
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want))
    return got == want


@pytest.mark.parametrize("piece", [1, 2, 3, 5, 7, 64])
def test_replies_parse_whatever_the_read_boundaries(piece):
    conn = conn_over(REPLIES, [piece] * 1000, chunk=piece)
    got = [conn.read_reply() for _dummy in EXPECTED]
    assert all(_same(g, w) for g, w in zip(got, EXPECTED)), got
    with pytest.raises(RespConnectionError, match="closed the connection"):
        conn.read_reply()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=20), st.data())
def test_bulk_replies_random_splits(values, data):
    stream = b"".join(b"$%d\r\n%s\r\n" % (len(v), v) for v in values)
    sizes = data.draw(st.lists(st.integers(1, 50), min_size=1, max_size=200))
    conn = conn_over(stream, sizes, chunk=data.draw(st.integers(1, 128)))
    assert [conn.read_reply() for _dummy in values] == values


def test_command_raises_error_replies_and_pipeline_returns_them():
    conn = conn_over(b"-WRONGPASS invalid username-password pair\r\n+OK\r\n-ERR x\r\n")
    with pytest.raises(RespError) as info:
        conn.command("AUTH", "bad")
    assert info.value.code == "WRONGPASS"
    replies = conn.pipeline([("PING",), ("GET", "k")])
    assert replies[0] == b"OK" and isinstance(replies[1], RespError)
    assert conn._sock.sent.count(b"*") == 3  # pylint: disable=protected-access


def test_protocol_errors_are_reported():
    with pytest.raises(RespProtocolError):
        conn_over(b"?what\r\n").read_reply()
    with pytest.raises(RespProtocolError):
        conn_over(b"$3\r\nabcXY").read_reply()


def test_copy_to_streams_in_chunks_and_returns_the_footer():
    payload = os.urandom(10000)
    conn = conn_over(b"$%d\r\n%s\r\n+NEXT\r\n" % (len(payload), payload), [100] * 1000, chunk=100)
    line = conn.read_line()
    assert line == b"$10000"
    pieces = []
    tail = conn.copy_to(10000, lambda d: pieces.append(bytes(d)), chunk=333)
    conn.expect_crlf()
    assert b"".join(pieces) == payload
    assert max(len(p) for p in pieces) <= 333
    assert tail == payload[-10:]
    assert conn.read_reply() == b"NEXT"


def test_timeouts_and_refused_connections_become_connection_errors():
    class Slow(FakeSocket):
        def recv(self, limit):
            raise socket.timeout()

    conn = RespConnection(timeout=0.5)
    conn._sock = Slow(b"")  # pylint: disable=protected-access
    with pytest.raises(RespConnectionError, match="timed out after 0.5s"):
        conn.read_reply()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(RespConnectionError, match="cannot connect to Redis at 127.0.0.1:%d" % port):
        RespConnection(port=port, timeout=2).connect()


# ---------------------------------------------------------------------------
# RDB stream framing (stream_snapshot over a fake replication connection)
# ---------------------------------------------------------------------------
def fake_rdb(size, rnd):
    body = bytes(rnd.getrandbits(8) for _dummy in range(size))
    return b"REDIS0010" + body + b"\xff" + os.urandom(8)


PREAMBLE = b"+OK\r\n+OK\r\n"


def stream_of(conn_bytes, sizes=None, chunk=4096):
    conn = conn_over(conn_bytes, sizes, chunk=256)
    out = []
    result = rb.stream_snapshot(conn, lambda d: out.append(bytes(d)), chunk_size=chunk)
    return result, b"".join(out), conn


@pytest.mark.parametrize("piece", [1, 7, 39, 40, 41, 97, 4096])
def test_eof_form_strips_the_mark_at_every_split(piece):
    rnd = random.Random(piece)
    rdb = fake_rdb(3000, rnd)
    mark = b"%040x" % rnd.getrandbits(160)
    data = PREAMBLE + b"\n\n\n$EOF:" + mark + b"\r\n" + rdb + mark
    result, got, conn = stream_of(data, [piece] * 100000)
    assert got == rdb
    assert result["transfer"] == "eof" and result["size"] == len(rdb) and result["rdb_version"] == 10
    sent = conn._sock.sent  # pylint: disable=protected-access
    assert b"REPLCONF" in sent and b"capa" in sent and b"rdb-only" in sent and b"SYNC" in sent


@pytest.mark.parametrize("piece", [1, 13, 4096])
def test_bulk_form_reads_exactly_the_announced_length(piece):
    rdb = fake_rdb(5000, random.Random(3))
    trailing = b"*1\r\n$4\r\nPING\r\n"  # replication stream of an old server: never written
    data = PREAMBLE + b"\n$%d\r\n" % len(rdb) + rdb + trailing
    result, got, _conn = stream_of(data, [piece] * 100000, chunk=1000)
    assert got == rdb and result["transfer"] == "bulk"
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(rdb).hexdigest()


def test_truncated_streams_fail_and_say_how_far_they_got():
    rdb = fake_rdb(2000, random.Random(4))
    with pytest.raises(rb.BackupError, match=r"broke after 1000 of %d bytes.*No backup file" % len(rdb)):
        stream_of(PREAMBLE + b"$%d\r\n" % len(rdb) + rdb[:1000])
    mark = b"a" * 40
    with pytest.raises(rb.BackupError, match="before the end-of-transfer mark"):
        stream_of(PREAMBLE + b"$EOF:" + mark + b"\r\n" + rdb[:1500])


def test_stream_that_is_not_an_rdb_is_rejected():
    junk = b"NOTREDIS" + b"x" * 100
    with pytest.raises(rb.BackupError, match="not a complete RDB"):
        stream_of(PREAMBLE + b"$%d\r\n" % len(junk) + junk)


@pytest.mark.parametrize("replies,step", [
    (b"-NOPERM this user has no permissions to run the 'replconf' command\r\n+OK\r\n", "REPLCONF capa eof"),
    (PREAMBLE + b"-NOPERM this user has no permissions to run the 'sync' command\r\n", "SYNC"),
    (PREAMBLE + b"-ERR unknown command 'SYNC'\r\n-ERR unknown command 'PSYNC'\r\n", "PSYNC ? -1"),
])
def test_refused_replication_points_to_keys_mode(replies, step):
    with pytest.raises(rb.BackupError) as info:
        stream_of(replies)
    assert "mode: keys" in info.value.msg and step in info.value.msg
    assert info.value.details["refused_command"] == step


def test_psync_fallback_accepts_fullresync_preamble():
    rdb = fake_rdb(100, random.Random(5))
    data = (PREAMBLE + b"-ERR unknown command 'SYNC'\r\n+FULLRESYNC abc 0\r\n$%d\r\n" % len(rdb) + rdb)
    result, got, conn = stream_of(data)
    assert got == rdb and result["transfer"] == "bulk"
    assert b"PSYNC" in conn._sock.sent  # pylint: disable=protected-access


def test_old_servers_without_rdb_only_are_accepted():
    rdb = fake_rdb(100, random.Random(6))
    data = b"+OK\r\n-ERR Unrecognized REPLCONF option: rdb-only\r\n$%d\r\n" % len(rdb) + rdb
    _result, got, _conn = stream_of(data)
    assert got == rdb
