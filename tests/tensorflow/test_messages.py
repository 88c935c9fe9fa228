"""Messages for what users bring: each names the fix, in a bounded length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.errors import StepFailed
from service.runner.protocol import TensorInfo

pytestmark = pytest.mark.tensorflow

MESSAGE_LIMIT_CHARS = 600


def _error(call: object, *args: object) -> str:
    with pytest.raises(StepFailed) as caught:
        call(*args)  # type: ignore[operator]
    message = caught.value.message
    assert len(message) < MESSAGE_LIMIT_CHARS, message
    return message


def test_an_unregistered_custom_keras_layer_says_export_not_register(tmp_path: Path) -> None:
    import keras

    from service.runner.loading import load_keras

    class Doubler(keras.layers.Layer):
        def call(self, x: object) -> object:
            return x * 2  # type: ignore[operator]

    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(3)(Doubler()(inputs))).save(tmp_path / "m.keras")

    message = _error(load_keras, tmp_path / "m.keras")

    assert "'Doubler'" in message and "never imports your code" in message
    assert "model.export(DIR)" in message
    assert "register_keras_serializable" not in message


def test_a_csv_renamed_to_npz_is_called_a_text_file_not_a_pickle(tmp_path: Path) -> None:
    from service.runner.accuracy import read_arrays

    data = tmp_path / "data.npz"
    data.write_text("0.1,0.2,3\n0.4,0.5,1\n")

    message = _error(read_arrays, str(data))

    assert "is a text file (CSV?), not an .npz archive" in message
    assert "numpy.savez(path, x=inputs, y=labels)" in message
    assert "pickle" not in message


def test_a_single_npy_array_is_named_as_such(tmp_path: Path) -> None:
    from service.runner.accuracy import read_arrays

    with (tmp_path / "data.npz").open("wb") as handle:
        np.save(handle, np.zeros((4, 2)))
    message = _error(read_arrays, str(tmp_path / "data.npz"))
    assert "a single .npy array" in message


def test_one_hot_labels_are_recognised_and_argmax_suggested(tmp_path: Path) -> None:
    from service.runner.accuracy import read_arrays

    labels = np.eye(4, dtype=np.float32)[[0, 2, 1, 3, 3]]
    np.savez(tmp_path / "data.npz", x=np.zeros((5, 8), np.float32), y=labels)

    message = _error(read_arrays, str(tmp_path / "data.npz"))

    assert "one-hot" in message and "y = y.argmax(axis=1)" in message


def test_floats_fed_to_an_int32_input_are_refused_not_truncated(tmp_path: Path) -> None:
    from service.runner.accuracy import load_dataset

    tokens = TensorInfo(name="tokens:0", shape=[None, 6], dtype="int32")
    np.savez(tmp_path / "floats.npz", x=np.full((3, 6), 0.37, np.float32), y=np.arange(3))
    np.savez(tmp_path / "whole.npz", x=np.full((3, 6), 7.0, np.float32), y=np.arange(3))

    message = _error(load_dataset, str(tmp_path / "floats.npz"), tokens)

    assert "with fractions (e.g. 0.37)" in message and "int32" in message
    assert "truncate" in message
    whole = load_dataset(str(tmp_path / "whole.npz"), tokens)  # whole numbers cast exactly
    assert whole.x.dtype == np.int32 and int(whole.x[0, 0]) == 7
