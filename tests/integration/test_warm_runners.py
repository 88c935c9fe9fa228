"""Warm runners over the real broker: reused between requests, idle at 0% CPU, replaced after
a crash, a kill or a cancel, and gone with their worker."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from contracts import FinishEvent
from tests.integration.reliability import (
    is_dead,
    kill_quietly,
    launch_worker,
    long_request,
    publish_json,
    running_worker,
    short_request,
    subscribe,
    wait_for_runner,
    wait_until,
)

pytestmark = [pytest.mark.broker, pytest.mark.tensorflow]


def two_steps(sample_dir: Path) -> dict[str, Any]:
    request = short_request(sample_dir, instances=2, cores_per_instance=1)
    request["optimized_model"] = {"precision": "int8", "path": str(sample_dir / "int8.pb")}
    return request


def step_pids(finish: FinishEvent) -> set[int]:
    details = finish.data.model_dump()["execution_details"]
    return {
        instance["pid"]
        for modes in details.values()
        for step in modes.values()
        for instance in step.get("per_instance", [])
    }


def started_runners(worker: Any) -> list[int]:
    return [
        line["pid"] for line in worker.log_lines() if line.get("event") == "warm_runner_started"
    ]


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


async def run(amqp_url: str, names: dict[str, str], request: dict[str, Any]) -> FinishEvent:
    async with subscribe(amqp_url, names["events_exchange"], request["id"]) as events:
        await publish_json(amqp_url, names["requests_queue"], request)
        return await events.until_finish(timeout_s=240)


async def test_a_second_request_reuses_the_runners_and_they_idle_at_zero_cpu(
    amqp_url: str, worker_config: Path, names: dict[str, str], sample_dir: Path
) -> None:
    async with running_worker(worker_config, amqp_url, names["requests_queue"]) as worker:
        first = await run(amqp_url, names, two_steps(sample_dir))
        started_after_first = started_runners(worker)
        second = await run(amqp_url, names, two_steps(sample_dir))
        assert first.ok and second.ok, (first.data, second.data)
        # the second request started no process: no TensorFlow import anywhere
        assert started_runners(worker) == started_after_first
        assert step_pids(second) == step_pids(first) and len(step_pids(first)) == 2
        assert step_pids(first) <= set(started_after_first)
        (heartbeat,) = (worker_config.parent / "workspace" / "health").glob("*.json")
        await wait_until(lambda: json.loads(heartbeat.read_text()).get("warm_runners"), 15,
                         "warm runners in the heartbeat")  # fmt: skip
        status = json.loads(heartbeat.read_text())["warm_runners"]
        assert status["count"] == len(started_after_first) and status["rss_bytes"] > 0
        assert {r["pid"] for r in status["runners"]} == set(started_after_first)
        before = {pid: cpu_ticks(pid) for pid in started_after_first}
        time.sleep(10)
        used = {pid: cpu_ticks(pid) - ticks for pid, ticks in before.items()}
        assert all(ticks <= 1 for ticks in used.values()), used  # blocked on a pipe


async def test_a_runner_killed_idle_or_mid_step_is_replaced_and_nothing_hangs(
    amqp_url: str, worker_config: Path, names: dict[str, str], sample_dir: Path
) -> None:
    workspace = worker_config.parent / "workspace"
    async with running_worker(worker_config, amqp_url, names["requests_queue"]) as worker:
        first = await run(amqp_url, names, two_steps(sample_dir))
        assert first.ok
        idle = min(step_pids(first))
        os.kill(idle, signal.SIGKILL)  # idle: no step fails, the next request gets a fresh one
        await wait_until(lambda: is_dead(psutil.Process(idle)) if psutil.pid_exists(idle)
                         else True, 10, "idle runner gone")  # fmt: skip
        second = await run(amqp_url, names, two_steps(sample_dir))
        assert second.ok, second.data
        assert idle not in step_pids(second)

        request = long_request(sample_dir, duration_s=30, instances=2, cores_per_instance=1)
        async with subscribe(amqp_url, names["events_exchange"], request["id"]) as events:
            await publish_json(amqp_url, names["requests_queue"], request)
            runner = await wait_for_runner(worker, workspace, request)
            time.sleep(2)
            runner.kill()  # mid-step: that step fails, the others are stopped
            crashed = await events.until_finish(timeout_s=120)
        assert crashed.status == "error" and crashed.data.step == "input_model/performance"
        assert "died without a result" in crashed.data.message or "stopped" in crashed.data.message
        third = await run(amqp_url, names, two_steps(sample_dir))
        assert third.ok and runner.pid not in step_pids(third)


async def test_warm_runners_die_with_their_worker(
    amqp_url: str, worker_config: Path, names: dict[str, str], sample_dir: Path
) -> None:
    worker = launch_worker(worker_config)
    try:
        from tests.integration.reliability import await_consumer

        await await_consumer(amqp_url, names["requests_queue"])
        finish = await run(amqp_url, names, two_steps(sample_dir))
        assert finish.ok
        runners = [psutil.Process(pid) for pid in started_runners(worker)]
        assert runners and not any(is_dead(r) for r in runners)
    finally:
        kill_quietly(worker)  # SIGKILL: no cleanup code runs
    await wait_until(lambda: all(is_dead(r) for r in runners), 10, "warm runners gone")


def test_runners_warm_false_brings_back_a_fresh_process_per_step(
    sample_dir: Path, tmp_path: Path
) -> None:
    """bench with runners.warm false: every step has its own pid."""
    import subprocess
    import sys

    import yaml

    config = tmp_path / "worker.yaml"
    config.write_text(yaml.safe_dump({"runners": {"warm": False}}))
    request = {**two_steps(sample_dir), "workspace_path": str(tmp_path)}
    (tmp_path / "r.json").write_text(json.dumps(request))
    done = subprocess.run(
        [sys.executable, "-m", "service", "bench", str(tmp_path / "r.json"), "--config",
         str(config), "--allowed-root", str(sample_dir), "--allowed-root", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    from contracts import parse_event

    finish = parse_event(done.stdout.splitlines()[-1])
    assert isinstance(finish, FinishEvent)
    assert len(step_pids(finish)) == 4  # 2 steps x 2 instances, each a process of its own
    assert "warm_runner_started" not in done.stderr
