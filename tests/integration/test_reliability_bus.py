"""At-least-once under failures of the worker, the broker and the connection between them.

Everything against the real broker with real TensorFlow runners. Broker-wide disruptions
(restart, memory alarm) are short and always undone in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

from contracts import FinishEvent, StartEvent
from tests.integration.reliability import (
    amqp_url_for,
    await_consumer,
    broker_user,
    close_connections_of,
    configure,
    is_dead,
    kill_quietly,
    launch_worker,
    long_request,
    publish_json,
    queue_counts,
    rabbitmqctl,
    runner_processes,
    runners_by_command,
    running_worker,
    short_request,
    subscribe,
    wait_for_log,
    wait_for_runner,
    wait_until,
    workload_dir,
)

pytestmark = [pytest.mark.broker, pytest.mark.tensorflow]

FAST_RECONNECT = {"reconnect_interval_s": 0.5, "heartbeat_s": 5}


def starts_and_finishes(events: list[object]) -> tuple[list[StartEvent], list[FinishEvent]]:
    starts = [e for e in events if isinstance(e, StartEvent)]
    finishes = [e for e in events if isinstance(e, FinishEvent)]
    return starts, finishes


async def test_worker_killed_mid_benchmark_leaves_no_orphan_and_the_request_is_rerun(
    worker_config: Path, amqp_url: str, names: dict[str, str], sample_dir: Path, tmp_path: Path
) -> None:
    """SIGKILL of the worker kills its runners too (parent-death signal); the broker redelivers;
    a restarted worker completes it: one success finish, from a second run marked attempt 2."""
    workspace = tmp_path / "workspace"
    request = long_request(sample_dir, duration_s=5)
    marker = str(workload_dir(workspace, request))
    async with subscribe(amqp_url, names["events_exchange"], request["id"]) as events:
        first = launch_worker(worker_config)
        try:
            await await_consumer(amqp_url, names["requests_queue"])
            await publish_json(amqp_url, names["requests_queue"], request)
            first_start = await events.until_start()
            await wait_for_runner(first, workspace, request)
            runners = runner_processes(first.pid)
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(timeout=30)
            await wait_until(lambda: all(map(is_dead, runners)), 10, "runners dying")
            assert not runners_by_command(marker)
        finally:
            kill_quietly(first)
        async with running_worker(worker_config, amqp_url, names["requests_queue"]) as second:
            finish = await events.until_finish()
            await events.settle()

    starts, finishes = starts_and_finishes(events.events)
    assert finishes == [finish] and finish.status == "success", finish.data
    assert [s.data.attempt for s in starts] == [1, 2]
    assert starts[0] == first_start and starts[1].data.run_id != first_start.data.run_id
    assert finish.data.run_id == starts[1].data.run_id and finish.data.attempt == 2
    finish_body = json.loads(next(m.body for m in events.messages if m.type == "benchmark_finish"))
    assert finish_body["data"]["node"]["pid"] == second.pid


async def test_connections_closed_mid_benchmark_abort_the_run_and_the_rerun_answers_once(
    worker_config: Path, amqp_url: str, names: dict[str, str], sample_dir: Path, tmp_path: Path
) -> None:
    """When the broker closes the worker's connections mid-benchmark, the run is abandoned (its
    runners killed), the worker reconnects and consumes again, and the redelivered request ends
    in exactly one success finish; the broker password never shows in the log or the events."""
    workspace = tmp_path / "workspace"
    request = long_request(sample_dir, duration_s=5)
    with broker_user() as (user, password):
        configure(worker_config, broker={"url": amqp_url_for(amqp_url, user, password),
                                         **FAST_RECONNECT})  # fmt: skip
        async with (
            running_worker(worker_config, amqp_url, names["requests_queue"]) as worker,
            subscribe(amqp_url, names["events_exchange"], request["id"]) as events,
        ):
            await publish_json(amqp_url, names["requests_queue"], request)
            await events.until_start()
            runner = await wait_for_runner(worker, workspace, request)
            assert close_connections_of(worker.pid)
            await wait_for_log(worker, "request_abandoned", reason="channel_closed")
            await wait_until(lambda: is_dead(runner), 10, "runner of the abandoned run")
            finish = await events.until_finish()
            await events.settle()
            follow_up = short_request(sample_dir)
            follow_up["input_model"]["path"] = str(sample_dir / "missing.pb")
            async with subscribe(amqp_url, names["events_exchange"], follow_up["id"]) as more:
                await publish_json(amqp_url, names["requests_queue"], follow_up)
                follow_up_finish = await more.until_finish(timeout_s=60)
        log_text = worker.stderr_path.read_text()

    starts, finishes = starts_and_finishes(events.events)
    assert finishes == [finish] and finish.status == "success", finish.data
    assert [s.data.attempt for s in starts] == [1, 2]
    assert finish.data.run_id == starts[1].data.run_id
    assert "not found" in follow_up_finish.data.message  # still consuming after the reconnect
    assert password not in log_text
    assert not any(password in m.body.decode() for m in events.messages)


@contextlib.contextmanager
def broker_stopped_briefly() -> Iterator[None]:
    """``rabbitmqctl stop_app`` now; ``start_app`` when the block ends, whatever happens."""
    rabbitmqctl("stop_app")
    try:
        yield
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")


async def test_broker_restart_mid_benchmark_ends_in_exactly_one_success(
    worker_config: Path, amqp_url: str, names: dict[str, str], sample_dir: Path, tmp_path: Path
) -> None:
    """A broker restart (stop_app/start_app) mid-benchmark: the worker reconnects, its consumer
    is restored, the request is run again and subscribers see exactly one success finish."""
    workspace = tmp_path / "workspace"
    request = long_request(sample_dir, duration_s=5)
    configure(worker_config, broker=FAST_RECONNECT)
    async with (
        running_worker(worker_config, amqp_url, names["requests_queue"]) as worker,
        subscribe(amqp_url, names["events_exchange"], request["id"]) as events,
    ):
        await publish_json(amqp_url, names["requests_queue"], request)
        await events.until_start()
        await wait_for_runner(worker, workspace, request)
        with broker_stopped_briefly():
            await wait_for_log(worker, "request_abandoned", timeout_s=30)
        finish = await events.until_finish()
        await events.settle()

    starts, finishes = starts_and_finishes(events.events)
    assert finishes == [finish] and finish.status == "success", finish.data
    assert len(starts) == 2 and starts[-1].data.attempt >= 2
    assert finish.data.run_id == starts[-1].data.run_id


async def test_a_consumer_cancelled_by_the_broker_is_restored(
    worker_config: Path, amqp_url: str, names: dict[str, str], sample_dir: Path
) -> None:
    """Deleting the requests queue makes the broker cancel the worker's consumer; the worker
    declares the queue again (same arguments) and keeps consuming."""
    configure(worker_config, worker={"consumer_check_s": 1})
    request = short_request(sample_dir)
    request["input_model"]["path"] = str(sample_dir / "missing.pb")
    async with running_worker(worker_config, amqp_url, names["requests_queue"]) as worker:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            await (await connection.channel()).queue_delete(names["requests_queue"])
        await wait_until(
            lambda: "cancelled by the broker" in worker.stderr_path.read_text(), 10, "cancel seen"
        )
        async with subscribe(amqp_url, names["events_exchange"], request["id"]) as events:
            await _publish_when_declared(amqp_url, names["requests_queue"], request)
            finish = await events.until_finish(timeout_s=60)
        assert worker.process.poll() is None
    queues = rabbitmqctl("list_queues", "name", "type", "--no-table-headers", "-q")

    assert finish.status == "error" and "not found" in finish.data.message
    assert f"{names['requests_queue']}\tquorum" in queues.splitlines()


async def _publish_when_declared(amqp_url: str, queue: str, request: dict[str, object]) -> None:
    """Publish once the worker has declared ``queue`` again (a passive declare succeeds)."""

    async def declared() -> bool:
        try:
            await queue_counts(amqp_url, queue)
        except aio_pika.exceptions.ChannelClosed:
            return False
        return True

    for _ in range(100):
        if await declared():
            await publish_json(amqp_url, queue, request)
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{queue} was not declared again")


async def test_a_consumer_that_cannot_be_restored_stops_the_worker_with_an_error(
    worker_config: Path, amqp_url: str, names: dict[str, str]
) -> None:
    """When the broker cancels the consumer and the queue cannot be declared again (here: the
    worker's user lost its configure permission), the worker logs consumer_lost and exits
    non-zero instead of idling silently."""
    with broker_user() as (user, password):
        configure(
            worker_config,
            broker={"url": amqp_url_for(amqp_url, user, password), **FAST_RECONNECT},
            worker={"consumer_check_s": 1},
        )
        worker = launch_worker(worker_config)
        try:
            connection = await aio_pika.connect(amqp_url)
            async with connection:
                await await_consumer(amqp_url, names["requests_queue"])
                rabbitmqctl("set_permissions", "-p", "/", user, "^$", ".*", ".*")
                await (await connection.channel()).queue_delete(names["requests_queue"])
            await wait_for_log(worker, "consumer_lost", timeout_s=30)
            code = await asyncio.to_thread(worker.process.wait, 60)
        finally:
            kill_quietly(worker)

    assert code == 3
    assert "consumer_missing" in [line.get("event") for line in worker.log_lines()]


def _memory_watermark() -> str:
    match = re.search(r"Memory high watermark setting: ([0-9.]+) of", rabbitmqctl("status"))
    return match.group(1) if match else "0.4"


@contextlib.contextmanager
def publishing_blocked() -> Iterator[None]:
    """A memory alarm (watermark 0): the broker blocks every publishing connection."""
    previous = _memory_watermark()
    rabbitmqctl("set_vm_memory_high_watermark", "0")
    try:
        yield
    finally:
        rabbitmqctl("set_vm_memory_high_watermark", previous)


async def test_an_unconfirmed_finish_leaves_the_request_unacked_and_it_is_answered_later(
    worker_config: Path, amqp_url: str, names: dict[str, str], sample_dir: Path
) -> None:
    """With publishing blocked by the broker for longer than the worker holds a finish
    (``event_hold_s``), the request is requeued, not acked; once unblocked the redelivery of that
    same message publishes the stored finish (no rerun) and the worker goes on."""
    configure(
        worker_config, broker={"publish_timeout_s": 3, "event_hold_s": 4, "delivery_limit": 10}
    )
    request = long_request(sample_dir, duration_s=3)
    async with (
        running_worker(worker_config, amqp_url, names["requests_queue"]) as worker,
        subscribe(amqp_url, names["events_exchange"], request["id"]) as events,
    ):
        await publish_json(amqp_url, names["requests_queue"], request)
        await events.until_start()
        with publishing_blocked():
            await wait_for_log(worker, "request_requeued", reason="publish_failed", timeout_s=120)
        finish = await events.until_finish(timeout_s=60)
        await wait_for_log(worker, "request_completed", duplicate_delivery=True, timeout_s=60)
        await events.settle()
        requests_left, _ = await queue_counts(amqp_url, names["requests_queue"])
        dead, _ = await queue_counts(amqp_url, names["dead_letter_queue"])

    starts, finishes = starts_and_finishes(events.events)
    assert len(starts) == 1 and finish.status == "success"
    assert {m.message_id for m in events.messages if m.type == "benchmark_finish"} == {
        f"{starts[0].data.run_id}.finish"
    }
    assert all(f == finish for f in finishes)
    assert (requests_left, dead) == (0, 0)


async def test_sigterm_lets_the_current_request_finish_within_the_grace_period(
    worker_config: Path, amqp_url: str, names: dict[str, str], sample_dir: Path, tmp_path: Path
) -> None:
    """SIGTERM mid-benchmark: the worker stops consuming (a second request stays queued),
    finishes the current one within shutdown_grace_s, publishes its success, exits 0."""
    configure(worker_config, worker={"shutdown_grace_s": 120})
    request = long_request(sample_dir, duration_s=4)
    waiting = short_request(sample_dir)
    worker = launch_worker(worker_config)
    try:
        await await_consumer(amqp_url, names["requests_queue"])
        async with subscribe(amqp_url, names["events_exchange"], request["id"]) as events:
            await publish_json(amqp_url, names["requests_queue"], request)
            await wait_for_runner(worker, tmp_path / "workspace", request)
            worker.process.send_signal(signal.SIGTERM)
            await wait_for_log(worker, "worker_stopping")
            await publish_json(amqp_url, names["requests_queue"], waiting)
            finish = await events.until_finish()
            code = await asyncio.to_thread(worker.process.wait, 60)
    finally:
        kill_quietly(worker)
    waiting_left, consumers = await queue_counts(amqp_url, names["requests_queue"])

    assert code == 0 and finish.status == "success"
    assert (waiting_left, consumers) == (1, 0)


async def test_sigterm_past_the_grace_period_kills_the_runners_and_requeues_the_request(
    worker_config: Path, amqp_url: str, names: dict[str, str], sample_dir: Path, tmp_path: Path
) -> None:
    """SIGTERM with a short grace period: the runners are killed, no finish is published, the
    request goes back to the queue, and the worker exits 0."""
    configure(worker_config, worker={"shutdown_grace_s": 1})
    request = long_request(sample_dir, duration_s=60)
    marker = str(workload_dir(tmp_path / "workspace", request))
    worker = launch_worker(worker_config)
    try:
        await await_consumer(amqp_url, names["requests_queue"])
        async with subscribe(amqp_url, names["events_exchange"], request["id"]) as events:
            await publish_json(amqp_url, names["requests_queue"], request)
            await wait_for_runner(worker, tmp_path / "workspace", request)
            worker.process.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(worker.process.wait, 60)
            await events.settle()
    finally:
        kill_quietly(worker)
    requeued, consumers = await queue_counts(amqp_url, names["requests_queue"])

    assert code == 0
    assert not runners_by_command(marker)
    assert not any(isinstance(e, FinishEvent) for e in events.events)
    assert (requeued, consumers) == (1, 0)
    assert "shutdown_grace_expired" in [line.get("event") for line in worker.log_lines()]


async def test_a_request_that_keeps_killing_its_worker_ends_in_the_dead_letters(
    worker_config: Path, amqp_url: str, names: dict[str, str], sample_dir: Path, tmp_path: Path
) -> None:
    """A request whose worker dies every time is not retried forever: past the queue's delivery
    limit the broker dead-letters it (unchanged, x-death reason delivery_limit)."""
    configure(worker_config, broker={"delivery_limit": 1})
    request = long_request(sample_dir, duration_s=30)
    for attempt in (1, 2):
        worker = launch_worker(worker_config)
        try:
            await await_consumer(amqp_url, names["requests_queue"])
            if attempt == 1:
                await publish_json(amqp_url, names["requests_queue"], request)
            await wait_for_runner(worker, tmp_path / "workspace", request)
        finally:
            kill_quietly(worker)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        dead = await channel.declare_queue(names["dead_letter_queue"], passive=True)
        message = None
        for _ in range(100):
            message = await dead.get(fail=False)
            if message is not None:
                break
            await asyncio.sleep(0.1)
        assert message is not None, "nothing dead-lettered"
        await message.ack()
    requests_left, _ = await queue_counts(amqp_url, names["requests_queue"])

    assert json.loads(message.body) == request
    assert message.headers["x-death"][0]["reason"] == "delivery_limit"
    assert requests_left == 0
