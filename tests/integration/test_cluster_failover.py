"""Two workers on a three-node cluster while the requests queue's leader node stops.

Each worker has the cluster's three URLs (``broker.url`` and ``broker.failover_urls``, in a
different order for each). The test's own publisher and subscriber use the worker's failover
connection (:func:`service.consumer.broker.connect`) too, and the subscriber reads a durable
quorum queue,
so neither loses anything while a node is down. Over a backlog of short requests, the node
holding the requests queue's quorum leader is stopped cleanly and started again, twice; then
(``NO_QUORUM_AT``) the leader's node and a second one are stopped together, leaving one node of
three and no quorum for ``NO_QUORUM_S``, and both are started again. Every request must still
get exactly one success finish (one run, one finish ``message_id``), nothing may be
dead-lettered or left in the queue, and both workers must exit 0. A report (figures, pauses
around each stop, worker log events) is printed and written to ``<tmp_path>/failover-report.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import statistics
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from pamqp.commands import Basic

from contracts import FinishEvent, parse_event, routing
from service.config import BrokerSettings
from service.consumer.broker import connect
from tests.integration.bus import WorkerProcess, wait_for_consumer
from tests.integration.fleet import fleet_config
from tests.integration.reliability import configure, running_worker, short_request
from tests.integration.rigs.cluster import RabbitCluster
from tests.integration.rigs.cluster import rabbit_cluster as rabbit_cluster  # the fixture

pytestmark = [pytest.mark.broker, pytest.mark.cluster, pytest.mark.slow]

REQUESTS = 100
FIRST_STOP_AT = 20  # finishes before the first leader stop
DOWN_FOR = 10  # finishes while a stopped node is down (or DOWN_MAX_S), then it starts again
DOWN_MAX_S = 90.0
SECOND_STOP_AFTER = 20  # more finishes after the first stop before the second
ALL_DONE_S = 15 * 60.0  # every finish within this, from the first publish
PHASE_TIMEOUT_S = 300.0
SETTLE_S = 5.0
NO_QUORUM_AT = 70  # finishes before two nodes are stopped at once (0: never)
NO_QUORUM_S = 30.0
PAUSE_WINDOW_AFTER_START_S = 15.0  # the pause window runs until this long after a restart
BENCHMARK = {"duration_s": 0.3, "min_iterations": 5, "max_duration_s": 1, "warmup": 1}
BROKER = {"heartbeat_s": 5, "reconnect_interval_s": 1, "publish_timeout_s": 10}
WATCHED_EVENTS = (
    "broker_failover",
    "broker_reconnected",
    "broker_unreachable",
    "request_completed",
    "finish_withheld",
    "request_requeued",
    "request_retried",
    "request_abandoned",
    "request_returned_to_queue",
    "request_crashed",
    "request_rejected",
    "settle_failed",
    "event_waiting_for_broker",
    "event_publish_retry",
    "consumer_missing",
    "consumer_restored",
    "consumer_lost",
    "worker_stopping",
    "worker_stopped",
)


@dataclass(frozen=True)
class Received:
    """One finish as the subscriber got it."""

    body: dict[str, Any]
    message_id: str | None
    redelivered: bool
    at: float  # time.time()

    @property
    def workload_id(self) -> str:
        return str(self.body["data"]["id"])

    @property
    def run_id(self) -> str | None:
        return self.body["data"].get("run_id")


@dataclass
class Finishes:
    """Every finish delivered to the subscriber's quorum queue, acked once recorded."""

    received: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        body = json.loads(message.body)
        if not isinstance(parse_event(message.body), FinishEvent):  # raises on anything else
            body["not_a_finish"] = True
        self.received.append(Received(body, message.message_id, message.redelivered, time.time()))
        self.arrived.set()
        await message.ack()

    def distinct_ids(self) -> set[str]:
        return {r.workload_id for r in self.received}

    async def until(self, count: int, timeout_s: float) -> None:
        """Until finishes of ``count`` distinct requests arrived."""
        async with asyncio.timeout(timeout_s):
            while len(self.distinct_ids()) < count:
                self.arrived.clear()
                await self.arrived.wait()

    async def until_or_after(self, count: int, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await self.until(count, seconds)


@dataclass
class Stop:
    """One stop of a node and its restart, as the test drove it (times: time.time())."""

    node: str
    leader_before: str
    finishes_before: int
    stop_began: float
    stopped: float = 0.0
    new_leader: str = ""
    new_leader_at: float = 0.0
    start_began: float = 0.0
    started: float = 0.0
    finishes_while_down: int = 0
    also_stopped: str = ""  # a second node, stopped while the first was down (no quorum)


def broker_settings(urls: list[str]) -> BrokerSettings:
    return BrokerSettings.model_validate({"url": urls[0], "failover_urls": urls[1:], **BROKER})


async def subscribe_finishes(
    connection: AbstractRobustConnection, exchange_name: str, queue_name: str, finishes: Finishes
) -> tuple[AbstractExchange, AbstractQueue]:
    """A durable quorum queue bound to every finish, consumed with manual ack. The returned
    objects are kept by the caller: the robust channel restores them after a reconnect."""
    channel = await connection.channel()
    exchange = await channel.declare_exchange(
        exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue(
        queue_name, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(exchange, routing_key=routing.ALL_FINISHES_BINDING)
    await queue.consume(finishes.on_message, no_ack=False)
    return exchange, queue


async def publish_requests(
    connection: AbstractRobustConnection, queue_name: str, requests: list[dict[str, Any]]
) -> dict[str, str]:
    """Publish every request, persistent and mandatory, each confirmed; id → message_id."""
    channel = await connection.channel(publisher_confirms=True)
    message_ids = {}
    for request in requests:
        message_id = uuid.uuid4().hex
        confirmation = await channel.default_exchange.publish(
            aio_pika.Message(
                json.dumps(request).encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message_id,
            ),
            routing_key=queue_name,
            mandatory=True,
            timeout=30,
        )
        assert isinstance(confirmation, Basic.Ack), f"{request['id']}: {confirmation!r}"
        message_ids[request["id"]] = message_id
    await channel.close()
    return message_ids


async def stop_leader(cluster: RabbitCluster, queue: str, finishes: Finishes) -> Stop:
    """Stop the node holding the queue's leader; wait for a new leader; start it again once
    ``DOWN_FOR`` more requests finished (or after ``DOWN_MAX_S``)."""
    leader = await asyncio.to_thread(cluster.wait_for_leader, queue)
    done = len(finishes.distinct_ids())
    stop = Stop(node=leader, leader_before=leader, finishes_before=done, stop_began=time.time())
    print(f"\n[{stop.stop_began:.1f}] stopping {leader} (leader of {queue}) after {done} finishes")
    await asyncio.to_thread(cluster.stop_node, leader)
    stop.stopped = time.time()
    stop.new_leader = await asyncio.to_thread(cluster.wait_for_leader, queue, not_on=leader)
    stop.new_leader_at = time.time()
    print(f"[{stop.new_leader_at:.1f}] {stop.new_leader} leads now")
    await finishes.until_or_after(done + DOWN_FOR, DOWN_MAX_S)
    stop.finishes_while_down = len(finishes.distinct_ids()) - done
    stop.start_began = time.time()
    await asyncio.to_thread(cluster.start_node, leader)
    await _until_online(cluster, queue)
    stop.started = time.time()
    print(f"[{stop.started:.1f}] {leader} runs again, every replica online")
    return stop


async def lose_quorum(cluster: RabbitCluster, queue: str, finishes: Finishes) -> Stop:
    """Stop the leader's node, then a second one while the first is down: one node of three,
    no quorum, for ``NO_QUORUM_S``; then start both again."""
    leader = await asyncio.to_thread(cluster.wait_for_leader, queue)
    second = next(name for name in cluster.names if name != leader)
    done = len(finishes.distinct_ids())
    stop = Stop(
        node=leader,
        leader_before=leader,
        finishes_before=done,
        stop_began=time.time(),
        also_stopped=second,
    )
    print(f"\n[{stop.stop_began:.1f}] stopping {leader} (leader), then {second}: no quorum")
    await asyncio.to_thread(cluster.stop_node, leader)
    await asyncio.to_thread(cluster.stop_node, second)
    stop.stopped = time.time()
    await asyncio.sleep(NO_QUORUM_S)
    stop.finishes_while_down = len(finishes.distinct_ids()) - done
    stop.start_began = time.time()
    print(f"[{stop.start_began:.1f}] {stop.finishes_while_down} finishes without quorum")
    await asyncio.gather(
        asyncio.to_thread(cluster.start_node, leader),
        asyncio.to_thread(cluster.start_node, second),
    )
    await _until_online(cluster, queue)
    stop.new_leader = await asyncio.to_thread(cluster.wait_for_leader, queue)
    stop.new_leader_at = stop.started = time.time()
    print(f"[{stop.started:.1f}] both run again, {stop.new_leader} leads")
    return stop


async def _until_online(cluster: RabbitCluster, queue: str, timeout_s: float = 120.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            with contextlib.suppress(Exception):
                online = await asyncio.to_thread(cluster.queue_online, queue)
                if sorted(online) == sorted(cluster.names):
                    return
            await asyncio.sleep(1.0)


async def queue_depth(connection: AbstractRobustConnection, queue_name: str) -> int:
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(queue_name, passive=True)
        return queue.declaration_result.message_count or 0
    finally:
        await channel.close()


def longest_pause(times: list[float], start: float, end: float) -> tuple[float, float]:
    """The longest gap between consecutive finishes that ends after ``start`` and begins before
    ``end``, and when it began (seconds after ``start``; negative: before)."""
    ordered = sorted(times)
    best, began = 0.0, 0.0
    for before, after in itertools.pairwise(ordered):
        if after >= start and before < end and after - before > best:
            best, began = after - before, before - start
    return round(best, 2), round(began, 2)


def pause_window_ends(stops: list[Stop]) -> list[float]:
    """Where each stop's pause window ends: ``PAUSE_WINDOW_AFTER_START_S`` after its node runs
    again, but before the next stop begins."""
    ends = [stop.started + PAUSE_WINDOW_AFTER_START_S for stop in stops]
    for index, following in enumerate(stops[1:]):
        ends[index] = min(ends[index], following.stop_began)
    return ends


def worker_log_summary(worker: WorkerProcess, since: float) -> dict[str, Any]:
    """Counts of the watched log events, and the notable ones in full (times: s since start)."""
    counts: Counter[str] = Counter()
    notable = []
    for line in worker.log_lines():
        event = str(line.get("event"))
        if event not in WATCHED_EVENTS:
            continue
        counts[event] += 1
        if event == "request_completed" and line.get("duplicate_delivery"):
            counts["request_completed(duplicate_delivery)"] += 1
        if event != "request_completed" or line.get("duplicate_delivery"):
            notable.append(_log_entry(line, since))
    return {"counts": dict(sorted(counts.items())), "notable": notable}


def _log_entry(line: dict[str, Any], since: float) -> dict[str, Any]:
    entry = {k: v for k, v in line.items() if k not in ("timestamp", "level")}
    with contextlib.suppress(KeyError, ValueError):
        entry["t_s"] = round(datetime.fromisoformat(line["timestamp"]).timestamp() - since, 2)
    return entry


async def test_two_workers_lose_no_finish_while_the_queue_leader_nodes_stop(
    rabbit_cluster: RabbitCluster,
    worker_config: Path,
    names: dict[str, str],
    sample_dir: Path,
    tmp_path: Path,
) -> None:
    cluster = rabbit_cluster
    began = time.time()
    queue = names["requests_queue"]
    n1, n2, n3 = cluster.urls
    configure(
        worker_config,
        broker={"url": n1, "failover_urls": [n2, n3], **BROKER},
        worker={"cpus": "0"},
    )
    second_config = fleet_config(
        worker_config,
        "second",
        broker={"url": n2, "failover_urls": [n3, n1]},
        worker={"cpus": "1"},
    )
    requests = [short_request(sample_dir, **BENCHMARK) for _ in range(REQUESTS)]
    finishes = Finishes()
    stops: list[Stop] = []

    subscriber = await connect(broker_settings([n3, n1, n2]), "test-subscribe")
    publisher = await connect(broker_settings([n3, n2, n1]), "test-publish")
    try:
        finish_queue = f"{names['events_exchange']}.finishes"
        kept = await subscribe_finishes(
            subscriber, names["events_exchange"], finish_queue, finishes
        )
        async with (
            running_worker(worker_config, n1, queue) as first,
            running_worker(second_config, n2, queue) as second,
        ):
            await wait_for_consumer(publisher, queue, timeout_s=60, count=2)
            ready = time.time()
            message_ids = await publish_requests(publisher, queue, requests)
            published = time.time()
            print(f"\n{REQUESTS} requests published and confirmed in {published - ready:.1f} s")
            async with asyncio.timeout(ALL_DONE_S):
                await finishes.until(FIRST_STOP_AT, PHASE_TIMEOUT_S)
                stops.append(await stop_leader(cluster, queue, finishes))
                await finishes.until(FIRST_STOP_AT + SECOND_STOP_AFTER, PHASE_TIMEOUT_S)
                stops.append(await stop_leader(cluster, queue, finishes))
                if NO_QUORUM_AT:
                    await finishes.until(NO_QUORUM_AT, PHASE_TIMEOUT_S)
                    stops.append(await lose_quorum(cluster, queue, finishes))
                await finishes.until(REQUESTS, ALL_DONE_S)
            all_done = time.time()
            await asyncio.sleep(SETTLE_S)
        logs = {
            "worker1 (cpu 0, node 1 first)": worker_log_summary(first, began),
            "worker2 (cpu 1, node 2 first)": worker_log_summary(second, began),
        }
        left_in_queue = await queue_depth(publisher, queue)
        dead_lettered = await queue_depth(publisher, names["dead_letter_queue"])
        del kept
    finally:
        with contextlib.suppress(Exception):
            cleanup = await asyncio.wait_for(subscriber.channel(), 10)
            await cleanup.queue_delete(f"{names['events_exchange']}.finishes")
        await subscriber.close()
        await publisher.close()

    by_id: defaultdict[str, list[Received]] = defaultdict(list)
    for item in finishes.received:
        by_id[item.workload_id].append(item)
    wanted = {r["id"] for r in requests}
    lost = sorted(wanted - set(by_id))
    unexpected = sorted(set(by_id) - wanted)
    extra_by_id = sum(len(items) - 1 for items in by_id.values())
    runs = {i: {item.run_id for item in items} for i, items in by_id.items()}
    extra_runs = {i: sorted(r or "" for r in rs) for i, rs in runs.items() if len(rs) > 1}
    amqp_ids = {i: {item.message_id for item in items} for i, items in by_id.items()}
    not_success = {
        i: [item.body["status"] for item in items]
        for i, items in by_id.items()
        if any(item.body["status"] != "success" for item in items)
    }
    wrong_request = {
        i: [item.body["data"].get("request_message_id") for item in items]
        for i, items in by_id.items()
        if any(item.body["data"].get("request_message_id") != message_ids.get(i) for item in items)
    }
    finish_times = [item.at for item in finishes.received]
    gaps = [b - a for a, b in itertools.pairwise(sorted(finish_times))]
    report = {
        "requests": REQUESTS,
        "finishes_received": len(finishes.received),
        "distinct_ids_finished": len(by_id),
        "duplicates_by_id": extra_by_id,
        "duplicates_by_run_id": sum(len(rs) - 1 for rs in runs.values()),
        "distinct_amqp_message_ids": len({m for ms in amqp_ids.values() for m in ms}),
        "redelivered_to_subscriber": sum(item.redelivered for item in finishes.received),
        "lost": lost,
        "unexpected_ids": unexpected,
        "not_success": not_success,
        "wrong_request_message_id": wrong_request,
        "dead_lettered": dead_lettered,
        "left_in_requests_queue": left_in_queue,
        "attempts": dict(Counter(item.body["data"].get("attempt") for item in finishes.received)),
        "median_gap_between_finishes_s": round(statistics.median(gaps), 2) if gaps else None,
        "stops": [
            {
                "stop_at_s": round(stop.stop_began - began, 1),
                "running_again_at_s": round(stop.started - began, 1),
                "node": stop.node,
                "also_stopped": stop.also_stopped,
                "leader_when_stopped": stop.leader_before,
                "new_leader": stop.new_leader,
                "finishes_before_stop": stop.finishes_before,
                "finishes_while_down": stop.finishes_while_down,
                "stop_took_s": round(stop.stopped - stop.stop_began, 1),
                "new_leader_after_s": round(stop.new_leader_at - stop.stop_began, 1),
                "down_s": round(stop.started - stop.stop_began, 1),
                "first_finish_after_stop_s": round(
                    min((t for t in finish_times if t > stop.stop_began), default=0.0)
                    - stop.stop_began,
                    2,
                ),
                "longest_pause_s_and_start": longest_pause(
                    finish_times, stop.stop_began, window_end
                ),
            }
            for stop, window_end in zip(stops, pause_window_ends(stops), strict=True)
        ],
        "publish_s": round(published - ready, 1),
        "all_finished_after_publish_s": round(all_done - published, 1),
        "total_s": round(time.time() - began, 1),
        "cluster_timings": cluster.timings,
        "worker_logs": logs,
    }
    report_path = tmp_path / "failover-report.json"
    report_path.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nreport ({report_path}):\n{json.dumps(report, indent=2, default=str)}")

    assert not [item for item in finishes.received if item.body.get("not_a_finish")]
    assert not lost, f"{len(lost)} requests without a finish: {lost}"
    assert not unexpected
    assert not not_success, f"finishes other than success: {not_success}"
    assert not extra_runs, f"requests answered by more than one run: {extra_runs}"
    assert all(len(ms) == 1 for ms in amqp_ids.values()), f"message ids: {amqp_ids}"
    assert report["distinct_amqp_message_ids"] == REQUESTS
    assert not wrong_request
    assert dead_lettered == 0
    assert left_in_queue == 0
    assert all(stop.finishes_while_down > 0 for stop in stops if not stop.also_stopped)
