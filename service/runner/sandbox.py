"""What a runner does first, before anything else: die with its worker, take its rlimits.

Runners execute untrusted models (TensorFlow's SECURITY.md: models are programs), so each one

* asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``), then checks that the
  parent is still the worker that started it (it may have died between fork and ``prctl``);
* lowers its resource limits: data segment (RLIMIT_DATA: heap and private mappings, which
  bounds real memory without counting TensorFlow's large PROT_NONE reservations the way
  RLIMIT_AS does), CPU seconds, open files, and no core files.

The worker passes both through the environment (:meth:`RunnerLimits.to_environment`); a runner
started by hand without them runs unconfined. Standard library only: this runs before
TensorFlow is imported.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass

PARENT_PID_ENV = "BENCHMARK_RUNNER_PARENT_PID"
LIMITS_ENV = "BENCHMARK_RUNNER_LIMITS"
CONFINED_ENV = "BENCHMARK_RUNNER_CONFINED"  # set by a warm runner for its own steps
EXIT_ORPHANED = 3
_PR_SET_PDEATHSIG = 1
_CPU_HARD_MARGIN_S = 5


@dataclass(frozen=True)
class RunnerLimits:
    """Per-runner resource limits; ``None`` leaves that limit as inherited."""

    data_bytes: int | None = None
    cpu_time_s: int | None = None
    open_files: int | None = None

    def to_environment(self) -> dict[str, str]:
        fields = {"data": self.data_bytes, "cpu": self.cpu_time_s, "nofile": self.open_files}
        text = ",".join(f"{name}={value}" for name, value in fields.items() if value is not None)
        return {LIMITS_ENV: text}

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> RunnerLimits:
        values: dict[str, int] = {}
        for item in filter(None, environ.get(LIMITS_ENV, "").split(",")):
            name, _, value = item.partition("=")
            values[name.strip()] = int(value)
        return cls(values.get("data"), values.get("cpu"), values.get("nofile"))


def confine(environ: Mapping[str, str] | None = None) -> None:
    """Die with the parent, then apply the limits; exit at once if the parent is gone.

    In a warm runner (which confined itself when it started, see :func:`confine_warm`) a
    step's own call does nothing: the runner keeps its limits across steps.
    """
    environ = os.environ if environ is None else environ
    if environ.get(CONFINED_ENV) == str(os.getpid()):
        return
    parent = environ.get(PARENT_PID_ENV)
    if parent:
        die_with_parent(int(parent))
    apply_limits(RunnerLimits.from_environment(environ))


def confine_warm(steps: int) -> int | None:
    """A warm runner's confinement: as :func:`confine`, but the CPU-time limit is per step.

    RLIMIT_CPU counts the process's whole life, so the hard limit covers ``steps`` steps and
    :func:`allow_cpu_for_next_step` moves the soft limit (SIGXCPU) to the CPU time used so
    far plus one step's allowance before each step. Returns that allowance (None: no limit).
    """
    parent = os.environ.get(PARENT_PID_ENV)
    if parent:
        die_with_parent(int(parent))
    limits = RunnerLimits.from_environment(os.environ)
    apply_limits(RunnerLimits(limits.data_bytes, None, limits.open_files))
    if limits.cpu_time_s is not None:
        total_s = limits.cpu_time_s * steps
        _lower(resource.RLIMIT_CPU, limits.cpu_time_s, total_s + _CPU_HARD_MARGIN_S)
    os.environ[CONFINED_ENV] = str(os.getpid())
    return limits.cpu_time_s


def allow_cpu_for_next_step(step_cpu_s: int | None) -> None:
    """Soft RLIMIT_CPU = CPU seconds used so far + one step's allowance (within the hard)."""
    if step_cpu_s is None:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used_s = int(usage.ru_utime + usage.ru_stime) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = used_s + step_cpu_s
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def memory_hint(exc: BaseException, environ: Mapping[str, str] | None = None) -> str:
    """For an allocation failure under the worker's data limit: the limit and how to raise it.

    Past RLIMIT_DATA, Python raises MemoryError, or SystemError when the failure hits inside
    an import or a C extension; both are reported with the limit that caused them.
    """
    environ = os.environ if environ is None else environ
    limit = RunnerLimits.from_environment(environ).data_bytes
    if limit is None or not isinstance(exc, MemoryError | SystemError):
        return ""
    return (
        f" (out of memory: the worker limits each runner to {limit / 2**20:,.0f} MiB of data; "
        "raise worker.runner_memory_mb)"
    )


def die_with_parent(expected_parent_pid: int) -> None:
    """SIGKILL this process when its parent exits; exit now if the parent already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            print(f"runner: prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}", file=sys.stderr)
    if os.getppid() != expected_parent_pid:
        print(f"runner: the worker (pid {expected_parent_pid}) is gone; exiting", file=sys.stderr)
        os._exit(EXIT_ORPHANED)


def apply_limits(limits: RunnerLimits) -> None:
    """Lower soft and hard limits (never raise them); core files off."""
    _lower(resource.RLIMIT_CORE, 0)
    if limits.data_bytes is not None:
        _lower(resource.RLIMIT_DATA, limits.data_bytes)
    if limits.cpu_time_s is not None:  # SIGXCPU at the soft limit, SIGKILL at the hard one
        _lower(resource.RLIMIT_CPU, limits.cpu_time_s, limits.cpu_time_s + _CPU_HARD_MARGIN_S)
    if limits.open_files is not None:
        _lower(resource.RLIMIT_NOFILE, limits.open_files)


def _lower(kind: int, soft: int, hard: int | None = None) -> None:
    _, current_hard = resource.getrlimit(kind)
    hard = soft if hard is None else hard
    if current_hard != resource.RLIM_INFINITY:
        hard = min(hard, current_hard)
    soft = min(soft, hard)
    resource.setrlimit(kind, (soft, hard))
