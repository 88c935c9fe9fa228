"""Pre-flight: does every model of a workload run at all under its oneDNN setting?

    python -m service.runner.preflight --config WORKLOAD/config.yaml --cpus 0-1 \\
        --output preflight.json

Run by the worker once per request, before any step is timed. In one process it sets the
request's oneDNN value, imports TensorFlow, reads back what TensorFlow enabled, and for each
model: loads it, lists its op types and makes one call on a tiny synthetic input (batch 1).

The call is the proof: TensorFlow's kernel registry is not enough, because without oneDNN
INC's quantized ops have placeholder CPU kernels that "run" and output nothing (the call then
fails with ``Missing 0-th output from {{node ...}}``). Failures are written as errors naming
the op and the fix; exit 0 when every model ran, 2 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any, cast

from service.errors import StepFailed
from service.runner.onednn_check import import_tensorflow, set_onednn
from service.runner.pinning import parse_cpus, pin_process
from service.runner.protocol import (
    FailureReport,
    FreezeCacheUse,
    PreflightModel,
    PreflightResult,
    RunnerConfig,
    RunnerModel,
)
from service.runner.sandbox import confine, memory_hint

STEP = "prepare"
EXIT_OK, EXIT_FAILED = 0, 2
_MISSING_OUTPUT = re.compile(r"Missing \d+-th output from \{\{node ([^}]+)\}\}")
_NO_KERNEL = re.compile(
    r"No (?:registered '([^']+)' OpKernel|OpKernel was registered to support Op '([^']+)')"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service.runner.preflight",
        description="Check that every model of a workload runs under its oneDNN setting.",
    )
    parser.add_argument("--config", type=Path, required=True, help="the workload's config.yaml")
    parser.add_argument("--cpus", required=True, help="cpu list to pin to, e.g. 0-1")
    parser.add_argument("--output", type=Path, required=True, help="where the JSON result goes")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    confine()
    args = parse_args(argv)
    result = PreflightResult(pid=os.getpid())
    try:
        run(args, result)
    except StepFailed as exc:
        result.error = FailureReport(step=STEP, message=exc.message)
    except Exception as exc:
        traceback.print_exc()
        message = f"unexpected {type(exc).__name__}: {exc}{memory_hint(exc)}"
        result.error = FailureReport(step=STEP, message=message)
    result.write(args.output)
    failed = result.error is not None or any(m.error for m in result.models.values())
    return EXIT_FAILED if failed else EXIT_OK


def run(args: argparse.Namespace, result: PreflightResult) -> None:
    config = RunnerConfig.read(args.config)
    set_onednn(config.onednn)
    cpus = parse_cpus(args.cpus)
    pin_process(cpus)
    result.tensorflow_version, result.onednn_enabled = import_tensorflow(config.onednn)
    for role, spec in config.models.items():
        result.models[role] = check_model(role, spec, config, len(cpus), result.onednn_enabled)


def check_model(
    role: str, spec: RunnerModel, config: RunnerConfig, threads: int, onednn_on: bool | None
) -> PreflightModel:
    """Load one model, list its ops, make one call; errors are kept in the result."""
    from service.runner import performance
    from service.runner.loading import load_for_workload

    out = PreflightModel()
    started = time.perf_counter()
    try:
        model = load_for_workload(spec, config, threads)
    except StepFailed as exc:
        out.error = FailureReport(step="load_model", message=f"{role}: {exc.message}")
        return out
    out.load_time_s = time.perf_counter() - started
    out.freeze_cache = cast("FreezeCacheUse | None", model.freeze_cache)
    graph = model.session.graph
    out.op_types = sorted({op.type for op in graph.get_operations()})
    try:
        sample_shape = performance.dataset_sample_shape(model, config.dataset)
        feeds = performance.synthetic_inputs(model.inputs, 1, sample_shape=sample_shape)
        started = time.perf_counter()
        model.run(*feeds)
        out.call_s = time.perf_counter() - started
    except StepFailed as exc:
        out.error = FailureReport(step=exc.step, message=f"{role}: {exc.message}")
    except Exception as exc:
        out.error = FailureReport(step=STEP, message=explain_failure(role, exc, graph, onednn_on))
    finally:
        model.close()
    return out


def explain_failure(role: str, exc: BaseException, graph: Any, onednn_on: bool | None) -> str:
    """The one-call failure in words: which op has no working CPU kernel, and the fix."""
    text = " ".join(str(getattr(exc, "message", None) or exc).split())
    missing = _MISSING_OUTPUT.search(text)
    if missing:
        node = missing.group(1)
        op = _op_type(graph, node)
        if onednn_on is False:
            return (
                f"{role}: {op} (node {node}) has no working CPU kernel with oneDNN off: "
                "TensorFlow registers a placeholder that outputs nothing; set benchmark.onednn "
                "to on (or auto)"
            )
        return (
            f"{role}: {op} (node {node}) produced no output even with oneDNN on: this "
            "TensorFlow has no working CPU kernel for it"
        )
    no_kernel = _NO_KERNEL.search(text)
    if no_kernel:
        op = no_kernel.group(1) or no_kernel.group(2)
        fix = "" if onednn_on else "; with benchmark.onednn on it may have one"
        return f"{role}: this TensorFlow has no CPU kernel for {op}{fix}"
    return f"{role}: one inference call on a batch of 1 failed: {type(exc).__name__}: {text[:600]}"


def _op_type(graph: Any, node: str) -> str:
    try:
        return str(graph.get_operation_by_name(node).type)
    except (KeyError, ValueError, AttributeError):
        return "an op"


if __name__ == "__main__":
    sys.exit(main())
