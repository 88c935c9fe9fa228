"""One request from validation to its finish event: plan, prepare, run each step, aggregate.

Used by the worker (events go to the broker) and by ``bench`` (events go to stdout) alike.
Returns the finish event; never raises for a failure of the benchmark itself.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from contracts import (
    BenchmarkRequest,
    FinishEvent,
    ModelRole,
    ModelSpec,
    ProgressEvent,
    StartData,
    StartEvent,
    error_finish,
)
from service.config import Settings
from service.engine import datasets, preflight, run_dirs
from service.engine import results as result_store
from service.engine.onednn import OneDnnDecision
from service.engine.paths import VALIDATE_STEP, model_format, require_existing, resolve_allowed
from service.engine.result_builder import ResultBuilder
from service.engine.signoff import SignOff
from service.engine.sweep import SweepPoint, run_order, sweep_points
from service.engine.window_plan import WindowPlan, plan_window
from service.errors import StepFailed
from service.executor.launch import (
    BENCHMARK_SCRIPT,
    InstanceLaunch,
    StepProcessesFailed,
    run_instances,
    run_warm_instances,
    runner_argv,
    runner_limits,
)
from service.executor.memory import memory_binding
from service.executor.planner import InstancePlan, Plan, PlanError, accuracy_plan, plan_instances
from service.executor.topology import CpuTopology
from service.executor.warm_pool import WarmPool
from service.figures import aggregate, fingerprint, verdict
from service.runner.protocol import RunnerConfig, RunnerModel, ScenarioConfig
from service.runner.sandbox import RunnerLimits

log = structlog.get_logger()

Emit = Callable[[StartEvent | ProgressEvent], Awaitable[None]]
RESULT_FILE = run_dirs.RESULT_FILE
FREEZE_CACHE_DIR = "cache/frozen"  # in the workspace, beside workloads/


@dataclass
class Workload:
    """A validated request with everything resolved: paths, plan, workload directory."""

    request: BenchmarkRequest
    run_id: str
    directory: Path
    config_path: Path
    plan: Plan
    config: RunnerConfig
    topology: CpuTopology
    onednn: OneDnnDecision
    limits: RunnerLimits = field(default_factory=RunnerLimits)
    dataset_source: str = "none"
    pool: WarmPool | None = None
    stem_prefix: str = ""  # a sweep point's files: "sweep_b8_2x1_"
    layouts: dict[tuple[int, int], Plan] = field(default_factory=dict)  # sweep layouts' plans

    @property
    def runner_cpus(self) -> list[int]:
        return sorted({cpu for instance in self.plan.instances for cpu in instance.cpus})


def prepare(
    request: BenchmarkRequest,
    settings: Settings,
    topology: CpuTopology,
    run_id: str,
    models_sha256: Mapping[str, str] | None = None,
) -> Workload:
    """Check paths against the allowed roots, decide oneDNN, plan CPUs, write ``config.yaml``
    into a new directory of this run (:mod:`service.engine.run_dirs`).

    Reads the model files (op types; their hashes unless ``models_sha256`` has them): run it
    in a thread.
    """
    known_sha256 = models_sha256 or {}
    roots = settings.worker.effective_roots()
    models: dict[ModelRole, RunnerModel] = {}
    for role, spec in request.models():
        path = require_existing(resolve_allowed(spec.path, roots, role), spec.path, f"{role}")
        format_ = model_format(path, spec.path)
        models[role] = RunnerModel(
            path=str(path),
            precision=spec.precision,
            format=format_,
            sha256=None
            if format_ == "frozen_pb"
            else known_sha256.get(role) or _content_sha256(path, role),
        )
    choice = datasets.choose(
        request, Path(models["input_model"].path), settings.worker.dataset, roots
    )
    dataset = None if choice.path is None else str(choice.path)
    stable = workload_directory(request, settings)
    settings_ = request.benchmark
    one_stream = settings_.scenario.name != "offline"  # LoadGen drives one instance
    try:
        plan = plan_instances(
            topology, 1 if one_stream else settings_.instances, settings_.cores_per_instance
        )
    except PlanError as exc:
        raise StepFailed("plan", str(exc)) from None
    layouts = _sweep_layouts(request, topology)
    decision = preflight.decide(settings_.onednn or settings.worker.onednn, models)
    config = RunnerConfig(
        id=request.id,
        models=models,
        batch_size=settings_.batch_size,
        warmup=settings_.warmup,
        warmup_s=settings_.warmup_s,
        iterations=settings_.iterations,
        duration_s=settings_.duration_s,
        min_iterations=settings_.min_iterations,
        max_duration_s=settings_.cap_s(),
        dataset=dataset,
        topk=settings_.metric.topk,
        inputs=list(settings_.inputs) if settings_.inputs else None,
        outputs=list(settings_.outputs) if settings_.outputs else None,
        onednn=decision.effective,
        freeze_cache_dir=str(stable.parent.parent / FREEZE_CACHE_DIR),
        scenario=ScenarioConfig.model_validate(settings_.scenario.model_dump()),
    )
    try:
        directory = run_dirs.create_run_directory(stable, run_id, settings.worker.keep_runs)
        config.write(directory / "config.yaml")
    except OSError as exc:
        raise StepFailed(
            "prepare", f"cannot write the workload directory {stable}: {exc.strerror}"
        ) from None
    widest = max(len(i.cpus) for each in (plan, *layouts.values()) for i in each.instances)
    limits = runner_limits(settings.worker, widest)  # a CPU-time limit every layout fits
    return Workload(
        request, run_id, directory, directory / "config.yaml", plan, config, topology,
        onednn=decision, limits=limits, dataset_source=choice.source, layouts=layouts,
    )  # fmt: skip


def _sweep_layouts(request: BenchmarkRequest, topology: CpuTopology) -> dict[tuple[int, int], Plan]:
    """The plan of every sweep layout, checked before anything runs: a layout that does not
    fit this worker's CPUs fails the request at step ``plan``, naming the layout."""
    sweep = request.benchmark.sweep
    plans: dict[tuple[int, int], Plan] = {}
    for shape in [] if sweep is None else sweep.shapes():
        try:
            plans[shape] = plan_instances(topology, *shape)
        except PlanError as exc:
            raise StepFailed("plan", f"sweep layout {shape[0]}x{shape[1]}: {exc}") from None
    return plans


