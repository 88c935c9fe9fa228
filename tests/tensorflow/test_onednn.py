"""oneDNN in the child processes, on a real INC int8 graph: the pre-flight check and the runner.

The worker's static check refuses ``onednn: off`` for an int8 graph before any child starts;
these tests go around it to show what the children themselves see and say.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.engine import graph_ops
from service.runner.protocol import PreflightResult, RunnerConfig, RunnerModel, RunnerResult
from tests.tensorflow.test_runner import REPO, RUNNER_TIMEOUT_S, runner_argv

pytestmark = pytest.mark.tensorflow

INT8_CONV = "QuantizedConv2DWithBiasAndReluAndRequantize"


def write_config(workload: Path, samples: Path, onednn: bool | None) -> Path:
    workload.mkdir(parents=True, exist_ok=True)
    models = {
        "input_model": RunnerModel(path=str(samples / "fp32.pb"), precision="fp32",
                                   format="frozen_pb"),
        "optimized_model": RunnerModel(path=str(samples / "int8.pb"), precision="int8",
                                       format="frozen_pb"),
    }  # fmt: skip
    config = RunnerConfig(
        id="test", models=models, batch_size=4, warmup=2, iterations=10, duration_s=1.0,
        onednn=onednn,
    )  # fmt: skip
    path = workload / "config.yaml"
    config.write(path)
    return path


def run_preflight(config: Path) -> tuple[int, PreflightResult]:
    output = config.parent / "preflight.json"
    done = subprocess.run(
        [sys.executable, "-m", "service.runner.preflight", "--config", str(config),
         "--cpus", "0", "--output", str(output)],
        cwd=REPO, capture_output=True, text=True, timeout=RUNNER_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert output.is_file(), done.stderr[-3000:]
    return done.returncode, PreflightResult.read(output)


def test_op_types_read_without_tensorflow_equal_tensorflows_own(sample_dir: Path) -> None:
    import tensorflow as tf

    for name in ("fp32.pb", "int8.pb", "optimized_fp32.pb"):
        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString((sample_dir / name).read_bytes())
        expected = {n.op for n in graph_def.node} | {
            n.op for f in graph_def.library.function for n in f.node_def
        }
        assert graph_ops.model_op_types(sample_dir / name, "frozen_pb") == expected, name
    saved = graph_ops.model_op_types(sample_dir / "saved_model", "saved_model")
    assert saved is not None and {"Conv2D", "Placeholder"} <= saved
    assert INT8_CONV in graph_ops.model_op_types(sample_dir / "int8.pb", "frozen_pb")


def test_preflight_with_onednn_off_names_the_int8_op_and_the_fix(
    sample_dir: Path, tmp_path: Path
) -> None:
    code, result = run_preflight(write_config(tmp_path, sample_dir, onednn=False))

    assert code == 2
    assert result.onednn_enabled is False
    assert result.models["input_model"].error is None  # fp32 runs either way
    error = result.models["optimized_model"].error
    assert error is not None and error.step == "prepare"
    assert INT8_CONV in error.message and "with oneDNN off" in error.message
    assert "set benchmark.onednn to on" in error.message


def test_preflight_with_onednn_on_runs_both_models(sample_dir: Path, tmp_path: Path) -> None:
    code, result = run_preflight(write_config(tmp_path, sample_dir, onednn=True))

    assert code == 0, result
    assert result.onednn_enabled is True and result.tensorflow_version
    for model in result.models.values():
        assert model.error is None and model.call_s is not None and model.call_s > 0
    assert INT8_CONV in result.models["optimized_model"].op_types


@pytest.mark.parametrize("onednn", [True, False])
def test_the_runner_sets_onednn_from_its_config_and_reports_tensorflows_read_back(
    sample_dir: Path, tmp_path: Path, onednn: bool
) -> None:
    config = write_config(tmp_path, sample_dir, onednn=onednn)
    output = tmp_path / "result.json"

    done = subprocess.run(
        runner_argv(config, "performance", output), cwd=REPO, capture_output=True, text=True,
        timeout=RUNNER_TIMEOUT_S, check=False,
        env={k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"},
    )  # fmt: skip

    assert done.returncode == 0, done.stderr[-3000:]
    result = RunnerResult.read(output)
    assert result.onednn_enabled is onednn
    assert result.thread_environment["TF_ENABLE_ONEDNN_OPTS"] == ("1" if onednn else "0")
