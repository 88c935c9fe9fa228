"""The pieces behind the second round of faults (issue 13), without a broker: run directories,
the result store's key, the bounded reaping of killed runners and the memory of consumer
timeouts (the retry policy is a row of tests/unit/test_outcomes.py)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import aiormq
import psutil
import pytest

from contracts import FinishEvent, ResultData, error_finish
from service.consumer.consumer_timeout import TimedOutDeliveries, broker_reason, is_consumer_timeout
from service.engine import results, run_dirs
from service.executor.reaping import reap

# -- run directories ---------------------------------------------------------------------------


def _finish(run_id: str, **data: Any) -> FinishEvent:
    fields = {"execution_details": {}, "progress": "1/1", "current_step": 1, "number_of_steps": 1}
    return FinishEvent(status="success", data=ResultData(id="w", run_id=run_id, **fields, **data))


def _finish_run(stable: Path, run_id: str, keep: int = 5, **data: Any) -> Path:
    directory = run_dirs.create_run_directory(stable, run_id, keep)
    results.write_result(directory, _finish(run_id, **data))
    return directory


def test_each_run_gets_its_own_directory_and_the_stable_path_follows_the_latest(
    tmp_path: Path,
) -> None:
    stable = tmp_path / "workloads" / "fp32_w"
    first = run_dirs.create_run_directory(stable, "run1", keep=5)
    (first / "step.txt").write_text("first")
    second = run_dirs.create_run_directory(stable, "run2", keep=5)
    assert (first / "step.txt").read_text() == "first"  # the second run deleted nothing
    assert stable.is_symlink() and stable.resolve() == second.resolve()
    assert [p.name for p in run_dirs.run_directories(stable)] == ["run1", "run2"]
    with pytest.raises(FileExistsError):
        run_dirs.create_run_directory(stable, "run2", keep=5)


def test_pruning_keeps_the_newest_finished_runs_and_never_touches_a_live_one(
    tmp_path: Path,
) -> None:
    stable = tmp_path / "workloads" / "fp32_w"
    live = run_dirs.create_run_directory(stable, "live", keep=2)  # no result.json: still going
    old = live.stat().st_mtime
    os.utime(live, (old - 100, old - 100))
    for number in range(4):
        directory = _finish_run(stable, f"done{number}", keep=2)
        stamp = time.time() - 50 + number
        os.utime(directory, (stamp, stamp))
    names = sorted(p.name for p in run_dirs.run_directories(stable))
    # pruned when a run starts: the newest 2 finished before it, and itself
    assert names == ["done1", "done2", "done3", "live"]
    assert stable.resolve().name == "done3"


def test_a_directory_left_by_an_older_worker_becomes_a_run(tmp_path: Path) -> None:
    stable = tmp_path / "workloads" / "fp32_w"
    stable.mkdir(parents=True)
    (stable / "result.json").write_text("{}")
    run_dirs.create_run_directory(stable, "new", keep=5)
    legacy = [p for p in run_dirs.run_directories(stable) if p.name.startswith("legacy-")]
    assert len(legacy) == 1 and (legacy[0] / "result.json").read_text() == "{}"
    assert stable.is_symlink()


# -- the store's key ---------------------------------------------------------------------------


def _key(message_id: str | None = "m-1", sha: str = "r", models: str = "a") -> results.ResultKey:
    return results.ResultKey(message_id, sha, {"input_model": models})


def test_the_store_answers_only_the_same_message_request_and_models(tmp_path: Path) -> None:
    stable = tmp_path / "workloads" / "fp32_w"
    _finish_run(stable, "run1", **_key().labels())
    assert results.stored_finish(stable, _key()).data.run_id == "run1"
    assert results.stored_finish(stable, _key(message_id="m-2")) is None  # a new message
    assert results.stored_finish(stable, _key(sha="changed")) is None  # another body
    assert results.stored_finish(stable, _key(models="replaced")) is None  # model replaced
    assert results.stored_finish(stable, _key(message_id=None)) is None  # no id: never


def test_an_error_finish_is_never_replayed(tmp_path: Path) -> None:
    stable = tmp_path / "workloads" / "fp32_w"
    directory = run_dirs.create_run_directory(stable, "run1", keep=5)
    results.write_result(directory, error_finish("w", "boom", "prepare", **_key().labels()))
    assert results.stored_finish(stable, _key()) is None


# -- reaping ----------------------------------------------------------------------------------


async def test_a_killed_runner_whose_pipes_stay_open_does_not_block_for_ever() -> None:
    """A grandchild in a session of its own holds the runner's stdout: the killed runner is
    never reaped by asyncio (it waits for the pipe too); reap gives up after its bound."""
    process = await asyncio.create_subprocess_exec(
        "sh", "-c", "setsid sleep 60 & exec sleep 60",
        stdout=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    await asyncio.sleep(0.3)
    holders = psutil.Process(process.pid).children(recursive=True)  # the grandchild's sleep
    assert holders, "the grandchild that holds the pipe did not start"
    process.kill()
    started = time.monotonic()
    stuck = await reap([process], timeout_s=1.0)
    assert stuck == [process.pid]
    assert time.monotonic() - started < 5
    for holder in holders:  # found before the kill: an orphan's new parent may be anybody
        holder.kill()
    assert process.stdout is not None
    await asyncio.wait_for(process.stdout.read(), 10)  # the pipe closed...
    await asyncio.wait_for(process.wait(), 10)  # ...and the transport with it: nothing leaks


async def test_runners_that_end_are_reaped_at_once() -> None:
    process = await asyncio.create_subprocess_exec("sleep", "30")
    process.kill()
    assert await reap([process], timeout_s=5) == []
    assert process.returncode is not None


# -- consumer timeouts --------------------------------------------------------------------------


def _precondition_failed(text: str) -> aiormq.exceptions.ChannelPreconditionFailed:
    return aiormq.exceptions.ChannelPreconditionFailed(text)


def test_a_consumer_timeout_is_told_from_other_channel_errors() -> None:
    fired = _precondition_failed(
        "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value "
        "used: 3000 ms. This timeout value can be configured, see consumers doc guide"
    )
    assert is_consumer_timeout(fired)
    assert broker_reason(fired) == (
        "delivery acknowledgement on channel 1 timed out. Timeout value used: 3000 ms."
    )
    assert not is_consumer_timeout(_precondition_failed("PRECONDITION_FAILED - unknown tag"))
    assert not is_consumer_timeout(None)


def test_timed_out_deliveries_are_remembered_by_message_id_and_bounded() -> None:
    memory = TimedOutDeliveries(limit=2)
    memory.add(None, "ignored")
    for message_id in ("a", "b", "c"):
        memory.add(message_id, f"reason {message_id}")
    assert memory.reason("a") is None and memory.reason("c") == "reason c"
    assert memory.reason(None) is None