def model_hashes(request: BenchmarkRequest, roots: tuple[Path, ...]) -> dict[str, str]:
    """The SHA-256 of each model's content, by role; a model that is not allowed or cannot be
    read is left out (its run then fails with the message that names the problem)."""
    hashes: dict[str, str] = {}
    for role, spec in request.models():
        try:
            path = require_existing(resolve_allowed(spec.path, roots, role), spec.path, role)
            hashes[role] = str(fingerprint.hash_path(path)["sha256"])
        except (StepFailed, OSError):
            continue
    return hashes


def _content_sha256(path: Path, role: str) -> str:
    """The SHA-256 of a model's content, the freeze cache's key (a SavedModel: all its files)."""
    try:
        return str(fingerprint.hash_path(path)["sha256"])
    except OSError as exc:
        raise StepFailed("prepare", f"{role}: cannot read {path}: {exc.strerror}") from None


def workload_directory(request: BenchmarkRequest, settings: Settings) -> Path:
    """``<workspace>/workloads/<model_name>_<id>``, the stable path (a link to the latest run,
    :mod:`service.engine.run_dirs`); the workspace must be in the allowed roots."""
    workspace = resolve_allowed(
        request.workspace_path or str(settings.worker.workspace),
        settings.worker.effective_roots(),
        "workspace",
    )
    return workspace / "workloads" / f"{_model_name(request.input_model.path)}_{request.id}"


def _model_name(raw_path: str) -> str:
    stem = Path(raw_path.rstrip("/")).stem
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem)[:64] or "model"


async def run_workload(
    request: BenchmarkRequest,
    settings: Settings,
    topology: CpuTopology,
    emit: Emit,
    run_id: str,
    node: dict[str, Any] | None = None,
    labels: Mapping[str, Any] | None = None,
    pool: WarmPool | None = None,
    tracker: StepTracker | None = None,
) -> FinishEvent:
    """Run every step of ``request``; return the finish event (success or error).

    ``labels`` go into every event's data (the worker's ``attempt``, ``request_sha256``).
    With ``pool``, steps and the pre-flight check run in warm runners. ``tracker`` follows the
    current step (for whoever may cancel the run).
    """
    timeout_s = min(
        request.benchmark.timeout_s or settings.worker.timeout_s, settings.worker.timeout_s
    )
    tracker = tracker or StepTracker()
    extra = {"run_id": run_id, **(labels or {}), **({"node": node} if node else {})}
    try:
        async with asyncio.timeout(timeout_s):
            known_sha256 = (labels or {}).get(result_store.MODELS_FIELD)
            workload = await asyncio.to_thread(
                prepare, request, settings, topology, run_id, known_sha256
            )
            workload.pool = pool
            await emit(StartEvent(data=StartData(id=request.id, message="started", **extra)))
            tracker.current = preflight.STEP
            checked = await preflight.check(
                preflight.preflight_launch(
                    workload.config_path, workload.directory, workload.runner_cpus[:1]
                ),
                workload.onednn,
                workload.limits,
                settings.worker.preflight_timeout_s,
                pool,
            )
            finish = await _run_steps(
                workload, emit, tracker, {**extra, "preflight": checked}, known_sha256
            )
    except TimeoutError:
        finish = error_finish(
            request.id,
            f"timed out after {timeout_s:g} s during {tracker.current}; its runners were killed",
            tracker.current,
            **extra,
        )
    except StepFailed as exc:
        finish = error_finish(request.id, exc.message, exc.step, **extra)
    return finish


