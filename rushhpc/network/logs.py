"""Worker log records -> a capped Redis stream the manager reads (`read_log`, `print_log`)."""

from __future__ import annotations

import logging
from typing import Mapping

from rushhpc.defaults import MAX_LOG_ENTRIES
from rushhpc.store.connection import RedisClient


class RedisLogHandler(logging.Handler):
    """Sends log records of a worker to ``{net}:log``, capped at about `MAX_LOG_ENTRIES`.

    A failing Redis must never break the user's code: errors are dropped
    (``logging.Handler.handleError`` prints them to stderr once per record).

    Example:
        >>> logging.getLogger("mymodel").addHandler(RedisLogHandler(client, keys.log, "w1"))
    """

    def __init__(self, client: RedisClient, stream: str, worker_id: str, maxlen: int = MAX_LOG_ENTRIES):
        super().__init__()
        self.client = client
        self.stream = stream
        self.worker_id = worker_id
        self.maxlen = maxlen

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.client.xadd(
                self.stream,
                {
                    "worker_id": self.worker_id,
                    "level": record.levelname,
                    "logger": record.name,
                    "msg": self.format(record),
                    "timestamp": f"{record.created:.6f}",
                },
                maxlen=self.maxlen,
                approximate=True,
            )
        except Exception:  # noqa: BLE001 - logging must not raise into user code
            self.handleError(record)


def install(client: RedisClient, stream: str, worker_id: str, thresholds: Mapping[str, str | int] | None) -> list:
    """Attach a `RedisLogHandler` to each logger named in ``thresholds`` at its level."""
    installed = []
    for name, level in (thresholds or {}).items():
        lg = logging.getLogger(name)
        lvl = logging.getLevelName(level.upper()) if isinstance(level, str) else int(level)
        if not isinstance(lvl, int):
            raise ValueError(f"log_thresholds: unknown level {level!r} for logger {name!r}")
        handler = RedisLogHandler(client, stream, worker_id)
        handler.setLevel(lvl)
        handler.setFormatter(logging.Formatter("%(message)s"))
        lg.addHandler(handler)
        if lg.getEffectiveLevel() > lvl or lg.level == logging.NOTSET:
            lg.setLevel(lvl)
        installed.append((lg, handler))
    return installed
