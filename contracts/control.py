"""Control messages on the ``benchmark.control`` topic exchange: cancel a workload.

A publisher (or ``benchmark-worker cancel ID``) sends a :class:`CancelRequest` with routing key
``benchmark.<id>.cancel``. Every worker binds its own exclusive queue to
``benchmark.*.cancel``: the worker running that workload kills its runners and publishes a
``benchmark_finish`` with status ``error`` and message ``cancelled``; a worker that receives
the request later drops it with the same finish.

>>> cancel = CancelRequest(id="job-1", reason="wrong model")
>>> cancel.routing_key
'benchmark.job-1.cancel'
>>> cancel.to_body()
b'{"id":"job-1","reason":"wrong model"}'
>>> parse_cancel(b'{"id": "job-1"}').reason is None
True
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import Contract
from .routing import WORKLOAD_ID_PATTERN, cancel_routing_key

CANCEL_MESSAGE_TYPE: Literal["benchmark_cancel"] = "benchmark_cancel"
"""The AMQP ``type`` property of a cancel message."""
CANCELLED_MESSAGE = "cancelled"
"""The ``message`` of the error finish a cancelled workload ends with."""


class CancelRequest(Contract):
    """Stop workload ``id``: kill it if running, drop it when it arrives if still queued."""

    id: str = Field(pattern=WORKLOAD_ID_PATTERN, description="Workload id to cancel.")
    reason: str | None = Field(
        default=None,
        max_length=1000,
        description="Why, in words; logged by the worker.",
    )

    @property
    def routing_key(self) -> str:
        """``benchmark.<id>.cancel``, on the control exchange."""
        return cancel_routing_key(self.id)


def parse_cancel(body: bytes | str) -> CancelRequest:
    """Parse and validate a cancel message body (raises ``pydantic.ValidationError``)."""
    return CancelRequest.model_validate_json(body)
