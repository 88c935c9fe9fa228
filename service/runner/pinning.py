"""Pin the runner to its cpus before TensorFlow is imported, and read back what it got.

No TensorFlow import here: this runs first, so TensorFlow's thread pools start on the pinned
cpus and size themselves from the environment set below.
"""

from __future__ import annotations

import os
from pathlib import Path

from service.cpulist import format_cpu_list, parse_cpu_list
from service.errors import StepFailed

PROC_DIR = Path("/proc")


def thread_environment(cpu_count: int) -> dict[str, str]:
    """The threading variables for ``cpu_count`` cpus: intra-op = cpus, inter-op = 1."""
    threads = str(cpu_count)
    return {
        "OMP_NUM_THREADS": threads,
        "TF_NUM_INTRAOP_THREADS": threads,
        "TF_NUM_INTEROP_THREADS": "1",
        "KMP_BLOCKTIME": "1",
        "KMP_AFFINITY": "granularity=fine,compact,1,0",
    }


def parse_cpus(cpu_text: str) -> list[int]:
    """The ``--cpus`` list, e.g. ``"0-1"`` -> ``[0, 1]``."""
    try:
        return parse_cpu_list(cpu_text)
    except ValueError as exc:
        raise StepFailed("pin_cpus", f"--cpus {cpu_text!r}: {exc}") from None


def pin_process(cpus: list[int], threads: int | None = None) -> None:
    """Pin this process to ``cpus`` and set the threading environment for ``threads`` threads.

    ``threads`` defaults to one per cpu. Must run before TensorFlow is imported. Variables the
    user already set are kept.
    """
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as exc:
        allowed = format_cpu_list(os.sched_getaffinity(0))
        raise StepFailed(
            "pin_cpus",
            f"could not pin to cpus {format_cpu_list(cpus)}: {exc.strerror}; "
            f"this process may use cpus {allowed}",
        ) from None
    for name, value in thread_environment(threads or len(cpus)).items():
        os.environ.setdefault(name, value)


# TensorFlow's own TF_* variables only: TF_CLI_*, TF_VAR_*, ... belong to Terraform.
THREAD_VARIABLE_PREFIXES = (
    "OMP_", "KMP_", "DNNL_", "ONEDNN_", "MKL_", "OPENBLAS_",
    "TF_ENABLE_", "TF_ONEDNN_", "TF_NUM_", "TF_CPP_", "TF_XLA_", "TF_USE_", "TF_DISABLE_",
    "TF_DETERMINISTIC_", "TF_INTRA_", "TF_INTER_", "TF_FORCE_", "TF_GPU_",
)  # fmt: skip


def runner_thread_environment() -> dict[str, str]:
    """The variables that steer threads and oneDNN, as this process has them (for the record)."""
    return {
        name: value
        for name, value in sorted(os.environ.items())
        if name.startswith(THREAD_VARIABLE_PREFIXES)
    }


def observed_cpus(pid: int) -> list[int]:
    """Sorted union of ``Cpus_allowed_list`` over every thread of ``pid``.

    Threads that exit while being read are skipped. Empty if the process is gone.
    """
    cpus: set[int] = set()
    for status in (PROC_DIR / str(pid) / "task").glob("*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        cpus.update(_cpus_allowed(text))
    return sorted(cpus)


def _cpus_allowed(status_text: str) -> list[int]:
    for line in status_text.splitlines():
        key, _, value = line.partition(":")
        if key == "Cpus_allowed_list":
            return parse_cpu_list(value)
    return []
