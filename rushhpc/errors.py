"""Exceptions raised by rushhpc.

Every error says what went wrong *and* what to do about it, so that a user
reading a traceback on a login node knows the fix without reading our code.
"""

from __future__ import annotations


class RushError(Exception):
    """Base class of every error rushhpc raises."""


class RushConfigError(RushError):
    """Bad configuration: unreachable Redis, wrong password, bad network id, ...

    Example:
        >>> try:
        ...     rsh(config="redis://127.0.0.1:1")
        ... except RushConfigError as e:
        ...     print(e)  # names host:port and how to fix it
    """


class RushTimeoutError(RushError):
    """A wait (`wait_for_workers`, `wait_for_tasks`) ran past its deadline."""


class RushPayloadError(RushError):
    """A value cannot be stored: unpicklable worker loop, too large, not JSON-able."""


class RushTypeError(RushPayloadError, TypeError):
    """A value of task data has a type JSON cannot hold (a set, an arbitrary object); the
    message names where it is (``xs['tags']``) and what to store instead.

    Example:
        >>> rush.push_tasks([{"tags": {"a", "b"}}])
        Traceback (most recent call last):
        RushTypeError: xs['tags'] is a set: ... store sorted(...) or list(...) of it ...
    """


class RushWorkerError(RushError):
    """A worker could not be started, or died before it registered."""


class RushNetworkLostError(RushError):
    """The network's keys are gone from Redis: Redis restarted without persistence (or lost its
    data), or another manager reset the network. Tasks not in the results already fetched are lost."""
