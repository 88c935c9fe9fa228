"""Events on ``benchmark.events``: INC's envelope ``{subject, status, data}``.

A subscriber parses any body with :func:`parse_event`:

>>> event = parse_event(b'{"subject": "benchmark_start", "status": "success",'
...                     b' "data": {"id": "job-1", "message": "started"}}')
>>> event.data.message, event.routing_key
('started', 'benchmark.job-1.start')

Event data allows fields beyond the ones typed here, so subscribers keep working when the
worker adds figures. A finish is typed by its status:

>>> finish = parse_event(b'{"subject": "benchmark_finish", "status": "error",'
...                      b' "data": {"id": "job-1", "message": "cancelled", "step": "plan"}}')
>>> finish.ok, type(finish.data).__name__, finish.data.step
(False, 'ErrorData', 'plan')
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, model_validator

from ._base import OpenContract
from .node import NodeIdentity
from .requests import Mode, ModelRole
from .routing import Phase, routing_key

Subject = Literal["benchmark_start", "benchmark_progress", "benchmark_finish"]
PHASE_OF_SUBJECT: dict[str, Phase] = {
    "benchmark_start": "start",
    "benchmark_progress": "progress",
    "benchmark_finish": "finish",
}


class StepDetails(OpenContract):
    """``execution_details.<role>_benchmark.<mode>``: the seed's fields, then ours.

    Fields beyond these (per-instance figures, more statistics) pass through untyped.
    """

    instances: int = Field(description="Processes run side by side (1 for accuracy).")
    cores_per_instance: int
    model_path: str = Field(description="The model path as given in the request.")
    precision: str
    mode: Mode
    batch_size: int
    framework: str
    config_path: str = Field(description="The config.yaml the worker wrote for this workload.")
    benchmark_script: str
    command: str = Field(description="The first instance's command line; runnable by hand.")
    commands: list[str] | None = Field(default=None, description="One per instance.")
    cpus: list[list[int]] | None = Field(default=None, description="CPUs of each instance.")
    log_paths: list[str] | None = None
    throughput_samples_per_s: float | None = Field(
        default=None, description="All instances together, over one common window."
    )
    latency_ms: float | None = Field(
        default=None, description="Mean of the instance mean latencies (INC's 'Latency average')."
    )
    latency_ms_mean: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_p90: float | None = None
    latency_ms_p99: float | None = None
    window_s: float | None = Field(default=None, description="Length of the common window.")
    per_instance: list[dict[str, Any]] | None = Field(
        default=None, description="Figures of each instance: pid, CPUs, throughput, latency..."
    )
    accuracy: float | None = Field(default=None, ge=0, le=1, description="Fraction 0..1.")
    correct: int | None = None
    samples: int | None = None
    tensorflow_version: str | None = None


class SweepFigures(OpenContract):
    """One model at one sweep point: its main figures and verdict, or why it failed."""

    throughput_samples_per_s: float | None = None
    throughput_ci95: list[float] | None = Field(default=None, description="95% interval.")
    latency_ms: float | None = Field(default=None, description="Mean of instance means, ms.")
    latency_ms_p50: float | None = None
    latency_ms_p90: float | None = None
    latency_ms_p99: float | None = Field(
        default=None, description="Null when the window was too short to back a p99."
    )
    verdict: dict[str, Any] | None = Field(default=None, description="This point's verdict.")
    error: str | None = Field(default=None, description="Why this point has no figures.")


class SweepRow(OpenContract):
    """One row of a sweep: a batch size and layout, both models' figures, the speedup."""

    batch_size: int
    instances: int
    cores_per_instance: int
    main: bool = Field(
        default=False, description="The request's own point, measured by the ordinary steps."
    )
    models: dict[ModelRole, SweepFigures] = Field(default_factory=dict)
    speedup: float | None = Field(default=None, description="Optimized / input throughput.")
    speedup_ci95: list[float] | None = None


class BestPoint(OpenContract):
    """Where a model did best, and the figure it did best by."""

    batch_size: int
    instances: int
    cores_per_instance: int
    throughput_samples_per_s: float | None = None
    latency_ms_p99: float | None = None
    latency_ms: float | None = None


class BestPoints(OpenContract):
    by_throughput: BestPoint | None = Field(default=None, description="Highest throughput.")
    by_latency: BestPoint | None = Field(
        default=None, description="Lowest p99 (the mean where a point has no p99)."
    )


class SweepResult(OpenContract):
    """``sweep`` of a progress or finish event: every point measured so far, and the best."""

    points: list[SweepRow]
    best: dict[ModelRole, BestPoints] = Field(default_factory=dict)
    order: str | None = Field(default=None, description="How the runs were ordered.")


class StartData(OpenContract):
    """The payload of ``benchmark_start``."""

    id: str
    message: str = "started"
    run_id: str | None = Field(default=None, description="Unique per attempt of this workload.")
    node: NodeIdentity | None = Field(default=None, description="The worker running it.")


