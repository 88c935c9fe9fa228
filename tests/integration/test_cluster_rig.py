"""The three-node cluster rig: a quorum queue keeps confirmed messages when its leader stops."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import aio_pika
import pytest
from pamqp.commands import Basic

from tests.integration.rigs.cluster import RabbitCluster
from tests.integration.rigs.cluster import rabbit_cluster as rabbit_cluster  # the fixture

MESSAGES = 20


async def _publish_confirmed(url: str, queue_name: str, count: int) -> None:
    """Declare the quorum queue and publish ``count`` persistent messages, each confirmed."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        for index in range(count):
            message = aio_pika.Message(
                str(index).encode(),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=str(index),
            )
            confirmation = await channel.default_exchange.publish(message, routing_key=queue_name)
            assert isinstance(confirmation, Basic.Ack), f"message {index}: {confirmation!r}"


async def _consume_all(url: str, queue_name: str, count: int) -> list[str]:
    """Consume and ack ``count`` messages; then the queue must be empty."""
    bodies: list[str] = []
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=count)
        queue = await channel.declare_queue(queue_name, passive=True)
        async with asyncio.timeout(60), queue.iterator() as messages:
            async for message in messages:
                bodies.append(message.body.decode())
                await message.ack()
                if len(bodies) == count:
                    break
        again = await channel.declare_queue(queue_name, passive=True)
        assert again.declaration_result.message_count == 0
    return bodies


async def _wait_until(check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Poll the blocking ``check()`` (off the event loop) until it is true."""
    async with asyncio.timeout(timeout_s):
        while True:
            if await asyncio.to_thread(check):
                return
            await asyncio.sleep(0.5)


@pytest.mark.cluster
@pytest.mark.slow
async def test_quorum_queue_survives_its_leader_stopping(rabbit_cluster: RabbitCluster) -> None:
    cluster = rabbit_cluster
    queue_name = f"rig.{uuid.uuid4().hex[:10]}"

    await _publish_confirmed(cluster.urls[0], queue_name, MESSAGES)
    members = await asyncio.to_thread(cluster.queue_members, queue_name)
    assert sorted(members) == sorted(cluster.names), "a replica on every node of three"

    leader = await asyncio.to_thread(cluster.queue_leader, queue_name)
    assert leader in cluster.names
    await asyncio.to_thread(cluster.stop_node, leader)
    new_leader = await asyncio.to_thread(cluster.wait_for_leader, queue_name, not_on=leader)
    other = next(name for name in cluster.names if name != leader)

    bodies = await _consume_all(cluster.url(other), queue_name, MESSAGES)
    assert sorted(bodies, key=int) == [str(i) for i in range(MESSAGES)]

    await asyncio.to_thread(cluster.start_node, leader)
    await _wait_until(lambda: sorted(cluster.running_nodes(via=leader)) == sorted(cluster.names))
    status = await asyncio.to_thread(cluster.ctl_json, other, "cluster_status")
    assert sorted(status["running_nodes"]) == sorted(cluster.names)
    await _wait_until(lambda: sorted(cluster.queue_online(queue_name)) == sorted(cluster.names))
    print(f"\nleader {leader} stopped, {new_leader} took over\n{cluster.timing_report()}")
