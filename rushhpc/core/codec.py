"""Task data <-> JSON text stored in Redis.

Task data (xs, ys, extras, conditions) is JSON: readable with ``redis-cli``, usable from
any language, and never executed on read. numpy scalars and arrays are converted; tuples
are stored as lists. Non-finite floats round-trip: NaN, inf and -inf are written as the
tokens ``NaN``, ``Infinity`` and ``-Infinity`` (what Python's ``json`` module writes and
reads), so an objective's ``float("inf")`` comes back as ``inf``, not ``None``. A set, or
any other type JSON cannot hold, is refused with a `RushTypeError` naming where it is.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from rushhpc.core.states import TaskState
from rushhpc.errors import RushPayloadError, RushTypeError

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class _Refused(TypeError):
    """A value `_default` will not convert (a set): `encode` finds where it is."""


def _default(obj: Any) -> Any:
    # numpy types orjson does not take natively (e.g. float16, object arrays)
    if isinstance(obj, (set, frozenset)):
        # a list would come back as a list: silently different from what was stored
        raise _Refused(type(obj).__name__)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _has_non_finite(v: Any) -> bool:
    """Whether ``v`` holds a NaN or an infinity anywhere (floats, numpy scalars and arrays)."""
    if isinstance(v, float):
        return not math.isfinite(v)
    if isinstance(v, dict):
        return any(_has_non_finite(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return any(_has_non_finite(x) for x in v)
    if hasattr(v, "dtype") and getattr(v.dtype, "kind", "") in "fc":
        try:
            import numpy as np

            return not bool(np.isfinite(v).all())
        except (ImportError, TypeError):
            return False
    if hasattr(v, "dtype") and getattr(v.dtype, "kind", "") == "O" and hasattr(v, "tolist"):
        return _has_non_finite(v.tolist())
    return False


def _plain(v: Any) -> Any:
    """``v`` with numpy values as Python ones (their NaN and infinities kept), for `json.dumps`."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "dtype") and hasattr(v, "tolist"):
        return _plain(v.tolist())
    return v


def _leaf(obj: Any) -> Any:
    """What orjson makes of a value `json` does not know (datetime, UUID, dataclass, ...)."""
    return orjson.loads(orjson.dumps(obj, default=_default, option=_OPTIONS))


def _where(value: Any, what: str) -> tuple[str, Any] | None:
    """The path (``xs['a'][0]``) and value of the first part of ``value`` that cannot be stored."""
    if isinstance(value, dict):
        for k, x in value.items():
            found = _where(x, f"{what}[{k!r}]")
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for i, x in enumerate(value):
            found = _where(x, f"{what}[{i}]")
            if found:
                return found
        return None
    if isinstance(value, (set, frozenset)):
        return what, value
    try:
        orjson.dumps(value, default=_default, option=_OPTIONS)
    except TypeError:
        return what, value
    return None


def _type_error(value: Any, what: str, error: Exception) -> RushTypeError:
    found = _where(value, what)
    path, bad = found if found else (what, value)
    kind = type(bad).__name__
    if isinstance(bad, (set, frozenset)):
        return RushTypeError(
            f"cannot store {path}: {path} is a {kind}, and task data is stored as JSON, which has no sets (it would "
            "come back as a list). Store sorted(...) or list(...) of it, and make it a set again where you read it."
        )
    return RushTypeError(
        f"cannot store {path}: {path} is a {kind}, which task data cannot hold ({error}). Task data is stored as "
        "JSON: convert it to numbers, strings, lists or dicts (numpy arrays are converted automatically)."
    )


def encode(value: Any, what: str = "value") -> str:
    """Encode one value as JSON text; a type JSON cannot hold is a `RushTypeError` naming where it is.

    Example:
        >>> encode({"x": 1.5, "y": float("inf")})
        '{"x":1.5,"y":Infinity}'
    """
    try:
        text = orjson.dumps(value, default=_default, option=_OPTIONS)
    except TypeError as e:  # orjson.JSONEncodeError is a TypeError; so is _Refused
        raise _type_error(value, what, e) from None
    # orjson writes NaN and infinities as null: look closer only when a null is there at all
    if b"null" in text and _has_non_finite(value):
        try:
            return json.dumps(_plain(value), allow_nan=True, ensure_ascii=False, separators=(",", ":"),
                              default=_leaf)
        except (TypeError, ValueError) as e:
            raise RushPayloadError(f"cannot store {what}: {e}") from None
    return text.decode()


def loads(text: str | bytes) -> Any:
    """Parse JSON text read from Redis: orjson, and Python's ``json`` for the text that holds the
    ``NaN``/``Infinity`` tokens `encode` writes for non-finite floats (orjson refuses them).

    Example:
        >>> loads('{"y":-Infinity}')
        {'y': -inf}
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def decode(text: str | bytes | None) -> Any:
    """Decode JSON text read from Redis (``None`` stays ``None``)."""
    if text is None or text == "":
        return None
    return loads(text)


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
        d = {"message": TaskState.FAILED.value if value is None else str(value)}
    return encode(d, "condition")
