"""Task records (as the fetch script returns them) -> pandas DataFrames.

One row per task: the ``xs``, ``ys`` and extra fields flattened into columns,
then ``condition`` (failed tasks), ``worker_id``, ``state``, ``keys`` and the
server-clock timestamps ``created_at``, ``started_at``, ``finished_at``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    import pandas as pd

META_COLUMNS = ["condition", "worker_id", "state", "keys", "created_at", "started_at", "finished_at"]
TIME_COLUMNS = ("created_at", "started_at", "finished_at")
LOG_COLUMNS = ["worker_id", "level", "timestamp", "logger", "msg"]
WORKER_COLUMNS = [
    "worker_id", "state", "job_state", "pid", "hostname", "node", "heartbeat", "heartbeat_alive", "heartbeat_pid",
    "launcher", "job_id", "reason", "started_at", "stopped_at",
]
_PARTS = ("xs", "ys", "xs_extra", "ys_extra")


def flatten(rec: dict[str, Any]) -> dict[str, Any]:
    """One task record -> one flat row (xs/ys/extras merged, condition as its message)."""
    row: dict[str, Any] = {}
    for part in _PARTS:
        d = rec.get(part)
        if d:
            row.update(d)
    c = rec.get("condition")
    if c is not None:
        row["condition"] = c.get("message") if isinstance(c, dict) else c
    row["worker_id"] = rec.get("worker_id")
    row["state"] = rec["state"]
    row["keys"] = rec["keys"]
    for t in TIME_COLUMNS:
        row[t] = rec.get(t)
    return row


def task_table(rows: Iterable[dict[str, Any]], with_state: bool = True) -> pd.DataFrame:
    """Flat rows -> DataFrame with the data columns first and the documented meta columns last."""
    import pandas as pd  # imported on first use: workers rarely build tables

    rows = list(rows)
    if not rows:
        cols = [c for c in META_COLUMNS if with_state or c != "state"]
        return pd.DataFrame({c: pd.Series(dtype="datetime64[ns, UTC]" if c in TIME_COLUMNS else object) for c in cols})
    df = pd.DataFrame.from_records(rows)
    data_cols = [c for c in df.columns if c not in META_COLUMNS]
    meta = [c for c in META_COLUMNS if c in df.columns and (with_state or c != "state")]
    if "condition" not in df.columns:
        meta.remove("condition") if "condition" in meta else None
    df = df[data_cols + meta]
    for t in TIME_COLUMNS:
        if t in df.columns:
            df[t] = pd.to_datetime(df[t], unit="s", utc=True)
    return df
