"""Faults, round two, over the real broker: no request held hostage, no outage that eats the
delivery attempts, one directory per run, a store that answers only the same delivery, and a
cancel that survives a reconnect (issue 13)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from contracts import CANCELLED_MESSAGE, FinishEvent, StartEvent
from contracts.client import BenchmarkClient, PublishFailed
from service.config import BrokerSettings
from tests.integration.fleet import fleet_config
from tests.integration.reliability import (
    close_connections_of,
    configure,
    long_request,
    publish_json,
    queue_counts,
    rabbitmqctl,
    running_worker,
    short_request,
    subscribe,
    wait_for_log,
    workload_dir,
)

pytestmark = [pytest.mark.broker]


def _finishes(events: list[Any]) -> list[FinishEvent]:
    return [e for e in events if isinstance(e, FinishEvent)]


def _starts(events: list[Any]) -> list[StartEvent]:
    return [e for e in events if isinstance(e, StartEvent)]


async def test_a_valid_request_behind_a_flood_is_never_held_while_another_runs(
    worker_config: Path, amqp_url: str, names: dict[str, str], sample_dir: Path
) -> None:
    """Two valid requests in a flood of bad bodies: while one runs, the other waits *ready* in
    the queue (not unacked in this worker), so a second worker started then runs it at once,
    side by side."""
    queue = names["requests_queue"]
    configure(worker_config, worker={"reject_lane_after": 4, "cpus": "0"})
    second_config = fleet_config(worker_config, "second", worker={"cpus": "1"})
    requests = [long_request(sample_dir, duration_s=30) for _ in range(2)]
    bad = [b'{"id": "flood-%d", ' % n for n in range(40)]
    backlog = [*bad[:20], *(json.dumps(r).encode() for r in requests), *bad[20:]]
    async with (
        subscribe(amqp_url, names["events_exchange"], binding="benchmark.#") as events,
        running_worker(worker_config, amqp_url, queue) as first,
    ):
        first.process.send_signal(signal.SIGSTOP)  # the flood arrives as a backlog
        try:
            for body in backlog:
                await publish_json(amqp_url, queue, body)
        finally:
            first.process.send_signal(signal.SIGCONT)
        started = await events.until_start()
        await wait_for_log(first, "reject_lane_closed", timeout_s=30)
        await asyncio.sleep(2)  # the lane's leftovers settled
        unacked = await _unacked_while_running(queue)
        async with running_worker(second_config, amqp_url, queue):
            finishes: dict[str, FinishEvent] = {}
            while len(finishes) < 2:
                finish = await events.until_finish(timeout_s=180)
                finishes[finish.workload_id] = finish
            await events.settle(quiet_s=1)

    assert unacked == 1, "only the running request is held; the other waits in the queue"
    assert all(f.status == "success" for f in finishes.values())
    assert sorted(finishes) == sorted(r["id"] for r in requests)
    other = next(i for i in finishes if i != started.workload_id)
    other_start = next(e for e in _starts(events.events) if e.workload_id == other)
    assert other_start.data.node.worker_id != started.data.node.worker_id
    order = [(type(e).__name__, e.workload_id) for e in events.events]
    assert order.index(("StartEvent", other)) < order.index(("FinishEvent", started.workload_id)), (
        "the two requests ran side by side on the two workers"
    )
    assert len(_finishes(events.events)) == 2


async def test_a_short_alarm_delays_the_answer_instead_of_using_up_the_delivery_limit(
    worker_config: Path, amqp_url: str, names: dict[str, str], sample_dir: Path
) -> None:
    """The broker blocks publishing (memory alarm) for several publish timeouts, with the default
    delivery limit (3): the finish waits, then is confirmed; one run, one success finish,
    nothing dead-lettered, nothing left in the queue."""
    assert BrokerSettings().delivery_limit == 3
    configure(worker_config, broker={"publish_timeout_s": 3})
    request = long_request(sample_dir, duration_s=3)
    queue = names["requests_queue"]
    async with (
        running_worker(worker_config, amqp_url, queue) as worker,
        subscribe(amqp_url, names["events_exchange"], request["id"]) as events,
    ):
        await publish_json(amqp_url, queue, request)
        await events.until_start()
        with publishing_blocked():
            await wait_for_log(worker, "event_waiting_for_broker", subject="benchmark_finish",
                               timeout_s=120)  # fmt: skip
            await asyncio.sleep(20)  # ~7 publish timeouts: enough to use up 4 deliveries before
        finish = await events.until_finish(timeout_s=60)
        await events.settle()
        requests_left, _ = await queue_counts(amqp_url, queue)
        dead, _ = await queue_counts(amqp_url, names["dead_letter_queue"])
        logged = [line.get("event") for line in worker.log_lines()]

    assert finish.status == "success" and finish.data.attempt == 1
    assert len(_starts(events.events)) == 1 and len(_finishes(events.events)) == 1
    assert (requests_left, dead) == (0, 0)
    assert "request_requeued" not in logged


async def test_two_runs_of_one_id_on_a_shared_workspace_keep_their_own_files(
    worker_config: Path, amqp_url: str, names: dict[str, str], sample_dir: Path
) -> None:
    """The same workload id twice at once, on two workers sharing one workspace: both runs
    succeed, each in its own directory with its own result; the spec's path points at one."""
    queue = names["requests_queue"]
    configure(worker_config, worker={"cpus": "0"})
    second_config = fleet_config(worker_config, "second", worker={"cpus": "1"})
    request = long_request(sample_dir, duration_s=4)
    async with (
        subscribe(amqp_url, names["events_exchange"], request["id"]) as events,
        running_worker(worker_config, amqp_url, queue),
        running_worker(second_config, amqp_url, queue),
    ):
        await publish_json(amqp_url, queue, request)
        await publish_json(amqp_url, queue, request)
        first = await events.until_finish()
        second = await events.until_finish()
        await events.settle()

    assert first.status == second.status == "success", (first.data, second.data)
    directories = set()
    for finish in (first, second):
        config_path = Path(
            finish.data.execution_details["input_model_benchmark"]["performance"].config_path
        )
        directory = config_path.parent
        directories.add(directory)
        stored = FinishEvent.model_validate_json((directory / "result.json").read_bytes())
        assert stored.data.run_id == finish.data.run_id == directory.name
        assert (directory / "input_model_performance_benchmark_0.txt").stat().st_size > 0
    assert len(directories) == 2
    stable = workload_dir(_workspace(worker_config), request)
    assert stable.is_symlink() and stable.resolve() in {d.resolve() for d in directories}


