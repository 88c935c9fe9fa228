"""Worker configuration: one validated YAML file, then environment overrides, then CLI flags.

Environment overrides use ``BENCHMARK_WORKER_<SECTION>__<KEY>`` (e.g.
``BENCHMARK_WORKER_WORKER__TIMEOUT_S=600``); the broker URL also comes from ``AMQP_URL``.
Unknown keys, in the file or in the environment, fail at start with a message naming them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from contracts import routing

from .errors import ConfigError

ENV_PREFIX = "BENCHMARK_WORKER_"
DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"
CONSUMER_TIMEOUT_MARGIN_S = 120


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerSettings(_Section):
    url: SecretStr = Field(default=SecretStr(DEFAULT_AMQP_URL), description="AMQP URL; secret.")
    requests_queue: str = routing.REQUESTS_QUEUE
    dead_letter_exchange: str = routing.DEAD_LETTER_EXCHANGE
    dead_letter_queue: str = routing.DEAD_LETTER_QUEUE
    events_exchange: str = routing.EVENTS_EXCHANGE
    control_exchange: str = Field(
        default="benchmark.control", description="Topic exchange of control messages (cancel)."
    )
    delivery_limit: int = Field(default=3, ge=1, description="x-delivery-limit of the queue.")
    publish_timeout_s: float = Field(default=30.0, gt=0)
    consumer_timeout_s: float | None = Field(
        default=1800.0,
        gt=0,
        description="The broker's consumer_timeout (rabbitmq.conf, in s here); worker.timeout_s "
        "must stay below it by a margin. None: disabled on the broker.",
    )
    reconnect_interval_s: float = Field(default=5.0, gt=0)
    heartbeat_s: int = Field(default=30, ge=0)
    failover_urls: tuple[SecretStr, ...] = Field(
        default=(),
        description="More AMQP URLs of the same cluster, tried in turn after ``url`` when a "
        "connection is lost or cannot be made; secret.",
    )
    event_hold_s: float = Field(
        default=900.0,
        gt=0,
        description="How long a start or finish the broker does not confirm (memory or disk "
        "alarm, a slow broker) is waited for while its request stays unacked; past it (or "
        "close to the broker's consumer_timeout) the request is requeued.",
    )

    def urls(self) -> list[str]:
        """Every broker URL, ``url`` first."""
        return [self.url.get_secret_value(), *(u.get_secret_value() for u in self.failover_urls)]


class WorkerSettings(_Section):
    workspace: Path = Field(
        default=Path("~/benchmark-workspace"), description="Default workspace for workloads."
    )
    allowed_roots: tuple[Path, ...] = Field(
        default=(),
        description="Model, dataset and workspace paths must resolve inside one of these. "
        "Empty: the workspace only.",
    )
    cpus: str | None = Field(default=None, description="CPUs this worker may use, e.g. '0-3,8'.")
    max_body_bytes: int = Field(default=1024 * 1024, ge=256)
    timeout_s: float = Field(
        default=1200.0,
        gt=0,
        description="Time limit of one request; keep it below the broker's consumer_timeout.",
    )
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    runner_memory_mb: int | None = Field(
        default=None,
        ge=64,
        description="RLIMIT_DATA of each runner (heap and private memory). "
        "Default: the machine's physical memory.",
    )
    runner_cpu_time_s: int | None = Field(
        default=None,
        ge=1,
        description="RLIMIT_CPU of each runner. Default: the request's time limit times its CPUs.",
    )
    runner_open_files: int = Field(default=1024, ge=64, description="RLIMIT_NOFILE per runner.")
    preflight_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="Time limit of the pre-flight check (TensorFlow start, each model loaded "
        "and called once) before a request's first step.",
    )
    dataset: Path | None = Field(
        default=None,
        description="Accuracy data for requests that name none and have no eval.npz beside "
        "their input model (an .npz with x and y, inside the allowed roots).",
    )
    consumer_check_s: float = Field(
        default=5.0,
        gt=0,
        description="How often the worker checks its consumer is alive; the heartbeat (and so "
        "check) reports the last answer, the watchdog stops a worker whose consumer stays gone.",
    )
    reject_lane_prefetch: int = Field(
        default=32,
        ge=0,
        le=2000,
        description="Prefetch of the reject lane opened during a flood of undecodable bodies "
        "(0: never open it).",
    )
    onednn: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="oneDNN for requests that do not set benchmark.onednn: auto (on for "
        "graphs that need it and on CPUs where TensorFlow enables it by default), on or off.",
    )
    reject_lane_after: int = Field(
        default=16, ge=1, description="Bodies rejected in a row that open the reject lane."
    )
    keep_runs: int = Field(
        default=5,
        ge=1,
        description="Finished runs kept per workload directory (older ones are removed; a run "
        "still going never is).",
    )

    @model_validator(mode="after")
    def _expand_paths(self) -> WorkerSettings:
        object.__setattr__(self, "workspace", self.workspace.expanduser())
        roots = tuple(root.expanduser() for root in self.allowed_roots)
        object.__setattr__(self, "allowed_roots", roots)
        return self

    def effective_roots(self) -> tuple[Path, ...]:
        """The allowed roots, resolved; the workspace alone when none is configured."""
        roots = self.allowed_roots or (self.workspace,)
        return tuple(root.resolve() for root in roots)


class LoggingSettings(_Section):
    level: str = Field(default="info", pattern=r"^(debug|info|warning|error)$")
    json_output: bool | None = Field(default=None, description="None: JSON unless on a terminal.")


class NodeSettings(_Section):
    """Fleet identity, node status and cancel memory (issue 6)."""

    worker_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,32}$",
        description="This worker's id on its host; default: from its CPUs, e.g. 'cpu0-3'.",
    )
    status_interval_s: float = Field(default=30.0, gt=0, description="Node status period.")
    cancelled_ttl_s: float = Field(default=86400.0, gt=0, description="Cancels remembered.")
    cancelled_max: int = Field(default=10000, ge=1, description="At most this many remembered.")


class HealthSettings(_Section):
    """The heartbeat file ``benchmark-worker check`` reads."""

    heartbeat_file: Path | None = Field(
        default=None, description="Default: <workspace>/health/<node_id>.json."
    )
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    stale_after_s: float = Field(default=30.0, gt=0, description="Older heartbeat: unhealthy.")

    @model_validator(mode="after")
    def _stale_after_interval(self) -> HealthSettings:
        if self.stale_after_s <= self.heartbeat_interval_s:
            raise ValueError("stale_after_s must be longer than heartbeat_interval_s")
        if self.heartbeat_file is not None:
            object.__setattr__(self, "heartbeat_file", self.heartbeat_file.expanduser())
        return self


class RunnersSettings(_Section):
    """Warm runner processes (service.executor.warm_pool): TensorFlow imported once per
    (CPUs, threads, oneDNN) and kept for the next steps."""

    warm: bool = Field(default=True, description="False: a fresh process for every step.")
    max_steps: int = Field(
        default=50, ge=1, description="Steps a warm runner takes before it is replaced."
    )
    max_rss_mb: int = Field(
        default=4096, ge=64, description="A warm runner past this resident memory is replaced."
    )
    idle_s: float = Field(
        default=600.0, gt=0, description="A warm runner idle this long is stopped."
    )
    max_idle_mb: int | None = Field(
        default=None,
        ge=0,
        description="Resident memory all idle warm runners may keep together (MiB); past it "
        "the least recently used are stopped (a sweep over many layouts leaves one runner per "
        "CPU set). None: a quarter of the machine's memory.",
    )
    start_timeout_s: float = Field(
        default=120.0, gt=0, description="Time for a new runner to import TensorFlow."
    )


class MetricsSettings(_Section):
    """The Prometheus endpoint; off unless ``port`` is set."""

    port: int | None = Field(default=None, ge=0, le=65535, description="None: no endpoint.")
    host: str = Field(default="0.0.0.0", description="Address the endpoint listens on.")


class Settings(_Section):
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    node: NodeSettings = Field(default_factory=NodeSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    runners: RunnersSettings = Field(default_factory=RunnersSettings)

    @model_validator(mode="after")
    def _time_limit_below_consumer_timeout(self) -> Settings:
        consumer_timeout_s = self.broker.consumer_timeout_s
        if consumer_timeout_s is None:
            return self
        if self.worker.timeout_s + CONSUMER_TIMEOUT_MARGIN_S > consumer_timeout_s:
            raise ValueError(
                f"worker.timeout_s ({self.worker.timeout_s:g}) must be at least "
                f"{CONSUMER_TIMEOUT_MARGIN_S} s below broker.consumer_timeout_s "
                f"({consumer_timeout_s:g}): the broker checks about once a minute and would "
                "requeue a long request while it still runs; raise consumer_timeout on the "
                "broker (ops/rabbitmq/README.md) and broker.consumer_timeout_s here"
            )
        return self

    def with_overrides(self, **sections: Mapping[str, Any]) -> Settings:
        """A copy with some keys replaced (used for CLI flags), validated again."""
        data = self.model_dump(mode="python")
        data["broker"]["url"] = self.broker.url.get_secret_value()
        for section, values in sections.items():
            data[section].update({k: v for k, v in values.items() if v is not None})
        return _validate(data, "command line")


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the YAML file (if any), apply the environment, validate everything."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections")
        data = loaded or {}
    _apply_environment(data, environ)
    return _validate(data, str(path) if path else "defaults")


def _apply_environment(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    if "AMQP_URL" in environ:
        data.setdefault("broker", {})["url"] = environ["AMQP_URL"]
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        section, sep, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if not sep or not key:
            raise ConfigError(
                f"environment variable {name} must look like {ENV_PREFIX}SECTION__KEY"
            )
        section_data = data.setdefault(section, {})
        if not isinstance(section_data, dict):
            raise ConfigError(f"environment variable {name}: section {section!r} is not a mapping")
        section_data[key] = yaml.safe_load(value) if value else value


def _validate(data: dict[str, Any], source: str) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration ({source}): {problems}") from None
