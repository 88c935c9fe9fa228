"""Accuracy cannot flatter: ties are never hits, and a constant-output model is named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.figures import aggregate, verdict
from tests.tensorflow.test_runner import run_runner, write_config

pytestmark = pytest.mark.tensorflow


def test_ties_at_the_top_k_boundary_count_as_wrong() -> None:
    from service.runner.accuracy import count_correct

    scores = np.array([[0.5, 0.5, 0.0], [0.9, 0.1, 0.0], [0.2, 0.2, 0.6], [1 / 3] * 3])
    labels = np.array([0, 0, 2, 1])

    assert count_correct(scores, labels, topk=1) == (2, 2)  # rows 0 and 3 tie: wrong
    assert count_correct(scores, labels, topk=2) == (3, 1)  # row 0 is inside top 2 now
    assert count_correct(scores, labels, topk=3) == (4, 0)


def test_a_constant_output_model_scores_zero_and_is_named(sample_dir: Path, tmp_path: Path) -> None:
    import keras

    from service.runner.loading import freeze_keras_model

    inputs = keras.Input((32, 32, 3), name="image")
    hidden = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(4, activation="softmax", kernel_initializer="zeros")(hidden)
    frozen = freeze_keras_model(keras.Model(inputs, outputs), "zero model")
    model = tmp_path / "zero.pb"
    model.write_bytes(frozen.graph_def.SerializeToString())
    config = write_config(
        tmp_path / "w", model, "frozen_pb", dataset=sample_dir / "eval.npz", batch_size=64
    )

    run = run_runner(config, "accuracy")

    assert run.code == 0, run.stderr[-3000:]
    result = run.result.accuracy
    assert result is not None
    # argmax with ties counted wrong: every sample ties all four classes, so none is a hit
    # (in_top_k's rule would have given 1.0)
    assert result.accuracy == 0.0 and result.tied_wrong == result.samples == 512
    assert result.outputs_constant is True and result.predicted_classes == 1
    figures = aggregate.summarize_accuracy(run.result)
    warnings = verdict.accuracy_verdict((), figures)["warnings"]
    codes = {w["code"] for w in warnings}
    assert {"constant_output", "tied_scores"} <= codes
    (constant,) = [w for w in warnings if w["code"] == "constant_output"]
    assert "same scores to all 512 samples" in constant["message"]
