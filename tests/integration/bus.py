"""Test helpers that talk to the real broker: a worker process, event collection, publishing."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue

from contracts import FinishEvent, parse_event, workload_binding
from tests.conftest import REPO, worker_environment


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.stderr_path.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
        return lines

    def terminate(self, timeout_s: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)


def start_worker(config_path: Path, *extra: str) -> WorkerProcess:
    stderr_path = config_path.with_name(f"worker-{time.monotonic_ns()}.log")
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "run", "--config", str(config_path), *extra],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=worker_environment(),
            cwd=REPO,
        )
    return WorkerProcess(process, stderr_path)


async def wait_for_consumer(
    connection: AbstractConnection, queue_name: str, timeout_s: float = 60, count: int = 1
) -> None:
    """Wait until ``count`` workers consume from the queue (they declare it themselves)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        probe = await connection.channel()  # a failed passive declare closes it
        try:
            queue = await probe.declare_queue(queue_name, passive=True)
            if queue.declaration_result.consumer_count >= count:
                return
        except aio_pika.exceptions.ChannelClosed:
            pass
        finally:
            if not probe.is_closed:
                await probe.close()
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no consumer on {queue_name} within {timeout_s} s")


@dataclass
class EventCollector:
    """Collects every event of one workload from a queue bound before the request is sent."""

    queue: AbstractQueue
    messages: list[aio_pika.abc.AbstractIncomingMessage] = field(default_factory=list)

    @classmethod
    async def bind(
        cls, channel: AbstractChannel, exchange: str, workload_id: str
    ) -> EventCollector:
        events = await channel.get_exchange(exchange)
        queue = await channel.declare_queue(exclusive=True)  # lives as long as the connection
        await queue.bind(events, routing_key=workload_binding(workload_id))
        return cls(queue)

    async def until_finish(self, timeout_s: float = 240, extra_wait_s: float = 0.5) -> list[Any]:
        """Events up to the finish, plus any that arrive shortly after (there must be none)."""

        async def collect() -> None:
            async with self.queue.iterator() as iterator:
                async for message in iterator:
                    await message.ack()
                    self.messages.append(message)
                    if isinstance(parse_event(message.body), FinishEvent):
                        return

        await asyncio.wait_for(collect(), timeout_s)
        await asyncio.sleep(extra_wait_s)
        while (late := await self.queue.get(fail=False)) is not None:
            await late.ack()
            self.messages.append(late)
        return [parse_event(m.body) for m in self.messages]


async def publish_request(
    channel: AbstractChannel,
    queue_name: str,
    body: bytes,
    content_type: str | None = "application/json",
) -> None:
    await channel.default_exchange.publish(
        aio_pika.Message(body=body, content_type=content_type,
                         delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
        routing_key=queue_name,
        timeout=10,
    )  # fmt: skip


async def dead_letters(
    channel: AbstractChannel, queue_name: str, count: int, timeout_s: float = 30
) -> list[bytes]:
    """Bodies of the first ``count`` messages in the dead-letter queue."""
    return [body for body, _ in await dead_letter_messages(channel, queue_name, count, timeout_s)]


async def dead_letter_messages(
    channel: AbstractChannel, queue_name: str, count: int, timeout_s: float = 30
) -> list[tuple[bytes, dict[str, Any]]]:
    """(body, headers) of the first ``count`` messages in the dead-letter queue."""
    queue = await channel.declare_queue(queue_name, passive=True)
    out: list[tuple[bytes, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count and time.monotonic() < deadline:
        message = await queue.get(fail=False)
        if message is None:
            await asyncio.sleep(0.1)
            continue
        await message.ack()
        out.append((message.body, dict(message.headers or {})))
    return out
