"""The heartbeat file and ``benchmark-worker check`` (arq's ``--check`` idiom).

The worker rewrites a small JSON file every ``health.heartbeat_interval_s`` and at once when
its consumer is lost: ``{"timestamp", "state", "pid", "node_id", "busy", "workload_id"}``.
``check`` passes when the file is fresh, its state is ``consuming`` and (on the same host) its
process is alive; a container healthcheck or a systemd timer runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from service.atomic import write_atomic

log = structlog.get_logger()

HeartbeatState = Literal["starting", "consuming", "consumer_lost", "stopping", "stopped"]
ConsumerProbe = Callable[[], bool]  # the consumer watch's last answer


def default_heartbeat_file(workspace: Path, node_id: str) -> Path:
    return workspace / "health" / f"{node_id}.json"


def write_heartbeat(path: Path, state: HeartbeatState, **fields: Any) -> None:
    """Write the heartbeat atomically (temporary file, then rename)."""
    record = {
        "timestamp": time.time(),
        "state": state,
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        **fields,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(record))


@dataclass(frozen=True)
class HealthVerdict:
    healthy: bool
    reason: str


def check_heartbeat(path: Path, stale_after_s: float, now_s: float | None = None) -> HealthVerdict:
    """Is the worker that writes ``path`` alive and consuming?"""
    now_s = time.time() if now_s is None else now_s
    try:
        record = json.loads(path.read_text())
        timestamp, state = float(record["timestamp"]), str(record["state"])
    except FileNotFoundError:
        return HealthVerdict(False, f"no heartbeat file {path}: is the worker running?")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return HealthVerdict(False, f"unreadable heartbeat file {path}: {exc!r}")
    age_s = now_s - timestamp
    if age_s > stale_after_s:
        return HealthVerdict(False, f"heartbeat is {age_s:.0f} s old (limit {stale_after_s:g} s)")
    if state != "consuming":
        return HealthVerdict(False, f"worker state is {state!r}, not 'consuming'")
    pending_s, bound_s = record.get("intake_pending_s"), record.get("intake_bound_s")
    numbers = isinstance(pending_s, int | float) and isinstance(bound_s, int | float)
    if numbers and pending_s > bound_s:
        return HealthVerdict(
            False,
            f"a delivery has waited {pending_s:.0f} s for its intake decision (limit "
            f"{bound_s:g} s): the consumer is stuck",
        )
    pid = record.get("pid")
    same_host = record.get("hostname") == socket.gethostname()
    if same_host and isinstance(pid, int) and not _process_exists(pid):
        return HealthVerdict(False, f"worker process {pid} is gone")
    return HealthVerdict(True, f"consuming (heartbeat {age_s:.1f} s old, pid {pid})")


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Heartbeat:
    """Rewrites the heartbeat file periodically with the consumer watch's answer; state changes
    at once."""

    def __init__(self, path: Path, interval_s: float, fields: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self._interval_s = interval_s
        self._fields = fields
        self._probe: ConsumerProbe | None = None
        self._state: HeartbeatState = "starting"
        self._task: asyncio.Task[None] | None = None

    @property
    def state(self) -> HeartbeatState:
        return self._state

    def write(self, state: HeartbeatState) -> None:
        if state != self._state:
            report = log.warning if state == "consumer_lost" else log.info
            report("heartbeat_state_changed", state=state, previous=self._state)
        self._state = state
        try:
            write_heartbeat(self.path, state, **self._fields())
        except OSError as exc:
            log.warning("heartbeat_not_written", path=str(self.path), error=repr(exc))

    def watch(self, probe: ConsumerProbe) -> None:
        """Start (or keep) writing every interval, with the consumer state from ``probe``."""
        self._probe = probe
        self.write("consuming")
        if self._task is None:
            self._task = asyncio.create_task(self._every_interval())

    def consumer_lost(self) -> None:
        self.write("consumer_lost")

    async def stop(self, state: HeartbeatState = "stopped") -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.write(state)

    async def _every_interval(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            alive = self._probe is not None and self._probe()
            self.write("consuming" if alive else "consumer_lost")


def run_check(path: Path, stale_after_s: float) -> int:
    """``benchmark-worker check``: print the verdict; exit 0 when healthy, 1 otherwise."""
    verdict = check_heartbeat(path, stale_after_s)
    print(f"{'healthy' if verdict.healthy else 'unhealthy'}: {verdict.reason}")
    return 0 if verdict.healthy else 1
