"""The live progress display: a rich panel on a terminal, plain periodic lines elsewhere
(an ``sbatch`` output file, a pipe, a notebook). Written to stderr; the summary goes to stdout."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

from rushhpc.core.states import SweepStatus, TaskState


@dataclass
class Stats:
    done: int = 0
    failed: int = 0
    budget: int | None = None
    walltime: float | None = None
    elapsed: float = 0.0  # of this run (walltime counts per run)
    run_elapsed: float = 0.0
    run_done: int = 0  # evaluations completed in this run
    best: float | None = None
    metric: str = "y"
    workers_alive: int = 0
    workers_wanted: int = 0
    running: int = 0
    queued: int = 0
    phase: str = SweepStatus.RUNNING.value
    front: int | None = None  # several metrics: the Pareto front's size and hypervolume instead of the best
    hypervolume: float | None = None

    @property
    def rate(self) -> float:
        return self.run_done / self.run_elapsed if self.run_elapsed > 0 else 0.0


def _dur(s: float) -> str:
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.6g}"


def plain_line(st: Stats) -> str:
    budget = f"/{st.budget}" if st.budget is not None else ""
    best = f"{st.best:.6g}" if st.best is not None else "-"
    shown = f"best {st.metric}={best}" if st.front is None else f"front {st.front}, hypervolume {_num(st.hypervolume)}"
    wall = f" of {_dur(st.walltime)}" if st.walltime else ""
    return (f"[{time.strftime('%H:%M:%S')}] {st.phase}: {st.done}{budget} evaluations, {st.failed} failed, "
            f"{shown}, workers {st.workers_alive}/{st.workers_wanted}, "
            f"{st.running} running, {st.rate:.2f} eval/s, elapsed {_dur(st.elapsed)}{wall}")


class Display:
    """``mode``: auto (rich on a terminal, else plain), rich, plain, none."""

    def __init__(self, mode: str, interval: float, title: str, stream: Any = None):
        self.stream = stream or sys.stderr
        self.interval = interval
        self.title = title
        self.last = 0.0
        self.live: Any = None
        if mode == "auto":
            tty = getattr(self.stream, "isatty", lambda: False)()
            mode = "rich" if tty else "plain"
        if mode == "rich":
            try:
                from rich.console import Console
                from rich.live import Live
            except ImportError:
                mode = "plain"
            else:
                self.console = Console(file=self.stream)
                self.live = Live(console=self.console, refresh_per_second=4, transient=False)
                self.live.start()
        self.mode = mode

    def _panel(self, st: Stats) -> Any:
        from rich.panel import Panel
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        t = Table.grid(padding=(0, 2))
        t.add_column(style="bold")
        t.add_column()
        if st.budget:
            bar = Table.grid(padding=(0, 1))
            bar.add_row(ProgressBar(total=st.budget, completed=min(st.done, st.budget), width=40),
                        f"{st.done}/{st.budget}")
            t.add_row("evaluations", bar)
        else:
            t.add_row("evaluations", str(st.done))
        t.add_row(TaskState.FAILED.value, f"[red]{st.failed}[/red]" if st.failed else "0")
        if st.front is None:
            t.add_row(f"best {st.metric}", f"{st.best:.6g}" if st.best is not None else "-")
        else:
            t.add_row(f"Pareto front ({st.metric})", f"{st.front} evaluation(s), hypervolume {_num(st.hypervolume)}")
        t.add_row("workers alive", f"{st.workers_alive}/{st.workers_wanted}  ({st.running} running, {st.queued} queued)")
        t.add_row("evaluations/s", f"{st.rate:.2f}")
        wall = f" of {_dur(st.walltime)}" if st.walltime else ""
        t.add_row("elapsed", _dur(st.elapsed) + wall)
        return Panel(t, title=f"{self.title}: {st.phase}", expand=False)

    def update(self, st: Stats, force: bool = False) -> None:
        if self.mode == "none":
            return
        if self.mode == "rich":
            if self.live is not None:
                self.live.update(self._panel(st))
            return
        now = time.monotonic()
        if force or now - self.last >= self.interval:
            self.last = now
            print(plain_line(st), file=self.stream, flush=True)

    def message(self, text: str) -> None:
        if self.mode == "none":
            return
        if self.mode == "rich":
            self.console.print(text)
        else:
            print(text, file=self.stream, flush=True)

    def close(self, st: Stats | None = None) -> None:
        if self.mode == "rich" and self.live is not None:
            if st is not None:
                self.live.update(self._panel(st))
            self.live.stop()
            self.live = None
        elif self.mode == "plain" and st is not None:
            self.update(st, force=True)
