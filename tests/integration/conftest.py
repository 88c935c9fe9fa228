"""Fixtures of the broker tests: the test's own connection and channel, and a worker process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection

from tests.integration.bus import WorkerProcess, start_worker, wait_for_consumer


@pytest.fixture
async def amqp(amqp_url: str) -> AsyncIterator[AbstractConnection]:
    """A plain connection of the test itself."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        yield connection


@pytest.fixture
async def bus(amqp: AbstractConnection) -> AbstractChannel:
    """A channel on the test's connection."""
    return await amqp.channel()


@pytest.fixture
async def worker(
    worker_config: Path, names: dict[str, str], amqp: AbstractConnection
) -> AsyncIterator[WorkerProcess]:
    """A real worker process on this test's broker names, consuming before the test starts."""
    process = start_worker(worker_config)
    try:
        await wait_for_consumer(amqp, names["requests_queue"])
        yield process
    finally:
        code = process.terminate()
        assert code == 0, (
            f"worker exited with {code}; log: {process.stderr_path.read_text()[-2000:]}"
        )