class StepTracker:
    """The step a workload is in: its one owner. The fleet reads it to name the step a cancel
    ended; a time-out's error finish names it too."""

    current: str = VALIDATE_STEP


async def _run_steps(
    workload: Workload,
    emit: Emit,
    tracker: StepTracker,
    extra: dict[str, Any],
    known_sha256: Mapping[str, str] | None,
) -> FinishEvent:
    request = workload.request
    steps = request.steps()
    signoff = await SignOff.collect(  # machine, hashes
        workload.config,
        workload.runner_cpus,
        request.benchmark.run_length_chosen(),
        known_sha256,
    )
    points = sweep_points(request, _main_point(workload))
    measured: list[ModelRole] = [role for role, _, mode in steps if mode == "performance"]
    sweep_runs = run_order(points, measured)
    result = ResultBuilder(request.id, signoff, len(steps) + len(sweep_runs), extra)
    if workload.config.dataset is not None:
        result.dataset = {"path": workload.config.dataset, "source": workload.dataset_source}
    for role, spec, mode in steps:
        tracker.current = f"{role}/{mode}"
        try:
            details = await _run_step(workload, role, spec, mode, signoff)
        except OSError as exc:  # disk full, workspace gone: the step's files cannot be written
            raise _cannot_write(tracker.current, exc, workload.directory) from None
        await emit(ProgressEvent(data=result.step_done(role, mode, details)))
    await result.compare()  # speedup, its interval, accuracy delta
    if points:
        await _run_sweep(workload, result, points, measured, sweep_runs, emit, tracker)
    finish = FinishEvent(status="success", data=result.data())
    _write_result(workload.directory, finish)
    return finish


def _cannot_write(step: str, exc: OSError, directory: Path) -> StepFailed:
    where = exc.filename or directory
    return StepFailed(step, f"{step} failed: cannot write {where}: {exc.strerror}")


def _main_point(workload: Workload) -> tuple[int, int, int]:
    plan = workload.plan
    return (workload.config.batch_size, len(plan.instances), plan.cores_per_instance)


async def _run_sweep(
    workload: Workload,
    result: ResultBuilder,
    points: list[SweepPoint],
    roles: list[ModelRole],
    runs: list[tuple[SweepPoint, ModelRole]],
    emit: Emit,
    tracker: StepTracker,
) -> None:
    """Every sweep point beyond the main one, for each model measured for performance, in
    :func:`service.engine.sweep.run_order`; a progress event after each. A point that fails
    (a fixed batch dimension, a runner that dies) is a row saying why; the sweep goes on."""
    table = result.start_sweep(points, roles)
    specs = dict(workload.request.models())
    for point, role in runs:
        tracker.current = f"sweep/{point.label}/{role}"
        try:
            variant = _point_workload(workload, point)
            details = await _run_step(variant, role, specs[role], "performance", result.signoff,
                                      point=point)  # fmt: skip
            table.add(point, role, details)
        except StepFailed as exc:
            log.warning("sweep_point_failed", point=point.label, role=role, error=exc.message)
            table.failed(point, role, exc.message)
        except OSError as exc:  # disk full, workspace gone: no point can be written
            raise _cannot_write(tracker.current, exc, workload.directory) from None
        await emit(ProgressEvent(data=await result.sweep_run_done(point)))


def _point_workload(workload: Workload, point: SweepPoint) -> Workload:
    """The workload as one sweep point runs it: its batch size's config file, its layout's
    plan, its own file names in the same run directory."""
    plan = workload.layouts.get((point.instances, point.cores_per_instance), workload.plan)
    config, config_path = workload.config, workload.config_path
    if point.batch_size != config.batch_size:
        config = config.model_copy(update={"batch_size": point.batch_size})
        config_path = workload.directory / f"config_b{point.batch_size}.yaml"
        if not config_path.exists():
            config.write(config_path)
    return replace(
        workload, plan=plan, config=config, config_path=config_path,
        stem_prefix=f"sweep_{point.label}_",
    )  # fmt: skip


