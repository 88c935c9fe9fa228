"""The seed's own body, as published: accuracy with no dataset named (INC takes it from the
workload's configuration). The worker finds the data beside the model, or says where it looked."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from contracts import FinishEvent
from tests.integration.bus import wait_for_consumer
from tests.integration.reliability import launch_worker, publish_json, subscribe
from tests.integration.test_bench import bench

pytestmark = [pytest.mark.broker, pytest.mark.tensorflow]


def seed_body(models: Path, workspace: Path) -> dict[str, Any]:
    """The seed's example body, with the page's model definition (mods) on the input model."""
    return {
        "id": f"seed-{uuid.uuid4().hex[:8]}",
        "workspace_path": str(workspace),
        "input_model": {"precision": "fp32", "path": str(models / "fp32.pb"),
                        "mods": ["benchmark", "accuracy"]},
        "optimized_model": {"precision": "int8", "path": str(models / "int8.pb")},
    }  # fmt: skip


async def test_the_seed_body_as_published_finds_eval_npz_beside_the_model(
    amqp, amqp_url: str, worker_config: Path, names: dict[str, str], sample_dir: Path
) -> None:
    body = seed_body(sample_dir, worker_config.parent / "workspace")
    process = launch_worker(worker_config)
    try:
        await wait_for_consumer(amqp, names["requests_queue"])
        async with subscribe(amqp_url, names["events_exchange"], binding="benchmark.#") as events:
            await publish_json(amqp_url, names["requests_queue"], body)
            finish = await events.until(
                lambda e: isinstance(e, FinishEvent) and e.workload_id == body["id"], timeout_s=300
            )
    finally:
        assert process.terminate() == 0, process.stderr_path.read_text()[-2000:]

    assert finish.status == "success", finish.data
    data = finish.data.model_dump()
    assert 0 < data["acc_input_model"] <= 1
    assert data["perf_throughput_input_model"] > 0 and data["perf_throughput_optimized_model"] > 0
    assert data["dataset"] == {"path": str(sample_dir / "eval.npz"), "source": "beside_model"}


def test_without_data_anywhere_the_error_says_where_the_worker_looked(
    sample_dir: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for name in ("fp32.pb", "int8.pb"):
        shutil.copy(sample_dir / name, models / name)

    code, events = bench(seed_body(models, tmp_path), models, tmp_path)

    assert code == 1
    finish = events[-1]
    assert finish.status == "error" and finish.data.step == "prepare"
    message = finish.data.message
    assert str(models / "fp32.eval.npz") in message and str(models / "eval.npz") in message
    assert "worker.dataset" in message and "set benchmark.dataset" in message
