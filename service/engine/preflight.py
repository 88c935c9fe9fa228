"""Before any timing: decide the request's oneDNN setting, then prove every model runs under it.

The decision is made here, in the worker, from the models' op types read without TensorFlow
(:mod:`service.engine.graph_ops`) and the CPU's flags. The proof runs in one child process
(:mod:`service.runner.preflight`): it loads each model under that setting and makes one call
on a tiny input. Any failure ends the request at step ``prepare`` with the op and the fix,
before a single runner has measured anything.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from service.cpulist import format_cpu_list
from service.engine import graph_ops, onednn
from service.errors import StepFailed
from service.executor.failures import describe_exit, log_tail
from service.executor.launch import InstanceLaunch, run_process, run_warm_process
from service.executor.warm_pool import RunnerGone, WarmPool
from service.figures import fingerprint
from service.runner.protocol import PreflightResult, RunnerModel
from service.runner.sandbox import RunnerLimits

STEP = "prepare"
PREFLIGHT_MODULE = "service.runner.preflight"
RESULT_FILE = "preflight.json"
LOG_FILE = "preflight.txt"


def model_op_types(models: Mapping[str, RunnerModel]) -> dict[str, set[str] | None]:
    """Each model's op types, read from its protobuf; None where they cannot be read here
    (Keras files; bytes that do not parse, for which TensorFlow's own error, from the
    pre-flight check, says more)."""
    out: dict[str, set[str] | None] = {}
    for role, model in models.items():
        try:
            out[role] = graph_ops.model_op_types(Path(model.path), model.format)
        except graph_ops.GraphParseError:
            out[role] = None
        except OSError as exc:
            raise StepFailed(STEP, f"cannot read {role} {model.path}: {exc.strerror}") from None
    return out


def decide(
    requested: onednn.OneDnnSetting, models: Mapping[Any, RunnerModel]
) -> onednn.OneDnnDecision:
    """The request's effective oneDNN setting; ``off`` with int8 ops fails at ``prepare``."""
    flags = fingerprint.cpu_flags(fingerprint.read_cpuinfo())
    try:
        return onednn.decide(requested, model_op_types(models), flags)
    except onednn.OneDnnConflict as exc:
        raise StepFailed(STEP, str(exc)) from None


def preflight_launch(config_path: Path, directory: Path, cpus: Sequence[int]) -> InstanceLaunch:
    """The pre-flight child's command line (runnable by hand), log and result files."""
    argv = (
        sys.executable, "-m", PREFLIGHT_MODULE,
        "--config", str(config_path),
        "--cpus", format_cpu_list(cpus),
        "--output", str(directory / RESULT_FILE),
    )  # fmt: skip
    return InstanceLaunch(
        index=0,
        cpus=tuple(cpus),
        argv=argv,
        log_path=directory / LOG_FILE,
        result_path=directory / RESULT_FILE,
    )


async def check(
    launch: InstanceLaunch,
    decision: onednn.OneDnnDecision,
    limits: RunnerLimits,
    timeout_s: float,
    pool: WarmPool | None = None,
) -> dict[str, Any]:
    """Run the pre-flight child (in a warm runner with ``pool``); its summary for the result,
    or StepFailed naming the problem."""
    started_s = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            if pool is None:
                code = await run_process(launch, limits)
            else:
                code = await run_warm_process(launch, pool, decision.effective)
    except RunnerGone as exc:
        raise StepFailed(STEP, f"the pre-flight check could not start: {exc}") from None
    except TimeoutError:
        raise StepFailed(
            STEP,
            f"the pre-flight check did not finish within {timeout_s:g} s "
            f"(worker.preflight_timeout_s) and was killed{_tail(launch)}",
        ) from None
    wall_s = time.monotonic() - started_s
    try:
        result = PreflightResult.read(launch.result_path)
    except (OSError, ValueError):
        raise StepFailed(
            STEP, f"the pre-flight check {describe_exit(code)} without a result{_tail(launch)}"
        ) from None
    if result.error is not None:
        raise StepFailed(
            STEP,
            f"pre-flight check failed: {result.error.message} (it {describe_exit(code)})"
            f"{_tail(launch)}",
        )
    failures = [
        f"{model.error.message}" for model in result.models.values() if model.error is not None
    ]
    if failures:
        raise StepFailed(STEP, "pre-flight check failed: " + "; ".join(failures))
    return summary(result, decision, wall_s, launch.command)


def _tail(launch: InstanceLaunch) -> str:
    tail = log_tail(launch.log_path)
    return f"; last lines of {launch.log_path}: {tail}" if tail else ""


def summary(
    result: PreflightResult, decision: onednn.OneDnnDecision, wall_s: float, command: str
) -> dict[str, Any]:
    return {
        "status": "passed",
        "wall_s": round(wall_s, 3),
        "command": command,
        "tensorflow_version": result.tensorflow_version,
        "onednn": decision.details(result.onednn_enabled),
        "models": {
            role: {
                "op_types": model.op_types,
                "ops_needing_onednn": onednn.needs_onednn(model.op_types),
                "load_time_s": _round(model.load_time_s),
                "freeze_cache": model.freeze_cache,
                "one_call_s": _round(model.call_s),
            }
            for role, model in result.models.items()
        },
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
