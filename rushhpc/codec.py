"""Task data <-> JSON text stored in Redis.

Task data (xs, ys, extras, conditions) is JSON: readable with ``redis-cli``,
usable from any language, and never executed on read. numpy scalars and
arrays are converted; NaN and infinities become ``null`` (JSON has neither).
"""

from __future__ import annotations

from typing import Any

import orjson

from .errors import RushPayloadError

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _default(obj: Any) -> Any:
    # numpy types orjson does not take natively (e.g. float16, object arrays)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def encode(value: Any, what: str = "value") -> str:
    """Encode one value as JSON text; raise `RushPayloadError` naming ``what`` if impossible.

    Example:
        >>> encode({"x": 1.5})
        '{"x":1.5}'
    """
    try:
        return orjson.dumps(value, default=_default, option=_OPTIONS).decode()
    except (TypeError, orjson.JSONEncodeError) as e:
        raise RushPayloadError(
            f"cannot store {what}: {e}. Task data is stored as JSON; convert it to numbers, "
            "strings, lists or dicts (numpy arrays are converted automatically)."
        ) from None


def decode(text: str | bytes | None) -> Any:
    """Decode JSON text read from Redis (``None`` stays ``None``)."""
    if text is None or text == "":
        return None
    return orjson.loads(text)


def encode_dict(value: Any, what: str) -> str:
    """Encode a mapping (xs, ys, extras); anything else is a clear error."""
    if value is None:
        return ""
    if not isinstance(value, dict):
        raise RushPayloadError(f"{what} must be a dict of name -> value, got {type(value).__name__}")
    return encode(value, what)


def condition(value: Any) -> str:
    """Normalise a failure condition (str, exception or dict) to ``{"message": ...}`` JSON."""
    if isinstance(value, dict):
        d = dict(value)
        d.setdefault("message", str(value))
    elif isinstance(value, BaseException):
        d = {"message": f"{type(value).__name__}: {value}"}
    else:
        d = {"message": "failed" if value is None else str(value)}
    return encode(d, "condition")
