"""Processes: liveness, process trees, the parent-death signal and the processes a worker marked.

Layer 0, standard library only. The launchers (local, srun), the embedded Redis and the worker's
heartbeat import it as ``rushhpc.processes``; the heartbeat process (`rushhpc.worker.beat`) runs it
alone, with no site packages and no rushhpc package (``python -I -S``, this folder on sys.path, see
`rushhpc.worker.heartbeat.beat_command`). So it imports no rushhpc module, and nothing heavy at import
time (no typing, subprocess or ctypes: every worker node runs one heartbeat per worker, and its memory
counts). It reads /proc where there is one (Linux), instead of psutil.
"""

from __future__ import annotations

import os
import signal

PR_SET_PDEATHSIG = 1  # prctl(2) option
# Marks the processes a worker started: every child inherits it, so the worker's heartbeat finds and
# stops them when the worker dies (`marked`, rushhpc.worker.beat.worker_gone).
WORKER_TOKEN_VARIABLE = "RUSHHPC_WORKER_TOKEN"


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``sig`` to this process when its parent *thread* exits (no-op elsewhere).

    Meant for a ``preexec_fn``, and only from the main thread (the signal follows the creating thread).

    Example:
        >>> subprocess.Popen(argv, preexec_fn=lambda: set_parent_death_signal(signal.SIGTERM))
    """
    try:
        import ctypes  # here: only the process that starts a child needs it (0.2 MiB per worker)

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig)
    except OSError:
        pass


def _stat(pid: int | str) -> bytes:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return stat[stat.rindex(b")") + 2:]  # after the command name, which may hold spaces and ')'


def alive(pid: int | None) -> bool:
    """Whether ``pid`` runs (a zombie does not); ``None`` (no process to watch) counts as alive.

    Example:
        >>> alive(os.getpid()), alive(None)
        (True, True)
    """
    if pid is None:
        return True
    try:
        return _stat(pid)[:1] not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): a signal 0 probe
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _children() -> dict[int, list[int]]:
    """Every process's children, by parent pid."""
    kids: dict[int, list[int]] = {}
    if os.path.isdir("/proc/self"):
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    ppid = int(_stat(name).split()[1])
                except (OSError, ValueError, IndexError):
                    continue  # ended meanwhile
                kids.setdefault(ppid, []).append(int(name))
        return kids
    import subprocess  # no /proc: ask ps (here, not at import: the heartbeat process never needs it on Linux)

    out = subprocess.run(["ps", "-A", "-o", "pid=", "-o", "ppid="], capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, ppid = (int(x) for x in line.split())
        kids.setdefault(ppid, []).append(pid)
    return kids


def kill_tree(pid: int, skip: int | None = None) -> None:
    """SIGKILL ``pid`` and its descendants (except ``skip``, e.g. the caller), children first.

    Example:
        >>> kill_tree(worker.pid, skip=os.getpid())
    """
    kids = _children()
    family, todo = [], [pid]
    while todo:
        p = todo.pop()
        family.append(p)
        todo.extend(kids.get(p, []))
    for p in reversed(family):  # children first
        if p == skip:
            continue
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def marked(token: str) -> list[int]:
    """The processes (but this one) whose environment carries this worker token in `WORKER_TOKEN_VARIABLE`:
    those the worker started, and their children. Empty without /proc.

    Example:
        >>> marked(os.environ[WORKER_TOKEN_VARIABLE])
        [40123, 40125]
    """
    mark = f"{WORKER_TOKEN_VARIABLE}={token}".encode()
    me, out = os.getpid(), []
    for name in os.listdir("/proc") if os.path.isdir("/proc/self") else ():
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if mark in f.read().split(b"\0"):
                    out.append(int(name))
        except OSError:
            continue  # ended meanwhile, or another user's
    return out
