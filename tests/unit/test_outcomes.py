"""Every row of the outcome table (service/consumer/outcomes.py) with a fake delivery, a fake
publisher and a fake benchmark: no broker, milliseconds each. The same rows are tested over the
real broker in tests/integration/test_reliability_*.py and test_faults_*.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from contracts import BenchmarkRequest, FinishEvent, ResultData, StartEvent, error_finish
from service.config import Settings
from service.consumer import outcomes
from service.consumer.handling import RequestHandler
from service.consumer.outcomes import Action
from service.engine import results, run_dirs
from service.engine.workload import model_hashes, workload_directory
from service.errors import PublishFailed
from service.fleet.member import Fleet


class FakeChannel:
    def __init__(self, closed: bool = False) -> None:
        self.is_closed = closed

    async def basic_qos(self, **_: Any) -> None:
        if self.is_closed:
            raise ConnectionError("closed")


class FakeDelivery:
    """What the worker reads of an aio-pika delivery, and how it was settled."""

    def __init__(
        self, body: bytes, *, message_id: str = "m-1", delivery_count: int | None = None,
        channel_closed: bool = False,
    ) -> None:  # fmt: skip
        self.body = body
        self.message_id = message_id
        self.content_type = "application/json"
        self.content_encoding = None
        self.headers = {} if delivery_count is None else {"x-delivery-count": delivery_count}
        self.redelivered = bool(delivery_count)
        self.delivery_tag = 1
        self.channel = FakeChannel(channel_closed)
        self.settled: list[str] = []

    async def ack(self) -> None:
        self.settled.append("ack")

    async def nack(self, requeue: bool = True) -> None:
        self.settled.append("requeue" if requeue else "nack")

    async def reject(self, requeue: bool = False) -> None:
        self.settled.append("reject")


class FakePublisher:
    def __init__(self, fail: bool = False) -> None:
        self.events: list[Any] = []
        self.fail = fail

    async def publish(self, event: Any, timeout_s: float | None = None) -> None:
        self.events.append(event)

    async def publish_held(self, event: Any, hold_s: float) -> None:
        if self.fail:
            raise PublishFailed("not confirmed within 900 s")
        self.events.append(event)

    async def publish_best_effort(self, event: Any) -> None:
        self.events.append(event)


class FakeDeadLetters:
    def __init__(self, confirmed: bool = True) -> None:
        self.confirmed = confirmed
        self.sent: list[str] = []

    async def send(self, message: Any, exc: Any) -> bool:
        self.sent.append(exc.reason)
        return self.confirmed


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "fp32.pb").write_bytes(b"model")
    return Settings.model_validate({"worker": {"workspace": str(tmp_path)}})


@pytest.fixture
def body(tmp_path: Path) -> dict[str, Any]:
    return {"id": "w1", "input_model": {"precision": "fp32", "path": str(tmp_path / "fp32.pb")}}


def _success(request: BenchmarkRequest, run_id: str, labels: dict[str, Any]) -> FinishEvent:
    return FinishEvent(status="success", data=ResultData(
        id=request.id, run_id=run_id, execution_details={}, progress="1/1", current_step=1,
        number_of_steps=1, **labels,
    ))  # fmt: skip


class Bench:
    """A fake workload engine: emits a start, returns a finish (or raises)."""

    def __init__(self, result: str = "success") -> None:
        self.result = result
        self.calls = 0

    async def __call__(
        self, request: BenchmarkRequest, run_id: str, labels: dict[str, Any], emit: Any
    ) -> FinishEvent:
        self.calls += 1
        await emit(StartEvent(data={"id": request.id, "message": "started", "run_id": run_id}))
        if self.result == "crash":
            raise RuntimeError("a bug")
        if self.result == "error":
            return error_finish(request.id, "model not found", "prepare", run_id=run_id)
        return _success(request, run_id, labels)


def _handler(settings: Settings, publisher: FakePublisher, bench: Bench) -> RequestHandler:
    return RequestHandler(settings, Fleet(settings, (0,)), publisher, bench)


async def _settle(handler_outcome: outcomes.Outcome, delivery: FakeDelivery,
                  dead: FakeDeadLetters | None = None) -> list[str]:  # fmt: skip
    await outcomes.apply(delivery, handler_outcome, dead or FakeDeadLetters())  # type: ignore[arg-type]
    return delivery.settled


def _finishes(publisher: FakePublisher) -> list[FinishEvent]:
    return [e for e in publisher.events if isinstance(e, FinishEvent)]


async def test_success_is_acked_after_its_finish(settings: Settings, body: dict[str, Any]) -> None:
    publisher, bench = FakePublisher(), Bench()
    delivery = FakeDelivery(json.dumps(body).encode())
    outcome = await _handler(settings, publisher, bench).handle(delivery, 0.0)  # type: ignore[arg-type]
    assert outcome is outcomes.ANSWERED and await _settle(outcome, delivery) == ["ack"]
    (finish,) = _finishes(publisher)
    assert finish.ok and finish.data.request_message_id == "m-1"


async def test_a_failed_benchmark_is_acked_with_its_error_finish(
    settings: Settings, body: dict[str, Any]
) -> None:
    publisher = FakePublisher()
    delivery = FakeDelivery(json.dumps(body).encode())
    outcome = await _handler(settings, publisher, Bench("error")).handle(delivery, 0.0)  # type: ignore[arg-type]
    assert outcome is outcomes.ANSWERED and await _settle(outcome, delivery) == ["ack"]
    assert _finishes(publisher)[0].data.step == "prepare"


@pytest.mark.parametrize(
    ("raw", "finish_expected"),
    [(b'{"id": "broken", ', False), (b'{"id": "w2", "input_model": {"path": "x.pb"}}', True)],
)
async def test_a_bad_body_is_dead_lettered_with_its_reason(
    settings: Settings, raw: bytes, finish_expected: bool
) -> None:
    publisher, bench, dead = FakePublisher(), Bench(), FakeDeadLetters()
    delivery = FakeDelivery(raw)
    outcome = await _handler(settings, publisher, bench).handle(delivery, 0.0)  # type: ignore[arg-type]
    assert outcome.action is Action.DEAD_LETTER and bench.calls == 0
    assert await _settle(outcome, delivery, dead) == ["ack"] and len(dead.sent) == 1
    assert bool(_finishes(publisher)) is finish_expected


async def test_a_dead_letter_copy_not_confirmed_falls_back_to_the_brokers_own(
    settings: Settings,
) -> None:
    delivery = FakeDelivery(b"not json")
    outcome = await _handler(settings, FakePublisher(), Bench()).handle(delivery, 0.0)  # type: ignore[arg-type]
    assert await _settle(outcome, delivery, FakeDeadLetters(confirmed=False)) == ["reject"]


async def test_an_unconfirmed_finish_requeues_the_request(
    settings: Settings, body: dict[str, Any]
) -> None:
    delivery = FakeDelivery(json.dumps(body).encode())
    outcome = await _handler(settings, FakePublisher(fail=True), Bench()).handle(delivery, 0.0)  # type: ignore[arg-type]
    assert outcome is outcomes.PUBLISH_FAILED and await _settle(outcome, delivery) == ["requeue"]


async def test_a_delivery_no_longer_held_gets_no_finish(
    settings: Settings, body: dict[str, Any]
) -> None:
    publisher = FakePublisher()
    delivery = FakeDelivery(json.dumps(body).encode(), channel_closed=True)
    outcome = await _handler(settings, publisher, Bench()).handle(delivery, 0.0)  # type: ignore[arg-type]
    assert outcome is outcomes.DELIVERY_LOST and _finishes(publisher) == []


async def test_the_same_message_answered_before_is_answered_from_the_store(
    settings: Settings, body: dict[str, Any]
) -> None:
    request = BenchmarkRequest.model_validate(body)
    key = results.ResultKey(
        "m-1", results.request_digest(request),
        model_hashes(request, settings.worker.effective_roots()),
    )  # fmt: skip
    directory = run_dirs.create_run_directory(workload_directory(request, settings), "old", 5)
    results.write_result(directory, _success(request, "old", key.labels()))
    publisher, bench = FakePublisher(), Bench()
    delivery = FakeDelivery(json.dumps(body).encode())
    outcome = await _handler(settings, publisher, bench).handle(delivery, 0.0)  # type: ignore[arg-type]
    assert outcome is outcomes.ANSWERED and bench.calls == 0
    assert [f.data.run_id for f in _finishes(publisher)] == ["old"]


async def test_a_valid_request_on_the_reject_lane_is_handed_back(
    settings: Settings, body: dict[str, Any]
) -> None:
    bench = Bench()
    delivery = FakeDelivery(json.dumps(body).encode())
    outcome = await _handler(settings, FakePublisher(), bench).handle_on_lane(delivery)  # type: ignore[arg-type]
    assert outcome is outcomes.HANDED_BACK and bench.calls == 0
    assert await _settle(outcome, delivery) == ["requeue"]


@pytest.mark.parametrize(
    ("delivery_count", "settled"), [(None, "requeue"), (1, "requeue"), (2, "requeue"), (3, "ack")]
)
async def test_an_internal_error_is_retried_while_deliveries_remain(
    settings: Settings, body: dict[str, Any], delivery_count: int | None, settled: str
) -> None:
    publisher = FakePublisher()
    delivery = FakeDelivery(json.dumps(body).encode(), delivery_count=delivery_count)
    outcome = await _handler(settings, publisher, Bench("crash")).handle(delivery, 0.0)  # type: ignore[arg-type]
    assert await _settle(outcome, delivery) == [settled]
    assert bool(_finishes(publisher)) is (settled == "ack")  # the error finish: last one only


async def test_a_request_the_consumer_timeout_killed_is_not_run_again(
    settings: Settings, body: dict[str, Any]
) -> None:
    publisher, bench, dead = FakePublisher(), Bench(), FakeDeadLetters()
    handler = _handler(settings, publisher, bench)
    handler.timed_out.add("m-1", "delivery acknowledgement on channel 1 timed out")
    delivery = FakeDelivery(json.dumps(body).encode(), delivery_count=1)
    outcome = await handler.handle(delivery, 0.0)  # type: ignore[arg-type]
    assert bench.calls == 0 and await _settle(outcome, delivery, dead) == ["ack"]
    assert dead.sent == ["consumer_timeout"]
    (finish,) = _finishes(publisher)
    assert finish.data.step == "worker" and "consumer timeout" in finish.data.message


async def test_channel_lost_and_shutdown_rows(settings: Settings) -> None:
    lost, shutdown = FakeDelivery(b"{}"), FakeDelivery(b"{}")
    assert await _settle(outcomes.CHANNEL_LOST, lost) == []
    assert await _settle(outcomes.SHUTDOWN, shutdown) == ["requeue"]
