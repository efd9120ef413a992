"""The output folder: the journal written as results arrive, and the files made from it.

::

    OUTPUT/
      config.yaml     the resolved config (overrides applied, defaults filled in, absolute paths)
      state.json      networks used, elapsed time, status (for --resume)
      journal.jsonl   one JSON line per evaluation, appended and flushed as each result arrives
      results.csv     the results table (and results.parquet when pyarrow is installed)
      best.json       the best evaluation
      summary.json    status, reason, counts, exit code, and the table's column names

The journal is the source of truth: every other file is rebuilt from it, and a sweep whose
Redis is gone resumes from it alone. A line cut short by a crash is dropped on the next open.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    import pandas as pd

META_COLUMNS = ("state", "error", "worker_id", "node", "started_at", "finished_at", "runtime", "attempts", "key")
META_PREFIX = "sweep_"
FIDELITY_COLUMNS = ("config", "fidelity", "rung", "bracket")  # asha: one row per evaluation of a configuration at a rung
OUTPUT_PREFIX = "out_"


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    item = getattr(o, "item", None)
    if callable(item):
        return item()
    return str(o)


def _finite(obj: Any) -> Any:
    # task data keeps NaN/inf since issue 20 (codec.py); the journal stays strict JSON, null as before
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    return [_finite(v) for v in obj] if isinstance(obj, (list, tuple)) else obj


def dumps(obj: Any) -> str:
    return json.dumps(_finite(obj), default=_json_default, allow_nan=False, separators=(",", ":"))


class Journal:
    """Append-only record of evaluations (JSON lines), safe against a crash mid-write."""

    def __init__(self, path: Path):
        self.path = path
        self.records: list[dict[str, Any]] = []
        if path.exists():
            self._load()
        self._f = open(path, "a", encoding="utf-8")

    def _load(self) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a line cut short by a crash: drop it before appending
            with open(self.path, "r+b") as f:
                f.truncate(end)
            data = data[:end]
        for line in data.decode("utf-8").splitlines():
            if line.strip():
                try:
                    self.records.append(json.loads(line))
                except ValueError:
                    continue

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        lines = []
        for r in records:
            self.records.append(r)
            lines.append(dumps(r) + "\n")
        if lines:
            self._f.write("".join(lines))
            self._f.flush()

    def close(self) -> None:
        self._f.close()


def column_names(params: list[str], outputs: list[str]) -> dict[str, dict[str, str]]:
    """Table column of every parameter, meta field and output.

    Parameters keep their exact names. A meta column whose name a parameter has is prefixed
    with ``sweep_`` (repeatedly, until free); an output whose name a parameter or meta column
    has is prefixed with ``out_`` (repeatedly). ``eval`` counts as a meta column.
    """
    taken = set(params)
    meta = {}
    for m in ("eval", *META_COLUMNS):
        name = m
        while name in taken:
            name = META_PREFIX + name
        meta[m] = name
        taken.add(name)
    outs = {}
    for o in outputs:
        name = o
        while name in taken:
            name = OUTPUT_PREFIX + name
        outs[o] = name
        taken.add(name)
    return {"parameters": {p: p for p in params}, "meta": meta, "outputs": outs}


def output_names(records: list[dict[str, Any]], metric: str | list[str]) -> list[str]:
    """The output columns: the metric (or the metrics, in their order) first, then the others as they appear."""
    metrics = [metric] if isinstance(metric, str) else list(metric)
    names: dict[str, None] = {}
    seen: set[str] = set()
    for r in records:
        for k in r.get("outputs") or {}:
            if k in metrics:
                seen.add(k)
            else:
                names.setdefault(k, None)
    return [m for m in metrics if m in seen] + list(names)


def build_table(records: list[dict[str, Any]], params: list[str], metric: str | list[str]) -> tuple["pd.DataFrame", dict]:
    """The results table (one row per evaluation, by eval id) and its column map."""
    import pandas as pd

    records = sorted(records, key=lambda r: r["eval"])
    outs = output_names(records, metric)
    cols = column_names(params, outs)
    meta, ocol = cols["meta"], cols["outputs"]
    fid = [m for m in FIDELITY_COLUMNS if any(m in r for r in records)]  # asha's columns, after eval
    for m in fid:
        name = m
        while name in set(params) | set(meta.values()) | set(ocol.values()):
            name = META_PREFIX + name
        meta[m] = name
    rows = []
    for r in records:
        row: dict[str, Any] = {meta["eval"]: r["eval"]}
        for m in fid:
            row[meta[m]] = r.get(m)
        ps = r.get("params") or {}
        for p in params:
            row[p] = ps.get(p)
        o = r.get("outputs") or {}
        for name in outs:
            row[ocol[name]] = o.get(name)
        row[meta["state"]] = r.get("state")
        row[meta["error"]] = r.get("error")
        row[meta["worker_id"]] = r.get("worker_id")
        row[meta["node"]] = r.get("node")  # where it ran (SLURMD_NODENAME, else the host name)
        row[meta["started_at"]] = r.get("started_at")
        row[meta["finished_at"]] = r.get("finished_at")
        row[meta["runtime"]] = r.get("runtime")
        row[meta["attempts"]] = r.get("attempts")
        row[meta["key"]] = r.get("key")
        rows.append(row)
    order = [meta["eval"], *(meta[m] for m in fid), *params, *(ocol[o] for o in outs), *(meta[m] for m in META_COLUMNS)]
    df = pd.DataFrame(rows, columns=order)
    for c in [*params, *(ocol[o] for o in outs)]:
        vals = [r[c] for r in rows if r[c] is not None]
        if vals and all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
            df[c] = pd.array([r[c] for r in rows], dtype="Int64")  # ints stay ints beside empty cells
    for t in ("started_at", "finished_at"):
        df[meta[t]] = pd.to_datetime(df[meta[t]], unit="s", utc=True)
    for m in ("runtime",):
        df[meta[m]] = pd.to_numeric(df[meta[m]], errors="coerce")
    df[meta["attempts"]] = df[meta["attempts"]].astype("Int64")
    df[meta["eval"]] = df[meta["eval"]].astype("int64")
    if "rung" in fid:
        df[meta["rung"]] = df[meta["rung"]].astype("Int64")
    return df, cols


def write_tables(out: Path, df: "pd.DataFrame") -> list[str]:
    """results.csv, and results.parquet when pyarrow is there; returns the files written."""
    written = []
    tmp = out / f".results.csv.{os.getpid()}.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, out / "results.csv")
    written.append("results.csv")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return written
    pq = df.copy()
    for c in pq.columns:
        if pq[c].dtype == object:
            kinds = {type(v) for v in pq[c] if v is not None and not (isinstance(v, float) and math.isnan(v))}
            if len(kinds) > 1 or (kinds and not kinds <= {str, int, float, bool}):
                pq[c] = [None if v is None else str(v) for v in pq[c]]
    tmp = out / f".results.parquet.{os.getpid()}.tmp"
    try:
        pq.to_parquet(tmp, index=False)
        os.replace(tmp, out / "results.parquet")
        written.append("results.parquet")
    except Exception:  # noqa: BLE001 - the CSV is the result; Parquet is a convenience
        tmp.unlink(missing_ok=True)
    return written


def best_document(best: dict[str, Any] | None, metric: str, direction: str) -> dict[str, Any] | None:
    if best is None:
        return None
    return {
        "eval": best["eval"], "metric": metric, "direction": direction, "value": best["value"],
        "params": best.get("params"), "outputs": best.get("outputs"), "worker_id": best.get("worker_id"),
        "finished_at": best.get("finished_at"), "key": best.get("key"),
        **{m: best[m] for m in FIDELITY_COLUMNS if m in best},
    }


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, default=_json_default, indent=2) + "\n")
