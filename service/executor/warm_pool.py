"""Warm runner processes, kept between steps and requests (``runners.warm``).

Importing TensorFlow costs seconds per process; a request of four steps paid it four or more
times. The pool keeps one process (:mod:`service.runner.warm`) per *key*: the CPUs it is
pinned to, its thread count, the oneDNN setting and the memory-binding prefix, all of which
TensorFlow fixes when it starts. A step takes the idle runner of its key, or starts one (at
step start, when nothing is being timed), and sends it the same module and arguments as the
step's ``command``. Between steps a runner is blocked reading its stdin: 0% CPU.

A runner is stopped and replaced after any failure, time limit or cancel of its step (its
state is unknown then), once it grew past ``runners.max_rss_mb``, after
``runners.max_steps`` steps, and when idle for ``runners.idle_s``. Runners die with the
worker (``PR_SET_PDEATHSIG``, as fresh runners do) and :meth:`WarmPool.close` kills them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import structlog

from service.config import RunnersSettings
from service.cpulist import format_cpu_list
from service.errors import ServiceError
from service.executor.failures import describe_exit, log_tail
from service.executor.reaping import reap

log = structlog.get_logger()

WARM_MODULE = "service.runner.warm"
_READ_LIMIT_BYTES = 1 << 20


@dataclass(frozen=True)
class RunnerKey:
    """What a runner fixed when TensorFlow started: a step must match all of it."""

    cpus: tuple[int, ...]
    threads: int
    onednn: bool | None
    prefix: tuple[str, ...] = ()

    def argv(self, steps: int) -> tuple[str, ...]:
        onednn = {True: "on", False: "off", None: "default"}[self.onednn]
        return (
            *self.prefix, sys.executable, "-m", WARM_MODULE,
            "--cpus", format_cpu_list(self.cpus), "--threads", str(self.threads),
            "--onednn", onednn, "--steps", str(steps),
        )  # fmt: skip


class RunnerGone(ServiceError):
    """The warm runner died or broke the protocol (it is not reused)."""


@dataclass(eq=False)  # identity: one object per process
class WarmRunner:
    key: RunnerKey
    process: asyncio.subprocess.Process
    started_s: float = field(default_factory=time.monotonic)
    last_used_s: float = field(default_factory=time.monotonic)
    steps: int = 0
    rss_bytes: int = 0
    busy: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    async def run(self, module: str, argv: Sequence[str], log_path: Path) -> int:
        """Run one job; its exit code. :class:`RunnerGone` if the process ends first."""
        job = json.dumps({"module": module, "argv": list(argv), "log": str(log_path)})
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(job.encode() + b"\n")
            await self.process.stdin.drain()
            answer = await _read_message(self.process)
        except (ConnectionError, BrokenPipeError) as exc:
            raise RunnerGone(f"warm runner {self.pid} is gone: {exc!r}") from None
        self.steps += 1
        self.last_used_s = time.monotonic()
        self.rss_bytes = int(answer.get("rss_bytes") or 0)
        return int(answer["exit"])

    def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    def describe(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "cpus": format_cpu_list(self.key.cpus),
            "threads": self.key.threads,
            "onednn": self.key.onednn,
            "steps": self.steps,
            "rss_bytes": self.rss_bytes,
            "age_s": round(time.monotonic() - self.started_s, 1),
            "busy": self.busy,
        }


async def _read_message(process: asyncio.subprocess.Process) -> dict[str, Any]:
    assert process.stdout is not None
    line = await process.stdout.readline()
    if not line:
        await process.wait()
        raise RunnerGone(f"warm runner {process.pid} ended (exit {process.returncode})")
    try:
        message = json.loads(line)
    except ValueError:
        raise RunnerGone(f"warm runner {process.pid} wrote {line[:80]!r}") from None
    if not isinstance(message, dict):
        raise RunnerGone(f"warm runner {process.pid} wrote {line[:80]!r}")
    return message


class WarmPool:
    """The worker's warm runners, by key; one step at a time uses each."""

    def __init__(
        self, settings: RunnersSettings, environment: Mapping[str, str], log_dir: Path
    ) -> None:
        self._settings = settings
        self._environment = dict(environment)
        self._log_dir = log_dir
        self._idle: dict[RunnerKey, WarmRunner] = {}
        self._busy: set[WarmRunner] = set()
        self._reaper: asyncio.Task[None] | None = None
        self.started = 0  # runner processes started since the pool was made
        idle_mb = settings.max_idle_mb
        self.idle_budget_bytes = (
            psutil.virtual_memory().total // 4 if idle_mb is None else idle_mb * 2**20
        )

    def runners(self) -> list[WarmRunner]:
        return [*self._idle.values(), *self._busy]

    def snapshot(self) -> dict[str, Any]:
        """For node status and metrics: count, memory and age of each warm runner."""
        runners = self.runners()
        return {
            "count": len(runners),
            "rss_bytes": sum(r.rss_bytes for r in runners),
            "started": self.started,
            "runners": [r.describe() for r in runners],
        }

    async def start_missing(self, keys: Sequence[RunnerKey]) -> None:
        """Start the runners of ``keys`` the pool lacks, side by side; each goes idle into the
        pool as soon as it is ready, so a cancel never loses one. Raises the first
        :class:`RunnerGone`."""
        self._start_reaper()

        async def start_into_pool(key: RunnerKey) -> None:
            runner = self._idle.get(key)
            if runner is not None and runner.process.returncode is None:
                return
            self._idle[key] = await self._start(key)

        results = await asyncio.gather(
            *(start_into_pool(key) for key in dict.fromkeys(keys)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def acquire(self, key: RunnerKey) -> WarmRunner:
        """The idle runner of ``key``, or a new one (TensorFlow imported, ready)."""
        self._start_reaper()
        runner = self._idle.pop(key, None)
        if runner is not None and runner.process.returncode is not None:
            runner = None  # died while idle: a fresh one takes its place
        if runner is None:
            runner = await self._start(key)
        runner.busy = True
        self._busy.add(runner)
        return runner

    def release(self, runner: WarmRunner, reusable: bool) -> None:
        """Back to the pool after a clean step; else (or when spent) stopped."""
        self._busy.discard(runner)
        runner.busy = False
        spent = (
            runner.steps >= self._settings.max_steps
            or runner.rss_bytes > self._settings.max_rss_mb * 2**20
        )
        if not reusable or spent or runner.process.returncode is not None:
            reason = "failed" if not reusable else "spent"
            log.info("warm_runner_stopped", pid=runner.pid, reason=reason, steps=runner.steps)
            runner.kill()
            return
        old = self._idle.pop(runner.key, None)
        if old is not None:  # two of one key (cannot happen with one step at a time)
            old.kill()
        self._idle[runner.key] = runner
        self._trim_idle(keep=runner)

    def _trim_idle(self, keep: WarmRunner) -> None:
        """Stop the least recently used idle runners while all idle ones together hold more
        than ``runners.max_idle_mb`` (``keep``, the one just released, stays)."""
        held = sum(r.rss_bytes for r in self._idle.values())
        for runner in sorted(self._idle.values(), key=lambda r: r.last_used_s):
            if held <= self.idle_budget_bytes:
                return
            if runner is keep:
                continue
            del self._idle[runner.key]
            held -= runner.rss_bytes
            log.info("warm_runner_stopped", pid=runner.pid, reason="idle_memory",
                     idle_rss_bytes=held, budget_bytes=self.idle_budget_bytes)  # fmt: skip
            runner.kill()

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for runner in self.runners():
            runner.kill()
        await reap([r.process for r in self.runners()])
        self._idle.clear()
        self._busy.clear()

    def log_path(self, cpus: Sequence[int]) -> Path:
        """Where warm runners on ``cpus`` write what they say outside their jobs."""
        return self._log_dir / f"warm_runner_cpus_{format_cpu_list(cpus)}.txt"

    async def _start(self, key: RunnerKey) -> WarmRunner:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_path(key.cpus)
        with log_path.open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                *key.argv(self._settings.max_steps),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                env=self._environment,
                close_fds=True,
                start_new_session=True,  # its own group: a step's kill never hits the worker
                limit=_READ_LIMIT_BYTES,
            )
        self.started += 1
        runner = WarmRunner(key, process)
        try:
            ready = await asyncio.wait_for(_read_message(process), self._settings.start_timeout_s)
        except TimeoutError:
            runner.kill()
            await asyncio.shield(reap([process]))
            raise RunnerGone(
                f"warm runner did not start within {self._settings.start_timeout_s:g} s "
                "(runners.start_timeout_s)"
            ) from None
        except RunnerGone:
            runner.kill()
            await asyncio.shield(reap([process]))
            raise RunnerGone(
                f"the runner {describe_exit(process.returncode)} while TensorFlow started"
                f"{_tail(log_path)}"
            ) from None
        except asyncio.CancelledError:
            runner.kill()
            await asyncio.shield(reap([process]))
            raise
        if not ready.get("ready"):
            runner.kill()
            await asyncio.shield(reap([process]))
            raise RunnerGone(f"the runner could not start: {ready.get('error')}{_tail(log_path)}")
        log.info("warm_runner_started", pid=process.pid, cpus=format_cpu_list(key.cpus),
                 threads=key.threads, import_s=ready.get("import_s"))  # fmt: skip
        return runner

    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap_idle())

    async def _reap_idle(self) -> None:
        interval_s = min(self._settings.idle_s / 2, 30.0)
        while True:
            await asyncio.sleep(interval_s)
            now = time.monotonic()
            for key, runner in list(self._idle.items()):
                if now - runner.last_used_s >= self._settings.idle_s:
                    del self._idle[key]
                    log.info("warm_runner_stopped", pid=runner.pid, reason="idle")
                    runner.kill()
                    await reap([runner.process])


def _tail(log_path: Path) -> str:
    tail = log_tail(log_path)
    return f"; last lines of {log_path}: {tail}" if tail else f" (log: {log_path})"


def kill_all(runners: Sequence[WarmRunner]) -> set[int]:
    """SIGKILL the runners still running a job; the pids it stopped."""
    stopped = {r.pid for r in runners if r.process.returncode is None}
    for runner in runners:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(runner.pid, signal.SIGKILL)
        runner.kill()
    return stopped
