"""The fault proxy rig against the real broker: forwarding, partitions, resets, refusals.

Clients use heartbeat=2: aiormq gives up on a silent broker after (2 + 1) * 3 = 9 s; RabbitMQ
drops a silent client after two missed heartbeats (about 5 s here).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection
from yarl import URL

from tests.integration.rigs.proxy import FaultProxy, Link

pytestmark = [pytest.mark.broker, pytest.mark.timeout(90)]

HEARTBEAT_S = 2
T = TypeVar("T")


@dataclass
class Client:
    """A robust connection through the proxy and what its callbacks saw (monotonic times)."""

    name: str
    connection: AbstractRobustConnection
    closed: list[float] = field(default_factory=list)
    reconnected: list[float] = field(default_factory=list)

    @property
    def marker(self) -> bytes:
        return self.name.encode()


Connect = Callable[[str], Awaitable[Client]]


@pytest.fixture
def proxy(amqp_url: str) -> Iterator[FaultProxy]:
    upstream = URL(amqp_url)
    with FaultProxy(upstream.host or "127.0.0.1", upstream.port or 5672) as running:
        yield running


@pytest.fixture
def proxy_url(proxy: FaultProxy, amqp_url: str) -> str:
    return str(URL(proxy.url_for(amqp_url)).update_query(heartbeat=HEARTBEAT_S))


@pytest.fixture
async def connect(proxy_url: str) -> AsyncIterator[Connect]:
    """Opens robust connections through the proxy, named uniquely; closes them afterwards."""
    clients: list[Client] = []

    async def open_client(role: str) -> Client:
        name = f"proxy-rig {role} {uuid.uuid4().hex[:8]}"
        connection = await aio_pika.connect_robust(
            proxy_url,
            client_properties={"connection_name": name},
            reconnect_interval=0.5,
            timeout=10,
        )
        client = Client(name, connection)
        connection.close_callbacks.add(lambda *_: client.closed.append(time.monotonic()))
        connection.reconnect_callbacks.add(lambda *_: client.reconnected.append(time.monotonic()))
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.connection.close()


async def until(predicate: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """Poll until ``predicate`` returns something truthy; return it."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


async def round_trip(connection: AbstractRobustConnection, timeout_s: float = 5) -> None:
    """Publish a message (confirmed) to a fresh queue and consume it back."""
    body = uuid.uuid4().bytes
    async with asyncio.timeout(timeout_s):
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue.name)
            async with queue.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    assert message.body == body
                    break
        finally:
            await channel.close()


def only_link(proxy: FaultProxy, client: Client) -> Link:
    links = proxy.links(client.marker)
    assert len(links) == 1, links
    return links[0]