class ResultData(OpenContract):
    """The cumulative payload of ``benchmark_progress`` and of a successful finish."""

    id: str
    execution_details: dict[str, dict[str, StepDetails]] = Field(
        description="execution_details.<input_model|optimized_model>_benchmark."
        "<performance|accuracy>: the steps done so far."
    )
    progress: str = Field(pattern=r"^[0-9]+/[0-9]+$", description="'k/n': k of n steps done.")
    current_step: int
    number_of_steps: int
    perf_throughput_input_model: float | None = Field(default=None, description="Samples/s.")
    perf_throughput_optimized_model: float | None = Field(default=None, description="Samples/s.")
    perf_latency_input_model: float | None = Field(default=None, description="Mean, ms.")
    perf_latency_optimized_model: float | None = Field(default=None, description="Mean, ms.")
    acc_input_model: float | None = Field(default=None, description="Fraction 0..1.")
    acc_optimized_model: float | None = Field(default=None, description="Fraction 0..1.")
    speedup: float | None = Field(
        default=None, description="Optimized / input throughput (finish only)."
    )
    accuracy_delta: float | None = Field(
        default=None, description="Optimized minus input accuracy (finish only)."
    )
    sweep: SweepResult | None = Field(
        default=None, description="With benchmark.sweep: the table of points and the best."
    )
    run_id: str | None = None
    node: NodeIdentity | None = None


class ErrorData(OpenContract):
    """The payload of ``benchmark_finish`` with status ``error``."""

    id: str | None = Field(default=None, description="Missing when the body had no usable id.")
    message: str = Field(description="What went wrong, in words a user can act on.")
    step: str = Field(description="What failed, e.g. 'input_model/performance' or 'validate'.")
    run_id: str | None = None
    node: NodeIdentity | None = None


def _envelope_is_required(schema: dict[str, Any]) -> None:
    """JSON Schema of an envelope: the worker always sends subject, status and data."""
    schema["required"] = ["subject", "status", "data"]


class _Event(OpenContract):
    model_config = ConfigDict(json_schema_extra=_envelope_is_required)

    @property
    def phase(self) -> Phase:
        """``start``, ``progress`` or ``finish``: the last part of the routing key."""
        return PHASE_OF_SUBJECT[self.subject]  # type: ignore[attr-defined]

    @property
    def workload_id(self) -> str | None:
        """The workload this event is about."""
        return self.data.id  # type: ignore[attr-defined,no-any-return]

    @property
    def routing_key(self) -> str:
        """``benchmark.<id>.<phase>``, on the events exchange."""
        if self.workload_id is None:
            raise ValueError("an event without a workload id cannot be routed")
        return routing_key(self.workload_id, self.phase)

    def to_body(self) -> bytes:
        """The UTF-8 JSON body, without null fields."""
        return self.model_dump_json(exclude_none=True).encode()


class StartEvent(_Event):
    """``benchmark_start``: a worker took the request and its paths and plan are valid."""

    subject: Literal["benchmark_start"] = "benchmark_start"
    status: Literal["success"] = "success"
    data: StartData


class ProgressEvent(_Event):
    """``benchmark_progress``: one more step done; the cumulative payload so far."""

    subject: Literal["benchmark_progress"] = "benchmark_progress"
    status: Literal["success"] = "success"
    data: ResultData


def _data_follows_status(schema: dict[str, Any]) -> None:
    """JSON Schema of a finish: ``error`` carries ErrorData, ``success`` ResultData."""
    _envelope_is_required(schema)
    result_ref, error_ref = schema["properties"]["data"]["anyOf"]  # in the annotation's order
    error, result = ({"properties": {"data": dict(ref)}} for ref in (error_ref, result_ref))
    schema["if"] = {"properties": {"status": {"const": "error"}}, "required": ["status"]}
    schema["then"], schema["else"] = error, result


class FinishEvent(_Event):
    """``benchmark_finish``, once per request: the result, or what failed."""

    model_config = ConfigDict(json_schema_extra=_data_follows_status)

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
        """True for status ``success``."""
        return self.status == "success"


AnyEvent = StartEvent | ProgressEvent | FinishEvent
"""Any workload event, as :func:`parse_event` returns it."""
Event = Annotated[AnyEvent, Field(discriminator="subject")]
_EVENT_ADAPTER: TypeAdapter[StartEvent | ProgressEvent | FinishEvent] = TypeAdapter(Event)


def parse_event(body: bytes | str) -> StartEvent | ProgressEvent | FinishEvent:
    """Parse one workload event body as published by the worker.

    Raises ``pydantic.ValidationError`` for anything else (a node status included: see
    :func:`contracts.node.parse_node_status`).
    """
    return _EVENT_ADAPTER.validate_json(body)


def error_finish(workload_id: str | None, message: str, step: str, **extra: Any) -> FinishEvent:
    """A ``benchmark_finish`` with status ``error``."""
    return FinishEvent(
        status="error", data=ErrorData(id=workload_id, message=message, step=step, **extra)
    )


def step_key(role: ModelRole) -> str:
    """The ``execution_details`` key of a model: ``input_model_benchmark``."""
    return f"{role}_benchmark"
