"""A real INC int8 graph against its fp32 original, over the real broker, default settings.

No TF_ENABLE_ONEDNN_OPTS in the worker's environment: the worker decides oneDNN per request
(``auto``), so the int8 graph runs on any x86 CPU, AVX2-only ones included, and both models
run under the same setting.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from contracts import FinishEvent
from tests.integration.bus import EventCollector, publish_request
from tests.integration.test_bench import bench
from tests.plain_tf import plain_accuracy

pytestmark = [pytest.mark.broker, pytest.mark.tensorflow]

SHORT = {"duration_s": 1, "warmup": 5, "min_iterations": 200}
STEPS = [("input_model", "performance"), ("input_model", "accuracy"),
         ("optimized_model", "performance"), ("optimized_model", "accuracy")]  # fmt: skip


def int8_request(sample_dir: Path, **benchmark: Any) -> dict[str, Any]:
    body = json.loads((sample_dir / "request.json").read_text())
    body["id"] = f"int8-{uuid.uuid4().hex[:8]}"
    body["benchmark"] = {**body["benchmark"], **SHORT, **benchmark}
    assert body["optimized_model"]["precision"] == "int8"
    return body


async def test_inc_int8_graph_benchmarks_with_accuracy_equal_to_plain_tensorflow(
    bus, worker, names: dict[str, str], sample_dir: Path
) -> None:
    body = int8_request(sample_dir)
    collector = await EventCollector.bind(bus, names["events_exchange"], body["id"])
    await publish_request(bus, names["requests_queue"], json.dumps(body).encode())

    events = await collector.until_finish()

    finish = events[-1]
    assert isinstance(finish, FinishEvent) and finish.status == "success", finish
    data = finish.data.model_dump()
    details = data["execution_details"]
    settings = {details[f"{role}_benchmark"][mode]["onednn"]["effective"] for role, mode in STEPS}
    read_backs = {
        details[f"{role}_benchmark"][mode]["onednn"]["tensorflow_reports"] for role, mode in STEPS
    }
    assert settings == {"on"} and read_backs == {"on"}  # one setting, confirmed by TensorFlow
    onednn = details["optimized_model_benchmark"]["performance"]["onednn"]
    assert onednn["requested"] == "auto"
    assert "QuantizedConv2DWithBiasAndReluAndRequantize" in onednn["reason"]
    assert data["preflight"]["status"] == "passed"
    assert data["preflight"]["onednn"]["tensorflow_reports"] == "on"
    for role in ("input_model", "optimized_model"):
        expected = plain_accuracy(body[role]["path"], body["benchmark"]["dataset"], onednn=True)
        assert data[f"acc_{role}"] == pytest.approx(round(expected, 4), abs=1e-4), role
    assert data["perf_throughput_optimized_model"] > 0 and data["speedup"] > 0
    assert data["fingerprint"]["runtime"]["onednn_effective"] == "on"


async def test_onednn_off_with_an_int8_graph_fails_at_prepare_before_any_runner(
    bus, worker, names: dict[str, str], sample_dir: Path
) -> None:
    body = int8_request(sample_dir, onednn="off")
    collector = await EventCollector.bind(bus, names["events_exchange"], body["id"])
    await publish_request(bus, names["requests_queue"], json.dumps(body).encode())

    events = await collector.until_finish()

    assert [event.subject for event in events] == ["benchmark_finish"]
    finish = events[0]
    assert finish.status == "error" and finish.data.step == "prepare"
    assert "benchmark.onednn is off" in finish.data.message
    assert "QuantizedConv2DWithBiasAndReluAndRequantize" in finish.data.message
    assert "set benchmark.onednn to on or auto" in finish.data.message
    workloads = Path(body["workspace_path"]) / "workloads"
    timed = [path.name for path in workloads.glob(f"*_{body['id']}/*_benchmark_*.json")]
    assert timed == []


def test_fingerprint_id_differs_between_onednn_on_and_off(sample_dir: Path, tmp_path: Path) -> None:
    body = int8_request(sample_dir, iterations=50)
    body.pop("optimized_model")
    body["input_model"]["mods"] = ["benchmark"]
    finishes = {}
    for setting in ("on", "off"):
        request = {**body, "benchmark": {**body["benchmark"], "onednn": setting}}
        (tmp_path / setting).mkdir()
        code, events = bench(request, sample_dir, tmp_path / setting)
        assert code == 0, events[-1]
        finishes[setting] = events[-1].data.model_dump()

    on, off = finishes["on"], finishes["off"]
    assert on["fingerprint"]["id"] != off["fingerprint"]["id"]
    assert on["fingerprint"]["runtime"]["onednn_enabled"] is True
    assert off["fingerprint"]["runtime"]["onednn_enabled"] is False
    step_off = off["execution_details"]["input_model_benchmark"]["performance"]["onednn"]
    assert step_off["requested"] == "off" and step_off["tensorflow_reports"] == "off"


def test_the_demo_request_as_written_ends_valid_on_a_quiet_machine(
    sample_dir: Path, tmp_path: Path
) -> None:
    """The sample request unchanged (fp32 vs INC int8, batch 32, 3 s windows): verdict valid."""
    request = json.loads((sample_dir / "request.json").read_text())

    code, events = bench(request, sample_dir, tmp_path)

    assert code == 0, events[-1]
    data = events[-1].data.model_dump()
    assert data["verdict"]["status"] == "valid", data["verdict"]["reasons"]
    assert data["speedup"] > 0 and data["acc_optimized_model"] > 0.5
