"""The invariant every fault test checks once the dust settles (issue 9)."""

from __future__ import annotations

from typing import Any

from support import wait_until

FINAL = {"terminated", "failed", "killed", "lost"}


def settle(rush: Any, timeout: float = 60) -> None:
    """Stop every worker, wait until none runs, and every process this manager started has ended."""
    rush.stop_workers(type="kill")
    wait_until(lambda: rush.running_worker_ids == [] and rush.worker_ids_in("pending") == [], timeout,
               what="every worker to stop")
    for launcher in rush.launchers():
        procs = getattr(launcher, "processes", {})
        wait_until(lambda procs=procs: all(p.poll() is not None for p in procs.values()), timeout,
                   what="every worker process to end")


def check(rush: Any, expected_tasks: int, finished_at_least: int = 0) -> dict[str, int]:
    """Every task in exactly one state; the count is what was pushed or created; no finished result
    counted twice; every worker that is gone has a final state and a reason. Returns the counts."""
    df = rush.fetch_tasks_with_state()
    assert df["keys"].is_unique, "a task appears in two states"
    assert len(df) == expected_tasks == rush.n_tasks, (len(df), expected_tasks, rush.n_tasks)
    counts = df["state"].value_counts().to_dict()
    assert sum(counts.values()) == expected_tasks
    finished = rush.connector.lrange(rush.keys.finished, 0, -1)
    assert len(finished) == len(set(finished)), "a finished result was counted twice"
    assert counts.get("finished", 0) == len(finished) >= finished_at_least
    for w in rush.worker_rows():
        if w["state"] not in ("running", "pending"):
            assert w["state"] in FINAL and w["reason"], w
    return counts
