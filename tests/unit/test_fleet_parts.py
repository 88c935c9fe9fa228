"""The fleet's small parts without a broker: cancel memory, control messages, heartbeat
verdicts, node identity and the node status body."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from contracts import parse_node_status
from service.config import Settings
from service.consumer.consumer_watch import ConsumerState, ConsumerWatch
from service.fleet.control import CancelledIds, cancel_from_message
from service.fleet.health import Heartbeat, check_heartbeat, write_heartbeat
from service.fleet.member import heartbeat_path
from service.fleet.node import NodeIdentity, cpu_model, default_worker_id
from service.fleet.node_status import NodeActivity


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def test_cancelled_ids_are_forgotten_after_their_ttl() -> None:
    """A cancelled id is remembered for ttl_s, then forgotten."""
    clock = FakeClock()
    cancelled = CancelledIds(ttl_s=60, max_ids=10, clock=clock)
    cancelled.add("job-1", "wrong model")
    clock.now_s = 59
    assert "job-1" in cancelled and cancelled.reason("job-1") == "wrong model"
    clock.now_s = 61
    assert "job-1" not in cancelled and len(cancelled) == 0


def test_cancelled_ids_keep_only_the_newest_when_full() -> None:
    """Past max_ids, the oldest cancels are forgotten first; a repeated cancel is renewed."""
    clock = FakeClock()
    cancelled = CancelledIds(ttl_s=60, max_ids=2, clock=clock)
    cancelled.add("a")
    cancelled.add("b")
    cancelled.add("a")  # renewed: now the newest
    cancelled.add("c")
    assert "b" not in cancelled and "a" in cancelled and "c" in cancelled


@pytest.mark.parametrize(
    ("routing_key", "body", "expected"),
    [
        ("benchmark.job-1.cancel", b'{"id": "job-1", "reason": "r"}', ("job-1", "r")),
        ("benchmark.job-1.cancel", b"not json", ("job-1", None)),
        ("benchmark.job-1.cancel", b"", ("job-1", None)),
        ("benchmark.other.cancel", b'{"id": "job-1"}', ("job-1", None)),
        ("node.x.status", b"{}", None),
    ],
)
def test_a_control_message_names_the_workload_in_its_body_or_routing_key(
    routing_key: str, body: bytes, expected: tuple[str, str | None] | None
) -> None:
    """The body's id wins; an unreadable body still cancels the id in the routing key."""
    cancel = cancel_from_message(routing_key, body)
    assert (None if cancel is None else (cancel.id, cancel.reason)) == expected


def test_heartbeat_verdicts(tmp_path: Path) -> None:
    """check passes only for a fresh 'consuming' heartbeat of a live process."""
    path = tmp_path / "health" / "node.json"
    assert not check_heartbeat(path, 30).healthy  # no file
    write_heartbeat(path, "consuming", node_id="n")
    assert check_heartbeat(path, 30).healthy
    now = json.loads(path.read_text())["timestamp"]
    stale = check_heartbeat(path, 30, now_s=now + 31)
    assert not stale.healthy and "old" in stale.reason
    write_heartbeat(path, "consumer_lost")
    assert "consumer_lost" in check_heartbeat(path, 30).reason
    path.write_text("{")
    assert "unreadable" in check_heartbeat(path, 30).reason


def test_heartbeat_of_a_dead_process_fails(tmp_path: Path) -> None:
    """A heartbeat written by a process that has exited is unhealthy even when fresh."""
    path = tmp_path / "node.json"
    record = {"timestamp": 0, "state": "consuming", "hostname": socket.gethostname()}
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    record["pid"] = int(done.stdout)
    path.write_text(json.dumps(record))
    verdict = check_heartbeat(path, 30, now_s=1)
    assert not verdict.healthy and "gone" in verdict.reason


def test_worker_ids_follow_the_cpus_and_node_ids_are_routable() -> None:
    """Workers on disjoint CPUs of one host get distinct, stable, routable node ids."""
    assert default_worker_id((0, 1, 2, 3)) == "cpu0-3"
    assert default_worker_id((0, 1, 2, 3, 8)) == "cpu0-3_8"
    long_id = default_worker_id(tuple(range(0, 200, 2)))
    assert long_id.startswith("cpu") and len(long_id) <= 32
    first = NodeIdentity.of_this_process((0, 1), None)
    second = NodeIdentity.of_this_process((2, 3), None)
    assert first.node_id != second.node_id
    assert "." not in first.node_id and first.to_dict()["cpus"] == "0-1"


