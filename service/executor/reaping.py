"""Waiting for killed runners, within a bound.

SIGKILL ends a process only when it next runs: one in uninterruptible sleep (a hung NFS or FUSE
read, a device driver) stays until that call returns, and ``asyncio``'s ``Process.wait`` also
waits for the process's pipes to close, which a grandchild in a session of its own may hold
open. The worker must still go on (and a shutdown must still end), so a kill is waited for at
most :data:`REAP_TIMEOUT_S`; what is left is logged by pid, and the kernel or init reaps it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

log = structlog.get_logger()

REAP_TIMEOUT_S = 10.0


async def reap(
    processes: Sequence[asyncio.subprocess.Process], timeout_s: float = REAP_TIMEOUT_S
) -> list[int]:
    """Wait for ``processes`` to end, at most ``timeout_s``; the pids still not reaped."""
    waits = {asyncio.ensure_future(p.wait()): p for p in processes}
    if not waits:
        return []
    try:
        _, pending = await asyncio.wait(waits, timeout=timeout_s)
    finally:
        for task in waits:
            if not task.done():
                task.cancel()
    stuck = [waits[task].pid for task in pending]
    if stuck:
        log.error(
            "runner_not_reaped",
            pids=stuck,
            waited_s=timeout_s,
            hint="killed but not ended: uninterruptible sleep, or its pipes held by another "
            "process; see ps -o pid,stat,wchan",
        )
    return stuck