async def _unacked_while_running(queue: str, sample_s: float = 6) -> int:
    """The most deliveries of ``queue`` held unsettled at once over ``sample_s`` (the broker's
    queue statistics refresh every few seconds)."""
    most = 0
    for _ in range(int(sample_s)):
        most = max(most, _unacked(queue))
        await asyncio.sleep(1)
    return most


def _unacked(queue: str) -> int:
    """Deliveries of ``queue`` handed out and not yet settled, as the broker counts them."""
    output = rabbitmqctl("list_queues", "name", "messages_unacknowledged", "-q",
                         "--no-table-headers")  # fmt: skip
    for line in output.splitlines():
        name, _, count = line.rpartition("\t")
        if name.strip() == queue:
            return int(count)
    raise AssertionError(f"queue {queue} not listed: {output}")


def _workspace(config_path: Path) -> Path:
    import yaml

    return Path(yaml.safe_load(config_path.read_text())["worker"]["workspace"])


async def test_the_store_answers_the_same_message_only_and_only_on_the_same_models(
    worker_config: Path, amqp_url: str, names: dict[str, str], sample_dir: Path, tmp_path: Path
) -> None:
    """A message published twice with one message_id is answered once from the store (same
    finish, no second run); a new message with the same body runs again; so does the same
    message once its model file was replaced at the same path."""
    model = tmp_path / "workspace" / "models" / "fp32.pb"
    model.parent.mkdir(parents=True)
    model.write_bytes((sample_dir / "fp32.pb").read_bytes())
    request = short_request(sample_dir)
    request["input_model"]["path"] = str(model)
    queue = names["requests_queue"]
    async with (
        subscribe(amqp_url, names["events_exchange"], request["id"]) as events,
        running_worker(worker_config, amqp_url, queue) as worker,
    ):
        await publish_json(amqp_url, queue, request, message_id="m-1")
        first = await events.until_finish()
        await publish_json(amqp_url, queue, request, message_id="m-1")  # a publisher's retry
        again = await events.until_finish()
        await wait_for_log(worker, "request_completed", duplicate_delivery=True)
        await publish_json(amqp_url, queue, request, message_id="m-2")  # same body, new message
        fresh = await events.until_finish()
        model.write_bytes((sample_dir / "int8.pb").read_bytes())  # replaced at the same path
        await publish_json(amqp_url, queue, request, message_id="m-1")
        replaced = await events.until_finish()
        await events.settle()

    assert first.status == "success" and again == first
    assert first.data.request_message_id == "m-1"
    assert fresh.status == "success" and fresh.data.run_id != first.data.run_id
    assert fresh.data.request_message_id == "m-2"
    assert replaced.status == "success"
    assert replaced.data.run_id not in {first.data.run_id, fresh.data.run_id}
    assert replaced.data.models_sha256 != first.data.models_sha256
    assert len(_starts(events.events)) == 3