async def broker_peer_ports() -> set[int] | None:
    """The peer ports of the broker's connections, where rabbitmqctl is at hand."""
    if shutil.which("rabbitmqctl") is None:
        return None
    done = await asyncio.to_thread(
        subprocess.run,
        ["rabbitmqctl", "list_connections", "peer_port", "--no-table-headers", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {int(line) for line in done.stdout.split() if line.strip().isdigit()}


async def test_round_trip_through_the_proxy(proxy: FaultProxy, connect: Connect) -> None:
    client = await connect("plain")
    await round_trip(client.connection)

    link = only_link(proxy, client)
    assert link.is_open
    assert link.connection_name == client.name
    assert link.upstream_port is not None
    assert link.bytes_up > 0 and link.bytes_down > 0
    assert link.dropped_up == link.dropped_down == 0
    stats = proxy.stats()
    assert stats.links_accepted == stats.links_open == 1
    assert stats.bytes_up == link.bytes_up


async def test_long_blackhole_is_noticed_by_both_ends_and_heals_by_reconnecting(
    proxy: FaultProxy, connect: Connect
) -> None:
    client = await connect("long")
    await round_trip(client.connection)
    link = only_link(proxy, client)
    assert link.upstream_port is not None
    ports = await broker_peer_ports()
    assert ports is None or link.upstream_port in ports

    started = time.monotonic()
    assert [hit.index for hit in proxy.blackhole()] == [link.index]
    await until(lambda: client.closed, 15, "the client to notice the silence")
    client_s = client.closed[0] - started
    gone = await until(
        lambda: proxy.links(client.marker)[0].upstream_closed_at, 15, "the broker to drop it"
    )
    broker_s = gone - started
    print(f"\nblackhole noticed: broker after {broker_s:.1f} s, client after {client_s:.1f} s")
    assert 2.5 < broker_s < 8  # two missed heartbeats, checked on RabbitMQ's own clock
    assert 7 < client_s < 12  # aiormq: 9 s after the last frame it received
    ports = await broker_peer_ports()
    assert ports is None or link.upstream_port not in ports
    assert not proxy.links(client.marker)[0].is_open  # both ends gave up: the link is over
    assert client.reconnected == []

    # The reconnect attempt during the partition is accepted and hangs in its handshake.
    held = await until(
        lambda: [new for new in proxy.links(open_only=True) if new.index > link.index],
        5,
        "a reconnect attempt",
    )
    assert held[0].blackholed and held[0].upstream_port is None
    healed = proxy.heal()
    assert [hit.index for hit in healed] == [held[0].index]
    await until(lambda: client.reconnected, 10, "the reconnect")
    await round_trip(client.connection)
    assert len(client.reconnected) == 1
    assert proxy.stats().links_accepted == 2
    assert proxy.stats().dropped_up > 0


async def test_short_blackhole_leaves_the_connection_alive(
    proxy: FaultProxy, connect: Connect
) -> None:
    client = await connect("short")
    await round_trip(client.connection)
    before = only_link(proxy, client)

    proxy.blackhole()
    await asyncio.sleep(1.5)  # under one heartbeat interval on either side's clock
    proxy.heal()
    await asyncio.sleep(HEARTBEAT_S * 2)  # past the broker's window for the silence
    await round_trip(client.connection)

    after = only_link(proxy, client)
    assert after.index == before.index and after.is_open and not after.blackholed
    assert after.dropped_up > 0  # aiormq heartbeats every second: some were swallowed
    assert client.closed == [] and client.reconnected == []
    assert proxy.stats().links_accepted == 1


async def test_marked_blackhole_leaves_other_connections_alone(
    proxy: FaultProxy, connect: Connect, proxy_url: str
) -> None:
    victim = await connect("victim")
    bystander = await connect("bystander")
    await round_trip(victim.connection)

    hit = proxy.blackhole(only=victim.marker)
    assert [link.connection_name for link in hit] == [victim.name]
    await round_trip(bystander.connection)
    # A new connection carrying the marker is caught as soon as its StartOk shows it.
    with pytest.raises(asyncio.TimeoutError):
        await aio_pika.connect(
            proxy_url, client_properties={"connection_name": f"{victim.name} late"}, timeout=1
        )
    proxy.heal()

    await round_trip(victim.connection)
    links = proxy.links(victim.marker)
    assert len(links) == 2
    assert links[0].dropped_up > 0 and links[0].is_open
    assert links[1].upstream_port is not None and links[1].bytes_up < len(links[1].hello)
    assert only_link(proxy, bystander).dropped_up == only_link(proxy, bystander).dropped_down == 0
    assert victim.reconnected == bystander.reconnected == []


async def test_buffered_blackhole_delivers_late_like_tcp(
    proxy: FaultProxy, connect: Connect
) -> None:
    client = await connect("buffered")
    channel = await client.connection.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)

    proxy.blackhole(buffer=True)
    publish = asyncio.ensure_future(
        channel.default_exchange.publish(aio_pika.Message(b"late"), routing_key=queue.name)
    )
    await asyncio.sleep(1.0)
    assert not publish.done()  # the confirm cannot come back through the partition
    proxy.heal()
    async with asyncio.timeout(5):
        await publish
        message = await queue.get()
    assert message.body == b"late"
    await message.ack()
    await channel.close()

    link = only_link(proxy, client)
    assert link.dropped_up == link.dropped_down == 0 and link.is_open
    assert client.reconnected == []


async def test_close_resets_only_the_marked_link(proxy: FaultProxy, connect: Connect) -> None:
    victim = await connect("reset")
    bystander = await connect("spared")

    closed = proxy.close(only=victim.marker)
    assert [link.connection_name for link in closed] == [victim.name]
    await until(lambda: victim.reconnected, 10, "the reconnect after the reset")
    await round_trip(victim.connection)
    await round_trip(bystander.connection)
    assert [link.is_open for link in proxy.links(victim.marker)] == [False, True]
    assert bystander.closed == [] and bystander.reconnected == []


async def test_refuse_new_connections(proxy: FaultProxy, connect: Connect, proxy_url: str) -> None:
    proxy.refuse_new(True)
    with pytest.raises(aio_pika.exceptions.AMQPConnectionError):
        await aio_pika.connect(proxy_url, timeout=5)
    assert proxy.stats().links_refused == 1
    assert proxy.stats().links_accepted == 0

    proxy.refuse_new(False)
    client = await connect("after refusal")
    await round_trip(client.connection)
    assert proxy.stats().links_accepted == 1
