"""The output folder's lock: one sweep at a time runs in a folder (``OUTPUT/.lock``).

Two runs of one sweep file (a job script's ``--resume`` started twice, two array tasks, a
requeue that overlaps the job it replaces) would evaluate the same points twice and write
over each other's ``summary.json``. So a sweep holds ``OUTPUT/.lock`` while it runs:

- the file is created with ``O_EXCL`` and held with ``flock`` (exclusive, non-blocking) for
  the whole run; the kernel lets go of the ``flock`` when the process ends, however it ends;
- it holds a JSON record: ``host``, ``pid``, ``pid_started`` (the process's start time, so a
  reused pid is not mistaken for the holder), ``started_at``, ``heartbeat`` (Unix seconds,
  rewritten every `HEARTBEAT_PERIOD` seconds by a thread), ``token``, ``command``.

A second run is refused before anything starts (`SweepLockedError`, naming the holder's host
and pid) when the ``flock`` is held, or when the record names a holder that is alive: on this
host, a process with that pid and start time; on another host (a shared file system, where
``flock`` may not reach across hosts), a heartbeat younger than `STALE_AFTER` seconds. A
record whose holder is gone (a dead pid on this host, a heartbeat older than `STALE_AFTER`
on another host that also does not move for 1.5 periods) is taken over. The holder removes
the file at its end, Ctrl-C and SIGTERM included (the sweep ends gracefully on both).

Example:
    >>> lock = OutputLock(Path("runs/branin"), source="sweep.yaml")
    >>> lock.acquire()      # SweepLockedError when another sweep runs there
    >>> lock.release()
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rushhpc.errors import RushError

LOCK_NAME = ".lock"
HEARTBEAT_PERIOD = 5.0  # seconds between rewrites of the record's heartbeat
STALE_AFTER = 30.0  # a record of another host whose heartbeat is older than this is taken over


class SweepLockedError(RushError):
    """Another sweep runs in this output folder (its host and pid are in the message).
    The command line prints it as one line and exits with code 2; nothing was started."""


def _process_started(pid: int) -> float | None:
    """The start time of process ``pid`` on this host (None when there is none)."""
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:  # noqa: BLE001 - no such process, or not ours to look at
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return -1.0  # alive, start time unknown
        return -1.0


def _parse(text: str) -> dict[str, Any] | None:
    """The record at the start of the file; a rewrite in progress may leave old bytes after it."""
    try:
        doc, _ = json.JSONDecoder().raw_decode(text.lstrip())
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _ago(t: Any) -> str:
    try:
        s = max(0.0, time.time() - float(t))
    except (TypeError, ValueError):
        return "unknown"
    return f"{s:.0f} s ago"


class OutputLock:
    """The lock of one output folder, held by one sweep run (see the module docstring)."""

    def __init__(self, folder: Path, source: str = "sweep", key: str = "output"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.source, self.key = source, key
        self.fd: int | None = None
        self.created_folder = False
        self.took_over: dict[str, Any] | None = None  # the stale record replaced, for a message
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.record: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()

    # ------------------------------------------------------------------ acquire
    def acquire(self) -> None:
        """Take the lock or raise `SweepLockedError`; creates the folder when it does not exist."""
        if not self.folder.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            self.created_folder = True
        for _ in range(20):  # a holder that ends while we look makes us look again
            if self._try_once():
                self._start_heartbeat()
                return
            time.sleep(0.05)
        raise SweepLockedError(f"{self.source}: {self.key}: could not take the lock {self.path}: it changed hands "
                               "20 times while this run looked at it; try again")

    def _try_once(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            fresh = True
        except FileExistsError:
            try:
                fd = os.open(self.path, os.O_RDWR)
            except FileNotFoundError:  # removed by its holder meanwhile
                return False
            fresh = False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise self._refusal(self._read(fd), "it holds the lock") from None
            if not self._same_file(fd):  # its holder removed it after we opened it: look again
                os.close(fd)
                return False
            if not fresh:
                old = self._read(fd)
                if old is not None and old.get("token"):
                    self._judge(fd, old)
                    self.took_over = old
            self.fd = fd
            self._write_record(new=True)
            if self.took_over is not None and not self._still_ours():
                raise self._refusal(self._read_path(), "it took the lock over at the same time")
            return True
        except BaseException:
            self.fd = None
            os.close(fd)
            raise

    def _same_file(self, fd: int) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def _judge(self, fd: int, old: dict[str, Any]) -> None:
        """Raise `SweepLockedError` when the record's holder is alive; return when it is gone."""
        if old.get("host") == self.host:
            pid = old.get("pid")
            if not isinstance(pid, int):
                return
            started = _process_started(pid)
            if started is None:
                return  # no such process: stale
            want = old.get("pid_started")
            if started < 0 or not isinstance(want, (int, float)) or abs(started - want) < 2.0:
                raise self._refusal(old, "it is running")
            return  # the pid was reused by another process: stale
        hb = old.get("heartbeat")
        if not isinstance(hb, (int, float)) or time.time() - hb < STALE_AFTER:
            raise self._refusal(old, "its heartbeat is fresh")
        # stale by this host's clock; a clock that runs ahead must not take a live lock: the
        # holder's heartbeat moves within a period when it is alive
        deadline = time.monotonic() + 1.5 * HEARTBEAT_PERIOD
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self._read(fd)
            if now is not None and (now.get("token"), now.get("heartbeat")) != (old.get("token"), hb):
                raise self._refusal(now, "its heartbeat moves")

    def _refusal(self, rec: dict[str, Any] | None, why: str) -> SweepLockedError:
        if rec is None:
            who = "another process (its record is not written yet)"
            how = "wait for it to end"
        else:
            host, pid = rec.get("host", "?"), rec.get("pid", "?")
            who = (f"another sweep: host {host}, pid {pid}, started {_ago(rec.get('started_at'))}, "
                   f"heartbeat {_ago(rec.get('heartbeat'))}")
            stop = f"kill -INT {pid}" if host == self.host else f"ssh {host} kill -INT {pid}"
            how = (f"wait for it to end, or stop it ({stop}; it ends gracefully), then --resume. If that process "
                   f"is gone, this lock is taken over by the next run (on another host once its heartbeat is "
                   f"{STALE_AFTER:.0f} s old)")
        return SweepLockedError(f"{self.source}: {self.key}: {self.folder} is in use by {who} ({why}); {how}")

    # ------------------------------------------------------------------ the record
    def _read(self, fd: int) -> dict[str, Any] | None:
        for _ in range(3):  # a rewrite in progress: read again
            try:
                data = os.pread(fd, 65536, 0)
            except OSError:
                return None
            doc = _parse(data.decode("utf-8", "replace"))
            if doc is not None:
                return doc
            time.sleep(0.05)
        return None

    def _read_path(self) -> dict[str, Any] | None:
        try:
            return _parse(self.path.read_text(errors="replace"))
        except OSError:
            return None

    def _still_ours(self) -> bool:
        """Across hosts two runs may take a stale lock over at once; the later write wins and the
        other backs off."""
        time.sleep(1.0)
        rec = self._read_path()
        return rec is not None and rec.get("token") == self.record.get("token")

    def _write_record(self, new: bool = False) -> None:
        with self._write_lock:
            if self.fd is None:
                return
            if new:
                self.record = {
                    "host": self.host, "pid": self.pid, "pid_started": _process_started(self.pid),
                    "started_at": time.time(), "heartbeat": time.time(), "token": secrets.token_hex(8),
                    "command": " ".join(sys.argv)[:500], "folder": str(self.folder.resolve()),
                }
            else:
                self.record["heartbeat"] = time.time()
            data = (json.dumps(self.record) + "\n").encode()
            # the new bytes first, then cut the rest: a reader never sees an empty file, and old
            # bytes left after the record are ignored (_parse)
            os.pwrite(self.fd, data, 0)
            os.ftruncate(self.fd, len(data))
            os.fsync(self.fd)

    def _start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_PERIOD):
                try:
                    self._write_record()
                except OSError:  # the file system went away for a moment; the next beat tries again
                    pass

        self._thread = threading.Thread(target=beat, name="rushhpc-sweep-lock", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ release
    def release(self) -> None:
        """Stop the heartbeat and remove the lock file (if it is still ours); idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        with self._write_lock:
            fd, self.fd = self.fd, None
            if fd is None:
                return
            try:
                if self._same_file(fd):
                    rec = self._read(fd)
                    if rec is None or rec.get("token") == self.record.get("token"):
                        os.unlink(self.path)
            finally:
                os.close(fd)  # lets go of the flock
        if self.created_folder:
            try:
                self.folder.rmdir()  # only when nothing was written: a run refused before it started
            except OSError:
                pass

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
