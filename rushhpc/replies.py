"""Deferred replies: send a worker's Lua calls now, read their replies with the next call.

At most one call is unanswered at a time: each call first reads the reply of the one before.

A worker does not need the reply of ``push_running_tasks`` or ``finish_tasks`` before it
evaluates the next point, so waiting a round trip for it is pure overhead (about half of
the per-task cost of the propose/evaluate/report loop). `WorkerRedis` writes such calls to
its one connection and reads the replies, in order, before its next command of any kind.
Errors surface at the latest on that next command; a connection lost in between is
repaired by running the unanswered calls again, which is safe because every deferred
script is idempotent (task keys are made by the client; finishing twice is a no-op).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Sequence

import redis
from redis.exceptions import NoScriptError

Callback = Callable[[Any], None]
_LOST = object()  # the reply of a command whose connection broke before it was read


class WorkerRedis(redis.Redis):
    """A single-connection client whose `send_script` defers the reply.

    Example:
        >>> r = WorkerRedis(host="127.0.0.1", single_connection_client=True)
        >>> r.send_script(script, keys, args, on_reply=print)   # returns at once
        >>> r.ping()                                            # reads the script's reply first
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs["single_connection_client"] = True
        super().__init__(*args, **kwargs)
        self._pending: deque[tuple[Any, Sequence[str], Sequence[Any], Callback]] = deque()
        self._draining = False

    def send_script(self, script: Any, keys: Sequence[str], args: Sequence[Any], on_reply: Callback) -> None:
        """Send ``EVALSHA`` for a registered script; ``on_reply(reply)`` runs when the reply is read.

        After sending, the replies of earlier calls are read (they come first on the
        connection), so at most one call is unanswered and its error surfaces at the latest
        on the next call: no unbounded pipelining, yet no wait for this call's own reply.
        """
        with self.single_connection_lock:
            conn = self._conn()
            try:
                conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
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
                    i = 0
                    while i < len(items):
                        try:
                            replies.append(self._conn().read_response())
                        except redis.ResponseError as e:  # an error reply: the next one is still in order
                            replies.append(e)
                            if isinstance(e, NoScriptError) and self._pending:
                                # calls are re-run below, in order: read the kept replies first
                                items += list(self._pending)
                                self._pending.clear()
                        i += 1
                except (redis.ConnectionError, redis.TimeoutError):
                    # every unread reply is gone with the connection, the kept ones too
                    self._conn().disconnect()
                    items += list(self._pending)
                    self._pending.clear()
                    replies += [_LOST] * (len(items) - len(replies))
            finally:
                self._draining = False
            error: Exception | None = None
            for (script, keys, args, on_reply), reply in zip(items, replies):
                if isinstance(reply, NoScriptError) or reply is _LOST:
                    reply = script(keys=keys, args=args)  # script cache flushed, or reply lost: run again
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
        return super().execute_command(*args, **options)

    def close(self) -> None:
        try:
            self.drain()
        finally:
            super().close()
