"""Partitions between a worker and the broker, through a TCP proxy that black-holes traffic
without closing sockets (tests/integration/rigs/proxy.py): whatever the timing, a request ends
with exactly one success finish (issue 13).

Heartbeat 2 s: the broker drops a silent connection after about 4-6 s, aiormq notices after
about 9 s. A partition shorter than that heals unnoticed; a longer one makes the broker requeue
the request while the cut-off worker may still be benchmarking it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from contracts import FinishEvent, StartEvent
from tests.integration.bus import WorkerProcess
from tests.integration.fleet import fleet_config
from tests.integration.reliability import (
    Subscription,
    configure,
    long_request,
    publish_json,
    queue_counts,
    running_worker,
    subscribe,
    wait_for_log,
)
from tests.integration.rigs.proxy import FaultProxy

pytestmark = [pytest.mark.broker]

HEARTBEAT_S = 2
CONSUME = b"benchmark-worker consume"


@pytest.fixture
def proxy(amqp_url: str) -> Iterator[FaultProxy]:
    url = URL(amqp_url)
    with FaultProxy(url.host or "127.0.0.1", url.port or 5672) as running:
        yield running


def _partitioned_configs(
    worker_config: Path, proxy: FaultProxy, amqp_url: str
) -> tuple[Path, Path]:
    """Worker A reaches the broker through the proxy, worker B directly; short heartbeats."""
    broker = {"heartbeat_s": HEARTBEAT_S, "reconnect_interval_s": 1}
    configure(worker_config, broker={**broker, "url": proxy.url_for(amqp_url)},
              worker={"cpus": "0"})  # fmt: skip
    direct = fleet_config(worker_config, "direct", broker={"url": amqp_url}, worker={"cpus": "1"})
    return worker_config, direct


@contextlib.asynccontextmanager
async def _request_on(
    config: Path, amqp_url: str, names: dict[str, str], request: dict[str, Any]
) -> AsyncIterator[tuple[Subscription, WorkerProcess]]:
    """A worker on ``config`` and a subscriber of ``request``'s events, the request published."""
    queue = names["requests_queue"]
    async with (
        subscribe(amqp_url, names["events_exchange"], request["id"]) as events,
        running_worker(config, amqp_url, queue) as worker,
    ):
        await publish_json(amqp_url, queue, request)
        yield events, worker


def _successes(events: list[Any]) -> list[FinishEvent]:
    return [e for e in events if isinstance(e, FinishEvent) and e.status == "success"]


async def test_a_partition_that_heals_before_the_broker_notices_changes_nothing(
    worker_config: Path, amqp_url: str, names: dict[str, str], sample_dir: Path, proxy: FaultProxy
) -> None:
    """1.5 s of silence mid-benchmark (data delayed, as TCP retransmits it): the same worker
    finishes on its first attempt, one success, no reconnect."""
    cut_off, _ = _partitioned_configs(worker_config, proxy, amqp_url)
    request = long_request(sample_dir, duration_s=6)
    async with _request_on(cut_off, amqp_url, names, request) as (events, worker):
        await wait_for_log(worker, "window_planned", timeout_s=120)
        await asyncio.sleep(1)
        proxy.blackhole(buffer=True)
        await asyncio.sleep(1.5)
        proxy.heal()
        finish = await events.until_finish(timeout_s=120)
        await events.settle(quiet_s=2)
        logged = [line.get("event") for line in worker.log_lines()]

    assert finish.status == "success" and finish.data.attempt == 1
    assert len(_successes(events.events)) == 1
    assert "broker_reconnected" not in logged and "finish_withheld" not in logged


async def test_a_worker_cut_off_as_its_benchmark_ends_sends_no_second_answer(
    worker_config: Path, amqp_url: str, names: dict[str, str], sample_dir: Path, proxy: FaultProxy
) -> None:
    """Only the consuming connection of worker A goes silent shortly before its measurement
    ends; its publishing connection stays up. The broker requeues the request to worker B.
    A finishes benchmarking while cut off, but its delivery is no longer held: it publishes
    nothing, and B's answer is the only success. Healed after the broker noticed."""
    cut_off, direct = _partitioned_configs(worker_config, proxy, amqp_url)
    duration_s = 8
    request = long_request(sample_dir, duration_s=duration_s)
    queue = names["requests_queue"]
    async with _request_on(cut_off, amqp_url, names, request) as (events, worker_a):
        await events.until_start()
        async with running_worker(direct, amqp_url, queue) as worker_b:
            await wait_for_log(worker_a, "window_planned", timeout_s=120)
            await asyncio.sleep(duration_s - 3)  # about 3 s before A's measurement ends
            proxy.blackhole(only=CONSUME, new_connections=False)
            await wait_for_log(worker_b, "request_completed", timeout_s=120)
            await asyncio.sleep(2 * 3 * (HEARTBEAT_S + 1))  # A notices, and would answer
            proxy.heal()
            await wait_for_log(worker_a, "broker_reconnected", timeout_s=60)
            await events.settle(quiet_s=3)
            a_events = [line.get("event") for line in worker_a.log_lines()]
            b_lines = worker_b.log_lines()
        left, _ = await queue_counts(amqp_url, queue)

    successes = _successes(events.events)
    assert len(successes) == 1, [(f.data.run_id, f.data.node.worker_id) for f in successes]
    starts = [e for e in events.events if isinstance(e, StartEvent)]
    assert starts[0].data.node.worker_id != successes[0].data.node.worker_id or any(
        line.get("duplicate_delivery") for line in b_lines
    )  # B ran it again, or answered with A's stored result (shared workspace)
    assert "finish_withheld" in a_events or "request_abandoned" in a_events
    assert left == 0


async def test_a_worker_cut_off_for_good_leaves_the_request_to_another(
    worker_config: Path, amqp_url: str, names: dict[str, str], sample_dir: Path, proxy: FaultProxy
) -> None:
    """Worker A loses the broker entirely mid-benchmark (new connections too): the broker hands
    the request to worker B, which answers; A kills its runners and, healed later, sends no
    answer of its own."""
    cut_off, direct = _partitioned_configs(worker_config, proxy, amqp_url)
    request = long_request(sample_dir, duration_s=12)
    queue = names["requests_queue"]
    async with _request_on(cut_off, amqp_url, names, request) as (events, worker_a):
        await events.until_start()
        async with running_worker(direct, amqp_url, queue) as worker_b:
            await wait_for_log(worker_a, "window_planned", timeout_s=120)
            proxy.blackhole()
            finish = await events.until_finish(timeout_s=180)
            await wait_for_log(worker_a, "request_abandoned", timeout_s=60)
            proxy.heal()
            await wait_for_log(worker_a, "broker_reconnected", timeout_s=60)
            await events.settle(quiet_s=3)
            b_completed = [e for e in worker_b.log_lines() if e.get("event") == "request_completed"]
            a_completed = [e for e in worker_a.log_lines() if e.get("event") == "request_completed"]

    assert finish.status == "success" and finish.data.attempt == 2
    assert len(_successes(events.events)) == 1
    assert len(b_completed) == 1 and a_completed == []