async def _run_step(
    workload: Workload,
    role: ModelRole,
    spec: ModelSpec,
    mode: str,
    signoff: SignOff,
    point: SweepPoint | None = None,
) -> dict[str, Any]:
    """Run one (model, mode) step on its planned CPUs; return its details (figures, verdict,
    costs, how it ran)."""
    step = f"{role}/{mode}" if point is None else f"sweep/{point.label}/{role}"
    instances: tuple[InstancePlan, ...] = (
        workload.plan.instances if mode == "performance" else (accuracy_plan(workload.plan),)
    )
    sync_dir = None
    if mode == "performance":
        sync_dir = workload.directory / f"sync_{workload.stem_prefix}{role}_{mode}"
        sync_dir.mkdir()
    launches = [
        _launch(workload, role, mode, number, instance, sync_dir)
        for number, instance in enumerate(instances)
    ]
    planned: list[WindowPlan] = []

    def announce_window(call_times_s: list[float | None]) -> None:
        known = [t for t in call_times_s if t is not None]
        if known:
            planned.append(_plan_window(workload.config, max(known), len(launches)))
            log.info("window_planned", workload_id=workload.request.id, step=step,
                     message=planned[0].message)  # fmt: skip

    started_s = time.monotonic()
    try:
        if workload.pool is None:
            results = await run_instances(launches, sync_dir, workload.limits, announce_window)
        else:
            results = await run_warm_instances(
                launches, sync_dir, workload.pool, workload.config.onednn, announce_window
            )
    except StepProcessesFailed as exc:
        raise StepFailed(step, f"{step} failed: {exc}") from None
    step_wall_s = time.monotonic() - started_s
    loadgen = results[0].performance.loadgen if results[0].performance else None
    if loadgen is not None and loadgen.get("status") == "target_unreachable":
        raise StepFailed(step, f"{step}: {loadgen.get('message')}")  # no rate to report
    mismatches = aggregate.pinning_mismatches(results)  # in the verdict, not a failure
    details = _seed_details(workload, role, spec, mode, launches)
    details["memory_policy"] = memory_binding(instances[0], workload.topology).policy
    details["step_wall_s"] = round(step_wall_s, 3)
    if any(result.freeze_cache for result in results):
        details["freeze_cache"] = {
            "per_instance": [result.freeze_cache for result in results],
            "directory": workload.config.freeze_cache_dir,
        }
    if planned:
        details["window_plan"] = planned[0].to_dict()
    try:
        if mode == "performance":
            figures = await signoff.performance_figures(
                role, results, mismatches, workload.config.batch_size, point
            )
        else:
            figures = signoff.accuracy_figures(role, results[0], mismatches)
    except ValueError as exc:
        raise StepFailed(step, f"{step} produced no usable measurement: {exc}") from None
    details.update(figures)
    details["inputs"] = [t.model_dump() for t in results[0].inputs]
    details["fed_shapes"] = results[0].fed_shapes
    details["outputs"] = results[0].outputs
    details["tensorflow_version"] = results[0].tensorflow_version
    details["onednn_enabled"] = results[0].onednn_enabled
    details["onednn"] = workload.onednn.details(results[0].onednn_enabled)
    details["thread_environment"] = results[0].thread_environment
    return details


def _plan_window(config: RunnerConfig, call_s: float, instances: int) -> WindowPlan:
    return plan_window(
        config.run_length(), call_s, instances, aggregate.PERCENTILES, verdict.REQUIRED_PERCENTILES
    )


def _launch(
    workload: Workload,
    role: str,
    mode: str,
    number: int,
    instance: InstancePlan,
    sync_dir: Path | None,
) -> InstanceLaunch:
    stem = f"{workload.stem_prefix}{role}_{mode}_benchmark"
    result_path = workload.directory / f"{stem}_{number}.json"
    argv = runner_argv(
        workload.config_path, role, mode, number, instance.cpus, result_path, sync_dir
    )
    return InstanceLaunch(
        index=number,
        cpus=instance.cpus,
        argv=memory_binding(instance, workload.topology).argv_prefix + argv,
        log_path=workload.directory / f"{stem}_{number}.txt",
        result_path=result_path,
    )


def _seed_details(
    workload: Workload, role: ModelRole, spec: ModelSpec, mode: str, launches: list[InstanceLaunch]
) -> dict[str, Any]:
    """The seed's ``execution_details`` fields, then which CPUs each instance had."""
    return {
        "instances": len(launches),
        "cores_per_instance": workload.plan.cores_per_instance,
        "model_path": spec.path,
        "precision": spec.precision,
        "mode": mode,
        "batch_size": workload.config.batch_size,
        "framework": workload.config.framework,
        "config_path": str(workload.config_path),
        "benchmark_script": BENCHMARK_SCRIPT,
        "command": launches[0].command,
        "commands": [launch.command for launch in launches],
        "cpus": [list(launch.cpus) for launch in launches],
        "model_format": workload.config.models[role].format,
        "log_paths": [str(launch.log_path) for launch in launches],
    }


def _write_result(directory: Path, finish: FinishEvent) -> None:
    """``result.json``, written to a temporary file and renamed: never half-written."""
    try:
        result_store.write_result(directory, finish)
    except OSError as exc:
        raise StepFailed(
            "write_result", f"cannot write {directory / RESULT_FILE}: {exc.strerror}"
        ) from None
