"""The benchmark request: INC's "Execute benchmark" body, accepted as it is.

>>> from contracts import BenchmarkRequest
>>> req = BenchmarkRequest.model_validate({
...     "id": "configuration_id",
...     "workspace_path": "/path/to/workspace",
...     "input_model": {"precision": "fp32", "path": "/models/fp32.pb",
...                     "mods": ["benchmark", "accuracy"]},
...     "optimized_model": {"precision": "int8", "path": "/models/int8.pb"},
...     "benchmark": {"dataset": "/data/eval.npz"},
... })
>>> req.input_model.modes
('performance', 'accuracy')
>>> [(m, mode) for m, _, mode in req.steps()]
[('input_model', 'performance'), ('input_model', 'accuracy'), ('optimized_model', 'performance')]
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from ._base import Contract
from .routing import WORKLOAD_ID_PATTERN

Mode = Literal["performance", "accuracy"]
ModelRole = Literal["input_model", "optimized_model"]
MODE_ORDER: tuple[Mode, ...] = ("performance", "accuracy")
OneDnn = Literal["auto", "on", "off"]
MODE_ALIASES = {"benchmark": "performance", "performance": "performance", "accuracy": "accuracy"}

SCHEMA_VERSION = 1
REQUEST_MESSAGE_TYPE = "benchmark_request"
DEFAULT_MAX_DURATION_S = 60.0
# Settings that decide the timed window's length; a request that sets one chose its run length.
RUN_LENGTH_FIELDS = ("iterations", "min_iterations", "max_duration_s")
"""The AMQP ``type`` property publishers set on a request (the worker does not require it)."""


def _document_mode_keys(schema: dict[str, Any]) -> None:
    """JSON Schema of ModelSpec: the wire also takes ``mode``/``mods`` (one of the three keys)."""
    names = {"enum": sorted(MODE_ALIASES), "type": "string"}
    given = {"anyOf": [names, {"type": "array", "items": names, "minItems": 1}]}
    properties = schema["properties"]
    properties["modes"]["items"] = names
    properties["mode"] = {**given, "description": "INC's code key for the modes (as modes)."}
    properties["mods"] = {**given, "description": "INC's page key for the modes (as modes)."}
    pairs = [["mode", "mods"], ["mode", "modes"], ["mods", "modes"]]
    # each branch defines what it requires (ajv's strictRequired)
    schema["not"] = {
        "anyOf": [{"properties": {key: True for key in pair}, "required": pair} for pair in pairs]
    }


class ModelSpec(Contract):
    """One model to benchmark.

    ``mode`` (INC's code) and ``mods`` (INC's page) are both accepted; ``benchmark`` is an alias
    of ``performance``. Default: ``["performance"]``. Steps always run performance first.
    """

    model_config = ConfigDict(json_schema_extra=_document_mode_keys)

    precision: str = Field(
        pattern=r"^[A-Za-z0-9_]{1,16}$",
        description="Datatype label of the model, e.g. fp32, bf16, int8. Reported as given.",
    )
    path: str = Field(
        min_length=1,
        max_length=4096,
        description="Frozen graph .pb, SavedModel directory, or Keras .keras/.h5 file.",
    )
    modes: tuple[Mode, ...] = Field(
        default=("performance",),
        min_length=1,
        description="What to measure: performance (alias benchmark) and/or accuracy.",
    )

    @model_validator(mode="before")
    @classmethod
    def _accept_mode_and_mods(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        given = [key for key in ("mode", "mods", "modes") if key in data]
        if len(given) > 1:
            raise ValueError(f"give the modes once, under 'mode' or 'mods', not {given}")
        if not given:
            return data
        raw = data.pop(given[0])
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list | tuple) or not raw:
            raise ValueError(f"'{given[0]}' must be a non-empty list of modes")
        modes: set[str] = set()
        for index, value in enumerate(raw):
            if not isinstance(value, str) or value not in MODE_ALIASES:
                raise ValueError(  # the value is not quoted: it could be anything
                    f"'{given[0]}' item {index} is not a mode; use 'performance' (alias "
                    "'benchmark') or 'accuracy'"
                )
            modes.add(MODE_ALIASES[value])
        data["modes"] = tuple(mode for mode in MODE_ORDER if mode in modes)
        return data


class TopKMetric(Contract):
    """Top-k accuracy over integer labels (INC's default ``topk: 1``)."""

    topk: int = Field(default=1, ge=1, le=1000)


class Layout(Contract):
    """One instances x cores layout of a sweep."""

    instances: int = Field(ge=1, le=4096, description="Performance instances side by side.")
    cores_per_instance: int = Field(ge=1, le=4096, description="Physical cores per instance.")


def _sweep_needs_points(schema: dict[str, Any]) -> None:
    schema["minProperties"] = 1  # batch_sizes, layouts or both (nothing else is allowed)
    for name in ("batch_sizes", "layouts"):
        schema["properties"][name]["uniqueItems"] = True


class Sweep(Contract):
    """Performance points beyond the request's main one: every batch size with every layout,
    for both models under the same settings, interleaved so neither model is favoured."""

    model_config = ConfigDict(json_schema_extra=_sweep_needs_points)

    batch_sizes: tuple[Annotated[int, Field(ge=1, le=65536)], ...] = Field(
        default=(),
        min_length=1,
        max_length=32,
        description="Batch sizes to measure, distinct. Default: the request's batch_size.",
    )
    layouts: tuple[Layout, ...] = Field(
        default=(),
        min_length=1,
        max_length=32,
        description="Layouts to measure, distinct. Default: the request's layout.",
    )

    @model_serializer(mode="wrap")
    def _leave_out_what_is_not_given(self, handler: SerializerFunctionWrapHandler) -> Any:
        """A list left out stays out: a client that dumps the model never sends an empty list
        (which the worker refuses)."""
        data = handler(self)
        return {key: value for key, value in data.items() if value not in ((), [])}

    @model_validator(mode="after")
    def _points_are_distinct(self) -> Sweep:
        if not self.batch_sizes and not self.layouts:
            raise ValueError("a sweep needs batch_sizes, layouts or both")
        if len(set(self.sizes())) != len(self.sizes()):
            raise ValueError("sweep batch_sizes repeat a value")
        shapes = self.shapes()
        if len(set(shapes)) != len(shapes):
            raise ValueError("sweep layouts repeat a layout")
        return self

    def sizes(self) -> tuple[int, ...]:
        """The batch sizes given (empty when left out)."""
        return self.batch_sizes

    def shapes(self) -> list[tuple[int, int]]:
        """The layouts given as (instances, cores_per_instance) (empty when left out)."""
        return [(layout.instances, layout.cores_per_instance) for layout in self.layouts]


ScenarioName = Literal["offline", "single_stream", "server"]


def _server_needs_a_target(schema: dict[str, Any]) -> None:
    schema["if"] = {
        "type": "object",
        "properties": {"name": {"const": "server"}},
        "required": ["name"],
    }
    given = {"type": "object", "properties": {"target_latency_ms": {"type": "number"}},
             "required": ["target_latency_ms"]}  # fmt: skip
    schema["then"] = given
    schema["else"] = {"not": given}


class Scenario(Contract):
    """How queries arrive (MLPerf LoadGen's scenarios): ``offline`` is the closed loop as fast
    as it goes; ``single_stream`` one query after the other; ``server`` Poisson arrivals, the
    highest rate whose latency percentile meets ``target_latency_ms`` is searched for."""

    model_config = ConfigDict(json_schema_extra=_server_needs_a_target)

    name: ScenarioName = Field(default="offline")
    target_latency_ms: Annotated[float, Field(gt=0, le=3_600_000)] | SkipJsonSchema[None] = Field(
        default=None, description="server only: the latency bound, ms."
    )
    target_percentile: float = Field(
        default=99.0,
        gt=0,
        le=99.99,
        description="server: the percentile held to the bound (at most 99.99: LoadGen's early "
        "stopping needs 46,050 queries a run to back a p99.99, and ten times that per 9 more).",
    )

    @field_validator("target_latency_ms", mode="before")
    @classmethod
    def _a_number_when_given(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("target_latency_ms must be a number of ms when given")
        return value

    @model_validator(mode="after")
    def _target_only_for_server(self) -> Scenario:
        if self.name == "server" and self.target_latency_ms is None:
            raise ValueError("scenario 'server' needs target_latency_ms")
        if self.name != "server" and self.target_latency_ms is not None:
            raise ValueError("target_latency_ms applies to scenario 'server' only")
        return self


def _one_stream_scenarios(schema: dict[str, Any]) -> None:
    """JSON Schema of the settings: single_stream and server run one instance, no sweep."""
    schema["if"] = {
        "type": "object",
        "properties": {
            "scenario": {
                "type": "object",
                "properties": {"name": {"enum": ["single_stream", "server"]}},
                "required": ["name"],
            }
        },
        "required": ["scenario"],
    }
    schema["then"] = {
        "type": "object",
        "properties": {"sweep": {"type": "null"}, "instances": {"enum": [1, None]}},
    }


class BenchmarkSettings(Contract):
    """Run settings; every field has a default, so the whole object may be left out."""

    model_config = ConfigDict(json_schema_extra=_one_stream_scenarios)

    batch_size: int = Field(default=1, ge=1, le=65536, description="Samples per inference call.")
    instances: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="Performance instances run side by side. Default: as many as fit.",
    )
    cores_per_instance: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="Physical cores per instance. Default: see the README's sizing section.",
    )
    warmup: int = Field(
        default=10,
        ge=0,
        le=1_000_000,
        description="Untimed inference calls before measuring (warmup_s must pass too).",
    )
    warmup_s: float = Field(
        default=0.5,
        ge=0,
        le=3600,
        description="Minimum warmup time; warmup ends when both warmup and warmup_s are met.",
    )
    iterations: int | None = Field(
        default=None,
        ge=1,
        le=100_000_000,
        description="Exact timed inference calls per instance; when set, the run-length rule "
        "(duration_s, min_iterations, max_duration_s) is not used.",
    )
    duration_s: float = Field(
        default=5.0,
        gt=0,
        le=86_400,
        description="Minimum length of the timed window.",
    )
    min_iterations: int = Field(
        default=1000,
        ge=1,
        le=100_000_000,
        description="Minimum timed calls per instance; the window runs until both duration_s "
        "and min_iterations are met, or max_duration_s is reached.",
    )
    max_duration_s: float | None = Field(
        default=None,
        gt=0,
        le=86_400,
        description="Hard cap on the timed window. Default: 60, or duration_s when that is longer.",
    )
    dataset: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="Accuracy data: an .npz file with arrays x (inputs) and y (integer labels). "
        "Default (as in INC, where the workload's configuration names it): <input model>."
        "eval.npz or eval.npz beside the input model, else the worker's worker.dataset.",
    )
    metric: TopKMetric = Field(default_factory=TopKMetric)
    inputs: tuple[str, ...] | None = Field(
        default=None, description="Frozen graph input tensor names, when inference guesses wrong."
    )
    outputs: tuple[str, ...] | None = Field(
        default=None, description="Frozen graph output tensor names, when inference guesses wrong."
    )
    timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="Time limit for the whole request. Default and maximum: the worker's config.",
    )
    onednn: OneDnn | None = Field(
        default=None,
        description="TensorFlow's oneDNN for every runner of both models: 'on', 'off', or "
        "'auto' (on when a model holds ops that run only on oneDNN, such as INC's int8 ops, "
        "or when TensorFlow enables it by default on the worker's CPU). Default: the worker's "
        "setting (worker.onednn, itself 'auto' by default).",
    )

    sweep: Sweep | None = Field(
        default=None,
        description="More performance points in the same request: batch sizes x layouts. The "
        "seed's fields keep describing the main point (batch_size, instances, "
        "cores_per_instance).",
    )
    scenario: Scenario = Field(
        default_factory=Scenario,
        description="How queries arrive in performance steps (MLPerf LoadGen scenarios); "
        "single_stream and server run one instance.",
    )

    @model_validator(mode="after")
    def _scenario_fits(self) -> BenchmarkSettings:
        if self.scenario.name != "offline" and self.sweep is not None:
            raise ValueError("a sweep runs the offline scenario only; leave out scenario or sweep")
        if self.scenario.name != "offline" and (self.instances or 1) != 1:
            raise ValueError(
                f"scenario '{self.scenario.name}' runs one instance; set instances to 1"
            )
        return self

    def cap_s(self) -> float:
        """The timed window's hard cap: ``max_duration_s``, else 60 or ``duration_s``."""
        if self.max_duration_s is not None:
            return self.max_duration_s
        return max(DEFAULT_MAX_DURATION_S, self.duration_s)

    def run_length_chosen(self) -> tuple[str, ...]:
        """The run-length settings this request set itself (not left to their defaults)."""
        return tuple(name for name in RUN_LENGTH_FIELDS if name in self.model_fields_set)


