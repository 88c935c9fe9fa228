"""The reject lane's open/close rules with a fake queue: no broker, milliseconds each. The same
lane meets a real flood in tests/integration/test_reliability_input.py."""

from __future__ import annotations

import asyncio
from typing import Any

from service.consumer.reject_lane import RejectLane


class FakeQueue:
    """Counts consume and cancel calls as the lane makes them."""

    def __init__(self) -> None:
        self.consumers: list[str] = []
        self.opened = 0

    async def consume(self, callback: Any) -> str:
        self.opened += 1
        tag = f"ctag-{self.opened}"
        self.consumers.append(tag)
        return tag

    async def cancel(self, tag: str, **_: Any) -> None:
        self.consumers.remove(tag)


async def _nothing(_: Any) -> None:
    return None


def _lane(queue: FakeQueue, hand_back_shut_s: float = 30.0) -> RejectLane:
    return RejectLane(
        queue,  # type: ignore[arg-type]
        _nothing,
        open_after=3,
        quiet_s=60,
        hand_back_shut_s=hand_back_shut_s,
    )


REQUEST_A = b'{"id": "a"}'
REQUEST_Q = b'{"id": "q"}'


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _rejections(lane: RejectLane, count: int) -> None:
    """``count`` bodies rejected in a row by the main consumer, then what they spawned ran."""
    for _ in range(count):
        lane.rejected()
    await _settle()


async def test_the_lane_opens_after_rejections_in_a_row_and_closes_on_a_valid_request() -> None:
    queue = FakeQueue()
    lane = _lane(queue)
    await _rejections(lane, 2)
    assert not lane.is_open
    await _rejections(lane, 1)
    assert lane.is_open and len(queue.consumers) == 1
    lane.accepted(REQUEST_A)
    await _settle()
    assert not lane.is_open and queue.consumers == []


async def test_after_a_hand_back_rejections_do_not_reopen_the_lane_until_that_request_is_taken(
) -> None:  # fmt: skip
    """The loop the flood test caught: the lane handed a request back, and the main consumer's
    next rejections reopened the lane before the request reached it: the lane got it again.
    A different valid request taken in between (one that fails at once) must not reopen it."""
    queue = FakeQueue()
    lane = _lane(queue)
    await _rejections(lane, 3)
    assert lane.is_open
    await lane.hand_back(REQUEST_A)
    lane.accepted(REQUEST_Q)  # another request, taken by the main consumer meanwhile
    await _rejections(lane, 10)
    assert not lane.is_open and queue.opened == 1
    lane.accepted(REQUEST_A)  # the main consumer took the handed-back request
    await _rejections(lane, 3)
    assert lane.is_open and queue.opened == 2


async def test_an_open_already_waiting_when_the_request_is_handed_back_does_not_reopen() -> None:
    queue = FakeQueue()
    lane = _lane(queue)
    await _rejections(lane, 3)
    closing = asyncio.ensure_future(lane.hand_back(REQUEST_A))
    await asyncio.sleep(0)  # the close holds the lane's lock...
    for _ in range(3):
        lane.rejected()  # ...while these ask for an open that waits on it
    await closing
    await _settle()
    assert not lane.is_open and queue.opened == 1


async def test_the_hand_back_shut_ends_after_its_bound_when_another_worker_took_the_request(
) -> None:  # fmt: skip
    queue = FakeQueue()
    lane = _lane(queue, hand_back_shut_s=0.05)
    await _rejections(lane, 3)
    await lane.hand_back(REQUEST_A)
    await asyncio.sleep(0.1)
    await _rejections(lane, 3)
    assert lane.is_open and queue.opened == 2
