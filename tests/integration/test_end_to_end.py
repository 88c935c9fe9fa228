"""The whole path over the real broker with real TensorFlow runners."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

from contracts import FinishEvent, ProgressEvent, StartEvent
from tests.integration.bus import (
    EventCollector,
    dead_letters,
    publish_request,
)
from tests.plain_tf import plain_accuracy

pytestmark = [pytest.mark.broker, pytest.mark.tensorflow]

SEED_FIELDS = {
    "instances", "cores_per_instance", "model_path", "precision", "mode", "batch_size",
    "framework", "config_path", "benchmark_script", "command",
}  # fmt: skip


def seed_request(sample_dir: Path, **benchmark: Any) -> dict[str, Any]:
    """The sample request.json (seed shape), with a fresh id and a short run."""
    body = json.loads((sample_dir / "request.json").read_text())
    body["id"] = f"e2e-{uuid.uuid4().hex[:8]}"
    body["benchmark"] = {**body.get("benchmark", {}), "duration_s": 1, "warmup": 5, **benchmark}
    return body


async def test_seed_request_yields_start_progress_and_one_success_finish(
    bus, worker, names: dict[str, str], sample_dir: Path
) -> None:
    """The seed's body (mods: benchmark, accuracy) gives start, 1/n..n/n and one finish."""
    body = seed_request(sample_dir)
    body["optimized_model"].pop("mods")  # the seed's optimized model has no modes: performance
    collector = await EventCollector.bind(bus, names["events_exchange"], body["id"])
    await publish_request(bus, names["requests_queue"], json.dumps(body).encode())

    events = await collector.until_finish()

    keys = [m.routing_key for m in collector.messages]
    assert keys == [f"benchmark.{body['id']}.{phase}" for phase in
                    ("start", "progress", "progress", "progress", "finish")]  # fmt: skip
    start, *progress, finish = events
    assert isinstance(start, StartEvent) and start.data.message == "started"
    assert all(isinstance(p, ProgressEvent) for p in progress)
    assert [p.data.progress for p in progress] == ["1/3", "2/3", "3/3"]
    assert isinstance(finish, FinishEvent) and finish.status == "success", finish
    data = finish.data.model_dump()
    assert data["perf_throughput_input_model"] > 0
    assert data["perf_throughput_optimized_model"] > 0
    onednn = data["execution_details"]["input_model_benchmark"]["accuracy"]["onednn"]
    expected = plain_accuracy(
        body["input_model"]["path"],
        body["benchmark"]["dataset"],
        onednn=onednn["effective"] == "on",
    )
    assert data["acc_input_model"] == pytest.approx(round(expected, 4), abs=1e-4)
    details = data["execution_details"]
    for role, mode in [("input_model", "performance"), ("input_model", "accuracy"),
                       ("optimized_model", "performance")]:  # fmt: skip
        step = details[f"{role}_benchmark"][mode]
        assert step.keys() >= SEED_FIELDS
        assert step["model_path"] == body[role]["path"] and step["mode"] == mode
        assert Path(step["config_path"]).is_file()
    message = collector.messages[-1]
    assert message.type == "benchmark_finish" and message.correlation_id == body["id"]
    assert message.content_type == "application/json" and message.message_id


async def test_bad_requests_end_as_the_spec_says_and_the_worker_carries_on(
    bus, worker, names: dict[str, str], sample_dir: Path, tmp_path: Path
) -> None:
    """Missing model and forbidden path → error finish; invalid and malformed → dead letters."""
    missing = seed_request(sample_dir)
    missing["input_model"]["path"] = str(sample_dir / "no-such-model.pb")
    outside = seed_request(sample_dir)
    secret = tmp_path / "elsewhere.pb"
    secret.write_bytes(b"not for the worker")
    outside["input_model"]["path"] = str(sample_dir / ".." / secret.parent.name / secret.name)
    invalid = {"id": f"bad-{uuid.uuid4().hex[:6]}", "input_model": {"path": "x.pb"}}
    good = seed_request(sample_dir)
    good.pop("optimized_model")
    good["input_model"]["mods"] = ["benchmark"]

    collectors = {
        req["id"]: await EventCollector.bind(bus, names["events_exchange"], req["id"])
        for req in (missing, outside, invalid, good)
    }
    for req in (missing, outside, invalid):
        await publish_request(bus, names["requests_queue"], json.dumps(req).encode())
    await publish_request(bus, names["requests_queue"], b'{"id": "broken", ')
    await publish_request(bus, names["requests_queue"], json.dumps(good).encode())

    missing_events = await collectors[missing["id"]].until_finish(extra_wait_s=0)
    assert [e.subject for e in missing_events] == ["benchmark_finish"]
    assert missing_events[0].status == "error"
    assert "not found" in missing_events[0].data.message
    assert "no-such-model.pb" in missing_events[0].data.message

    outside_events = await collectors[outside["id"]].until_finish(extra_wait_s=0)
    assert outside_events[0].status == "error"
    assert "outside the worker's allowed roots" in outside_events[0].data.message

    invalid_events = await collectors[invalid["id"]].until_finish(extra_wait_s=0)
    assert invalid_events[0].status == "error"
    assert "input_model.precision" in invalid_events[0].data.message

    good_events = await collectors[good["id"]].until_finish()
    assert good_events[-1].status == "success"

    bodies = await dead_letters(bus, names["dead_letter_queue"], 2)
    assert json.dumps(invalid).encode() in bodies
    assert b'{"id": "broken", ' in bodies


async def test_worker_process_never_loads_tensorflow_and_stays_small(worker) -> None:
    """The worker's memory maps hold no TensorFlow library; its idle RSS stays small."""
    process = psutil.Process(worker.pid)
    maps = Path(f"/proc/{worker.pid}/maps").read_text()
    assert "tensorflow" not in maps.lower()
    rss_mib = process.memory_info().rss / 2**20
    assert rss_mib < 120, f"idle worker RSS {rss_mib:.0f} MiB"
