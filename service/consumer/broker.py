"""Connecting to RabbitMQ and declaring the spec's topology, idempotently."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractExchange,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aio_pika.connection import make_url
from yarl import URL

from contracts import routing
from service.config import BrokerSettings

log = structlog.get_logger()


async def connect(settings: BrokerSettings, purpose: str) -> AbstractRobustConnection:
    """A robust connection named after this host and its purpose (visible in the management UI).

    With ``failover_urls``, the first URL that answers is used, and after a lost connection
    every reconnect attempt moves on to the next URL of the cluster (:class:`_Failover`).
    """
    # as aio_pika.connect_robust does: the settings go into each URL's query, which is what
    # aiormq reads (a heartbeat passed any other way is silently the default 60 s)
    urls = [
        make_url(
            url, heartbeat=settings.heartbeat_s, reconnect_interval=settings.reconnect_interval_s
        )
        for url in settings.urls()
    ]
    last_error: Exception | None = None
    for index, url in enumerate(urls):
        connection = aio_pika.RobustConnection(
            url,
            client_properties={
                "connection_name": f"benchmark-worker {purpose} @{socket.gethostname()}"
            },
        )
        try:
            await connection.connect()
        except CONNECTION_ERRORS as exc:
            last_error = exc
            with contextlib.suppress(Exception):
                await connection.close()
            log.warning("broker_unreachable", purpose=purpose, url_index=index, error=repr(exc))
            continue
        if len(urls) > 1:
            _Failover(connection, urls, index, settings.reconnect_interval_s).start()
        return connection
    assert last_error is not None
    raise last_error


CONNECTION_ERRORS = (ConnectionError, OSError, aiormq.exceptions.AMQPConnectionError)


class _Failover:
    """Moves a robust connection to the next URL while it is down.

    aio-pika's robust connection reconnects to ``connection.url`` every reconnect interval;
    this watcher sets that to the next URL of the list when the connection is lost and again
    each interval it stays down, so a cluster node that is gone for good is left behind.
    """

    def __init__(
        self, connection: aio_pika.RobustConnection, urls: list[URL], index: int, interval_s: float
    ) -> None:
        self._connection = connection
        self._urls = urls
        self._index = index
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._connection.close_callbacks.add(self._lost)
        self._task = asyncio.create_task(self._while_down())

    def _lost(self, *_: object) -> None:
        if not getattr(self._connection, "_close_called", False):  # not our own close()
            self._next()

    def _next(self) -> None:
        self._index = (self._index + 1) % len(self._urls)
        self._connection.url = self._urls[self._index]
        log.info("broker_failover", url_index=self._index, host=self._connection.url.host,
                 port=self._connection.url.port)  # fmt: skip

    async def _while_down(self) -> None:
        connection = self._connection
        while not connection.is_closed:
            await asyncio.sleep(self._interval_s)
            if not connection.connected.is_set() and not connection.is_closed:
                self._next()  # the last attempt failed (or is under way): try the next node


@dataclass
class Topology:
    """Strong references to the declared objects (robust channels restore them on reconnect)."""

    requests: AbstractQueue
    dead_letters: AbstractQueue
    events: AbstractExchange


def request_queue_arguments(settings: BrokerSettings) -> dict[str, Any]:
    """The requests queue's arguments, from the one builder clients use too (contracts.routing)."""
    return routing.request_queue_arguments(settings.dead_letter_exchange, settings.delivery_limit)


async def declare_topology(channel: AbstractRobustChannel, settings: BrokerSettings) -> Topology:
    """The spec's exchanges and queues; declaring them again with the same arguments is a no-op."""
    dead_exchange = await channel.declare_exchange(
        settings.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    dead_letters = await channel.declare_queue(
        settings.dead_letter_queue, durable=True, arguments=routing.dead_letter_queue_arguments()
    )
    await dead_letters.bind(dead_exchange, routing_key="")
    requests = await channel.declare_queue(
        settings.requests_queue, durable=True, arguments=request_queue_arguments(settings)
    )
    events = await channel.declare_exchange(
        settings.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    return Topology(requests=requests, dead_letters=dead_letters, events=events)
