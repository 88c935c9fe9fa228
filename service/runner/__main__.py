"""The runner: benchmark ONE (model, mode, instance) in this process and write a JSON result.

    python -m service.runner --config WORKLOAD/config.yaml --model input_model \\
        --mode performance --instance 0 --cpus 0-1 --output result.json [--sync-dir DIR]

The process pins itself to ``--cpus`` before TensorFlow is imported. Exit 0 on success; on any
failure the result file still gets written, with ``error`` naming the failed step, and the
exit code is 2.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from pydantic import ValidationError

from service.errors import StepFailed
from service.runner.onednn_check import import_tensorflow, set_onednn
from service.runner.pinning import (
    observed_cpus,
    parse_cpus,
    pin_process,
    runner_thread_environment,
)
from service.runner.probes import status_bytes
from service.runner.protocol import (
    FailureReport,
    FreezeCacheUse,
    PerformanceResult,
    RunnerConfig,
    RunnerModel,
    RunnerResult,
)
from service.runner.runlength import RunLength
from service.runner.sandbox import confine, memory_hint

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

    from service.runner.loading import LoadedModel

EXIT_OK = 0
EXIT_FAILED = 2


@dataclass
class Progress:
    """The step running now, to name it when something unexpected fails."""

    step: str = "start"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service.runner",
        description="Benchmark one model in one mode as one pinned instance.",
    )
    parser.add_argument("--config", type=Path, required=True, help="the workload's config.yaml")
    parser.add_argument("--model", choices=["input_model", "optimized_model"], required=True)
    parser.add_argument("--mode", choices=["performance", "accuracy"], required=True)
    parser.add_argument("--instance", type=_non_negative_int, required=True)
    parser.add_argument("--cpus", required=True, help="cpu list to pin to, e.g. 0 or 0-1 or 0,2")
    parser.add_argument("--output", type=Path, required=True, help="where the JSON result goes")
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="intra-op threads (default: one per cpu in --cpus); for comparisons such as an "
        "unpinned run with --cpus covering several cpus and --threads 1",
    )
    parser.add_argument(
        "--sync-dir",
        type=Path,
        default=None,
        help="directory for the synchronised start (ready.<instance> / go files)",
    )
    return parser.parse_args(argv)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def main(argv: list[str] | None = None) -> int:
    confine()  # first: die with the worker, take the rlimits it passed (untrusted models)
    args = parse_args(argv)
    result = RunnerResult(
        model=args.model,
        mode=args.mode,
        instance=args.instance,
        pid=os.getpid(),
        cpus_planned=[],
    )
    progress = Progress()
    try:
        run(args, result, progress)
    except StepFailed as exc:
        result.error = FailureReport(step=exc.step, message=exc.message)
    except Exception as exc:
        traceback.print_exc()
        message = f"unexpected {type(exc).__name__} during {progress.step}: {exc}{memory_hint(exc)}"
        result.error = FailureReport(step=progress.step, message=message)
    _finish(result)
    if not _write(result, args.output):
        return EXIT_FAILED
    if result.error is not None:
        print(f"runner failed at {result.error.step}: {result.error.message}", file=sys.stderr)
        return EXIT_FAILED
    _print_summary(result)
    return EXIT_OK


def run(args: argparse.Namespace, result: RunnerResult, progress: Progress) -> None:
    """Pin, load, benchmark; fill ``result`` as it goes."""
    progress.step = "load_config"
    config = read_config(args.config)
    spec = pick_model(config, args.model, args.config)
    result.batch_size = config.batch_size
    set_onednn(config.onednn)
    progress.step = "pin_cpus"
    cpus = parse_cpus(args.cpus)
    result.cpus_planned = cpus
    threads = args.threads or len(cpus)
    pin_process(cpus, threads)
    result.thread_environment = runner_thread_environment()
    result.intra_op_threads = threads
    result.inter_op_threads = 1
    progress.step = "import_tensorflow"
    result.tensorflow_version, result.onednn_enabled = import_tensorflow(config.onednn)
    from service.runner.loading import load_for_workload

    progress.step = "load_model"
    started = time.perf_counter()
    model = load_for_workload(spec, config, threads)
    result.load_time_s = time.perf_counter() - started
    result.freeze_cache = cast("FreezeCacheUse | None", model.freeze_cache)
    result.inputs = model.inputs
    result.outputs = model.outputs
    result.intra_op_threads = model.intra_op_threads
    result.inter_op_threads = model.inter_op_threads
    try:
        if args.mode == "performance":
            run_performance(model, config, args, result, progress)
        else:
            run_accuracy(model, config, result, progress)
    finally:
        model.close()  # a warm runner's next step starts with no session of this one


def read_config(path: Path) -> RunnerConfig:
    try:
        return RunnerConfig.read(path)
    except FileNotFoundError:
        raise StepFailed("load_config", f"config not found: {path} does not exist") from None
    except ValidationError as exc:
        raise StepFailed("load_config", f"config {path} is not valid: {exc}") from None
    except Exception as exc:
        raise StepFailed("load_config", f"could not read config {path}: {exc}") from None


def pick_model(config: RunnerConfig, role: str, path: Path) -> RunnerModel:
    spec: RunnerModel | None = config.models.get(role)  # type: ignore[call-overload]
    if spec is None:
        raise StepFailed(
            "load_config", f"config {path} has no {role} (it has: {sorted(config.models)})"
        )
    return spec


def run_performance(
    model: LoadedModel,
    config: RunnerConfig,
    args: argparse.Namespace,
    result: RunnerResult,
    progress: Progress,
) -> None:
    from service.runner import performance

    progress.step = "prepare_inputs"
    sample_shape = performance.dataset_sample_shape(model, config.dataset)
    feeds = performance.synthetic_inputs(model.inputs, config.batch_size, sample_shape=sample_shape)
    result.fed_shapes = [list(feed.shape) for feed in feeds]
    progress.step = "first_inference"
    result.first_inference_s = performance.first_inference_s(model, feeds)
    rule = run_length(config)
    progress.step = "warmup"
    result.warmup_iterations, result.warmup_s = performance.warm_up(
        model, feeds, config.warmup, config.warmup_s
    )
    call_s = _warmup_call_s(result)
    print(f"warmup: {result.warmup_iterations} calls, {call_s * 1000:.3f} ms per call", flush=True)
    if args.sync_dir is not None:
        progress.step = "sync"
        start_at_s = performance.wait_for_go(
            args.sync_dir, args.instance, config.barrier_timeout_s, call_s
        )
        performance.sleep_until(start_at_s)
    progress.step = "measure"
    if config.scenario.name == "offline":
        result.performance = performance.measure(model, feeds, rule, cpus=result.cpus_planned)
    else:
        result.performance = run_scenario(
            model, feeds, config, rule, loadgen_dir(args.output), result.cpus_planned
        )


def run_scenario(
    model: LoadedModel,
    feeds: Sequence[np.ndarray],
    config: RunnerConfig,
    rule: RunLength,
    outdir: Path,
    cpus: list[int],
) -> PerformanceResult:
    """single_stream or server: MLPerf LoadGen issues the calls (service.runner.loadgen_run)."""
    import tensorflow as tf

    from service.runner import loadgen_run
    from service.runner.performance import op_error_text

    run = model.timed_run

    def call() -> None:
        try:
            run(*feeds)
        except tf.errors.OpError as exc:
            raise StepFailed("measure", f"inference failed: {op_error_text(exc)}") from None

    return loadgen_run.run_scenario(call, config.scenario, rule, outdir, config.batch_size, cpus)


def loadgen_dir(output: Path) -> Path:
    """Where LoadGen's logs go: next to the instance's result file, ``<stem>_loadgen/``."""
    return output.with_name(f"{output.stem}_loadgen")


def _warmup_call_s(result: RunnerResult) -> float:
    """The warmup's mean call time; the first call's when there was no warmup."""
    if result.warmup_iterations and result.warmup_s:
        return result.warmup_s / result.warmup_iterations
    return result.first_inference_s or 0.0


def run_length(config: RunnerConfig) -> RunLength:
    try:
        return config.run_length()
    except ValueError as exc:
        raise StepFailed("load_config", f"run-length settings are not valid: {exc}") from None


def run_accuracy(
    model: LoadedModel, config: RunnerConfig, result: RunnerResult, progress: Progress
) -> None:
    from service.runner import accuracy

    progress.step = "load_dataset"
    model_input = accuracy.single_io(model)
    data = accuracy.load_dataset(config.dataset, model_input)
    result.fed_shapes = [[config.batch_size, *data.x.shape[1:]]]
    progress.step = "accuracy"
    result.accuracy = accuracy.evaluate(model, data, config.batch_size, config.topk)


def _finish(result: RunnerResult) -> None:
    """What is read at the end of the run: the cpus every thread may use, peak memory."""
    result.cpus_observed = observed_cpus(os.getpid())
    result.peak_rss_bytes = peak_rss_bytes()


def peak_rss_bytes() -> int:
    """VmHWM: this step's peak in a warm runner (which resets it per step), the process's
    lifetime peak otherwise; ru_maxrss where /proc is not there."""
    peak = status_bytes("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _write(result: RunnerResult, output: Path) -> bool:
    try:
        result.write(output)
    except OSError as exc:
        print(f"runner could not write its result to {output}: {exc}", file=sys.stderr)
        return False
    return True


def _print_summary(result: RunnerResult) -> None:
    """The lines Intel Neural Compressor prints, for tools that parse them."""
    print(f"Batch size = {result.batch_size}")
    if result.performance is not None and result.performance.batch_latencies_ms:
        latencies_ms = result.performance.batch_latencies_ms
        batch_ms = sum(latencies_ms) / len(latencies_ms)
        sample_ms = batch_ms / result.batch_size
        print(f"Latency: {sample_ms:.3f} ms")
        print(f"Throughput: {1000.0 / sample_ms:.3f} images/sec")
    if result.accuracy is not None:
        print(f"Accuracy is {result.accuracy.accuracy:.4f}")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
