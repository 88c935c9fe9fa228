"""One failure, one message: a cause once, the instances it hit, stopped instances named so."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.engine.paths import model_format
from service.errors import StepFailed
from service.executor.failures import InstanceFailure, log_tail, summarize

CAUSE = "prepare_inputs failed: input 'x:0' has a fixed batch dimension of 1, not 2"
MESSAGE_LIMIT_CHARS = 600


def test_the_same_cause_on_two_instances_is_said_once_with_both_instances(tmp_path: Path) -> None:
    failures = [
        InstanceFailure(0, CAUSE, tmp_path / "run_0.txt"),
        InstanceFailure(1, CAUSE, tmp_path / "run_1.txt"),
    ]
    message = summarize(failures)
    assert message.count("prepare_inputs failed") == 1
    assert "(instances 0, 1; log: " in message and "run_0.txt" in message
    assert len(message) < MESSAGE_LIMIT_CHARS


def test_an_instance_the_worker_killed_is_stopped_by_the_worker_not_killed_by_a_signal(
    tmp_path: Path,
) -> None:
    failures = [
        InstanceFailure(0, CAUSE, tmp_path / "run_0.txt"),
        InstanceFailure(1, "stopped", tmp_path / "run_1.txt", stopped_by_worker=True),
    ]
    message = summarize(failures)
    assert message.endswith("instance 1 stopped by the worker after instance 0 failed")
    assert "SIGKILL" not in message and "signal" not in message


def test_the_log_tail_leaves_out_tensorflow_start_up_lines(tmp_path: Path) -> None:
    log = tmp_path / "runner.txt"
    log.write_text(
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1796276674.804487    5644 port.cc:153] oneDNN custom operations are on.\n"
        "I0000 00:00:1796276674.843918    5644 cpu_feature_guard.cc:227] This TensorFlow ...\n"
        "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild\n"
        "Traceback (most recent call last):\n"
        "MemoryError: cannot allocate 4 GiB\n"
    )
    assert (
        log_tail(log) == "Traceback (most recent call last): | MemoryError: cannot allocate 4 GiB"
    )


def test_a_savedmodels_saved_model_pb_given_as_a_frozen_graph_says_pass_the_directory(
    tmp_path: Path,
) -> None:
    saved = tmp_path / "exported"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"\x08\x01")
    with pytest.raises(StepFailed) as caught:
        model_format(saved / "saved_model.pb", "exported/saved_model.pb")
    assert f"pass the SavedModel's directory ({saved})" in caught.value.message
    assert model_format(saved, "exported") == "saved_model"
