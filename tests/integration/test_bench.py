"""``benchmark-worker bench``: the same request without a broker, and every model format."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from contracts import FinishEvent, ProgressEvent, StartEvent, parse_event

pytestmark = pytest.mark.tensorflow

SHORT = {"duration_s": 0.5, "warmup": 2, "warmup_s": 0, "min_iterations": 10, "max_duration_s": 1}


def bench_run(
    request: dict[str, Any], sample_dir: Path, tmp_path: Path
) -> tuple[int, list[Any], str]:
    """Exit code, events and stderr (the worker's log lines) of one ``bench``."""
    path = tmp_path / "request.json"
    path.write_text(json.dumps({**request, "workspace_path": str(tmp_path)}))
    done = subprocess.run(
        [sys.executable, "-m", "service", "bench", str(path),
         "--allowed-root", str(sample_dir), "--allowed-root", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return done.returncode, [parse_event(line) for line in done.stdout.splitlines()], done.stderr


def bench(request: dict[str, Any], sample_dir: Path, tmp_path: Path) -> tuple[int, list[Any]]:
    code, events, _ = bench_run(request, sample_dir, tmp_path)
    return code, events


def test_seed_request_without_a_broker(sample_dir: Path, tmp_path: Path) -> None:
    """bench prints start, every progress and one success finish as JSON lines; exit 0."""
    request = json.loads((sample_dir / "request.json").read_text())
    request["benchmark"] = {**request["benchmark"], **SHORT}
    code, events = bench(request, sample_dir, tmp_path)
    assert code == 0
    assert isinstance(events[0], StartEvent)
    assert [e.data.progress for e in events[1:-1] if isinstance(e, ProgressEvent)] == [
        "1/4", "2/4", "3/4", "4/4",
    ]  # fmt: skip
    finish = events[-1]
    assert isinstance(finish, FinishEvent) and finish.ok
    data = finish.data.model_dump()
    assert data["perf_throughput_input_model"] > 0 and data["perf_throughput_optimized_model"] > 0
    assert 0.5 < data["acc_input_model"] <= 1 and data["acc_optimized_model"] == pytest.approx(
        data["acc_input_model"], abs=0.01
    )
    result = json.loads((Path(data["execution_details"]["input_model_benchmark"]["performance"]
                              ["config_path"]).parent / "result.json").read_text())  # fmt: skip
    assert result["data"]["perf_throughput_input_model"] == data["perf_throughput_input_model"]


@pytest.mark.parametrize(
    ("model", "expected_format"),
    [("saved_model", "saved_model"), ("model.keras", "keras"), ("model.h5", "keras")],
)
def test_each_model_format_benchmarks(
    model: str, expected_format: str, sample_dir: Path, tmp_path: Path
) -> None:
    """A SavedModel directory and Keras .keras/.h5 files run like a frozen graph does."""
    request = {
        "id": f"format-{expected_format}",
        "input_model": {"precision": "fp32", "path": str(sample_dir / model)},
        "benchmark": {**SHORT, "instances": 1, "cores_per_instance": 1},
    }
    code, events = bench(request, sample_dir, tmp_path)
    assert code == 0, events[-1]
    step = events[-1].data.execution_details["input_model_benchmark"]["performance"]
    assert step.model_dump()["model_format"] == expected_format
    assert events[-1].data.perf_throughput_input_model > 0


def test_bench_exits_1_with_an_error_finish_for_a_broken_model(
    sample_dir: Path, tmp_path: Path
) -> None:
    """A file that is not a graph ends in an error finish naming the step; exit code 1."""
    broken = tmp_path / "broken.pb"
    broken.write_bytes(b"\x00 definitely not a GraphDef")
    request = {
        "id": "broken",
        "input_model": {"precision": "fp32", "path": str(broken)},
        "benchmark": {**SHORT, "instances": 1, "cores_per_instance": 1},
    }
    code, events = bench(request, sample_dir, tmp_path)
    assert code == 1
    finish = events[-1]
    assert isinstance(finish, FinishEvent) and finish.status == "error"
    assert finish.data.step == "prepare"  # the pre-flight check loads every model first
    assert "not a valid GraphDef protobuf" in finish.data.message
    assert "broken.pb" in finish.data.message
    assert [event.subject for event in events] == ["benchmark_start", "benchmark_finish"]


def test_bench_on_an_invalid_request_prints_one_error_finish_and_exits_1(
    sample_dir: Path, tmp_path: Path
) -> None:
    """As over the broker: a request the worker rejects is an error finish at validate."""
    request = {"id": "bad-request", "input_model": {"path": "x.pb"}}

    code, events = bench(request, sample_dir, tmp_path)

    assert code == 1
    (finish,) = events
    assert isinstance(finish, FinishEvent) and finish.status == "error"
    assert finish.data.step == "validate" and finish.data.id == "bad-request"
    assert "input_model.precision" in finish.data.message


def test_a_dynamic_shape_model_records_the_shapes_it_was_fed(tmp_path: Path) -> None:
    """One model with inputs [None, None, None, 3], two datasets of different image sizes:
    different shapes on record in the step, and different fingerprint ids."""
    import keras
    import numpy as np

    from service.runner.loading import freeze_keras_model

    inputs = keras.Input((None, None, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(pooled))
    (tmp_path / "dynamic.pb").write_bytes(
        freeze_keras_model(model, "dynamic").graph_def.SerializeToString()
    )
    rng = np.random.default_rng(3)
    finishes = {}
    for size in (16, 24):
        run_dir = tmp_path / f"size{size}"
        run_dir.mkdir()
        x = rng.random((64, size, size, 3), dtype=np.float32)
        np.savez(run_dir / "data.npz", x=x, y=rng.integers(0, 4, 64))
        request = {
            "id": f"dynamic-{size}",
            "input_model": {"precision": "fp32", "path": str(tmp_path / "dynamic.pb"),
                            "mods": ["performance", "accuracy"]},
            "benchmark": {**SHORT, "batch_size": 2, "instances": 1, "cores_per_instance": 1,
                          "dataset": str(run_dir / "data.npz")},
        }  # fmt: skip
        code, events = bench(request, tmp_path, run_dir)
        assert code == 0, events[-1]
        finishes[size] = events[-1].data.model_dump()

    for size, data in finishes.items():
        steps = data["execution_details"]["input_model_benchmark"]
        assert steps["performance"]["inputs"][0]["shape"] == [None, None, None, 3]
        assert steps["performance"]["fed_shapes"] == [[2, size, size, 3]]
        assert steps["accuracy"]["fed_shapes"] == [[2, size, size, 3]]
        assert data["fingerprint"]["workload"]["fed_shapes"] == [[2, size, size, 3]]
    assert finishes[16]["fingerprint"]["id"] != finishes[24]["fingerprint"]["id"]


def _slow_graph(path: Path, matmuls: int = 4) -> None:
    """A frozen graph of ~0.1 s per call on one core: a chain of 1024x1024 matmuls that
    depends on the input (so nothing is constant-folded away)."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 8], name="x")
        a = tf.random.stateless_uniform([1024, 1024], seed=[1, 2]) * tf.reduce_mean(x)
        b = tf.random.stateless_uniform([1024, 1024], seed=[3, 4])
        for _ in range(matmuls):
            a = tf.matmul(a, b) * 1e-3
        tf.identity(x[:, :2] + tf.reduce_sum(a), name="scores")
    path.write_bytes(graph.as_graph_def().SerializeToString())


def test_a_slow_model_is_told_its_window_first_and_a_chosen_short_run_stays_valid(
    tmp_path: Path,
) -> None:
    """1000 calls of a ~0.1 s model exceed any short cap. The plan (from the warmup's call
    time) is logged before timing and kept in the step; a request that set its own cap gets
    p99 marked insufficient, as a warning, not an invalid result."""
    _slow_graph(tmp_path / "slow.pb")
    request = {
        "id": "slow-model",
        "input_model": {"precision": "fp32", "path": str(tmp_path / "slow.pb")},
        "benchmark": {"duration_s": 1, "max_duration_s": 3, "warmup": 3, "warmup_s": 0,
                      "instances": 1, "cores_per_instance": 1},
    }  # fmt: skip

    code, events, stderr = bench_run(request, tmp_path, tmp_path)

    assert code == 0, events[-1]
    data = events[-1].data.model_dump()
    step = data["execution_details"]["input_model_benchmark"]["performance"]
    plan = step["window_plan"]
    assert plan["ends_by"] == "max_duration_s" and plan["window_s"] == 3.0
    assert plan["calls_per_instance"] < 1000 and plan["call_ms"] > 20
    assert "p99" in plan["message"] and "benchmark.max_duration_s to" in plan["message"]
    assert "window_planned" in stderr and "ended by max_duration_s" in stderr
    assert step["window_s"] == pytest.approx(3.0, rel=0.25)
    assert abs(step["per_instance"][0]["iterations"] - plan["calls_per_instance"]) <= max(
        3, plan["calls_per_instance"] // 3
    )  # the warmup's call time predicted the window
    p99 = next(e for e in step["latency_percentiles"] if e["percentile"] == 99.0)
    assert p99["status"] == "insufficient" and step["latency_ms_p99"] is None
    reasons = {r["code"] for r in step["verdict"]["reasons"]}
    assert not reasons & {"insufficient_samples", "min_iterations_not_met"}, reasons
    warned = {w["code"] for w in step["verdict"]["warnings"]}
    assert {"insufficient_samples", "min_iterations_not_met"} <= warned
    assert step["run_length"]["chosen"] == ["max_duration_s"]


def test_a_savedmodel_is_frozen_once_per_content_and_the_next_runs_hit_the_cache(
    sample_dir: Path, tmp_path: Path
) -> None:
    """The pre-flight check freezes the SavedModel and stores it; every runner after it, and
    the next request, read the same graph back. New content (a file added) is a new entry."""
    import shutil

    model = tmp_path / "models" / "saved_model"
    shutil.copytree(sample_dir / "saved_model", model)
    request = {
        "id": "freeze-cache",
        "input_model": {"precision": "fp32", "path": str(model)},
        "benchmark": {**SHORT, "instances": 2, "cores_per_instance": 1},
    }

    def run() -> dict[str, Any]:
        code, events = bench(request, sample_dir, tmp_path)
        assert code == 0, events[-1]
        return events[-1].data.model_dump()

    first, second = run(), run()
    (model / "assets").mkdir(exist_ok=True)
    (model / "assets" / "note.txt").write_text("changed")
    changed = run()

    def outcomes(data: dict[str, Any]) -> tuple[str, list[str]]:
        step = data["execution_details"]["input_model_benchmark"]["performance"]
        preflight = data["preflight"]["models"]["input_model"]["freeze_cache"]
        return preflight, step["freeze_cache"]["per_instance"]

    assert outcomes(first) == ("miss", ["hit", "hit"])
    assert outcomes(second) == ("hit", ["hit", "hit"])
    assert outcomes(changed) == ("miss", ["hit", "hit"])
    entries = sorted((tmp_path / "cache" / "frozen").glob("*.pb"))
    assert len(entries) == 2  # one per content
    step = first["execution_details"]["input_model_benchmark"]["performance"]
    assert [i["freeze_cache"] for i in step["per_instance"]] == ["hit", "hit"]
    assert (
        first["preflight"]["models"]["input_model"]["op_types"]
        == (second["preflight"]["models"]["input_model"]["op_types"])
    )


def test_two_instances_failing_alike_give_one_short_message(tmp_path: Path) -> None:
    """A graph fixed to batch 1 passes the pre-flight call (batch 1) and fails in both
    performance instances at batch 2: one cause, both instances, one log path, no signal."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 8], name="x")
        tf.identity(x * 2.0, name="scores")
    (tmp_path / "batch1.pb").write_bytes(graph.as_graph_def().SerializeToString())
    request = {
        "id": "fixed-batch",
        "input_model": {"precision": "fp32", "path": str(tmp_path / "batch1.pb")},
        "benchmark": {**SHORT, "batch_size": 2, "instances": 2, "cores_per_instance": 1},
    }

    code, events = bench(request, tmp_path, tmp_path)

    assert code == 1
    finish = events[-1]
    assert finish.status == "error" and finish.data.step == "input_model/performance"
    message = finish.data.message
    assert message.count("prepare_inputs failed") == 1, message
    assert "batch" in message and "log: " in message
    assert "instances 0, 1" in message or "stopped by the worker after instance" in message
    assert "SIGKILL" not in message and "I0000" not in message
    assert len(message) < 800, message
