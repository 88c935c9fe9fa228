"""Helpers for the fleet tests: worker configs, CPU sets, a queue that sees every event."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import yaml
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from contracts import ALL_WORKLOADS_BINDING, NODE_STATUS_BINDING, parse_event, parse_node_status
from tests.conftest import REPO, worker_environment

SHORT_RUN = {"duration_s": 1, "warmup": 2, "min_iterations": 10, "max_duration_s": 2}


def fleet_config(worker_config: Path, name: str, **sections: dict[str, Any]) -> Path:
    """A copy of the test's worker config with some sections extended (same broker names)."""
    config = yaml.safe_load(worker_config.read_text())
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path = worker_config.with_name(f"{name}.yaml")
    path.write_text(yaml.safe_dump(config))
    return path


def disjoint_cpu_sets(count: int) -> list[str]:
    """``count`` CPU lists, as disjoint as this machine allows (on 2 CPUs, two share one)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= count:
        per_set = len(cpus) // count
        return [",".join(map(str, cpus[i * per_set : (i + 1) * per_set])) for i in range(count)]
    return [str(cpus[i % len(cpus)]) for i in range(count)]


def perf_request(sample_dir: Path, **benchmark: Any) -> dict[str, Any]:
    """A performance-only request for the sample input model, with a fresh id."""
    body = json.loads((sample_dir / "request.json").read_text())
    return {
        "id": f"fleet-{uuid.uuid4().hex[:8]}",
        "input_model": {**body["input_model"], "mods": ["benchmark"]},
        "benchmark": {**SHORT_RUN, **benchmark},
    }


def cli(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``benchmark-worker`` as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=worker_environment(),
        cwd=REPO,
        check=False,
    )


@dataclass
class Everything:
    """A queue bound to every workload event and every node status of one events exchange."""

    queue: AbstractQueue
    events: list[tuple[str, Any]] = field(default_factory=list)  # (routing key, parsed)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def bind(cls, channel: AbstractChannel, exchange_name: str) -> Everything:
        # Declared here with the worker's arguments, so statuses sent at start are not missed.
        exchange = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key=ALL_WORKLOADS_BINDING)
        await queue.bind(exchange, routing_key=NODE_STATUS_BINDING)
        everything = cls(queue)
        await queue.consume(everything._on_message, no_ack=True)
        return everything

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        key = message.routing_key or ""
        parsed = parse_node_status(message.body) if key.startswith("node.") else None
        self.events.append((key, parsed or parse_event(message.body)))
        self.arrived.set()

    def workload(self, workload_id: str) -> list[Any]:
        prefix = f"benchmark.{workload_id}."
        return [event for key, event in self.events if key.startswith(prefix)]

    def statuses(self, node_id: str | None = None) -> list[Any]:
        return [
            event
            for key, event in self.events
            if key.startswith("node.") and (node_id is None or event.data.node_id == node_id)
        ]

    def finishes(self) -> dict[str, Any]:
        return {
            event.data.id: event
            for key, event in self.events
            if key.startswith("benchmark.") and event.subject == "benchmark_finish"
        }

    async def wait_for(self, predicate: Any, timeout_s: float = 240) -> None:
        """Wait until ``predicate()`` holds, checking it again as each message arrives."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self.arrived.clear()
                await self.arrived.wait()


async def poll_until(predicate: Any, timeout_s: float, interval_s: float = 0.2) -> None:
    """Wait until ``predicate()`` holds, for state outside the broker (processes, files, HTTP)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(interval_s)
