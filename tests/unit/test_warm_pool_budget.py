"""Idle warm runners keep at most ``runners.max_idle_mb`` together: past it the least recently
used are stopped. Stand-in runners are real child processes (``sleep``), no TensorFlow."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psutil

from service.config import RunnersSettings
from service.executor.warm_pool import RunnerKey, WarmPool, WarmRunner

MIB = 2**20


async def _runner(cpu: int, rss_mb: int, used_s_ago: float) -> WarmRunner:
    process = await asyncio.create_subprocess_exec("sleep", "60")
    runner = WarmRunner(RunnerKey(cpus=(cpu,), threads=1, onednn=None), process)
    runner.rss_bytes = rss_mb * MIB
    runner.last_used_s = time.monotonic() - used_s_ago
    return runner


async def _released(pool: WarmPool, runners: list[WarmRunner]) -> None:
    for runner in runners:
        pool.release(runner, reusable=True)
    await asyncio.gather(*(r.process.wait() for r in runners if r not in pool.runners()))


async def test_past_the_budget_the_least_recently_used_idle_runners_are_stopped(
    tmp_path: Path,
) -> None:
    pool = WarmPool(RunnersSettings(max_idle_mb=250), {}, tmp_path)
    oldest, older, newest = [
        await _runner(cpu, 100, used_s_ago) for cpu, used_s_ago in [(0, 30), (1, 20), (2, 0)]
    ]
    await _released(pool, [oldest, older, newest])

    assert pool.runners() == [older, newest]  # 200 MiB kept of 300
    assert oldest.process.returncode is not None  # stopped, and reaped
    await pool.close()


async def test_within_the_budget_every_idle_runner_stays_and_the_last_one_always_does(
    tmp_path: Path,
) -> None:
    roomy = WarmPool(RunnersSettings(max_idle_mb=1024), {}, tmp_path)
    runners = [await _runner(cpu, 100, 10 - cpu) for cpu in range(3)]
    await _released(roomy, runners)
    assert roomy.runners() == runners
    await roomy.close()

    tight = WarmPool(RunnersSettings(max_idle_mb=50), {}, tmp_path)
    big = await _runner(0, 100, 0)
    await _released(tight, [big])
    assert tight.runners() == [big]  # the runner just released stays, even alone past it
    await tight.close()


def test_the_default_budget_is_a_quarter_of_the_machines_memory(tmp_path: Path) -> None:
    pool = WarmPool(RunnersSettings(), {}, tmp_path)
    assert pool.idle_budget_bytes == psutil.virtual_memory().total // 4
