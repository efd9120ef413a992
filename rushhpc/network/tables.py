"""Task records (as the fetch script returns them) -> pandas DataFrames.

One row per task: the ``xs``, ``ys`` and extra fields flattened into columns,
then ``condition`` (failed tasks), ``cancel`` (a failed task that was not evaluated: its
`CancelCause`; only when some task has one), ``worker_id``, ``state``, ``keys`` and the
server-clock timestamps ``created_at``, ``started_at``, ``finished_at``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from rushhpc.core.states import CANCEL_FIELD

if TYPE_CHECKING:
    import pandas as pd

META_COLUMNS = ["condition", "worker_id", "state", "keys", "created_at", "started_at", "finished_at"]
TIME_COLUMNS = ("created_at", "started_at", "finished_at")
LOG_COLUMNS = ["worker_id", "level", "timestamp", "logger", "msg"]
WORKER_COLUMNS = [
    "worker_id", "state", "job_state", "pid", "hostname", "node", "heartbeat", "heartbeat_alive", "heartbeat_pid",
    "launcher", "job_id", "reason", "started_at", "stopped_at", "mem", "mem_retry_of",
]
_PARTS = ("xs", "ys", "xs_extra", "ys_extra")
_EMPTY: dict[bool, pd.DataFrame] = {}  # the empty tables, made once (handed out as copies)


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
        cause = rec.get(CANCEL_FIELD)  # only a failed task has one (and a condition): finished rows skip this
        if cause is not None:
            row[CANCEL_FIELD] = cause
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
        empty = _EMPTY.get(with_state)
        if empty is None:
            cols = [c for c in META_COLUMNS if with_state or c != "state"]
            empty = pd.DataFrame({c: pd.Series(dtype="datetime64[ns, UTC]" if c in TIME_COLUMNS else object)
                                  for c in cols})
            _EMPTY[with_state] = empty
        return empty.copy(deep=False)  # about 1 ms less than building it (fetch_new_tasks with nothing new)
    df = pd.DataFrame.from_records(rows)
    data_cols = [c for c in df.columns if c not in META_COLUMNS and c != CANCEL_FIELD]
    meta = [c for c in META_COLUMNS if c in df.columns and (with_state or c != "state")]
    if "condition" not in df.columns:
        meta.remove("condition") if "condition" in meta else None
    if CANCEL_FIELD in df.columns:
        meta.insert(1 if "condition" in meta else 0, CANCEL_FIELD)
    df = df[data_cols + meta]
    for t in TIME_COLUMNS:
        if t in df.columns:
            df[t] = pd.to_datetime(df[t], unit="s", utc=True)
    return df


_NAT = -(2**63)  # NaT as int64
_INT64 = (-(2**63), 2**63 - 1)
_PER_S = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}  # ticks per second of each datetime unit


class AppendFrame:
    """The finished-task table, growing by appends in time proportional to the new rows.

    The columns live in preallocated buffers (doubling when full) and the table handed
    out is a row slice of a DataFrame over them, so one new task does not copy the
    cached ones (``pd.concat`` does: linear in the cache). Rows are only ever written past
    the end of every table handed out, so those never change; a caller who modifies a
    table gets pandas' copy-on-write copy, never the buffers. The dtypes are those of
    `task_table` on the rows that built the buffers, as ``pd.concat`` kept them. Rows
    that do not fit (a new column, a value of another type, a finer time unit) rebuild
    the table from every cached row with `task_table`. Where pandas does not hand back
    the buffers' memory (checked once per build), it falls back to ``pd.concat``.
    Arrow-backed string columns (pandas with pyarrow) are immutable: they grow by one
    chunk per append (merged every 64) and are replaced in the table, not written.

    Example:
        >>> f = AppendFrame()
        >>> f.extend(rows[:10]).shape[0], f.extend(rows[10:11]).shape[0]
        (10, 11)
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._df: pd.DataFrame | None = None  # fallback mode: the whole table
        self._big: pd.DataFrame | None = None  # over the buffers, capacity rows
        self._cols: list[tuple[str, str, Any, Any]] = []  # (name, kind, buffer, extra)
        self._names: frozenset[str] = frozenset()
        self._n = 0
        self._view: pd.DataFrame | None = None

    def __len__(self) -> int:
        return self._n

    def extend(self, new_rows: list[dict[str, Any]]) -> pd.DataFrame:
        """Append rows (flat, as `flatten` makes them) to `rows` and the table; returns the table."""
        self.rows.extend(new_rows)
        view = self._view
        if view is not None:
            if len(self.rows) == self._n:
                return view
            pending = self.rows[self._n :]  # rows may also be added without the table (fetch_new_tasks)
            if self._big is not None:
                if self._append(pending):
                    return self._view
            elif self._n and self._df is not None:  # no buffers on this pandas: concat
                import pandas as pd

                self._df = pd.concat([self._df, task_table(pending, with_state=False)], ignore_index=True)
                self._n = len(self._df)
                self._view = self._df
                return self._df
        self._build()
        assert self._view is not None
        return self._view

    # ------------------------------------------------------------------ build
    def _build(self) -> None:
        import numpy as np
        import pandas as pd

        df = task_table(self.rows, with_state=False)
        n = len(df)
        self._n, self._df, self._big, self._cols = n, df, None, []
        self._view = df
        if n == 0:
            return
        cap = max(1024, 2 * n)
        cols: list[tuple[str, str, Any, Any]] = []
        arrays: dict[str, Any] = {}
        for name in df.columns:
            s = df[name]
            dt = s.dtype
            if isinstance(dt, pd.DatetimeTZDtype) and str(dt.tz) == "UTC":
                buf = np.full(cap, _NAT, dtype=np.int64)
                buf[:n] = s.array.asi8
                try:
                    arr = pd.arrays.DatetimeArray._simple_new(buf.view(f"M8[{dt.unit}]"), dtype=dt)
                except Exception:  # noqa: BLE001 - a pandas without it: the concat fallback
                    return
                cols.append((name, "M", buf, dt.unit))
            elif isinstance(dt, pd.StringDtype) and dt.storage == "pyarrow":
                # Arrow arrays are immutable: chunks, the new rows one more chunk each time
                import pyarrow as pa

                data = s.array.__arrow_array__()
                pad = pa.nulls(cap, data.type)  # sliced (no copy) to fill the column up to the capacity
                chunks = list(data.chunks)
                arr = dt.construct_array_type()(pa.chunked_array([*chunks, pad.slice(0, cap - n)], type=data.type),
                                                dtype=dt)
                cols.append((name, "A", None, {"chunks": chunks, "pad": pad, "type": data.type, "dtype": dt}))
            elif isinstance(dt, pd.StringDtype) and dt.storage == "python":
                buf = np.full(cap, dt.na_value, dtype=object)
                buf[:n] = s.to_numpy(dtype=object, na_value=dt.na_value)
                arr = pd.arrays.StringArray(buf, dtype=dt)
                cols.append((name, "S", buf, dt.na_value))
            elif isinstance(dt, np.dtype) and dt in (np.float64, np.int64, np.bool_, np.object_):
                kind = {"f": "f", "i": "i", "b": "b", "O": "O"}[dt.kind]
                fill: Any = {"f": np.nan, "i": 0, "b": False, "O": None}[kind]
                buf = np.full(cap, fill, dtype=dt)
                buf[:n] = s.to_numpy()
                arr = buf
                cols.append((name, kind, buf, None))
            else:  # another extension type: keep the concat path
                return
            arrays[name] = arr
        big = pd.DataFrame(arrays, copy=False)
        if not self._shares(big, cols, n):
            return
        self._big, self._cols, self._names = big, cols, frozenset([*df.columns, "state"])  # state: not shown
        self._df = None
        self._view = big.iloc[:n]

    @staticmethod
    def _shares(big: pd.DataFrame, cols: list[tuple[str, str, Any, Any]], n: int) -> bool:
        """True when writing a buffer shows in ``big`` (pandas kept the memory)."""
        import numpy as np

        for i, (_, kind, buf, _extra) in enumerate(cols):
            if kind == "A":  # replaced whole on every append, nothing to share
                continue
            old = buf[n]
            probe: Any = {"M": 12345, "S": "\x00probe", "O": "\x00probe", "f": 0.5, "i": 7, "b": True}[kind]
            buf[n] = probe
            got = big.iat[n, i]
            buf[n] = old
            if kind == "M":
                ok = got.value == 12345 * {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}.get(str(cols[i][3]), 0)
            else:
                ok = got == probe or (isinstance(got, np.generic) and got.item() == probe)
            if not ok:
                return False
        return True

    # ------------------------------------------------------------------ append
    def _append(self, new_rows: list[dict[str, Any]]) -> bool:
        """Write the new rows into the buffers; False when they do not fit (rebuild)."""
        k = len(new_rows)
        n = self._n
        if not k:
            return True
        assert self._big is not None
        if n + k > len(self._big):
            return False
        names = self._names
        for r in new_rows:
            if not names.issuperset(r):
                return False
        staged: list[tuple[Any, Any]] = []
        times: list[tuple[Any, Any, list]] = []  # converted together below: one to_datetime call
        arrow: list[tuple[int, Any, list]] = []
        for col_index, (name, kind, buf, extra) in enumerate(self._cols):
            vals = [r.get(name) for r in new_rows]
            if not _FITS[kind](vals):
                return False
            if kind == "M":
                times.append((buf, extra, vals))
            elif kind == "A":
                arrow.append((col_index, extra, vals))
            else:
                staged.append((buf, _column_values(kind, extra, vals)))
        if times:
            segments = _time_segments(times, k)
            if segments is None:
                return False  # a column's unit would lose precision
            staged.extend(segments)
        for buf, out in staged:
            buf[n : n + k] = out
        if arrow:
            self._append_arrow(arrow, n, k)
        self._n = n + k
        self._view = self._big.iloc[: self._n]
        return True

    def _append_arrow(self, arrow: list[tuple[int, Any, list]], n: int, k: int) -> None:
        """Arrow string columns are immutable: one more chunk each, and the column replaced."""
        import pyarrow as pa

        assert self._big is not None
        cap = len(self._big)
        for col_index, extra, vals in arrow:
            chunks = extra["chunks"]
            chunks.append(pa.array(vals, type=extra["type"]))
            if len(chunks) > 64:  # many small chunks make every later operation slow
                chunks[:] = [pa.concat_arrays(chunks)]
            col = pa.chunked_array([*chunks, extra["pad"].slice(0, cap - n - k)], type=extra["type"])
            self._big.isetitem(col_index, extra["dtype"].construct_array_type()(col, dtype=extra["dtype"]))


