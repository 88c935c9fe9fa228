"""Fixtures and helpers of the client and submit tests: a worker, a connection, short requests.

Import the fixtures by their function names (``amqp_fixture``, ``worker_fixture``); tests ask for
them as ``amqp`` and ``worker``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from tests.integration.bus import WorkerProcess, start_worker, wait_for_consumer

SHORT_RUN = {"duration_s": 1, "warmup": 2, "min_iterations": 10, "max_duration_s": 2}


def short_request(
    sample_dir: Path, optimized: bool = False, accuracy: bool = False
) -> dict[str, Any]:
    """The sample request with a fresh id and the shortest run that still measures."""
    body = json.loads((sample_dir / "request.json").read_text())
    modes = ["benchmark", "accuracy"] if accuracy else ["benchmark"]
    body["id"] = f"client-{uuid.uuid4().hex[:8]}"
    body["input_model"]["mods"] = modes
    if optimized:
        body["optimized_model"]["mods"] = modes
    else:
        body.pop("optimized_model")
    body["benchmark"] = {**body.get("benchmark", {}), **SHORT_RUN}
    return body


@pytest.fixture(name="amqp")
async def amqp_fixture(amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    """A plain connection of the test itself."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        yield connection


@pytest.fixture(name="worker")
async def worker_fixture(
    worker_config: Path, names: dict[str, str], amqp: aio_pika.abc.AbstractConnection
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
