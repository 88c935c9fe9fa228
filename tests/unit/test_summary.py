"""The demo's side-by-side summary of a finish event."""

from __future__ import annotations

from contracts import FinishEvent, error_finish
from service.tools.summary import summary_table


def finish(**extra: object) -> FinishEvent:
    data = {
        "id": "a", "execution_details": {}, "progress": "2/2", "current_step": 2,
        "number_of_steps": 2, "perf_throughput_input_model": 100.0,
        "perf_throughput_optimized_model": 250.0, **extra,
    }  # fmt: skip
    return FinishEvent.model_validate({"status": "success", "data": data})


def test_summary_shows_both_models_the_interval_and_the_verdict_reasons() -> None:
    """Throughputs side by side, the speedup interval, and why a verdict is invalid."""
    verdict = {"status": "invalid", "reasons": [{"code": "foreign_load", "message": "cpu 1 busy"}]}
    table = summary_table(finish(speedup=2.5, speedup_ci95=[2.4, 2.6], verdict=verdict))
    assert "100.0" in table and "250.0" in table and "×2.50" in table
    assert "speedup 95% interval: 2.400 .. 2.600" in table
    assert "verdict: invalid; cpu 1 busy" in table


def test_summary_of_an_error_names_the_step() -> None:
    """A failed request summarises as the step and the message."""
    table = summary_table(error_finish("a", "model not found: /m.pb", "validate"))
    assert table == "FAILED at validate: model not found: /m.pb"


def test_the_summary_lists_every_sweep_point_and_the_best_ones() -> None:
    """A sweep's rows (a failed point says so) and each model's best point, in plain text."""
    figures = {"throughput_samples_per_s": 100.0, "latency_ms_p99": 2.0,
               "verdict": {"status": "valid"}}  # fmt: skip
    sweep = {
        "points": [
            {"batch_size": 1, "instances": 1, "cores_per_instance": 2, "main": True,
             "models": {"input_model": figures,
                        "optimized_model": {**figures, "throughput_samples_per_s": 250.0}},
             "speedup": 2.5},
            {"batch_size": 8, "instances": 2, "cores_per_instance": 1,
             "models": {"input_model": {"error": "fixed batch dimension of 1"},
                        "optimized_model": figures}},
        ],
        "best": {"optimized_model": {
            "by_throughput": {"batch_size": 1, "instances": 1, "cores_per_instance": 2,
                              "throughput_samples_per_s": 250.0},
            "by_latency": {"batch_size": 8, "instances": 2, "cores_per_instance": 1,
                           "latency_ms_p99": 2.0}}},
    }  # fmt: skip

    text = summary_table(finish(sweep=sweep))

    assert "2.500x" in text and "valid/valid" in text
    assert "failed" in text and "error/valid" in text
    assert "optimized model: best throughput at batch 1, 1×2 (250.0 samples/s)" in text
    assert "best latency at batch 8, 2×1 (p99 2.000 ms)" in text
