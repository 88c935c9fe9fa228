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
