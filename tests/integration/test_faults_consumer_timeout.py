"""The broker's consumer timeout firing for real (lowered on the broker for this test): the
worker kills the run, says why, and answers the redelivery with an error finish that names the
cause instead of letting every attempt time out in turn (issue 13)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts import FinishEvent
from tests.integration.bus import dead_letter_messages
from tests.integration.reliability import (
    configure,
    long_request,
    publish_json,
    queue_counts,
    rabbitmqctl,
    runners_by_command,
    running_worker,
    subscribe,
    wait_for_log,
    wait_until,
    workload_dir,
)

pytestmark = [pytest.mark.broker]

CONSUMER_TIMEOUT_MS = 3000
TICK_MS = 1000  # how often a channel checks its deliveries' age (60 s by default)


def _broker_env(key: str) -> str:
    return rabbitmqctl("eval", f"application:get_env(rabbit, {key}).").strip()


@contextlib.contextmanager
def consumer_timeout_lowered() -> Iterator[None]:
    """consumer_timeout and channel_tick_interval lowered on the broker (channels opened from now
    on), put back after."""
    previous = {k: _broker_env(k) for k in ("consumer_timeout", "channel_tick_interval")}
    rabbitmqctl("eval", f"application:set_env(rabbit, consumer_timeout, {CONSUMER_TIMEOUT_MS}).")
    rabbitmqctl("eval", f"application:set_env(rabbit, channel_tick_interval, {TICK_MS}).")
    try:
        yield
    finally:
        for key, value in previous.items():
            if value.startswith("{ok,"):
                setting = value.removeprefix("{ok,").removesuffix("}")
                rabbitmqctl("eval", f"application:set_env(rabbit, {key}, {setting}).")
            else:
                rabbitmqctl("eval", f"application:unset_env(rabbit, {key}).")


async def test_the_brokers_consumer_timeout_ends_the_run_and_the_request_with_a_clear_error(
    worker_config: Path, amqp, amqp_url: str, names: dict[str, str], sample_dir: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    """A request longer than the broker's (lowered) consumer timeout, on a worker told the
    timeout is off: the broker closes the channel, the runners are killed, and the redelivery
    gets an error finish naming the consumer timeout and goes to the dead letters with
    x-reject-reason consumer_timeout; no success, nothing left running or queued."""
    configure(worker_config, broker={"consumer_timeout_s": None})
    request = long_request(sample_dir, duration_s=30)
    queue = names["requests_queue"]
    with consumer_timeout_lowered():
        async with (
            subscribe(amqp_url, names["events_exchange"], request["id"]) as events,
            running_worker(worker_config, amqp_url, queue) as worker,
        ):
            await publish_json(amqp_url, queue, request)
            fired = await wait_for_log(worker, "consumer_timeout_fired", timeout_s=120)
            finish = await events.until_finish(timeout_s=120)
            await events.settle(quiet_s=2)
            (dead,) = await dead_letter_messages(
                await amqp.channel(), names["dead_letter_queue"], 1
            )
            marker = str(workload_dir(tmp_path / "workspace", request))
            await wait_until(lambda: not runners_by_command(marker), 30, "runners of the run")
            left, _ = await queue_counts(amqp_url, queue)

    assert f"Timeout value used: {CONSUMER_TIMEOUT_MS} ms" in fired["broker_says"]
    assert finish.status == "error" and finish.data.step == "worker"
    assert "consumer timeout" in finish.data.message and "raise" in finish.data.message
    assert not [e for e in events.events if isinstance(e, FinishEvent) and e.status == "success"]
    _, headers = dead
    assert headers.get("x-reject-reason") == "consumer_timeout"
    assert left == 0
