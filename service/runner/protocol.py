"""What the worker and a runner child process exchange, with no TensorFlow import.

The worker writes one ``config.yaml`` per workload (:class:`RunnerConfig`); each runner child
reads it, benchmarks one (model, mode, instance) and writes a JSON :class:`RunnerResult`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field

from service.atomic import write_atomic
from service.runner.runlength import RunLength

ModelFormat = Literal["frozen_pb", "saved_model", "keras"]
FreezeCacheUse = Literal["hit", "miss"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _JsonFile(_Strict):
    """A child's JSON result file: written atomically, read back validated."""

    def write(self, path: Path) -> None:
        """Write atomically: a reader never sees half a file."""
        write_atomic(path, self.model_dump_json())

    @classmethod
    def read(cls, path: Path) -> Self:
        return cls.model_validate_json(path.read_bytes())


class RunnerModel(_Strict):
    path: str
    precision: str
    format: ModelFormat
    sha256: str | None = Field(
        default=None,
        description="The model's content hash (SavedModel and Keras): keys its frozen graph in "
        "the freeze cache",
    )


class ScenarioConfig(_Strict):
    """The request's scenario as a runner needs it (contracts.Scenario, plus run rules)."""

    name: Literal["offline", "single_stream", "server"] = "offline"
    target_latency_ms: float | None = Field(default=None, gt=0)
    target_percentile: float = Field(default=99.0, gt=0, lt=100)


class RunnerConfig(_Strict):
    """The workload's ``config.yaml``."""

    id: str
    framework: Literal["tensorflow"] = "tensorflow"
    models: dict[Literal["input_model", "optimized_model"], RunnerModel]
    batch_size: int = Field(ge=1)
    warmup: int = Field(ge=0)
    warmup_s: float = Field(default=0.0, ge=0)
    iterations: int | None = Field(default=None, ge=1)
    duration_s: float = Field(gt=0)
    min_iterations: int = Field(default=1, ge=1)
    max_duration_s: float | None = Field(default=None, gt=0)
    dataset: str | None = None
    topk: int = Field(default=1, ge=1)
    inputs: list[str] | None = None
    outputs: list[str] | None = None
    barrier_timeout_s: float = Field(default=120.0, gt=0)
    freeze_cache_dir: str | None = Field(
        default=None,
        description="Where SavedModel and Keras models are kept frozen (service.runner."
        "freeze_cache); None: freeze in every process",
    )
    scenario: ScenarioConfig = Field(default_factory=ScenarioConfig)
    onednn: bool | None = Field(
        default=None,
        description="TF_ENABLE_ONEDNN_OPTS the runner sets before TensorFlow starts (the "
        "request's effective oneDNN setting); None: TensorFlow's default.",
    )

    def run_length(self) -> RunLength:
        """The timed window's rule; ValueError if the settings contradict each other."""
        return RunLength(
            iterations=self.iterations,
            duration_s=self.duration_s,
            min_iterations=self.min_iterations,
            max_duration_s=self.max_duration_s,
        )

    def write(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))

    @classmethod
    def read(cls, path: Path) -> RunnerConfig:
        return cls.model_validate(yaml.safe_load(path.read_text()))


class TensorInfo(_Strict):
    name: str
    shape: list[int | None]
    dtype: str


class CpuWindow(_Strict):
    """What happened on the instance's CPUs during its timed window (``service.runner.probes``).

    Tick counts are ``/proc/stat`` jiffies (``clock_ticks_per_s`` per second), per CPU.
    Fractions are None when ``/proc/stat`` could not be read.
    """

    cpus: list[int]
    wall_s: float
    clock_ticks_per_s: int
    busy_ticks: dict[int, int] = Field(description="user+nice+system+irq+softirq, everyone's")
    steal_ticks: dict[int, int]
    total_ticks: dict[int, int]
    own_cpu_s: float = Field(description="this runner's user+system CPU time in the window")
    foreign_busy_fraction: float | None = Field(
        description="(busy - own) / total over the instance's CPUs: other processes' share"
    )
    steal_fraction: float | None
    resolution_fraction: float | None = Field(
        description="uncertainty of the fractions from tick sampling: (2*cpus + 2) / total"
    )
    cpu_busy_fraction: dict[int, float] = Field(description="busy / total per CPU, ours included")
    freq_khz_start: dict[int, int] = Field(default_factory=dict)
    freq_khz_end: dict[int, int] = Field(default_factory=dict)
    freq_khz_max: dict[int, int] = Field(default_factory=dict)
    throttle_events: dict[int, int] | None = Field(
        default=None, description="thermal throttle counter increase per CPU; None: not visible"
    )