class BenchmarkRequest(Contract):
    """A request on ``benchmark.requests``."""

    id: str = Field(pattern=WORKLOAD_ID_PATTERN, description="Workload id; used in routing keys.")
    workspace_path: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="Where the workload directory goes. Default: the worker's workspace.",
    )
    input_model: ModelSpec
    optimized_model: ModelSpec | None = None
    benchmark: BenchmarkSettings = Field(default_factory=BenchmarkSettings)

    @model_validator(mode="after")
    def _cap_not_below_duration(self) -> BenchmarkRequest:
        cap_s = self.benchmark.max_duration_s
        if cap_s is not None and cap_s < self.benchmark.duration_s:
            raise ValueError(
                f"benchmark.max_duration_s ({cap_s:g}) must not be below "
                f"benchmark.duration_s ({self.benchmark.duration_s:g})"
            )
        return self

    def models(self) -> list[tuple[ModelRole, ModelSpec]]:
        """The models in benchmark order: input first."""
        pairs: list[tuple[ModelRole, ModelSpec]] = [("input_model", self.input_model)]
        if self.optimized_model is not None:
            pairs.append(("optimized_model", self.optimized_model))
        return pairs

    def steps(self) -> list[tuple[ModelRole, ModelSpec, Mode]]:
        """(model role, model, mode) in the order they run."""
        return [(role, model, mode) for role, model in self.models() for mode in model.modes]