async def test_a_cancel_sent_while_the_worker_reconnects_is_not_lost(
    worker_config: Path, amqp_url: str, names: dict[str, str], sample_dir: Path
) -> None:
    """The broker drops the worker's connections mid-benchmark and a cancel is sent before the
    worker is back (it is stopped meanwhile, so it cannot reconnect first): the cancel waits in
    the worker's queue all the same, and the request (requeued when the connection dropped)
    ends cancelled instead of running to success."""
    request = long_request(sample_dir, duration_s=20)
    queue = names["requests_queue"]
    async with (
        subscribe(amqp_url, names["events_exchange"], request["id"]) as events,
        running_worker(worker_config, amqp_url, queue) as worker,
    ):
        await publish_json(amqp_url, queue, request)
        await events.until_start()
        await wait_for_log(worker, "window_planned", timeout_s=120)
        worker.process.send_signal(signal.SIGSTOP)  # it cannot reconnect before the cancel
        try:
            assert close_connections_of(worker.pid, "partition test")
            await asyncio.sleep(1)
            routed = True
            async with BenchmarkClient.connect(
                amqp_url, requests_queue=queue, control_exchange=names["control_exchange"]
            ) as client:
                try:
                    await client.cancel(request["id"], reason="test")
                except PublishFailed:
                    routed = False
        finally:
            worker.process.send_signal(signal.SIGCONT)
        await wait_for_log(worker, "broker_reconnected", timeout_s=60)
        finish = await events.until_finish(timeout_s=120)
        await events.settle(quiet_s=2)

    assert routed, "the worker's control queue must outlive its connection"
    assert finish.status == "error" and finish.data.message == CANCELLED_MESSAGE
    assert all(f.status == "error" for f in _finishes(events.events))


def _memory_watermark() -> str:
    import re

    match = re.search(r"Memory high watermark setting: ([0-9.]+) of", rabbitmqctl("status"))
    return match.group(1) if match else "0.4"


class publishing_blocked:
    """A memory alarm (watermark 0): the broker blocks every publishing connection."""

    def __enter__(self) -> None:
        self._previous = _memory_watermark()
        rabbitmqctl("set_vm_memory_high_watermark", "0")

    def __exit__(self, *_: object) -> None:
        rabbitmqctl("set_vm_memory_high_watermark", self._previous)
