"""Performance mode: time inference calls on synthetic inputs.

Sequence: first call (timed on its own), warmup (by count and time), optional synchronised
start, then the timed window, whose length :mod:`service.runner.runlength` decides. Only the
session call is inside the timed region.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from service.atomic import write_atomic
from service.errors import StepFailed
from service.runner import probes
from service.runner.loading import LoadedModel
from service.runner.protocol import (
    GO_FILE,
    READY_FILE_PREFIX,
    PerformanceResult,
    TensorInfo,
)
from service.runner.runlength import RunLength, warmup_done

SEED = 20240229
INT_HIGH = 10  # synthetic integers are drawn from [0, INT_HIGH)
POLL_INTERVAL_S = 0.001


def check_batch_dim(info: TensorInfo, batch_size: int, step: str = "prepare_inputs") -> None:
    """The input must have a batch dimension that is free or equal to ``batch_size``."""
    if not info.shape:
        raise StepFailed(
            step,
            f"input '{info.name}' is a scalar; the runner needs a batch dimension first",
        )
    fixed = info.shape[0]
    if fixed is not None and fixed != batch_size:
        raise StepFailed(
            step,
            f"input '{info.name}' has a fixed batch dimension of {fixed} but batch_size is "
            f"{batch_size}; set benchmark.batch_size to {fixed}",
        )


def input_shape(
    info: TensorInfo, batch_size: int, sample_shape: Sequence[int] | None = None
) -> list[int]:
    """``[batch_size, *dims]``; unknown dims other than batch come from ``sample_shape``."""
    check_batch_dim(info, batch_size)
    dims = info.shape[1:]
    if all(dim is not None for dim in dims):
        return [batch_size, *(int(dim) for dim in dims if dim is not None)]
    if sample_shape is not None and len(sample_shape) == len(dims):
        return [batch_size, *(int(dim) for dim in sample_shape)]
    raise StepFailed(
        "prepare_inputs",
        f"input '{info.name}' has shape {_show(info.shape)} with unknown dimensions besides "
        "the batch; performance mode needs them fixed: export the model with a fixed input "
        "shape, or give benchmark.dataset so the shape is taken from its 'x' array",
    )


def synthetic_inputs(
    inputs: Sequence[TensorInfo],
    batch_size: int,
    *,
    seed: int = SEED,
    sample_shape: Sequence[int] | None = None,
) -> list[np.ndarray]:
    """Deterministic random feeds: floats uniform in [0, 1), ints in [0, 10), random bools."""
    rng = np.random.default_rng(seed)
    resolvable = sample_shape if len(inputs) == 1 else None
    return [_random_array(rng, info, input_shape(info, batch_size, resolvable)) for info in inputs]


def dataset_sample_shape(model: LoadedModel, dataset: str | None) -> tuple[int, ...] | None:
    """The dataset's sample shape, read only when an input has unknown non-batch dims."""
    unknown = any(None in info.shape[1:] for info in model.inputs)
    if not unknown or dataset is None or len(model.inputs) != 1:
        return None
    from service.runner.accuracy import read_arrays

    _, x, _ = read_arrays(dataset)
    return tuple(int(dim) for dim in x.shape[1:])


def _random_array(rng: np.random.Generator, info: TensorInfo, shape: list[int]) -> np.ndarray:
    dtype = tf.as_dtype(info.dtype)
    if dtype.is_floating:
        return rng.random(shape, dtype=np.float32).astype(dtype.as_numpy_dtype)
    if dtype.is_integer:
        return rng.integers(0, INT_HIGH, size=shape).astype(dtype.as_numpy_dtype)
    if dtype.is_bool:
        return rng.integers(0, 2, size=shape).astype(bool)
    raise StepFailed(
        "prepare_inputs",
        f"input '{info.name}' has dtype {info.dtype}; synthetic inputs cover numbers and bools "
        "only, so this model cannot be benchmarked in performance mode",
    )


def call_model(model: LoadedModel, feeds: Sequence[np.ndarray], step: str) -> list[np.ndarray]:
    """One inference call, with TensorFlow errors turned into a :class:`StepFailed`."""
    try:
        return model.run(*feeds)
    except tf.errors.OpError as exc:
        raise StepFailed(step, f"inference failed: {op_error_text(exc)}") from None


