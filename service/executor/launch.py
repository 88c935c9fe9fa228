"""Starting runner child processes for one step, synchronising them, and ending them all.

Every process of a step lives in one process group: a failure of any instance, the time limit
or a shutdown (task cancellation) kills the whole group, so nothing is left running. Runners
are started without a shell, with an environment stripped of secrets, and confine themselves
first thing (``service.runner.sandbox``): they die with the worker and take the rlimits below.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
import structlog

from service.atomic import write_atomic
from service.config import Settings, WorkerSettings
from service.cpulist import format_cpu_list
from service.errors import ServiceError
from service.executor.failures import InstanceFailure, describe_exit, log_tail, summarize
from service.executor.reaping import reap
from service.executor.warm_pool import RunnerGone, RunnerKey, WarmPool, WarmRunner, kill_all
from service.runner import protocol
from service.runner.sandbox import PARENT_PID_ENV, RunnerLimits

log = structlog.get_logger()

RUNNER_MODULE = "service.runner"
BENCHMARK_SCRIPT = str(Path(protocol.__file__).with_name("__main__.py"))
# Variables a runner must not see: models are programs (TensorFlow's SECURITY.md).
_SECRET_MARKERS = ("AMQP", "PASSWORD", "SECRET", "TOKEN", "CREDENTIAL", "BENCHMARK_WORKER_")
_CPU_TIME_MARGIN_S = 60
_BARRIER_POLL_S = 0.005
_START_DELAY_S = 0.05


def make_pool(settings: Settings, cpu_count: int) -> WarmPool | None:
    """The worker's warm runners (None with ``runners.warm: false``), with a fresh runner's
    limits; the CPU-time limit applies per step (``service.runner.sandbox.confine_warm``)."""
    if not settings.runners.warm:
        return None
    limits = runner_limits(settings.worker, cpu_count)
    workspace = settings.worker.workspace.expanduser()
    return WarmPool(settings.runners, runner_environment(limits=limits), workspace / "runners")


@dataclass(frozen=True)
class InstanceLaunch:
    """One runner process: its CPUs, exact argv, log file and result file."""

    index: int
    cpus: tuple[int, ...]
    argv: tuple[str, ...]
    log_path: Path
    result_path: Path

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


def runner_argv(
    config_path: Path,
    role: str,
    mode: str,
    index: int,
    cpus: Sequence[int],
    result_path: Path,
    sync_dir: Path | None,
) -> tuple[str, ...]:
    """The command line of one runner, runnable by hand as it is."""
    argv = [
        sys.executable, "-m", RUNNER_MODULE,
        "--config", str(config_path),
        "--model", role,
        "--mode", mode,
        "--instance", str(index),
        "--cpus", format_cpu_list(cpus),
        "--output", str(result_path),
    ]  # fmt: skip
    if sync_dir is not None:
        argv += ["--sync-dir", str(sync_dir)]
    return tuple(argv)


def runner_environment(
    environ: Mapping[str, str] | None = None, limits: RunnerLimits | None = None
) -> dict[str, str]:
    """The worker's environment without the broker URL or anything that looks like a secret,
    plus what the runner needs to confine itself: this worker's pid and the rlimits."""
    environ = os.environ if environ is None else environ
    env = {
        name: value
        for name, value in environ.items()
        if not any(marker in name.upper() for marker in _SECRET_MARKERS)
    }
    env["PYTHONUNBUFFERED"] = "1"
    env[PARENT_PID_ENV] = str(os.getpid())
    if limits is not None:
        env.update(limits.to_environment())
    return env


def runner_limits(settings: WorkerSettings, cpus_per_instance: int) -> RunnerLimits:
    """Each runner's rlimits: configured, else memory = the machine's, CPU = time limit × CPUs."""
    memory_bytes = (
        settings.runner_memory_mb * 2**20
        if settings.runner_memory_mb is not None
        else psutil.virtual_memory().total
    )
    cpu_time_s = settings.runner_cpu_time_s or (
        math.ceil(settings.timeout_s * max(cpus_per_instance, 1)) + _CPU_TIME_MARGIN_S
    )
    return RunnerLimits(
        data_bytes=memory_bytes, cpu_time_s=cpu_time_s, open_files=settings.runner_open_files
    )


class StepProcessesFailed(ServiceError):
    """At least one instance failed; carries one message a user can act on."""

    def __init__(self, failures: list[InstanceFailure]) -> None:
        self.failures = failures
        super().__init__(summarize(failures))


OnReady = Callable[[list[float | None]], None]


