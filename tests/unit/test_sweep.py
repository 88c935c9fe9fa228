"""Sweeps without a broker: the points, their order, the table and its best points; the CDF
and timeline figures the report draws."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from contracts import BenchmarkRequest
from service.engine.sweep import SweepPoint, SweepTable, best_points, run_order, sweep_points
from service.figures.aggregate import latency_quantiles, throughput_timeline
from service.runner.protocol import PerformanceResult


def _request(**benchmark: object) -> BenchmarkRequest:
    return BenchmarkRequest.model_validate(
        {
            "id": "w1",
            "input_model": {"path": "/m/fp32.pb", "precision": "fp32"},
            "optimized_model": {"path": "/m/int8.pb", "precision": "int8"},
            "benchmark": benchmark,
        }
    )


def test_points_are_every_batch_size_with_every_layout_main_first() -> None:
    request = _request(
        batch_size=1,
        sweep={
            "batch_sizes": [1, 8],
            "layouts": [
                {"instances": 1, "cores_per_instance": 2},
                {"instances": 2, "cores_per_instance": 1},
            ],
        },
    )

    points = sweep_points(request, (1, 1, 2))

    assert [p.key() for p in points] == [(1, 1, 2), (1, 2, 1), (8, 1, 2), (8, 2, 1)]
    assert [p.main for p in points] == [True, False, False, False]
    assert sweep_points(_request(), (1, 1, 2)) == []


def test_a_main_point_outside_the_grid_is_still_a_row() -> None:
    request = _request(batch_size=4, sweep={"batch_sizes": [1, 2]})

    points = sweep_points(request, (4, 2, 1))

    assert [p.key() for p in points] == [(4, 2, 1), (1, 2, 1), (2, 2, 1)]


def test_models_alternate_which_goes_first() -> None:
    points = [SweepPoint(1, 1, 2, main=True), SweepPoint(8, 1, 2), SweepPoint(1, 2, 1)]

    order = run_order(points, ["input_model", "optimized_model"])

    assert [(p.batch_size, role[0]) for p, role in order] == [
        (8, "i"), (8, "o"), (1, "o"), (1, "i"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("sweep", "problem"),
    [
        ({"batch_sizes": [1, 1]}, "repeat"),
        ({"batch_sizes": [0]}, "batch_sizes.0\n  Input should be greater than or equal to 1"),
        ({}, "needs batch_sizes, layouts or both"),
        ({"layouts": [{"instances": 1}]}, "cores_per_instance"),
    ],
)
def test_a_bad_sweep_is_rejected_with_its_problem(sweep: dict, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        _request(sweep=sweep)


def test_scenarios_other_than_offline_refuse_sweeps_and_several_instances() -> None:
    server = {"name": "server", "target_latency_ms": 10}
    with pytest.raises(ValidationError, match="offline scenario only"):
        _request(scenario=server, sweep={"batch_sizes": [1, 2]})
    with pytest.raises(ValidationError, match="one instance"):
        _request(scenario=server, instances=2)
    with pytest.raises(ValidationError, match="needs target_latency_ms"):
        _request(scenario={"name": "server"})


def test_a_server_percentile_loadgen_could_never_back_is_refused_at_intake() -> None:
    """p99.999 would need 460,000 queries a run (early stopping): refused with the bound."""
    _request(scenario={"name": "server", "target_latency_ms": 10, "target_percentile": 99.99})
    with pytest.raises(ValidationError, match=r"target_percentile\n  Input should be less "
                       r"than or equal to 99\.99"):  # fmt: skip
        _request(scenario={"name": "server", "target_latency_ms": 10, "target_percentile": 99.999})


def test_the_best_points_agree_with_the_table() -> None:
    table = SweepTable(
        [SweepPoint(1, 1, 2, main=True), SweepPoint(8, 1, 2), SweepPoint(8, 2, 1)],
        ["input_model"],
    )
    for point, tp, p99 in [
        (table.points[0], 500.0, 2.0),
        (table.points[1], 1600.0, 9.0),
        (table.points[2], 1900.0, 12.0),
    ]:
        table.add(point, "input_model", {"throughput_samples_per_s": tp, "latency_ms_p99": p99})
    table.failed(SweepPoint(16, 1, 2), "input_model", "fixed batch dimension")

    sweep = table.to_dict()
    best = sweep["best"]["input_model"]

    assert len(sweep["points"]) == 3  # the failed point is not in the grid given
    assert best["by_throughput"]["throughput_samples_per_s"] == max(
        row["models"]["input_model"]["throughput_samples_per_s"] for row in sweep["points"]
    )
    assert (best["by_throughput"]["batch_size"], best["by_throughput"]["instances"]) == (8, 2)
    assert best["by_latency"]["latency_ms_p99"] == 2.0 and best["by_latency"]["batch_size"] == 1
    assert best_points([{"models": {"input_model": {"error": "x"}}}], "input_model") == {}


def test_latency_quantiles_are_a_cdf() -> None:
    quantiles = latency_quantiles([float(v) for v in range(1, 101)])

    assert len(quantiles) == 51 and quantiles[0] == 1.0 and quantiles[-1] == 100.0
    assert quantiles == sorted(quantiles) and quantiles[25] == pytest.approx(50.5)


def test_the_timeline_counts_every_instance_in_its_bucket() -> None:
    """Two instances, 10 s window: one calls every 0.1 s, the other every 0.2 s but stalls in
    the second half; batch 2."""
    fast = [0.1 * k for k in range(1, 101)]
    slow = [0.2 * k for k in range(1, 26)]
    perfs = [
        PerformanceResult(window_start_s=0.0, batch_end_times_s=ends,
                          batch_latencies_ms=[1.0] * len(ends), stop_reason="duration")
        for ends in (fast, slow)
    ]  # fmt: skip

    timeline = throughput_timeline(perfs, 0.0, 10.0, batch_size=2)

    assert timeline["bucket_s"] == 0.5 and len(timeline["samples_per_s"]) == 20
    assert timeline["samples_per_s"][0] == pytest.approx((5 + 2) * 2 / 0.5, abs=4)
    assert timeline["samples_per_s"][-1] == pytest.approx(5 * 2 / 0.5, abs=4)
    assert sum(timeline["samples_per_s"]) * 0.5 == pytest.approx((100 + 25) * 2, abs=4)  # edges


def test_a_dumped_sweep_request_is_one_the_worker_accepts() -> None:
    """A client that builds the request with the contracts and sends its body: a list it left
    out is not sent as an empty one (the worker refuses an empty list)."""
    request = _request(sweep={"batch_sizes": [1, 2]})

    again = BenchmarkRequest.model_validate_json(request.to_body())

    assert "layouts" not in request.model_dump()["benchmark"]["sweep"]
    assert again == request
