"""A warm runner: TensorFlow imported once, then any number of steps run in this process.

    python -m service.runner.warm --cpus 0-1 --threads 2 --onednn on|off|default

Started by the worker's pool (:mod:`service.executor.warm_pool`), never by hand. First thing
it confines itself (dies with the worker, takes the rlimits it passed), pins to ``--cpus``,
sets the thread environment and oneDNN: TensorFlow fixes all of them when it initialises,
so a warm runner only ever takes steps with exactly these settings. Then it imports
TensorFlow and says ``{"ready": ...}`` on its stdout.

Each job is one JSON line on stdin: ``{"module": "service.runner", "argv": [...], "log":
PATH}``, the same module and arguments as the step's ``command``, which a fresh process would
run. The job runs that module's ``main(argv)`` in this process with stdout and stderr going
to ``log``; every step builds its own graph and session. The answer is one JSON line:
``{"exit": CODE, "rss_bytes": N}``. While waiting the process is blocked in ``read`` on its
stdin (no polling, no CPU). End of stdin: exit 0.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from service.errors import StepFailed
from service.runner.onednn_check import import_tensorflow, set_onednn
from service.runner.pinning import parse_cpus, pin_process
from service.runner.probes import status_bytes
from service.runner.sandbox import allow_cpu_for_next_step, confine_warm, memory_hint

JOB_MODULES = ("service.runner.__main__", "service.runner.preflight")
EXIT_BAD_JOB = 4


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m service.runner.warm")
    parser.add_argument("--cpus", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--onednn", choices=["on", "off", "default"], required=True)
    parser.add_argument("--steps", type=int, default=1, help="steps its CPU-time limit covers")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    step_cpu_s = confine_warm(args.steps)
    reply = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol; fd 1 goes to job logs
    global _OWN_LOG_FD
    _OWN_LOG_FD = os.dup(2)  # the pool's log of this runner: output outside any job
    _back_to_own_log()
    onednn = {"on": True, "off": False, "default": None}[args.onednn]
    started_s = time.perf_counter()
    try:
        pin_process(parse_cpus(args.cpus), args.threads)
        set_onednn(onednn)
        version, reported = import_tensorflow(onednn)
        for module in JOB_MODULES:
            importlib.import_module(module)
        importlib.import_module("service.runner.loading")
        with contextlib.suppress(ImportError):  # LoadGen, for single_stream and server steps
            importlib.import_module("service.runner.loadgen_run")
    except StepFailed as exc:
        _send(reply, {"ready": False, "error": f"{exc.step}: {exc.message}"})
        return 2
    except Exception as exc:  # TensorFlow could not start (its memory limit, say)
        traceback.print_exc()
        _send(reply, {"ready": False, "error": f"import_tensorflow: {exc!r}{memory_hint(exc)}"})
        return 2
    _send(reply, {"ready": True, "pid": os.getpid(), "tensorflow_version": version,
                  "onednn_enabled": reported,
                  "import_s": round(time.perf_counter() - started_s, 3)})  # fmt: skip
    for line in sys.stdin:  # blocks in read(2) between jobs
        allow_cpu_for_next_step(step_cpu_s)
        _send(reply, {"exit": run_job(line), "rss_bytes": _rss_bytes()})
    return 0


def run_job(line: str) -> int:
    """Run one job line; its exit code (the module's, or EXIT_BAD_JOB)."""
    try:
        job = json.loads(line)
        module = JOB_MODULES[("service.runner", "service.runner.preflight").index(job["module"])]
        argv, log = [str(a) for a in job["argv"]], str(job["log"])
    except (ValueError, KeyError, TypeError):
        return EXIT_BAD_JOB
    _reset_peak_rss()
    _point_output_at(log)
    try:
        code = importlib.import_module(module).main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException:
        traceback.print_exc()
        code = 2
    finally:
        _back_to_own_log()
        gc.collect()  # the step's graph, session and arrays go before the next step
    return int(code or 0)


def _point_output_at(path: str) -> None:
    """fd 1 and 2 (Python's and TensorFlow's C++ logging alike) to ``path``."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


_OWN_LOG_FD = 2


def _back_to_own_log() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os.dup2(_OWN_LOG_FD, 1)
    os.dup2(_OWN_LOG_FD, 2)


def _send(reply: Any, message: dict[str, Any]) -> None:
    reply.write(json.dumps(message) + "\n")
    reply.flush()


def _reset_peak_rss() -> None:
    """Each step reports its own peak (VmHWM), not the process's lifetime peak."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _rss_bytes() -> int:
    return status_bytes("VmRSS") or 0


if __name__ == "__main__":
    sys.exit(main())