async def run_instances(
    launches: Sequence[InstanceLaunch],
    sync_dir: Path | None,
    limits: RunnerLimits | None = None,
    on_ready: OnReady | None = None,
) -> list[protocol.RunnerResult]:
    """Run every instance to the end; return their results in instance order.

    With ``sync_dir``, all instances warm up, then start measuring at one common instant;
    ``on_ready`` gets each instance's warmup call time (seconds) just before that, while
    nothing is being timed.
    Cancelling the calling task (time limit, shutdown) kills the whole process group.
    """
    processes: list[asyncio.subprocess.Process] = []
    stopped: set[int] = set()
    try:
        for launch in launches:
            group = processes[0].pid if processes else 0
            processes.append(await _start(launch, group, limits))
        if sync_dir is not None:
            ended = lambda: any(p.returncode is not None for p in processes)  # noqa: E731
            await _release_barrier(ended, launches, sync_dir, on_ready)
        await _wait_all_or_first_failure(processes)
    finally:
        stopped = _kill_group(processes)
        await asyncio.shield(_reap(processes))
    return _collect(
        launches, [p.returncode for p in processes], [p.pid in stopped for p in processes]
    )


async def run_warm_instances(
    launches: Sequence[InstanceLaunch],
    sync_dir: Path | None,
    pool: WarmPool,
    onednn: bool | None,
    on_ready: OnReady | None = None,
) -> list[protocol.RunnerResult]:
    """As :func:`run_instances`, each instance in a warm runner of its key (started if none).

    A failure, the time limit or a cancel kills the step's runners (they are replaced); after
    a clean step they go back to the pool.
    """
    runners: list[WarmRunner] = []
    jobs: list[asyncio.Task[int]] = []
    clean = False
    try:
        keys = [warm_key(launch, onednn) for launch in launches]
        try:  # new runners import TensorFlow side by side, before anything is timed
            await pool.start_missing(keys)
        except RunnerGone as exc:
            first = launches[0]
            raise StepProcessesFailed(
                [InstanceFailure(first.index, str(exc), pool.log_path(first.cpus))]
            ) from None
        for key in keys:
            runners.append(await pool.acquire(key))
        for launch, runner in zip(launches, runners, strict=True):
            module, argv = job_of(launch)
            launch.result_path.unlink(missing_ok=True)
            launch.log_path.write_bytes(b"")  # fresh every run, as a fresh runner's log
            jobs.append(asyncio.create_task(runner.run(module, argv, launch.log_path)))
        if sync_dir is not None:
            await _release_barrier(
                lambda: any(j.done() for j in jobs), launches, sync_dir, on_ready
            )
        await _wait_jobs_or_first_failure(jobs)
        clean = all(j.done() and not j.cancelled() and j.exception() is None for j in jobs)
    finally:
        running = [not j.done() for j in jobs] + [False] * (len(runners) - len(jobs))
        if not clean:
            kill_all(runners)
        for job in jobs:
            job.cancel()
        await asyncio.shield(asyncio.gather(*jobs, return_exceptions=True))
        if not clean:  # reaped before the step ends: no zombie outlives a cancel
            await asyncio.shield(_reap([r.process for r in runners]))
        codes = [  # a job whose runner died: how the runner ended
            code if (code := _job_code(j)) is not None or clean else r.process.returncode
            for j, r in zip(jobs, runners, strict=False)
        ]
        for runner, code in zip(runners, codes + [None] * len(runners), strict=False):
            pool.release(runner, reusable=clean and code == 0)
    return _collect(launches, codes, running)


async def run_warm_process(
    launch: InstanceLaunch, pool: WarmPool, onednn: bool | None
) -> int | None:
    """As :func:`run_process`, in a warm runner; None if the runner died. Raises
    :class:`RunnerGone` if no runner could start."""
    runner = await pool.acquire(warm_key(launch, onednn))
    code: int | None = None
    try:
        module, argv = job_of(launch)
        launch.result_path.unlink(missing_ok=True)
        launch.log_path.write_bytes(b"")
        code = await runner.run(module, argv, launch.log_path)
    except RunnerGone:
        return None
    finally:
        if code is None:
            kill_all([runner])
            await asyncio.shield(_reap([runner.process]))
        pool.release(runner, reusable=code == 0)
    return code


def _job_code(job: asyncio.Task[int]) -> int | None:
    if job.cancelled() or job.exception() is not None:
        return None
    return job.result()


async def _wait_jobs_or_first_failure(jobs: list[asyncio.Task[int]]) -> None:
    pending = set(jobs)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if any(j.exception() is not None or j.result() != 0 for j in done):
            return


def job_of(launch: InstanceLaunch) -> tuple[str, list[str]]:
    """(module, arguments) of a launch's ``python -m MODULE ARGS`` command."""
    start = launch.argv.index(sys.executable)
    return launch.argv[start + 2], list(launch.argv[start + 3 :])


