"""One failure, one message: what went wrong first, which instances it hit, where the log is.

When one instance of a step fails, the worker stops the others (it kills the step's process
group). Those are "stopped by the worker", never reported as if the kernel had killed them.
Instances that failed on their own with the same cause are named together, once. A runner
that died without writing its result gets the last lines of its log, without TensorFlow's
start-up chatter, bounded in length.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LOG_TAIL_LINES = 5
_LOG_TAIL_BYTES = 16 * 1024
_LOG_LINE_CHARS = 200
# TensorFlow's start-up lines: absl's I/W prefixes and the banners that follow them.
_NOISE = re.compile(
    r"^([IWE]\d{4} |WARNING: All log messages before absl|To enable the following instructions"
    r"|oneDNN custom operations are on|This TensorFlow binary is optimized"
    r"|.*cpu_feature_guard|.*port\.cc:\d+\])"
)


@dataclass(frozen=True)
class InstanceFailure:
    """One instance that did not deliver: its own cause, or stopped by the worker."""

    index: int
    cause: str
    log_path: Path
    stopped_by_worker: bool = False


def describe_exit(code: int | None) -> str:
    """``exited with status 2`` or ``was killed by signal SIGSEGV``."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"was killed by signal {name}"
    return f"exited with status {code}"


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a runner log worth reading (TensorFlow's start-up noise left out),
    joined by `` | ``; reads at most the last 16 KiB."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - _LOG_TAIL_BYTES))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    kept = [line.strip()[:_LOG_LINE_CHARS] for line in text.splitlines()]
    useful = [line for line in kept if line and not _NOISE.match(line)]
    return " | ".join(useful[-lines:])


def _instances(indexes: Sequence[int]) -> str:
    numbers = ", ".join(str(i) for i in indexes)
    return f"instance {numbers}" if len(indexes) == 1 else f"instances {numbers}"


def summarize(failures: Sequence[InstanceFailure]) -> str:
    """The step's failure in one message: each distinct cause once, with the instances it hit
    and the first one's log; then the instances the worker stopped because of it."""
    own = [f for f in failures if not f.stopped_by_worker]
    stopped = [f.index for f in failures if f.stopped_by_worker]
    by_cause: dict[str, list[InstanceFailure]] = {}
    for failure in own:
        by_cause.setdefault(failure.cause, []).append(failure)
    parts = [
        f"{cause} ({_instances([f.index for f in hit])}; log: {hit[0].log_path})"
        for cause, hit in by_cause.items()
    ]
    if stopped:
        after = f" after {_instances(sorted({f.index for f in own}))} failed" if own else ""
        parts.append(f"{_instances(stopped)} stopped by the worker{after}")
    return "; ".join(parts)