# Whether new values fit a buffer of each kind (AppendFrame._cols), checked before anything is
# written: a value of another type rebuilds the table. Plain loops: this runs on every fetch.
def _numbers(vals: list) -> bool:
    for v in vals:
        if not (v is None or type(v) is float or type(v) is int):
            return False
    return True


def _ints(vals: list) -> bool:
    for v in vals:
        if type(v) is not int or not _INT64[0] <= v <= _INT64[1]:
            return False
    return True


def _bools(vals: list) -> bool:
    for v in vals:
        if type(v) is not bool:
            return False
    return True


def _strings(vals: list) -> bool:
    for v in vals:
        if not (v is None or type(v) is str):
            return False
    return True


def _anything(vals: list) -> bool:
    return True


_FITS = {"f": _numbers, "M": _numbers, "i": _ints, "b": _bools, "S": _strings, "A": _strings, "O": _anything}


def _column_values(kind: str, extra: Any, vals: list) -> Any:
    """The values to write into a numpy buffer of this kind (checked by `_FITS` first)."""
    import numpy as np

    if kind == "f":
        return np.array([np.nan if v is None else v for v in vals], dtype=np.float64)
    if kind == "i":
        return np.array(vals, dtype=np.int64)
    if kind == "b":
        return np.array(vals, dtype=bool)
    if kind == "S":
        return [extra if v is None else v for v in vals]  # extra: the column's NA value
    return vals


def _time_segments(times: list[tuple[Any, Any, list]], k: int) -> list[tuple[Any, Any]] | None:
    """(buffer, int64 ticks in the column's unit) for every time column, converted in one
    ``to_datetime`` call; None when a column's unit is coarser than a value (rebuild)."""
    import numpy as np
    import pandas as pd

    flat = [np.nan if v is None else v for _, _, vals in times for v in vals]
    t = pd.to_datetime(np.array(flat, dtype=np.float64), unit="s")  # naive: the same epoch values as UTC
    i8, have = t.asi8, t.unit
    out: list[tuple[Any, Any]] = []
    for i, (buf, unit, _) in enumerate(times):
        seg = i8[i * k : (i + 1) * k]
        if unit != have:
            nat = seg == _NAT
            if _PER_S[have] > _PER_S[unit]:  # the column is coarser: exact values only
                f = _PER_S[have] // _PER_S[unit]
                if (seg[~nat] % f).any():
                    return None
                seg = np.where(nat, _NAT, seg // f)
            else:
                seg = np.where(nat, _NAT, seg * (_PER_S[unit] // _PER_S[have]))
        out.append((buf, seg))
    return out