class PerformanceResult(_Strict):
    """Raw timings of one instance. Times are ``time.monotonic()`` seconds (shared clock)."""

    window_start_s: float
    batch_end_times_s: list[float]
    batch_latencies_ms: list[float]
    stop_reason: str = Field(description="iterations | duration_and_min_iterations | max_duration")
    cpu_window: CpuWindow | None = None
    loadgen: dict[str, Any] | None = Field(
        default=None,
        description="scenario single_stream or server: what MLPerf LoadGen reported "
        "(service.runner.loadgen_run); the timings above are its reported run's queries",
    )


class AccuracyResult(_Strict):
    accuracy: float = Field(ge=0, le=1)
    correct: int
    samples: int
    topk: int
    tied_wrong: int = Field(
        default=0,
        description="samples counted wrong only because another class tied the label's score "
        "at the top-k boundary (a tie is never a hit)",
    )
    outputs_constant: bool = Field(
        default=False, description="every sample of the dataset got the same scores"
    )
    predicted_classes: int | None = Field(
        default=None, description="distinct top-1 classes predicted over the dataset"
    )


class FailureReport(_Strict):
    """A :class:`~service.errors.StepFailed` raised in a runner, as the runner writes it in
    its result file (data, not an exception: the worker raises again from it)."""

    step: str = Field(description="load_config, load_model, load_dataset, warmup, measure, ...")
    message: str


class PreflightModel(_Strict):
    """One model in the pre-flight check: its ops and one call on a tiny input."""

    op_types: list[str] = Field(default_factory=list)
    load_time_s: float | None = None
    freeze_cache: FreezeCacheUse | None = None
    call_s: float | None = None
    error: FailureReport | None = None


class PreflightResult(_JsonFile):
    """What ``python -m service.runner.preflight`` writes."""

    pid: int
    tensorflow_version: str | None = None
    onednn_enabled: bool | None = Field(default=None, description="TensorFlow's read-back")
    models: dict[str, PreflightModel] = Field(default_factory=dict)
    error: FailureReport | None = None


class RunnerResult(_JsonFile):
    model: Literal["input_model", "optimized_model"]
    mode: Literal["performance", "accuracy"]
    instance: int
    pid: int
    cpus_planned: list[int]
    cpus_observed: list[int] = Field(
        default_factory=list, description="Union of every thread's Cpus_allowed_list at the end."
    )
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    batch_size: int = 0
    inputs: list[TensorInfo] = Field(default_factory=list)
    fed_shapes: list[list[int]] = Field(
        default_factory=list, description="The concrete shape of each input fed, batch first."
    )
    outputs: list[str] = Field(default_factory=list)
    load_time_s: float | None = None
    freeze_cache: FreezeCacheUse | None = Field(
        default=None,
        description="the frozen graph came from the freeze cache (hit) or was "
        "frozen here and stored (miss); None: a frozen graph, or no cache",
    )
    first_inference_s: float | None = None
    warmup_iterations: int = 0
    warmup_s: float | None = Field(default=None, description="measured length of the warmup")
    peak_rss_bytes: int | None = None
    tensorflow_version: str | None = None
    onednn_enabled: bool | None = Field(
        default=None, description="TensorFlow built with oneDNN (MKL) kernels, as it reports"
    )
    thread_environment: dict[str, str] = Field(
        default_factory=dict,
        description="the runner's threading/oneDNN variables: OMP_*, KMP_*, TF_*, DNNL_*, ...",
    )
    performance: PerformanceResult | None = None
    accuracy: AccuracyResult | None = None
    error: FailureReport | None = None


# The synchronised start: after warmup each instance creates ``<sync_dir>/ready.<i>``; the
# worker, once all are ready, writes ``<sync_dir>/go`` holding the monotonic start time
# (``{"start_at_s": t}``). Every instance sleeps until t, then measures.
READY_FILE_PREFIX = "ready."
GO_FILE = "go"