def first_inference_s(model: LoadedModel, feeds: Sequence[np.ndarray]) -> float:
    """Time the first call (graph optimisation and allocation happen here)."""
    started = time.perf_counter()
    call_model(model, feeds, "first_inference")
    return time.perf_counter() - started


def warm_up(
    model: LoadedModel, feeds: Sequence[np.ndarray], iterations: int, min_s: float = 0.0
) -> tuple[int, float]:
    """Untimed calls until ``iterations`` are done and ``min_s`` has passed: (calls, seconds)."""
    started = time.perf_counter()
    done = 0
    while not warmup_done(done, time.perf_counter() - started, iterations, min_s):
        try:
            model.timed_run(*feeds)
        except tf.errors.OpError as exc:
            raise StepFailed("warmup", f"inference failed: {op_error_text(exc)}") from None
        done += 1
    return done, time.perf_counter() - started


def wait_for_go(
    sync_dir: Path, instance: int, timeout_s: float, call_s: float | None = None
) -> float:
    """Announce readiness (with the warmup's mean call time, from which the worker plans the
    window), wait for the go file, return its ``start_at_s``."""
    ready = sync_dir / f"{READY_FILE_PREFIX}{instance}"
    try:
        write_atomic(ready, json.dumps({"call_s": call_s}))
    except OSError as exc:
        raise StepFailed("sync", f"could not create {ready}: {exc.strerror}") from None
    deadline_s = time.monotonic() + timeout_s
    go = sync_dir / GO_FILE
    while True:
        start_at_s = _read_go(go)
        if start_at_s is not None:
            return start_at_s
        if time.monotonic() >= deadline_s:
            raise StepFailed(
                "sync",
                f"no start signal: {go} did not appear within {timeout_s:g} s "
                "(barrier_timeout_s) after this instance was ready",
            )
        time.sleep(POLL_INTERVAL_S)


def _read_go(go: Path) -> float | None:
    """``start_at_s`` from the go file, or None while it is missing or being written."""
    try:
        data = json.loads(go.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    except OSError as exc:
        raise StepFailed("sync", f"could not read {go}: {exc.strerror}") from None
    if not isinstance(data, dict) or not isinstance(data.get("start_at_s"), int | float):
        raise StepFailed("sync", f'{go} must hold {{"start_at_s": <monotonic seconds>}}')
    return float(data["start_at_s"])


def sleep_until(target_s: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``target_s`` (spin for the last ms)."""
    while True:
        remaining_s = target_s - time.monotonic()
        if remaining_s <= 0:
            return
        if remaining_s > 2 * POLL_INTERVAL_S:
            time.sleep(remaining_s - POLL_INTERVAL_S)


def measure(
    model: LoadedModel,
    feeds: Sequence[np.ndarray],
    rule: RunLength,
    cpus: list[int] | None = None,
) -> PerformanceResult:
    """Timed calls until ``rule`` says stop; ``cpus`` are watched for other processes.

    Inside the loop: the call, two clock reads, two appends and the stop check. The /proc and
    sysfs snapshots are taken just outside it.
    """
    run = model.timed_run
    stop_reason = rule.stop_reason
    latencies_ms: list[float] = []
    end_times_s: list[float] = []
    before = probes.snapshot(cpus) if cpus else None
    window_start_s = time.monotonic()
    try:
        while True:
            started = time.perf_counter()
            run(*feeds)
            finished = time.perf_counter()
            end_s = time.monotonic()
            latencies_ms.append((finished - started) * 1000.0)
            end_times_s.append(end_s)
            reason = stop_reason(len(latencies_ms), end_s - window_start_s)
            if reason is not None:
                break
    except tf.errors.OpError as exc:
        raise StepFailed("measure", f"inference failed: {op_error_text(exc)}") from None
    cpu_window = None
    if cpus and before is not None:
        cpu_window = probes.window(cpus, before, probes.snapshot(cpus))
    return PerformanceResult(
        window_start_s=window_start_s,
        batch_end_times_s=end_times_s,
        batch_latencies_ms=latencies_ms,
        stop_reason=reason,
        cpu_window=cpu_window,
    )


def op_error_text(exc: tf.errors.OpError) -> str:
    """A TensorFlow error's message on one line."""
    return " ".join((exc.message or type(exc).__name__).split())[:600]


def _show(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("None" if dim is None else str(dim) for dim in shape) + "]"
