"""Forwarding of one object's members to a part it holds: composition with the part's API.

The network view (`rushhpc.network.view.Network`) is made of parts (tasks, workers, launch
records) and the manager (`rushhpc.manager.rush.Rush`) holds a network view. Each keeps the
public names it always had by declaring, one line per member, which part answers it:

    push_tasks = method("tasks", TaskStore.push_tasks)
    n_tasks = prop("tasks", TaskStore.n_tasks)

The forwarded member keeps the part's signature, type (mypy sees the part's) and docstring
(``help(Rush.push_tasks)`` shows it); a call costs one Python call more, well under a
microsecond beside a Redis round trip.

Example:
    >>> class Shelf:
    ...     def __init__(self): self.box = Box()
    ...     put = method("box", Box.put)
"""

from __future__ import annotations

import functools
import operator
from typing import Any, Callable, Concatenate, ParamSpec, TypeVar, cast

P = ParamSpec("P")
R = TypeVar("R")


def method(part: str, fn: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[Any, P], R]:
    """A method that calls ``fn``'s namesake on ``self.<part>``, with ``fn``'s signature and docstring.
    ``part`` may be a dotted path (``"network.tasks"``: the part of a part).

    Example:
        >>> push_tasks = method("tasks", TaskStore.push_tasks)   # in a class body
    """
    name = fn.__name__
    get_part = operator.attrgetter(part)

    @functools.wraps(fn)
    def forward(self: Any, *args: P.args, **kwargs: P.kwargs) -> R:
        return cast(R, getattr(get_part(self), name)(*args, **kwargs))

    return forward


def prop(part: str, p: Callable[[Any], R]) -> R:
    """A read-only property that reads ``p``'s namesake on ``self.<part>`` (``p``: the part's
    property, as its class gives it; ``part`` may be dotted). Typed as the property's value, which
    is what an instance reads.

    Example:
        >>> n_tasks = prop("tasks", TaskStore.n_tasks)   # in a class body
    """
    if not isinstance(p, property) or p.fget is None:
        raise TypeError(f"prop() forwards a property, got {p!r}")
    name = p.fget.__name__
    get_part = operator.attrgetter(part)

    def get(self: Any) -> Any:
        return getattr(get_part(self), name)

    get.__name__ = name
    get.__doc__ = p.__doc__
    return cast(R, property(get))
