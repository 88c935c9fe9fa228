"""The runner child process on real models: every format, both modes, sync start, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from service.cpulist import format_cpu_list, parse_cpu_list
from service.runner.protocol import (
    GO_FILE,
    READY_FILE_PREFIX,
    RunnerConfig,
    RunnerModel,
    RunnerResult,
)
from service.tools import samples as samples_module

pytestmark = pytest.mark.tensorflow

REPO = Path(__file__).resolve().parents[2]
RUNNER_TIMEOUT_S = 120.0
FORMATS = [
    ("fp32.pb", "frozen_pb"),
    ("saved_model", "saved_model"),
    ("model.keras", "keras"),
    ("model.h5", "keras"),
]


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    result: RunnerResult


@pytest.fixture(scope="session")
def samples(sample_dir: Path) -> Path:
    """The sample models, made once per session (shared with the broker tests)."""
    return sample_dir


def write_config(
    workload: Path,
    model_path: Path,
    model_format: str,
    *,
    dataset: Path | None = None,
    batch_size: int = 1,
    iterations: int | None = 20,
    duration_s: float = 1.0,
    **run_length: float,
) -> Path:
    workload.mkdir(parents=True, exist_ok=True)
    model = RunnerModel(path=str(model_path), precision="fp32", format=model_format)
    config = RunnerConfig(
        id="test",
        models={"input_model": model},
        batch_size=batch_size,
        iterations=iterations,
        duration_s=duration_s,
        dataset=None if dataset is None else str(dataset),
        barrier_timeout_s=60,
        **{"warmup": 3, **run_length},  # type: ignore[arg-type]
    )
    path = workload / "config.yaml"
    config.write(path)
    return path


def runner_argv(
    config: Path, mode: str, output: Path, *, instance: int = 0, cpus: str = "0"
) -> list[str]:
    return [
        sys.executable, "-m", "service.runner", "--config", str(config),
        "--model", "input_model", "--mode", mode, "--instance", str(instance),
        "--cpus", cpus, "--output", str(output),
    ]  # fmt: skip


def run_runner(config: Path, mode: str, *, cpus: str = "0") -> Run:
    output = config.parent / f"{mode}.json"
    completed = subprocess.run(
        runner_argv(config, mode, output, cpus=cpus),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=RUNNER_TIMEOUT_S,
        check=False,
    )
    assert output.is_file(), f"no result file; stderr: {completed.stderr[-3000:]}"
    return Run(completed.returncode, completed.stdout, completed.stderr, RunnerResult.read(output))


def keras_correct_count(samples: Path) -> int:
    """Top-1 correct predictions of model.keras over eval.npz, with plain Keras."""
    import keras

    model = keras.models.load_model(samples / "model.keras", compile=False)
    data = np.load(samples / "eval.npz")
    predictions = model.predict(data["x"], batch_size=128, verbose=0)
    return int(np.sum(np.argmax(predictions, axis=1) == data["y"]))


def graph_predictions(path: Path, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(path.read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        return session.run("Identity:0", {"image:0": x})


@pytest.mark.parametrize(("text", "cpus"), [("0", [0]), ("0-3,8", [0, 1, 2, 3, 8]),
                                            ("2,0,1", [0, 1, 2]), (" 4-5 ", [4, 5])])  # fmt: skip
def test_cpu_lists_parse_and_format(text: str, cpus: list[int]) -> None:
    assert parse_cpu_list(text) == cpus
    assert parse_cpu_list(format_cpu_list(cpus)) == cpus


@pytest.mark.parametrize("text", ["", "a", "3-1", "1-", "-2"])
def test_bad_cpu_lists_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_cpu_list(text)


@pytest.mark.parametrize(("filename", "model_format"), FORMATS)
def test_performance_for_every_format(
    samples: Path, tmp_path: Path, filename: str, model_format: str
) -> None:
    config = write_config(tmp_path, samples / filename, model_format, batch_size=4)

    run = run_runner(config, "performance")

    assert run.code == 0, run.stderr[-3000:]
    result = run.result
    assert result.error is None
    assert result.batch_size == 4 and "Batch size = 4" in run.stdout
    assert "Latency: " in run.stdout and "Throughput: " in run.stdout
    assert result.cpus_planned == [0] and result.cpus_observed == [0]
    assert result.intra_op_threads == 1 and result.inter_op_threads == 1
    size = samples_module.IMAGE_SIZE
    assert [(i.shape, i.dtype) for i in result.inputs] == [([None, size, size, 3], "float32")]
    assert len(result.outputs) == 1
    assert result.first_inference_s is not None and result.first_inference_s > 0
    assert result.warmup_iterations == 3
    perf = result.performance
    assert perf is not None and perf.stop_reason == "iterations"
    assert len(perf.batch_latencies_ms) == len(perf.batch_end_times_s) == 20
    assert all(latency > 0 for latency in perf.batch_latencies_ms)
    assert perf.batch_end_times_s == sorted(perf.batch_end_times_s)
    assert perf.batch_end_times_s[0] > perf.window_start_s
    assert result.peak_rss_bytes and result.tensorflow_version


def test_duration_mode_stops_after_the_window(samples: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, samples / "fp32.pb", "frozen_pb", iterations=None,
                          duration_s=0.3)  # fmt: skip

    run = run_runner(config, "performance")

    assert run.code == 0, run.stderr[-3000:]
    perf = run.result.performance
    assert perf is not None and perf.stop_reason == "duration_and_min_iterations"
    assert perf.batch_end_times_s[-1] >= perf.window_start_s + 0.3
    assert perf.batch_end_times_s[-2] < perf.window_start_s + 0.3


def test_unreachable_min_iterations_stop_at_the_cap(samples: Path, tmp_path: Path) -> None:
    """min_iterations far out of reach: the window runs to max_duration_s and says so; warmup
    runs for warmup_s even with no warmup count; the CPU window is watched."""
    config = write_config(tmp_path, samples / "fp32.pb", "frozen_pb", iterations=None,
                          duration_s=0.2, min_iterations=10**8, max_duration_s=0.5,
                          warmup=0, warmup_s=0.3)  # fmt: skip

    run = run_runner(config, "performance")

    assert run.code == 0, run.stderr[-3000:]
    result = run.result
    assert result.warmup_s is not None and result.warmup_s >= 0.3
    assert result.warmup_iterations >= 1
    perf = result.performance
    assert perf is not None and perf.stop_reason == "max_duration"
    assert perf.batch_end_times_s[-1] >= perf.window_start_s + 0.5
    assert perf.batch_end_times_s[-2] < perf.window_start_s + 0.5
    window = perf.cpu_window
    assert window is not None and window.cpus == [0] and window.own_cpu_s > 0
    assert window.foreign_busy_fraction is not None
    assert result.onednn_enabled is not None
    assert result.thread_environment["TF_NUM_INTRAOP_THREADS"] == "1"


@pytest.mark.parametrize(("filename", "model_format"), [FORMATS[0], FORMATS[2]])
def test_accuracy_matches_plain_keras(
    samples: Path, tmp_path: Path, filename: str, model_format: str
) -> None:
    config = write_config(
        tmp_path, samples / filename, model_format, dataset=samples / "eval.npz", batch_size=100
    )

    run = run_runner(config, "accuracy", cpus="0-1" if len(os.sched_getaffinity(0)) > 1 else "0")

    assert run.code == 0, run.stderr[-3000:]
    accuracy = run.result.accuracy
    assert accuracy is not None
    assert accuracy.samples == 512  # 5 full batches of 100 and the last one of 12
    assert accuracy.correct == keras_correct_count(samples)
    assert accuracy.accuracy == pytest.approx(accuracy.correct / 512, abs=1e-6)
    assert accuracy.accuracy > 0.8
    assert f"Accuracy is {accuracy.accuracy:.4f}" in run.stdout


def test_optimized_graph_predicts_like_the_frozen_graph(samples: Path) -> None:
    x = np.load(samples / "eval.npz")["x"]

    expected = graph_predictions(samples / "fp32.pb", x)
    optimized = graph_predictions(samples / "optimized_fp32.pb", x)

    np.testing.assert_allclose(optimized, expected, atol=1e-4)
    assert (samples / "optimized_fp32.pb").stat().st_size < (samples / "fp32.pb").stat().st_size
    request = json.loads((samples / "request.json").read_text())
    assert request["optimized_model"]["precision"] == "int8"
    assert request["optimized_model"]["path"] == str(samples / "int8.pb")
    assert Path(request["workspace_path"]).is_dir()


def test_sync_dir_starts_both_instances_together(samples: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, samples / "fp32.pb", "frozen_pb")
    sync_dir = tmp_path / "sync"
    sync_dir.mkdir()
    allowed = sorted(os.sched_getaffinity(0))
    cpus = [str(allowed[0]), str(allowed[-1])]  # two cpus when there are two
    outputs = [tmp_path / f"instance{i}.json" for i in range(2)]
    logs = [tmp_path / f"instance{i}.log" for i in range(2)]
    processes = [start_synced(config, outputs[i], logs[i], i, cpus[i], sync_dir) for i in range(2)]
    try:
        _wait_for(lambda: all((sync_dir / f"{READY_FILE_PREFIX}{i}").exists() for i in range(2)))
        assert not any(output.exists() for output in outputs), "measured before the go"
        start_at_s = time.monotonic() + 0.3
        go = sync_dir / f"{GO_FILE}.tmp"
        go.write_text(json.dumps({"start_at_s": start_at_s}))
        go.replace(sync_dir / GO_FILE)
        codes = [process.wait(timeout=RUNNER_TIMEOUT_S) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert codes == [0, 0], [log.read_text()[-2000:] for log in logs]
    for index, output in enumerate(outputs):
        result = RunnerResult.read(output)
        assert result.instance == index and result.cpus_observed == [int(cpus[index])]
        assert result.performance is not None
        assert result.performance.window_start_s >= start_at_s
        assert len(result.performance.batch_latencies_ms) == 20


def start_synced(
    config: Path, output: Path, log: Path, instance: int, cpus: str, sync_dir: Path
) -> subprocess.Popen[bytes]:
    argv = runner_argv(config, "performance", output, instance=instance, cpus=cpus)
    with log.open("wb") as log_file:
        return subprocess.Popen(
            [*argv, "--sync-dir", str(sync_dir)], cwd=REPO, stdout=log_file, stderr=log_file
        )


def _wait_for(condition: Callable[[], bool], timeout_s: float = RUNNER_TIMEOUT_S) -> None:
    deadline_s = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline_s, "runners never got ready"
        time.sleep(0.05)


def test_missing_model_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.pb"
    config = write_config(tmp_path, missing, "frozen_pb")

    run = run_runner(config, "performance")

    assert run.code == 2
    error = run.result.error
    assert error is not None and error.step == "load_model"
    assert str(missing) in error.message and str(missing) in run.stderr
    assert run.result.cpus_planned == [0] and run.result.performance is None


def test_corrupt_frozen_graph_is_a_clear_error(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.pb"
    corrupt.write_bytes(b"\x0a\xff\xff\xff\xff this is not a GraphDef" * 20)
    config = write_config(tmp_path, corrupt, "frozen_pb")

    run = run_runner(config, "performance")

    assert run.code == 2
    error = run.result.error
    assert error is not None and error.step == "load_model"
    assert f"could not load frozen graph {corrupt}" in error.message


def test_dataset_without_labels_names_y(samples: Path, tmp_path: Path) -> None:
    dataset = tmp_path / "no_labels.npz"
    np.savez(dataset, x=np.zeros((4, 16, 16, 3), dtype=np.float32))
    config = write_config(tmp_path, samples / "fp32.pb", "frozen_pb", dataset=dataset)

    run = run_runner(config, "accuracy")

    assert run.code == 2
    error = run.result.error
    assert error is not None and error.step == "load_dataset"
    assert "'y'" in error.message and str(dataset) in error.message
