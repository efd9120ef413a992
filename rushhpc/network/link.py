"""What a part of a network view reads of the view it belongs to.

The parts (`rushhpc.network.tasks.TaskStore`, `rushhpc.network.workers.Workers`,
`rushhpc.network.launches.Launches`) hold the view they belong to and read its connection
on each call: a `reconnect` (or a test that swaps the connection) reaches every part at once.
"""

from __future__ import annotations

from typing import Protocol as Interface

from rushhpc.store.connection import RedisClient, RedisConfig
from rushhpc.store.keys import Keys
from rushhpc.store.protocol import Protocol


class Link(Interface):
    """The view's identity and connection, as its parts see it.

    Example:
        >>> TaskStore(network).view.keys.queued
        '{sweep-1}:queued'
    """

    network_id: str
    config: RedisConfig
    keys: Keys
    connector: RedisClient
    protocol: Protocol
