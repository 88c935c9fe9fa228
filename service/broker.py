"""Connecting to RabbitMQ and declaring the spec's topology, idempotently."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import (
    AbstractExchange,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from contracts import routing
from service.config import BrokerSettings


async def connect(settings: BrokerSettings, purpose: str) -> AbstractRobustConnection:
    """A robust connection named after this host and its purpose (visible in the management UI)."""
    url = settings.url.get_secret_value()
    return await aio_pika.connect_robust(
        url,
        heartbeat=settings.heartbeat_s,
        reconnect_interval=settings.reconnect_interval_s,
        client_properties={
            "connection_name": f"benchmark-worker {purpose} @{socket.gethostname()}"
        },
    )


@dataclass
class Topology:
    """Strong references to the declared objects (robust channels restore them on reconnect)."""

    requests: AbstractQueue
    dead_letters: AbstractQueue
    events: AbstractExchange


def request_queue_arguments(settings: BrokerSettings) -> dict[str, object]:
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