def warm_key(launch: InstanceLaunch, onednn: bool | None) -> RunnerKey:
    """The warm runner a launch needs: its CPUs, threads, oneDNN and memory-binding prefix."""
    _, argv = job_of(launch)
    threads = int(argv[argv.index("--threads") + 1]) if "--threads" in argv else len(launch.cpus)
    prefix = launch.argv[: launch.argv.index(sys.executable)]
    return RunnerKey(tuple(launch.cpus), threads, onednn, tuple(prefix))


async def run_process(launch: InstanceLaunch, limits: RunnerLimits | None = None) -> int | None:
    """Run one child (the pre-flight check) to its end; its exit code.

    Cancelling the calling task kills it and its process group, as for a step's runners.
    """
    processes: list[asyncio.subprocess.Process] = []
    try:
        processes.append(await _start(launch, 0, limits))
        return await processes[0].wait()
    finally:
        _kill_group(processes)
        await asyncio.shield(_reap(processes))


async def _start(
    launch: InstanceLaunch, process_group: int, limits: RunnerLimits | None
) -> asyncio.subprocess.Process:
    launch.result_path.unlink(missing_ok=True)
    with launch.log_path.open("wb") as log_file:  # truncated: fresh every run
        process = await asyncio.create_subprocess_exec(
            *launch.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            env=runner_environment(limits=limits),
            close_fds=True,
            process_group=process_group,
        )
    log.debug("runner_started", pid=process.pid, instance=launch.index, command=launch.command)
    return process


async def _release_barrier(
    ended: Callable[[], bool],
    launches: Sequence[InstanceLaunch],
    sync_dir: Path,
    on_ready: OnReady | None,
) -> None:
    ready = {
        launch.index: sync_dir / f"{protocol.READY_FILE_PREFIX}{launch.index}"
        for launch in launches
    }
    while not all(path.exists() for path in ready.values()):
        if ended():
            return  # an instance ended before its warmup finished: _collect reports it
        await asyncio.sleep(_BARRIER_POLL_S)
    if on_ready is not None:
        on_ready([_ready_call_s(path) for path in ready.values()])
    go = sync_dir / protocol.GO_FILE
    write_atomic(go, json.dumps({"start_at_s": time.monotonic() + _START_DELAY_S}))


def _ready_call_s(path: Path) -> float | None:
    """The warmup call time an instance announced in its ready file (None: not readable)."""
    try:
        value = json.loads(path.read_text()).get("call_s")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) and value > 0 else None


async def _wait_all_or_first_failure(processes: list[asyncio.subprocess.Process]) -> None:
    """Wait for every process; stop waiting as soon as one fails (the rest are then killed)."""
    waits = {asyncio.ensure_future(p.wait()) for p in processes}
    try:
        while waits:
            done, waits = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if any(task.result() != 0 for task in done):
                return
    finally:
        for task in waits:
            task.cancel()


def _kill_group(processes: list[asyncio.subprocess.Process]) -> set[int]:
    """Kill every process of the group still running; the pids it stopped."""
    running = {p.pid for p in processes if p.returncode is None}
    if not running:
        return running
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(processes[0].pid, signal.SIGKILL)
    for process in processes:  # in case one left the group
        with contextlib.suppress(ProcessLookupError):
            if process.returncode is None:
                process.kill()
    return running


async def _reap(processes: list[asyncio.subprocess.Process]) -> None:
    await reap(processes)


def _collect(
    launches: Sequence[InstanceLaunch],
    exit_codes: Sequence[int | None],
    stopped_by_us: Sequence[bool],
) -> list[protocol.RunnerResult]:
    results: list[protocol.RunnerResult] = []
    failures: list[InstanceFailure] = []
    for launch, code, stopped in zip(launches, exit_codes, stopped_by_us, strict=False):
        result = _read_result(launch.result_path)
        if code == 0 and result is not None and result.error is None:
            results.append(result)
            continue
        failures.append(_failure(launch, code, result, stopped))
    if failures:
        raise StepProcessesFailed(failures)
    return results


def _read_result(path: Path) -> protocol.RunnerResult | None:
    try:
        return protocol.RunnerResult.read(path)
    except (OSError, ValueError):
        return None


def _failure(
    launch: InstanceLaunch,
    exit_code: int | None,
    result: protocol.RunnerResult | None,
    killed_by_us: bool,
) -> InstanceFailure:
    """A runner's own error when it wrote one (however it ended after); stopped by the worker
    when the worker killed it first; else how it ended and the useful end of its log."""
    if result is not None and result.error is not None:
        return InstanceFailure(
            launch.index, f"{result.error.step} failed: {result.error.message}", launch.log_path
        )
    if killed_by_us:
        return InstanceFailure(launch.index, "stopped", launch.log_path, stopped_by_worker=True)
    tail = log_tail(launch.log_path)
    how = "died" if exit_code is None else describe_exit(exit_code)
    cause = f"runner {how} without a result"
    return InstanceFailure(
        launch.index, cause + (f"; its log ends: {tail}" if tail else ""), launch.log_path
    )
