"""Events on ``benchmark.events``: INC's envelope ``{subject, status, data}``.

A subscriber parses any body with :func:`parse_event`:

>>> event = parse_event(b'{"subject": "benchmark_start", "status": "success",'
...                     b' "data": {"id": "job-1", "message": "started"}}')
>>> event.data.message, event.routing_key
('started', 'benchmark.job-1.start')

Event data allows fields beyond the ones typed here, so subscribers keep working when the
worker adds figures.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, model_validator

from ._base import OpenContract
from .requests import Mode, ModelRole
from .routing import Phase, routing_key

Subject = Literal["benchmark_start", "benchmark_progress", "benchmark_finish"]
PHASE_OF_SUBJECT: dict[str, Phase] = {
    "benchmark_start": "start",
    "benchmark_progress": "progress",
    "benchmark_finish": "finish",
}


class StepDetails(OpenContract):
    """``execution_details.<role>_benchmark.<mode>``: the seed's fields, then ours."""

    instances: int
    cores_per_instance: int
    model_path: str
    precision: str
    mode: Mode
    batch_size: int
    framework: str
    config_path: str
    benchmark_script: str
    command: str


class StartData(OpenContract):
    id: str
    message: str = "started"


class ResultData(OpenContract):
    """The cumulative payload of ``benchmark_progress`` and of a successful finish."""

    id: str
    execution_details: dict[str, dict[str, StepDetails]]
    progress: str
    current_step: int
    number_of_steps: int
    perf_throughput_input_model: float | None = None
    perf_throughput_optimized_model: float | None = None
    acc_input_model: float | None = None
    acc_optimized_model: float | None = None


class ErrorData(OpenContract):
    """The payload of ``benchmark_finish`` with status ``error``."""

    id: str | None = None
    message: str
    step: str = Field(description="What failed, e.g. 'input_model/performance' or 'validate'.")


class _Event(OpenContract):
    @property
    def phase(self) -> Phase:
        return PHASE_OF_SUBJECT[self.subject]  # type: ignore[attr-defined]

    @property
    def workload_id(self) -> str | None:
        return self.data.id  # type: ignore[attr-defined,no-any-return]

    @property
    def routing_key(self) -> str:
        if self.workload_id is None:
            raise ValueError("an event without a workload id cannot be routed")
        return routing_key(self.workload_id, self.phase)

    def to_body(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class StartEvent(_Event):
    subject: Literal["benchmark_start"] = "benchmark_start"
    status: Literal["success"] = "success"
    data: StartData


class ProgressEvent(_Event):
    subject: Literal["benchmark_progress"] = "benchmark_progress"
    status: Literal["success"] = "success"
    data: ResultData


class FinishEvent(_Event):
    subject: Literal["benchmark_finish"] = "benchmark_finish"
    status: Literal["success", "error"]
    data: ResultData | ErrorData

    @model_validator(mode="before")
    @classmethod
    def _data_by_status(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("data"), dict):
            model = ErrorData if value.get("status") == "error" else ResultData
            value = {**value, "data": model.model_validate(value["data"])}
        return value

    @property
    def ok(self) -> bool:
        return self.status == "success"


Event = Annotated[StartEvent | ProgressEvent | FinishEvent, Field(discriminator="subject")]
_EVENT_ADAPTER: TypeAdapter[StartEvent | ProgressEvent | FinishEvent] = TypeAdapter(Event)


def parse_event(body: bytes | str) -> StartEvent | ProgressEvent | FinishEvent:
    """Parse one event body as published by the worker."""
    return _EVENT_ADAPTER.validate_json(body)


def error_finish(workload_id: str | None, message: str, step: str, **extra: Any) -> FinishEvent:
    """A ``benchmark_finish`` with status ``error``."""
    return FinishEvent(
        status="error", data=ErrorData(id=workload_id, message=message, step=step, **extra)
    )


def step_key(role: ModelRole) -> str:
    """The ``execution_details`` key of a model: ``input_model_benchmark``."""
    return f"{role}_benchmark"