def test_cpu_model_is_read_from_cpuinfo(tmp_path: Path) -> None:
    """x86's 'model name' and ARM's 'Model' lines both give the CPU model."""
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6338\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 108.00\n\nModel\t: Raspberry Pi 4 Model B\n")
    assert cpu_model(x86) == "Intel(R) Xeon(R) Gold 6338"
    assert cpu_model(arm) == "Raspberry Pi 4 Model B"
    assert cpu_model(tmp_path / "missing")


def test_check_finds_the_heartbeat_file_run_writes(tmp_path: Path) -> None:
    """`check` with the same config and --cpus/--worker-id looks where `run` writes."""
    settings = Settings.model_validate({"worker": {"workspace": str(tmp_path)}})
    path = heartbeat_path(settings, (0, 1))
    assert path.parent == tmp_path / "health" and path.name.endswith("-cpu0-1.json")
    named = settings.with_overrides(node={"worker_id": "w7"})
    assert heartbeat_path(named, (0, 1)).name.endswith("-w7.json")
    fixed = settings.with_overrides(health={"heartbeat_file": str(tmp_path / "hb.json")})
    assert heartbeat_path(fixed, (0, 1)) == tmp_path / "hb.json"


def test_node_status_body_follows_the_contract() -> None:
    """A snapshot serialises to a body that contracts.parse_node_status accepts."""
    activity = NodeActivity(
        NodeIdentity.of_this_process(tuple(sorted(os.sched_getaffinity(0))), "w1")
    )
    activity.state, activity.workload_id = "busy", "job-1"
    activity.counts["success"] += 2
    status = parse_node_status(activity.snapshot().to_body())
    assert status.routing_key == f"node.{activity.identity.node_id}.status"
    assert status.data.state == "busy" and status.data.workload_id == "job-1"
    assert status.data.counts.success == 2 and status.data.node.cpu_model


def test_consumer_watch_is_what_heartbeat_and_watchdog_read(tmp_path: Path) -> None:
    """One watcher: a consumer missing once is not lost (the watchdog waits out two checks and
    the grace), but the heartbeat stops saying consuming at the first miss, and a restored
    consumer clears both."""
    lost: list[bool] = []
    watch = ConsumerWatch(None, "tag", 5.0, 20.0, lambda: lost.append(True))  # type: ignore[arg-type]
    path = tmp_path / "hb.json"

    async def scenario() -> list[str]:
        heartbeat = Heartbeat(path, 0.01, dict)
        heartbeat.watch(lambda: watch.consuming)
        states = []
        for state, at_s in [
            (ConsumerState.MISSING, 0.0),
            (ConsumerState.ALIVE, 5.0),
            (ConsumerState.MISSING, 10.0),
            (ConsumerState.MISSING, 15.0),  # two misses, but only 5 s of the 20 s grace
            (ConsumerState.RECONNECTING, 20.0),  # not a miss, but not consuming either
            (ConsumerState.MISSING, 25.0),
            (ConsumerState.MISSING, 50.0),  # two in a row again, past the grace: lost
        ]:
            watch.state = state
            if watch.observe(state, at_s):
                lost.append(True)
            await asyncio.sleep(0.05)
            states.append(json.loads(path.read_text())["state"])
        await heartbeat.stop()
        return states

    states = asyncio.run(scenario())
    assert states == ["consumer_lost", "consuming", *["consumer_lost"] * 5]
    assert lost == [True]
    assert check_heartbeat(path, 30).reason == "worker state is 'stopped', not 'consuming'"


def test_a_consumer_check_that_fails_is_not_consuming() -> None:
    """The check itself raising (an unexpected channel error) must not leave the heartbeat
    saying 'consuming' from an earlier answer, and is not a miss that stops the worker."""

    class Broken:
        async def get_underlay_channel(self) -> None:
            raise ValueError("channel in a state nobody expected")

    lost: list[bool] = []
    watch = ConsumerWatch(Broken(), "tag", 0.01, 0.0, lambda: lost.append(True))  # type: ignore[arg-type]

    async def two_checks() -> None:
        task = asyncio.create_task(watch.run())
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(two_checks())

    assert not watch.consuming and watch.state is ConsumerState.RECONNECTING
    assert lost == []
