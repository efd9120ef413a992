"""What runs at interpreter exit, in a fixed order, without modules importing each other.

Managers stop their local workers through Redis, so they must close before the embedded
Redis stops. Each registers its cleanup here with a stage; one atexit handler runs the
stages in increasing order (`MANAGERS` before `SERVERS`), whichever module was imported first.
"""

from __future__ import annotations

import atexit
import threading
from typing import Callable

MANAGERS = 10  # close managers: stop monitors and the local workers they started
SERVERS = 90  # stop servers this process started (the embedded Redis)

_LOCK = threading.Lock()
_HOOKS: list[tuple[int, int, Callable[[], None]]] = []
_registered = False


def at_exit(stage: int, fn: Callable[[], None]) -> None:
    """Run ``fn`` at interpreter exit, after every hook of a lower stage.

    Example:
        >>> at_exit(SERVERS, server.stop)
    """
    global _registered
    with _LOCK:
        if any(h[2] is fn for h in _HOOKS):
            return
        _HOOKS.append((stage, len(_HOOKS), fn))
        if not _registered:
            atexit.register(run_exit_hooks)
            _registered = True


def run_exit_hooks() -> None:
    """Run every hook once, stage by stage; a failing hook does not stop the others."""
    with _LOCK:
        hooks = sorted(_HOOKS)
        _HOOKS.clear()
    for _, _, fn in hooks:
        try:
            fn()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass
