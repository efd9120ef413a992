"""The worker's connection: a lean EVALSHA path, and deferred replies.

**Lean path.** A worker's per-task calls (push_running_tasks, pop_task, finish_tasks,
fail_tasks) are EVALSHA of a script whose KEYS are fixed for the worker. redis-py spends
more CPU on such a call than Redis does (argument encoding, the command's option
handling, retries, a general RESP parser reading through a buffered socket): profiled,
about 85 % of the client's CPU per task. `WorkerRedis.call_script` writes one pre-packed
EVALSHA (the command, sha and KEYS are packed once per worker, see `pack_head`) on the
worker's one connection and parses the small reply itself. Anything unusual (a
connection error, NOSCRIPT, data redis-py left unread) goes through redis-py's normal
path, with its reconnect and retry, so the behaviour is redis-py's.

**Deferred replies.** A worker does not need the reply of ``push_running_tasks`` or
``finish_tasks`` before it evaluates the next point, so waiting a round trip for it is
pure overhead (about half of the per-task cost of the propose/evaluate/report loop).
`WorkerRedis.send_script` writes such calls to its one connection and reads the replies,
in order, before its next command of any kind. At most one call is unanswered at a time:
each call first reads the reply of the one before. Errors surface at the latest on that
next command; a connection lost in between is repaired by running the unanswered calls
again, which is safe because every deferred script is idempotent (task keys are made by
the client; finishing twice is a no-op).

**A moved slot.** On a Redis Cluster the connection goes to the primary that owns the
network's slot. When that slot moves (resharding, a failover), the old node answers
``MOVED slot host:port`` without running anything: the connection is pointed at the new
node and the call sent again (`WorkerRedis.follow`), for plain commands, scripts and
deferred replies alike. While the slot is half migrated (``ASK``, ``TRYAGAIN``: a script's
keys split between the two nodes, nothing run) the call waits a moment and is sent again,
until the MOVED.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Sequence

import redis
from redis.exceptions import AskError, MovedError, NoScriptError, TryAgainError

from rushhpc import defaults

Callback = Callable[[Any], None]
_LOST = object()  # the reply of a command whose connection broke before it was read
_READ_SIZE = 65536


class _Incomplete(Exception):
    """The buffer ends inside the reply: read more."""


class _ErrorReply(str):
    """An error reply (``-ERR ...``), kept apart from a status reply."""


def _bulk(value: Any) -> bytes:
    if isinstance(value, str):
        b = value.encode()
    elif isinstance(value, bytes):
        b = value
    elif isinstance(value, bool):  # redis-py refuses booleans: so does this
        raise redis.DataError("invalid input of type 'bool': convert to a str, bytes or number first")
    elif isinstance(value, int):
        b = str(value).encode()
    elif isinstance(value, float):
        b = repr(value).encode()
    else:
        raise redis.DataError(f"invalid input of type {type(value).__name__!r}: convert to a str, bytes or number first")
    return b"$%d\r\n%s\r\n" % (len(b), b)


def pack_head(sha: str, keys: Sequence[str]) -> tuple[bytes, int]:
    """The fixed part of ``EVALSHA sha numkeys key...`` in RESP, and how many items it holds.

    Example:
        >>> pack_head("a" * 40, ["{n}:running"])[1]
        4
    """
    parts = [_bulk("EVALSHA"), _bulk(sha), _bulk(len(keys))] + [_bulk(k) for k in keys]
    return b"".join(parts), len(parts)


def pack_call(head: bytes, n_head: int, args: Sequence[Any]) -> bytes:
    """One complete EVALSHA command: the pre-packed head plus the ARGV."""
    parts = [b"*%d\r\n" % (n_head + len(args)), head]
    append = parts.append
    for a in args:
        if type(a) is str:
            b = a.encode()
            append(b"$%d\r\n%s\r\n" % (len(b), b))
        else:
            append(_bulk(a))
    return b"".join(parts)


def _parse(buf: bytearray, pos: int) -> tuple[Any, int]:
    """One RESP2/RESP3 value at ``pos`` -> (value, position after it); bulk strings decoded (UTF-8)."""
    nl = buf.find(b"\r\n", pos)
    if nl < 0:
        raise _Incomplete
    t = buf[pos]
    if t == 36:  # $ bulk string
        n = int(buf[pos + 1 : nl])
        if n < 0:
            return None, nl + 2
        end = nl + 2 + n
        if end + 2 > len(buf):
            raise _Incomplete
        return buf[nl + 2 : end].decode(), end + 2
    if t == 42 or t == 126:  # * array, ~ set
        n = int(buf[pos + 1 : nl])
        if n < 0:
            return None, nl + 2
        pos = nl + 2
        out: list[Any] = []
        append, find, size = out.append, buf.find, len(buf)
        for _ in range(n):
            if pos >= size:
                raise _Incomplete
            if buf[pos] == 36:  # a bulk string element, inline (the common case: no call per element)
                nl = find(b"\r\n", pos)
                if nl < 0:
                    raise _Incomplete
                m = int(buf[pos + 1 : nl])
                if m < 0:
                    append(None)
                    pos = nl + 2
                    continue
                end = nl + 2 + m
                if end + 2 > size:
                    raise _Incomplete
                append(buf[nl + 2 : end].decode())
                pos = end + 2
            else:
                v, pos = _parse(buf, pos)
                append(v)
        return out, pos
    if t == 58 or t == 40:  # : integer, ( big number
        return int(buf[pos + 1 : nl]), nl + 2
    if t == 43:  # + status
        return buf[pos + 1 : nl].decode(), nl + 2
    if t == 45:  # - error
        return _ErrorReply(buf[pos + 1 : nl].decode()), nl + 2
    return _parse_rare(buf, pos, nl, t)


def _parse_rare(buf: bytearray, pos: int, nl: int, t: int) -> tuple[Any, int]:
    """The RESP3 types a worker's scripts never return (null, boolean, double, map): off `_parse`'s
    path of bulk strings, arrays, integers and statuses, which stays one function without a call."""
    if t == 95:  # _ null
        return None, nl + 2
    if t == 35:  # # boolean
        return buf[pos + 1 : nl] == b"t", nl + 2
    if t == 44:  # , double
        return float(buf[pos + 1 : nl]), nl + 2
    if t == 37:  # % map
        n = int(buf[pos + 1 : nl])
        pos = nl + 2
        d = {}
        for _ in range(n):
            k, pos = _parse(buf, pos)
            v, pos = _parse(buf, pos)
            d[k] = v
        return d, pos
    raise redis.InvalidResponse(f"unexpected reply type {chr(t)!r} on the lean path")


_RERUN = (NoScriptError, AskError, TryAgainError)  # replies of calls that did not run (MovedError is an AskError)


class WorkerRedis(redis.Redis):
    """A single-connection client with a lean EVALSHA path and deferred replies.

    Example:
        >>> r = WorkerRedis(host="127.0.0.1", single_connection_client=True)
        >>> head, n = pack_head(script.sha, keys)
        >>> r.call_script(script, keys, args, head, n)            # waits for the reply
        >>> r.send_script(script, keys, args, print, head, n)     # returns at once
        >>> r.ping()                                              # reads the script's reply first
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs["single_connection_client"] = True
        super().__init__(*args, **kwargs)
        self._pending: deque[tuple[Any, Sequence[str], Sequence[Any], Callback]] = deque()
        self._draining = False
        self._buf = bytearray()  # bytes read by the lean path, not yet parsed
        self._pos = 0
        # on a Redis Cluster: () -> (host, port) of the primary that owns the network's slot now
        self.locate: Callable[[], tuple[str, int]] | None = None

    # ------------------------------------------------------------------ the lean path
    def _lean_socket(self) -> Any:
        """The connected socket when redis-py holds no unread reply bytes on it, else None."""
        conn: Any = self.connection
        try:
            sock = conn._sock
            buffer = conn._parser._buffer
        except AttributeError:  # not a plain redis-py Connection (or its parser keeps no buffer)
            if conn is None or not hasattr(conn, "_sock"):
                return None
            sock, buffer = conn._sock, None
        if sock is None:
            conn.connect()  # redis-py's connect: handshake, AUTH, SELECT, with its retry
            sock, buffer = conn._sock, getattr(conn._parser, "_buffer", None)
        if buffer is not None and buffer.unread_bytes():
            return None
        return sock

    def _read_reply(self, sock: Any) -> Any:
        """Parse one reply, reading from the socket as needed; error replies become exceptions."""
        buf, pos = self._buf, self._pos
        need = not buf  # nothing buffered: read before parsing
        while True:
            if not need:
                try:
                    value, end = _parse(buf, pos)
                    break
                except _Incomplete:
                    pass
            need = False
            try:
                chunk = sock.recv(_READ_SIZE)
            except TimeoutError:
                raise redis.TimeoutError("Timeout reading from the Redis socket") from None
            except OSError as e:
                raise redis.ConnectionError(f"Error while reading from the Redis socket: {e}") from None
            if not chunk:
                raise redis.ConnectionError("Connection closed by server.")
            if pos:
                del buf[:pos]
                pos = 0
            buf += chunk
        if end >= len(buf):
            buf.clear()
            self._pos = 0
        else:
            self._pos = end
        if isinstance(value, _ErrorReply):
            parser = getattr(self.connection, "_parser", None)
            return parser.parse_error(str(value)) if parser is not None else redis.ResponseError(str(value))
        return value

    def _lean_disconnect(self) -> None:
        self._buf.clear()
        self._pos = 0
        conn = self.connection
        if conn is not None:
            conn.disconnect()

    def _sendall(self, sock: Any, data: bytes) -> None:
        try:
            sock.sendall(data)
        except TimeoutError:
            raise redis.TimeoutError("Timeout writing to the Redis socket") from None
        except OSError as e:
            raise redis.ConnectionError(f"Error while writing to the Redis socket: {e}") from None

    def call_script(self, script: Any, keys: Sequence[str], args: Sequence[Any], head: bytes = b"",
                    n_head: int = 0) -> Any:
        """Run a registered script and return its reply (``EVALSHA`` on the lean path).

        ``head``/``n_head`` come from `pack_head` (packed once per script and KEYS). A
        connection error, NOSCRIPT or an unusual connection state runs the call through
        redis-py instead (reconnect, retry, SCRIPT LOAD), so the result is the same.
        """
        if self._pending and not self._draining:
            self.drain()
        if not head:
            head, n_head = pack_head(script.sha, keys)
        with self.single_connection_lock:
            sock = self._lean_socket()
            if sock is not None:
                try:
                    self._sendall(sock, pack_call(head, n_head, args))
                    reply = self._read_reply(sock)
                except (redis.ConnectionError, redis.TimeoutError):
                    self._lean_disconnect()
                else:
                    if not isinstance(reply, Exception):
                        return reply
                    if isinstance(reply, MovedError):
                        self.follow(reply)  # not run: send it again, there
                    elif not isinstance(reply, (NoScriptError, AskError, TryAgainError)):
                        raise reply
            return script(keys=keys, args=args)  # redis-py: SCRIPT LOAD on NOSCRIPT, reconnect and retry

    # ------------------------------------------------------------------ deferred replies
    def send_script(self, script: Any, keys: Sequence[str], args: Sequence[Any], on_reply: Callback,
                    head: bytes = b"", n_head: int = 0) -> None:
        """Send ``EVALSHA`` for a registered script; ``on_reply(reply)`` runs when the reply is read.

        After sending, the replies of earlier calls are read (they come first on the
        connection), so at most one call is unanswered and its error surfaces at the latest
        on the next call: no unbounded pipelining, yet no wait for this call's own reply.
        """
        if not head:
            head, n_head = pack_head(script.sha, keys)
        with self.single_connection_lock:
            sock = self._lean_socket() if not self._pending else self._conn()._sock
            try:
                if sock is None:
                    raise redis.ConnectionError("no lean connection")
                self._sendall(sock, pack_call(head, n_head, args))
            except (redis.ConnectionError, redis.TimeoutError):
                self.drain()
                on_reply(script(keys=keys, args=args))  # the normal path, with redis-py's reconnect and retry
                return
            self._pending.append((script, keys, args, on_reply))
            self.drain(keep=1)

    def drain(self, keep: int = 0) -> None:
        """Read the outstanding replies, in order, but the last ``keep``; run their callbacks."""
        if len(self._pending) <= keep or self._draining:
            return
        with self.single_connection_lock:
            self._draining = True
            try:
                items = [self._pending.popleft() for _ in range(len(self._pending) - keep)]
                replies: list[Any] = []
                try:
                    sock = self._conn()._sock
                    if sock is None:
                        raise redis.ConnectionError("connection closed")
                    i = 0
                    while i < len(items):
                        reply = self._read_reply(sock)
                        replies.append(reply)
                        # an error reply: the next one is still in order
                        if isinstance(reply, _RERUN) and self._pending:
                            # calls are re-run below, in order: read the kept replies first
                            items += list(self._pending)
                            self._pending.clear()
                        i += 1
                except (redis.ConnectionError, redis.TimeoutError):
                    # every unread reply is gone with the connection, the kept ones too
                    self._lean_disconnect()
                    items += list(self._pending)
                    self._pending.clear()
                    replies += [_LOST] * (len(items) - len(replies))
            finally:
                self._draining = False
            error: Exception | None = None
            for (script, keys, args, on_reply), reply in zip(items, replies):
                if isinstance(reply, _RERUN) or reply is _LOST:
                    # script cache flushed, slot moved or moving (not run), or reply lost: run
                    # again (execute_command follows a MOVED, waits out an ASK or TRYAGAIN)
                    reply = script(keys=keys, args=args)
                if isinstance(reply, Exception):
                    error = error or reply
                    continue
                on_reply(reply)
            if error is not None:
                raise error

    def _conn(self) -> Any:
        conn = self.connection  # always set: the client is made with single_connection_client=True
        assert conn is not None
        return conn

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if self._pending and not self._draining:
            self.drain()
        if self._buf:  # bytes nobody asked for: the connection is out of step, start afresh
            self._lean_disconnect()
        for _ in range(defaults.CLUSTER_MAX_REDIRECTS):
            try:
                return super().execute_command(*args, **options)
            except MovedError as e:
                self.follow(e)
            except (AskError, TryAgainError):
                time.sleep(defaults.CLUSTER_MIGRATION_WAIT)  # the slot is being migrated: nothing ran, ask again
            except redis.ConnectionError:
                # redis-py's retries are spent: on a cluster, the primary may have died and a
                # replica taken over its slots
                if not self._relocate():
                    raise
        return super().execute_command(*args, **options)

    def _relocate(self) -> bool:
        """Point the connection at the node `locate` names, once it differs from this one
        (waiting up to defaults.CLUSTER_RELOCATE_TIMEOUT for the cluster to promote a replica); False without
        `locate` or when the cluster still names the same node."""
        if self.locate is None:
            return False
        conn = self._conn()
        deadline = time.monotonic() + defaults.CLUSTER_RELOCATE_TIMEOUT
        while True:
            try:
                host, port = self.locate()
            except Exception:  # noqa: BLE001 - no node answers yet: ask again until the deadline
                host, port = conn.host, conn.port
            if (host, int(port)) != (conn.host, int(conn.port)):
                self._retarget(host, int(port))
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)

    def _retarget(self, host: str, port: int) -> None:
        self._lean_disconnect()
        conn = self._conn()
        conn.host, conn.port = host, port
        self.connection_pool.connection_kwargs.update(host=host, port=port)

    def follow(self, moved: MovedError) -> None:
        """The slot is served by another node now (a Redis Cluster resharded or failed over):
        point the one connection there. The command that got MOVED did not run."""
        with self.single_connection_lock:
            if self._pending and not self._draining:
                self.drain()  # replies in flight belong to the old connection
            self._retarget(moved.host, int(moved.port))

    def close(self) -> None:
        try:
            self.drain()
        finally:
            super().close()
