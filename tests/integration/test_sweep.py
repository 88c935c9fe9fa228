"""A sweep over the real broker: 2 batch sizes x 2 layouts, both sample models (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts import FinishEvent, ProgressEvent
from tests.integration.bus import EventCollector, publish_request
from tests.integration.test_bench import bench
from tests.integration.test_end_to_end import seed_request

pytestmark = [pytest.mark.broker, pytest.mark.tensorflow]

LAYOUTS = [{"instances": 1, "cores_per_instance": 2}, {"instances": 2, "cores_per_instance": 1}]


async def test_a_sweep_measures_every_point_for_both_models_and_names_the_best(
    bus, worker, names: dict[str, str], sample_dir: Path
) -> None:
    """Batch 1 and 4 with 1x2 and 2x1: 4 points x 2 models = 8 measurements, each with figures
    and a verdict, a progress event after each, the speedup at each point, and a best point
    per model that is the table's own maximum (throughput) and minimum (latency)."""
    body = seed_request(
        sample_dir,
        batch_size=1,
        instances=1,
        cores_per_instance=2,
        min_iterations=20,
        sweep={"batch_sizes": [1, 4], "layouts": LAYOUTS},
    )
    for role in ("input_model", "optimized_model"):
        body[role]["mods"] = ["benchmark"]
    collector = await EventCollector.bind(bus, names["events_exchange"], body["id"])
    await publish_request(bus, names["requests_queue"], json.dumps(body).encode())

    events = await collector.until_finish(timeout_s=600)

    finish = events[-1]
    assert isinstance(finish, FinishEvent) and finish.status == "success", finish
    data = finish.data.model_dump()
    sweep = data["sweep"]
    points = sweep["points"]
    assert sorted((p["batch_size"], p["instances"], p["cores_per_instance"]) for p in points) == [
        (1, 1, 2), (1, 2, 1), (4, 1, 2), (4, 2, 1),
    ]  # fmt: skip
    assert [p["main"] for p in points].count(True) == 1 and points[0]["main"]
    for point in points:
        for role in ("input_model", "optimized_model"):
            figures = point["models"][role]
            assert figures["throughput_samples_per_s"] > 0, (point, role)
            assert figures["verdict"]["status"] in {"valid", "warning", "invalid"}
        assert point["speedup"] == pytest.approx(
            point["models"]["optimized_model"]["throughput_samples_per_s"]
            / point["models"]["input_model"]["throughput_samples_per_s"],
            rel=1e-3,
        )
    for role in ("input_model", "optimized_model"):
        best = sweep["best"][role]["by_throughput"]
        top = max(points, key=lambda p: p["models"][role]["throughput_samples_per_s"])
        assert (best["batch_size"], best["instances"], best["cores_per_instance"]) == (
            top["batch_size"], top["instances"], top["cores_per_instance"],
        )  # fmt: skip
    # The seed's fields still describe the main point.
    main = points[0]["models"]["input_model"]["throughput_samples_per_s"]
    assert data["perf_throughput_input_model"] == main
    assert data["execution_details"]["input_model_benchmark"]["performance"]["batch_size"] == 1
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    assert [p.data.progress for p in progress] == [f"{n}/8" for n in range(1, 9)]
    assert len(progress[-1].data.model_dump()["sweep"]["points"]) == 4


@pytest.mark.parametrize(
    ("sweep", "rows"),
    [({"batch_sizes": [1]}, 1), ({"layouts": [{"instances": 4, "cores_per_instance": 8}]}, 0)],
)
def test_a_one_point_sweep_is_the_main_row_and_a_layout_too_big_fails_at_plan(
    sample_dir: Path, tmp_path: Path, sweep: dict, rows: int
) -> None:
    """Without a broker (bench): a sweep of the main point alone measures nothing more and
    its table is the main point's row; a layout that does not fit this worker's CPUs fails
    the request before anything runs, naming the layout."""
    body = seed_request(sample_dir, batch_size=1, instances=1, cores_per_instance=1,
                        min_iterations=20, sweep=sweep)  # fmt: skip
    body["input_model"]["mods"] = ["benchmark"]
    body.pop("optimized_model")

    code, events = bench(body, sample_dir, tmp_path)

    finish = events[-1]
    if rows:
        assert code == 0 and finish.status == "success", finish
        (row,) = finish.data.model_dump()["sweep"]["points"]
        assert row["main"] and row["models"]["input_model"]["throughput_samples_per_s"] > 0
        assert [e.data.progress for e in events if isinstance(e, ProgressEvent)] == ["1/1"]
    else:
        assert finish.status == "error" and finish.data.step == "plan"
        assert "sweep layout 4x8" in finish.data.message  # type: ignore[union-attr]
