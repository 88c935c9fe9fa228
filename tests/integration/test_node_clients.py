"""Clients in another language: Node's ajv (JSON Schema 2020-12, strict mode) and
@asyncapi/parser read the contracts, and an amqplib client runs the seed over the broker."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from contracts import BenchmarkRequest
from tests.conftest import REPO
from tests.integration.bus import wait_for_consumer
from tests.integration.reliability import launch_worker

NODE_DIR = REPO / "ops" / "node"


def node(script: str, *args: str, timeout_s: float = 120) -> tuple[int, dict[str, Any], str]:
    """Run one of ops/node's scripts; (exit code, its JSON report line, stderr)."""
    if shutil.which("node") is None or not (NODE_DIR / "node_modules").is_dir():
        pytest.fail("Node checks need node and `bash ops/setup.sh` (npm ci in ops/node)")
    done = subprocess.run(
        ["node", str(NODE_DIR / script), *args],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    return done.returncode, json.loads(lines[-1]) if lines else {}, done.stderr


def test_every_schema_compiles_under_ajv_strict_and_the_asyncapi_document_parses() -> None:
    code, report, stderr = node("check_schemas.js")
    assert code == 0, (report, stderr[-2000:])
    assert report["compile_problems"] == [] and report["asyncapi_errors"] == []
    assert "benchmark_request" in report["compiled"] and "benchmark_finish" in report["compiled"]


def test_ajv_decides_sweep_and_scenario_bodies_as_the_worker_does(tmp_path: Path) -> None:
    """Sweep and scenario requests, valid and not, read by a second validator in another
    language: ajv accepts exactly the bodies the worker's contracts accept."""
    base = {"id": "n-1", "input_model": {"precision": "fp32", "path": "/m.pb"}}
    layouts = [{"instances": 1, "cores_per_instance": 2}, {"instances": 2, "cores_per_instance": 1}]
    bodies = [
        {"sweep": {"batch_sizes": [1, 8], "layouts": layouts}},
        {"sweep": {"layouts": layouts[:1]}},
        {"scenario": {"name": "server", "target_latency_ms": 20, "target_percentile": 99.9}},
        {"scenario": {"name": "single_stream"}, "instances": 1},
        {"sweep": {}},  # no points
        {"sweep": {"batch_sizes": [4, 4]}},  # a point twice
        {"scenario": {"name": "server"}},  # no target
        {"scenario": {"name": "offline", "target_latency_ms": 5}},  # a target without server
        {"scenario": {"name": "server", "target_latency_ms": 5}, "sweep": {"batch_sizes": [2]}},
        {"scenario": {"name": "single_stream"}, "instances": 2},
    ]
    for number, benchmark in enumerate(bodies):
        body = {**base, "benchmark": benchmark}
        try:
            BenchmarkRequest.model_validate(body)
            python_accepts = True
        except ValueError:
            python_accepts = False
        path = tmp_path / f"body{number}.jsonl"
        path.write_text(json.dumps(body) + "\n")
        code, report, stderr = node("check_schemas.js", str(path))
        assert report["events_checked"] == 1, stderr[-2000:]
        assert (code == 0) == python_accepts, (benchmark, report["event_problems"])
        assert python_accepts == (number < 4), benchmark


@pytest.mark.broker
@pytest.mark.tensorflow
async def test_an_amqplib_client_runs_the_seed_and_ajv_accepts_every_event(
    amqp, amqp_url: str, worker_config: Path, names: dict[str, str], sample_dir: Path
) -> None:
    """The seed page's example body (both models, performance), published by Node."""
    body = {
        "id": f"node-{uuid.uuid4().hex[:8]}",
        "workspace_path": str(worker_config.parent / "workspace"),
        "input_model": {"precision": "fp32", "path": str(sample_dir / "fp32.pb")},
        "optimized_model": {"precision": "int8", "path": str(sample_dir / "int8.pb")},
    }
    body_file = worker_config.parent / "seed.json"
    body_file.write_text(json.dumps(body))
    events_file = worker_config.parent / "events.jsonl"
    process = launch_worker(worker_config)
    try:
        await wait_for_consumer(amqp, names["requests_queue"])
        code, report, stderr = node(
            "seed_client.js", amqp_url, names["requests_queue"], names["events_exchange"],
            str(body_file), str(events_file), timeout_s=400,
        )  # fmt: skip
    finally:
        assert process.terminate() == 0, process.stderr_path.read_text()[-2000:]
    assert code == 0, stderr[-2000:]
    assert report["status"] == "success", report
    assert report["events"] == ["benchmark_start", "benchmark_progress", "benchmark_progress",
                                "benchmark_finish"]  # fmt: skip

    code, checked, stderr = node("check_schemas.js", str(events_file))
    assert code == 0, (checked["event_problems"], stderr[-2000:])
    assert checked["events_checked"] == 4
